"""Managed-job recovery through a standby bid: during Mithril's preemption
notice the replacement node is won, booted and made ready to run the job
while the preempted node still trains; then the job moves over.

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
   own launch steps up to the run happen on it: the runtime, Ray and the
   skylet; the task's workdir, file mounts and setup; autodown and the
   task's hooks. Meanwhile the job keeps training on the old node (its
   preemption hooks have run; `jobs_runtime`). Once the notice is over,
   at whatever stage the standby is, it takes the old bid's place (which
   is cancelled: back to Open, it could win a second node); if it has not
   won yet, it waits in the auction as a relaunch would, up to the
   cluster's `provision_timeout`.
2. The job is cancelled on the old node (its last step is on the volume),
   the old bid is cancelled, and the standby becomes the cluster's bid
   (`cluster_bid.promote_standby`); SkyPilot's record of the cluster points
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
"""

import asyncio
import copy
import dataclasses
import os
import tempfile
import threading
import time
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from sky import execution
from sky import global_user_state
from sky import sky_logging
from sky.jobs import recovery_strategy

from sky_mithril import CLOUD_NAME
from sky_mithril.task import settings
from sky_mithril.api import models
from sky_mithril.plugin import jobs_runtime
from sky_mithril.provision import cluster_bid

logger = sky_logging.init_logger('sky.sky_mithril.jobs')

def _relaunch_limit(handle: Any, provider_config: Any) -> Decimal:
    """The limit the relaunch bids at: `recovery_limit_price` if the task
    sets one, else the cluster's own."""
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    limit = settings.LimitPrice(Decimal(provider_config['limit_price_per_hour']),
                              'the cluster\'s limit price')
    return settings.resolve_recovery_limit(limit, *sections).per_hour


def _has_block_volume(conn: Any, bid: models.Bid) -> bool:
    fids = set(bid.launch_specification.volumes)
    return bool(fids) and any(
        v.fid in fids and v.interface == models.VolumeInterface.BLOCK
        for v in conn.client.list_volumes(conn.project_id, bid.region))


def _fetch_runtime_files(handle: Any, into: str) -> Dict[str, str]:
    """The files SkyPilot's runtime setup installs on a node (the cluster
    launch's file mounts), copied from the old node into `into` while it is
    reachable: the launch staged them in a local directory that is gone
    since. Remote path -> local copy."""
    yaml_config = global_user_state.get_cluster_yaml_dict(handle.cluster_yaml)
    mounts = {}
    for n, remote in enumerate(yaml_config.get('file_mounts', {})):
        local = os.path.join(into, str(n))
        handle.get_command_runners()[0].rsync(
            f'{remote.rstrip("/")}/', local, up=False, stream_logs=False)
        mounts[remote] = local
    return mounts


def _set_up_runtime(handle: Any, runtime_files: Dict[str, str],
                    info: Any) -> None:
    """SkyPilot's own post-provision steps, on the standby's nodes, with the
    `runtime_files` fetched from the old node: what the relaunch would
    otherwise do after training stopped (for a real GPU node that includes
    installing SkyPilot's runtime). The relaunch then finds the runtime
    installed and Ray running."""
    # pylint: disable=import-outside-toplevel
    from sky.backends import backend_utils
    from sky.provision import instance_setup
    from sky.provision import logging as provision_logging
    from sky.provision import provisioner
    from sky.skylet import constants
    from sky.utils import resources_utils
    yaml_config = global_user_state.get_cluster_yaml_dict(handle.cluster_yaml)
    credentials = backend_utils.ssh_credential_from_yaml(
        handle.cluster_yaml, ssh_user=info.ssh_user)
    name = handle.cluster_name_on_cloud
    custom_resource = resources_utils.make_ray_custom_resources_str(
        handle.launched_resources.accelerators)
    log_dir = os.path.join(os.path.expanduser('~/sky_logs'), 'mithril-standby',
                           f'{name}-{int(time.time())}')
    with provision_logging.setup_provision_logging(log_dir):
        provisioner.wait_for_ssh(info, credentials)
        instance_setup.internal_file_mounts(name, runtime_files, info,
                                            credentials)
        instance_setup.setup_runtime_on_cluster(
            name, yaml_config['setup_commands'], info, credentials)
        instance_setup.start_ray_on_head_node(
            name, custom_resource=custom_resource, cluster_info=info,
            ssh_credentials=credentials)
        instance_setup.start_ray_on_worker_nodes(
            name, no_restart=False, custom_resource=custom_resource,
            ray_port=constants.SKY_REMOTE_RAY_PORT, cluster_info=info,
            ssh_credentials=credentials)
        instance_setup.start_skylet_on_head_node(
            resources_utils.ClusterName(handle.cluster_name, name), info,
            credentials, handle.launched_resources)


def _run_launch_stages(dag: Any, handle: Any, stages: List[Any]) -> None:
    """SkyPilot's own launch `stages` for the job, on the nodes `handle`
    names, with the jobs controller's launch settings (autodown as its
    safety net, the task's hooks). On a copy of the job's DAG: the stages
    write the launch's autostop settings into its resources."""
    # pylint: disable=import-outside-toplevel
    from sky import backends
    from sky.server.requests import request_names
    execution._execute(  # pylint: disable=protected-access
        entrypoint=copy.deepcopy(dag),
        stream_logs=False,
        handle=handle,
        backend=backends.CloudVmRayBackend(),
        stages=stages,
        cluster_name=handle.cluster_name,
        down=True,
        idle_minutes_to_autostop=recovery_strategy._AUTODOWN_MINUTES,  # pylint: disable=protected-access
        _request_name=request_names.AdminPolicyRequestName.CLUSTER_LAUNCH,
        _is_launched_by_jobs_controller=True)


def _pointed_at(handle: Any, info: Any) -> Any:
    """A copy of SkyPilot's record of the cluster, pointed at `info`'s
    nodes: a new object, since SkyPilot caches a record's SSH runners by the
    object."""
    pointed = copy.deepcopy(handle)
    pointed.update_cluster_ips(cluster_info=info)
    return pointed


def _stage_job(dag: Any, handle: Any, info: Any) -> None:
    """The job's launch steps before its run, on the standby's nodes: the
    workdir, the file mounts, the task's setup, autodown and the task's
    hooks (which the node's preemption watcher reads). After the switch only
    the submission is left. SkyPilot's record of the cluster still names
    the old node, so this works on a copy pointed at the standby; it talks
    SSH, because the cluster's skylet tunnel leads to the old head."""
    from sky.execution import Stage  # pylint: disable=import-outside-toplevel
    standby = _pointed_at(handle, info)
    standby.is_grpc_enabled = False
    _run_launch_stages(dag, standby, [Stage.SYNC_WORKDIR,
                                      Stage.SYNC_FILE_MOUNTS, Stage.SETUP,
                                      Stage.PRE_EXEC])


def submit_job(dag: Any, handle: Any) -> None:
    """Submits the job on the cluster's (staged) standby, as `sky exec`
    does, without `sky exec`'s status refresh of a cluster that was just
    checked."""
    from sky.execution import Stage  # pylint: disable=import-outside-toplevel
    _run_launch_stages(dag, handle, [Stage.EXEC])


@dataclasses.dataclass(frozen=True)
class RecoveryPlan:
    """How a Mithril job recovers: onto a ready standby (`standby_fid`), by
    moving to one of `other_regions` at once (the job has no Mithril volume
    and cannot win its region now), or, with neither, as SkyPilot's
    strategy does."""

    standby_fid: Optional[str] = None
    standby_info: Any = None  # its nodes, as SkyPilot's ClusterInfo
    old_bid_fid: Optional[str] = None
    other_regions: Tuple[str, ...] = ()


def _other_regions(handle: Any) -> Tuple[str, ...]:
    """The regions, other than the cluster's, that offer its instance type
    (the catalog with live prices laid over it)."""
    from sky import catalog  # pylint: disable=import-outside-toplevel
    launched = handle.launched_resources
    offered = catalog.get_region_zones_for_instance_type(
        launched.instance_type, launched.use_spot, clouds=CLOUD_NAME)
    return tuple(sorted({r.name for r in offered} - {launched.region}))


class _StandbyWatch(threading.Thread):
    """Watches the two bids while the standby is made ready (which may
    outlast the notice: the auction, the boot, the task's setup). Once the
    old bid's notice is over, the standby takes its place: the old bid is
    cancelled, since back to Open it could win a second node. If the job is
    cancelled (`cancelled`), the standby is cancelled, which ends its wait
    or setup."""

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
                if self.cancelled.is_set():
                    cluster_bid.drop_standby(self.conn, self.cluster,
                                             self.standby_fid)
                    return
                if not replaced and self.conn.client.get_bid(
                        self.old_fid).status != models.BidState.PREEMPTING:
                    cluster_bid.promote_standby(self.conn, self.cluster,
                                                self.standby_fid)
                    replaced = True
                    logger.info(f'{self.cluster}: the notice is over; '
                                f'standby {self.standby_fid} is the '
                                'cluster\'s bid now.')
            except Exception as e:  # pylint: disable=broad-except
                logger.info(f'{self.cluster}: watching the standby: {e}')

    def __enter__(self) -> '_StandbyWatch':
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.join()


def plan_recovery(handle: Any, dag: Any,
                  cancelled: threading.Event) -> RecoveryPlan:
    """Places the cluster's standby and readies it (module docstring), or
    says the job moves instead."""
    if handle is None or not jobs_runtime.is_mithril(handle):
        return RecoveryPlan()
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    if settings.resolve_recovery_starts(*sections) != settings.RECOVERY_AT_NOTICE:
        return RecoveryPlan()
    provider_config = jobs_runtime.provider_config(handle)
    name = handle.cluster_name_on_cloud
    conn = cluster_bid.connect(provider_config)
    bid = cluster_bid.live_bid(conn, name)
    if bid is None or bid.status != models.BidState.PREEMPTING:
        return RecoveryPlan()
    if _has_block_volume(conn, bid):
        logger.info(f'{handle.cluster_name}: a block volume attaches to one '
                    'bid at a time; no standby.')
        return RecoveryPlan()
    limit = _relaunch_limit(handle, provider_config)
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
    standby = cluster_bid.place_standby(conn, bid, limit)
    try:
        with _StandbyWatch(conn, name, bid.fid, standby.bid.fid, cancelled), \
                tempfile.TemporaryDirectory() as fetched:
            runtime_files = _fetch_runtime_files(handle, fetched)
            standby.wait_until_ready(provider_config)
            info = cluster_bid.cluster_info(conn, standby.bid, provider_config)
            _set_up_runtime(handle, runtime_files, info)
            _stage_job(dag, handle, info)
        if cancelled.is_set():
            raise RuntimeError('the job was cancelled')
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'{handle.cluster_name}: standby {standby.bid.fid} is not '
                    f'ready ({e}); cancelling it and recovering as usual.')
        cluster_bid.drop_standby(conn, name, standby.bid.fid)
        return RecoveryPlan()
    logger.info(f'{handle.cluster_name}: standby {standby.bid.fid} ready '
                f'{time.time() - started:.0f}s after the recovery started.')
    return RecoveryPlan(standby_fid=standby.bid.fid, standby_info=info,
                        old_bid_fid=bid.fid)


def move_to_standby(handle: Any, plan: RecoveryPlan) -> Any:
    """Cancels the job on the old node, if it is still there, then makes the
    standby the cluster's bid (module docstring, step 2); SkyPilot's record
    of the cluster, now pointed at the standby's nodes. Unlike SkyPilot's
    own job cancel, a node that cannot be reached does not tear the cluster
    (and so the standby) down: its bid is cancelled next anyway."""
    from sky import backends  # pylint: disable=import-outside-toplevel
    standby_fid, old_fid = plan.standby_fid, plan.old_bid_fid
    assert standby_fid is not None and old_fid is not None, plan
    conn = cluster_bid.connect(jobs_runtime.provider_config(handle))
    if conn.client.get_bid(old_fid).status == models.BidState.PREEMPTING:
        try:
            backends.CloudVmRayBackend().cancel_jobs(handle, jobs=None,
                                                     cancel_all=True)
        except Exception as e:  # pylint: disable=broad-except
            logger.info(f'{handle.cluster_name}: could not cancel the job on '
                        f'the old node ({e}); cancelling its bid.')
    cluster_bid.promote_standby(conn, handle.cluster_name_on_cloud, standby_fid)
    # The cluster's skylet tunnel (to the old head) is closed; the next call
    # to the skylet opens one to the standby's.
    moved = _pointed_at(handle, plan.standby_info)
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
        plan = RecoveryPlan()
        cancelled = threading.Event()
        if self.pool is None:
            try:
                plan = await asyncio.to_thread(plan_recovery, handle, self.dag,
                                               cancelled)
            except asyncio.CancelledError:
                # The job is cancelled; the thread goes on until its standby
                # watch cancels the standby.
                cancelled.set()
                raise
            except Exception as e:  # pylint: disable=broad-except
                # Whatever it placed is cancelled by then (or by the
                # teardown of SkyPilot's recovery: same name).
                logger.warning(f'{self.cluster_name}: no standby ({e}).')
        if plan.standby_fid is not None:
            return await self._move_onto_standby(handle, plan)
        if plan.other_regions and self.moves_at_once:
            return await self._relaunch_in(handle, plan.other_regions)
        return await super().recover()  # type: ignore[misc]

    async def _move_onto_standby(self, handle: Any, plan: RecoveryPlan
                                 ) -> float:
        """Steps 2 and 3 of the module docstring."""
        # pylint: disable=no-member
        try:
            handle = await asyncio.to_thread(move_to_standby, handle, plan)
        except Exception as e:  # pylint: disable=broad-except
            # The strategy's recovery tears the cluster (both bids) down.
            logger.info(f'{self.cluster_name}: moving onto the standby failed '
                        f'({e}); recovering as usual.')
            return await super().recover()  # type: ignore[misc]
        try:
            await asyncio.to_thread(submit_job, self.dag, handle)
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
        return await super().recover()  # type: ignore[misc]


class EagerNextRegionWithStandby(
        _StandbyRecovery, recovery_strategy.EagerFailoverStrategyExecutor):
    """SkyPilot's EAGER_NEXT_REGION, recovering through a standby on Mithril."""

    moves_at_once = True


class FailoverWithStandby(_StandbyRecovery,
                          recovery_strategy.FailoverStrategyExecutor):
    """SkyPilot's FAILOVER, recovering through a standby on Mithril."""
