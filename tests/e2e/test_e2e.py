"""End to end: real `sky launch`/`sky jobs launch` onto SSH hosts that the
emulator creates in network namespaces (needs root). Slow: run serially."""

import json
import os
import re
import shutil
import subprocess
import time
from typing import Iterator, List

import pytest
import requests

from sky_mithril.catalog import catalog_files
from sky_mithril.emulator.hosts import VolumeInterface
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


def test_managed_job_recovers_at_the_notice_from_its_volume(stack):
    """examples/managed-train.yaml as users run it: checkpoints on a Mithril
    file share, a preemption hook, recovery from the notice on, re-bidding
    up to its recovery limit in the volume's region."""
    created = requests.post(
        f'{stack.emulator.url}/v2/volumes',
        headers={'Authorization': 'Bearer e2e-key'},
        json={'name': 'train-checkpoints', 'project': 'proj_emulator',
              'disk_interface': 'File', 'region': REGION, 'size_gb': 10},
        timeout=30)
    assert created.status_code == 201, created.text
    state = stack.hosts.volume_path(created.json()['fid'],
                                    VolumeInterface.FILE) / 'state.json'
    # Mithril's notice is 5 minutes; at 60x that is 5 s of wall time, less
    # than one poll of the jobs controller. Give it a minute of wall time.
    market = stack.emulator.market
    notice_s, market.preemption_notice_s = market.preemption_notice_s, 3600.0
    train = str(catalog_files.example_path('managed-train.yaml'))
    try:
        started = time.monotonic()
        stack.sky('jobs', 'launch', '-y', '-d', '-n', 'train', train,
                  '--env', 'TOTAL_STEPS=90')

        def step() -> int:
            return json.loads(state.read_text())['step'] if state.exists() else 0

        last_queue = ['']

        def queue_shows(status: str) -> bool:
            last_queue[0] = stack.sky('jobs', 'queue')
            row = [l for l in last_queue[0].splitlines() if ' train ' in l]
            return bool(row) and status in row[0]

        def wait_for(predicate, what: str, seconds: float = 300) -> float:
            deadline = time.monotonic() + seconds
            while not predicate():
                assert time.monotonic() < deadline, (
                    f'timed out waiting for {what}; last queue:\n{last_queue[0]}')
                time.sleep(1)
            return time.monotonic()

        # Preempt once the controller counts the job as running and the
        # first periodic checkpoint (every 10 steps) is on the volume.
        wait_for(lambda: step() >= 10 and queue_shows('RUNNING'),
                 'the job to be RUNNING')
        running_seconds = time.monotonic() - started
        [old] = stack.live_bids()
        # Above the limit ($2.00), below the recovery limit ($4.00).
        stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                      price='$3.00')
        notice_at = wait_for(lambda: any(
            b['fid'] == old['fid'] and b['status'] == 'Preempting'
            for b in stack.bids()), 'the notice', 60)
        gone_at = wait_for(lambda: any(
            b['fid'] == old['fid'] and b['status'] == 'Terminated'
            for b in stack.bids()), 'the old bid to be cancelled', 120)
        saved = step()
        running_again_at = wait_for(lambda: queue_shows('RUNNING'),
                                    'the job to run again')
        wait_for(lambda: queue_shows('SUCCEEDED'), 'SUCCEEDED', 400)

        logs = stack.sky('jobs', 'logs', '--no-follow', '1')
        assert f'resuming at step {saved}' in logs, logs
        assert 'training done' in logs
        # Recovery began inside the notice: the old bid was cancelled by the
        # teardown, long before Mithril would have taken the node.
        assert gone_at - notice_at < 50, gone_at - notice_at
        old_events = next(b['events'] for b in stack.bids()
                          if b['fid'] == old['fid'])
        assert 'Preempted' in old_events and 'Terminated' in old_events
        wait_for(lambda: stack.live_bids() == [],
                 'the finished job\'s cluster to be torn down', 120)
        print(f'\nmanaged job: running after {running_seconds:.0f}s; notice -> '
              f'old node gone {gone_at - notice_at:.0f}s, old node gone -> '
              f'running again {running_again_at - gone_at:.0f}s; resumed at '
              f'step {saved}, the last step saved (0 lost)')
    finally:
        market.preemption_notice_s = notice_s
