"""What the nodes do by themselves, end to end (needs root): the skylet on the
head node runs sky-mithril's provisioner (installed by the cluster template),
with credentials that came only from the API server's environment, against
the API URL the cluster was launched with. Autostop and autodown act on
exactly this cluster's live bid, even after an earlier cluster of the same
name. (That a preemption notice runs the task's preemption hooks on the node
is checked by the hello test in tests/host/test_sky_on_namespace_hosts.py,
which preempts its cluster anyway.)"""

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator

import pytest
import requests

from sky_mithril.catalog import catalog_files
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.sky_stack import SkyStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                       reason='needs root and unshare for namespace hosts'),
]

# Idle minute + the skylet's 60 s event loop + SkyPilot's own teardown steps.
AUTOSTOP_WAIT_SECONDS = 420


class EnvOnlyStack(SkyStack):
    """Emulator on the hosts' bridge + a SkyPilot home whose Mithril key is
    only in the API server's environment."""

    def wait_for(self, what: str, done: Callable[[], bool]) -> float:
        started = time.monotonic()
        while not done():
            assert time.monotonic() - started < AUTOSTOP_WAIT_SECONDS, (
                f'{what} did not happen within {AUTOSTOP_WAIT_SECONDS}s: '
                f'{self.bids()}')
            time.sleep(0.5)
        return time.monotonic() - started


@pytest.fixture(scope='module')
def env_credentials_stack(tmp_path_factory) -> Iterator[EnvOnlyStack]:
    with NamespaceHosts() as hosts:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('autostop'),
                             api_url=emulator.url, api_key='env-only-key',
                             project_id='proj_emulator',
                             credentials_in_environment=True)
            assert not (box.home / '.config' / 'mithril').exists()
            try:
                yield EnvOnlyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()


# The block volume pins the task to its region and is formatted only once.
BLOCK_VOLUME_TASK = """
run: |
  if [ -f /mnt/scratch/written-by ]; then echo "kept $(cat /mnt/scratch/written-by)"; else echo first-launch > /mnt/scratch/written-by; echo "new volume"; fi
  echo "fs=$(findmnt -no FSTYPE /mnt/scratch) owner=$(stat -c %U /mnt/scratch) uuid=$(sudo blkid -s UUID -o value "$(findmnt -no SOURCE /mnt/scratch)")"
config:
  mithril:
    volumes:
      /mnt/scratch: scratch-disk
"""


def test_autodown_and_autostop_act_on_exactly_their_clusters_live_bid(
        env_credentials_stack, tmp_path):
    """Autodown of a cluster whose name an earlier, terminated cluster had,
    and autostop of another cluster running at the same time: each acts on
    its own live bid only. Also: a block volume is formatted on first use
    only and keeps its data across `sky down` and a new launch in its region."""
    volumes_url = f'{env_credentials_stack.emulator.url}/v2/volumes'
    created = requests.post(volumes_url, headers={
        'Authorization': 'Bearer env-only-key'}, json={
            'name': 'scratch-disk', 'project': 'proj_emulator',
            'disk_interface': 'Block', 'region': 'us-central3-a',
            'size_gb': 1}, timeout=30)
    assert created.status_code == 201, created.text
    task = tmp_path / 'block.yaml'
    task.write_text(BLOCK_VOLUME_TASK)
    first = env_credentials_stack.sky('launch', '-y', '-c', 'auto', '--infra', 'mithril',
                                      str(task))
    assert 'new volume' in first and 'fs=ext4 owner=ubuntu' in first, first
    uuid = first.split('uuid=')[1].split()[0]
    env_credentials_stack.sky('down', '-y', 'auto')
    [old] = env_credentials_stack.bids()
    assert old['status'] == 'Terminated'

    # `idle` is launched while `auto` is relaunched (two launch requests on
    # the API server at once, as a user may run them): one launch less of
    # wall time than one after the other.
    hello = str(catalog_files.example_path('hello.yaml'))
    with ThreadPoolExecutor(max_workers=1) as pool:
        idle_launch = pool.submit(env_credentials_stack.sky, 'launch', '-y', '-c', 'idle',
                                  '--infra', 'mithril', hello)
        again = env_credentials_stack.sky('launch', '-y', '-c', 'auto', '--infra', 'mithril',
                                          '-i', '1', '--down', str(task))
        assert 'kept first-launch' in again and f'uuid={uuid}' in again, again
        [new] = [b for b in env_credentials_stack.bids('auto') if b['fid'] != old['fid']]
        assert new['status'] == 'Allocated'
        idle_launch.result()
    [idle] = [b for b in env_credentials_stack.bids()
              if b['fid'] not in (old['fid'], new['fid'])]
    env_credentials_stack.sky('autostop', '-y', '-i', '1', 'idle')

    def status(bid: Dict) -> str:
        return next(b['status'] for b in env_credentials_stack.bids() if b['fid'] == bid['fid'])

    waited = env_credentials_stack.wait_for('autodown and autostop', lambda: (
        status(new) == 'Terminated' and status(idle) == 'Paused'))
    print(f'\nautodown and autostop done {waited:.0f}s after `sky autostop`')
    # No bid but these three, ever (`new` and `idle` bid in either order).
    assert [b['fid'] for b in env_credentials_stack.bids()] in (
        [old['fid'], new['fid'], idle['fid']],
        [old['fid'], idle['fid'], new['fid']])
    env_credentials_stack.sky('down', '-y', 'idle')
    assert all(b['status'] == 'Terminated' for b in env_credentials_stack.bids())

