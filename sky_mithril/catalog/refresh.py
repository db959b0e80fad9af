"""`sky-mithril catalog refresh`: rebuild the catalog CSV from the live API.

One row per (instance type, region) auction from `/v2/spot/availability`,
specs from `/v2/instance-types`, and the current spot price from
`/v2/pricing/current` (falling back to the auction's last instance price).
"""

import re
from decimal import Decimal
from typing import Dict, List, Optional

from sky_mithril.api import client as client_lib
from sky_mithril.api import models

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


def _spot_price(client: client_lib.MithrilClient,
                auction: models.Auction) -> Optional[Decimal]:
    current = client.get_current_price(auction.instance_type,
                                       region=auction.region)
    return current.spot_price or auction.last_instance_price


def build_rows(client: client_lib.MithrilClient) -> List[Dict[str, str]]:
    """Catalog rows for every auction whose instance type is known."""
    types = {t.fid: t for t in client.list_instance_types()}
    rows: List[Dict[str, str]] = []
    for auction in client.list_spot_availability():
        instance_type = types.get(auction.instance_type)
        price = _spot_price(client, auction)
        if instance_type is None or price is None:
            continue
        name = accelerator_name(instance_type)
        count = instance_type.num_gpus or 0
        rows.append({
            'InstanceType': instance_type.name,
            'AcceleratorName': name,
            'AcceleratorCount': str(count),
            'vCPUs': str(instance_type.num_cpus),
            'MemoryGiB': str(instance_type.ram_gb),
            'Price': str(price),
            'SpotPrice': str(price),
            'Region': auction.region,
            'GpuInfo': _gpu_info(name, count, instance_type.gpu_memory_gb),
        })
    rows.sort(key=lambda r: (r['InstanceType'], r['Region']))
    return rows
