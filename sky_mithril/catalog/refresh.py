"""`sky-mithril catalog refresh`: rebuild the catalog CSV from the live API.

One row per (instance type, region) auction from `/v2/spot/availability`,
specs from `/v2/instance-types`. The price is the auction's **median spot
price over the last MEDIAN_DAYS days** (`/v2/pricing/history`): what the
shipped catalog shows when no live prices can be had, so it must be a
typical price, never the auction floor. An auction without history falls
back to its current spot price (`/v2/pricing/current`), then to the
auction's last instance price.
"""

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

from sky_mithril.api import client as client_lib
from sky_mithril.api import models

MEDIAN_DAYS = 7
_GPU_NAME = re.compile(r'[A-Za-z]+\d+[A-Za-z]*')


def accelerator_name(instance_type: models.InstanceType) -> str:
    """SkyPilot's short GPU name ("H100") from Mithril's GPU type string."""
    match = _GPU_NAME.search(instance_type.gpu_type or '')
    return match.group(0).upper() if match else ''


def _gpu_info(name: str, count: int, memory_gb: Optional[float]) -> str:
    per_gpu_mib = int((memory_gb or 0) * 1024)
    return str({
        'Gpus': [{
            'Name': name,
            'Manufacturer': 'NVIDIA',
            'Count': count,
            'MemoryInfo': {
                'SizeInMiB': per_gpu_mib
            }
        }],
        'TotalGpuMemoryInMiB': per_gpu_mib * count
    })


def catalog_row(instance_type: models.InstanceType, region: str,
                price: Decimal) -> Dict[str, str]:
    """One catalog row: the shape from `/v2/instance-types`, `price` per
    instance-hour."""
    name = accelerator_name(instance_type)
    count = instance_type.num_gpus or 0
    return {
        'InstanceType': instance_type.name,
        'AcceleratorName': name,
        'AcceleratorCount': str(count),
        'vCPUs': str(instance_type.num_cpus),
        'MemoryGiB': str(instance_type.ram_gb),
        'Price': str(price),
        'SpotPrice': str(price),
        'Region': region,
        'GpuInfo': _gpu_info(name, count, instance_type.gpu_memory_gb),
    }


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
    """Catalog rows for every auction whose instance type is known."""
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
            rows.append(catalog_row(instance_type, auction.region, price))
    rows.sort(key=lambda r: (r['InstanceType'], r['Region']))
    return rows
