"""Emulators on 127.0.0.1 for the integration tier. Three kinds, one name
each: `fast_emulator` (600x time, the plugin pointed at it),
`manual_clock_emulator` (time moves only when the test advances it, the
plugin pointed at it), `bare_emulator` (60x time, the plugin not pointed at
it: for tests that talk HTTP themselves)."""

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import psutil
import pytest

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

from tests.helpers.provisioning import point_plugin_at

_GUARD_MODULE = 'sky_mithril.recovery.standby_guard'


@pytest.fixture(autouse=True)
def no_standby_guard_outlives_its_emulator() -> Iterator[None]:
    """Standby guards (processes of their own, by design) that a test started
    are stopped once the emulator they watch is gone, instead of polling a
    dead port for their full six minutes. A guard whose emulator still
    serves (another worker's test) is left alone."""
    started = time.time()
    yield
    for process in psutil.process_iter(['cmdline', 'create_time']):
        cmdline = process.info['cmdline'] or []
        if (_GUARD_MODULE not in cmdline or
                process.info['create_time'] < started - 1):
            continue
        api = urlsplit(json.loads(cmdline[-1])['api_url'])
        try:
            socket.create_connection((api.hostname, api.port), 1).close()
        except OSError:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


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
