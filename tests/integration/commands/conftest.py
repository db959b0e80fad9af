"""Fixtures for the infrastructure commands against the emulator: the
emulator with real SSH hosts on 127.0.0.1, plain HTTP to it, a steady price;
and from tests.helpers.commands a private HOME, kubectl, and `run` for
`sky-mithril ...` in-process."""

from pathlib import Path
from typing import Iterator

import pytest

from sky_mithril.emulator.hosts.local import LocalPortHosts
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.commands import REGION, TYPE, Api
from tests.helpers.commands import home, kubectl, run  # noqa: F401 (fixtures)
from tests.helpers.provisioning import point_plugin_at

# The fixtures of an emulator the commands may run against.
EMULATORS = ('local_ssh_emulator', 'fast_emulator')


@pytest.fixture
def local_ssh_emulator(home: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The emulator at 600x whose instances are real sshds on 127.0.0.1."""
    with EmulatorServer(speed=600, hosts=LocalPortHosts()) as server:
        point_plugin_at(server, monkeypatch, tmp_path / 'config')
        yield server


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Api:
    """`Api` over whichever emulator fixture the test uses."""
    for name in EMULATORS:
        if name in request.fixturenames:
            return Api(request.getfixturevalue(name))
    raise RuntimeError('the api fixture needs an emulator fixture')


@pytest.fixture(autouse=True)
def steady_price(request: pytest.FixtureRequest) -> None:
    """TYPE in REGION at a fixed $2.00 spot, so an $8.00 limit wins at the
    next clearing whatever the emulator's default market does."""
    for name in EMULATORS:
        if name in request.fixturenames:
            request.getfixturevalue(name).control(
                'POST', 'price', instance_type=TYPE, region=REGION,
                price='$2.00')
