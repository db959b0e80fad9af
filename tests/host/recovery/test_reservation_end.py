"""A real managed job (`sky jobs launch`, examples/managed-train.yaml) on a
short reservation, on namespace hosts with the emulator at 60x: it trains on
the reserved instance, moves onto a spot bid before the reservation ends
(the reserved instance given back first), and resumes at the step the
preemption hook saved: 0 steps lost. Needs root; about 5 minutes of wall
time (the reservation lasts 4 of them). Its own stack, so it runs beside the
other host tests."""

import datetime
import json
import os
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
# At 60x a reservation hour is a wall minute, a lead minute a wall second:
# the job has 2 wall minutes to launch onto the reservation before the lead
# starts, and the relaunch onto spot 2 more before the end.
RESERVATION_HOURS = 4
LEAD_MINUTES = 120
# More steps (1 s each) than the test waits for: it cancels the job once it
# has resumed on spot.
TRAIN_STEPS = 1000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[SkyStack]:
    with NamespaceHosts() as hosts:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path / 'sky', api_url=emulator.url,
                             api_key=KEY, sky_config={'jobs': {'controller': {
                                 'consolidation_mode': True}}})
            try:
                yield SkyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()


def reservation(stack: SkyStack) -> Dict[str, Any]:
    [found] = [r for r in stack.control('GET', 'state')['reservations']
               if r['name'] == RESERVATION]
    return found


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


def buy_reservation(stack: SkyStack) -> None:
    """`sky-mithril reservations create`, with SkyPilot's key on the
    instance, as a user buys one."""
    box = stack.box
    subprocess.run([sys.executable, '-c', 'from sky.utils import auth_utils; '
                    'auth_utils.get_or_generate_keys()'],
                   env=box.env, check=True, capture_output=True)
    bought = subprocess.run(
        [str(Path(sys.executable).parent / 'sky-mithril'), 'reservations',
         'create', RESERVATION, TYPE, '-r', REGION, '--hours',
         str(RESERVATION_HOURS), '-N', '1', '-y'],
        env=box.env, capture_output=True, text=True, timeout=120)
    assert bought.returncode == 0, bought.stdout + bought.stderr
    wait_for(lambda: [i['status'] for i in reservation(stack)['instances']] ==
             ['STATUS_RUNNING'], 'the reserved instance', 60,
             describe=lambda: reservation(stack))


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

    buy_reservation(stack)
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

    def queue_shows(status: str) -> bool:
        last_queue[0] = stack.sky('jobs', 'queue')
        row = [l for l in last_queue[0].splitlines() if ' train ' in l]
        return bool(row) and status in row[0]

    running_at = wait_for(lambda: step() >= 1 and queue_shows('RUNNING'),
                          'the job to train', 300, every=5,
                          describe=lambda: last_queue[0])
    # On the reserved instance: no bid at all.
    assert stack.bids() == [], stack.bids()

    given_back_at = wait_for(
        lambda: [i['status'] for i in reservation(stack)['instances']] ==
        ['STATUS_PAUSED'], 'the reserved instance to be given back',
        RESERVATION_HOURS * 60, describe=lambda: reservation(stack))
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
                          'the job to resume', 240, every=5,
                          describe=lambda: last_queue[0])
    assert step() >= saved
    stack.sky('jobs', 'cancel', '-y', '-n', 'train')
    wait_for(lambda: stack.live_bids() == [], 'the cancelled job\'s bid to go',
             120, every=5, describe=stack.bids)
    print(f'\nreservation end: training after {running_at - started:.0f}s; '
          f'instance given back {given_back_at - running_at:.0f}s later, '
          f'at step {saved}; spot bid allocated {on_spot_at - given_back_at:.0f}s '
          f'later; training again {resumed_at - on_spot_at:.0f}s later, '
          f'resuming at step {saved} (0 lost)')
