"""Region choice on live spot prices (sky-mithril) vs on the floor-price
catalog (SkyPilot's built-in Mithril cloud), on one local emulator.

The market: every instance type of the shipped catalog offered in 2-3
regions, all at one catalog price per type (as in SkyPilot's Mithril
catalog, whose floor prices say nothing about today's market), with a
different spot price per region set on the emulator. For each task (one per instance type),
the real SkyPilot optimizer picks a region via `sky launch --dryrun` in two
sandboxes: one with the sky-mithril plugin (live prices), one with the plugin
disabled and the floor-price catalog seeded where the built-in reads it.
Each choice is then bid for through sky-mithril's provisioner (1 instance,
limit LIMIT) and the emulator's second-price clearing (`price_paid`) is what
that instance-hour costs; every bid is terminated.

Then the cannot-win case: no free capacity for A100:1 in the cheapest region
nor in the region the built-in's tie-break picks. Each optimizer picks again,
and each provisioner (ours, and the built-in `sky.provision.mithril`) bids
in its pick: the time to a running bid and its price, or "still waiting"
after WAIT_CAP_S (the built-in would wait up to an hour).

Run: python benchmarks/pricing_bench.py  (about 2-3 min; only 127.0.0.1).
"""

import concurrent.futures
import csv
import logging
import os
import shutil
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Dict, List, NamedTuple, Optional, Tuple

import yaml

from sky.provision.mithril import instance as builtin_provisioner
from sky.skylet import constants

from sky_mithril.catalog import catalog_files
from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as provisioner
from sky_mithril.devtools.provisioning import provision_config
from sky_mithril.devtools.sandbox import SkySandbox

SPEED = 600.0  # 1 wall s = 600 emulated s: a clearing every 0.2 s.
API_KEY = 'bench-key'
LIMIT = '50.00'  # Above every spot price below: each bid pays the clearing.
PUBLIC_KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbenchmarkpricingkey'
              '000000000000000000 bench@localhost')
# Spot price per instance type and region. The floor-price catalog ties every
# type's regions, so SkyPilot's tie-break (region name) picks the first
# region listed here; the market mostly disagrees with it, but not always
# (a100-80gb.sxm.4x).
MARKET: Dict[str, Dict[str, str]] = {
    'h100-80gb.sxm.8x': {'us-central1-a': '$16.00', 'us-central2-a': '$12.00',
                         'us-central5-a': '$9.60'},
    'h100-80gb.sxm.1x': {'us-central1-a': '$2.10', 'us-central2-a': '$1.45'},
    'h200.8x': {'us-central2-b': '$24.00', 'us-central3-a': '$17.60'},
    'ccs-h200.sxm.1x': {'us-central1-a': '$3.20', 'us-central2-b': '$2.30'},
    'neb-b200.sxm.8x': {'us-central2-b': '$30.00', 'us-central5-a': '$21.60'},
    'a100-80gb.sxm.8x': {'us-central3-a': '$9.60', 'us-central5-a': '$6.40'},
    'a100-80gb.sxm.4x': {'us-central3-a': '$3.40', 'us-central5-a': '$4.60'},
    'a100-80gb.sxm.2x': {'us-central2-a': '$2.40', 'us-central3-a': '$1.90',
                         'us-central5-a': '$1.50'},
    'a100-80gb.sxm.1x': {'us-central2-a': '$1.20', 'us-central3-a': '$0.95',
                         'us-central5-a': '$0.70'},
}
CHOOSERS = ('sky-mithril', 'built-in')
# The cannot-win case: A100:1 where the market has no free capacity in the
# cheapest region (us-central5-a) nor in the one the floor-price catalog's
# tie-break picks (us-central2-a).
NO_CAPACITY = ('us-central5-a', 'us-central2-a')
CANNOT_WIN_TYPE = 'a100-80gb.sxm.1x'
WAIT_CAP_S = 60.0  # wall seconds we wait for a bid before calling it stuck


class Task(NamedTuple):
    """One task: the accelerators it asks for and the only type that has them."""

    instance_type: str
    accelerators: str


def write_market_catalog(path: Path) -> List[Task]:
    """The shipped rows, each type copied into its MARKET regions at its
    floor price; returns one task per type."""
    shipped = {r['InstanceType']: r
               for r in catalog_files.read_rows(catalog_files.catalog_path())}
    with path.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=catalog_files.COLUMNS)
        writer.writeheader()
        for instance_type, prices in MARKET.items():
            writer.writerows(dict(shipped[instance_type], Region=region)
                             for region in prices)
    return [Task(t, f'{shipped[t]["AcceleratorName"]}:'
                    f'{shipped[t]["AcceleratorCount"]}') for t in MARKET]




def make_sandboxes(root: Path, server: EmulatorServer,
                   catalog: Path) -> Dict[str, SkySandbox]:
    """sky-mithril's sandbox on the market catalog, and the built-in's:
    plugin disabled, the same catalog seeded as SkyPilot's Mithril catalog."""
    boxes = {label: SkySandbox(root / label, api_url=server.url,
                               api_key=API_KEY, project_id=PROJECT_FID,
                               extra_env={catalog_files.ENV_CATALOG: str(catalog)})
             for label in CHOOSERS}
    sky_dir = boxes['built-in'].home / '.sky'
    (sky_dir / 'plugins.yaml').unlink()
    # The sandbox published the shipped catalog there; the built-in reads
    # this market's instead.
    shutil.copyfile(catalog, catalog_files.skypilot_catalog_file(
        sky_dir, constants.CATALOG_SCHEMA_VERSION))
    return boxes


def dryrun_region(box: SkySandbox, task: Task) -> str:
    """The region of the optimizer's pick (the table row marked ✔)."""
    path = box.root / f'{task.instance_type}.yaml'
    path.write_text(yaml.safe_dump({
        'resources': {'infra': 'mithril', 'accelerators': task.accelerators},
        'run': 'true'}))
    result = box.sky(['launch', '--dryrun', '-y', str(path)], timeout=300)
    out = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f'sky launch --dryrun failed:\n{out}')
    chosen = next(line for line in out.splitlines() if '✔' in line)
    regions = [r for r in MARKET[task.instance_type] if r in chosen]
    if task.instance_type not in chosen or len(regions) != 1:
        raise RuntimeError(f'unexpected pick for {task}: {chosen!r}')
    return regions[0]


def choose_all(box: SkySandbox, tasks: List[Task]) -> List[str]:
    """Checks the cloud is enabled, then one dry-run per task."""
    check = box.sky(['check', 'mithril'], timeout=300)
    if check.returncode != 0:
        raise RuntimeError(f'sky check failed:\n{check.stdout}{check.stderr}')
    return [dryrun_region(box, task) for task in tasks]


def pay_for_an_hour(server: EmulatorServer, key_fid: str, task: Task,
                    region: str, name: str) -> Decimal:
    """Bids for 1 instance at `region` with our provisioner, reads the
    clearing price it was allocated at, terminates the bid."""
    provider_config = {'profile': '', 'project_id': PROJECT_FID, 'api_url': '',
                       'region': region, 'limit_price_per_hour': LIMIT,
                       'provision_timeout': ''}
    config = provision_config(provider_config, key_fid, task.instance_type)
    try:
        provisioner.run_instances(region, name, name, config)
        [bid] = [b for b in server.control('GET', 'state')['bids']
                 if b['name'] == name]
    finally:
        provisioner.terminate_instances(name, provider_config)
    return Decimal(bid['price_paid'].lstrip('$'))


def time_to_allocation(module: ModuleType, server: EmulatorServer,
                       key_fid: str, task: Task, region: str,
                       name: str) -> Tuple[Optional[float], Optional[Decimal]]:
    """Runs `module`'s run_instances for 1 instance in `region` (in a thread,
    at most WAIT_CAP_S); returns the wall seconds to an Allocated bid and its
    price, or (None, None) when it was still waiting. Cancels the bid."""
    provider_config = {'profile': '', 'project_id': PROJECT_FID, 'api_url': '',
                       'region': region, 'limit_price_per_hour': LIMIT,
                       'provision_timeout': ''}
    config = provision_config(provider_config, key_fid, task.instance_type)
    started = time.monotonic()
    worker = threading.Thread(
        target=lambda: module.run_instances(region, name, name, config),
        daemon=True)
    worker.start()
    worker.join(WAIT_CAP_S)
    bid = next(b for b in server.control('GET', 'state')['bids']
               if b['name'] == name)
    waited = time.monotonic() - started
    provisioner.terminate_instances(name, provider_config)
    worker.join(30)
    if bid['status'] != 'Allocated':
        return None, None
    return waited, Decimal(bid['price_paid'].lstrip('$'))


def cannot_win_case(server: EmulatorServer, boxes: Dict[str, SkySandbox],
                    tasks: List[Task], key_fid: str) -> List[str]:
    """The cheapest region has no free capacity: each optimizer picks a
    region (dry run), then each provisioner bids there; report lines."""
    task = next(t for t in tasks if t.instance_type == CANNOT_WIN_TYPE)
    for region in NO_CAPACITY:
        server.control('POST', 'capacity', instance_type=task.instance_type,
                       region=region, capacity=0)
    for cached in (boxes['sky-mithril'].home / '.sky' / 'mithril').glob('*'):
        cached.unlink()
    try:
        picks = {label: dryrun_region(box, task) for label, box in boxes.items()}
    finally:
        for box in boxes.values():
            box.stop_api_server()
    modules = {'sky-mithril': provisioner, 'built-in': builtin_provisioner}
    lines = [f'Cannot-win case: {task.accelerators} ({task.instance_type}), no '
             f'free capacity in {" and ".join(NO_CAPACITY)} (the cheapest '
             'region and the floor catalog\'s pick):']
    for label in CHOOSERS:
        waited, price = time_to_allocation(modules[label], server, key_fid,
                                           task, picks[label],
                                           f'cannot-win-{label}')
        outcome = (f'running bid after {waited:.1f} s at ${price:.2f}/h'
                   if waited is not None else
                   f'no running bid after {WAIT_CAP_S:.0f} s (still waiting)')
        lines.append(f'  {label}: picks {picks[label]}, {outcome}')
    return lines


def main() -> None:
    logging.getLogger('sky').setLevel(logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = root / 'vms.csv'
        tasks = write_market_catalog(catalog)
        with EmulatorServer(speed=SPEED, api_key=API_KEY,
                            catalog_path=catalog) as server:
            for instance_type, prices in MARKET.items():
                for region, price in prices.items():
                    server.control('POST', 'price', instance_type=instance_type,
                            region=region, price=price)
            boxes = make_sandboxes(root, server, catalog)
            try:
                with concurrent.futures.ThreadPoolExecutor(len(boxes)) as pool:
                    futures = {label: pool.submit(choose_all, box, tasks)
                               for label, box in boxes.items()}
                    choices = {label: f.result() for label, f in futures.items()}
            finally:
                for box in boxes.values():
                    box.stop_api_server()
            chose_s = time.monotonic() - started

            # Bids only after every choice: an allocation pins the auction's
            # last_instance_price, which is what the live prices read.
            os.environ.update({'XDG_CONFIG_HOME': str(root / 'config'),
                               'MITHRIL_API_KEY': API_KEY,
                               'MITHRIL_API_URL': server.url,
                               'MITHRIL_PROJECT': PROJECT_FID})
            os.environ.pop('MITHRIL_PROFILE', None)
            key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
            paid = {label: [pay_for_an_hour(server, key_fid, task, region,
                                            f'price-{i}-{label}')
                            for i, (task, region) in enumerate(
                                zip(tasks, choices[label]))]
                    for label in CHOOSERS}
            cannot_win = cannot_win_case(server, boxes, tasks, key_fid)
            live = [b['name'] for b in server.control('GET', 'state')['bids']
                    if b['status'] != 'Terminated']
            assert not live, f'left behind: {live}'

    print(f'{len(tasks)} tasks, one per instance type, each offered in 2-3 '
          'regions at one catalog price; spot prices differ per region. '
          'Region = the optimizer\'s pick (sky launch --dryrun); $/h = '
          'clearing price paid for 1 instance through the emulator.')
    header = ('task', 'instance type', 'sky-mithril region', '$/h',
              'built-in region', '$/h')
    rows = [(task.accelerators, task.instance_type,
             choices['sky-mithril'][i], f'{paid["sky-mithril"][i]:.2f}',
             choices['built-in'][i], f'{paid["built-in"][i]:.2f}')
            for i, task in enumerate(tasks)]
    totals = {label: sum(paid[label]) for label in CHOOSERS}
    rows.append(('total', '', '', f'{totals["sky-mithril"]:.2f}', '',
                 f'{totals["built-in"]:.2f}'))
    widths = [max(len(row[c]) for row in [header, *rows])
              for c in range(len(header))]
    for row in [header, *rows]:
        print('  '.join(cell.ljust(w) if c in (0, 1, 2, 4) else cell.rjust(w)
                        for c, (cell, w) in enumerate(zip(row, widths))))
    saving = 100 * (1 - totals['sky-mithril'] / totals['built-in'])
    print(f'Summary: sky-mithril ${totals["sky-mithril"]:.2f} vs built-in '
          f'${totals["built-in"]:.2f} for {len(tasks)} instance-hours: '
          f'{saving:.0f}% cheaper ({chose_s:.0f} s choosing, '
          f'{time.monotonic() - started:.0f} s in all, all bids terminated).')
    print('\n'.join(cannot_win))


if __name__ == '__main__':
    main()
