"""Mithril in SkyPilot's dashboard: read-only JSON routes under
`/plugins/api/mithril/` (routes.py), what they answer (views.py, reading the
project's bids and instances from the shared project snapshot that status
refreshes read), and the page's script (mithril_dashboard.js), served from
the same origin.

This module itself holds only the paths, so the plugin class can name them
without importing the routes."""

PREFIX = '/plugins/api/mithril'
SCRIPT_PATH = f'{PREFIX}/dashboard.js'
"""Where the dashboard loads the plugin's script from (`js_extension_path`)."""
VIEWER_PATTERN = f'{PREFIX}/*'
"""Every route here, in Casbin keyMatch2 form, for SkyPilot's viewer allowlist."""
