"""A managed job's standby bid: a second bid of the cluster's name, placed
during Mithril's preemption notice so the replacement boots while the old
node still trains (`place_standby`), watched until the notice ends
(`StandbyWatch`), then made the cluster's bid (`promote_standby`, which
cancels the old bid) or cancelled (`drop_standby`).

The standby is recorded (`records`) from before its POST until it is
promoted or dropped; the provisioner reads that record, plugged in here at
import (`cluster_bid.use_standbys`), to tell the cluster's bid from its
standby, and `sky stop` drops the standby. A placement that failed while a
bid of it may still be committed (a POST whose answer was lost, and the
look-up at its window's end failed) stays recorded as
being placed: a late commit is then a standby beside the cluster's bid,
cancelled by the recovery before SkyPilot's own (`drop_recorded_standby`),
by a status refresh once no recovery prepares it (`cluster_bid.refreshed_bid`),
by `sky stop` and by `sky down`. A placement that outlives its record (the
cluster torn down meanwhile, as after `sky jobs cancel`) never writes it
back: it cancels what it placed itself.
"""

import threading
import time
from decimal import Decimal
from typing import Any, FrozenSet, Optional

from sky import sky_logging

from sky_mithril import money
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import interrupts
from sky_mithril.recovery import records
from sky_mithril.recovery import standby_guard
from sky_mithril.task import settings

logger = sky_logging.init_logger('sky.sky_mithril.jobs')

# A standby that must be gone before SkyPilot's own recovery relaunches onto
# the cluster (`drop_recorded_standby`) is cancelled up to this many times,
# this far apart, before the recovery gives up on it.
DROP_ATTEMPTS = 3
DROP_RETRY_SECONDS = 10.0


class StandbyLeftLiveError(RuntimeError):
    """The cluster's standby could not be confirmed cancelled: a relaunch
    onto the cluster would adopt the cluster's bid and leave the standby
    billing beside it."""


def place_standby(conn: connection.Connection, bid: models.Bid,
                  limit: Decimal, budget: Optional[settings.SpendBudget]
                  ) -> cluster_bid.ClusterBid:
    """Places a standby for the cluster's bid `bid`: the same name, region,
    instance type, nodes, SSH keys and volumes, at `limit` per instance-hour,
    within the cluster's spend `budget` (the old bid, still billable in its
    notice, counts against it too).
    An earlier standby (left by an interrupted recovery) is cancelled first.
    Undone (cancelled) if placing it fails or is interrupted; a POST whose
    answer was lost is waited out first (`cluster_bid.create_once`), so a
    late commit of it is cancelled too. If that cannot be made sure of (the
    last look-up for the bid failed), it stays recorded as being placed."""
    for earlier in cluster_bid.live_bids(conn, bid.name):
        if earlier.fid != bid.fid:
            drop_standby(conn, bid.name, earlier.fid)
    spec = bid.launch_specification
    request = models.CreateBidRequest(
        project=conn.project_id, region=bid.region or '',
        instance_type=bid.instance_type, limit_price=limit,
        instance_quantity=bid.instance_quantity, name=bid.name,
        launch_specification=models.LaunchSpecification(
            ssh_keys=spec.ssh_keys, volumes=spec.volumes))
    placed_before = frozenset({bid.fid})
    records.set_standby(bid.name, '')
    try:
        placement = cluster_bid.create_once(conn, request, placed_before,
                                            budget=budget)
    except BaseException as e:
        settled = False
        try:
            cluster_bid.cancel_half_placed(conn, bid.name, e, placed_before)
            settled = not isinstance(e, cluster_bid.UnwatchedCommitError)
        finally:
            if settled:
                records.forget_standby(bid.name)
            elif not records.settle_standby(bid.name, ''):
                # A bid of it may be live, and no record tells it from the
                # cluster's any more: nothing else would cancel it.
                _cancel_orphaned_placement(conn, bid.name, placed_before)
            # Else it is recorded as being placed (from now), told from the
            # cluster's bid until something cancels it (module docstring).
        raise
    if not records.settle_standby(bid.name, placement.bid.fid):
        with interrupts.deferred():
            cluster_bid.cancel_and_confirm(conn, placement.bid.fid)
        raise RuntimeError(
            f'{bid.name}: the cluster was torn down (or its standby dropped) '
            f'while its standby was placed; cancelled bid '
            f'{placement.bid.fid}.')
    logger.info(f'Placed standby bid {placement.bid.fid} for {bid.fid} in '
                f'{bid.region} at a limit of {money.format_dollars(limit)}/h '
                'per instance.')
    return cluster_bid.ClusterBid(conn, placement.bid,
                                  cluster_bid.Outcome.PLACED,
                                  placed_at=placement.placed_at,
                                  placed_before=placed_before)


def _cancel_orphaned_placement(conn: connection.Connection, name: str,
                               placed_before: FrozenSet[str]) -> None:
    """After a standby's placement failed while a bid of it may be live,
    its record gone meanwhile (the cluster torn down, or the standby
    dropped by `sky stop`): cancels every live bid of the name but
    `placed_before` (the bid it stood by for), the placement's, looking up
    to DROP_ATTEMPTS times; warns, naming the command that cancels it, if
    it cannot."""
    for attempt in range(1, DROP_ATTEMPTS + 1):
        try:
            for orphan in cluster_bid.live_bids(conn, name):
                if orphan.fid not in placed_before:
                    with interrupts.deferred():
                        cluster_bid.cancel_and_confirm(conn, orphan.fid)
                    logger.info(f'Cancelled bid {orphan.fid}: a standby of '
                                f'{name!r} placed after its record was gone '
                                '(the cluster torn down or stopped).')
            return
        except Exception as e:  # pylint: disable=broad-except
            logger.info(f'{name}: looking for a standby placed after its '
                        f'record was gone failed (attempt {attempt} of '
                        f'{DROP_ATTEMPTS}): {e}')
        if attempt < DROP_ATTEMPTS:
            time.sleep(DROP_RETRY_SECONDS)
    logger.warning(
        f'{name}: a standby bid may have been placed after the cluster was '
        'torn down or stopped, and could not be looked for; should it be '
        'live, it bills: cancel it with `sky-mithril instance delete <fid> '
        '--include-sky-clusters` (`sky-mithril instance list` shows it).')


def promote_standby(conn: connection.Connection, name: str,
                    standby_fid: str, replacing: Optional[str] = None
                    ) -> bool:
    """Makes the standby the cluster's bid: every other live bid of the
    cluster is cancelled (confirmed Terminated) first. A paused one is the
    stopped cluster the user keeps, and a standby no longer live replaces
    nothing: then nothing is cancelled, and this raises. Idempotent; decided
    and done under `records.choosing_bids`, as `drop_standby` is.

    `replacing` is the bid whose notice's end the caller saw (the standby's
    guard): its state is read again under the lock, and unless it is still
    live with its notice over (Open or Allocated; not paused by a `sky
    stop`, nor gone) nothing is done and this returns False. True once the
    standby is the cluster's bid."""
    with records.choosing_bids():
        bids = cluster_bid.live_bids(conn, name)
        if standby_fid not in {b.fid for b in bids}:
            raise RuntimeError(f'Standby {standby_fid} of {name!r} is gone: '
                               'it replaces no bid.')
        others = [b for b in bids if b.fid != standby_fid]
        if replacing is not None and not any(
                b.fid == replacing and b.status in (models.BidState.OPEN,
                                                    models.BidState.ALLOCATED)
                for b in others):
            return False
        paused = [b.fid for b in others if b.status == models.BidState.PAUSED]
        if paused:
            raise RuntimeError(
                f'Bid {", ".join(paused)} of {name!r} is paused (the cluster '
                f'was stopped): standby {standby_fid} does not replace it.')
        for bid in others:
            with interrupts.deferred():
                cluster_bid.cancel_and_confirm(conn, bid.fid)
            logger.info(f'Cancelled bid {bid.fid}: standby {standby_fid} '
                        'replaces it.')
        records.forget_standby(name)
    return True


def drop_standby(conn: connection.Connection, name: str,
                 standby_fid: str) -> None:
    """Cancels the cluster's standby (confirmed Terminated), unless it is
    the name's only live bid: the bid it stood by for is gone (its guard
    promoted it, or a move onto it cancelled the old bid and then failed),
    so it is the cluster's bid now, and kept. Decided and done under
    `records.choosing_bids`, as `promote_standby` is, so the two never leave
    the cluster with no bid."""
    with records.choosing_bids():
        if [b.fid for b in cluster_bid.live_bids(conn, name)] == [standby_fid]:
            records.forget_standby(name)
            logger.info(f'Kept standby bid {standby_fid}: the bid it stood '
                        f'by for is gone, so it is the cluster\'s bid now.')
            return
        with interrupts.deferred():
            cluster_bid.cancel_and_confirm(conn, standby_fid)
        records.forget_standby(name)
    logger.info(f'Cancelled standby bid {standby_fid}.')


def drop_recorded_standby(conn: connection.Connection, name: str) -> None:
    """Leaves the cluster's name with the cluster's bid alone, before
    SkyPilot's own recovery relaunches onto the cluster: its recorded
    standby is cancelled (`drop_standby`), or, if it is recorded as being
    placed, any bid of it that is or becomes live within a late-commit
    window (`_drop_unplaced_standby`); up to DROP_ATTEMPTS times. Raises
    StandbyLeftLiveError, naming it, if that cannot be confirmed."""
    error: Optional[Exception] = None
    for attempt in range(1, DROP_ATTEMPTS + 1):
        standby = records.standby_of(name)
        if standby is None:
            return
        try:
            if standby:
                drop_standby(conn, name, standby)
            else:
                _drop_unplaced_standby(conn, name)
            return
        except Exception as e:  # pylint: disable=broad-except
            error = e
            logger.info(f'{name}: cancelling standby {standby or "(placing)"} '
                        f'failed (attempt {attempt} of {DROP_ATTEMPTS}): {e}')
        if attempt < DROP_ATTEMPTS:
            time.sleep(DROP_RETRY_SECONDS)
    what = (f'Standby bid {standby}' if standby else
            'A standby whose placement failed (its fid unknown)')
    raise StandbyLeftLiveError(
        f'{what} of {name!r} could not be confirmed cancelled ({error}). '
        'Relaunching onto the cluster now could leave it billing beside the '
        'cluster\'s bid, so this recovery stops here; SkyPilot tears the '
        'cluster down (every bid of its name) and retries the job. Should '
        'it stay live, cancel it with `sky-mithril instance delete '
        f'{standby or "<fid>"} --include-sky-clusters`.')


def _drop_unplaced_standby(conn: connection.Connection, name: str) -> None:
    """Cancels the bid of a standby recorded as being placed, should it be
    live or appear within a late-commit window from now (longer than is
    left of its lost POST's, `cluster_bid.LATE_COMMIT_WINDOW_SECONDS`):
    every live bid of the name but the oldest, the cluster's
    (`cluster_bid.cancel_extra_bids`)."""
    until = time.monotonic() + cluster_bid.LATE_COMMIT_WINDOW_SECONDS
    while True:
        bids = cluster_bid.live_bids(conn, name)
        if len(bids) > 1:
            cluster_bid.cancel_extra_bids(conn, name, bids[-1].fid)
        if time.monotonic() >= until:
            break
        time.sleep(cluster_bid.LATE_COMMIT_POLL_SECONDS)
    records.forget_standby(name)



class StandbyWatch(threading.Thread):
    """Watches the two bids while the standby is made ready (which may
    outlast the notice: the auction, the boot, the task's setup). Once the
    old bid's notice is over, the standby takes its place: the old bid is
    cancelled, since back to Open it could win a second node. If the job is
    cancelled (`cancelled`), the standby is cancelled, which ends its wait
    or setup. If the old bid is paused (`sky stop`), the watch ends: the
    paused bid is the cluster's, kept as the user left it, and the standby
    is cancelled (a stopped cluster bills for nothing).

    The watch is a thread of the jobs controller: entering it also starts
    the standby's guard (`standby_guard`), a process of its own that
    cancels the old bid at the notice's end should the controller die or
    stall. Each poll refreshes the standby's heartbeat in its record
    (`records.touch_standby`): a standby no longer watched is no longer
    being prepared, and a status refresh cancels it."""

    POLL_SECONDS = 3.0

    def __init__(self, conn: Any, name: str, old_fid: str, standby_fid: str,
                 cancelled: threading.Event) -> None:
        super().__init__(name=f'standby-watch-{name}', daemon=True)
        self.conn, self.cluster, self.old_fid = conn, name, old_fid
        self.standby_fid, self.cancelled = standby_fid, cancelled
        self.stopped = threading.Event()

    def run(self) -> None:
        replaced = False
        while not self.stopped.wait(0 if self.cancelled.is_set() else
                                    self.POLL_SECONDS):
            try:
                records.touch_standby(self.cluster, self.standby_fid)
                if self.cancelled.is_set():
                    drop_standby(self.conn, self.cluster, self.standby_fid)
                    return
                if replaced:
                    continue
                old = self.conn.client.get_bid(self.old_fid).status
                if old == models.BidState.PAUSED:
                    drop_standby(self.conn, self.cluster, self.standby_fid)
                    logger.info(f'{self.cluster}: the cluster was stopped; '
                                f'its standby {self.standby_fid} is '
                                'cancelled.')
                    return
                if old != models.BidState.PREEMPTING:
                    promote_standby(self.conn, self.cluster, self.standby_fid)
                    replaced = True
                    logger.info(f'{self.cluster}: the notice is over; '
                                f'standby {self.standby_fid} is the '
                                'cluster\'s bid now.')
            except Exception as e:  # pylint: disable=broad-except
                logger.info(f'{self.cluster}: watching the standby: {e}')

    def __enter__(self) -> 'StandbyWatch':
        try:
            standby_guard.spawn(self.conn, self.cluster, self.old_fid,
                                self.standby_fid)
        except OSError as e:
            logger.warning(f'{self.cluster}: could not start the standby\'s '
                           f'guard ({e}); should this controller stop before '
                           f'the notice of {self.old_fid} ends, cancel that '
                           'bid.')
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.join()


class _RecordedStandbys:
    """The standbys as recovery records them, for the provisioner."""

    def standby_of(self, name: str) -> Optional[str]:
        return records.standby_of(name)

    def drop(self, conn: connection.Connection, name: str,
             standby_fid: str) -> None:
        drop_standby(conn, name, standby_fid)

    def forget(self, name: str) -> None:
        records.forget_standby(name)

    def being_prepared(self, name: str) -> bool:
        return records.standby_being_prepared(name)


cluster_bid.use_standbys(_RecordedStandbys())
