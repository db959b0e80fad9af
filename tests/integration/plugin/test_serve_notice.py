"""SkyServe replicas at Mithril's notice (`serve_notice`), on a manual-clock
emulator and SkyPilot's own replica table: a ready replica whose bid is in
its notice leaves, not its ready neighbour nor a replica still starting; it
reads SHUTTING_DOWN (a restarted controller finishes it), and a teardown
that fails keeps its record."""

import threading
import types
from typing import Any

import pytest
from sky import global_user_state
from sky.serve import replica_managers
from sky.serve import serve_state
from sky.utils import common_utils

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.recovery import runtime
from sky_mithril.recovery import serve_notice

from tests.helpers.provisioning import bids_named, launch_on_manual_clock, provision_config

CLEARING_S = 120.0


SERVICE = 'notice-svc'


def replica(name: str, *, ready: bool = True) -> Any:
    """The parts of SkyPilot's ReplicaInfo that `serve_notice` reads."""
    return types.SimpleNamespace(cluster_name=name, is_ready=ready)


def handle(name: str) -> Any:
    return types.SimpleNamespace(
        cluster_name=name, cluster_name_on_cloud=name,
        launched_resources=types.SimpleNamespace(
            cloud=types.SimpleNamespace(canonical_name=lambda: 'mithril')))


@pytest.fixture
def two_replicas(manual_clock_emulator: EmulatorServer,
                 monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """Replica clusters `svc-1` and `svc-2`, each a bid that won, as
    SkyPilot's cluster table would hand them over."""
    monkeypatch.setattr(runtime, 'provider_config',
                        lambda h: {'project_id': 'proj_emulator'})
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name', handle)
    for name in ('svc-1', 'svc-2'):
        launch_on_manual_clock(manual_clock_emulator, name,
                               provision_config(limit='10.00'), CLEARING_S)
    return manual_clock_emulator


def test_only_a_ready_replica_in_its_notice_leaves(two_replicas):
    infos = [replica('svc-1'), replica('svc-2')]
    assert serve_notice.replicas_in_notice(infos) == []
    [bid] = bids_named(two_replicas, 'svc-1')
    two_replicas.control('POST', f'bids/{bid["fid"]}/preempt')
    assert [i.cluster_name for i in serve_notice.replicas_in_notice(infos)] == ['svc-1']
    assert serve_notice.replicas_in_notice([replica('svc-1', ready=False)]) == []


def serving(replica_id: int, cluster_name: str) -> replica_managers.ReplicaInfo:
    """A READY replica in SkyPilot's replica table."""
    info = replica_managers.ReplicaInfo(replica_id, cluster_name, '8080',
                                        True, None, 1, None)
    info.status_property.sky_launch_status = common_utils.ProcessStatus.SUCCEEDED
    info.status_property.first_ready_time = 1.0
    info.status_property.service_ready_now = True
    serve_state.add_or_update_replica(SERVICE, replica_id, info)
    assert info.is_ready
    return info


@pytest.fixture
def replica_manager(monkeypatch: pytest.MonkeyPatch) -> Any:
    """SkyPilot's replica manager for SERVICE, with the plugin's wrappers
    installed (and removed after the test), without its threads."""
    cls = replica_managers.SkyPilotReplicaManager
    for name in ('_probe_all_replicas', '_handle_sky_down_finish'):
        monkeypatch.setattr(cls, name, getattr(cls, name))
    serve_notice.install()
    manager = object.__new__(cls)
    manager.lock = threading.Lock()
    manager.latest_version = 1
    manager._service_name = SERVICE  # pylint: disable=protected-access
    manager._launch_thread_pool = {}  # pylint: disable=protected-access
    manager._down_thread_pool = {}  # pylint: disable=protected-access
    manager._last_termination_check = {}  # pylint: disable=protected-access
    monkeypatch.setattr(global_user_state, 'cluster_with_name_exists',
                        lambda name: True)
    yield manager
    for info in serve_state.get_replica_infos(SERVICE):
        serve_state.remove_replica(SERVICE, info.replica_id)


def test_a_replica_in_its_notice_shuts_down_where_a_restarted_controller_finds_it(
        two_replicas, replica_manager):
    serving(1, 'svc-1')
    serving(2, 'svc-2')
    [bid] = bids_named(two_replicas, 'svc-1')
    two_replicas.control('POST', f'bids/{bid["fid"]}/preempt')
    serve_notice.leave_at_notice(replica_manager)
    statuses = {i.replica_id: i.status for i in serve_state.get_replica_infos(SERVICE)}
    assert statuses == {1: serve_state.ReplicaStatus.SHUTTING_DOWN,
                        2: serve_state.ReplicaStatus.READY}
    # What SkyPilot's controller tears down again after a restart.
    assert [i.replica_id for i in serve_state.get_replicas_at_status(
        SERVICE, serve_state.ReplicaStatus.SHUTTING_DOWN)] == [1]
    assert list(replica_manager._down_thread_pool) == [1]  # pylint: disable=protected-access
    serve_notice.leave_at_notice(replica_manager)
    assert list(replica_manager._down_thread_pool) == [1]  # pylint: disable=protected-access


def test_a_failed_teardown_of_a_mithril_replica_keeps_its_record(
        two_replicas, replica_manager):
    for replica_id in (1, 2):
        info = serving(replica_id, f'svc-{replica_id}')
        info.status_property.is_scale_down = True
        info.status_property.sky_down_status = common_utils.ProcessStatus.RUNNING
        serve_state.add_or_update_replica(SERVICE, replica_id, info)
    finish = replica_manager._handle_sky_down_finish  # pylint: disable=protected-access
    finish(serve_state.get_replica_info_from_id(SERVICE, 1),
           'MithrilAPIError: 503 Service Unavailable')
    finish(serve_state.get_replica_info_from_id(SERVICE, 2), None)
    [kept] = serve_state.get_replica_infos(SERVICE)
    assert kept.replica_id == 1
    assert kept.status == serve_state.ReplicaStatus.FAILED_CLEANUP


def test_a_failed_teardown_of_a_mithril_replica_is_retried_by_the_controller(
        two_replicas, replica_manager, monkeypatch):
    """A replica kept as FAILED_CLEANUP still has a live bid: once its
    notice ends the bid is Open again and Mithril re-allocates it when the
    price falls, billing a node no replica uses. The controller's own rounds
    must try the teardown again, not wait for `sky serve down`."""
    info = serving(1, 'svc-1')
    info.status_property.is_scale_down = True
    info.status_property.sky_down_status = common_utils.ProcessStatus.RUNNING
    serve_state.add_or_update_replica(SERVICE, 1, info)
    replica_manager._is_pool = False  # pylint: disable=protected-access
    replica_manager._uptime = None  # pylint: disable=protected-access
    replica_manager._handle_sky_down_finish(  # pylint: disable=protected-access
        serve_state.get_replica_info_from_id(SERVICE, 1),
        'MithrilAPIError: 503 Service Unavailable')
    assert serve_state.get_replica_info_from_id(
        SERVICE, 1).status == serve_state.ReplicaStatus.FAILED_CLEANUP

    replica_manager._probe_all_replicas()  # pylint: disable=protected-access
    assert replica_manager._down_thread_pool == {}  # not due yet  # pylint: disable=protected-access

    monkeypatch.setattr(serve_notice, '_next_teardown', {})
    monkeypatch.setattr(serve_notice, 'TEARDOWN_RETRY_SECONDS', 0.0)
    replica_manager._handle_sky_down_finish(  # pylint: disable=protected-access
        serve_state.get_replica_info_from_id(SERVICE, 1),
        'MithrilAPIError: 503 Service Unavailable')
    replica_manager._probe_all_replicas()  # pylint: disable=protected-access

    assert list(replica_manager._down_thread_pool) == [1]  # pylint: disable=protected-access
    assert serve_state.get_replica_info_from_id(
        SERVICE, 1).status == serve_state.ReplicaStatus.SHUTTING_DOWN
