"""Managed-job recovery that starts at Mithril's preemption notice.

SkyPilot's jobs controller asks the cloud about a single-node job's cluster
only once the job has failed; on Mithril that is after the 5-minute notice,
when the node is gone. This runtime (SkyPilot's `ManagedJobRuntime` extension
point) answers the controller's job-status poll for Mithril clusters: while
the cluster's bid is `Preempting` and the job has not finished, it reports
"no job status", which sends the controller into recovery at once. Before the
controller tears the old cluster down, `on_before_recovery` waits (bounded)
until the node has run the task's preemption hooks, so their checkpoint is
saved, and records the cluster so its relaunch bids at the task's
`recovery_limit_price`. SkyPilot's teardown then cancels the old bid: there
are never two clusters for one job, and no bid is left Open.

A task opts out with `config.mithril.recovery_starts: node_lost`. Every other
method defers to SkyPilot (returns None).
"""

import time
from typing import Any, Dict, List, Optional, Tuple

from sky import sky_logging

from sky_mithril import config
from sky_mithril import preemption_notice
from sky_mithril import recoveries
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid

logger = sky_logging.init_logger('sky.sky_mithril.jobs')

CLOUD_NAME = 'mithril'
# How long the controller waits for the node's preemption hooks at most.
HOOKS_WAIT_SECONDS = 120.0
HOOKS_POLL_SECONDS = 2.0


def _provider_config(handle: Any) -> Dict[str, Any]:
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    return dict(global_user_state.get_cluster_yaml_dict(
        handle.cluster_yaml).get('provider') or {})


def _in_notice(handle: Any) -> bool:
    """Whether `handle` is a Mithril cluster whose bid is in its preemption
    notice and whose task wants recovery to start then."""
    resources = getattr(handle, 'launched_resources', None)
    cloud = getattr(resources, 'cloud', None)
    if cloud is None or cloud.canonical_name() != CLOUD_NAME:
        return False
    sections = config.sections_from_skypilot(resources.cluster_config_overrides)
    if config.resolve_recovery_starts(*sections) != config.RECOVERY_AT_NOTICE:
        return False
    try:
        conn = cluster_bid.connect(_provider_config(handle))
        bid = cluster_bid.live_bid(conn, handle.cluster_name_on_cloud)
    except (errors.MithrilAPIError, RuntimeError, OSError) as e:
        logger.debug(f'Mithril notice check failed for '
                     f'{handle.cluster_name}: {e}')
        return False
    return bid is not None and bid.status == models.BidState.PREEMPTING


def _finished_status(handle: Any) -> Optional[Any]:
    """The job's status on the cluster if it already ended (e.g. it finished
    during the notice), else None."""
    from sky import backends  # pylint: disable=import-outside-toplevel
    try:
        statuses = backends.CloudVmRayBackend().get_job_status(
            handle, job_ids=None, stream_logs=False)
    except Exception:  # pylint: disable=broad-except
        return None
    status = next(iter(statuses.values()), None)
    return status if status is not None and status.is_terminal() else None


def _wait_for_preemption_hooks(handle: Any) -> float:
    """Waits until the head node has run the task's preemption hooks (or
    HOOKS_WAIT_SECONDS); returns the seconds waited."""
    started = time.monotonic()
    try:
        runner = handle.get_command_runners()[0]
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'Cannot reach {handle.cluster_name} to wait for its '
                    f'preemption hooks: {e}')
        return 0.0
    while time.monotonic() - started < HOOKS_WAIT_SECONDS:
        try:
            returncode = runner.run(f'test -f {preemption_notice.HOOKS_DONE_FILE}',
                                    stream_logs=False)
        except Exception:  # pylint: disable=broad-except
            returncode = 1
        if returncode == 0:
            break
        time.sleep(HOOKS_POLL_SECONDS)
    return time.monotonic() - started


class MithrilJobRuntime:
    """SkyPilot's ManagedJobRuntime for Mithril clusters (module docstring)."""

    def get_job_status(self, handle: Any, cluster_name: str,
                       returncode: Optional[int] = None
                       ) -> Optional[Tuple[Optional[Any], Optional[str]]]:
        del returncode
        if handle is None or not _in_notice(handle):
            return None
        finished = _finished_status(handle)
        if finished is not None:
            return finished, None
        logger.info(f'Mithril preemption notice on {cluster_name}: starting '
                    'the recovery now, while the node still runs.')
        return None, None

    def on_before_recovery(self, handle: Any, backend: Any, job_id: int,
                           task_id: Optional[int],
                           exit_codes: Optional[List[int]] = None,
                           job_id_on_pool_cluster: Optional[int] = None) -> None:
        del backend, job_id, task_id, exit_codes, job_id_on_pool_cluster
        if handle is None:
            return None
        resources = getattr(handle, 'launched_resources', None)
        cloud = getattr(resources, 'cloud', None)
        if cloud is None or cloud.canonical_name() != CLOUD_NAME:
            return None
        recoveries.mark(handle.cluster_name)
        if _in_notice(handle):
            waited = _wait_for_preemption_hooks(handle)
            logger.info(f'{handle.cluster_name}: preemption hooks done after '
                        f'{waited:.0f}s; tearing the node down.')
        return None

    # SkyPilot calls the rest of the extension point directly; None defers
    # to its default behaviour.

    def get_job_submitted_at(self, handle: Any, cluster_name: str) -> None:
        del handle, cluster_name

    def get_job_ended_at(self, handle: Any, cluster_name: str) -> None:
        del handle, cluster_name

    def get_exit_codes(self, handle: Any) -> None:
        del handle

    def download_logs(self, handle: Any, job_id: int,
                      task_id: Optional[int]) -> None:
        del handle, job_id, task_id

    def tail_logs(self, handle: Any, **kwargs: Any) -> None:
        del handle, kwargs

    def job_group_envs(self, tasks: List[Any], job_id: int) -> None:
        del tasks, job_id

    def k8s_dns_addresses_for_task(self, task: Any, job_id: int) -> None:
        del task, job_id

    def k8s_dns_addresses_for_handle(self, handle: Any) -> None:
        del handle
