"""The recovery strategies sky-mithril registers in SkyPilot: recovery
through a standby bid. During Mithril's preemption notice the replacement
node is won, booted and made ready to run the job while the preempted node
still trains (`plan_recovery`); then the job moves over (`move_to_standby`).

SkyPilot's built-in recovery strategies tear the preempted cluster down and
launch it again from scratch: the auction, the boot, the runtime setup, Ray's
start, the file sync and the task's setup all happen after training stopped
(~50 s here, minutes for a real GPU node's boot). sky-mithril puts its own
subclasses in SkyPilot's registry under the same names (`EAGER_NEXT_REGION`,
the default, and `FAILOVER`); for other clouds, or when no standby can be
had, they are SkyPilot's strategies unchanged. For a Mithril cluster in its
notice:

1. A standby bid is placed with the cluster's name, region, instance type,
   nodes, SSH keys and file shares, at the relaunch's limit
   (`recovery_limit_price` if set). Once it wins, it boots, and SkyPilot's
   own launch steps up to the run happen on it (`staging`): the task's
   public ports on its head; the runtime, Ray and the skylet; the task's
   workdir, file mounts and setup; autodown and the task's hooks. Meanwhile the job keeps training on the old node
   (its preemption hooks have run; `runtime`). Once the notice is over, at
   whatever stage the standby is, it takes the old bid's place (which is
   cancelled: back to Open, it could win a second node); if it has not won
   yet, it waits in the auction as a relaunch would, up to the cluster's
   `provision_timeout`.
2. The job is cancelled on the old node (its last step is on the volume),
   the old bid is cancelled, and the standby becomes the cluster's bid
   (`standby.promote_standby`); SkyPilot's record of the cluster points
   at the standby's nodes.
3. The job is submitted on the standby, as `sky exec` would: nothing is left
   to provision, sync or set up, so training resumes within seconds. If the
   submission fails, SkyPilot launches the job on the same cluster (which
   adopts the standby), and failing that, recovers as usual.

At most two bids of the cluster live at once, and only within the notice.
No standby is placed when the job's volumes include a block volume (it can
be attached to one bid at a time), for jobs on a pool, when recovery starts
only once the node is lost, or when a job without Mithril volumes (its
checkpoints are portable) cannot win its region now: with EAGER_NEXT_REGION
it is relaunched at once in another region that offers its type, where the
optimizer finds a bid can win (FAILOVER retries its region first). If the
standby cannot be ready, it is cancelled and SkyPilot's strategy recovers as
usual. `sky down` cancels both bids (same name).

A job whose reservation ends within its lead time (`reservation_end`) gets
no standby: its reserved instances are given back first (SkyPilot's teardown
of the cluster: paused, boot disks reset, claims released). When another
reservation the task lists, in the cluster's region, has room for it now
(`back_to_reservation.onto_next`: room no other job's move is promised,
then promised to this relaunch), it is relaunched in that region, where
the deploy step puts it on that reservation
(SkyPilot's EAGER_NEXT_REGION would first try the other regions); else
SkyPilot's strategy relaunches it, which takes no reservation ending within
the lead and so bids on spot at the recovery limit (or goes on a listed
reservation elsewhere).

A job moving back onto its reservation from a spot bid
(`back_to_reservation`; its preemption hooks have run) gets no standby
either: the cluster is torn down (its bid cancelled and confirmed
Terminated) and relaunched in its region, where the optimizer and the
provisioner fill the reservation first; if another launch claimed the free
instances meanwhile, the relaunch bids on spot, one bid as before.

Whenever SkyPilot's strategy recovers instead, no standby is left beside the
cluster's bid (`leave_one_bid`): FAILOVER relaunches onto the cluster as it
is and adopts that bid, so a standby whose cancel (or promotion) failed is
cancelled again first, unless the old bid is gone by then (a promotion whose
cancel went through unconfirmed): the standby is then the cluster's bid,
kept for FAILOVER to adopt. If it still cannot be cancelled, the recovery
fails rather than relaunch beside it, and SkyPilot's jobs controller tears
the cluster down (every bid of its name) and relaunches the job after a
backoff.
"""

import asyncio
import dataclasses
import tempfile
import threading
import time
from decimal import Decimal
from typing import Any, Dict, Optional, Tuple

from sky import global_user_state
from sky import sky_logging
from sky.jobs import recovery_strategy

from sky_mithril import CLOUD_NAME
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.recovery import back_to_reservation
from sky_mithril.recovery import policy
from sky_mithril.recovery import records
from sky_mithril.recovery import reservation_end
from sky_mithril.recovery import runtime
from sky_mithril.recovery import staging
from sky_mithril.recovery import standby as standby_lib
from sky_mithril.task import settings

logger = sky_logging.init_logger('sky.sky_mithril.jobs')


def _has_block_volume(conn: Any, bid: models.Bid) -> bool:
    fids = set(bid.launch_specification.volumes)
    return bool(fids) and any(
        v.fid in fids and v.interface == models.VolumeInterface.BLOCK
        for v in conn.client.list_volumes(conn.project_id, bid.region))


@dataclasses.dataclass(frozen=True)
class RecoveryPlan:
    """How a Mithril job recovers: onto a ready standby (`standby_fid`), by
    moving to one of `other_regions` at once (the job has no Mithril volume
    and cannot win its region now), off its reservation, which ends within
    the job's lead time (`leaves_reservation`; onto another the task lists
    in its region when `onto_next_reservation`), from its spot bid back
    onto its reservation in its region (`back_to_reservation`), or, with
    none of these, as SkyPilot's strategy does."""

    standby_fid: Optional[str] = None
    standby_info: Any = None  # its nodes, as SkyPilot's ClusterInfo
    old_bid_fid: Optional[str] = None
    other_regions: Tuple[str, ...] = ()
    leaves_reservation: bool = False
    onto_next_reservation: bool = False
    back_to_reservation: bool = False


def _other_regions(handle: Any) -> Tuple[str, ...]:
    """The regions, other than the cluster's, that offer its instance type
    (the catalog with live prices laid over it)."""
    from sky import catalog  # pylint: disable=import-outside-toplevel
    launched = handle.launched_resources
    offered = catalog.get_region_zones_for_instance_type(
        launched.instance_type, launched.use_spot, clouds=CLOUD_NAME)
    return tuple(sorted({r.name for r in offered} - {launched.region}))


def plan_recovery(handle: Any, dag: Any,
                  cancelled: threading.Event) -> RecoveryPlan:
    """Places the cluster's standby and readies it (module docstring), or
    says the job moves instead; once `cancelled` is set (the recovery was),
    it promises no reservation's instances to the job."""
    if handle is None or not runtime.is_mithril(handle):
        return RecoveryPlan()
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    if policy.resolve_recovery_starts(*sections) != policy.RECOVERY_AT_NOTICE:
        return RecoveryPlan()
    provider_config = runtime.provider_config(handle)
    ending = reservation_end.ending(handle, provider_config)
    if ending is not None:
        return RecoveryPlan(leaves_reservation=True, onto_next_reservation=(
            _onto_next_reservation(handle, provider_config, ending[0],
                                   cancelled)))
    name = handle.cluster_name_on_cloud
    conn = cluster_bid.connect(provider_config)
    bid = cluster_bid.live_bid(conn, name)
    moving_back = back_to_reservation.take_move(handle.cluster_name, cancelled)
    if moving_back and (bid is None or
                        bid.status != models.BidState.PREEMPTING):
        return RecoveryPlan(back_to_reservation=True)
    if bid is None or bid.status != models.BidState.PREEMPTING:
        return RecoveryPlan()
    if _has_block_volume(conn, bid):
        logger.info(f'{handle.cluster_name}: a block volume attaches to one '
                    'bid at a time; no standby.')
        return RecoveryPlan()
    limit = policy.relaunch_limit(
        settings.LimitPrice(Decimal(provider_config['limit_price_per_hour']),
                            'the cluster\'s limit price'), *sections,
        handle.launched_resources.max_hourly_cost).per_hour
    if not bid.launch_specification.volumes:
        market = cluster_bid.market_view(conn, bid)
        other_regions = () if market.can_win(
            limit, bid.instance_quantity) else _other_regions(handle)
        if other_regions:
            logger.info(
                f'{handle.cluster_name}: no standby in {bid.region} '
                f'({market.reason(limit, bid.instance_quantity)}); the job '
                'has no Mithril volume, so it can move to another region now.')
            return RecoveryPlan(other_regions=other_regions)
    started = time.time()
    standby = standby_lib.place_standby(
        conn, bid, limit, cluster_bid.spend_budget(provider_config))
    try:
        with standby_lib.StandbyWatch(conn, name, bid.fid, standby.bid.fid,
                                      cancelled), \
                tempfile.TemporaryDirectory() as fetched:
            runtime_files = staging.fetch_runtime_files(handle, fetched)
            standby.wait_until_ready(provider_config)
            info = cluster_bid.cluster_info(conn, standby.bid, provider_config)
            staging.open_ports(handle, info)
            staging.set_up_runtime(handle, runtime_files, info)
            staging.stage_job(dag, handle, info)
        if cancelled.is_set():
            raise RuntimeError('the job was cancelled')
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'{handle.cluster_name}: standby {standby.bid.fid} is not '
                    f'ready ({e}); cancelling it and recovering as usual.')
        standby_lib.drop_standby(conn, name, standby.bid.fid)
        return RecoveryPlan()
    logger.info(f'{handle.cluster_name}: standby {standby.bid.fid} ready '
                f'{time.time() - started:.0f}s after the recovery started.')
    return RecoveryPlan(standby_fid=standby.bid.fid, standby_info=info,
                        old_bid_fid=bid.fid)


def _onto_next_reservation(handle: Any, provider_config: Dict[str, Any],
                           leaving: models.Reservation,
                           cancelled: threading.Event) -> bool:
    """Whether the job leaving reservation `leaving` fits on another the
    task lists in its region, its room promised to no other job's move and
    now promised to this relaunch (`back_to_reservation.onto_next`); False,
    saying why, when that cannot be told (the relaunch then bids on spot,
    or goes on a reservation elsewhere, as before)."""
    try:
        found = back_to_reservation.onto_next(handle, provider_config,
                                              leaving, cancelled)
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'{handle.cluster_name}: could not look for room on its '
                    f'other reservations ({e}); relaunching as SkyPilot does.')
        return False
    if found is not None:
        logger.info(f'{handle.cluster_name}: reservation {found.name} '
                    f'({found.fid}) has room for the job; relaunching it in '
                    f'{handle.launched_resources.region}, onto that '
                    'reservation.')
    return found is not None


def leave_one_bid(handle: Any) -> None:
    """Before SkyPilot's strategy recovers a Mithril cluster: a standby
    still recorded (its cancel failed, or the move onto it did) is cancelled
    (`standby.drop_recorded_standby`). FAILOVER relaunches onto the cluster
    as it is, adopting the cluster's bid, and the standby would bill beside
    it for as long as the job runs. Raises StandbyLeftLiveError if the
    standby cannot be confirmed cancelled: the recovery fails, and SkyPilot's
    jobs controller tears the cluster down (every bid of its name) and
    relaunches the job after a backoff."""
    if handle is None or not runtime.is_mithril(handle):
        return
    name = handle.cluster_name_on_cloud
    if records.standby_of(name) is None:
        return
    standby_lib.drop_recorded_standby(
        cluster_bid.connect(runtime.provider_config(handle)), name)


def move_to_standby(handle: Any, plan: RecoveryPlan) -> Any:
    """Cancels the job on the old node, if it is still there, then makes the
    standby the cluster's bid (module docstring, step 2,
    `make_standby_the_clusters_bid`); SkyPilot's record of the cluster, now
    pointed at the standby's nodes. Unlike SkyPilot's own job cancel, a node
    that cannot be reached does not tear the cluster (and so the standby)
    down: its bid is cancelled next anyway."""
    from sky import backends  # pylint: disable=import-outside-toplevel
    old_fid = plan.old_bid_fid
    assert old_fid is not None, plan
    conn = cluster_bid.connect(runtime.provider_config(handle))
    if conn.client.get_bid(old_fid).status == models.BidState.PREEMPTING:
        try:
            backends.CloudVmRayBackend().cancel_jobs(handle, jobs=None,
                                                     cancel_all=True)
        except Exception as e:  # pylint: disable=broad-except
            logger.info(f'{handle.cluster_name}: could not cancel the job on '
                        f'the old node ({e}); cancelling its bid.')
    return make_standby_the_clusters_bid(handle, plan)


def make_standby_the_clusters_bid(handle: Any, plan: RecoveryPlan) -> Any:
    """Makes the standby the cluster's bid (`standby.promote_standby`,
    idempotent: the other live bids cancelled) and points SkyPilot's record
    of the cluster at the standby's nodes; that record."""
    standby_fid = plan.standby_fid
    assert standby_fid is not None, plan
    standby_lib.promote_standby(
        cluster_bid.connect(runtime.provider_config(handle)),
        handle.cluster_name_on_cloud, standby_fid)
    # The cluster's skylet tunnel (to the old head) is closed; the next call
    # to the skylet opens one to the standby's.
    moved = staging.pointed_at(handle, plan.standby_info)
    moved.close_skylet_ssh_tunnel()
    global_user_state.update_cluster_handle(moved.cluster_name, moved)
    return moved


class _StandbyRecovery:
    """Recovers through a standby when one can be had, else as the SkyPilot
    strategy it is mixed into."""

    # Whether a job that can move leaves its region at once
    # (EAGER_NEXT_REGION) rather than retrying it first (FAILOVER).
    moves_at_once = False

    async def recover(self) -> float:
        # pylint: disable=no-member
        handle = await asyncio.to_thread(
            global_user_state.get_handle_from_cluster_name, self.cluster_name)
        if (self.pool is not None or handle is None or
                not runtime.is_mithril(handle)):
            return await self._recover_as_skypilot_does(handle)
        cancelled = threading.Event()
        try:
            return await self._recover_as_planned(handle, cancelled)
        finally:
            await self._promise_dropped()

    async def _recover_as_planned(self, handle: Any,
                                  cancelled: threading.Event) -> float:
        plan = RecoveryPlan()
        try:
            plan = await asyncio.to_thread(plan_recovery, handle, self.dag,
                                           cancelled)
        except asyncio.CancelledError:
            # The job is cancelled; the thread goes on until its standby
            # watch cancels the standby, and promises nothing.
            cancelled.set()
            raise
        except Exception as e:  # pylint: disable=broad-except
            # Whatever it placed is cancelled by then, or still recorded
            # and cancelled before SkyPilot's recovery (`leave_one_bid`).
            logger.warning(f'{self.cluster_name}: no standby ({e}).')
        if plan.standby_fid is not None:
            return await self._move_onto_standby(handle, plan)
        if plan.leaves_reservation:
            return await self._leave_reservation(handle,
                                                 plan.onto_next_reservation)
        if plan.back_to_reservation:
            # Its region holds the reservation, which the relaunch fills.
            return await self._relaunch_in(
                handle, (handle.launched_resources.region,))
        if plan.other_regions and self.moves_at_once:
            return await self._relaunch_in(handle, plan.other_regions)
        return await self._recover_as_skypilot_does(handle)

    async def _promise_dropped(self) -> None:
        """Once the recovery returned, failed or was cancelled: instances its
        planning promised to its relaunch (a move back onto the reservation,
        or onto the next one) are promised to it no more
        (`back_to_reservation.relaunched`; until then other jobs' polls and
        launches count them taken, the cluster's claims not written yet).
        An error leaves the record to go stale."""
        # pylint: disable=no-member
        try:
            await asyncio.to_thread(back_to_reservation.relaunched,
                                    self.cluster_name)
        except Exception as e:  # pylint: disable=broad-except
            logger.debug(f'{self.cluster_name}: could not drop the promise of '
                         f'its move ({e}).')

    async def _recover_as_skypilot_does(self, handle: Any) -> float:
        """The SkyPilot strategy's own recovery, once no standby is left
        beside the cluster's bid (`leave_one_bid`)."""
        await asyncio.to_thread(leave_one_bid, handle)
        return await super().recover()  # type: ignore[misc]

    async def _leave_reservation(self, handle: Any,
                                 onto_next_reservation: bool) -> float:
        """The job's reservation ends within its lead time: its instances
        are given back (the cluster torn down) before it is relaunched in
        its region, onto the next reservation that has room, or by
        SkyPilot's strategy, onto spot (module docstring); FAILOVER would
        otherwise relaunch onto the reserved instances it still holds."""
        # pylint: disable=no-member
        if onto_next_reservation:
            return await self._relaunch_in(
                handle, (handle.launched_resources.region,))
        await asyncio.to_thread(self._cleanup_cluster)
        return await self._recover_as_skypilot_does(handle)

    async def _move_onto_standby(self, handle: Any, plan: RecoveryPlan
                                 ) -> float:
        """Steps 2 and 3 of the module docstring. If the move fails, the
        standby is made the cluster's bid once more before SkyPilot's
        strategy recovers instead: a promotion that failed on an API hiccup,
        or whose cancel of the old bid went through unconfirmed, then keeps
        the ready standby rather than cancel it for a relaunch."""
        # pylint: disable=no-member
        try:
            handle = await asyncio.to_thread(move_to_standby, handle, plan)
        except Exception as e:  # pylint: disable=broad-except
            logger.info(f'{self.cluster_name}: moving onto the standby failed '
                        f'({e}); making it the cluster\'s bid once more.')
            try:
                handle = await asyncio.to_thread(make_standby_the_clusters_bid,
                                                 handle, plan)
            except Exception as again:  # pylint: disable=broad-except
                logger.info(f'{self.cluster_name}: that failed too ({again}); '
                            'recovering as usual.')
                return await self._recover_as_skypilot_does(handle)
        try:
            await asyncio.to_thread(staging.submit_job, self.dag, handle)
            submitted_at = await self._wait_until_job_starts_on_cluster()
        except Exception as e:  # pylint: disable=broad-except
            logger.info(f'{self.cluster_name}: submitting the job on the '
                        f'standby failed ({e}).')
            submitted_at = None
        if submitted_at is not None:
            return submitted_at
        # A job it may have submitted must not run next to the relaunch's.
        await self._try_cancel_jobs()
        logger.info(f'{self.cluster_name}: launching the job onto the '
                    'standby instead.')
        return await self._launch_in(handle,
                                     (handle.launched_resources.region,))

    async def _relaunch_in(self, handle: Any, regions: Tuple[str, ...]
                           ) -> float:
        """Tears the preempted cluster down and launches the job in one of
        `regions` (the optimizer picks where a bid can win now). SkyPilot's
        own EAGER_NEXT_REGION means to block the preempted region, but the
        blocked resources do not travel to the API server that launches, and
        it blocks only when no region was requested."""
        # pylint: disable=no-member
        await asyncio.to_thread(self._cleanup_cluster)
        return await self._launch_in(handle, regions)

    async def _launch_in(self, handle: Any, regions: Tuple[str, ...]) -> float:
        """SkyPilot's launch of the job as the cluster's type in one of
        `regions` (onto the cluster when it is there: it adopts the
        standby); failing that, the strategy's own recovery."""
        # pylint: disable=no-member
        task = self.dag.tasks[0]
        requested = task.resources
        launched = handle.launched_resources
        task.set_resources({launched.copy(cloud=launched.cloud, region=region,
                                          zone=None) for region in regions})
        try:
            submitted_at = await self._launch(raise_on_failure=False,
                                              recovery=True)
        finally:
            task.set_resources(requested)
        if submitted_at is not None:
            return submitted_at
        logger.info(f'{self.cluster_name}: the launch in {", ".join(regions)} '
                    'failed; recovering as usual.')
        return await self._recover_as_skypilot_does(handle)


class EagerNextRegionWithStandby(
        _StandbyRecovery, recovery_strategy.EagerFailoverStrategyExecutor):
    """SkyPilot's EAGER_NEXT_REGION, recovering through a standby on Mithril."""

    moves_at_once = True


class FailoverWithStandby(_StandbyRecovery,
                          recovery_strategy.FailoverStrategyExecutor):
    """SkyPilot's FAILOVER, recovering through a standby on Mithril."""
