"""End to end: a real `sky launch --infra mithril --cpus 2+` of `echo` lands
on a fixed-price CPU VM (no GPU asked, no bid placed) on a namespace host
the emulator creates, `sky status` shows it UP, and `sky down` deletes the
VM. (The emulator's smallest CPU VM has 4 vCPUs, so the task asks for at
least 2, as a SkyPilot user does with `2+`.) Needs root; slow."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import requests

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

KEY = 'cpu-vm-launch-key'
NAME = 'cpu-echo'


def _namespaces(prefix: str) -> List[str]:
    listing = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                             text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines()
            if line.startswith(prefix)]


@pytest.fixture(scope='module')
def cpu_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkyStack]:
    """The emulator on the namespace hosts' bridge and a sandboxed SkyPilot
    that talks to it."""
    hosts = NamespaceHosts()
    try:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('cpu-vm'),
                             api_url=emulator.url, api_key=KEY)
            try:
                yield SkyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()
    finally:
        prefix = hosts.prefix
        hosts.close()
        assert _namespaces(prefix) == []


def _instances(stack: SkyStack, name: str) -> List[Dict]:
    """The project's instances of cluster `name` (named after it), as
    `GET /v2/instances` lists them."""
    answer = requests.get(f'{stack.emulator.url}/v2/instances', timeout=30,
                          headers={'Authorization': f'Bearer {KEY}'},
                          params={'project': 'proj_emulator'})
    answer.raise_for_status()
    return [i for i in answer.json()['data'] if i['name'].startswith(name)]


def test_a_cpu_only_task_runs_on_a_cpu_vm_and_down_deletes_it(
        cpu_stack: SkyStack, tmp_path: Path) -> None:
    out = cpu_stack.sky('launch', '-y', '-c', NAME, '--infra', 'mithril',
                        '--cpus', '2+', 'echo', 'hello-from-a-cpu-vm')
    assert 'hello-from-a-cpu-vm' in out, out
    assert 'Mithril CPU VM: c2-standard' in out and 'no bid' in out, out
    assert cpu_stack.bids(NAME) == []
    [vm] = [i for i in _instances(cpu_stack, NAME)
            if i['status'] != 'STATUS_TERMINATED']
    assert vm['bid'] is None and vm['status'] == 'STATUS_RUNNING'

    status = cpu_stack.sky('status', '--refresh', NAME)
    assert NAME in status and 'UP' in status, status

    cpu_stack.sky('down', '-y', NAME)
    assert {i['status'] for i in _instances(cpu_stack, NAME)} == {
        'STATUS_TERMINATED'}
    assert cpu_stack.live_bids() == []
