"""The plugin's dashboard wiring: its routes are mounted on the API
server's app once however often SkyPilot installs the plugin, never where
there is no app (the main process), and the script the dashboard loads
(`js_extension_path`) is one of them."""

import fastapi
import pytest
from sky.server import plugins

from sky_mithril.plugin import MithrilPlugin
from sky_mithril.plugin import takeover
from sky_mithril.plugin.dashboard import PREFIX


@pytest.fixture(autouse=True)
def no_takeover(monkeypatch: pytest.MonkeyPatch) -> None:
    """The takeover has its own tests; here only the routes matter."""
    monkeypatch.setattr(takeover, 'install', lambda: None)


def test_routes_are_mounted_once_and_the_script_is_one_of_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = MithrilPlugin()
    app = fastapi.FastAPI()
    included = []
    monkeypatch.setattr(app, 'include_router',
                        lambda router: included.append(router))
    for _ in range(2):
        plugin.install(plugins.ExtensionContext(plugins.PluginContext.UVICORN,
                                                app=app))
    assert len(included) == 1
    paths = [route.path for route in included[0].routes]
    assert all(path.startswith(PREFIX) for path in paths)
    assert plugin.js_extension_path in paths


def test_the_main_process_has_no_app_and_gets_no_routes() -> None:
    """SkyPilot's main process loads plugins without an app; installing
    there must not fail or mount anything."""
    MithrilPlugin().install(plugins.ExtensionContext(plugins.PluginContext.MAIN))
