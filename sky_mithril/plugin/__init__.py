"""`sky_mithril.plugin.MithrilPlugin`: list it in `~/.sky/plugins.yaml`.

SkyPilot imports this module in every process that loads plugins; an import
error here would stop the API server, so it imports nothing heavy and defers
all wiring to `install()`.
"""

from typing import List, Optional

from sky.server import plugins

import sky_mithril
from sky_mithril.plugin import dashboard

_ROUTES_MOUNTED = 'sky_mithril_dashboard_routes'
"""Marks the app (its `state`) the dashboard's routes are mounted on."""


class MithrilPlugin(plugins.BasePlugin):
    """Takes over SkyPilot's `mithril` cloud with sky-mithril's, and puts
    Mithril in the dashboard (plugin/dashboard)."""

    @property
    def name(self) -> Optional[str]:
        return sky_mithril.CLOUD_NAME

    @property
    def version(self) -> Optional[str]:
        return sky_mithril.__version__

    @property
    def js_extension_path(self) -> Optional[str]:
        return dashboard.SCRIPT_PATH

    @property
    def viewer_allowlist(self) -> List[plugins.RBACRule]:
        """Every route of the plugin only reads (GET), so viewers may call
        them all."""
        return [plugins.RBACRule(path=dashboard.VIEWER_PATTERN, method='GET',
                                 description='Mithril in the dashboard '
                                 '(read-only)')]

    def install(self, extension_context: plugins.ExtensionContext) -> None:
        from sky_mithril.plugin import takeover  # pylint: disable=import-outside-toplevel
        takeover.install()
        app = extension_context.app
        # Only the uvicorn workers' load has the app; a second load there
        # must not mount the routes twice.
        if app is not None and not getattr(app.state, _ROUTES_MOUNTED, False):
            from sky_mithril.plugin.dashboard import routes  # pylint: disable=import-outside-toplevel
            app.include_router(routes.router)
            setattr(app.state, _ROUTES_MOUNTED, True)
