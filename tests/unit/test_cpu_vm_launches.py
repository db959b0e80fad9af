"""CPU-only tasks on Mithril, in-process: with CPU VM types in the catalog
(rows without accelerators, at a fixed price), the catalog and the
optimizer give a CPU-only task a CPU VM and a GPU task a GPU machine as
before; SkyPilot's controllers may run on CPU VMs, never on spot GPU
machines; a CPU VM (billed until deleted) is never stopped, only downed;
the launch's deploy variables mark the cluster a CPU VM, with no
limit price, and a configured limit is a note, not an error."""

import logging
from pathlib import Path
from typing import Any, Dict, Iterator

import pandas as pd
import pytest
import sky
from sky import exceptions
from sky.clouds import cloud as sky_cloud
from sky.utils import resources_utils

from sky_mithril import cloud
from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import mithril_catalog

_F = sky_cloud.CloudImplementationFeatures
REGION = 'us-central3-a'
CPU_ROWS = ('c2-standard,,,4,16,0.20,0.20,us-central3-a,\n'
            'c2-highmem,,,8,64,0.60,0.60,us-central3-a,\n')


@pytest.fixture(autouse=True)
def catalog_with_cpu_vms(monkeypatch: pytest.MonkeyPatch,
                         tmp_path: Path) -> Iterator[None]:
    """The shipped catalog plus two CPU VM types, as the live overlay lists
    them for a project that can buy CPU VMs."""
    path = tmp_path / 'vms.csv'
    path.write_text(catalog_files.catalog_path().read_text() + CPU_ROWS)
    monkeypatch.setattr(mithril_catalog, '_df', pd.read_csv(path))
    yield


def _feasible(num_nodes: int = 1, **resources: Any) -> Any:
    return cloud.Mithril().get_feasible_launchable_resources(
        sky.Resources(cloud=cloud.Mithril(), **resources), num_nodes)


def test_the_catalog_tells_cpu_vms_from_gpu_machines() -> None:
    assert mithril_catalog.is_cpu_vm('c2-standard')
    assert not mithril_catalog.is_cpu_vm('a100-80gb.sxm.1x')
    assert not mithril_catalog.is_cpu_vm('no-such-type')
    assert mithril_catalog.get_accelerators_from_instance_type('c2-standard') is None
    assert mithril_catalog.get_vcpus_mem_from_instance_type('c2-standard') == (4, 16)
    assert mithril_catalog.get_hourly_cost('c2-standard', False, REGION) == 0.20
    assert 'c2-standard' not in str(mithril_catalog.list_accelerators(
        True, None, None, None))


def test_a_cpu_only_request_gets_the_cheapest_fitting_cpu_vm() -> None:
    assert mithril_catalog.get_default_instance_type() == 'c2-standard'
    assert mithril_catalog.get_default_instance_type(cpus='4') == 'c2-standard'
    assert mithril_catalog.get_default_instance_type(cpus='4+',
                                                     memory='8x') == 'c2-highmem'
    assert mithril_catalog.get_default_instance_type(cpus='100+') in {
        'a100-80gb.sxm.4x', 'a100-80gb.sxm.8x', 'h100-80gb.sxm.8x', 'h200.8x',
        'neb-b200.sxm.8x'}
    assert mithril_catalog.get_default_gpu_instance_type(
        cpus='4+') == 'a100-80gb.sxm.1x'


def test_the_optimizer_puts_a_cpu_only_task_on_a_cpu_vm() -> None:
    feasible = _feasible(cpus='4+')
    assert [r.instance_type for r in feasible.resources_list] == ['c2-standard']
    gpu = _feasible(accelerators='A100:1')
    assert [r.instance_type for r in gpu.resources_list] == ['a100-80gb.sxm.1x']


def test_several_cpu_only_nodes_go_on_gpu_machines_as_before() -> None:
    feasible = _feasible(num_nodes=2, cpus='4+')
    assert [r.instance_type for r in feasible.resources_list] == [
        'a100-80gb.sxm.1x']


def test_a_limit_price_setting_never_keeps_a_cpu_only_task_off_mithril() -> None:
    feasible = _feasible(cpus='4+', _cluster_config_overrides={
        'mithril': {'limit_price_per_gpu': 2}})
    assert [r.instance_type for r in feasible.resources_list] == ['c2-standard']


@pytest.mark.parametrize('resources', [
    {}, {'cpus': '4+'}, {'instance_type': 'c2-standard'},
], ids=['any', 'cpus', 'cpu-vm-type'])
def test_controllers_may_run_on_cpu_vms(resources: Dict[str, Any]) -> None:
    cloud.Mithril.check_features_are_supported(
        sky.Resources(**resources), {_F.HOST_CONTROLLERS})


@pytest.mark.parametrize('resources', [
    {'instance_type': 'a100-80gb.sxm.1x'}, {'accelerators': 'A100:1'},
], ids=['gpu-type', 'gpu'])
def test_controllers_are_refused_on_spot_gpu_machines(
        resources: Dict[str, Any]) -> None:
    with pytest.raises(exceptions.NotSupportedError,
                       match='spot capacity would be preempted'):
        cloud.Mithril.check_features_are_supported(
            sky.Resources(**resources), {_F.HOST_CONTROLLERS})


def test_a_cpu_vm_is_one_node() -> None:
    with pytest.raises(exceptions.NotSupportedError, match='one machine'):
        cloud.Mithril.check_features_are_supported(
            sky.Resources(instance_type='c2-standard'), {_F.MULTI_NODE})


@pytest.mark.parametrize('feature', [_F.STOP, _F.AUTOSTOP])
def test_a_cpu_vm_is_never_stopped(feature: sky_cloud.CloudImplementationFeatures
                                   ) -> None:
    """Paused, a CPU VM bills on: SkyPilot refuses `sky stop` and plain
    autostop before the provisioner, naming what ends the bill."""
    with pytest.raises(exceptions.NotSupportedError) as refused:
        cloud.Mithril.check_features_are_supported(
            sky.Resources(instance_type='c2-standard'), {feature})
    assert 'fixed price until it is deleted' in str(refused.value)
    assert '`sky down`' in str(refused.value)
    assert '`sky autostop -i N --down`' in str(refused.value)


def test_a_cpu_vm_autodowns_and_a_gpu_machine_stops() -> None:
    cloud.Mithril.check_features_are_supported(
        sky.Resources(instance_type='c2-standard'),
        {_F.AUTODOWN})
    cloud.Mithril.check_features_are_supported(
        sky.Resources(instance_type='a100-80gb.sxm.1x'),
        {_F.STOP, _F.AUTOSTOP, _F.AUTODOWN})


def test_the_deploy_variables_mark_a_cpu_vm_without_a_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    resources = sky.Resources(
        cloud=cloud.Mithril(), instance_type='c2-standard', region=REGION,
        _cluster_config_overrides={'mithril': {'limit_price': 5}})
    with caplog.at_level(logging.INFO):
        variables = cloud.Mithril().make_deploy_resources_variables(
            resources, resources_utils.ClusterName('ctl', 'ctl'),
            sky_cloud.Region(REGION), None, 1, dryrun=True)
    assert variables['mithril_cpu_vm'] == 'true'
    assert variables['limit_price_per_hour'] == ''
    assert variables['mithril_reservation'] == ''
    assert 'fixed $0.20/h; no bid' in caplog.text
    assert 'limit_price ignored for this CPU VM' in caplog.text
    gpu = sky.Resources(cloud=cloud.Mithril(), instance_type='a100-80gb.sxm.1x',
                        region=REGION)
    variables = cloud.Mithril().make_deploy_resources_variables(
        gpu, resources_utils.ClusterName('gpu', 'gpu'),
        sky_cloud.Region(REGION), None, 1, dryrun=True)
    assert variables['mithril_cpu_vm'] == ''
    assert variables['limit_price_per_hour'] == '32.00'
