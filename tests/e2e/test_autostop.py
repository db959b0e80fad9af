"""Autostop and autodown on the nodes, end to end (needs root): the skylet on
the head node runs sky-mithril's provisioner (installed by the cluster
template), with credentials that came only from the API server's environment,
against the API URL the cluster was launched with, and acts on exactly this
cluster's live bid, even after an earlier cluster of the same name."""

import os
import shutil
import time
from typing import Callable, Dict, Iterator, List

import pytest

from sky_mithril.catalog import catalog_files
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.server import EmulatorServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                       reason='needs root and unshare for namespace hosts'),
]

# Idle minute + the skylet's 60 s event loop + SkyPilot's own teardown steps.
AUTOSTOP_WAIT_SECONDS = 420


class EnvOnlyStack:
    """Emulator on the hosts' bridge + a SkyPilot home whose Mithril key is
    only in the API server's environment."""

    def __init__(self, emulator: EmulatorServer, box: SkySandbox) -> None:
        self.emulator = emulator
        self.box = box

    def sky(self, *args: str, timeout: float = 600) -> str:
        result = self.box.sky(list(args), timeout=timeout)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f'sky {" ".join(args)} failed:\n{output}'
        return output

    def bids(self) -> List[Dict]:
        return self.emulator.control('GET', 'state')['bids']

    def wait_for(self, what: str, done: Callable[[], bool]) -> float:
        started = time.monotonic()
        while not done():
            assert time.monotonic() - started < AUTOSTOP_WAIT_SECONDS, (
                f'{what} did not happen within {AUTOSTOP_WAIT_SECONDS}s: '
                f'{self.bids()}')
            time.sleep(5)
        return time.monotonic() - started


@pytest.fixture(scope='module')
def stack(tmp_path_factory) -> Iterator[EnvOnlyStack]:
    from sky_mithril.emulator.hosts.namespace import NamespaceHosts
    with NamespaceHosts() as hosts:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('autostop'),
                             api_url=emulator.url, api_key='env-only-key',
                             project_id='proj_emulator',
                             credentials_in_environment=True)
            assert not (box.home / '.config' / 'mithril').exists()
            try:
                yield EnvOnlyStack(emulator, box)
            finally:
                box.stop_api_server()


def test_autodown_after_a_reused_name_cancels_exactly_the_live_bid(stack):
    hello = str(catalog_files.example_path('hello.yaml'))
    stack.sky('launch', '-y', '-c', 'auto', '--infra', 'mithril', hello)
    stack.sky('down', '-y', 'auto')
    [old] = stack.bids()
    assert old['status'] == 'Terminated'

    stack.sky('launch', '-y', '-c', 'auto', '--infra', 'mithril', '-i', '1',
              '--down', hello)
    [new] = [b for b in stack.bids() if b['fid'] != old['fid']]
    assert new['status'] == 'Allocated'
    waited = stack.wait_for('autodown', lambda: all(
        b['status'] == 'Terminated' for b in stack.bids()))
    print(f'\nautodown cancelled the bid {waited:.0f}s after the launch returned')
    assert [b['fid'] for b in stack.bids()] == [old['fid'], new['fid']]


def test_autostop_pauses_the_bid(stack):
    hello = str(catalog_files.example_path('hello.yaml'))
    stack.sky('launch', '-y', '-c', 'idle', '--infra', 'mithril', hello)
    [bid] = [b for b in stack.bids() if b['status'] != 'Terminated']
    stack.sky('autostop', '-y', '-i', '1', 'idle')
    waited = stack.wait_for('autostop', lambda: [
        b['status'] for b in stack.bids() if b['fid'] == bid['fid']] == ['Paused'])
    print(f'\nautostop paused the bid {waited:.0f}s after `sky autostop`')
    assert [b['status'] for b in stack.bids() if b['status'] != 'Terminated'] == ['Paused']
    stack.sky('down', '-y', 'idle')
    assert all(b['status'] == 'Terminated' for b in stack.bids())
