"""One truth table from Mithril's (bid status, instance status) to SkyPilot's
(cluster status, reason), one entry per node the cluster was launched with;
and its rows for a cluster on reserved instances, keyed by (reservation
status, instance status).

The rules that keep bills honest:
- Only a Paused bid reads STOPPED: every other live bid can win capacity and
  bill at any moment, so it never reads STOPPED and never reads gone.
- A preempted cluster whose bid went back to Open reads INIT, with a reason
  that says Mithril re-allocates it by itself once the spot price is at or
  below the limit, and what `sky stop` and `sky down` do to it.
- Only a Terminated bid (or none at all) reads gone.
- A reserved instance is paid for in advance: paused, it reads STOPPED; once
  its reservation has ended (or the instance was returned) it reads gone.
- A CPU VM (fixed price, no bid) reads by its instance alone. It bills
  until it is deleted, so it never reads STOPPED: paused (in Mithril's
  console; SkyPilot never stops one) it reads INIT, with a reason saying it
  still bills and what `sky start` and `sky down` do; terminated, it reads
  gone.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

from sky.utils import status_lib

from sky_mithril import money
from sky_mithril.api import models

_Status = status_lib.ClusterStatus
_Bid = models.BidState
_Reservation = models.ReservationState
_Instance = models.InstanceState
NodeStatuses = Dict[str, Tuple[Optional[status_lib.ClusterStatus],
                               Optional[str]]]

NO_INSTANCE = '(no instance yet)'
"""The instance column for a node the bid has not been given an instance for."""

BID_STATES = (_Bid.OPEN, _Bid.ALLOCATED, _Bid.PREEMPTING, _Bid.PAUSED,
              _Bid.TERMINATED, _Bid.RELOCATING)
INSTANCE_STATES = (_Instance.NEW, _Instance.CONFIRMED, _Instance.SCHEDULED,
                   _Instance.INITIALIZING, _Instance.STARTING,
                   _Instance.RUNNING, _Instance.RELOCATING,
                   _Instance.PREEMPTING, _Instance.PREEMPTED, _Instance.PAUSED,
                   _Instance.STOPPING, _Instance.STOPPED, _Instance.REPLACED,
                   _Instance.TERMINATED, _Instance.ERROR, NO_INSTANCE)
_BOOTING = (_Instance.NEW, _Instance.CONFIRMED, _Instance.SCHEDULED,
            _Instance.INITIALIZING, _Instance.STARTING)
_GONE_INSTANCE = (_Instance.REPLACED, _Instance.TERMINATED)
"""An instance that no longer stands for a node; the bid gives it another."""

# Reasons, filled in with the bid's fields.
WAITING = ('bid {fid} is Open in {region}: waiting for the auction (spot '
           'price at or below your limit {limit}/h and free capacity); '
           '`sky down` cancels it')
PREEMPTED = ('preempted: bid {fid} is Open again and Mithril re-allocates it '
             'by itself, and bills again, once the spot price in {region} is '
             'at or below your limit {limit}/h; `sky stop` pauses the bid, '
             '`sky down` cancels it')
BOOTING = 'bid {fid} won the auction; the node is booting ({instance})'
NOTICE = ('bid {fid} is under a preemption notice: Mithril takes the node '
          'back within 5 minutes ({instance})')
STOPPED = 'bid {fid} is paused ({instance}); `sky start` resumes it'
RELOCATING = 'Mithril is relocating the node of bid {fid} ({instance})'
ERROR = ('the node of bid {fid} reports an error ({instance}); the bid still '
         'holds capacity and can bill: `sky down` cancels it')
UNSETTLED = ('bid {fid} is {bid_status} and its node is {instance}; '
             'sky-mithril reads that as not ready')


@dataclasses.dataclass(frozen=True)
class Reading:
    """How SkyPilot sees one node: its status (None: gone) and why."""

    status: Optional[status_lib.ClusterStatus]
    reason: Optional[str]


def _row(bid_status: str, instance_status: str) -> Reading:
    """The rule for one (bid status, instance status) pair."""
    if bid_status == _Bid.TERMINATED:
        return Reading(None, None)
    if bid_status == _Bid.PAUSED:
        return Reading(_Status.STOPPED, STOPPED)
    if bid_status == _Bid.OPEN:
        fresh = instance_status in (NO_INSTANCE,) + _GONE_INSTANCE
        return Reading(_Status.INIT, WAITING if fresh else PREEMPTED)
    if bid_status == _Bid.RELOCATING or instance_status == _Instance.RELOCATING:
        return Reading(_Status.INIT, RELOCATING)
    if instance_status == _Instance.RUNNING:
        return Reading(_Status.UP, None)
    if instance_status == _Instance.PREEMPTING:
        return Reading(_Status.UP, NOTICE)
    if instance_status == _Instance.ERROR:
        return Reading(_Status.INIT, ERROR)
    if instance_status in _BOOTING + (NO_INSTANCE,) + _GONE_INSTANCE:
        return Reading(_Status.INIT, BOOTING)
    return Reading(_Status.INIT, UNSETTLED)


TRUTH_TABLE: Dict[Tuple[str, str], Reading] = {
    (bid, instance): _row(bid, instance)
    for bid in BID_STATES
    for instance in INSTANCE_STATES
}


RESERVATION_STATES = (_Reservation.PENDING, _Reservation.ACTIVE,
                      _Reservation.PAUSED, _Reservation.CANCELED,
                      _Reservation.ENDED)
RESERVED_PENDING = ('reservation {fid} starts at {start}; its instances boot '
                    'then ({instance})')
RESERVED_PAUSED = ('reserved instance {instance_fid} is paused (by `sky stop` '
                   'or outside SkyPilot); it earns pause credit after an '
                   'hour; `sky start` resumes it')
RESERVED_BOOTING = 'reserved instance {instance_fid} is booting ({instance})'
RESERVED_ERROR = ('reserved instance {instance_fid} reports an error '
                  '({instance}); `sky down` gives it back to reservation {fid}')


def _reserved_row(reservation_status: str, instance_status: str) -> Reading:
    """The rule for one (reservation status, instance status) pair."""
    if (reservation_status in (_Reservation.ENDED, _Reservation.CANCELED) or
            instance_status in _GONE_INSTANCE):
        return Reading(None, None)
    if reservation_status == _Reservation.PENDING:
        return Reading(_Status.INIT, RESERVED_PENDING)
    if (reservation_status == _Reservation.PAUSED or instance_status in
            (_Instance.PAUSED, _Instance.STOPPING, _Instance.STOPPED)):
        return Reading(_Status.STOPPED, RESERVED_PAUSED)
    if instance_status == _Instance.RUNNING:
        return Reading(_Status.UP, None)
    if instance_status == _Instance.ERROR:
        return Reading(_Status.INIT, RESERVED_ERROR)
    return Reading(_Status.INIT, RESERVED_BOOTING)


RESERVED_TRUTH_TABLE: Dict[Tuple[str, str], Reading] = {
    (reservation, instance): _reserved_row(reservation, instance)
    for reservation in RESERVATION_STATES
    for instance in INSTANCE_STATES
}


def reserved_node_statuses(reservation: models.Reservation,
                           instances: List[models.Instance],
                           non_terminated_only: bool) -> NodeStatuses:
    """One entry per claimed instance, in the cluster's order (head first)."""
    statuses: NodeStatuses = {}
    for instance in instances:
        reading = RESERVED_TRUTH_TABLE.get(
            (reservation.status, instance.status),
            Reading(_Status.INIT, RESERVED_BOOTING))
        if reading.status is None and non_terminated_only:
            continue
        statuses[instance.fid] = (reading.status, None if reading.reason is None
                                  else reading.reason.format(
                                      fid=reservation.fid,
                                      start=reservation.start_time.isoformat(),
                                      instance=instance.status,
                                      instance_fid=instance.fid))
    return statuses


CPU_VM_PAUSED = ('CPU VM {instance_fid} is paused ({instance}) and still '
                 'bills at its fixed price: Mithril charges a CPU VM until it '
                 'is deleted. `sky start` resumes it; `sky down` deletes it '
                 'and ends the bill')
CPU_VM_BOOTING = 'CPU VM {instance_fid} is booting ({instance})'
CPU_VM_ERROR = ('CPU VM {instance_fid} reports an error ({instance}); it '
                'bills at its fixed price until `sky down` deletes it')
CPU_VM_UNSETTLED = ('CPU VM {instance_fid} is {instance}; sky-mithril reads '
                    'that as not ready')
CPU_VM_STATES = tuple(s for s in INSTANCE_STATES if s != NO_INSTANCE)


def _cpu_vm_row(instance_status: str) -> Reading:
    """The rule for a CPU VM's instance status."""
    if instance_status in _GONE_INSTANCE:
        return Reading(None, None)
    if instance_status in (_Instance.PAUSED, _Instance.STOPPING,
                           _Instance.STOPPED):
        return Reading(_Status.INIT, CPU_VM_PAUSED)
    if instance_status == _Instance.RUNNING:
        return Reading(_Status.UP, None)
    if instance_status == _Instance.ERROR:
        return Reading(_Status.INIT, CPU_VM_ERROR)
    if instance_status in _BOOTING:
        return Reading(_Status.INIT, CPU_VM_BOOTING)
    return Reading(_Status.INIT, CPU_VM_UNSETTLED)


CPU_VM_TRUTH_TABLE: Dict[str, Reading] = {
    instance: _cpu_vm_row(instance) for instance in CPU_VM_STATES
}


def cpu_vm_statuses(instance: models.Instance,
                    non_terminated_only: bool) -> NodeStatuses:
    """The one node of a cluster on a CPU VM."""
    reading = CPU_VM_TRUTH_TABLE.get(instance.status,
                                     Reading(_Status.INIT, CPU_VM_UNSETTLED))
    if reading.status is None and non_terminated_only:
        return {}
    return {instance.fid: (reading.status, None if reading.reason is None else
                           reading.reason.format(instance_fid=instance.fid,
                                                 instance=instance.status))}


def _reason(template: Optional[str], bid: models.Bid,
            instance_status: str) -> Optional[str]:
    if template is None:
        return None
    return template.format(fid=bid.fid,
                           region=bid.region or 'its region',
                           limit=money.format_dollars(bid.limit_price),
                           instance=instance_status,
                           bid_status=bid.status)


def node_statuses(bid: models.Bid, instances: List[models.Instance],
                  non_terminated_only: bool) -> NodeStatuses:
    """One entry per node of the bid (`instance_quantity`), head first, from
    the instances that currently stand for its nodes; a node without one is
    keyed `<bid fid>-node-<i>`.
    """
    statuses: NodeStatuses = {}
    for index in range(bid.instance_quantity):
        if index < len(instances):
            key, instance_status = instances[index].fid, instances[index].status
        else:
            key, instance_status = f'{bid.fid}-node-{index}', NO_INSTANCE
        reading = TRUTH_TABLE.get(
            (bid.status, instance_status),
            Reading(_Status.INIT, UNSETTLED))
        if reading.status is None and non_terminated_only:
            continue
        statuses[key] = (reading.status,
                         _reason(reading.reason, bid, instance_status))
    return statuses
