"""Live spot prices, in-process against the emulator: stale cache served
while it refreshes, fail-open to the shipped prices, quotes that follow the
market. (The optimizer's use of them through the real `sky` CLI is in
tests/e2e/test_live_prices.py.)"""

import json
import time
from decimal import Decimal

import requests

from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import live_prices

from tests.helpers.live_market import REGION_B, TYPE, set_price
from tests.helpers.live_market import two_region_catalog, two_region_emulator  # noqa: F401 (fixtures)


def test_stale_prices_are_served_while_a_refresh_runs(two_region_emulator, two_region_catalog,
                                                      monkeypatch):
    monkeypatch.setenv(catalog_files.ENV_CATALOG, str(two_region_catalog))
    monkeypatch.setenv('MITHRIL_API_URL', two_region_emulator.url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'live-key')
    live_prices.refresh()
    freshness = live_prices.OverlayFreshness()
    assert freshness() is True
    assert live_prices.quote(TYPE, REGION_B)[0] == 6

    set_price(two_region_emulator, REGION_B, '$7.50')
    requests.put(f'{two_region_emulator.url}/_emulator/faults', timeout=10, json={'rules': [{
        'method': 'GET', 'path': '/v2/spot/availability', 'latency': 1.0,
        'latency_s': 1.0}]}).raise_for_status()
    # The market ages past the TTL, here and in SkyPilot's state alike.
    state = live_prices._state_path()
    aged = json.loads(state.read_text())
    aged['fetched_at'] -= live_prices.CACHE_TTL_SECONDS + 1
    state.write_text(json.dumps(aged))
    key = live_prices.shared_key(live_prices._credentials())
    shared = live_prices._read_shared(key)
    shared['fetched_at'] -= live_prices.CACHE_TTL_SECONDS + 1
    live_prices._write_shared(key, shared)
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
        bare_emulator, monkeypatch):
    from sky_mithril.account import credentials
    from sky_mithril.api import MithrilClient, models
    a100 = ('a100-80gb.sxm.1x', 'us-central3-a')
    requests.post(f'{bare_emulator.url}/_emulator/price', timeout=10, json={
        'instance_type': a100[0], 'region': a100[1], 'price': '$2.00'}).raise_for_status()
    with MithrilClient('live-key', bare_emulator.url) as client:
        fid = next(t.fid for t in client.list_instance_types() if t.name == a100[0])
        bid = client.create_bid(models.CreateBidRequest(
            project='proj_emulator', region=a100[1], instance_type=fid,
            limit_price=Decimal('3.00'), instance_quantity=1, name='paid-2',
            launch_specification=models.LaunchSpecification()))
        requests.post(f'{bare_emulator.url}/_emulator/advance', timeout=10,
                      json={'seconds': 130}).raise_for_status()
        assert client.get_bid(bid.fid).status == 'Allocated'
        client.cancel_bid(bid.fid)
    requests.post(f'{bare_emulator.url}/_emulator/price', timeout=10, json={
        'instance_type': a100[0], 'region': a100[1], 'price': '$5.00'}).raise_for_status()
    monkeypatch.setenv('MITHRIL_API_URL', bare_emulator.url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'live-key')
    quotes = live_prices.fetch_quotes(credentials.load_credentials())
    assert quotes[a100][0] == Decimal('5.00')


def test_the_market_lists_cpu_vms_at_their_fixed_price_without_a_quote(
        bare_emulator, monkeypatch):
    """Every CPU VM type in every CPU region: a catalog row without an
    accelerator at its fixed price, the fid a launch creates it with, and no
    quote (nothing to win)."""
    from sky_mithril.account import credentials
    monkeypatch.setenv('MITHRIL_API_URL', bare_emulator.url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'live-key')
    market = live_prices.fetch_market(credentials.load_credentials())
    cpu_rows = [r for r in market.rows if r['InstanceType'] == 'c2-standard']
    assert cpu_rows and all(r['AcceleratorName'] == '' and r['Price'] == '0.20'
                            and r['vCPUs'] == '4' for r in cpu_rows)
    region = cpu_rows[0]['Region']
    assert market.fids[('c2-standard', region)].startswith('it_')
    assert ('c2-standard', region) not in market.quotes
