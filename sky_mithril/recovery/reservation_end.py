"""A managed job on reserved instances moves off them before its
reservation's `end_time`, a preemption known in advance.

The lead time (`policy.resolve_reservation_end_lead`) is the task's
`reservation_end_lead_minutes`, else twice the cluster's last launch as
SkyPilot's cluster events measured it (`measured_launch_seconds`), at least
ten minutes. Once the reservation ends within it (`ending`), the jobs
controller's runtime treats it as a notice: the head node is told
(`notice.write_reservation_end`, so the task's preemption hooks run with
`MITHRIL_PREEMPTION_DEADLINE` at the reservation's end) and the job
recovers; the strategy gives the instances back first. The lead used is kept
in SkyPilot's state database (`remember_lead`) for the relaunch, which takes
no reservation ending within it (`lead_for_launch`): it goes on the first
other reservation the task lists that it fits on whole
(`back_to_reservation.onto_next`: the strategy then relaunches it in its
region), else bids on spot.
"""

import datetime
import time
from typing import Any, Dict, List, Optional, Tuple

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import reserved_nodes
from sky_mithril.recovery import policy
from sky_mithril.task import settings

LEAD_KEY_PREFIX = 'sky-mithril/reservation-end-lead/'
# The lead used for a cluster is kept this long: its relaunch follows within
# minutes.
LEAD_KEEP_SECONDS = 86400.0
# SkyPilot's cluster events that open a launch, and those of its steps up to
# the task's setup (sky/backends, sky/execution.py).
LAUNCH_OPENS = 'Provisioning on '
LAUNCH_STEPS = ('Cluster successfully provisioned', 'Syncing files',
                'Syncing file mounts', 'Running setup commands')


def measured_launch_seconds(cluster_name: str) -> Optional[float]:
    """How long the cluster's last launch took, from SkyPilot's cluster
    events: its last 'Provisioning on ...' to the last launch step after it
    (the task's setup starting); None when they do not say."""
    # pylint: disable=import-outside-toplevel
    from sky import global_user_state
    try:
        events: List[Any] = global_user_state.get_cluster_events(
            cluster_name, None,
            global_user_state.ClusterEventType.STATUS_CHANGE,
            include_timestamps=True)
    except Exception:  # pylint: disable=broad-except
        return None
    opened = [int(e['transitioned_at']) for e in events
              if str(e['reason']).startswith(LAUNCH_OPENS)]
    if not opened:
        return None
    steps = [int(e['transitioned_at']) for e in events
             if str(e['reason']).startswith(LAUNCH_STEPS) and
             int(e['transitioned_at']) >= opened[-1]]
    return float(max(steps) - opened[-1]) if steps else None


def remember_lead(cluster_name: str, lead: datetime.timedelta) -> None:
    """Keeps the lead the job left its reservation by, for its relaunch."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kv_cache.add_or_update_cache_entry(
        LEAD_KEY_PREFIX + cluster_name, str(lead.total_seconds()),
        time.time() + LEAD_KEEP_SECONDS)


def lead_for_launch(cluster_name: str,
                    sections: settings.Sections) -> datetime.timedelta:
    """The lead a launch of `cluster_name` keeps from a reservation's end:
    the one its job left a reservation by (`remember_lead`), else the
    task's setting or the default (nothing measured before a launch)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kept = kv_cache.get_cache_entry(LEAD_KEY_PREFIX + cluster_name)
    if kept:
        return datetime.timedelta(seconds=float(kept))
    return policy.resolve_reservation_end_lead(*sections)


def lead_of(handle: Any) -> datetime.timedelta:
    """The lead time of the job on this cluster (module docstring)."""
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    return policy.resolve_reservation_end_lead(
        *sections, measured_launch_seconds(handle.cluster_name))


def ending(handle: Any, provider_config: Optional[Dict[str, Any]]
           ) -> Optional[Tuple[models.Reservation, datetime.timedelta]]:
    """The reservation the cluster runs on and the job's lead time, when it
    ends within that lead (Mithril's clock); None for a cluster on a spot
    bid or a reservation that lasts longer."""
    conn = cluster_bid.connect(provider_config)
    held = reserved_nodes.ReservedNodes.held_by(conn,
                                                handle.cluster_name_on_cloud)
    if held is None:
        return None
    reservation = held.reservation()
    if reservation is None:
        return None
    lead = lead_of(handle)
    if reservation.end_time - conn.client.server_now() > lead:
        return None
    return reservation, lead


def in_region(conn: connection.Connection, sections: settings.Sections,
              type_fid: str, instance_type: str,
              region: str) -> List[models.Reservation]:
    """The task's reservations, in its order, that are Active and hold
    `instance_type` (`type_fid` in Mithril's API) in `region`: those a
    relaunch of the job in its region may go on."""
    found = reserved_nodes.find_each(conn,
                                     settings.resolve_reservations(*sections))
    return [r for r in found if r.status == models.ReservationState.ACTIVE
            and not reserved_nodes.mismatch(r, type_fid, instance_type, region)]
