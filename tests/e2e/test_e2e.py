"""End to end: real `sky launch`/`sky jobs launch` onto SSH hosts that the
emulator creates in network namespaces (needs root). Slow: run serially."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from sky_mithril.catalog import catalog_files
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

from sky_stack import SkyStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                       reason='needs root and unshare for namespace hosts'),
]

GPU_TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'


def _namespaces(prefix: str) -> List[str]:
    listing = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                             text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope='module')
def stack(tmp_path_factory) -> Iterator[SkyStack]:
    from sky_mithril.emulator.hosts.namespace import NamespaceHosts
    hosts = NamespaceHosts()
    try:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('e2e'),
                             api_url=emulator.url,
                             api_key='e2e-key',
                             sky_config={'jobs': {'controller': {
                                 'consolidation_mode': True}}})
            try:
                yield SkyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()
    finally:
        prefix = hosts.prefix
        hosts.close()
        assert _namespaces(prefix) == []


def test_hello_launch_exec_status_stop_start_preempt_down(stack):
    hello = str(catalog_files.example_path('hello.yaml'))
    started = time.monotonic()
    out = stack.sky('launch', '-y', '-c', 'hello', '--infra', 'mithril', hello)
    launch_seconds = time.monotonic() - started
    assert 'Hello from' in out and 'node 0 of 1' in out, out
    [bid] = [b for b in stack.bids('hello') if b['status'] != 'Terminated']
    assert bid['limit_price'] == '$4.00'

    assert 'exec says hi' in stack.sky('exec', 'hello', 'echo exec says hi')
    assert 'credentials mounted' in stack.sky(
        'exec', 'hello', 'test -s ~/.config/mithril/config.yaml && echo credentials mounted')
    status = stack.sky('status', '--refresh', 'hello')
    assert re.search(r'hello\s+Mithril \(us-central3-a\).*UP', status)

    stack.sky('stop', '-y', 'hello')
    assert [b['status'] for b in stack.bids('hello') if b['fid'] == bid['fid']] == ['Paused']
    assert re.search(r'hello\s+Mithril.*STOPPED',
                     stack.sky('status', '--refresh', 'hello'))
    stack.sky('start', '-y', 'hello')
    [resumed] = [b for b in stack.bids('hello') if b['status'] != 'Terminated']
    assert resumed['fid'] == bid['fid'] and resumed['status'] == 'Allocated'
    assert 'after restart' in stack.sky('exec', 'hello', 'echo after restart')

    # Preempted, and the bid back to Open: it is live and wins again by
    # itself once the price falls, so it never reads STOPPED; `sky stop`
    # pauses it.
    try:
        stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                      price='$9.00')  # above hello.yaml's $4.00 limit
        stack.control('POST', f'bids/{bid["fid"]}/preempt')
        deadline = time.monotonic() + 60
        while [b['status'] for b in stack.bids('hello')
               if b['fid'] == bid['fid']] != ['Open']:
            assert time.monotonic() < deadline, stack.bids('hello')
            time.sleep(1)
        status = stack.sky('status', '--refresh', 'hello')
        assert re.search(r'hello\s+Mithril.*INIT', status), status
        assert 'STOPPED' not in status, status
        stack.sky('stop', '-y', 'hello')
        assert [b['status'] for b in stack.bids('hello')
                if b['fid'] == bid['fid']] == ['Paused']
        assert re.search(r'hello\s+Mithril.*STOPPED',
                         stack.sky('status', '--refresh', 'hello'))
    finally:
        stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                      price='$0.50')
        stack.sky('down', '-y', 'hello')
    assert [b['status'] for b in stack.bids('hello')] == ['Terminated']
    assert stack.live_bids() == []
    assert stack.control('GET', 'state')['bids'][0]['instances'][0]['status'] == 'STATUS_TERMINATED'
    print(f'\nhello launch took {launch_seconds:.0f}s')


def test_two_nodes_run_with_their_rank_and_ips(stack):
    multi = str(catalog_files.example_path('multi-node.yaml'))
    out = stack.sky('launch', '-y', '-c', 'ddp', '--infra', 'mithril', multi)
    lines = re.findall(r'node (\d)/2 ip=(\S+) master=(\S+) gpus=(\d)', out)
    assert sorted(rank for rank, *_ in lines) == ['0', '1']
    head_ip = {ip for rank, ip, _, _ in lines if rank == '0'}
    assert {master for *_, master, _ in lines} == head_ip
    assert len({ip for _, ip, _, _ in lines}) == 2
    assert {gpus for *_, gpus in lines} == {'8'}
    stack.sky('down', '-y', 'ddp')
    assert stack.live_bids() == []


def test_managed_job_survives_preemption(stack):
    checkpoints = Path('/var/lib/sky-mithril') / f'e2e-ckpt-{os.getpid()}'
    checkpoints.mkdir(parents=True, exist_ok=True)
    checkpoints.chmod(0o777)
    state = checkpoints / 'state.json'
    train = str(catalog_files.example_path('managed-train.yaml'))
    try:
        started = time.monotonic()
        stack.sky('jobs', 'launch', '-y', '-d', '-n', 'train', train,
                  '--env', f'CHECKPOINT_DIR={checkpoints}',
                  '--env', 'TOTAL_STEPS=90')

        def step() -> int:
            return json.loads(state.read_text())['step'] if state.exists() else 0

        last_queue = ['']

        def queue_shows(status: str) -> bool:
            last_queue[0] = stack.sky('jobs', 'queue')
            return status in last_queue[0]

        def wait_for(predicate, what: str, seconds: float = 300) -> None:
            deadline = time.monotonic() + seconds
            while not predicate():
                assert time.monotonic() < deadline, (
                    f'timed out waiting for {what}; last queue:\n{last_queue[0]}')
                time.sleep(2)

        # Preempt only once the controller itself counts the job as running.
        wait_for(lambda: step() >= 3 and queue_shows('RUNNING'),
                 'the job to be RUNNING')
        running_seconds = time.monotonic() - started
        stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                      price='$9.00')
        preempted_at = time.monotonic()
        wait_for(lambda: queue_shows('RECOVERING'), 'RECOVERING')
        stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                      price='$0.50')
        wait_for(lambda: queue_shows('SUCCEEDED'), 'SUCCEEDED', 400)
        recovery_seconds = time.monotonic() - preempted_at

        queue = stack.sky('jobs', 'queue')
        row = next(line for line in queue.splitlines() if ' train ' in line)
        assert re.search(r'\s1\s+SUCCEEDED', row), queue
        logs = stack.sky('jobs', 'logs', '--no-follow', '1')
        assert 'resuming at step' in logs and 'training done' in logs
        events = [b['events'] for b in stack.bids('train')]
        assert any('Preempted' in e for e in events)
        assert stack.live_bids() == []
        print(f'\nmanaged job: running after {running_seconds:.0f}s, '
              f'preemption to SUCCEEDED {recovery_seconds:.0f}s')
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
