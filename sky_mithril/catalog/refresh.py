"""`sky-mithril catalog refresh`: rebuild the catalog CSV from the live API.

A maintainers' tool: only that command imports it, never the plugin's runtime.

One row per (instance type, region) auction from `/v2/spot/availability`,
specs from `/v2/instance-types`. The price is the auction's **median spot
price over the last MEDIAN_DAYS days** (`/v2/pricing/history`): what the
shipped catalog shows when no live prices can be had, so it must be a
typical price, never the auction floor. An auction without history falls
back to its current spot price (`/v2/pricing/current`), then to the
auction's last instance price. CPU VM types (`/v2/cpu/instance-types`, in
every region of `/v2/cpu/regions`) get a row each at their fixed price,
without accelerator columns.
"""

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Dict, List, Tuple

from sky_mithril.api import client as client_lib
from sky_mithril.catalog import rows as rows_lib

MEDIAN_DAYS = 7


def recent_medians(client: client_lib.MithrilClient,
                   type_names: Dict[str, str]) -> Dict[Tuple[str, str], Decimal]:
    """(instance type name, region) → median spot price of the last
    MEDIAN_DAYS days (lower middle sample), for every series with samples."""
    start = datetime.now(timezone.utc) - timedelta(days=MEDIAN_DAYS)
    history = client.get_price_history(num_samples=200, start_time=start)
    samples: Dict[Tuple[str, str], List[Decimal]] = {}
    for series in history.series:
        name = type_names.get(series.instance_type)
        if name is not None:
            samples.setdefault((name, series.region),
                               []).extend(series.spot_prices)
    return {key: sorted(prices)[(len(prices) - 1) // 2]
            for key, prices in samples.items() if prices}


def build_rows(client: client_lib.MithrilClient) -> List[Dict[str, str]]:
    """Catalog rows for every auction whose instance type is known, and for
    every CPU VM type in every CPU region, at its fixed price."""
    types = {t.fid: t for t in client.list_instance_types()}
    medians = recent_medians(client, {fid: t.name for fid, t in types.items()})
    rows: List[Dict[str, str]] = []
    for auction in client.list_spot_availability():
        instance_type = types.get(auction.instance_type)
        if instance_type is None:
            continue
        price = medians.get((instance_type.name, auction.region))
        if not price:
            current = client.get_current_price(auction.instance_type,
                                               region=auction.region)
            price = current.spot_price or auction.last_instance_price
        if price:
            rows.append(rows_lib.catalog_row(instance_type, auction.region,
                                             price))
    rows.extend(rows_lib.cpu_vm_rows(client)[0])
    rows.sort(key=lambda r: (r['InstanceType'], r['Region']))
    return rows
