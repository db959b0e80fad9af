"""Shared fixtures. Emulator fixtures are named `emulator_*`.

Sandboxed SkyPilot homes are seeded with SkyPilot's public common catalog
(`shared/reference/skypilot-common-accelerators.csv` beside the checkout)
when it is there, as SkyPilot would download it; otherwise the sandbox
derives one from our own catalog.
"""

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog
from sky_mithril.devtools.sandbox import ENV_ACCELERATORS_CSV

from provisioning import point_plugin_at

# Tests never touch the developer's SkyPilot home or real Mithril credentials.
os.environ['HOME'] = tempfile.mkdtemp(prefix='sky-mithril-tests-home-')
for _variable in ('MITHRIL_API_KEY', 'MITHRIL_PROJECT', 'MITHRIL_API_URL',
                  'MITHRIL_PROFILE', 'XDG_CONFIG_HOME', 'SKY_MITHRIL_CATALOG'):
    os.environ.pop(_variable, None)

_PUBLIC_ACCELERATORS = (Path(__file__).resolve().parents[2] / 'shared' /
                        'reference' / 'skypilot-common-accelerators.csv')
if _PUBLIC_ACCELERATORS.is_file():
    os.environ.setdefault(ENV_ACCELERATORS_CSV, str(_PUBLIC_ACCELERATORS))


@pytest.fixture
def emulator_server() -> Iterator[EmulatorServer]:
    """A started emulator on 127.0.0.1 (free port, 60x time, placeholder hosts,
    any bearer token); stopped after the test."""
    server = EmulatorServer(host='127.0.0.1', port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(monkeypatch, tmp_path) -> Iterator[EmulatorServer]:
    """A fast emulator (600x time) and the environment that points the plugin
    at it, as a user would export it: key, URL and project."""
    with EmulatorServer(speed=600) as server:
        point_plugin_at(server, monkeypatch, tmp_path)
        yield server


@pytest.fixture
def manual_emulator(monkeypatch, tmp_path) -> Iterator[EmulatorServer]:
    """An emulator whose clock moves only when a test advances it
    (`control('POST', 'advance', seconds=...)`), with the plugin pointed at it."""
    market = Market(ManualClock(), PlaceholderHosts(), load_catalog())
    with EmulatorServer(market) as server:
        point_plugin_at(server, monkeypatch, tmp_path)
        yield server
