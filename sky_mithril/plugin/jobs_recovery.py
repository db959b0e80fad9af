"""Managed-job recovery through a standby bid: during Mithril's preemption
notice the replacement node is won, booted and given SkyPilot's runtime
while the preempted node still trains; then the job moves over.

SkyPilot's built-in recovery strategies tear the preempted cluster down and
launch it again from scratch: the auction, the boot, the runtime setup and
Ray's start all happen after training stopped (~40 s of the relaunch here,
minutes for a real GPU node's boot). sky-mithril puts its own subclasses in
SkyPilot's registry under the same names (`EAGER_NEXT_REGION`, the default,
and `FAILOVER`); for other clouds, or when no standby can be had, they are
SkyPilot's strategies unchanged. For a Mithril cluster in its notice:

1. A standby bid is placed with the cluster's name, region, instance type,
   nodes, SSH keys and file shares, at the relaunch's limit
   (`recovery_limit_price` if set). It has until the notice ends to win; it
   then boots, and SkyPilot's own setup steps run on it: file mounts, the
   runtime, Ray, the skylet. Meanwhile the job keeps training on the old node
   (its preemption hooks have run; `jobs_runtime`).
2. The job is cancelled on the old node (its last step is on the volume),
   the old bid is cancelled, and the standby becomes the cluster's bid
   (`cluster_bid.promote_standby`).
3. SkyPilot launches the job on the same cluster, pinned to the standby's
   region: the launch adopts the standby, finds the runtime set up and Ray
   running, and only syncs files, runs the setup and submits the job.

No standby is placed when the job's volumes include a block volume (it can
be attached to one bid at a time), for jobs on a pool, or when recovery
starts only once the node is lost. If the standby cannot be ready, it is
cancelled and SkyPilot's strategy recovers as usual. Both bids live at once
only within the notice; `sky down` cancels both (same name).
"""

import asyncio
import datetime
import os
import tempfile
import time
from decimal import Decimal
from typing import Any, Optional

from sky import global_user_state
from sky import sky_logging
from sky.jobs import recovery_strategy

from sky_mithril import config
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.plugin import jobs_runtime
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import market_timing

logger = sky_logging.init_logger('sky.sky_mithril.jobs')

# The standby must have won the auction by the end of the notice. Mithril's
# notice lasts this long; assumed when its end cannot be read.
DEFAULT_NOTICE_SECONDS = 300.0


def _notice_end(conn: Any, bid: models.Bid) -> float:
    """When the bid's notice ends, as a local epoch."""
    try:
        [instance_fid, *_] = bid.instances
        end = conn.client.get_instance_status(instance_fid).end_time
    except (ValueError, errors.MithrilAPIError):
        end = None
    if end is not None:
        local = market_timing.MarketTiming.load(
            conn.credentials.api_url).to_local(end)
        if local is not None:
            return local
        if end.tzinfo is None:
            end = end.replace(tzinfo=datetime.timezone.utc)
        return end.timestamp()
    return time.time() + DEFAULT_NOTICE_SECONDS


def _relaunch_limit(handle: Any, provider_config: Any) -> Decimal:
    """The limit the relaunch bids at: `recovery_limit_price` if the task
    sets one, else the cluster's own."""
    sections = config.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    limit = config.LimitPrice(Decimal(provider_config['limit_price_per_hour']),
                              'the cluster\'s limit price')
    return config.resolve_recovery_limit(limit, *sections).per_hour


def _has_block_volume(conn: Any, bid: models.Bid) -> bool:
    fids = set(bid.launch_specification.volumes)
    return bool(fids) and any(
        v.fid in fids and v.interface == models.VolumeInterface.BLOCK
        for v in conn.client.list_volumes(conn.project_id, bid.region))


def _set_up_runtime(handle: Any, info: Any) -> None:
    """SkyPilot's own post-provision steps, on the standby's nodes: what the
    relaunch would otherwise do after training stopped (for a real GPU node
    that includes installing SkyPilot's runtime). The files they install
    were staged by the cluster's launch in a local directory that is gone
    since; the old node still holds them, so they come from there. The
    relaunch then finds the runtime installed and Ray running."""
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
    with tempfile.TemporaryDirectory() as staged, \
            provision_logging.setup_provision_logging(log_dir):
        remote_dirs = list(yaml_config.get('file_mounts', {}))
        mounts = {}
        for n, remote in enumerate(remote_dirs):
            local = os.path.join(staged, str(n))
            handle.get_command_runners()[0].rsync(
                f'{remote.rstrip("/")}/', local, up=False, stream_logs=False)
            mounts[remote] = local
        provisioner.wait_for_ssh(info, credentials)
        instance_setup.internal_file_mounts(name, mounts, info, credentials)
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


def prepare_standby(handle: Any) -> Optional[str]:
    """Places the cluster's standby and readies it (module docstring);
    its fid, or None when there is none to be had."""
    if handle is None or not jobs_runtime.is_mithril(handle):
        return None
    sections = config.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    if config.resolve_recovery_starts(*sections) != config.RECOVERY_AT_NOTICE:
        return None
    provider_config = jobs_runtime.provider_config(handle)
    name = handle.cluster_name_on_cloud
    conn = cluster_bid.connect(provider_config)
    bid = cluster_bid.live_bid(conn, name)
    if bid is None or bid.status != models.BidState.PREEMPTING:
        return None
    if _has_block_volume(conn, bid):
        logger.info(f'{handle.cluster_name}: a block volume attaches to one '
                    'bid at a time; no standby, relaunching after the node.')
        return None
    started = time.time()
    standby = cluster_bid.place_standby(conn, bid,
                                        _relaunch_limit(handle, provider_config))
    left = _notice_end(conn, bid) - time.time()
    try:
        standby.wait_until_ready({**provider_config,
                                  'provision_timeout': max(left, 1.0)})
        _set_up_runtime(handle, cluster_bid.cluster_info(conn, standby.bid,
                                                         provider_config))
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'{handle.cluster_name}: standby {standby.bid.fid} is not '
                    f'ready ({e}); cancelling it and recovering as usual.')
        cluster_bid.drop_standby(conn, name, standby.bid.fid)
        return None
    logger.info(f'{handle.cluster_name}: standby {standby.bid.fid} ready '
                f'{time.time() - started:.0f}s after the recovery started.')
    return standby.bid.fid


def move_to_standby(handle: Any, standby_fid: str) -> None:
    """Cancels the job on the old node, if it is still there, then makes the
    standby the cluster's bid (module docstring, step 2). Unlike SkyPilot's
    own job cancel, a node that cannot be reached does not tear the cluster
    (and so the standby) down: its bid is cancelled next anyway."""
    from sky import backends  # pylint: disable=import-outside-toplevel
    try:
        backends.CloudVmRayBackend().cancel_jobs(handle, jobs=None,
                                                 cancel_all=True)
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'{handle.cluster_name}: could not cancel the job on the '
                    f'old node ({e}); cancelling its bid.')
    provider_config = jobs_runtime.provider_config(handle)
    conn = cluster_bid.connect(provider_config)
    cluster_bid.promote_standby(conn, handle.cluster_name_on_cloud, standby_fid)
    # SkyPilot's record of the cluster now points at the standby's nodes, so
    # the relaunch's status check reaches them instead of the old node.
    handle.update_cluster_ips(cluster_info=cluster_bid.cluster_info(
        conn, cluster_bid.live_bid(conn, handle.cluster_name_on_cloud),
        provider_config))
    global_user_state.update_cluster_handle(handle.cluster_name, handle)


class _StandbyRecovery:
    """Recovers through a standby when one can be had, else as the SkyPilot
    strategy it is mixed into."""

    async def recover(self) -> float:
        # pylint: disable=no-member
        handle = await asyncio.to_thread(
            global_user_state.get_handle_from_cluster_name, self.cluster_name)
        standby_fid = None
        if self.pool is None:
            try:
                standby_fid = await asyncio.to_thread(prepare_standby, handle)
            except Exception as e:  # pylint: disable=broad-except
                # Whatever it placed is cancelled by then (or by the
                # teardown of SkyPilot's recovery: same name).
                logger.warning(f'{self.cluster_name}: no standby ({e}).')
        if standby_fid is None:
            return await super().recover()  # type: ignore[misc]
        await asyncio.to_thread(move_to_standby, handle, standby_fid)
        task = self.dag.tasks[0]
        requested = task.resources
        launched = handle.launched_resources
        task.set_resources({launched.copy(cloud=launched.cloud,
                                          region=launched.region, zone=None)})
        try:
            submitted_at = await self._launch(raise_on_failure=False,
                                              recovery=True)
        finally:
            task.set_resources(requested)
        if submitted_at is not None:
            return submitted_at
        logger.info(f'{self.cluster_name}: the launch onto the standby '
                    'failed; recovering as usual.')
        return await super().recover()  # type: ignore[misc]


class EagerNextRegionWithStandby(
        _StandbyRecovery, recovery_strategy.EagerFailoverStrategyExecutor):
    """SkyPilot's EAGER_NEXT_REGION, recovering through a standby on Mithril."""


class FailoverWithStandby(_StandbyRecovery,
                          recovery_strategy.FailoverStrategyExecutor):
    """SkyPilot's FAILOVER, recovering through a standby on Mithril."""
