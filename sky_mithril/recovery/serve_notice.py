"""SkyServe replicas on Mithril are replaced from the preemption notice on.

SkyPilot's serve controller notices a preempted replica only when its
readiness probe fails, i.e. after the node is gone: until then the load
balancer sends requests to a node that disappears under them, and the
replacement starts late. Mithril says 5 minutes in advance. After each
probe round, a replica whose cluster's bid is in its notice is recycled as
SkyPilot recycles a preempted one (marked preempted, torn down as a scale
down, so the autoscaler launches a replacement at once), with a drain delay
that covers the load balancer's next sync: the load balancer stops sending
it requests while the node still answers those in flight. `sky down` of the
replica (SkyPilot's teardown through the API server) cancels its bid.
"""

import functools
from typing import Any, List

from sky import sky_logging

from sky_mithril.recovery import runtime

logger = sky_logging.init_logger('sky.sky_mithril.serve')

# The load balancer learns the ready replicas every
# LB_CONTROLLER_SYNC_INTERVAL_SECONDS (20 s in SkyPilot 0.14.1); a replica
# leaving is drained that long plus a margin before its node is torn down.
DRAIN_MARGIN_SECONDS = 10


def replicas_in_notice(infos: List[Any]) -> List[Any]:
    """The replicas (SkyPilot's ReplicaInfo) that serve now and whose
    cluster's bid is in Mithril's preemption notice."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    leaving = []
    for info in infos:
        if info.status_property.preempted or not info.is_ready:
            continue
        handle = global_user_state.get_handle_from_cluster_name(
            info.cluster_name)
        if (handle is not None and runtime.is_mithril(handle) and
                runtime.in_notice(handle)):
            leaving.append(info)
    return leaving


def leave_at_notice(manager: Any) -> None:
    """Recycles `manager`'s replicas in their notice (see the module)."""
    # pylint: disable=import-outside-toplevel,protected-access
    from sky.serve import constants as serve_constants
    from sky.serve import serve_state
    drain = (serve_constants.LB_CONTROLLER_SYNC_INTERVAL_SECONDS +
             DRAIN_MARGIN_SECONDS)
    with manager.lock:
        infos = serve_state.get_replica_infos(manager._service_name)
        for info in replicas_in_notice(infos):
            logger.info(f'Replica {info.replica_id} ({info.cluster_name}) is '
                        'in Mithril\'s preemption notice: replacing it now; '
                        f'it leaves the load balancer and is torn down in '
                        f'{drain}s.')
            info.status_property.preempted = True
            serve_state.add_or_update_replica(manager._service_name,
                                              info.replica_id, info)
            manager._terminate_replica(info.replica_id,
                                       sync_down_logs=False,
                                       replica_drain_delay_seconds=drain,
                                       is_scale_down=True)


def install() -> None:
    """After each of the serve controller's probe rounds, replicas in their
    notice leave (`leave_at_notice`)."""
    from sky.serve import replica_managers  # pylint: disable=import-outside-toplevel
    manager = replica_managers.SkyPilotReplicaManager
    original = manager._probe_all_replicas  # pylint: disable=protected-access

    @functools.wraps(original)
    def probe_all_replicas(self: Any) -> None:
        original(self)
        if not self._is_pool:  # pylint: disable=protected-access
            leave_at_notice(self)

    manager._probe_all_replicas = probe_all_replicas  # pylint: disable=protected-access
