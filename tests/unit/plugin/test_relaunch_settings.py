"""A relaunch onto an existing Mithril cluster (`sky launch -c NAME`) bids
with the new task's `config.mithril` and `max_hourly_cost`, not the ones the
cluster was first launched with."""

import types
from typing import Any

import pytest
import sky
from sky.backends import cloud_vm_ray_backend
from sky.clouds import cloud as sky_cloud
from sky.utils import resources_utils

from sky_mithril import cloud
from sky_mithril.plugin import takeover

TYPE = 'a100-80gb.sxm.1x'


def limit_of(resources: Any) -> str:
    """The limit the relaunch's bid would carry (a dry run's deploy step)."""
    return cloud.Mithril().make_deploy_resources_variables(
        resources, resources_utils.ClusterName('c', 'c-1234'),
        sky_cloud.Region('us-central3-a'), None, 1,
        dryrun=True)['limit_price_per_hour']


@pytest.fixture
def relaunch(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Relaunches a task onto a cluster first launched uncapped, with no
    Mithril limit; returns the resources SkyPilot will provision."""
    launched = sky.Resources(cloud=cloud.Mithril(), instance_type=TYPE,
                             region='us-central3-a')
    backend = cloud_vm_ray_backend.CloudVmRayBackend
    monkeypatch.setattr(backend, '_check_existing_cluster',
                        lambda self, task, *a, **k: types.SimpleNamespace(
                            resources=launched, prev_handle=object()))
    monkeypatch.setattr(sky, 'Mithril', cloud.Mithril)
    takeover._task_config_reaches_existing_clusters()  # pylint: disable=protected-access

    def run(**resources: Any) -> Any:
        task = sky.Task(run='true')
        task.set_resources(sky.Resources(cloud=cloud.Mithril(),
                                         instance_type=TYPE, **resources))
        return backend._check_existing_cluster(backend(), task).resources  # pylint: disable=protected-access

    return run


def test_a_relaunch_with_a_cap_bids_at_the_cap(relaunch):
    assert limit_of(relaunch(max_hourly_cost=10)) == '10.00'


def test_a_relaunch_with_a_new_limit_bids_at_it(relaunch):
    assert limit_of(relaunch(
        _cluster_config_overrides={'mithril': {'limit_price': 12}})) == '12'


def test_a_relaunch_without_settings_keeps_mithrils_default(relaunch):
    assert limit_of(relaunch()) == '32.00'
