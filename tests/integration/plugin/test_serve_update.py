"""`sky serve update` of the service section only (`serve_update`), on
SkyPilot's own replica manager and service tables: the replicas kept in
place stay among those the load balancer is sent, with no prober round in
between (SkyPilot 0.14.1 alone sends none until then: every request 503)."""

import os
from typing import Any, Iterator

import pytest
import yaml
from sky.serve import replica_managers
from sky.serve import serve_state
from sky.serve import serve_utils
from sky.serve import service_spec
from sky.utils import common_utils

from sky_mithril.recovery import serve_update

SERVICE = 'update-svc'


def task_yaml(min_replicas: int) -> str:
    """A service's task as the controller stores it; versions differ in the
    replica policy only."""
    return yaml.safe_dump({
        'name': SERVICE, 'file_mounts': {},
        'resources': {'infra': 'mithril', 'accelerators': 'A100:1',
                      'ports': 8080},
        'run': 'python3 -m http.server 8080',
        'service': {'readiness_probe': '/',
                    'replica_policy': {'min_replicas': min_replicas,
                                       'max_replicas': 4,
                                       'target_qps_per_replica': 5}}})


def add_version(version: int, min_replicas: int) -> service_spec.SkyServiceSpec:
    content = task_yaml(min_replicas)
    spec = service_spec.SkyServiceSpec.from_yaml_config(
        yaml.safe_load(content)['service'])
    serve_state.add_or_update_version(SERVICE, version, spec, content)
    return spec


def serving(replica_id: int) -> None:
    """A READY replica of version 1 in SkyPilot's replica table."""
    info = replica_managers.ReplicaInfo(replica_id, f'{SERVICE}-{replica_id}',
                                        '8080', True, None, 1, None)
    info.status_property.sky_launch_status = common_utils.ProcessStatus.SUCCEEDED
    info.status_property.first_ready_time = 1.0
    info.status_property.service_ready_now = True
    serve_state.add_or_update_replica(SERVICE, replica_id, info)


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """SkyPilot's replica manager of a service with two READY replicas of
    version 1 (active), the plugin's wrapper installed (and removed after
    the test), without its threads. A replica's URL is its cluster's name
    (SkyPilot would ask the cluster for its endpoint)."""
    cls = replica_managers.SkyPilotReplicaManager
    monkeypatch.setattr(cls, 'update_version', cls.update_version)
    monkeypatch.setattr(replica_managers.ReplicaInfo, 'url', property(
        lambda info: f'http://{info.cluster_name}:8080'))
    serve_update.install()
    serve_state.add_service(
        SERVICE, controller_job_id=1, policy='', requested_resources_str='',
        load_balancing_policy='round_robin',
        status=serve_state.ServiceStatus.READY, tls_encrypted=False,
        pool=False, controller_pid=os.getpid(), entrypoint='sky serve up')
    add_version(1, min_replicas=2)
    for replica_id in (1, 2):
        serving(replica_id)
    serve_utils.set_service_status_and_active_versions_from_replica(
        SERVICE, serve_state.get_replica_infos(SERVICE),
        serve_utils.UpdateMode.ROLLING)
    manager = object.__new__(cls)
    manager.latest_version = 1
    manager._service_name = SERVICE  # pylint: disable=protected-access
    yield manager
    for info in serve_state.get_replica_infos(SERVICE):
        serve_state.remove_replica(SERVICE, info.replica_id)
    serve_state.remove_service_completely(SERVICE)


@pytest.mark.parametrize('mode', list(serve_utils.UpdateMode))
def test_replicas_kept_in_place_by_an_update_stay_in_the_load_balancer(
        manager: Any, mode: serve_utils.UpdateMode) -> None:
    urls = [f'http://{SERVICE}-1:8080', f'http://{SERVICE}-2:8080']
    assert sorted(manager.get_active_replica_urls()) == urls
    manager.update_version(2, add_version(2, min_replicas=1), update_mode=mode)
    # In place: the same replicas, now of version 2 ...
    assert {i.replica_id: i.version
            for i in serve_state.get_replica_infos(SERVICE)} == {1: 2, 2: 2}
    # ... and what the load balancer's next sync gets, before any probe.
    assert sorted(manager.get_active_replica_urls()) == urls
