"""End to end: real `sky launch`/`sky jobs launch` onto SSH hosts that the
emulator creates in network namespaces (needs root). Slow: run serially.

The hello test also carries two checks that used to launch clusters of their
own: the account's API key (a recognisable random one) is on no node disk,
which holds the key minted for its cluster instead, only in the mounted
credentials file and SkyPilot's staging copies of it (tests/e2e/test_secrets.py
checks everything local), and a preemption notice runs the task's
preemption hooks on the node (before in the autostop test).

What the nodes do by themselves runs on a second stack beside the first:
the skylet on the head node runs sky-mithril's provisioner (installed by the
cluster template), with credentials that came only from the API server's
environment, against the API URL the cluster was launched with. Autostop
and autodown act on exactly their cluster's live bid, even after an earlier
cluster of the same name. They are armed in the background from the
module's start and checked by its last test: the second stack's launches
overlap the first's, and the idle minute and the skylet's 60 s loop pass
while the other tests run, instead of being waited out."""

import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.emulator.hosts import VolumeInterface
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.provision import project_snapshot

from tests.helpers.secret_scan import files_holding_key
from tests.helpers.sky_stack import SkyStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                       reason='needs root and unshare for namespace hosts'),
]

# The sandbox's Mithril API key, searched for on the node disks and locally.
# The emulator accepts any bearer token (the managed-job test sends its own).
KEY = 'sk-mithril-SECRET-' + secrets.token_hex(12)
CREDENTIALS = Path('.config') / 'mithril' / 'config.yaml'
# The preemption hook added to examples/hello.yaml, and the file it writes
# in the node's home.
HOOK_MARKER = 'checkpoint-at-notice'
HOOK = (f'echo "notice until $MITHRIL_PREEMPTION_DEADLINE" > ~/{HOOK_MARKER}; '
        f'hostname >> ~/{HOOK_MARKER}')

GPU_TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
# The managed job's steps (1 s each; a multiple of its checkpoint interval, so
# the last step is saved): it still trains once the standby has
# taken over.
TRAIN_STEPS = 150


def _namespaces(prefix: str) -> List[str]:
    listing = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                             text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope='module')
def namespace_stack(tmp_path_factory) -> Iterator[SkyStack]:
    hosts = NamespaceHosts()
    try:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('e2e'),
                             api_url=emulator.url,
                             api_key=KEY,
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


def api_keys(stack: SkyStack, key: str) -> List[Dict]:
    """The stack's emulator's API keys (`GET /v2/api-keys`)."""
    answer = requests.get(f'{stack.emulator.url}/v2/api-keys', timeout=30,
                          headers={'Authorization': f'Bearer {key}'})
    answer.raise_for_status()
    return answer.json()


# Idle minute + the skylet's 60 s event loop + SkyPilot's own teardown steps.
AUTOSTOP_WAIT_SECONDS = 420


class Watch:
    """Polls `done` in the background from now until it holds, for at most
    AUTOSTOP_WAIT_SECONDS; `seconds()` says how long it took."""

    def __init__(self, what: str, done: Callable[[], bool],
                 describe: Callable[[], object]) -> None:
        self.what = what
        self._done = done
        self._describe = describe
        self._started = time.monotonic()
        self._took: Optional[float] = None
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while time.monotonic() - self._started < AUTOSTOP_WAIT_SECONDS:
            if self._done():
                self._took = time.monotonic() - self._started
                return
            time.sleep(0.5)

    def seconds(self) -> float:
        self._thread.join()
        assert self._took is not None, (
            f'{self.what} did not happen within {AUTOSTOP_WAIT_SECONDS}s: '
            f'{self._describe()}')
        return self._took


@pytest.fixture(scope='module')
def env_credentials_stack(tmp_path_factory) -> Iterator[SkyStack]:
    """Emulator on the hosts' bridge + a SkyPilot home whose Mithril key is
    only in the API server's environment."""
    with NamespaceHosts() as hosts:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('autostop'),
                             api_url=emulator.url, api_key='env-only-key',
                             project_id='proj_emulator',
                             credentials_in_environment=True)
            assert not (box.home / '.config' / 'mithril').exists()
            try:
                yield SkyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()


# The block volume pins the task to its region and is formatted only once.
# A GPU task: bids, unlike a CPU-only one, which goes on a CPU VM.
BLOCK_VOLUME_TASK = """
resources:
  accelerators: A100:1
run: |
  if [ -f /mnt/scratch/written-by ]; then echo "kept $(cat /mnt/scratch/written-by)"; else echo first-launch > /mnt/scratch/written-by; echo "new volume"; fi
  echo "fs=$(findmnt -no FSTYPE /mnt/scratch) owner=$(stat -c %U /mnt/scratch) uuid=$(sudo blkid -s UUID -o value "$(findmnt -no SOURCE /mnt/scratch)")"
config:
  mithril:
    volumes:
      /mnt/scratch: scratch-disk
"""


@dataclasses.dataclass
class ArmedAutostop:
    """What the arming launches printed, the three bids, and the watch for
    autodown of `new` and autostop of `idle`, started at `sky autostop`."""
    first: str
    again: str
    old: Dict
    new: Dict
    idle: Dict
    done: Watch


def arm_autostop(env_credentials_stack: SkyStack, task_dir: Path) -> ArmedAutostop:
    """`auto` launched with a block volume and downed; `auto` relaunched with
    `-i 1 --down` while `idle` is launched; `sky autostop -i 1 idle`. From
    there the nodes act by themselves."""
    volumes_url = f'{env_credentials_stack.emulator.url}/v2/volumes'
    created = requests.post(volumes_url, headers={
        'Authorization': 'Bearer env-only-key'}, json={
            'name': 'scratch-disk', 'project': 'proj_emulator',
            'disk_interface': 'Block', 'region': 'us-central3-a',
            'size_gb': 1}, timeout=30)
    assert created.status_code == 201, created.text
    task = task_dir / 'block.yaml'
    task.write_text(BLOCK_VOLUME_TASK)
    first = env_credentials_stack.sky('launch', '-y', '-c', 'auto', '--infra', 'mithril',
                                      str(task))
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
        [new] = [b for b in env_credentials_stack.bids('auto') if b['fid'] != old['fid']]
        assert new['status'] == 'Allocated'
        idle_launch.result()
    [idle] = [b for b in env_credentials_stack.bids()
              if b['fid'] not in (old['fid'], new['fid'])]
    env_credentials_stack.sky('autostop', '-y', '-i', '1', 'idle')

    def status(bid: Dict) -> str:
        return next(b['status'] for b in env_credentials_stack.bids() if b['fid'] == bid['fid'])

    done = Watch('autodown and autostop', lambda: (
        status(new) == 'Terminated' and status(idle) == 'Paused'),
        env_credentials_stack.bids)
    return ArmedAutostop(first, again, old, new, idle, done)


@pytest.fixture(scope='module')
def autostop_armed(env_credentials_stack: SkyStack,
                   tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator['Future[ArmedAutostop]']:
    """`arm_autostop` in the background: its launches overlap the other
    stack's, and the nodes' idle minute the tests after them."""
    task_dir = tmp_path_factory.mktemp('block')
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(arm_autostop, env_credentials_stack, task_dir)


@pytest.fixture(scope='module', autouse=True)
def autostop_armed_first(request: pytest.FixtureRequest) -> None:
    """Starts `autostop_armed` before the module's first test, when a test
    that needs it is selected."""
    if any('autostop_armed' in item.fixturenames
           for item in request.session.items if item.module is request.module):
        request.getfixturevalue('autostop_armed')


def test_hello_launch_exec_status_stop_start_preempt_down(namespace_stack, tmp_path):
    """examples/hello.yaml (plus a preemption hook) through its whole life.
    While the node is up, its disk holds no account key, and the key minted
    for the cluster only in the mounted credentials file and SkyPilot's
    staging copies of it; the preemption notice runs the hook on the node;
    no `sky` output, and nothing the test wrote locally but the user's
    credentials file, holds the account key; `sky down` revokes the
    cluster's key."""
    started_at = time.time()
    task = yaml.safe_load(catalog_files.example_path('hello.yaml').read_text())
    task['config']['hooks'] = [{'events': ['preemption'], 'run': HOOK}]
    hello = tmp_path / 'hello.yaml'
    hello.write_text(yaml.safe_dump(task))
    said: List[Tuple[Tuple[str, ...], str]] = []

    def sky(*args: str) -> str:
        said.append((args, namespace_stack.sky(*args)))
        return said[-1][1]

    started = time.monotonic()
    out = sky('launch', '-y', '-c', 'hello', '--infra', 'mithril', str(hello))
    launch_seconds = time.monotonic() - started
    assert 'Hello from' in out and 'node 0 of 1' in out, out
    [bid] = namespace_stack.live_bids('hello')
    assert bid['limit_price'] == '$4.00'
    [instance] = bid['instances']

    # The node disks: no file holds the account's key. The cluster's own
    # key is in the mount itself, and in SkyPilot's staging copy of every
    # file mount (`~/.sky/.runtime_files/<uuid>`, copied, not moved, by
    # backend_utils._optimize_file_mounts, as for every cloud).
    disks = Path('/var/lib/sky-mithril/hosts') / namespace_stack.hosts.prefix
    hits, searched = files_holding_key(disks, KEY)
    assert searched > 100, f'only {searched} files on the node disks'
    assert hits == [], f'the account key is on the node disks: {hits}'
    [mounted] = disks.glob(f'*/disk/home/{CREDENTIALS}')
    node = yaml.safe_load(mounted.read_text())
    node_key = node['profiles'][node['current_profile']]['api_key']
    [minted] = [k for k in api_keys(namespace_stack, KEY)
                if k['name'].startswith('sky-hello-')]
    assert node_key.startswith(minted['snippet'].rstrip('.')), minted
    [local_copy] = (namespace_stack.box.home / '.sky' / 'mithril' /
                    'clusters').glob('hello-*/node-credentials.yaml')
    local = local_copy.read_bytes()
    hits, _ = files_holding_key(disks, node_key)
    assert mounted in hits, hits
    for hit in hits:
        where = hit.relative_to(disks).parts[1:]
        assert hit == mounted or where[:4] == (
            'disk', 'home', '.sky', '.runtime_files'), hits
        assert hit.read_bytes() == local, hit
        assert hit.stat().st_mode & 0o777 == 0o600, (hit,
                                                      oct(hit.stat().st_mode))

    # One `sky exec` (a job on the cluster, ~20 s) for both checks.
    executed = sky('exec', 'hello', 'echo exec says hi; test -s '
                   '~/.config/mithril/config.yaml && echo credentials mounted')
    assert 'exec says hi' in executed and 'credentials mounted' in executed, executed
    status = sky('status', '--refresh', 'hello')
    assert re.search(r'hello\s+Mithril \(us-central3-a\).*UP', status)

    sky('stop', '-y', 'hello')
    assert [b['status'] for b in namespace_stack.bids('hello') if b['fid'] == bid['fid']] == ['Paused']
    assert re.search(r'hello\s+Mithril.*STOPPED',
                     sky('status', '--refresh', 'hello'))
    sky('start', '-y', 'hello')
    [resumed] = namespace_stack.live_bids('hello')
    assert resumed['fid'] == bid['fid'] and resumed['status'] == 'Allocated'
    # Launched again at a new limit: the cluster keeps its bid, and the new
    # limit reaches it (SkyPilot keeps an existing cluster's old provider
    # config on a relaunch, but not the launch's settings).
    task['config']['mithril']['limit_price'] = 5.00
    hello.write_text(yaml.safe_dump(task))
    assert 'Hello from' in sky('launch', '-y', '-c', 'hello', str(hello))
    assert [(b['fid'], b['limit_price'])
            for b in namespace_stack.live_bids('hello')] == [(bid['fid'], '$5.00')]

    # Preempted, and the bid back to Open: it is live and wins again by
    # itself once the price falls, so it never reads STOPPED; `sky stop`
    # pauses it. The notice (5 emulated minutes: 5 s of wall time at 60x)
    # runs the task's preemption hook on the node.
    marker = namespace_stack.hosts.home(instance['fid']) / HOOK_MARKER
    assert not marker.exists(), marker.read_text()
    try:
        namespace_stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                                price='$9.00')  # above the $5.00 limit
        namespace_stack.control('POST', f'bids/{bid["fid"]}/preempt')
        noticed = time.monotonic()
        while not marker.exists():
            assert time.monotonic() - noticed < 60, (
                f'the preemption hook did not run: {namespace_stack.bids("hello")}')
            time.sleep(0.2)
        hook_seconds = time.monotonic() - noticed
        text = marker.read_text()
        assert 'notice until 20' in text, text
        deadline = time.monotonic() + 60
        while [b['status'] for b in namespace_stack.bids('hello')
               if b['fid'] == bid['fid']] != ['Open']:
            assert time.monotonic() < deadline, namespace_stack.bids('hello')
            time.sleep(1)
        # The refresh reads the project's shared snapshot: a preemption made
        # outside the plugin shows within its TTL, and never as STOPPED.
        deadline = time.monotonic() + project_snapshot.TTL_SECONDS + 30
        while True:
            status = sky('status', '--refresh', 'hello')
            assert 'STOPPED' not in status, status
            if re.search(r'hello\s+Mithril.*INIT', status):
                break
            assert time.monotonic() < deadline, status
            time.sleep(5)  # a `sky` run costs seconds of CPU
        sky('stop', '-y', 'hello')
        assert [b['status'] for b in namespace_stack.bids('hello')
                if b['fid'] == bid['fid']] == ['Paused']
        assert re.search(r'hello\s+Mithril.*STOPPED',
                         sky('status', '--refresh', 'hello'))
    finally:
        namespace_stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                                price='$0.50')
        sky('down', '-y', 'hello')
    assert [b['status'] for b in namespace_stack.bids('hello')] == ['Terminated']
    assert namespace_stack.live_bids() == []
    assert namespace_stack.control('GET', 'state')['bids'][0]['instances'][0]['status'] == 'STATUS_TERMINATED'

    # `sky down` revoked the cluster's key.
    [revoked] = [k for k in api_keys(namespace_stack, KEY)
                 if k['fid'] == minted['fid']]
    assert revoked['deactivated_at'] is not None, revoked
    leaked = [' '.join(args) for args, out in said
              if KEY in out or node_key in out]
    assert leaked == [], f'an API key is in the output of: {leaked}'
    # Locally, nothing this test wrote holds the key but the user's
    # credentials file (mode 600).
    home = namespace_stack.box.home
    hits, _ = files_holding_key(namespace_stack.box.root, KEY,
                                changed_since=started_at - 1)
    assert set(hits) <= {home / CREDENTIALS}, hits
    assert (home / CREDENTIALS).stat().st_mode & 0o777 == 0o600
    temp = Path(tempfile.gettempdir())
    hits, _ = files_holding_key(temp, KEY, changed_since=started_at - 1,
                                skip=(namespace_stack.box.root, *temp.glob('bash_jobs*')))
    assert hits == [], hits
    print(f'\nhello launch took {launch_seconds:.0f}s; the preemption hook '
          f'ran {hook_seconds:.1f}s after the notice started')


def test_a_block_volume_is_formatted_once_and_kept_across_down(autostop_armed):
    """A block volume is formatted on first use only and keeps its data
    across `sky down` and a new launch in its region: the launches that arm
    the autostop and autodown the module's last test checks."""
    armed = autostop_armed.result()
    first, again = armed.first, armed.again
    assert 'new volume' in first and 'fs=ext4 owner=ubuntu' in first, first
    uuid = first.split('uuid=')[1].split()[0]
    assert 'kept first-launch' in again and f'uuid={uuid}' in again, again


def test_two_nodes_run_with_their_rank_and_ips(namespace_stack):
    multi = str(catalog_files.example_path('multi-node.yaml'))
    out = namespace_stack.sky('launch', '-y', '-c', 'ddp', '--infra', 'mithril', multi)
    lines = re.findall(r'node (\d)/2 ip=(\S+) master=(\S+) gpus=(\d)', out)
    assert sorted(rank for rank, *_ in lines) == ['0', '1']
    head_ip = {ip for rank, ip, _, _ in lines if rank == '0'}
    assert {master for *_, master, _ in lines} == head_ip
    assert len({ip for _, ip, _, _ in lines}) == 2
    assert {gpus for *_, gpus in lines} == {'8'}
    namespace_stack.sky('down', '-y', 'ddp')
    assert namespace_stack.live_bids() == []


def test_managed_job_recovers_at_the_notice_from_its_volume(namespace_stack):
    """examples/managed-train.yaml as users run it: checkpoints on a Mithril
    file share, a preemption hook, recovery from the notice on, re-bidding
    up to its recovery limit in the volume's region."""
    created = requests.post(
        f'{namespace_stack.emulator.url}/v2/volumes',
        headers={'Authorization': f'Bearer {KEY}'},
        json={'name': 'train-checkpoints', 'project': 'proj_emulator',
              'disk_interface': 'File', 'region': REGION, 'size_gb': 10},
        timeout=30)
    assert created.status_code == 201, created.text
    state = namespace_stack.hosts.volume_path(created.json()['fid'],
                                              VolumeInterface.FILE) / 'state.json'
    # Mithril's notice is 5 minutes; at 60x that is 5 s of wall time, less
    # than one poll of the jobs controller, while SkyPilot's setup of the
    # standby runs at the machine's own speed. Give it two minutes of wall
    # time (still less than the real notice).
    market = namespace_stack.emulator.market
    notice_s, market.preemption_notice_s = market.preemption_notice_s, 7200.0
    train = str(catalog_files.example_path('managed-train.yaml'))
    try:
        started = time.monotonic()
        namespace_stack.sky('jobs', 'launch', '-y', '-d', '-n', 'train', train,
                            '--env', f'TOTAL_STEPS={TRAIN_STEPS}')

        def step() -> int:
            return json.loads(state.read_text())['step'] if state.exists() else 0

        last_queue = ['']

        def queue_shows(status: str) -> bool:
            last_queue[0] = namespace_stack.sky('jobs', 'queue')
            row = [l for l in last_queue[0].splitlines() if ' train ' in l]
            return bool(row) and status in row[0]

        def wait_for(predicate, what: str, seconds: float = 300,
                     every: float = 1) -> float:
            deadline = time.monotonic() + seconds
            while not predicate():
                assert time.monotonic() < deadline, (
                    f'timed out waiting for {what}; last queue:\n{last_queue[0]}')
                time.sleep(every)
            return time.monotonic()

        # Preempt once the controller counts the job as running and the
        # first periodic checkpoint (every 10 steps) is on the volume.
        wait_for(lambda: step() >= 10 and queue_shows('RUNNING'),
                 'the job to be RUNNING')
        running_seconds = time.monotonic() - started
        [old] = namespace_stack.live_bids()
        # Above the limit ($2.00), below the recovery limit ($4.00).
        namespace_stack.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                                price='$3.00')
        notice_at = wait_for(lambda: any(
            b['fid'] == old['fid'] and b['status'] == 'Preempting'
            for b in namespace_stack.bids()), 'the notice', 60)

        def standbys() -> List[dict]:
            return [b for b in namespace_stack.bids() if b['name'] == old['name'] and
                    b['fid'] != old['fid']]

        # The replacement is won and boots while the old node still trains.
        standby_at = wait_for(lambda: any(
            b['status'] == 'Allocated' for b in standbys()), 'a standby', 60)
        assert [b['status'] for b in namespace_stack.bids()
                if b['fid'] == old['fid']] == ['Preempting']
        [standby] = standbys()
        assert standby['limit_price'] == '$4.00'  # recovery_limit_price
        gone_at = wait_for(lambda: any(
            b['fid'] == old['fid'] and b['status'] == 'Terminated'
            for b in namespace_stack.bids()), 'the old bid to be cancelled', 240)
        saved = step()
        assert saved < TRAIN_STEPS, 'the job ended before the switch'
        # `sky jobs queue` costs seconds of CPU on both sides: polled every
        # 5 s, and for the end only once the checkpoint says it trained.
        running_again_at = wait_for(lambda: queue_shows('RUNNING'),
                                    'the job to run again', every=5)
        # The job runs on the standby (no third bid), which kept its
        # recovery limit.
        assert [(b['fid'], b['limit_price']) for b in namespace_stack.live_bids()] == [
            (standby['fid'], '$4.00')]
        wait_for(lambda: step() >= TRAIN_STEPS and queue_shows('SUCCEEDED'),
                 'SUCCEEDED', 400, every=5)

        logs = namespace_stack.sky('jobs', 'logs', '--no-follow', '1')
        assert f'resuming at step {saved}' in logs, logs
        assert 'training done' in logs
        # The old node trained until its replacement was ready, and its bid
        # was cancelled within the notice, never left Open.
        old_events = next(b['events'] for b in namespace_stack.bids()
                          if b['fid'] == old['fid'])
        assert 'Preempted' in old_events and 'Terminated' in old_events
        assert gone_at - notice_at < 7200 / 60, gone_at - notice_at
        wait_for(lambda: namespace_stack.live_bids() == [],
                 'the finished job\'s cluster to be torn down', 120)
        print(f'\nmanaged job: running after {running_seconds:.0f}s; notice -> '
              f'standby up {standby_at - notice_at:.0f}s -> old node gone '
              f'{gone_at - standby_at:.0f}s -> running again '
              f'{running_again_at - gone_at:.0f}s; resumed at step {saved}, '
              'the last step saved (0 lost)')
    finally:
        market.preemption_notice_s = notice_s


def test_autodown_and_autostop_act_on_exactly_their_clusters_live_bid(
        env_credentials_stack, autostop_armed):
    """Autodown of a cluster whose name an earlier, terminated cluster had,
    and autostop of another cluster running at the same time: each acts on
    its own live bid only, within AUTOSTOP_WAIT_SECONDS of `sky autostop`
    (armed in the background from the module's start; the other tests ran
    meanwhile)."""
    armed = autostop_armed.result()
    old, new, idle = armed.old, armed.new, armed.idle
    waited = armed.done.seconds()
    print(f'\nautodown and autostop done {waited:.0f}s after `sky autostop`')
    # No bid but these three, ever (`new` and `idle` bid in either order).
    assert [b['fid'] for b in env_credentials_stack.bids()] in (
        [old['fid'], new['fid'], idle['fid']],
        [old['fid'], idle['fid'], new['fid']])
    # The first `auto`'s key went with its `sky down`. The autodown on the
    # second `auto`'s node cancels its bid with that key and is taken at
    # once, before it can revoke it: the API server revokes it when a status
    # refresh finds the cluster gone (the status daemon's, or this one).
    # Autostop keeps `idle`'s until `sky down`.
    def live_keys(cluster: str) -> List[Dict]:
        return [k for k in api_keys(env_credentials_stack, 'env-only-key')
                if k['name'].startswith(f'sky-{cluster}-') and
                not k['deactivated_at']]
    env_credentials_stack.sky('status', '--refresh')
    assert live_keys('auto') == []
    assert live_keys('idle')
    env_credentials_stack.sky('down', '-y', 'idle')
    assert all(b['status'] == 'Terminated' for b in env_credentials_stack.bids())
    assert live_keys('idle') == []
