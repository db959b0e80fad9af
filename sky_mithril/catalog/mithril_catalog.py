"""The `mithril` catalog SkyPilot queries, served from our shipped CSV.

Installed as `sys.modules['sky.catalog.mithril_catalog']` by the plugin, so
every `sky.catalog.*(..., clouds='mithril')` call lands here. The CSV never
comes from the internet: it is the shipped catalog with live spot prices laid
over it (`live_prices`). Queries go through SkyPilot's own `sky.catalog.common`
helpers so filtering and fuzzy matching behave as on every other cloud.
"""

from typing import Dict, List, Optional, Tuple, Union

from sky.catalog import common
from sky.clouds import cloud
from sky.utils import resources_utils

from sky_mithril import CLOUD_NAME
from sky_mithril.catalog import live_prices

_df = common.LazyDataFrame(str(live_prices.overlay_path()),
                           update_if_stale_func=live_prices.OverlayFreshness())

ZONES_UNSUPPORTED = ('Mithril has no zones: drop the zone and pick a region, '
                     'e.g. `infra: mithril/us-central3-a`.')


def _refuse_zone(zone: Optional[str]) -> None:
    if zone is not None:
        raise ValueError(ZONES_UNSUPPORTED)


def instance_type_exists(instance_type: str) -> bool:
    return common.instance_type_exists_impl(_df, instance_type)


def validate_region_zone(
        region: Optional[str],
        zone: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    _refuse_zone(zone)
    return common.validate_region_zone_impl(CLOUD_NAME, _df, region, zone)


def get_hourly_cost(instance_type: str,
                    use_spot: bool = False,
                    region: Optional[str] = None,
                    zone: Optional[str] = None) -> float:
    """The catalog price; raises for an unknown type or region instead of 0.0."""
    _refuse_zone(zone)
    return common.get_hourly_cost_impl(_df, instance_type, use_spot, region,
                                       zone)


def get_vcpus_mem_from_instance_type(
        instance_type: str) -> Tuple[Optional[float], Optional[float]]:
    return common.get_vcpus_mem_from_instance_type_impl(_df, instance_type)


def get_accelerators_from_instance_type(
        instance_type: str) -> Optional[Dict[str, Union[int, float]]]:
    return common.get_accelerators_from_instance_type_impl(_df, instance_type)


def is_cpu_vm(instance_type: str) -> bool:
    """Whether `instance_type` is a fixed-price CPU VM type (its catalog
    rows have no accelerator), not an auctioned GPU machine."""
    return (instance_type_exists(instance_type) and
            get_accelerators_from_instance_type(instance_type) is None)


def get_arch_from_instance_type(instance_type: str) -> Optional[str]:
    return common.get_arch_from_instance_type_impl(_df, instance_type)


def get_default_instance_type(
        cpus: Optional[str] = None,
        memory: Optional[str] = None,
        disk_tier: Optional[resources_utils.DiskTier] = None,
        local_disk: Optional[str] = None,
        region: Optional[str] = None,
        zone: Optional[str] = None,
        use_spot: bool = False,
        max_hourly_cost: Optional[float] = None) -> Optional[str]:
    """The cheapest type meeting cpus/memory: a fixed-price CPU VM where one
    fits (they cost a fraction of a GPU machine), else the cheapest GPU
    machine that does."""
    del disk_tier, local_disk
    _refuse_zone(zone)
    return common.get_instance_type_for_cpus_mem_impl(_df, cpus, memory,
                                                      region, zone, use_spot,
                                                      max_hourly_cost)


def get_default_gpu_instance_type(
        cpus: Optional[str] = None,
        memory: Optional[str] = None,
        region: Optional[str] = None,
        use_spot: bool = False,
        max_hourly_cost: Optional[float] = None) -> Optional[str]:
    """The cheapest GPU machine meeting cpus/memory, for a CPU-only task a
    CPU VM cannot hold (several nodes: a CPU VM is one)."""
    gpu_rows = _df[_df['AcceleratorName'].notna()]
    return common.get_instance_type_for_cpus_mem_impl(gpu_rows, cpus, memory,
                                                      region, None, use_spot,
                                                      max_hourly_cost)


def get_instance_type_for_accelerator(
        acc_name: str,
        acc_count: int,
        cpus: Optional[str] = None,
        memory: Optional[str] = None,
        use_spot: bool = False,
        local_disk: Optional[str] = None,
        region: Optional[str] = None,
        zone: Optional[str] = None,
        max_hourly_cost: Optional[float] = None
) -> Tuple[Optional[List[str]], List[str]]:
    del local_disk
    _refuse_zone(zone)
    return common.get_instance_type_for_accelerator_impl(
        df=_df,
        acc_name=acc_name,
        acc_count=acc_count,
        cpus=cpus,
        memory=memory,
        use_spot=use_spot,
        region=region,
        zone=zone,
        max_hourly_cost=max_hourly_cost)


def regions() -> List[cloud.Region]:
    return common.get_region_zones(_df, use_spot=False)


def get_region_zones_for_instance_type(instance_type: str,
                                       use_spot: bool) -> List[cloud.Region]:
    return common.get_region_zones(_df[_df['InstanceType'] == instance_type],
                                   use_spot)


def list_accelerators(
        gpus_only: bool,
        name_filter: Optional[str],
        region_filter: Optional[str],
        quantity_filter: Optional[int],
        case_sensitive: bool = True,
        all_regions: bool = False,
        require_price: bool = True) -> Dict[str, List[common.InstanceTypeInfo]]:
    del require_price
    return common.list_accelerators_impl('Mithril', _df, gpus_only,
                                         name_filter, region_filter,
                                         quantity_filter, case_sensitive,
                                         all_regions)
