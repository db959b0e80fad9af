"""One table from Mithril's states to SkyPilot's cluster statuses."""

from typing import Dict, List, Optional, Tuple

from sky.utils import status_lib

from sky_mithril.api import models

_Status = status_lib.ClusterStatus
_Instance = models.InstanceState
NodeStatuses = Dict[str, Tuple[Optional[status_lib.ClusterStatus],
                               Optional[str]]]

# Mithril instance status → SkyPilot cluster status; None means gone.
STATUS_TABLE: Dict[str, Optional[status_lib.ClusterStatus]] = {
    _Instance.NEW: _Status.INIT,
    _Instance.CONFIRMED: _Status.INIT,
    _Instance.SCHEDULED: _Status.INIT,
    _Instance.INITIALIZING: _Status.INIT,
    _Instance.STARTING: _Status.INIT,
    _Instance.RUNNING: _Status.UP,
    _Instance.PREEMPTING: _Status.UP,
    _Instance.RELOCATING: _Status.INIT,
    _Instance.ERROR: _Status.INIT,
    _Instance.STOPPING: _Status.STOPPED,
    _Instance.STOPPED: _Status.STOPPED,
    _Instance.PREEMPTED: _Status.STOPPED,
    _Instance.PAUSED: _Status.STOPPED,
    _Instance.TERMINATED: None,
    _Instance.REPLACED: None,
}


def node_statuses(bid: models.Bid, instances: List[models.Instance],
                  non_terminated_only: bool) -> NodeStatuses:
    """The cluster's nodes as SkyPilot sees them, with a reason for each
    node that is not UP."""
    if not instances:
        return {bid.fid: (_Status.INIT, f'bid {bid.fid} is {bid.status}, '
                                        'waiting for allocation')}
    statuses: NodeStatuses = {}
    for instance in instances[:bid.instance_quantity]:
        status = STATUS_TABLE.get(instance.status, _Status.INIT)
        if status is None and non_terminated_only:
            continue
        reason = None if status == _Status.UP else (
            f'{instance.status} (bid {bid.status})')
        statuses[instance.fid] = (status, reason)
    return statuses
