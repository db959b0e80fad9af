"""One sandboxed SkyPilot home and API server for the whole e2e tier.

Starting an API server and its workers costs 30-60 s on CI's two cores, so
the tier shares one (`sky_sandbox`, package-scoped: stopped once the tier's
last test ran); a module that needs a market of its own points the
sandbox's Mithril profile at its emulator (`profile_changed`) and puts it
back after. The sandbox's key is a recognisable random one
(`SANDBOX_KEY`), which tests/e2e/test_secrets.py searches for in everything
the sandbox wrote; every emulator of the tier accepts it.
"""

from typing import Iterator

import pytest

from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.sandbox import SANDBOX_KEY


@pytest.fixture(scope='package')
def sandbox_emulator() -> Iterator[EmulatorServer]:
    """The emulator the sandbox's profile points at unless a module points
    it elsewhere (default market, any bearer token)."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture(scope='package')
def sky_sandbox(sandbox_emulator: EmulatorServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkySandbox]:
    """The tier's SkyPilot home, its profile at `sandbox_emulator` with
    SANDBOX_KEY; its API server starts with the first `sky` command and is
    stopped after the tier."""
    box = SkySandbox(tmp_path_factory.mktemp('sky-sandbox'),
                     api_url=sandbox_emulator.url, api_key=SANDBOX_KEY)
    try:
        yield box
    finally:
        box.stop_api_server()
