"""A managed job that burst onto a spot bid, because its reservations were
full or not active yet, moves back onto one once it has room.

While the job runs on an Allocated spot bid, the jobs controller's poll
(`ready`) looks at the reservations the task names (`config.mithril.
reservation`, in its order): once one is Active, holds the cluster's
instance type in its region, has free instances (claimed by no cluster,
`reserved_nodes.free_instances`) for every node, and does not end within the
job's lead time (kept for the relaunch, `reservation_end.remember_lead`, so
the relaunch takes it), the move starts as a reservation's end does, in two
steps:

1. The head node is told (`notice.write_reservation_end`, its deadline
   HOOKS_SECONDS from now): its watcher runs the task's preemption hooks
   and writes their "done" file. The job trains on meanwhile, and the
   controller's polls go on; nothing is torn down.
2. Once the hooks are done (or their deadline passed), the poll reports
   "recover now". SkyPilot's strategy tears the cluster down (every bid of
   its name cancelled and confirmed Terminated) and relaunches it in its
   region, where the deploy step puts it on the first listed reservation
   it fits on (`strategy.plan_recovery`).

Once step 1 is done the move goes on, whatever the reservation does
meanwhile: the hooks ran once (the watcher runs them at most once per
node), and a running task may act on the notice itself. If another launch
claims the free instances first, the relaunch bids on spot, a new bid in
place of the cancelled one. A job moves at most once per
`policy.BACK_TO_RESERVATION_INTERVAL` (Mithril's clock), doubled for each
earlier move still on record (kept a week after the last), so a nearly full
reservation does not bounce it between spot and a lost race every hour.
Free instances another cluster's move is under way to take count as taken
(`promised`) until its recovery returns (its claims are written by then),
so one free instance starts one move, not one per waiting job; so do those
a job leaving its ending reservation relaunches onto (`onto_next`), and a
fresh launch takes none of them either. The move is onto the first listed
reservation with room for it besides those (`reserved_nodes.
first_with_room`, where every launch picks its reservation); its relaunch
goes on that one while it has room, before any listed earlier, whose room
may be another move's (`promised_to`). Only reading the promises and the
claims, deciding and recording the move happen under SkyPilot's lock, taken
without waiting by a poll (one that finds it busy moves nothing this time):
no API call or SSH runs under it. A recovery that ends, fails or is cancelled drops its
promise (`relaunched`).

A node whose watcher already ran the preemption hooks (for an earlier notice
or move that left the node running) is not moved: its watcher runs them once
per node, so the move would start without them (remembered per bid for
HOOKS_RAN_KEEP_SECONDS, not asked over SSH every poll). A pool's worker is
never moved: SkyPilot resubmits its job onto the same worker, which it does
not tear down, and the worker is the pool's, not the job's.

Only jobs whose recovery starts at the notice move (`recovery_starts:
notice`, the default): with `node_lost` the task asked to be left running
until its node is gone. `back_to_reservation: false` opts out. A process
apart from the API server's database (a remote controller) cannot see the
claims and never moves a job.

The move's progress is kept in SkyPilot's state database per cluster
(`Move`), so a controller restart does not forget a notice it wrote.
"""

import dataclasses
import datetime
import enum
import json
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from sky import sky_logging

from sky_mithril import shared_state
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import reserved_nodes
from sky_mithril.recovery import notice
from sky_mithril.recovery import policy
from sky_mithril.recovery import reservation_end
from sky_mithril.task import settings

logger = sky_logging.init_logger('sky.sky_mithril.jobs')

MOVE_KEY_PREFIX = 'sky-mithril/back-to-reservation/'
# A job leaving its ending reservation for the next it lists (`onto_next`):
# the instances its relaunch is to take, kept per cluster as a move's are.
NEXT_KEY_PREFIX = 'sky-mithril/onto-next-reservation/'
# How long the task's preemption hooks may take before the move goes on
# without them (the spot bid keeps running meanwhile: no deadline forces it).
HOOKS_SECONDS = 600.0
# A move's record is kept this long (wall clock), well past the interval.
MOVE_KEEP_SECONDS = 7 * 86400.0
# A move under way past its hooks' deadline by more than this is stale (the
# controller restarted, or its recovery never took it): it neither promises
# the reservation's instances nor turns a later recovery into a move.
STALE_AFTER_SECONDS = 600.0
# A move whose relaunch started this long ago (wall clock) promises the
# reservation's instances no more (the controller stopped mid-relaunch).
RELAUNCH_SECONDS = 3600.0
# How long this process remembers that a bid's node already ran its
# preemption hooks (they run once per node, so the answer does not change).
HOOKS_RAN_KEEP_SECONDS = 3600.0
# SkyPilot's lock around counting a reservation's free instances and
# recording the move that takes them.
LOCK = 'back-to-reservation'

# The bids whose nodes ran their preemption hooks, with when that was seen.
_hooks_ran: Dict[str, float] = {}


class Phase(str, enum.Enum):
    """Where a cluster's move back onto its reservation stands."""

    HOOKS = 'hooks'  # The head was told; its preemption hooks run.
    RECOVERING = 'recovering'  # The controller started the recovery.
    RELAUNCHING = 'relaunching'  # The strategy tears down and relaunches.
    DONE = 'done'  # The relaunch returned (on the reservation, or on spot).


@dataclasses.dataclass(frozen=True)
class Move:
    """One move of a cluster back onto its reservation."""

    phase: Phase
    reservation: str
    started: str  # Mithril's clock at step 1, ISO 8601
    hooks_deadline: float  # wall clock, epoch seconds
    nodes: int = 1  # the reservation's instances the move takes
    tries: int = 1  # moves on record, this one included (back-off)
    relaunched_at: float = 0.0  # wall clock, when the strategy took it


def _key(cluster_name: str) -> str:
    return MOVE_KEY_PREFIX + cluster_name


def _parse(value: Optional[str]) -> Optional[Move]:
    if not value:
        return None
    try:
        fields: Dict[str, Any] = json.loads(value)
        return Move(Phase(fields['phase']), fields['reservation'],
                    fields['started'], float(fields['hooks_deadline']),
                    int(fields.get('nodes', 1)), int(fields.get('tries', 1)),
                    float(fields.get('relaunched_at', 0.0)))
    except (TypeError, ValueError, KeyError):
        return None


def move_of(cluster_name: str) -> Optional[Move]:
    """The cluster's last move, if one is kept."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    return _parse(kv_cache.get_cache_entry(_key(cluster_name)))


def _under_way(move: Move) -> bool:
    """Whether the move is between its notice and the return of its
    relaunch, and not stale."""
    if move.phase == Phase.RELAUNCHING:
        return time.time() <= move.relaunched_at + RELAUNCH_SECONDS
    return (move.phase in (Phase.HOOKS, Phase.RECOVERING) and
            time.time() <= move.hooks_deadline + STALE_AFTER_SECONDS)


def promised(cluster_name: str) -> Dict[str, int]:
    """The instances other clusters' moves under way than `cluster_name`'s
    take (back from spot, or onto the next reservation), by reservation
    fid."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    taken: Dict[str, int] = {}
    for prefix in (MOVE_KEY_PREFIX, NEXT_KEY_PREFIX):
        for key, value in kv_cache.get_cache_entries_by_prefix(
                prefix).items():
            move = _parse(value)
            if (key != prefix + cluster_name and move is not None and
                    _under_way(move)):
                taken[move.reservation] = (taken.get(move.reservation, 0) +
                                           move.nodes)
    return taken


def promised_to(cluster_name: str) -> Optional[str]:
    """The fid of the reservation whose instances the cluster's move under
    way is to take (back from spot, or onto the next reservation), once
    its relaunch started: that relaunch goes on it when it fits, not on
    an earlier listed one whose room other moves may be promised."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    for key in (_key(cluster_name), NEXT_KEY_PREFIX + cluster_name):
        move = _parse(kv_cache.get_cache_entry(key))
        if (move is not None and move.phase == Phase.RELAUNCHING and
                _under_way(move)):
            return move.reservation
    return None


def onto_next(handle: Any, provider_config: Optional[Dict[str, Any]],
              leaving: models.Reservation,
              cancelled: Optional[threading.Event] = None
              ) -> Optional[models.Reservation]:
    """For a job leaving reservation `leaving` before its end: the first
    other reservation it lists that its relaunch in its region fits on
    whole now, ending later than the lead the relaunch keeps
    (`reservation_end.lead_for_launch`), instances other moves under way
    take counted as taken; those it takes are promised to its relaunch
    until `relaunched`, so no other job's move starts onto them meanwhile.
    None when it bids on spot, or its recovery was `cancelled` (then
    nothing is promised)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    conn = cluster_bid.connect(provider_config)
    listed = [r for r in reservation_end.in_region(
        conn, sections, leaving.instance_type,
        handle.launched_resources.instance_type,
        handle.launched_resources.region) if r.fid != leaving.fid]
    instances = reserved_nodes.list_instances(conn, listed)
    now = conn.client.server_now()  # Read after an answer: Mithril's clock.
    lead = reservation_end.lead_for_launch(handle.cluster_name, sections)
    with shared_state.held(LOCK):
        if cancelled is not None and cancelled.is_set():
            return None
        # Claims are read under the lock: a relaunch drops its promise
        # (under it) only once its claims are written.
        found, _ = reserved_nodes.first_with_room(
            listed, reserved_nodes.free_counts(listed, instances),
            handle.launched_nodes, now, lead,
            promised(handle.cluster_name))
        if found is not None:
            kv_cache.add_or_update_cache_entry(
                NEXT_KEY_PREFIX + handle.cluster_name,
                json.dumps(dataclasses.asdict(Move(
                    Phase.RELAUNCHING, found.fid,
                    datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    0.0, handle.launched_nodes, relaunched_at=time.time()))),
                time.time() + RELAUNCH_SECONDS)
    return found


def _on_pool(cluster_name: str) -> bool:
    """Whether the cluster is a pool's worker (SkyPilot names a worker
    `<pool>-<replica id>`, the pool a service marked as one)."""
    from sky.serve import serve_state  # pylint: disable=import-outside-toplevel
    pool, _, replica = cluster_name.rpartition('-')
    if not pool or not replica.isdigit():
        return False
    service = serve_state.get_service_from_name(pool)
    return bool(service and service.get('pool'))


def _forget(cluster_name: str) -> None:
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kv_cache.add_or_update_cache_entry(_key(cluster_name), '', 0.0)


def _keep(cluster_name: str, move: Move) -> None:
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kv_cache.add_or_update_cache_entry(
        _key(cluster_name), json.dumps(dataclasses.asdict(move)),
        time.time() + MOVE_KEEP_SECONDS)


def _candidate(
        handle: Any, conn: Any, sections: settings.Sections,
        last: Optional[Move]
) -> Optional[Tuple[List[models.Reservation], datetime.datetime, int]]:
    """The task's reservations, in its order, that the cluster could move
    onto but for their free instances, Mithril's clock now and the
    cluster's nodes: it runs on an Allocated spot bid, past the last move's
    (`last`) back-off, the reservations are Active and hold its type in its
    region (`reservation_end.in_region`), and its head node has not run its
    preemption hooks. Takes no lock."""
    bid = cluster_bid.live_bid(conn, handle.cluster_name_on_cloud)
    if (bid is None or bid.status != models.BidState.ALLOCATED or
            reserved_nodes.ReservedNodes.held_by(
                conn, handle.cluster_name_on_cloud) is not None):
        return None
    now = conn.client.server_now()
    if last is not None and now - datetime.datetime.fromisoformat(
            last.started) < policy.BACK_TO_RESERVATION_INTERVAL * 2 ** (
                last.tries - 1):
        return None
    reservations = reservation_end.in_region(
        conn, sections, bid.instance_type,
        handle.launched_resources.instance_type, bid.region or '')
    if not reservations:
        return None
    if _hooks_ran_on(handle, bid.fid):
        logger.debug(f'{handle.cluster_name}: the head node already ran its '
                     'preemption hooks (they run once per node); the job '
                     'stays on spot, off its reservations.')
        return None
    return reservations, now, bid.instance_quantity


def _hooks_ran_on(handle: Any, bid_fid: str) -> bool:
    """Whether the node of the cluster's bid `bid_fid` ran its preemption
    hooks: remembered for HOOKS_RAN_KEEP_SECONDS once seen, else asked."""
    now = time.time()
    for fid, seen in list(_hooks_ran.items()):
        if now - seen > HOOKS_RAN_KEEP_SECONDS:
            _hooks_ran.pop(fid, None)  # polls run in several threads
    if bid_fid in _hooks_ran:
        return True
    if _hooks_done(handle):
        _hooks_ran[bid_fid] = now
        return True
    return False


def _hooks_done(handle: Any) -> bool:
    """Whether the head node's watcher has run the preemption hooks."""
    try:
        return handle.get_command_runners()[0].run(
            f'test -f {notice.HOOKS_DONE_FILE}', stream_logs=False) == 0
    except Exception:  # pylint: disable=broad-except
        return False


def ready(handle: Any, provider_config: Dict[str, Any]) -> bool:
    """On the jobs controller's poll of a Mithril cluster whose recovery
    starts at the notice: whether the job moves back onto its reservation
    now (module docstring); starts step 1 when the reservation has room."""
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    if (not policy.resolve_back_to_reservation(*sections) or
            not settings.resolve_reservations(*sections) or
            shared_state.apart_from_api_server() or
            _on_pool(handle.cluster_name)):
        return False
    move = move_of(handle.cluster_name)
    if move is not None and move.phase == Phase.HOOKS:
        return time.time() >= move.hooks_deadline or _hooks_done(handle)
    conn = cluster_bid.connect(provider_config)
    candidate = _candidate(handle, conn, sections, move)
    if candidate is None:
        return False
    reservations, now, nodes = candidate
    # The job leaves a reservation by its own lead, kept for the relaunch
    # so it takes the reservation chosen here and no earlier listed one.
    lead = max(reservation_end.lead_of(handle),
               reservation_end.lead_for_launch(handle.cluster_name, sections))
    deadline = datetime.datetime.now(datetime.timezone.utc) + (
        datetime.timedelta(seconds=HOOKS_SECONDS))
    instances = reserved_nodes.list_instances(conn, reservations)
    with shared_state.held(LOCK, blocking=False) as held:
        if not held:
            logger.debug(f'{handle.cluster_name}: another job is deciding a '
                         'move; looking again next poll.')
            return False
        # Claims are read under the lock: a relaunch drops its promise
        # (under it) only once its claims are written.
        reservation, _ = reserved_nodes.first_with_room(
            reservations, reserved_nodes.free_counts(reservations, instances),
            nodes, now, lead,
            promised(handle.cluster_name))
        if reservation is None:
            return False
        _keep(handle.cluster_name, Move(
            Phase.HOOKS, reservation.fid, now.isoformat(),
            deadline.timestamp(), nodes,
            1 if move is None else move.tries + 1))
    reservation_end.remember_lead(handle.cluster_name, lead)
    _tell(handle, reservation, deadline, move)
    return False


def _tell(handle: Any, reservation: models.Reservation,
          deadline: datetime.datetime, last: Optional[Move]) -> None:
    """Step 1 of the move just recorded: the head node is told. If it cannot
    be, the record goes back to the last move (`last`), so no poll recovers
    without the hooks and the instances are free for other jobs again."""
    try:
        notice.write_reservation_end(handle, deadline)
    except Exception as e:  # pylint: disable=broad-except
        if last is None:
            _forget(handle.cluster_name)
        else:
            _keep(handle.cluster_name, last)
        logger.info(f'{handle.cluster_name}: reservation {reservation.name} '
                    f'has room, but the head node could not be told ({e}); '
                    'the job stays on spot for now.')
        return
    logger.info(f'{handle.cluster_name}: reservation {reservation.name} '
                f'({reservation.fid}) has room for the job; running its '
                'preemption hooks, then moving it off its spot bid onto the '
                'reservation.')


def recovering(cluster_name: str) -> bool:
    """Before the controller's recovery: records that a move whose hooks
    ran is under way; whether one is."""
    move = move_of(cluster_name)
    if move is None or move.phase != Phase.HOOKS:
        return False
    _keep(cluster_name, dataclasses.replace(move, phase=Phase.RECOVERING))
    return True


def take_move(cluster_name: str,
              cancelled: Optional[threading.Event] = None) -> bool:
    """In the recovery strategy: whether this recovery is a move back onto
    the reservation (recorded relaunching: its instances stay promised
    until `relaunched`); a stale move, or one whose recovery was
    `cancelled`, is not taken."""
    with shared_state.held(LOCK):
        move = move_of(cluster_name)
        if (move is None or move.phase != Phase.RECOVERING or
                not _under_way(move) or
                (cancelled is not None and cancelled.is_set())):
            return False
        _keep(cluster_name, dataclasses.replace(
            move, phase=Phase.RELAUNCHING, relaunched_at=time.time()))
    return True


def relaunched(cluster_name: str) -> None:
    """Once the strategy's recovery of the cluster returned, failed or was
    cancelled (its relaunch holds its claims, or bid on spot, or never
    came): its move is done, and no instance stays promised to it."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    with shared_state.held(LOCK):
        kv_cache.add_or_update_cache_entry(NEXT_KEY_PREFIX + cluster_name, '',
                                           0.0)
        move = move_of(cluster_name)
        if move is not None and move.phase != Phase.DONE:
            _keep(cluster_name, dataclasses.replace(move, phase=Phase.DONE))
