"""sky-mithril's provisioner vs SkyPilot's built-in one, on one local emulator.

Measures, for each: (a) API requests for a 1-node launch (run_instances until
it returns a reachable node), (b) API requests for one query_instances with 20
(and with 1,000) other instances in the project, (c) wall time from the bid's
allocation to run_instances returning, and the whole launch. Requests are
counted by the emulator (`/_emulator/stats`); allocation time is the bid's
"Allocated" event, converted from emulated to wall time. Ratios: ours /
built-in, and allocation -> return / the emulator's boot (the physical limit:
no provisioner can return before the node has an address).

Our provider config is what `Mithril.make_deploy_resources_variables`
renders: it carries the instance type's fid from the live catalog, which the
launch refreshed while planning. Our first launch has no learned boot time yet
(`provision/boot_times.py`); the later ones use what it learned, as repeated
launches and managed-job recoveries of one type do; both are shown.

Run: python benchmarks/provision_bench.py  (about a minute; only 127.0.0.1).
"""

import datetime
import functools
import logging
import os
import statistics
import tempfile
import time
import uuid
from types import ModuleType
from typing import (Any, Callable, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

import requests

from sky.provision import common
from sky.provision.mithril import instance as builtin
from sky.provision.mithril import utils as builtin_utils

from sky_mithril.catalog import live_prices
from sky_mithril.devtools.provisioning import provision_config
from sky_mithril.emulator.market import (BOOT_SEQUENCE, PROJECT_FID,
                                         InstanceStatus)
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as ours

SPEED = 60.0  # 1 wall s = 60 emulated s: a clearing every 2 s, boot in 1 s.
REPEATS = 6
# Launches after the first LEARNED ones have learned the endpoint's timing.
LEARNED = 3
REGION = 'us-central3-a'
INSTANCE_TYPE = 'a100-80gb.sxm.1x'
API_KEY = 'bench-key'
PUBLIC_KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbenchmarkprovisionerkey'
              '0000000000000000 bench@localhost')
# Both provisioners read what they need from the same provider config.
PROVIDER_CONFIG = {'profile': '', 'project_id': PROJECT_FID, 'api_url': '',
                   'region': REGION, 'limit_price_per_hour': '32.00',
                   'provision_timeout': ''}
PROVISIONERS: Dict[str, ModuleType] = {'sky-mithril': ours, 'built-in': builtin}


class Launch(NamedTuple):
    """One measured launch."""

    requests: int
    alloc_to_return_s: float
    total_s: float


class Bench:
    """An emulator plus the control calls the measurements need."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.http = requests.Session()

    def control(self, method: str, path: str, **body: Any) -> Any:
        return self.server.control(method, path, **body)

    def counted(self, action: Callable[[], Any]) -> Tuple[int, Any]:
        """The API requests `action` makes, and what it returns."""
        self.control('DELETE', 'stats')
        result = action()
        return self.control('GET', 'stats')['total'], result

    def bid(self, name: str) -> Dict[str, Any]:
        [bid] = [b for b in self.control('GET', 'state')['bids']
                 if b['name'] == name]
        return bid

    def allocated_at(self, bid_fid: str) -> datetime.datetime:
        """Emulated time of the bid's first allocation (not a control call:
        read after the counted part)."""
        response = self.http.get(
            f'{self.server.url}/v2/spot/bids/{bid_fid}/history',
            headers={'Authorization': f'Bearer {API_KEY}'}, timeout=30)
        response.raise_for_status()
        return min(datetime.datetime.fromisoformat(e['timestamp'])
                   for e in response.json()['events']
                   if e['event_type'] == 'Allocated')

    def other_instances(self, name: str) -> int:
        return sum(len(b['instances'])
                   for b in self.control('GET', 'state')['bids']
                   if b['name'] != name)

    def fill_to(self, name: str, others: int) -> None:
        """Adds filler so the project holds `others` instances besides `name`'s."""
        missing = others - self.other_instances(name)
        if missing > 0:
            self.control('POST', 'filler', count=missing,
                         instance_type=INSTANCE_TYPE, region=REGION)
        assert self.other_instances(name) == others


def fresh_name(label: str) -> str:
    """A cluster name no other cluster's name starts with (the built-in
    matches instances by name prefix)."""
    return f'bench-{label}-{uuid.uuid4().hex[:8]}'


def terminate(bench: Bench, module: ModuleType, name: str) -> None:
    """Terminates the cluster with its own provisioner and checks it is gone."""
    module.terminate_instances(name, PROVIDER_CONFIG)
    assert bench.bid(name)['status'] == 'Terminated', name


def measure_launch(bench: Bench, module: ModuleType, label: str,
                   config: common.ProvisionConfig) -> Launch:
    name = fresh_name(label)
    clock = bench.server.market.clock
    emulated_start, wall_start = clock.now(), time.monotonic()
    try:
        launched, _ = bench.counted(
            lambda: module.run_instances(REGION, name, name, config))
        wall_end = time.monotonic()
        allocated = bench.allocated_at(bench.bid(name)['fid'])
    finally:
        terminate(bench, module, name)
    wall_allocated = wall_start + (
        allocated - emulated_start).total_seconds() / SPEED
    return Launch(launched, wall_end - wall_allocated, wall_end - wall_start)


def measure_queries(bench: Bench, config: common.ProvisionConfig,
                    project_sizes: Sequence[int]) -> Dict[int, Dict[str, int]]:
    """Requests for one query_instances of the same 1-node cluster, per
    number of other instances in the project, per provisioner."""
    name = fresh_name('query')
    ours.run_instances(REGION, name, name, config)
    counts: Dict[int, Dict[str, int]] = {}
    try:
        for others in project_sizes:
            bench.fill_to(name, others)
            counts[others] = {}
            for label, module in PROVISIONERS.items():
                made, statuses = bench.counted(
                    functools.partial(module.query_instances, name, name,
                                      PROVIDER_CONFIG))
                assert len(statuses) == 1, (label, statuses)
                counts[others][label] = made
    finally:
        terminate(bench, ours, name)
    return counts


def spread(values: Sequence[float], fmt: str) -> str:
    """Median, with the range when the runs differ."""
    median = format(statistics.median_low(values), fmt)
    low, high = format(min(values), fmt), format(max(values), fmt)
    return median if low == high else f'{median} ({low}-{high})'


def _ratio(ours: str, builtin_cell: str) -> str:
    """ours / built-in of two cells' medians."""
    mine, theirs = float(ours.split()[0]), float(builtin_cell.split()[0])
    return f'{mine / theirs:.2f}' if theirs else '-'


def main() -> None:
    logging.getLogger('sky').setLevel(logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as config_home, \
            EmulatorServer(speed=SPEED, api_key=API_KEY) as server:
        os.environ.update({'XDG_CONFIG_HOME': config_home,
                           'HOME': config_home,
                           'MITHRIL_API_KEY': API_KEY,
                           'MITHRIL_API_URL': server.url,
                           'MITHRIL_PROJECT': PROJECT_FID})
        os.environ.pop('MITHRIL_PROFILE', None)
        bench = Bench(server)
        key_fid = builtin_utils.get_or_add_ssh_key(PUBLIC_KEY)
        live_prices.refresh()
        planned = dict(PROVIDER_CONFIG, instance_type_fid=live_prices.snapshot(
        ).fid(INSTANCE_TYPE, REGION) or '')
        configs = {'sky-mithril': provision_config(planned, key_fid,
                                                   INSTANCE_TYPE),
                   'built-in': provision_config(PROVIDER_CONFIG, key_fid,
                                                INSTANCE_TYPE)}

        launches: Dict[str, List[Launch]] = {label: [] for label in PROVISIONERS}
        for _ in range(REPEATS):
            for label, module in PROVISIONERS.items():
                launches[label].append(
                    measure_launch(bench, module, label, configs[label]))
        queries = measure_queries(bench, configs['sky-mithril'], (20, 1000))

        live = [b['name'] for b in bench.control('GET', 'state')['bids']
                if not b['filler'] and b['status'] != 'Terminated']
        assert not live, f'left behind: {live}'

    market = server.market
    clearing_s = market.clearing_interval_s / SPEED
    # The address appears when the instance reaches STATUS_STARTING.
    boot_s = sum(market.boot_durations_s[s] for s in BOOT_SEQUENCE[
        :BOOT_SEQUENCE.index(InstanceStatus.STARTING)]) / SPEED
    def first(field: str, fmt: str) -> Callable[[str], str]:
        return lambda label: format(getattr(launches[label][0], field), fmt)

    def learned(field: str, fmt: str, scale: Optional[float] = None
                ) -> Callable[[str], str]:
        return lambda label: spread([
            getattr(l, field) if scale is None else getattr(l, field) / scale
            for l in launches[label][REPEATS - LEARNED:]], fmt)

    rows = [('(a) API requests, 1-node launch, first', first('requests', 'd')),
            ('(a) API requests, 1-node launch, learned',
             learned('requests', 'd'))]
    rows += [(f'(b) API requests, one query, {n} other instances',
              lambda label, n=n: str(queries[n][label])) for n in queries]
    rows += [('(c) allocation -> return (s), first',
              first('alloc_to_return_s', '.2f')),
             ('(c) allocation -> return (s), learned',
              learned('alloc_to_return_s', '.2f')),
             ('(c) allocation -> return / boot, learned',
              learned('alloc_to_return_s', '.2f', boot_s)),
             ('(c) total launch wall time (s), learned',
              learned('total_s', '.2f'))]

    print(f'Emulator speed {SPEED:.0f}x: a clearing every {clearing_s:.1f} s '
          f'wall, allocation -> SSH address {boot_s:.2f} s wall. '
          f'1x {INSTANCE_TYPE} in {REGION}; {REPEATS} launches each: "first" '
          f'is the first, "learned" the median (min-max) of the last '
          f'{LEARNED}.')
    labels = list(PROVISIONERS)
    width = max(len(title) for title, _ in rows)
    print(f'{"":{width}}  ' + '  '.join(f'{l:>16}' for l in labels) +
          f'  {"ours/built-in":>14}')
    for title, cell in rows:
        cells = [cell(l) for l in labels]
        print(f'{title:{width}}  ' + '  '.join(f'{c:>16}' for c in cells) +
              f'  {_ratio(*cells):>14}')

    def median(label: str, field: str) -> float:
        return statistics.median_low(getattr(l, field) for l in
                                     launches[label][REPEATS - LEARNED:])

    big = max(queries)
    print(f'Summary: sky-mithril launches with '
          f'{median("sky-mithril", "requests"):.0f} requests vs '
          f'{median("built-in", "requests"):.0f}, queries with '
          f'{queries[big]["sky-mithril"]} vs {queries[big]["built-in"]} '
          f'requests at {big} other instances, and returns '
          f'{median("sky-mithril", "alloc_to_return_s"):.2f} s vs '
          f'{median("built-in", "alloc_to_return_s"):.2f} s after allocation, '
          f'{median("sky-mithril", "alloc_to_return_s") / boot_s:.2f}x vs '
          f'{median("built-in", "alloc_to_return_s") / boot_s:.2f}x the '
          f'{boot_s:.2f} s boot ({time.monotonic() - started:.0f} s run, all '
          'bids terminated).')


if __name__ == '__main__':
    main()
