"""Live spot prices in the optimizer, through the real `sky` CLI (the e2e
tier's sandbox, pointed at a two-region market): cheapest region now,
ranked by whether a bid can win now, fail-open to the shipped prices.
(The cache itself, in-process against the emulator, is in
tests/integration/catalog/test_live_prices.py.)"""

from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.live_market import REGION_A, REGION_B, TYPE
from tests.helpers.live_market import two_region_catalog, two_region_emulator  # noqa: F401 (fixtures)
from tests.helpers.sandbox import forget_live_prices, profile_changed, set_profile

pytestmark = pytest.mark.e2e

# SkyPilot's cheapest CPU-only default with 4+ vCPUs on the big clouds is
# about $0.19/h on demand (AWS m6i.xlarge, GCP n2-standard-4): a Mithril GPU
# machine priced offline must never undercut it.
CHEAPEST_CPU_ONLY_PER_HOUR = Decimal('0.19')


@pytest.fixture(autouse=True)
def at_two_region_emulator(sky_sandbox: SkySandbox,
                           two_region_emulator: EmulatorServer) -> Iterator[None]:
    """The tier's sandbox as a fresh one at `two_region_emulator` would be:
    no cached market. The profile is put back after the test, whatever the
    test pointed it at, so the order of the tests does not matter."""
    with profile_changed(sky_sandbox, api_url=two_region_emulator.url):
        yield


def test_dryrun_picks_the_region_that_is_cheaper_now_and_falls_back_offline(
        sky_sandbox, tmp_path):
    task = tmp_path / 'task.yaml'
    task.write_text(yaml.safe_dump({
        'resources': {'infra': 'mithril', 'accelerators': 'H100:8'},
        'config': {'mithril': {'limit_price': 8}}, 'run': 'true'}))
    assert sky_sandbox.sky(['check', 'mithril']).returncode == 0
    live = sky_sandbox.sky(['launch', '--dryrun', '-y', str(task)])
    out = live.stdout + live.stderr
    assert live.returncode == 0, out
    chosen = next(line for line in out.splitlines() if '✔' in line)
    assert REGION_B in chosen and '6.00' in chosen
    assert f'Spot price in {REGION_B} now: $6.00/h' in out
    gpus = sky_sandbox.sky(['show-gpus', 'H100:8', '--infra', 'mithril'])
    [cheapest] = [line for line in gpus.stdout.splitlines() if TYPE in line]
    assert REGION_B in cheapest and '$ 6.000' in cheapest, gpus.stdout
    every_region = sky_sandbox.sky(['show-gpus', 'H100:8', '--infra', 'mithril',
                                    '--all-regions']).stdout
    [in_a] = [line for line in every_region.splitlines() if REGION_A in line]
    assert '$ 10.000' in in_a, every_region

    set_profile(sky_sandbox, api_url='http://127.0.0.1:9')
    offline = sky_sandbox.sky(['launch', '--dryrun', '-y', str(task)])
    out = offline.stdout + offline.stderr
    assert offline.returncode == 0, out
    chosen = next(line for line in out.splitlines() if '✔' in line)
    assert '16.0' in chosen and 'Spot price' not in out


def set_capacity(server: EmulatorServer, region: str, capacity: int) -> None:
    requests.post(f'{server.url}/_emulator/capacity', timeout=10, json={
        'instance_type': TYPE, 'region': region,
        'capacity': capacity}).raise_for_status()


def chosen_line(out: str) -> str:
    return next(line for line in out.splitlines() if '✔' in line)


def test_dryrun_ranks_regions_by_whether_a_bid_can_win_now(
        two_region_emulator, sky_sandbox, tmp_path):
    """B is cheaper ($6 vs $10). Without free capacity in B, A (which can
    allocate now) is picked, unless the task waits forever. With the limit
    below both markets, the launch is refused before any bid, naming the
    price that would win."""

    def task(name: str, mithril: dict) -> Path:
        path = tmp_path / f'{name}.yaml'
        path.write_text(yaml.safe_dump({
            'resources': {'infra': 'mithril', 'accelerators': 'H100:8'},
            'config': {'mithril': mithril}, 'run': 'true'}))
        return path

    bids_before = len(two_region_emulator.control('GET', 'state')['bids'])
    set_capacity(two_region_emulator, REGION_B, 0)
    try:
        ranked = sky_sandbox.sky(['launch', '--dryrun', '-y',
                                  str(task('ranked', {'limit_price': 12}))])
        out = ranked.stdout + ranked.stderr
        assert ranked.returncode == 0, out
        assert REGION_A in chosen_line(out) and '10.0' in chosen_line(out), out
        assert (f'{TYPE} in {REGION_B} cannot be allocated now (0 free, 1 '
                'needed): ranked after the regions that can.') in out

        patient = sky_sandbox.sky(['launch', '--dryrun', '-y', str(task('patient', {
            'limit_price': 12, 'provision_timeout': 'forever'}))])
        out = patient.stdout + patient.stderr
        assert patient.returncode == 0, out
        assert REGION_B in chosen_line(out) and '6.0' in chosen_line(out), out

        set_capacity(two_region_emulator, REGION_B, 8)
        forget_live_prices(sky_sandbox)
        below = sky_sandbox.sky(['launch', '-y', '-c', 'below-market',
                                 str(task('below', {'limit_price': 5,
                                                    'provision_timeout': 60}))],
                                timeout=300)
        out = below.stdout + below.stderr
        assert below.returncode != 0, out
        assert ('your limit $5.00/h per instance (limit_price in '
                'config.mithril) is below the spot price in every region') in out
        assert ('raise config.mithril.limit_price to at least $6.00 (spot in '
                f'{REGION_B}), or set provision_timeout: forever') in out
        assert 'Traceback' not in out
        assert len(two_region_emulator.control('GET', 'state')['bids']) == bids_before
    finally:
        set_capacity(two_region_emulator, REGION_B, 8)


def test_a_region_only_in_live_data_is_launchable_and_offline_costs_are_estimates(
        sky_sandbox, tmp_path):
    """The emulator's default market has H100:8 in us-central1-a, which the
    shipped catalog lacks. With the API down, a CPU-only task gets the
    shipped catalog's estimate, not an auction floor."""
    shipped = catalog_files.read_rows(catalog_files.catalog_path())
    assert 'us-central1-a' not in {r['Region'] for r in shipped}
    # The shared sandbox's catalog is the shipped one: it lacks us-central1-a
    # too and has the shipped estimates.
    assert catalog_files.ENV_CATALOG not in sky_sandbox.env
    with EmulatorServer() as server:
        set_profile(sky_sandbox, api_url=server.url)
        path = tmp_path / 'new-region.yaml'
        path.write_text(yaml.safe_dump({
            'resources': {'infra': 'mithril/us-central1-a',
                          'accelerators': 'H100:8'},
            'config': {'mithril': {'limit_price': 24.5}}, 'run': 'true'}))
        result = sky_sandbox.sky(['launch', '--dryrun', '-y', str(path)])
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert 'us-central1-a' in chosen_line(out) and '18.4' in chosen_line(out)
        assert 'Spot price in us-central1-a now: $18.40/h (8 free)' in out

        set_profile(sky_sandbox, api_url='http://127.0.0.1:9')
        cpu = tmp_path / 'cpu.yaml'
        cpu.write_text(yaml.safe_dump({'resources': {'cpus': '4+'},
                                       'run': 'true'}))
        offline = sky_sandbox.sky(['launch', '--dryrun', '-y', str(cpu)])
        out = offline.stdout + offline.stderr
        assert offline.returncode == 0, out
        estimate = next(r for r in shipped
                        if r['InstanceType'] == 'a100-80gb.sxm.1x')['Price']
        assert Decimal(estimate) >= CHEAPEST_CPU_ONLY_PER_HOUR
        line = chosen_line(out)
        assert 'a100-80gb.sxm.1x' in line and f'{float(estimate)}' in line, out
