"""Managed-job recovery on Mithril: sky-mithril's recovery policies vs
SkyPilot's default flow.

Runs `examples/managed-train.yaml` as a managed job on the emulator's
namespace hosts (needs root), preempts it (the price in its region rises
above its limit) and measures each flow:
- `sky-mithril` (stay and re-bid up to a cap; the example as it is):
  checkpoints on a Mithril file share, recovery from the notice, the
  preemption hook makes the trainer save every step, a standby bid at
  `recovery_limit_price` in the volume's region is won, booted and made
  ready while the old node trains, and the job moves onto it;
- `move-region` (checkpoints in a bucket: a directory of this machine that
  every host sees): no volume, no recovery limit; the region's price is
  above the limit, so the job moves at the notice to another region that
  can be won now ($1.50/h there);
- `wait` (stay and wait for the price to fall): the file share, no recovery
  limit, `provision_timeout: forever`; the price falls back below the limit
  when the old node is gone;
- `default`, SkyPilot's default flow (the plugin's status mapping alone):
  `recovery_starts: node_lost`, no hook, no recovery limit; the price falls
  back below the limit when the node is gone, so the relaunch can win at once
  (the most favourable case for it).
Printed per flow: lost work (steps completed on the old node that the resumed
run does again), downtime (old node gone -> the first new training step),
the training gap (the last step on the old node -> the first on the new),
notice -> old node gone, and instance-seconds billed for the whole job beyond
the training itself (extra; from the bids' allocation history).

The emulator runs at 60x, with the 5-minute notice stretched to two minutes of
wall time so a jobs-controller poll (every 15 s) fits inside it. Every bid
is cancelled at the end. About 9 minutes per flow. Run as root:
    python benchmarks/recovery_bench.py [flow ...]   # default: all four
"""

import csv
import dataclasses
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.emulator import default_market
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.hosts import VolumeInterface
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer

SPEED = 60.0
NOTICE_S = 7200.0  # emulated: two minutes of wall time at 60x
API_KEY = 'recovery-bench-key'
GPU_TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
# Where the `move-region` flow goes: the type is offered there too, at a
# price within the job's limit.
OTHER_REGION = 'us-central2-a'
OTHER_REGION_PRICE = '$1.50'
FLOWS = ('sky-mithril', 'move-region', 'wait', 'default')
TOTAL_STEPS = 200  # still training after a 2-minute notice
STEP_SECONDS = 1.0
# The trainer also logs every completed step, and when it completed (the
# nodes share this machine's clock), on the volume, to count lost work.
STEP_LOG_LINE = "    print(f'step {step}', flush=True)\n"
STEP_LOG_ADDED = (STEP_LOG_LINE +
                  "    with open(os.path.join(os.environ['CHECKPOINT_DIR'], "
                  "'steps.log'), 'a') as log: "
                  "log.write(f'{step} {time.time()}\\n')\n")


@dataclasses.dataclass
class Result:
    """One preempted managed job."""

    lost_steps: int
    downtime_s: float
    training_gap_s: float
    notice_to_gone_s: float
    extra_instance_s: float


def task_yaml(flow: str, bucket: Path) -> str:
    """The example task, with a per-step log, as each flow runs it."""
    task = yaml.safe_load(catalog_files.example_path(
        'managed-train.yaml').read_text())
    assert STEP_LOG_LINE in task['run'], 'the example trainer changed'
    task['run'] = task['run'].replace(STEP_LOG_LINE, STEP_LOG_ADDED)
    task['envs']['TOTAL_STEPS'] = TOTAL_STEPS
    mithril = task['config']['mithril']
    if flow != 'sky-mithril':
        del mithril['recovery_limit_price']
    if flow == 'move-region':
        del mithril['volumes'], mithril['provision_timeout']
        task['envs']['CHECKPOINT_DIR'] = str(bucket)
    if flow == 'default':
        mithril['recovery_starts'] = 'node_lost'
        del task['config']['hooks']
    return yaml.safe_dump(task)


def with_other_region(rows_from: Path, to: Path) -> Path:
    """A copy of the catalog at `rows_from` that also offers GPU_TYPE in
    OTHER_REGION."""
    rows = catalog_files.read_rows(rows_from)
    rows.append(dict(next(r for r in rows if r['InstanceType'] == GPU_TYPE),
                     Region=OTHER_REGION))
    with to.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=catalog_files.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return to


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace('Z', '+00:00')
                                           ).timestamp()


def billed_instance_seconds(emulator: EmulatorServer) -> float:
    """Wall seconds the job's bids held instances: from each allocation to
    the notice's end, a pause or the cancellation."""
    total = 0.0
    for bid in emulator.control('GET', 'state')['bids']:
        history = requests.get(
            f'{emulator.url}/v2/spot/bids/{bid["fid"]}/history',
            headers={'Authorization': f'Bearer {API_KEY}'}, timeout=30).json()
        start: Optional[float] = None
        for event in history['events']:
            at, kind = _epoch(event['timestamp']), event['event_type']
            if kind == 'Allocated':
                start = at
            elif start is not None and kind in ('Preempted', 'Paused',
                                                'Terminated'):
                end = at + NOTICE_S if kind == 'Preempted' else at
                total += (end - start) * len(bid['instances'])
                start = None
    return total / SPEED


def run(flow: str, work: Path) -> Result:
    """One preempted managed job, recovered by `flow`."""
    root = work / flow
    root.mkdir(parents=True)
    # Only the job that can move is offered another region: the others stay
    # in their volume's region anyway, as before this flow existed.
    catalogs: Dict[str, Any] = {}
    client_env: Dict[str, str] = {}
    if flow == 'move-region':
        catalogs['catalog_path'] = with_other_region(default_market.DATA_PATH,
                                                     root / 'market.csv')
        client_env[catalog_files.ENV_CATALOG] = str(with_other_region(
            catalog_files.catalog_path(), root / 'vms.csv'))
    with NamespaceHosts() as hosts, EmulatorServer(
            hosts=hosts, speed=SPEED, api_key=API_KEY,
            host=hosts.api_address, **catalogs) as emulator:
        emulator.market.preemption_notice_s = NOTICE_S
        if flow == 'move-region':
            emulator.control('POST', 'price', instance_type=GPU_TYPE,
                             region=OTHER_REGION, price=OTHER_REGION_PRICE)
        box = SkySandbox(root / 'sky', api_url=emulator.url, api_key=API_KEY,
                         sky_config={'jobs': {'controller': {
                             'consolidation_mode': True}}},
                         extra_env=client_env)
        # The hosts' user must reach it: not under the private work directory.
        bucket = Path(tempfile.mkdtemp(dir='/var/tmp', prefix='bench-bucket-'))
        bucket.chmod(0o777)
        try:
            return _measure(flow, emulator, hosts, box, bucket)
        finally:
            shutil.rmtree(bucket, ignore_errors=True)
            box.sky(['jobs', 'cancel', '-y', '-a'], timeout=300)
            box.stop_api_server()
            for bid in emulator.control('GET', 'state')['bids']:
                if bid['status'] != 'Terminated':
                    requests.delete(f'{emulator.url}/v2/spot/bids/{bid["fid"]}',
                                    headers={'Authorization': f'Bearer {API_KEY}'},
                                    timeout=30)


def _measure(flow: str, emulator: EmulatorServer, hosts: NamespaceHosts,
             box: SkySandbox, bucket: Path) -> Result:
    if flow == 'move-region':
        share = bucket
    else:
        created = requests.post(
            f'{emulator.url}/v2/volumes',
            headers={'Authorization': f'Bearer {API_KEY}'},
            json={'name': 'train-checkpoints', 'project': 'proj_emulator',
                  'disk_interface': 'File', 'region': REGION, 'size_gb': 10},
            timeout=30)
        created.raise_for_status()
        share = hosts.volume_path(created.json()['fid'], VolumeInterface.FILE)
    task = box.root / f'{flow}.yaml'
    task.write_text(task_yaml(flow, share))
    launched = box.sky(['jobs', 'launch', '-y', '-d', '-n', 'train',
                        str(task)], timeout=600)
    assert launched.returncode == 0, launched.stdout + launched.stderr

    def logged() -> List[Tuple[int, float]]:
        """(step, when it completed) for every step logged on the volume."""
        log = share / 'steps.log'
        lines = log.read_text().splitlines() if log.exists() else []
        return [(int(l.split()[0]), float(l.split()[1])) for l in lines
                if len(l.split()) == 2]

    def steps() -> List[int]:
        return [step for step, _ in logged()]

    def bid_status(fid: str) -> str:
        return next(b['status'] for b in emulator.control('GET', 'state')['bids']
                    if b['fid'] == fid)

    def wait_for(what: str, done: Callable[[], Any], seconds: float = 600
                 ) -> float:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f'{flow}: no {what}'
            time.sleep(0.5)
        return time.monotonic()

    wait_for('first checkpoint', lambda: len(steps()) >= 15)
    [old] = [b for b in emulator.control('GET', 'state')['bids']
             if b['status'] == 'Allocated']
    emulator.control('POST', 'price', instance_type=GPU_TYPE, region=REGION,
                     price='$3.00')
    notice_at = wait_for('notice', lambda: bid_status(old['fid']) == 'Preempting')
    gone_at = wait_for('old node gone',
                       lambda: bid_status(old['fid']) != 'Preempting', 300)
    gone_epoch = time.time()
    lines_on_old = len(steps())
    if flow in ('default', 'wait'):
        emulator.control('POST', 'price', instance_type=GPU_TYPE,
                         region=REGION, price='$1.00')
    wait_for('a new training step', lambda: len(steps()) > lines_on_old, 900)
    wait_for('the job to finish', lambda: max(steps()) >= TOTAL_STEPS, 900)
    wait_for('the job cluster to be torn down', lambda: all(
        b['status'] == 'Terminated'
        for b in emulator.control('GET', 'state')['bids']), 300)
    # The new node's first step is the one after the longest pause in the
    # log; it resumed at the step before. A node taken between saving a step
    # and logging it resumes one step past its log: nothing lost.
    lines = logged()
    first_new = max(range(1, len(lines)),
                    key=lambda i: lines[i][1] - lines[i - 1][1])
    (last_old_step, last_old_at), (first_step, first_at) = (
        lines[first_new - 1], lines[first_new])
    return Result(lost_steps=max(last_old_step - (first_step - 1), 0),
                  downtime_s=first_at - gone_epoch,
                  training_gap_s=first_at - last_old_at,
                  notice_to_gone_s=gone_at - notice_at,
                  extra_instance_s=billed_instance_seconds(emulator) -
                  TOTAL_STEPS * STEP_SECONDS)


def main() -> None:
    flows = sys.argv[1:] or list(FLOWS)
    unknown = set(flows) - set(FLOWS)
    assert not unknown, f'unknown flows {sorted(unknown)}; choose from {FLOWS}'
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir='/var/tmp') as work:
        results: Dict[str, Result] = {}
        for flow in flows:
            results[flow] = run(flow, Path(work))
            print(f'{flow}: {results[flow]}', flush=True)
    print(f'Managed job preempted once on the emulator ({SPEED:.0f}x, notice '
          f'{NOTICE_S / SPEED:.0f} s of wall time), {TOTAL_STEPS} steps of '
          f'{STEP_SECONDS:.0f} s.')
    rows = [('lost work (steps done again)', 'lost_steps', 'd'),
            ('downtime: old node gone -> training again (s)', 'downtime_s',
             '.0f'),
            ('training gap: last old step -> first new step (s)',
             'training_gap_s', '.0f'),
            ('notice -> old node gone (s)', 'notice_to_gone_s', '.0f'),
            ('instance-seconds billed beyond the training', 'extra_instance_s',
             '.0f')]
    width = max(len(title) for title, _, _ in rows)
    print(f'{"":{width}}' + ''.join(f'  {flow:>12}' for flow in results))
    for title, field, fmt in rows:
        print(f'{title:{width}}' + ''.join(
            f'  {format(getattr(result, field), fmt):>12}'
            for result in results.values()))
    print(f'({time.monotonic() - started:.0f} s run, every bid cancelled)')


if __name__ == '__main__':
    main()
