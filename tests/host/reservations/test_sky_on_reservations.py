"""Real `sky` runs on reservations bought with `sky-mithril reservations
create`, on namespace hosts with the emulator at 60x: examples/multi-node.yaml
on a 2-instance reservation (stop, start, down, then the instances returned),
and a managed job (examples/managed-train.yaml) that trains on a reserved
instance, moves onto a spot bid before the reservation ends (the instance
given back first) and resumes at the step its preemption hook saved, and a
service (examples/serve.yaml, `sky serve` in consolidation mode) whose base
replica serves from a 1-instance reservation while the other bursts onto a
spot bid. Needs root; a few minutes. A stack of its own, so it runs beside the other host
tests."""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.hosts import VolumeInterface
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.sky_stack import SkyStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                       reason='needs root and unshare for namespace hosts'),
]

KEY = 'reservation-end-key'
REGION = 'us-central3-a'
TYPE = 'a100-80gb.sxm.1x'
RESERVATION = 'train-res'
# At 60x a reservation hour is a wall minute, a lead minute a wall second.
# The job launches onto the reservation well before its lead starts; the
# test then moves the market's clock to just inside the lead, and the
# relaunch onto spot has 2 wall minutes before the end.
RESERVATION_HOURS = 12
LEAD_MINUTES = 120
# More steps (1 s each) than the test waits for: it cancels the job once it
# has resumed on spot.
TRAIN_STEPS = 1000


@pytest.fixture(scope='module')
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkyStack]:
    with NamespaceHosts() as hosts:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('sky'),
                             api_url=emulator.url,
                             api_key=KEY, sky_config={
                                 'jobs': {'controller': {'consolidation_mode': True}},
                                 'serve': {'controller': {'consolidation_mode': True}}})
            try:
                yield SkyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()


def reservation(stack: SkyStack, name: str = RESERVATION) -> Dict[str, Any]:
    [found] = [r for r in stack.control('GET', 'state')['reservations']
               if r['name'] == name]
    return found


def reserved_instances(stack: SkyStack, name: str) -> Dict[str, str]:
    """The reservation's instances and their statuses, by fid."""
    return {i['fid']: i['status'] for i in reservation(stack, name)['instances']}


def market_time(text: str) -> datetime.datetime:
    when = datetime.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def wait_for(predicate: Callable[[], bool], what: str, seconds: float,
             every: float = 1, describe: Callable[[], Any] = lambda: '') -> float:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}: {describe()}'
        time.sleep(every)
    return time.monotonic()


def sky_mithril(stack: SkyStack, *args: str) -> str:
    """A `sky-mithril` command in the sandbox, as a user runs it; it must
    succeed."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / 'sky-mithril'), *args],
        env=stack.box.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def buy_reservation(stack: SkyStack, name: str, instance_type: str,
                    hours: int, quantity: int) -> None:
    """`sky-mithril reservations create`, with SkyPilot's key on the
    instances, as a user buys one; returns once they run."""
    subprocess.run([sys.executable, '-c', 'from sky.utils import auth_utils; '
                    'auth_utils.get_or_generate_keys()'],
                   env=stack.box.env, check=True, capture_output=True)
    sky_mithril(stack, 'reservations', 'create', name, instance_type, '-r',
                REGION, '--hours', str(hours), '-N', str(quantity), '-y')
    wait_for(lambda: set(reserved_instances(stack, name).values()) ==
             {'STATUS_RUNNING'}, 'the reserved instances', 60,
             describe=lambda: reservation(stack, name))


def test_two_nodes_on_a_reservation_stop_start_down_and_return(
        stack: SkyStack, tmp_path: Path) -> None:
    """Both nodes are the reservation's and no bid is placed; `sky stop`
    pauses the instances, `sky start` resumes them; `sky down` gives them
    back paused and keeps the capacity, which only `reservations return`
    gives up."""
    buy_reservation(stack, 'ddp-res', 'a100-80gb.sxm.8x', 24, 2)
    reserved = set(reserved_instances(stack, 'ddp-res'))
    task = yaml.safe_load(catalog_files.example_path('multi-node.yaml').read_text())
    task['config']['mithril']['reservation'] = 'ddp-res'
    multi = tmp_path / 'multi-node.yaml'
    multi.write_text(yaml.safe_dump(task))
    out = stack.sky('launch', '-y', '-c', 'ddp', str(multi))
    lines = re.findall(r'node (\d)/2 ip=(\S+) master=(\S+) gpus=(\d)', out)
    assert sorted(rank for rank, *_ in lines) == ['0', '1'], out
    head_ip = {ip for rank, ip, _, _ in lines if rank == '0'}
    assert {master for *_, master, _ in lines} == head_ip
    assert len({ip for _, ip, _, _ in lines}) == 2
    assert {gpus for *_, gpus in lines} == {'8'}
    assert stack.bids() == [], stack.bids()

    stack.sky('stop', '-y', 'ddp')
    assert set(reserved_instances(stack, 'ddp-res').values()) <= {
        'STATUS_STOPPING', 'STATUS_PAUSED'}
    assert re.search(r'ddp\s+Mithril.*STOPPED',
                     stack.sky('status', '--refresh', 'ddp'))
    stack.sky('start', '-y', 'ddp')
    assert set(reserved_instances(stack, 'ddp-res').values()) == {
        'STATUS_RUNNING'}

    stack.sky('down', '-y', 'ddp')
    assert reserved_instances(stack, 'ddp-res') == {
        fid: 'STATUS_PAUSED' for fid in reserved}
    assert stack.live_bids() == []
    # Only `reservations return` gives the capacity up, for its credit.
    sky_mithril(stack, 'reservations', 'return', 'ddp-res', *sorted(reserved),
                '-y')
    assert reserved_instances(stack, 'ddp-res') == {}


def test_a_managed_job_moves_to_spot_before_its_reservation_ends(
        stack: SkyStack, tmp_path: Path) -> None:
    created = requests.post(
        f'{stack.emulator.url}/v2/volumes',
        headers={'Authorization': f'Bearer {KEY}'},
        json={'name': 'train-checkpoints', 'project': 'proj_emulator',
              'disk_interface': 'File', 'region': REGION, 'size_gb': 10},
        timeout=30)
    assert created.status_code == 201, created.text
    state = stack.hosts.volume_path(created.json()['fid'],
                                    VolumeInterface.FILE) / 'state.json'

    def step() -> int:
        return json.loads(state.read_text())['step'] if state.exists() else 0

    buy_reservation(stack, RESERVATION, TYPE, RESERVATION_HOURS, 1)
    task = yaml.safe_load(
        catalog_files.example_path('managed-train.yaml').read_text())
    task['config']['mithril'].update(
        reservation=RESERVATION, reservation_end_lead_minutes=LEAD_MINUTES)
    task_file = tmp_path / 'train-on-reservation.yaml'
    task_file.write_text(yaml.safe_dump(task))

    started = time.monotonic()
    stack.sky('jobs', 'launch', '-y', '-d', '-n', 'train', str(task_file),
              '--env', f'TOTAL_STEPS={TRAIN_STEPS}')
    last_queue = ['']

    def controller_log() -> str:
        """The end of the job's controller log: what a failed wait shows."""
        done = stack.box.sky(['jobs', 'logs', '--controller', '--no-follow',
                              '-n', 'train'], timeout=120)
        return '\n'.join((done.stdout + done.stderr).splitlines()[-40:])

    def queue_shows(status: str) -> bool:
        last_queue[0] = stack.sky('jobs', 'queue')
        row = [l for l in last_queue[0].splitlines() if ' train ' in l]
        return bool(row) and status in row[0]

    try:
        running_at = wait_for(lambda: queue_shows('RUNNING') and step() >= 1,
                              'the job to train', 300, every=5,
                              describe=lambda: last_queue[0])
        # On the reserved instance: no bid at all.
        assert stack.bids('train') == [], stack.bids()
        # The end comes into the lead: the market's clock moves to a minute
        # inside it (training goes on meanwhile; nothing else waits on it).
        now = market_time(stack.control('GET', 'state')['now'])
        ends = market_time(reservation(stack)['end_time'])
        inside_lead = ends - datetime.timedelta(minutes=LEAD_MINUTES - 1)
        assert now < inside_lead, f'the job trained only at {now}, ends {ends}'
        stack.control('POST', 'advance', seconds=(inside_lead - now).total_seconds())

        given_back_at = wait_for(
            lambda: [i['status'] for i in reservation(stack)['instances']] ==
            ['STATUS_PAUSED'], 'the reserved instance to be given back',
            120, describe=lambda: reservation(stack))
        saved = step()
        assert reservation(stack)['status'] == 'Active', 'given back after the end'

        def spot_bids() -> List[Dict[str, Any]]:
            return [b for b in stack.live_bids() if b['status'] == 'Allocated']

        on_spot_at = wait_for(lambda: bool(spot_bids()), 'the spot relaunch', 240,
                              describe=stack.bids)
        [bid] = spot_bids()
        assert bid['limit_price'] == '$4.00'  # the example's recovery_limit_price
        now = market_time(stack.control('GET', 'state')['now'])
        ends = market_time(reservation(stack)['end_time'])
        assert now < ends, f'on spot at {now}, after the reservation ended at {ends}'

        resumed_at = wait_for(lambda: queue_shows('RUNNING') and
                              f'resuming at step {saved}' in stack.sky(
                                  'jobs', 'logs', '--no-follow', '-n', 'train'),
                              'the job to resume', 420, every=5,
                              describe=lambda: last_queue[0] + controller_log())
        assert step() >= saved
    finally:  # a failure above must not leave the job's bid to the next test
        stack.box.sky(['jobs', 'cancel', '-y', '-n', 'train'], timeout=300)
    wait_for(lambda: stack.live_bids() == [], 'the cancelled job\'s bid to go',
             120, every=5, describe=stack.bids)
    print(f'\nreservation end: training after {running_at - started:.0f}s; '
          f'instance given back {given_back_at - running_at:.0f}s later, '
          f'at step {saved}; spot bid allocated {on_spot_at - given_back_at:.0f}s '
          f'later; training again {resumed_at - on_spot_at:.0f}s later, '
          f'resuming at step {saved} (0 lost)')


def _host_name(instance_fid: str) -> str:
    """The start of an emulated host's name: its instance fid, lowercased."""
    return re.sub(r'[^a-z0-9-]+', '-', instance_fid.lower())


def test_a_service_serves_from_its_reservation_and_bursts_onto_spot(
        stack: SkyStack, tmp_path: Path) -> None:
    """Each SkyServe replica is a cluster, so the task's reservation takes
    the first replica whole and the second, finding no room, bids on spot
    at the task's limit; both answer through the load balancer. `sky serve
    down` cancels the bid and gives the reserved instance back paused."""
    buy_reservation(stack, 'serve-res', TYPE, 24, 1)
    [reserved] = reserved_instances(stack, 'serve-res')
    task = yaml.safe_load(catalog_files.example_path('serve.yaml').read_text())
    task['service']['readiness_probe']['initial_delay_seconds'] = 30
    task['config']['mithril']['reservation'] = 'serve-res'
    path = tmp_path / 'serve.yaml'
    path.write_text(yaml.safe_dump(task))
    out = stack.sky('serve', 'up', '-y', '-n', 'tiny-res', str(path))
    endpoint = re.search(r'Endpoint URL: \S*?(http://[\w.:]+)', out)
    assert endpoint, out
    hosts: Dict[str, str] = {}

    def both_replicas_answer() -> bool:
        try:
            answer = requests.get(f'{endpoint.group(1)}/predict',
                                  params={'x': 1}, timeout=5).json()
            hosts[answer['replica_id']] = answer['replica']
        except (requests.RequestException, ValueError, KeyError):
            pass
        return len(hosts) == 2

    wait_for(both_replicas_answer, 'both replicas to answer', 600, every=0.5,
             describe=lambda: (hosts, stack.bids()))
    [bid] = stack.live_bids('tiny-res-')
    assert bid['limit_price'] == '$4.00' and bid['instance_quantity'] == 1, bid
    [spot_instance] = bid['instances']
    on = {name: [h for h in hosts.values() if h.startswith(_host_name(fid))]
          for name, fid in (('reservation', reserved),
                            ('spot', spot_instance['fid']))}
    assert all(len(found) == 1 for found in on.values()), (on, hosts)

    stack.sky('serve', 'down', '-y', 'tiny-res')
    wait_for(lambda: 'No existing services' in stack.sky('serve', 'status'),
             'the service to be gone', 300, every=5)
    wait_for(lambda: stack.live_bids() == [], 'the burst bid to be cancelled',
             120, describe=stack.bids)
    wait_for(lambda: reserved_instances(stack, 'serve-res') == {
        reserved: 'STATUS_PAUSED'}, 'the reserved instance given back paused',
             120, describe=lambda: reservation(stack, 'serve-res'))
