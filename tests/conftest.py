"""Shared fixtures. Emulator fixtures are named `emulator_*`."""

from typing import Iterator

import pytest

from sky_mithril.emulator.server import EmulatorServer


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
