"""A market that sells TYPE in two regions at different prices ($10.00/h in
REGION_A, $6.00/h in REGION_B), for the live-price tests of the integration
and e2e tiers. `two_region_catalog` and `two_region_emulator` are
module-scoped fixtures, which those modules import."""

import csv
from pathlib import Path
from typing import Iterator

import pytest
import requests
from sky.utils import annotations

from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import live_prices
from sky_mithril.emulator.server import EmulatorServer

TYPE = 'h100-80gb.sxm.8x'
REGION_A, REGION_B = 'us-central2-a', 'us-central3-a'


def forget_this_process_market() -> None:
    """Deletes the market this test process cached (the catalog overlay and
    its state), once a background refresh an earlier test started (under
    that test's API URL) has written it: it would otherwise land after the
    deletion, fresh, and be read as the next test's. The catalog's loaded
    copy is dropped too, as the API server drops it at every request
    (SkyPilot's request-scoped caches), so the next query reads the file."""
    with live_prices._refreshing:  # pylint: disable=protected-access
        for cached in (live_prices.overlay_path(), live_prices._state_path()):  # pylint: disable=protected-access
            cached.unlink(missing_ok=True)
    annotations.clear_request_level_cache()


@pytest.fixture(scope='module')
def two_region_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
def two_region_emulator(two_region_catalog: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer(catalog_path=two_region_catalog) as server:
        set_price(server, REGION_A, '$10.00')
        set_price(server, REGION_B, '$6.00')
        yield server
