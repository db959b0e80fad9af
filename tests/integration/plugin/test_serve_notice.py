"""Which SkyServe replicas leave at Mithril's notice (`serve_notice`), on a
manual-clock emulator: a ready replica whose bid is in its notice, not its
ready neighbour, not a replica still starting, not one already recycled."""

import types
from typing import Any

import pytest
from sky import global_user_state

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.recovery import runtime
from sky_mithril.recovery import serve_notice

from tests.helpers.provisioning import bids_named, launch_on_manual_clock, provision_config

CLEARING_S = 120.0


def replica(name: str, *, ready: bool = True, preempted: bool = False) -> Any:
    """The parts of SkyPilot's ReplicaInfo that `serve_notice` reads."""
    return types.SimpleNamespace(
        cluster_name=name, is_ready=ready,
        status_property=types.SimpleNamespace(preempted=preempted))


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
    assert serve_notice.replicas_in_notice(
        [replica('svc-1', ready=False), replica('svc-1', preempted=True)]) == []
