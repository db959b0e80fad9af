"""sky-mithril: the SkyPilot cloud plugin for Mithril's GPU spot market."""

__version__ = '0.1.0'
# The cloud's one name in SkyPilot: its registry key, provisioner, catalog and
# the `config.mithril` / `plugins.mithril` settings sections.
CLOUD_NAME = 'mithril'
