"""Managed-job recovery that starts at Mithril's preemption notice, and that
is not fooled by a preempted node that came back by itself.

SkyPilot's jobs controller asks the cloud about a single-node job's cluster
only once the job has failed; on Mithril that is after the 5-minute notice,
when the node is gone. This runtime (SkyPilot's `ManagedJobRuntime` extension
point) answers the controller's job-status poll for Mithril clusters: while
the cluster's bid is `Preempting` and the job has not finished, it reports
"no job status", which sends the controller into recovery at once. It does
the same once the bid has been preempted at all: a preempted bid goes back to
`Open` and Mithril re-allocates it by itself when the price falls, booting the
same node from its disk, where the job's record still says RUNNING although
its processes died with the node; SkyPilot would watch that job forever.
Before the controller recovers, `on_before_recovery` waits (bounded) until
the node has run the task's preemption hooks (`notice`), so their checkpoint
is saved, and records the cluster (`records`) so its relaunch bids at the
task's `recovery_limit_price`. The recovery itself (`strategy`) readies a
standby bid while the old node still trains, then cancels the old bid: no
bid is left Open.

A cluster on reserved instances has no bid: its notice is its
reservation's end, known in advance (`reservation_end`). Once the
reservation ends within the job's lead time the poll reports "recover now"
as at a notice; `on_before_recovery` tells the head node (its watcher runs
the preemption hooks, `MITHRIL_PREEMPTION_DEADLINE` the reservation's end),
waits for the hooks, keeps the lead for the relaunch (which then takes no
reservation ending within it: it goes on another the task lists that has
room, else on spot) and records the cluster, so a relaunch onto spot bids
at `recovery_limit_price`.

A job that burst onto a spot bid because its reservations were full, or not
active yet, moves back onto one once it has room (`back_to_reservation`):
the poll tells the head node, as at a reservation's end, and reports
"recover now" once the preemption hooks have run; the relaunch fills the
reservation.

A task can choose `config.mithril.recovery_starts: node_lost`: recovery then
starts once the notice is over and the node gone (on a reservation, once it
has ended), and the job never moves back onto its reservation by itself.
Every other method defers to SkyPilot (returns None).
"""

import dataclasses
import datetime
import enum
from typing import Any, Dict, List, Optional, Tuple

from sky import sky_logging

from sky_mithril import CLOUD_NAME
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.recovery import back_to_reservation
from sky_mithril.recovery import notice
from sky_mithril.recovery import policy
from sky_mithril.recovery import records
from sky_mithril.recovery import reservation_end
from sky_mithril.task import settings

logger = sky_logging.init_logger('sky.sky_mithril.jobs')


def provider_config(handle: Any) -> Dict[str, Any]:
    """The provider section of the cluster's config (API, project, limit)."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    return dict(global_user_state.get_cluster_yaml_dict(
        handle.cluster_yaml).get('provider') or {})


class Preemption(enum.Enum):
    """Where a Mithril cluster stands with respect to preemption: its bid,
    or the reservation its reserved instances belong to."""

    NONE = 'never preempted'
    NOTICE = 'in its preemption notice'
    NODE_LOST = 'preempted: the node was stopped'
    RESERVATION_ENDS = ('on a reservation that ends within the job\'s lead '
                        'time')
    RESERVATION_HAS_ROOM = ('on a spot bid while a reservation it names has '
                            'room (its preemption hooks have run)')


def is_mithril(handle: Any) -> bool:
    """Whether the cluster runs on Mithril."""
    cloud = getattr(getattr(handle, 'launched_resources', None), 'cloud', None)
    return cloud is not None and cloud.canonical_name() == CLOUD_NAME


@dataclasses.dataclass(frozen=True)
class BidState:
    """The cluster's bid as far as preemption goes."""

    preemption: Preemption
    bid_fid: str = ''
    preemptions: int = 0


def _bid_state(handle: Any) -> BidState:
    """Whether the cluster's bid is in a notice, or was preempted (its node
    stopped) since the last recovery handled it; NONE when unknown."""
    try:
        conn = cluster_bid.connect(provider_config(handle))
        bid = cluster_bid.live_bid(conn, handle.cluster_name_on_cloud)
        if bid is None:
            return BidState(Preemption.NONE)
        preemptions = sum(
            e.event_type == models.BidEventType.PREEMPTED
            for e in conn.client.get_bid_history(bid.fid).events)
    except cluster_bid.SeveralLiveBidsError as e:
        # Each of them may bill for as long as the job runs: say so every
        # time the controller asks, in its log, which the user reads.
        logger.warning(
            f'{handle.cluster_name}: {e} Every one of them may bill for as '
            'long as the job runs, and preemption recovery cannot tell '
            'which is the job\'s: `sky jobs cancel` the job, or cancel the '
            'extra bid with `sky-mithril instance delete <fid> '
            '--include-sky-clusters`.')
        return BidState(Preemption.NONE)
    except (errors.MithrilAPIError, RuntimeError, OSError) as e:
        logger.debug(f'Mithril preemption check failed for '
                     f'{handle.cluster_name}: {e}')
        return BidState(Preemption.NONE)
    if bid.status == models.BidState.PREEMPTING:
        return BidState(Preemption.NOTICE, bid.fid, preemptions)
    if preemptions > records.preemptions_recovered(bid.fid):
        return BidState(Preemption.NODE_LOST, bid.fid, preemptions)
    return BidState(Preemption.NONE, bid.fid, preemptions)


def in_notice(handle: Any) -> bool:
    """Whether the cluster's bid is in its preemption notice now (one
    request; False when unknown). The serve controller asks it of every
    ready replica each probe round (`serve_notice`)."""
    try:
        bid = cluster_bid.live_bid(cluster_bid.connect(provider_config(handle)),
                                   handle.cluster_name_on_cloud)
    except (cluster_bid.SeveralLiveBidsError, errors.MithrilAPIError,
            RuntimeError, OSError) as e:
        logger.debug(f'Mithril notice check failed for '
                     f'{handle.cluster_name}: {e}')
        return False
    return bid is not None and bid.status == models.BidState.PREEMPTING


def _reservation_ending(handle: Any
                        ) -> Optional[Tuple[models.Reservation,
                                            datetime.timedelta]]:
    """`reservation_end.ending` for the cluster; None when unknown."""
    try:
        return reservation_end.ending(handle, provider_config(handle))
    except (errors.MithrilAPIError, RuntimeError, OSError) as e:
        logger.debug(f'Mithril reservation check failed for '
                     f'{handle.cluster_name}: {e}')
        return None


def _recover_now(handle: Any, may_move: bool = True
                 ) -> Optional[Preemption]:
    """The preemption that calls for recovery now under the task's policy
    (`recovery_starts`), or None; a move back onto the reservation only when
    `may_move` (the controller's poll, not `sky jobs logs`)."""
    if handle is None or not is_mithril(handle):
        return None
    sections = settings.sections_from_skypilot(
        handle.launched_resources.cluster_config_overrides)
    at_notice = (policy.resolve_recovery_starts(*sections) ==
                 policy.RECOVERY_AT_NOTICE)
    if at_notice and _reservation_ending(handle) is not None:
        return Preemption.RESERVATION_ENDS
    state = _bid_state(handle).preemption
    if state == Preemption.NODE_LOST or (state == Preemption.NOTICE and
                                         at_notice):
        return state
    if at_notice and may_move and _moves_back(handle):
        return Preemption.RESERVATION_HAS_ROOM
    return None


def _moves_back(handle: Any) -> bool:
    """`back_to_reservation.ready` for the cluster; False when unknown (an
    error here must not break SkyPilot's status poll)."""
    try:
        return back_to_reservation.ready(handle, provider_config(handle))
    except Exception as e:  # pylint: disable=broad-except
        logger.debug(f'Mithril reservation room check failed for '
                     f'{handle.cluster_name}: {e}')
        return False


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


def _leave_reservation(handle: Any, reservation: models.Reservation,
                       lead: datetime.timedelta) -> None:
    """Before the recovery of a job whose reservation ends within its lead
    time: the lead is kept for the relaunch, the cluster recorded as
    recovering (its relaunch bids at the recovery limit), and the head
    node told, whose watcher runs the task's preemption hooks (waited for)."""
    reservation_end.remember_lead(handle.cluster_name, lead)
    records.mark(handle.cluster_name, '', 0)
    logger.info(f'{handle.cluster_name}: reservation {reservation.name} '
                f'({reservation.fid}) ends at '
                f'{reservation.end_time.isoformat()}, within the job\'s lead '
                f'time ({lead.total_seconds() / 60:.0f} min); moving the job '
                'off it now.')
    try:
        notice.write_reservation_end(handle, reservation.end_time)
    except Exception as e:  # pylint: disable=broad-except
        logger.info(f'{handle.cluster_name}: could not tell the node its '
                    f'reservation ends ({e}); recovering without its '
                    'preemption hooks.')
        return
    waited = notice.wait_for_preemption_hooks(handle)
    logger.info(f'{handle.cluster_name}: preemption hooks done after '
                f'{waited:.0f}s; recovering.')


class MithrilJobRuntime:
    """SkyPilot's ManagedJobRuntime for Mithril clusters (module docstring)."""

    def get_job_status(self, handle: Any, cluster_name: str,
                       returncode: Optional[int] = None
                       ) -> Optional[Tuple[Optional[Any], Optional[str]]]:
        # With a returncode, `sky jobs logs` asks: it never starts a move.
        state = _recover_now(handle, may_move=returncode is None)
        if state is None:
            return None
        # In a notice the node still runs: a job that just finished counts.
        finished = (_finished_status(handle) if state in (
            Preemption.NOTICE, Preemption.RESERVATION_ENDS,
            Preemption.RESERVATION_HAS_ROOM) else None)
        if finished is not None:
            return finished, None
        what = ('Mithril bid of' if state in (Preemption.NOTICE,
                                              Preemption.NODE_LOST)
                else 'Mithril cluster')
        logger.info(f'{what} {cluster_name} is {state.value}: starting the '
                    'recovery now.')
        return None, None

    def on_before_recovery(self, handle: Any, backend: Any, job_id: int,
                           task_id: Optional[int],
                           exit_codes: Optional[List[int]] = None,
                           job_id_on_pool_cluster: Optional[int] = None) -> None:
        del backend, job_id, task_id, exit_codes, job_id_on_pool_cluster
        if handle is None or not is_mithril(handle):
            return None
        ending = _reservation_ending(handle)
        if ending is not None:
            _leave_reservation(handle, *ending)
            return None
        # Its hooks have run (the poll waited for them before it recovered).
        moving = back_to_reservation.recovering(handle.cluster_name)
        state = _bid_state(handle)
        # A move is no preemption: a relaunch that loses the reservation
        # bids at the normal limit, not the recovery limit.
        if state.bid_fid and not (moving and
                                  state.preemption == Preemption.NONE):
            records.mark(handle.cluster_name, state.bid_fid,
                            state.preemptions)
        if state.preemption == Preemption.NOTICE:
            waited = notice.wait_for_preemption_hooks(handle)
            logger.info(f'{handle.cluster_name}: preemption hooks done after '
                        f'{waited:.0f}s; recovering.')
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
