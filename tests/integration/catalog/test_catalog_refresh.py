"""`sky-mithril catalog refresh` rebuilds the CSV from a live API (the emulator)."""

import subprocess
import sys
from decimal import Decimal
from typing import Iterator

import pytest

from sky_mithril.catalog import catalog_files
from sky_mithril.emulator.server import EmulatorServer


@pytest.fixture
def never_clearing_emulator() -> Iterator[EmulatorServer]:
    """The emulator's default market, never clearing: its history stays the
    seeded week."""
    with EmulatorServer(clearing_interval_s=1e9) as server:
        yield server


def test_refresh_follows_a_market_that_differs_from_the_shipped_catalog(
        never_clearing_emulator, tmp_path):
    """The emulator's default market has regions the shipped catalog lacks
    and other prices, with a week of history: the refreshed CSV lists every
    auction the API lists, priced at its 7-day median spot price, and every
    CPU VM type in every CPU region at its fixed price, without an
    accelerator."""
    emulator_server = never_clearing_emulator
    market = emulator_server.market
    with market.caught_up(emulator_server.lock):
        auctions = {
            (a.instance_type.name, a.region): a for a in market.auctions.list()
        }
        cpu_vms = {(t.name, region): t.hourly_price
                   for t in market.cpu_vms.instance_types()
                   for region in market.cpu_vms.regions()}
        medians = {}
        for auction, points in market.auctions.price_history(num_samples=200):
            prices = sorted(p for _, p in points)
            medians[(auction.instance_type.name,
                     auction.region)] = prices[(len(prices) - 1) // 2]
    output = tmp_path / 'vms.csv'
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path),
           'MITHRIL_API_URL': emulator_server.url, 'MITHRIL_API_KEY': 'refresh-key',
           'MITHRIL_PROJECT': 'proj_emulator'}
    result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'catalog',
                             'refresh', '--output', str(output)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shipped = catalog_files.read_rows(catalog_files.catalog_path())
    rows = {(r['InstanceType'], r['Region']): r
            for r in catalog_files.read_rows(output)}
    assert set(rows) == set(auctions) | set(cpu_vms)
    for key, price in cpu_vms.items():
        assert (rows[key]['AcceleratorName'], rows[key]['AcceleratorCount'],
                Decimal(rows[key]['Price'])) == ('', '', price)
    fresh = {key: row for key, row in rows.items() if key in auctions}
    assert set(fresh) != {(r['InstanceType'], r['Region']) for r in shipped}
    assert {Decimal(r['Price']) for r in fresh.values()} != {
        Decimal(r['Price']) for r in shipped}
    for key, row in fresh.items():
        assert Decimal(row['Price']) == Decimal(row['SpotPrice']) == medians[key]
        assert Decimal(row['Price']) > auctions[key].minimum_price * 10, key
    new_region = fresh[('h100-80gb.sxm.8x', 'us-central1-a')]
    assert (new_region['AcceleratorName'], new_region['AcceleratorCount'],
            new_region['vCPUs']) == ('H100', '8', '168')
    assert f'Wrote {len(rows)} rows' in result.stdout


def test_refresh_with_a_rejected_key_says_so_and_writes_nothing(tmp_path):
    output = tmp_path / 'vms.csv'
    with EmulatorServer(api_key='right') as server:
        env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path),
               'MITHRIL_API_URL': server.url, 'MITHRIL_API_KEY': 'wrong-key-xyz'}
        result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'catalog',
                                 'refresh', '--output', str(output)],
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert '401' in result.stderr and 'wrong-key-xyz' not in result.stderr
    assert not output.exists()
