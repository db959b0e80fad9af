"""One catalog row (the shipped CSV's columns) from Mithril's instance-type
shape and a price: shared by the live-price overlay and `catalog refresh`.
A CPU VM type's row has no accelerator columns: that is how the catalog
tells a fixed-price CPU VM from an auctioned GPU machine."""

import re
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

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


def cpu_vm_row(instance_type: models.CpuInstanceType,
               region: str) -> Dict[str, str]:
    """One catalog row of a CPU VM type (`/v2/cpu/instance-types`): no
    accelerator, its fixed hourly price."""
    price = f'{instance_type.hourly_price:.2f}'
    return {
        'InstanceType': instance_type.name,
        'AcceleratorName': '',
        'AcceleratorCount': '',
        'vCPUs': str(instance_type.num_cpus),
        'MemoryGiB': str(instance_type.ram_gb),
        'Price': price,
        'SpotPrice': price,
        'Region': region,
        'GpuInfo': '',
    }


def cpu_vm_rows(client: client_lib.MithrilClient
                ) -> Tuple[List[Dict[str, str]], Dict[Tuple[str, str], str]]:
    """Every CPU VM type in every CPU region: its catalog rows, and the fid
    each (type name, region) is sold under. Two requests."""
    types = [t for t in client.list_cpu_instance_types() if t.hourly_price > 0]
    regions = [r.name for r in client.list_cpu_regions()]
    rows = [cpu_vm_row(t, region) for t in types for region in regions]
    fids = {(t.name, region): t.fid for t in types for region in regions}
    return rows, fids
