"""`sky_mithril.plugin.MithrilPlugin`: list it in `~/.sky/plugins.yaml`.

SkyPilot imports this module in every process that loads plugins; an import
error here would stop the API server, so it imports nothing heavy and defers
all wiring to `install()`.
"""

from typing import Optional

from sky.server import plugins

import sky_mithril


class MithrilPlugin(plugins.BasePlugin):
    """Takes over SkyPilot's `mithril` cloud with sky-mithril's."""

    @property
    def name(self) -> Optional[str]:
        return sky_mithril.CLOUD_NAME

    @property
    def version(self) -> Optional[str]:
        return sky_mithril.__version__

    def install(self, extension_context: plugins.ExtensionContext) -> None:
        del extension_context
        from sky_mithril.plugin import takeover  # pylint: disable=import-outside-toplevel
        takeover.install()
