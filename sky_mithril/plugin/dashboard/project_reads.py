"""The project's live bids and the instances that stand for their nodes, as
the dashboard reads them: two requests however many bids. The one module the
shared project snapshot (provision/project_snapshot.py) replaces."""

import dataclasses
from typing import Dict, List

from sky_mithril.account import connection
from sky_mithril.api import models

_GONE = (models.InstanceState.REPLACED, models.InstanceState.TERMINATED)


@dataclasses.dataclass(frozen=True)
class ProjectBids:
    """Every bid that is not terminated, oldest first, and each one's
    instances (by bid fid) in the bid's own order, head first."""

    bids: List[models.Bid]
    instances: Dict[str, List[models.Instance]]


def read_bids(conn: connection.Connection) -> ProjectBids:
    """One listing of the project's bids, one of their instances."""
    bids = sorted((b for b in conn.client.list_bids(conn.project_id)
                   if b.status != models.BidState.TERMINATED),
                  key=lambda b: (b.created_at, b.fid))
    listed = conn.client.list_instances(conn.project_id,
                                        bid_fids=[b.fid for b in bids])
    instances: Dict[str, List[models.Instance]] = {b.fid: [] for b in bids}
    for instance in listed:
        if instance.bid in instances and instance.status not in _GONE:
            instances[instance.bid].append(instance)
    for bid in bids:
        order = {fid: n for n, fid in enumerate(bid.instances)}
        instances[bid.fid] = sorted(
            instances[bid.fid],
            key=lambda i: (order.get(i.fid, len(order)), i.created_at))[
                :bid.instance_quantity]
    return ProjectBids(bids, instances)
