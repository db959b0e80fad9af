"""Live spot prices in the optimizer: cheapest region now, fail-open to the
shipped prices, stale cache served while it refreshes."""

import csv
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import live_prices
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

TYPE = 'h100-80gb.sxm.8x'
# SkyPilot's cheapest CPU-only default with 4+ vCPUs on the big clouds is
# about $0.19/h on demand (AWS m6i.xlarge, GCP n2-standard-4): a Mithril GPU
# machine priced offline must never undercut it.
CHEAPEST_CPU_ONLY_PER_HOUR = Decimal('0.19')
REGION_A, REGION_B = 'us-central2-a', 'us-central3-a'


@pytest.fixture(scope='module')
def two_region_catalog(tmp_path_factory) -> Path:
    """The shipped catalog plus TYPE offered in a second region."""
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    extra = dict(next(r for r in rows if r['InstanceType'] == TYPE), Region=REGION_B)
    path = tmp_path_factory.mktemp('catalog') / 'vms.csv'
    with path.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=catalog_files.COLUMNS)
        writer.writeheader()
        writer.writerows(rows + [extra])
    return path


def set_price(server: EmulatorServer, region: str, price: str) -> None:
    requests.post(f'{server.url}/_emulator/price', timeout=10, json={
        'instance_type': TYPE, 'region': region, 'price': price}).raise_for_status()


@pytest.fixture(scope='module')
def market(two_region_catalog) -> Iterator[EmulatorServer]:
    with EmulatorServer(catalog_path=two_region_catalog) as server:
        set_price(server, REGION_A, '$10.00')
        set_price(server, REGION_B, '$6.00')
        yield server


def forget_live_prices(box: SkySandbox) -> None:
    """Drops the sandbox's cached market: the next command fetches it anew."""
    for cached in (box.home / '.sky' / 'mithril').glob('*'):
        cached.unlink()


def point_profile_at(box: SkySandbox, api_url: str) -> None:
    """Rewrites the sandbox's Mithril profile (`ml setup`'s config) to `api_url`."""
    profile = box.home / '.config' / 'mithril' / 'config.yaml'
    config = yaml.safe_load(profile.read_text())
    config['profiles']['default']['api_url'] = api_url
    profile.write_text(yaml.safe_dump(config))


@pytest.fixture(scope='module')
def shared_box(market, two_region_catalog,
               tmp_path_factory) -> Iterator[SkySandbox]:
    """One SkyPilot home and API server for the module's dry runs (starting
    a server and its workers costs 30-60 s on CI's 2 cores): its Mithril
    profile points at `market`, its catalog is the two-region one. Stopped
    after the module."""
    box = SkySandbox(tmp_path_factory.mktemp('sky'), api_url=market.url,
                     api_key='live-key',
                     extra_env={catalog_files.ENV_CATALOG: str(two_region_catalog)})
    try:
        yield box
    finally:
        box.stop_api_server()


@pytest.fixture
def box(shared_box) -> Iterator[SkySandbox]:
    """The shared sandbox as a fresh one would be: profile at `market`, no
    cached market. The profile is put back after the test, whatever the
    test pointed it at, so the order of the tests does not matter."""
    profile = shared_box.home / '.config' / 'mithril' / 'config.yaml'
    original = profile.read_text()
    forget_live_prices(shared_box)
    try:
        yield shared_box
    finally:
        profile.write_text(original)
        forget_live_prices(shared_box)


@pytest.mark.e2e
def test_dryrun_picks_the_region_that_is_cheaper_now_and_falls_back_offline(
        box, tmp_path):
    task = tmp_path / 'task.yaml'
    task.write_text(yaml.safe_dump({
        'resources': {'infra': 'mithril', 'accelerators': 'H100:8'},
        'config': {'mithril': {'limit_price': 8}}, 'run': 'true'}))
    assert box.sky(['check', 'mithril']).returncode == 0
    live = box.sky(['launch', '--dryrun', '-y', str(task)])
    out = live.stdout + live.stderr
    assert live.returncode == 0, out
    chosen = next(line for line in out.splitlines() if '✔' in line)
    assert REGION_B in chosen and '6.00' in chosen
    assert f'Spot price in {REGION_B} now: $6.00/h' in out
    gpus = box.sky(['show-gpus', 'H100:8', '--infra', 'mithril'])
    [cheapest] = [line for line in gpus.stdout.splitlines() if TYPE in line]
    assert REGION_B in cheapest and '$ 6.000' in cheapest, gpus.stdout
    every_region = box.sky(['show-gpus', 'H100:8', '--infra', 'mithril',
                            '--all-regions']).stdout
    [in_a] = [line for line in every_region.splitlines() if REGION_A in line]
    assert '$ 10.000' in in_a, every_region

    point_profile_at(box, 'http://127.0.0.1:9')
    forget_live_prices(box)
    offline = box.sky(['launch', '--dryrun', '-y', str(task)])
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


@pytest.mark.e2e
def test_dryrun_ranks_regions_by_whether_a_bid_can_win_now(
        market, box, tmp_path):
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

    bids_before = len(market.control('GET', 'state')['bids'])
    set_capacity(market, REGION_B, 0)
    try:
        ranked = box.sky(['launch', '--dryrun', '-y',
                          str(task('ranked', {'limit_price': 12}))])
        out = ranked.stdout + ranked.stderr
        assert ranked.returncode == 0, out
        assert REGION_A in chosen_line(out) and '10.0' in chosen_line(out), out
        assert (f'{TYPE} in {REGION_B} cannot be allocated now (0 free, 1 '
                'needed): ranked after the regions that can.') in out

        patient = box.sky(['launch', '--dryrun', '-y', str(task('patient', {
            'limit_price': 12, 'provision_timeout': 'forever'}))])
        out = patient.stdout + patient.stderr
        assert patient.returncode == 0, out
        assert REGION_B in chosen_line(out) and '6.0' in chosen_line(out), out

        set_capacity(market, REGION_B, 8)
        forget_live_prices(box)
        below = box.sky(['launch', '-y', '-c', 'below-market',
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
        assert len(market.control('GET', 'state')['bids']) == bids_before
    finally:
        set_capacity(market, REGION_B, 8)


@pytest.mark.e2e
def test_a_region_only_in_live_data_is_launchable_and_offline_costs_are_estimates(
        box, two_region_catalog, tmp_path):
    """The emulator's default market has H100:8 in us-central1-a, which the
    shipped catalog lacks. With the API down, a CPU-only task gets the
    shipped catalog's estimate, not an auction floor."""
    shipped = catalog_files.read_rows(catalog_files.catalog_path())
    assert 'us-central1-a' not in {r['Region'] for r in shipped}
    # The shared sandbox's catalog is the shipped one plus only TYPE in
    # REGION_B: it lacks us-central1-a too and has the shipped estimates.
    assert box.env[catalog_files.ENV_CATALOG] == str(two_region_catalog)
    in_use = catalog_files.read_rows(two_region_catalog)
    assert in_use[:len(shipped)] == shipped
    assert [(r['InstanceType'], r['Region']) for r in in_use[len(shipped):]] == [
        (TYPE, REGION_B)]
    with EmulatorServer() as server:
        point_profile_at(box, server.url)
        path = tmp_path / 'new-region.yaml'
        path.write_text(yaml.safe_dump({
            'resources': {'infra': 'mithril/us-central1-a',
                          'accelerators': 'H100:8'},
            'config': {'mithril': {'limit_price': 24.5}}, 'run': 'true'}))
        result = box.sky(['launch', '--dryrun', '-y', str(path)])
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert 'us-central1-a' in chosen_line(out) and '18.4' in chosen_line(out)
        assert 'Spot price in us-central1-a now: $18.40/h (8 free)' in out

        point_profile_at(box, 'http://127.0.0.1:9')
        forget_live_prices(box)
        cpu = tmp_path / 'cpu.yaml'
        cpu.write_text(yaml.safe_dump({'resources': {'cpus': '4+'},
                                       'run': 'true'}))
        offline = box.sky(['launch', '--dryrun', '-y', str(cpu)])
        out = offline.stdout + offline.stderr
        assert offline.returncode == 0, out
        estimate = next(r for r in shipped
                        if r['InstanceType'] == 'a100-80gb.sxm.1x')['Price']
        assert Decimal(estimate) >= CHEAPEST_CPU_ONLY_PER_HOUR
        line = chosen_line(out)
        assert 'a100-80gb.sxm.1x' in line and f'{float(estimate)}' in line, out


def test_stale_prices_are_served_while_a_refresh_runs(market, two_region_catalog,
                                                      monkeypatch):
    monkeypatch.setenv(catalog_files.ENV_CATALOG, str(two_region_catalog))
    monkeypatch.setenv('MITHRIL_API_URL', market.url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'live-key')
    live_prices.refresh()
    freshness = live_prices.OverlayFreshness()
    assert freshness() is True
    assert live_prices.quote(TYPE, REGION_B)[0] == 6

    set_price(market, REGION_B, '$7.50')
    requests.put(f'{market.url}/_emulator/faults', timeout=10, json={'rules': [{
        'method': 'GET', 'path': '/v2/spot/availability', 'latency': 1.0,
        'latency_s': 1.0}]}).raise_for_status()
    state = live_prices._state_path()
    aged = json.loads(state.read_text())
    aged['fetched_at'] -= live_prices.CACHE_TTL_SECONDS + 1
    state.write_text(json.dumps(aged))
    started = time.monotonic()
    assert freshness() is False
    assert time.monotonic() - started < 0.5
    assert live_prices.quote(TYPE, REGION_B)[0] == 6

    deadline = time.monotonic() + 10
    while live_prices.quote(TYPE, REGION_B)[0] != 7.5:
        assert time.monotonic() < deadline, 'background refresh never landed'
        time.sleep(0.1)
    assert freshness() is True
    rows = {(r['InstanceType'], r['Region']): r
            for r in catalog_files.read_rows(live_prices.overlay_path())}
    assert rows[(TYPE, REGION_B)]['Price'] == '7.50'


def test_api_down_keeps_shipped_prices_and_never_zero(monkeypatch):
    monkeypatch.setenv('MITHRIL_API_URL', 'http://127.0.0.1:9')
    monkeypatch.setenv('MITHRIL_API_KEY', 'live-key')
    live_prices.refresh()
    shipped = catalog_files.read_rows(catalog_files.catalog_path())
    overlay = catalog_files.read_rows(live_prices.overlay_path())
    assert [r['Price'] for r in overlay] == [r['Price'] for r in shipped]
    assert all(float(r['Price']) > 0 for r in overlay)


def test_quotes_follow_the_market_after_an_allocation_paid_an_older_price(
        emulator_server, monkeypatch):
    from sky_mithril import credentials
    from sky_mithril.api import MithrilClient, models
    a100 = ('a100-80gb.sxm.1x', 'us-central3-a')
    requests.post(f'{emulator_server.url}/_emulator/price', timeout=10, json={
        'instance_type': a100[0], 'region': a100[1], 'price': '$2.00'}).raise_for_status()
    with MithrilClient('live-key', emulator_server.url) as client:
        fid = next(t.fid for t in client.list_instance_types() if t.name == a100[0])
        bid = client.create_bid(models.CreateBidRequest(
            project='proj_emulator', region=a100[1], instance_type=fid,
            limit_price=Decimal('3.00'), instance_quantity=1, name='paid-2',
            launch_specification=models.LaunchSpecification()))
        requests.post(f'{emulator_server.url}/_emulator/advance', timeout=10,
                      json={'seconds': 130}).raise_for_status()
        assert client.get_bid(bid.fid).status == 'Allocated'
        client.cancel_bid(bid.fid)
    requests.post(f'{emulator_server.url}/_emulator/price', timeout=10, json={
        'instance_type': a100[0], 'region': a100[1], 'price': '$5.00'}).raise_for_status()
    monkeypatch.setenv('MITHRIL_API_URL', emulator_server.url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'live-key')
    quotes = live_prices.fetch_quotes(credentials.load_credentials())
    assert quotes[a100][0] == Decimal('5.00')
