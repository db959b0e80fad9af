"""Managed-job recovery on Mithril: sky-mithril's flow vs SkyPilot's default.

Runs `examples/managed-train.yaml` as a managed job (checkpoints on a Mithril
file share) on the emulator's namespace hosts (needs root), preempts it, and
measures, for two flows side by side:
- sky-mithril: recovery starts at the notice (`recovery_starts: notice`), the
  preemption hook makes the trainer save every step, a standby bid at
  `recovery_limit_price` in the volume's region is won, booted and set up
  while the old node trains, and the job moves onto it;
- SkyPilot's default flow (the plugin's status mapping alone):
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
is cancelled at the end. About 14 minutes. Run as root:
    python benchmarks/recovery_bench.py
"""

import dataclasses
import datetime
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.hosts import VolumeInterface
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer

SPEED = 60.0
NOTICE_S = 7200.0  # emulated: two minutes of wall time at 60x
API_KEY = 'recovery-bench-key'
GPU_TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
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


def task_yaml(flow: str) -> str:
    """The example task, with a per-step log; the default flow without
    sky-mithril's recovery settings and hook."""
    task = yaml.safe_load(catalog_files.example_path(
        'managed-train.yaml').read_text())
    assert STEP_LOG_LINE in task['run'], 'the example trainer changed'
    task['run'] = task['run'].replace(STEP_LOG_LINE, STEP_LOG_ADDED)
    task['envs']['TOTAL_STEPS'] = TOTAL_STEPS
    if flow == 'default':
        mithril = task['config']['mithril']
        del mithril['recovery_limit_price']
        mithril['recovery_starts'] = 'node_lost'
        del task['config']['hooks']
    return yaml.safe_dump(task)


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
    with NamespaceHosts() as hosts, EmulatorServer(
            hosts=hosts, speed=SPEED, api_key=API_KEY,
            host=hosts.api_address) as emulator:
        emulator.market.preemption_notice_s = NOTICE_S
        box = SkySandbox(work / flow, api_url=emulator.url, api_key=API_KEY,
                         sky_config={'jobs': {'controller': {
                             'consolidation_mode': True}}})
        try:
            return _measure(flow, emulator, hosts, box)
        finally:
            box.sky(['jobs', 'cancel', '-y', '-a'], timeout=300)
            box.stop_api_server()
            for bid in emulator.control('GET', 'state')['bids']:
                if bid['status'] != 'Terminated':
                    requests.delete(f'{emulator.url}/v2/spot/bids/{bid["fid"]}',
                                    headers={'Authorization': f'Bearer {API_KEY}'},
                                    timeout=30)


def _measure(flow: str, emulator: EmulatorServer, hosts: NamespaceHosts,
             box: SkySandbox) -> Result:
    created = requests.post(
        f'{emulator.url}/v2/volumes',
        headers={'Authorization': f'Bearer {API_KEY}'},
        json={'name': 'train-checkpoints', 'project': 'proj_emulator',
              'disk_interface': 'File', 'region': REGION, 'size_gb': 10},
        timeout=30)
    created.raise_for_status()
    share = hosts.volume_path(created.json()['fid'], VolumeInterface.FILE)
    task = box.root / f'{flow}.yaml'
    task.write_text(task_yaml(flow))
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
    done_on_old, lines_on_old = max(steps()), len(steps())
    if flow == 'default':
        emulator.control('POST', 'price', instance_type=GPU_TYPE,
                         region=REGION, price='$1.00')
    resumed_at = wait_for('a new training step',
                          lambda: len(steps()) > lines_on_old, 900)
    last_old_step_at = logged()[lines_on_old - 1][1]
    first_new_step_at = logged()[lines_on_old][1]
    wait_for('the job to finish', lambda: max(steps()) >= TOTAL_STEPS, 900)
    queue = box.sky(['jobs', 'logs', '--no-follow', '1'], timeout=300).stdout
    resumed = int(re.findall(r'resuming at step (\d+)', queue)[-1])
    wait_for('the job cluster to be torn down', lambda: all(
        b['status'] == 'Terminated'
        for b in emulator.control('GET', 'state')['bids']), 300)
    return Result(lost_steps=done_on_old - resumed,
                  downtime_s=resumed_at - gone_at,
                  training_gap_s=first_new_step_at - last_old_step_at,
                  notice_to_gone_s=gone_at - notice_at,
                  extra_instance_s=billed_instance_seconds(emulator) -
                  TOTAL_STEPS * STEP_SECONDS)


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir='/var/tmp') as work:
        results: Dict[str, Result] = {}
        for flow in ('sky-mithril', 'default'):
            results[flow] = run(flow, Path(work))
            print(f'{flow}: {results[flow]}', flush=True)
    print(f'Managed job preempted once on the emulator ({SPEED:.0f}x, notice '
          f'{NOTICE_S / SPEED:.0f} s of wall time), {TOTAL_STEPS} steps of '
          f'{STEP_SECONDS:.0f} s, checkpoints on a Mithril file share.')
    rows = [('lost work (steps done again)', 'lost_steps', 'd'),
            ('downtime: old node gone -> training again (s)', 'downtime_s',
             '.0f'),
            ('training gap: last old step -> first new step (s)',
             'training_gap_s', '.0f'),
            ('notice -> old node gone (s)', 'notice_to_gone_s', '.0f'),
            ('instance-seconds billed beyond the training', 'extra_instance_s',
             '.0f')]
    width = max(len(title) for title, _, _ in rows)
    print(f'{"":{width}}  {"sky-mithril":>12}  {"default flow":>12}')
    for title, field, fmt in rows:
        print(f'{title:{width}}  '
              f'{format(getattr(results["sky-mithril"], field), fmt):>12}  '
              f'{format(getattr(results["default"], field), fmt):>12}')
    print(f'({time.monotonic() - started:.0f} s run, every bid cancelled)')


if __name__ == '__main__':
    main()
