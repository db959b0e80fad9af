"""Catalog queries over the shipped CSV, through SkyPilot's own helpers."""

import pytest

from sky_mithril.catalog import mithril_catalog
from sky_mithril.catalog import catalog_files

from tests.helpers.live_market import forget_this_process_market


@pytest.fixture(autouse=True)
def no_live_market() -> None:
    """No cached market (tests run without credentials): the catalog is
    rewritten from the shipped one, whatever market an earlier test in
    this process cached (an emulator's CPU VMs would be the cheapest
    machines)."""
    forget_this_process_market()


def test_shipped_catalog_has_skypilot_columns_and_rows():
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    assert len(rows) >= 9
    assert {r['AcceleratorName'] for r in rows} >= {'A100', 'H100', 'H200', 'B200'}


def test_accelerator_query_returns_matching_types():
    types, _ = mithril_catalog.get_instance_type_for_accelerator('A100', 8)
    assert types == ['a100-80gb.sxm.8x']
    types, fuzzy = mithril_catalog.get_instance_type_for_accelerator('A100', 3)
    assert types is None and any('A100:4' in f for f in fuzzy)


def test_cpu_only_request_gets_the_cheapest_fitting_gpu_machine():
    assert mithril_catalog.get_default_instance_type() == 'a100-80gb.sxm.1x'
    assert mithril_catalog.get_default_instance_type(cpus='100+') in {
        'a100-80gb.sxm.4x', 'a100-80gb.sxm.8x', 'h100-80gb.sxm.8x', 'h200.8x',
        'neb-b200.sxm.8x'
    }


def test_specs_per_instance_type():
    assert mithril_catalog.get_vcpus_mem_from_instance_type('h100-80gb.sxm.8x') == (168, 1814)
    assert mithril_catalog.get_accelerators_from_instance_type('neb-b200.sxm.8x') == {'B200': 8}


def test_unknown_instance_type_cost_raises_instead_of_zero():
    with pytest.raises(ValueError, match='not found'):
        mithril_catalog.get_hourly_cost('no-such-type')


def test_zones_are_refused_with_the_fix():
    with pytest.raises(ValueError, match='no zones.*infra: mithril/'):
        mithril_catalog.validate_region_zone('us-central3-a', 'us-central3-a-1')


def test_regions_and_region_filter():
    names = {r.name for r in mithril_catalog.regions()}
    assert {'us-central2-a', 'us-central3-a', 'us-central5-a'} <= names
    offered = mithril_catalog.get_region_zones_for_instance_type('a100-80gb.sxm.1x', True)
    assert [r.name for r in offered] == ['us-central3-a']


def test_catalog_override_env_must_point_at_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(catalog_files.ENV_CATALOG, str(tmp_path / 'missing.csv'))
    with pytest.raises(FileNotFoundError, match='SKY_MITHRIL_CATALOG'):
        catalog_files.catalog_path()
