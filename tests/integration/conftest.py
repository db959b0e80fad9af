"""Emulators on 127.0.0.1 for the integration tier. Three kinds, one name
each: `fast_emulator` (600x time, the plugin pointed at it),
`manual_clock_emulator` (time moves only when the test advances it, the
plugin pointed at it), `bare_emulator` (60x time, the plugin not pointed at
it: for tests that talk HTTP themselves)."""

from pathlib import Path
from typing import Iterator

import pytest

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

from tests.helpers.provisioning import point_plugin_at


@pytest.fixture
def bare_emulator() -> Iterator[EmulatorServer]:
    """A started emulator on 127.0.0.1 (free port, 60x time, placeholder hosts,
    any bearer token); stopped after the test."""
    server = EmulatorServer(host='127.0.0.1', port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fast_emulator(monkeypatch: pytest.MonkeyPatch,
                  tmp_path: Path) -> Iterator[EmulatorServer]:
    """A fast emulator (600x time) and the environment that points the plugin
    at it, as a user would export it: key, URL and project."""
    with EmulatorServer(speed=600) as server:
        point_plugin_at(server, monkeypatch, tmp_path)
        yield server


@pytest.fixture
def manual_clock_emulator(monkeypatch: pytest.MonkeyPatch,
                          tmp_path: Path) -> Iterator[EmulatorServer]:
    """An emulator whose clock moves only when a test advances it
    (`control('POST', 'advance', seconds=...)`), with the plugin pointed at it."""
    market = Market(ManualClock(), PlaceholderHosts(), load_catalog())
    with EmulatorServer(market) as server:
        point_plugin_at(server, monkeypatch, tmp_path)
        yield server
