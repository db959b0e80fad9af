"""End to end on Mithril's fixed-price CPU VMs (namespace hosts the
emulator creates; needs root; slow):
- a real `sky launch --infra mithril --cpus 2+` of `echo` lands on a CPU VM
  (no GPU asked, no bid placed), `sky status` shows it UP, and `sky down`
  deletes the VM (the emulator's smallest CPU VM has 4 vCPUs, so the task
  asks for at least 2, as a SkyPilot user does with `2+`);
- SkyPilot's jobs and serve controllers on CPU VMs (remote controllers,
  `controller: resources: {infra: mithril, cpus: 4+}`, our wheel set up with
  `sky-mithril setup --remote`): a managed job's cluster is a spot bid the
  controller places and cancels, a service's replica is a bid the serve
  controller's load balancer reaches, `sky serve down` cancels it, and
  `sky down` of the controllers deletes their VMs: nothing is left."""

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
import requests
import yaml

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

KEY = 'cpu-vm-launch-key'
NAME = 'cpu-echo'
# SkyPilot's controllers on CPU VMs (autostop off: a stopped VM still bills).
ON_A_CPU_VM = {'controller': {'resources': {'infra': 'mithril', 'cpus': '4+',
                                            'autostop': False}}}
JOB = 'remote-ctl-job'
SERVICE = 'tiny'
CHECKOUT = Path(__file__).resolve().parents[3]


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
                             api_url=emulator.url, api_key=KEY,
                             sky_config={'jobs': ON_A_CPU_VM,
                                         'serve': ON_A_CPU_VM})
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


def _wait_for(what: str, done: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(5)


def _set_up_remote_controllers(stack: SkyStack) -> None:
    """What a user does: our wheel where `setup --remote` looks, then the
    command itself (it names the wheel it found)."""
    wheels = stack.box.home / '.sky' / 'mithril-wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    str(CHECKOUT), '-w', str(wheels)], check=True, timeout=600)
    setup = subprocess.run(
        [str(Path(sys.executable).parent / 'sky-mithril'), 'setup', '--remote'],
        env=stack.box.env, capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert 'Set controller_wheel_path' in setup.stdout, setup.stdout


def _serve_up(stack: SkyStack, task_path: Path) -> str:
    """`sky serve up` of one replica of examples/serve.yaml; its endpoint."""
    task = yaml.safe_load(catalog_files.example_path('serve.yaml').read_text())
    task['service']['replica_policy']['min_replicas'] = 1
    task['service']['readiness_probe']['initial_delay_seconds'] = 30
    task_path.write_text(yaml.safe_dump(task))
    out = stack.sky('serve', 'up', '-y', '-n', SERVICE, str(task_path),
                    timeout=1200)
    endpoint = re.search(r'Endpoint URL: \S*?(http://[\w.:]+)', out)
    assert endpoint, out
    return endpoint.group(1)


def _answers(endpoint: str) -> bool:
    try:
        answer = requests.get(f'{endpoint}/predict', params={'x': 3}, timeout=5)
        return answer.ok and answer.json()['y'] == 7
    except (requests.RequestException, ValueError):
        return False


@pytest.mark.timeout(2400)
def test_jobs_and_serve_controllers_on_cpu_vms_launch_spot_bids_and_leave_nothing(
        cpu_stack: SkyStack, tmp_path: Path) -> None:
    _set_up_remote_controllers(cpu_stack)
    cpu_stack.sky('status')  # one API server before the two launches
    with ThreadPoolExecutor(2) as pool:
        job = pool.submit(cpu_stack.sky, 'jobs', 'launch', '-y', '-d', '-n', JOB,
                          '--infra', 'mithril', '--gpus', 'A100:1',
                          'echo hello-from-a-remote-controller', timeout=1200)
        service = pool.submit(_serve_up, cpu_stack, tmp_path / 'serve.yaml')
        job.result()
        endpoint = service.result()

    controllers = re.findall(r'sky-(?:jobs|serve)-controller-\w+',
                             cpu_stack.sky('status'))
    assert len(set(controllers)) == 2, controllers
    for controller in set(controllers):
        [vm] = _instances(cpu_stack, controller)
        assert vm['bid'] is None and vm['status'] == 'STATUS_RUNNING', vm
    assert not [b for b in cpu_stack.bids() if 'controller' in b['name']]

    # The job's cluster: a bid the remote controller placed, then cancelled.
    _wait_for('the managed job to succeed',
              lambda: 'SUCCEEDED' in cpu_stack.sky('jobs', 'queue'), 900)
    [job_bid] = cpu_stack.bids(f'{JOB}-')
    _wait_for('the job\'s bid to be cancelled',
              lambda: cpu_stack.bids(f'{JOB}-')[0]['status'] == 'Terminated', 300)
    assert job_bid['limit_price'] == '$32.00', job_bid  # Mithril's default

    # The replica: a bid at the task's limit behind the load balancer on the
    # serve controller's VM; `sky serve status` reads it on that VM.
    _wait_for('the service to answer', lambda: _answers(endpoint), 900)
    [replica_bid] = cpu_stack.bids(f'{SERVICE}-')
    assert replica_bid['limit_price'] == '$4.00', replica_bid
    assert 'READY' in cpu_stack.sky('serve', 'status', SERVICE)
    cpu_stack.sky('serve', 'down', '-y', SERVICE)
    _wait_for('the service to be gone',
              lambda: 'No existing services' in cpu_stack.sky('serve', 'status'),
              600)
    _wait_for('the replica\'s bid to be cancelled',
              lambda: cpu_stack.live_bids() == [], 120)

    # A loaded machine once left a second row of the job on the controller,
    # PENDING and never submitted (likely SkyPilot's launch numbering the job
    # through a skylet call it retries when the channel drops); it started
    # nothing (the one bid above), but `sky down` refuses while it is listed,
    # and SkyPilot's own advice is to cancel all.
    cancelled = cpu_stack.box.sky(['jobs', 'cancel', '-a', '-y'], timeout=300)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert len(cpu_stack.bids(f'{JOB}-')) == 1, cpu_stack.bids()
    # SkyPilot takes down one controller per `sky down`, and asks the user
    # to type `delete` for the jobs controller even with -y.
    def down(controller: str) -> None:
        done = cpu_stack.box.sky(['down', '-y', controller], timeout=900,
                                 typed='delete\n')
        assert done.returncode == 0, done.stdout + done.stderr

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(down, set(controllers)))
    for controller in set(controllers):
        assert {i['status'] for i in _instances(cpu_stack, controller)} == {
            'STATUS_TERMINATED'}
    assert cpu_stack.live_bids() == []
