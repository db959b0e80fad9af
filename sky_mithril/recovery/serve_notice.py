"""SkyServe replicas on Mithril are replaced from the preemption notice on.

SkyPilot's serve controller notices a preempted replica only when its
readiness probe fails, i.e. after the node is gone: until then the load
balancer sends requests to a node that disappears under them, and the
replacement starts late. Mithril says 5 minutes in advance. After each
probe round, a replica whose cluster's bid is in its notice is scaled down
(SHUTTING_DOWN, so the autoscaler launches a replacement at once and a
restarted controller finishes the teardown), with a drain delay that covers
the load balancer's next sync: the load balancer stops sending it requests
while the node still answers those in flight. `sky down` of the replica
(SkyPilot's teardown through the API server) cancels its bid; a teardown
that fails keeps the replica's record (FAILED_CLEANUP), so the bid stays in
sight, and the controller tries it again (after a minute, doubling up to an
hour; `sky serve down` tries it too): after the notice the bid is Open again
and may win and bill.
"""

import functools
import time
from typing import Any, Dict, List, Optional, Tuple

from sky import sky_logging

from sky_mithril.recovery import runtime

logger = sky_logging.init_logger('sky.sky_mithril.serve')

# The load balancer learns the ready replicas every
# LB_CONTROLLER_SYNC_INTERVAL_SECONDS (20 s in SkyPilot 0.14.1); a replica
# leaving is drained that long plus a margin before its node is torn down.
DRAIN_MARGIN_SECONDS = 10
# A failed teardown of a Mithril replica is tried again after this long,
# doubling at each failure up to TEARDOWN_RETRY_MAX_SECONDS.
TEARDOWN_RETRY_SECONDS = 60.0
TEARDOWN_RETRY_MAX_SECONDS = 3600.0
# (service, replica id) -> (monotonic time of the next attempt, its delay):
# this controller process's; a restarted controller tries at once.
_next_teardown: Dict[Tuple[str, int], Tuple[float, float]] = {}


def replicas_in_notice(infos: List[Any]) -> List[Any]:
    """The replicas (SkyPilot's ReplicaInfo) that serve now and whose
    cluster's bid is in Mithril's preemption notice (one request each)."""
    leaving = []
    for info in infos:
        if not info.is_ready:
            continue
        handle = _mithril_handle(info.cluster_name)
        if handle is not None and runtime.in_notice(handle):
            leaving.append(info)
    return leaving


def leave_at_notice(manager: Any) -> None:
    """Scales down `manager`'s replicas in their notice (see the module).
    The notice checks run outside the manager's lock, which the launches,
    teardowns and probes wait on; under it, a replica leaves only if it
    still serves."""
    # pylint: disable=import-outside-toplevel,protected-access
    from sky.serve import constants as serve_constants
    from sky.serve import serve_state
    service = manager._service_name
    leaving = replicas_in_notice(serve_state.get_replica_infos(service))
    if not leaving:
        return
    drain = (serve_constants.LB_CONTROLLER_SYNC_INTERVAL_SECONDS +
             DRAIN_MARGIN_SECONDS)
    with manager.lock:
        for info in leaving:
            now = serve_state.get_replica_info_from_id(service, info.replica_id)
            if now is None or not now.is_ready:
                continue
            logger.info(f'Replica {info.replica_id} ({info.cluster_name}) is '
                        'in Mithril\'s preemption notice: replacing it now; '
                        'it leaves the load balancer and is torn down in '
                        f'{drain}s.')
            try:
                manager._terminate_replica(info.replica_id,
                                           sync_down_logs=False,
                                           replica_drain_delay_seconds=drain,
                                           is_scale_down=True)
            except Exception as e:  # pylint: disable=broad-except
                # SkyPilot's own probe finds it when the node goes.
                logger.warning(f'Could not replace replica {info.replica_id} '
                               f'at its notice: {e}')


def keep_failed_teardown(manager: Any, info: Any) -> None:
    """Records a Mithril replica whose teardown failed as FAILED_CLEANUP,
    where SkyPilot would drop a scaled-down replica's record: its cluster,
    and the bid behind it, would then bill with no replica to show it, and
    `sky serve down` would not retry it."""
    # pylint: disable=import-outside-toplevel,protected-access
    from sky.serve import serve_state
    from sky.utils import common_utils
    info.status_property.sky_down_status = common_utils.ProcessStatus.FAILED
    serve_state.add_or_update_replica(manager._service_name, info.replica_id,
                                      info)
    key = (manager._service_name, info.replica_id)
    _, last_delay = _next_teardown.get(key, (0.0, 0.0))
    delay = min(max(TEARDOWN_RETRY_SECONDS, 2 * last_delay),
                TEARDOWN_RETRY_MAX_SECONDS)
    _next_teardown[key] = (time.monotonic() + delay, delay)
    logger.error(f'Replica {info.replica_id} ({info.cluster_name}) could not '
                 'be torn down; it stays in the replica table as '
                 f'FAILED_CLEANUP and is tried again in {delay:.0f}s.')


def retry_failed_teardowns(manager: Any) -> None:
    """Tears down again, when due, the Mithril replicas kept by
    `keep_failed_teardown` (scaled down, FAILED_CLEANUP, no teardown under
    way). Only queues SkyPilot's teardown thread: no request here."""
    # pylint: disable=import-outside-toplevel,protected-access
    from sky.serve import serve_state
    service = manager._service_name
    with manager.lock:
        for info in serve_state.get_replicas_at_status(
                service, serve_state.ReplicaStatus.FAILED_CLEANUP):
            due, _ = _next_teardown.get((service, info.replica_id), (0.0, 0.0))
            if (not info.status_property.is_scale_down or
                    info.status_property.purged or
                    info.replica_id in manager._down_thread_pool or
                    time.monotonic() < due or
                    _mithril_handle(info.cluster_name) is None):
                continue
            logger.info(f'Tearing down replica {info.replica_id} '
                        f'({info.cluster_name}) again.')
            manager._terminate_replica(info.replica_id, sync_down_logs=False,
                                       replica_drain_delay_seconds=0,
                                       is_scale_down=True)


def _mithril_handle(cluster_name: str) -> Any:
    """The cluster's SkyPilot handle when it is on Mithril, else None."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    handle = global_user_state.get_handle_from_cluster_name(cluster_name)
    return handle if handle is not None and runtime.is_mithril(handle) else None


def install() -> None:
    """After each of the serve controller's probe rounds, replicas in their
    notice leave (`leave_at_notice`) and failed teardowns are tried again
    (`retry_failed_teardowns`); a failed teardown of a Mithril replica keeps
    its record (`keep_failed_teardown`)."""
    from sky.serve import replica_managers  # pylint: disable=import-outside-toplevel
    manager = replica_managers.SkyPilotReplicaManager
    original = manager._probe_all_replicas  # pylint: disable=protected-access

    @functools.wraps(original)
    def probe_all_replicas(self: Any) -> None:
        original(self)
        if not self._is_pool:  # pylint: disable=protected-access
            leave_at_notice(self)
            retry_failed_teardowns(self)

    manager._probe_all_replicas = probe_all_replicas  # pylint: disable=protected-access
    original_down_finish = manager._handle_sky_down_finish  # pylint: disable=protected-access

    @functools.wraps(original_down_finish)
    def handle_sky_down_finish(self: Any, info: Any,
                               format_exc: Optional[str]) -> None:
        if (format_exc is not None and not info.status_property.purged and
                _mithril_handle(info.cluster_name)):
            keep_failed_teardown(self, info)
            return
        _next_teardown.pop((self._service_name, info.replica_id), None)  # pylint: disable=protected-access
        original_down_finish(self, info, format_exc)

    manager._handle_sky_down_finish = handle_sky_down_finish  # pylint: disable=protected-access
