"""The `Mithril` cloud SkyPilot's optimizer, backend and `sky check` talk to.

It subclasses the built-in class and takes over its name
(`sky.clouds.mithril.Mithril`), so every place SkyPilot names the built-in —
`isinstance` checks, template lookup by type, the built-in's own `Mithril()`
calls, and handles unpickled by a client that has no plugin — resolves to it.
"""

import dataclasses
import datetime
import hashlib
import threading
import time
import typing
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from sky import clouds
from sky import exceptions
from sky import sky_logging
from sky.utils import common_utils
from sky.clouds import mithril as builtin_mithril
from sky.utils import resources_utils

from sky_mithril.catalog import mithril_catalog
from sky_mithril import CLOUD_NAME
from sky_mithril.task import settings
from sky_mithril.account import connection
from sky_mithril.account import credentials as credentials_lib
from sky_mithril.account import node_keys
from sky_mithril.catalog import live_prices
from sky_mithril import money
from sky_mithril.task import mithril_volumes
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import public_ports
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes
from sky_mithril.recovery import back_to_reservation
from sky_mithril.recovery import policy
from sky_mithril.recovery import records
from sky_mithril.recovery import reservation_end

if typing.TYPE_CHECKING:
    from sky import resources as resources_lib
    from sky.utils import volume as volume_lib

logger = sky_logging.init_logger('sky.sky_mithril.cloud')

_F = clouds.CloudImplementationFeatures
_UNSUPPORTED: Dict[clouds.CloudImplementationFeatures, str] = {
    _F.IMAGE_ID: 'Custom images are not offered through the Mithril bid API.',
    _F.CUSTOM_DISK_TIER: 'Mithril machines come with fixed disks.',
    _F.CUSTOM_NETWORK_TIER: 'Mithril machines come with a fixed network.',
    _F.CUSTOM_MULTI_NETWORK: 'Mithril machines come with a fixed network.',
    _F.LOCAL_DISK: 'Local disk size is fixed per Mithril instance type.',
    _F.CLONE_DISK_FROM_CLUSTER: 'Mithril has no disk snapshots to clone.',
    _F.HOST_CONTROLLERS: ('Controllers on spot capacity would be preempted; '
                          'run them elsewhere or in consolidation mode.'),
    _F.HIGH_AVAILABILITY_CONTROLLERS: 'See host controllers.',
}
# What a CPU VM type (fixed price, never preempted) offers beyond the above.
_SUPPORTED_ON_CPU_VMS = (_F.HOST_CONTROLLERS,)
# Why a CPU VM is never stopped: paused, it bills on, and a cluster that can
# bill never reads STOPPED. Autodown (`sky autostop -i N --down`) deletes it.
_NO_STOP_ON_CPU_VMS = (
    'Mithril charges a CPU VM ({instance_type}) its fixed price until it is '
    'deleted, paused or not, so sky-mithril never stops one: `sky down` ends '
    'the bill, and `sky autostop -i N --down` (autostop: {{down: true}}) '
    'deletes it once idle; a controller on a CPU VM sets autostop: false.')


def may_be_cpu_vm(resources: 'resources_lib.Resources') -> bool:
    """Whether `resources` may land on a fixed-price CPU VM: no GPU asked,
    and no instance type or a CPU VM type. (The optimizer's pick is checked
    again once it names an instance type.)"""
    if resources.accelerators:
        return False
    return (resources.instance_type is None or
            mithril_catalog.is_cpu_vm(resources.instance_type))


# Ranking: a region where a bid at the task's limit cannot win now costs this
# much more per hour than its spot price, which puts it after every region
# and cloud that can (a Mithril limit never exceeds $1,000/h).
CANNOT_WIN_PENALTY_PER_HOUR = 10_000.0
# How long a resolved project (per credentials) is reused within a process:
# SkyPilot asks for the deploy variables twice per launch.
PROJECT_CACHE_SECONDS = 300.0
# How long a printed limit/market note is not repeated for the same launch.
NOTE_REPEAT_SECONDS = 3600.0
# How long the task's reservations and their instances, once listed, are
# reused: the optimizer asks once per region and candidate, then the deploy
# step.
RESERVATION_LISTING_SECONDS = 10.0

_projects: Dict[Tuple[str, str, str, str], Tuple[float, str]] = {}
_notes_printed: Dict[Tuple[str, ...], float] = {}
_reservation_listings: Dict[Tuple[str, Tuple[str, ...]], Tuple[
    float, Tuple[List[models.Reservation], List[models.Instance],
                 datetime.datetime]]] = {}
_memo_lock = threading.Lock()


def _account_for_launch() -> Tuple[credentials_lib.Credentials, str]:
    """Credentials and project fid before a launch, the project looked up at
    most once per PROJECT_CACHE_SECONDS per credentials. Credential problems
    block the whole cloud (SkyPilot then fails over elsewhere) with the
    reason shown."""
    try:
        creds = credentials_lib.load_credentials()
        key = (hashlib.sha256(creds.api_key.encode()).hexdigest(),
               creds.api_url, creds.project_id or '', creds.profile or '')
        with _memo_lock:
            cached = _projects.get(key)
        if cached is not None and time.monotonic() - cached[0] < (
                PROJECT_CACHE_SECONDS):
            return creds, cached[1]
        conn = connection.connect()
    except (credentials_lib.CredentialsError, errors.AuthenticationError,
            errors.PermissionDeniedError) as e:
        raise exceptions.InvalidCloudCredentials(str(e)) from None
    conn.client.close()
    with _memo_lock:
        _projects[key] = (time.monotonic(), conn.project_id)
    return conn.credentials, conn.project_id


def names_reservation(dag: Any) -> bool:
    """Whether a task of the DAG (or the user) names a Mithril reservation."""
    for task in getattr(dag, 'tasks', []):
        for resources in task.resources:
            try:
                if settings.resolve_reservations(*settings.sections_from_skypilot(
                        resources.cluster_config_overrides)):
                    return True
            except settings.MithrilConfigError:
                continue  # Reported where the launch reads its settings.
    return False


def listed_reservations(names: Sequence[str], *, fresh: bool = False
                        ) -> Tuple[List[models.Reservation],
                                   List[models.Instance], datetime.datetime]:
    """The task's reservations `names`, in its order, in the launch's
    project, their instances, and Mithril's clock now: one listing of each,
    made at most once per RESERVATION_LISTING_SECONDS (`fresh`: now). A
    reservation that is not there, or a launch on a remote controller (whose
    SkyPilot database cannot see the API server's claims), raises
    MithrilConfigError naming the fix."""
    try:
        reservation_claims.refuse_apart_from_api_server(names[0])
    except reservation_claims.SeparateDatabaseError as e:
        raise settings.MithrilConfigError(str(e)) from None
    _, project_id = _account_for_launch()
    key = (project_id, tuple(names))
    with _memo_lock:
        cached = _reservation_listings.get(key)
    if not fresh and cached is not None and time.monotonic() - cached[0] < (
            RESERVATION_LISTING_SECONDS):
        reservations, instances, now = cached[1]
        return reservations, instances, now + datetime.timedelta(
            seconds=time.monotonic() - cached[0])
    conn = connection.connect(project_id=project_id)
    try:
        reservations = reserved_nodes.find_each(conn, names)
        instances = reserved_nodes.list_instances(conn, reservations)
        now = conn.client.server_now()
    except reserved_nodes.ReservationError as e:
        raise settings.MithrilConfigError(str(e)) from None
    finally:
        conn.client.close()
    with _memo_lock:
        _reservation_listings[key] = (time.monotonic(),
                                      (reservations, instances, now))
    return reservations, instances, now


def reservation_that_fits(sections: settings.Sections, instance_type: str,
                          region: str, num_nodes: int,
                          lead: datetime.timedelta
                          ) -> Tuple[Optional[models.Reservation], List[str]]:
    """For the optimizer, which does not know the launching cluster: the
    first of the task's reservations, in its order, that a launch fits on
    whole now (`_fitting`, no move's promise counted: it may be this
    launch's own); else None and why not, one reason per reservation (none
    when the task names none). Every one is looked up, so a name that is
    not there is refused at the first launch, not at a later relaunch."""
    names = settings.resolve_reservations(*sections)
    if not names:
        return None, []
    return _fitting(*listed_reservations(names), instance_type, region,
                    num_nodes, lead, None)


def _fitting(reservations: List[models.Reservation],
             instances: List[models.Instance], now: datetime.datetime,
             instance_type: str, region: str, num_nodes: int,
             lead: datetime.timedelta, cluster_name: Optional[str]
             ) -> Tuple[Optional[models.Reservation], List[str]]:
    """The first of `reservations` (the task's, listed with their
    `instances` at `now`) that holds this type in this region and that
    `num_nodes` fit on whole, ending later than `lead` from now
    (`reserved_nodes.first_with_room`). Instances promised to other
    clusters' moves than `cluster_name`'s count as taken, and the
    reservation its own move is promised goes first
    (`back_to_reservation.promised_to`); no promise counts when it is None.
    Else None and why not, one reason per reservation."""
    type_fid = live_prices.snapshot().fid(instance_type, region) or ''
    mismatches = {r.fid: reserved_nodes.mismatch(r, type_fid, instance_type,
                                                 region) for r in reservations}
    own, taken = (None, {}) if cluster_name is None else (
        back_to_reservation.promised_to(cluster_name),
        back_to_reservation.promised(cluster_name))
    fits, whys = reserved_nodes.first_with_room(
        sorted((r for r in reservations if not mismatches[r.fid]),
               key=lambda r: r.fid != own),
        reserved_nodes.free_counts(reservations, instances), num_nodes, now,
        lead, taken)
    if fits is not None:
        return fits, []
    return None, [mismatches[r.fid] or whys[r.fid] for r in reservations]


@dataclasses.dataclass(frozen=True)
class Account:
    """Where a cluster's bids live: the profile ('' for the current one),
    project fid and API URL its provider config names."""

    profile: str
    project_id: str
    api_url: str


def _account_of(cluster_name: str) -> Account:
    """The account of SkyPilot's existing Mithril cluster `cluster_name` (a
    relaunch or `sky start` keeps it, whatever the current profile); for a
    new cluster, the current credentials' (checked, `_account_for_launch`)."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    handle = global_user_state.get_handle_from_cluster_name(cluster_name)
    cloud = getattr(getattr(handle, 'launched_resources', None), 'cloud',
                    None)
    if cloud is not None and cloud.canonical_name() == CLOUD_NAME:
        provider = global_user_state.get_cluster_yaml_dict(
            handle.cluster_yaml).get('provider') or {}
        if provider.get('project_id'):
            return Account(provider.get('profile') or '',
                           provider['project_id'], provider.get('api_url') or '')
    creds, project_id = _account_for_launch()
    return Account(creds.profile or '', project_id, creds.api_url)


def _held_among(name_on_cloud: str, reservations: List[models.Reservation],
                instances: List[models.Instance]
                ) -> Optional[models.Reservation]:
    """The one of the task's `reservations` (listed with their `instances`)
    the cluster holds instances of, while any of them is left
    (`reserved_nodes.held_reservation`). Only reads: the listing may be
    RESERVATION_LISTING_SECONDS old, so claims it shows gone are released
    by the provisioner, which lists afresh (`reserved_nodes.still_held`)."""
    listed = {r.fid: r for r in reservations}
    claims = reservation_claims.of_cluster(name_on_cloud)
    held = reserved_nodes.held_reservation(
        [c for c in claims if c.reservation_fid in listed], instances)
    return None if held is None else listed[held]


def _reservations_held_by(name_on_cloud: str) -> Set[str]:
    """The reservations the cluster holds instances of (its claims), the
    task's or not: a relaunch runs on them whatever the task names."""
    return {c.reservation_fid for c in reservation_claims.of_cluster(name_on_cloud)}


def _resolve_volumes(wanted: Dict[str, str]) -> List[mithril_volumes.Mount]:
    """The task's volumes, looked up in the launch's project."""
    if not wanted:
        return []
    try:
        conn = connection.connect()
    except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
        raise mithril_volumes.VolumeConfigError(
            f'The task mounts Mithril volumes, but they cannot be looked up: '
            f'{e}') from None
    try:
        return mithril_volumes.resolve(conn, wanted)
    except errors.MithrilAPIError as e:
        raise mithril_volumes.VolumeConfigError(
            f'Looking up the task\'s Mithril volumes failed: {e}') from None
    finally:
        conn.client.close()


def _first_time_this_launch(*key: str) -> bool:
    """Whether a note with `key` was not yet printed for this request (an
    API-server request id; outside a request, within NOTE_REPEAT_SECONDS)."""
    full = (common_utils.get_current_request_id(), *key)
    now = time.monotonic()
    with _memo_lock:
        for old in [k for k, at in _notes_printed.items()
                    if now - at > NOTE_REPEAT_SECONDS]:
            del _notes_printed[old]
        if full in _notes_printed:
            return False
        _notes_printed[full] = now
        return True


def _market_note(instance_type: str, region: str, limit: settings.LimitPrice,
                 timeout: Optional[int], num_nodes: int) -> str:
    """Spot price and capacity vs the effective limit and node count, and
    what happens if the bid waits."""
    quote = live_prices.quote(instance_type, region)
    if quote is None:
        return ''
    spot, capacity = quote
    spot_text = f'{money.format_dollars(spot)}/h'
    wait = ('until then (provision_timeout: forever)'
            if timeout is None else
            f'at most {timeout}s (provision_timeout), then it is cancelled '
            'and SkyPilot tries elsewhere')
    if spot > limit.per_hour:
        return (f'Spot price in {region} now: {spot_text}, above your limit '
                f'{money.format_dollars(limit.per_hour)}/h: the bid will wait '
                f'for the price to fall, {wait}. To be allocated now, raise '
                f'config.mithril.limit_price to at least '
                f'{money.format_dollars(spot)}.')
    if capacity < num_nodes:
        return (f'Spot price in {region} now: {spot_text}, within your limit, '
                f'but only {capacity} instance(s) free for {num_nodes} '
                f'node(s): the bid will wait for capacity, {wait}.')
    return (f'Spot price in {region} now: {spot_text} ({capacity} free), '
            'within your limit.')


def _check_budget(budget: settings.SpendBudget, name_on_cloud: str,
                  change_what: str, per_hour: Decimal,
                  project_id: Optional[str]) -> Optional[budget_lib.Standing]:
    """The project's worst case now and with this launch (whose cluster's
    own bids it replaces), against `budget`, before any bid; a launch that
    would lift it above the budget leaves Mithril out, naming the bids that
    use it. None when the bids cannot be read (a dry run without working
    credentials): the provisioner checks again before placing anything."""
    try:
        conn = connection.connect(project_id=project_id or None)
    except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
        logger.info(f'Mithril spend budget not checked yet ({e}); it is '
                    'checked before any bid is placed.')
        return None
    try:
        bids = budget_lib.billable_bids(conn)
    finally:
        conn.client.close()
    standing = budget_lib.standing(budget, bids, budget_lib.Change(
        change_what, per_hour,
        frozenset(b.fid for b in bids if b.name == name_on_cloud)))
    if not standing.fits:
        raise exceptions.InvalidCloudConfigs(
            str(standing.refusal(budget_lib.cluster_labels())))
    return standing


@dataclasses.dataclass(frozen=True)
class Ranking:
    """What the optimizer ranks a task's Mithril regions by: can a bid at the
    task's effective limit, for its node count, win now (spot <= limit and
    free capacity >= nodes)? A patient task (`provision_timeout: forever`)
    ranks by spot price alone."""

    sections: settings.Sections
    num_nodes: int
    patient: bool
    max_hourly_cost: Optional[float] = None

    def why_not_now(self, instance_type: str, region: str,
                    market: live_prices.Snapshot) -> Optional[str]:
        """None when a bid would win now (or no live data says otherwise);
        else the reason it would not."""
        if (instance_type, region) in market.delisted:
            return 'Mithril no longer lists this auction'
        quote = market.quote(instance_type, region)
        if self.patient or quote is None:
            return None
        spot, free = quote
        limit = Mithril.effective_limit_price(instance_type, self.sections,
                                              self.max_hourly_cost)
        if spot > limit.per_hour:
            return (f'spot {money.format_dollars(spot)}/h above your limit '
                    f'{money.format_dollars(limit.per_hour)}/h')
        if free < self.num_nodes:
            return f'{free} free, {self.num_nodes} needed'
        return None


def _winning_price(instance_type: str, regions: List[str], num_nodes: int,
                   market: live_prices.Snapshot) -> Tuple[Decimal, str]:
    """The lowest spot price (and its region) among regions with capacity
    for `num_nodes`, else among all: the limit that would win now."""
    quotes = [(market.quotes[(instance_type, r)], r) for r in regions
              if (instance_type, r) in market.quotes]
    roomy = [(q[0], r) for q, r in quotes if q[1] >= num_nodes]
    return min(roomy or [(q[0], r) for q, r in quotes])


class Mithril(builtin_mithril.Mithril):
    """Mithril: a GPU machine is a spot bid at the user's limit price; a CPU
    VM is a fixed-price machine, no bid (`provision.cpu_vm`)."""

    _REPR = 'Mithril'
    # The head opens the task's ports itself, with Mithril's forwarder
    # (`public_ports`), at every launch and start: SkyPilot hands a
    # LAUNCH_ONLY cloud's run_instances the ports each time, and refuses new
    # ports on an existing cluster.
    OPEN_PORTS_VERSION = clouds.OpenPortsVersion.LAUNCH_ONLY
    # Set only on the copies the optimizer ranks a task's launchables with.
    ranking: Optional[Ranking] = None

    def __getstate__(self) -> Dict[str, Any]:
        """The ranking is the optimizer's view of one moment: never pickled
        into a cluster handle."""
        state = super().__getstate__()
        state.pop('ranking', None)
        return state

    @classmethod
    def _unsupported_features_for_resources(
        cls,
        resources: 'resources_lib.Resources',
        region: Optional[str] = None,
    ) -> Dict[clouds.CloudImplementationFeatures, str]:
        """What Mithril never offers, and ports it cannot open: a task
        asking for them is refused before any bid. SkyPilot's controllers
        run on CPU VMs (fixed price, never preempted), never on spot GPU
        machines. A CPU VM type is never stopped (SkyPilot refuses `sky
        stop` and autostop before the provisioner): it bills until deleted."""
        del region
        unsupported = dict(_UNSUPPORTED)
        if may_be_cpu_vm(resources):
            for feature in _SUPPORTED_ON_CPU_VMS:
                unsupported.pop(feature)
        if (resources.instance_type is not None and
                mithril_catalog.is_cpu_vm(resources.instance_type)):
            unsupported[_F.MULTI_NODE] = (
                f'a Mithril CPU VM ({resources.instance_type}) is one machine; '
                'several nodes go on GPU instance types.')
            no_stop = _NO_STOP_ON_CPU_VMS.format(
                instance_type=resources.instance_type)
            unsupported[_F.STOP] = no_stop
            unsupported[_F.AUTOSTOP] = no_stop
        ports_refused = public_ports.refusal(resources.ports)
        if ports_refused:
            unsupported[_F.OPEN_PORTS] = ports_refused
        return {feature: f'{feature.value}: {why}'
                for feature, why in unsupported.items()}

    def instance_type_exists(self, instance_type: str) -> bool:
        return mithril_catalog.instance_type_exists(instance_type)

    @classmethod
    def regions(cls) -> List[clouds.Region]:
        return mithril_catalog.regions()

    @classmethod
    def regions_with_offering(
        cls,
        instance_type: str,
        accelerators: Optional[Dict[str, int]],
        use_spot: bool,
        region: Optional[str],
        zone: Optional[str],
        resources: Optional['resources_lib.Resources'] = None,
    ) -> List[clouds.Region]:
        del accelerators, resources
        if zone is not None:
            raise ValueError(mithril_catalog.ZONES_UNSUPPORTED)
        offered = mithril_catalog.get_region_zones_for_instance_type(
            instance_type, use_spot)
        return [r for r in offered if region is None or r.name == region]

    @classmethod
    def zones_provision_loop(cls, *, region: str, num_nodes: int,
                             instance_type: str,
                             accelerators: Optional[Dict[str, int]] = None,
                             use_spot: bool = False):
        del region, num_nodes, instance_type, accelerators, use_spot
        yield None

    def validate_region_zone(
            self, region: Optional[str],
            zone: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
        return mithril_catalog.validate_region_zone(region, zone)

    @classmethod
    def get_vcpus_mem_from_instance_type(
            cls, instance_type: str) -> Tuple[Optional[float], Optional[float]]:
        return mithril_catalog.get_vcpus_mem_from_instance_type(instance_type)

    @classmethod
    def get_accelerators_from_instance_type(
            cls, instance_type: str) -> Optional[Dict[str, Union[int, float]]]:
        return mithril_catalog.get_accelerators_from_instance_type(instance_type)

    @classmethod
    def get_default_instance_type(cls,
                                  cpus: Optional[str] = None,
                                  memory: Optional[str] = None,
                                  disk_tier: Optional[
                                      resources_utils.DiskTier] = None,
                                  local_disk: Optional[str] = None,
                                  region: Optional[str] = None,
                                  zone: Optional[str] = None,
                                  use_spot: bool = False,
                                  max_hourly_cost: Optional[float] = None
                                  ) -> Optional[str]:
        return mithril_catalog.get_default_instance_type(cpus, memory, disk_tier,
                                                 local_disk, region, zone,
                                                 use_spot, max_hourly_cost)

    def instance_type_to_hourly_cost(self,
                                     instance_type: str,
                                     use_spot: bool,
                                     region: Optional[str] = None,
                                     zone: Optional[str] = None) -> float:
        """The spot price (live, else the catalog's estimate); for the
        optimizer's ranking, plus CANNOT_WIN_PENALTY_PER_HOUR in a region
        where a bid at the task's limit cannot win now."""
        cost = mithril_catalog.get_hourly_cost(instance_type, use_spot, region,
                                               zone)
        if self.ranking is not None and region is not None and (
                self.ranking.why_not_now(instance_type, region,
                                         live_prices.snapshot())):
            cost += CANNOT_WIN_PENALTY_PER_HOUR
        return cost

    def accelerators_to_hourly_cost(self, accelerators: Dict[str, int],
                                    use_spot: bool, region: Optional[str],
                                    zone: Optional[str]) -> float:
        """Accelerators are part of the instance price on Mithril."""
        del accelerators, use_spot, region, zone
        return 0.0

    def get_egress_cost(self, num_gigabytes: float) -> float:
        del num_gigabytes
        return 0.0

    def get_reservations_available_resources(
        self,
        instance_type: str,
        region: str,
        zone: Optional[str],
        specific_reservations: Set[str],
    ) -> Dict[str, int]:
        """The first of the task's reservations (`config.mithril.reservation`)
        the whole cluster fits on, and its free instances: the optimizer
        then counts its nodes at no extra cost (they are paid for). A
        cluster goes on one reservation whole or not at all, so fewer free
        instances than nodes count as none."""
        del zone, specific_reservations
        if self.ranking is None:
            return {}
        reservation, _ = reservation_that_fits(
            self.ranking.sections, instance_type, region,
            self.ranking.num_nodes,
            policy.resolve_reservation_end_lead(*self.ranking.sections))
        if reservation is None:
            return {}
        return {reservation.name: self.ranking.num_nodes}

    @staticmethod
    def gpu_count(instance_type: str) -> int:
        accelerators = mithril_catalog.get_accelerators_from_instance_type(
            instance_type) or {}
        return int(sum(accelerators.values()))

    @classmethod
    def effective_limit_price(
            cls, instance_type: str, sections: settings.Sections,
            max_hourly_cost: Optional[float]) -> settings.LimitPrice:
        """The limit price a bid for `instance_type` would carry, given the
        task's and the user's settings (`settings.sections_from_skypilot`)
        and the task's `resources.max_hourly_cost`."""
        return settings.resolve_limit_price(cls.gpu_count(instance_type),
                                            *sections, max_hourly_cost)

    def get_feasible_launchable_resources(
            self,
            resources: 'resources_lib.Resources',
            num_nodes: int = 1) -> resources_utils.FeasibleResources:
        """Instance types that fit, ranked by whether a bid at the task's
        limit can win now (see `Ranking`). A bad limit setting leaves
        Mithril out with a hint naming the key and the fix, instead of
        breaking the optimizer for every other cloud."""
        feasible = super().get_feasible_launchable_resources(resources, num_nodes)
        if not feasible.resources_list:
            return feasible
        try:
            return self._rank(feasible, resources, num_nodes)
        except settings.MithrilConfigError as e:
            if resources.cloud is None:
                logger.warning(f'Mithril left out: {e}')
            return resources_utils.FeasibleResources([], [], str(e))

    def _rank(self, feasible: resources_utils.FeasibleResources,
              resources: 'resources_lib.Resources',
              num_nodes: int) -> resources_utils.FeasibleResources:
        """Attaches the task's `Ranking`, leaves out instance types whose
        every region is above the limit (unless the task waits forever),
        notes the regions ranked last, and orders types by ranked cost."""
        sections = settings.sections_from_skypilot(
            resources.cluster_config_overrides)
        timeout = settings.resolve_provision_timeout(*sections)
        # The task's volumes pin it to their region, before any bid.
        mounts = _resolve_volumes(mithril_volumes.requested(sections[0]))
        if resources.region is not None:
            mithril_volumes.check_region(mounts, resources.region)
        volume_region = mithril_volumes.region_of(mounts) if mounts else None
        ranking = Ranking(sections, num_nodes, patient=timeout is None,
                          max_hourly_cost=resources.max_hourly_cost)
        cloud = type(self)()
        cloud.ranking = ranking
        market = live_prices.snapshot()
        ranked: List[Tuple[float, 'resources_lib.Resources']] = []
        hints: List[str] = []
        for candidate in feasible.resources_list:
            instance_type = candidate.instance_type
            if mithril_catalog.is_cpu_vm(instance_type) and num_nodes > 1:
                # A CPU VM is one node: several go on GPU machines, as
                # before CPU VMs were sold.
                instance_type = mithril_catalog.get_default_gpu_instance_type(
                    resources.cpus, resources.memory, candidate.region,
                    candidate.use_spot, resources.max_hourly_cost)
                if instance_type is None:
                    continue
                candidate = candidate.copy(instance_type=instance_type)
            elif mithril_catalog.is_cpu_vm(instance_type):
                cpu_vm = self._rank_cpu_vm(candidate, cloud, volume_region)
                if cpu_vm is not None:
                    ranked.append(cpu_vm)
                elif volume_region is not None:
                    hints.append(f'Mithril sells no {instance_type} CPU VM in '
                                 f'{volume_region}, where the task\'s volumes '
                                 'live.')
                continue
            limit = self.effective_limit_price(instance_type, sections,
                                               resources.max_hourly_cost)
            policy.relaunch_limit(limit, *sections,  # Checked up front.
                                  resources.max_hourly_cost)
            settings.resolve_spend_budget(*sections)  # Checked up front.
            policy.resolve_back_to_reservation(*sections)  # Checked up front.
            lead = policy.resolve_reservation_end_lead(  # Checked up front.
                *sections)
            regions = [r.name for r in self.regions_with_offering(
                instance_type, None, candidate.use_spot, candidate.region,
                None)]
            if volume_region is not None:
                if volume_region not in regions:
                    hints.append(f'{instance_type} is not auctioned in '
                                 f'{volume_region}, where the task\'s volumes '
                                 'live.')
                    continue
                regions = [volume_region]
                candidate = candidate.copy(region=volume_region)
            reserved = [r for r in regions if reservation_that_fits(
                sections, instance_type, r, num_nodes, lead)[0] is not None]
            reasons = {r: ranking.why_not_now(instance_type, r, market)
                       for r in regions if r not in reserved}
            above_limit = [r for r in regions
                           if (market.quote(instance_type, r) or
                               (Decimal(0), 0))[0] > limit.per_hour]
            if (market.live and not ranking.patient and regions and
                    above_limit == regions and not reserved):
                price, where = _winning_price(instance_type, regions,
                                              num_nodes, market)
                hints.append(
                    f'{instance_type}: your limit {limit.describe()} is below '
                    f'the spot price in every region ({", ".join(f"{r}: {why}" for r, why in reasons.items())}); '
                    f'a bid would wait {timeout}s (provision_timeout) and be '
                    f'cancelled. To be allocated now, raise '
                    f'config.mithril.limit_price to at least '
                    f'{money.format_dollars(price)} (spot in {where}), or set '
                    'provision_timeout: forever to wait for the price to fall.')
                continue
            for region, reason in reasons.items():
                if reason and _first_time_this_launch('rank', instance_type,
                                                      region):
                    logger.info(f'Mithril {instance_type} in {region} cannot be '
                                f'allocated now ({reason}): ranked after the '
                                'regions that can.')
            copy = candidate.copy(cloud=cloud)
            ranked.append((0.0 if reserved else min(
                cloud.instance_type_to_hourly_cost(
                    instance_type, candidate.use_spot, r) for r in regions),
                           copy))
        if not ranked:
            return resources_utils.FeasibleResources([], [], ' '.join(hints))
        ranked.sort(key=lambda pair: pair[0])
        return resources_utils.FeasibleResources(
            [r for _, r in ranked], feasible.fuzzy_candidate_list, None)

    @staticmethod
    def _rank_cpu_vm(candidate: 'resources_lib.Resources', cloud: 'Mithril',
                     volume_region: Optional[str]
                     ) -> Optional[Tuple[float, 'resources_lib.Resources']]:
        """A CPU VM type at its fixed price in its cheapest region (the
        volumes' region when the task mounts some; None when it is not sold
        there): nothing to win, no limit price, no reservation."""
        instance_type = candidate.instance_type
        regions = [r.name for r in cloud.regions_with_offering(
            instance_type, None, candidate.use_spot, candidate.region, None)]
        if volume_region is not None:
            if volume_region not in regions:
                return None
            regions = [volume_region]
            candidate = candidate.copy(region=volume_region)
        if not regions:
            return None
        return (min(cloud.instance_type_to_hourly_cost(
            instance_type, candidate.use_spot, r) for r in regions),
                candidate.copy(cloud=cloud))

    def _get_feasible_launchable_resources(
        self, resources: 'resources_lib.Resources'
    ) -> resources_utils.FeasibleResources:
        """Instance types that fit the task's resources."""
        if resources.instance_type is not None:
            return resources_utils.FeasibleResources(
                [resources.copy(accelerators=None)], [], None)

        def launchable(instance_types: List[str]) -> List['resources_lib.Resources']:
            return [
                resources.copy(cloud=type(self)(),
                               instance_type=instance_type,
                               accelerators=None,
                               cpus=None,
                               memory=None) for instance_type in instance_types
            ]

        if resources.accelerators is None:
            default = self.get_default_instance_type(
                cpus=resources.cpus,
                memory=resources.memory,
                region=resources.region,
                zone=resources.zone,
                use_spot=resources.use_spot,
                max_hourly_cost=resources.max_hourly_cost)
            return resources_utils.FeasibleResources(
                launchable([default]) if default else [], [], None)

        (name, count), = resources.accelerators.items()
        instance_types, fuzzy = mithril_catalog.get_instance_type_for_accelerator(
            name,
            int(count),
            cpus=resources.cpus,
            memory=resources.memory,
            use_spot=resources.use_spot,
            region=resources.region,
            zone=resources.zone,
            max_hourly_cost=resources.max_hourly_cost)
        return resources_utils.FeasibleResources(
            launchable(instance_types or []), fuzzy, None)

    @classmethod
    def _check_compute_credentials(cls) -> Tuple[bool, Optional[str]]:
        """Calls `GET /v2/me` and `GET /v2/projects` with the configured key."""
        try:
            conn = connection.connect(max_retry_seconds=10.0, timeout=10.0)
        except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
            return False, str(e)
        try:
            me = conn.client.me()
        except errors.MithrilAPIError as e:
            return False, str(e)
        finally:
            conn.client.close()
        path = credentials_lib.credentials_path()
        if path.exists() and credentials_lib.is_readable_by_others(path):
            logger.warning(
                f'{credentials_lib.display_path(path)} is readable by other '
                f'users; run `chmod 600 {credentials_lib.display_path(path)}`.')
        logger.debug(f'Mithril user {me.fid}, project {conn.project_id}')
        return True, None

    @classmethod
    def _check_credentials(cls) -> Tuple[bool, Optional[str]]:
        return cls._check_compute_credentials()

    def get_credential_file_mounts(self) -> Dict[str, str]:
        """Nothing. SkyPilot uploads every cloud's credential files to every
        cluster it launches, on any cloud, controllers included; a Mithril
        cluster's nodes get their own key from the cluster template instead
        (`node_keys`), and no other cluster gets one. (The built-in would
        upload the user's whole Mithril config file.)"""
        return {}

    @staticmethod
    def _reservation_note(sections: settings.Sections,
                          cluster_name: resources_utils.ClusterName,
                          instance_type: str, region: str, num_nodes: int,
                          lead: datetime.timedelta) -> Tuple[str, bool]:
        """The fid of the reservation the cluster goes on ('' to bid on
        spot), and whether it does; says so, or why it bids on spot instead
        (for each reservation the task names), once per launch. That is the
        task's reservation the cluster holds instances of while any is left
        (`_held_among`), else the first it fits on (`_fitting`, none ending
        within `lead`, instances promised to other clusters' moves taken,
        the one the cluster's own move is promised first); the provisioner
        claims on it with its own count."""
        names = settings.resolve_reservations(*sections)
        if not names:
            return '', False
        name_on_cloud = cluster_name.name_on_cloud
        fits: Optional[models.Reservation] = None
        whys: List[str] = []
        # A cached listing that leaves no room is read again: the room may
        # have come since (a reservation starting, an instance booted), and
        # a spot bid beside a paid-for free instance is money lost.
        for fresh in (False, True):
            reservations, instances, now = listed_reservations(names,
                                                               fresh=fresh)
            fits = _held_among(name_on_cloud, reservations, instances)
            if fits is None:
                fits, whys = _fitting(reservations, instances, now,
                                      instance_type, region, num_nodes, lead,
                                      cluster_name.display_name)
            if fits is not None:
                break
        if _first_time_this_launch('reservation', name_on_cloud, *names,
                                   fits.fid if fits else ''):
            if fits is not None:
                logger.info(f'Mithril reservation {fits.name} ({fits.fid}): '
                            f'{num_nodes}× {instance_type} in {region} on '
                            'reserved instances, paid for at its creation; '
                            'no bid.')
            else:
                logger.info(f'Mithril {"; ".join(whys)}; the cluster bids on '
                            'spot at your limit instead.')
        return ('' if fits is None else fits.fid), fits is not None

    @staticmethod
    def _cpu_vm_note(sections: settings.Sections, name_on_cloud: str,
                     instance_type: str, region: str) -> None:
        """Says once per launch that the cluster is a fixed-price CPU VM,
        and that a limit price or spend budget the config sets does not
        apply to it (a note, not an error: the same config serves GPU
        launches)."""
        if not _first_time_this_launch('cpu-vm', name_on_cloud, region,
                                       instance_type):
            return
        price = mithril_catalog.get_hourly_cost(instance_type, False, region)
        logger.info(f'Mithril CPU VM: {instance_type} in {region} at a fixed '
                    f'{money.format_dollars(Decimal(str(price)))}/h; no bid, '
                    'never preempted.')
        ignored = [key for key in (settings.LIMIT_PRICE,
                                   settings.LIMIT_PRICE_PER_GPU,
                                   settings.MAX_HOURLY_SPEND)
                   if any(section.get(key) is not None for section in sections)]
        if ignored:
            logger.info(f'config.mithril {" and ".join(ignored)} ignored for '
                        'this CPU VM: it has a fixed price and is no bid.')

    def make_deploy_resources_variables(
        self,
        resources: 'resources_lib.Resources',
        cluster_name: resources_utils.ClusterName,
        region: clouds.Region,
        zones: Optional[List[clouds.Zone]],
        num_nodes: int,
        dryrun: bool = False,
        volume_mounts: Optional[List['volume_lib.VolumeMount']] = None,
    ) -> Dict[str, Any]:
        """Template variables, including the effective limit price and the
        spend budget, which are shown to the user here, before any bid is
        placed (a launch that would lift the project's worst case above
        `max_hourly_spend` is refused here, `_check_budget`), and the
        cluster's account: a new cluster's is the current credentials', an
        existing one keeps its own (`_account_of`). Outside a dry run the
        nodes mount the cluster's own credentials file, which SkyPilot's
        authentication step fills (`ssh_keys.setup_mithril_authentication`)."""
        del volume_mounts
        if zones is not None:
            raise ValueError(mithril_catalog.ZONES_UNSUPPORTED)
        resources = resources.assert_launchable()
        instance_type = resources.instance_type
        sections = settings.sections_from_skypilot(
            resources.cluster_config_overrides)
        on_cpu_vm = mithril_catalog.is_cpu_vm(instance_type)
        limit: Optional[settings.LimitPrice] = None
        if on_cpu_vm:
            self._cpu_vm_note(sections, cluster_name.name_on_cloud,
                              instance_type, region.name)
        else:
            limit = self.effective_limit_price(instance_type, sections,
                                               resources.max_hourly_cost)
        if limit is not None and records.is_recovering(
                cluster_name.display_name):
            limit = policy.relaunch_limit(limit, *sections,
                                          resources.max_hourly_cost)
        timeout = settings.resolve_provision_timeout(*sections)
        boot_timeout = settings.resolve_boot_timeout(*sections)
        budget = settings.resolve_spend_budget(*sections)
        reservation_end_lead = reservation_end.lead_for_launch(
            cluster_name.display_name, sections)
        reservation_fid, on_reservation = ('', False) if on_cpu_vm else (
            self._reservation_note(sections, cluster_name, instance_type,
                                   region.name, num_nodes,
                                   reservation_end_lead))
        if limit is not None and not on_reservation and _first_time_this_launch('deploy', cluster_name.name_on_cloud,
                                     region.name, instance_type,
                                     str(limit.per_hour)):
            logger.info(f'Mithril limit price: {limit.describe()} for '
                        f'{num_nodes}× {instance_type} in {region.name}. You '
                        'pay the market clearing price, never more than this.')
            market_note = _market_note(instance_type, region.name, limit,
                                       timeout, num_nodes)
            if market_note:
                logger.info(market_note)
        account = Account('', '', '')
        node_credentials: Dict[str, str] = {}
        node_files: Dict[str, str] = {}
        mounts: List[mithril_volumes.Mount] = []
        if not dryrun:
            account = _account_of(cluster_name.display_name)
            node_credentials = {node_keys.NODE_PATH: str(
                node_keys.credentials_path(cluster_name.name_on_cloud))}
            node_files = {reserved_nodes.NODE_FILE: str(
                reserved_nodes.stage_node_file(cluster_name.name_on_cloud))}
            mounts = _resolve_volumes(mithril_volumes.requested(sections[0]))
            mithril_volumes.check_region(mounts, region.name)
            for held in _reservations_held_by(cluster_name.name_on_cloud):
                mithril_volumes.check_reservation_takes(mounts, held)
        if budget is not None and limit is not None and not on_reservation:
            standing = _check_budget(
                budget, cluster_name.name_on_cloud,
                f'this launch ({num_nodes}× {instance_type} at '
                f'{money.format_dollars(limit.per_hour)}/h)',
                limit.per_hour * num_nodes, account.project_id)
            if standing is not None and _first_time_this_launch(
                    'budget', cluster_name.name_on_cloud):
                logger.info(standing.note())
        accelerators = self.get_accelerators_from_instance_type(instance_type)
        variables: Dict[str, Any] = {
            'instance_type': instance_type,
            'custom_resources':
                resources_utils.make_ray_custom_resources_str(accelerators),
            'region': region.name,
            'mithril_profile': account.profile,
            'mithril_project_id': account.project_id,
            'mithril_api_url': account.api_url,
            'mithril_node_credentials': node_credentials,
            'mithril_node_files': node_files,
            'mithril_reservation': reservation_fid,
            'reservation_end_lead_seconds':
                str(reservation_end_lead.total_seconds()),
            'mithril_cpu_vm': 'true' if on_cpu_vm else '',
            'limit_price_per_hour': '' if limit is None else str(limit.per_hour),
            'provision_timeout': '' if timeout is None else str(timeout),
            'boot_timeout': str(boot_timeout),
            'instance_type_fid':
                live_prices.snapshot().fid(instance_type, region.name) or '',
            'mithril_volume_fids': ','.join(m.volume.fid for m in mounts),
            'mithril_volume_setup': mithril_volumes.setup_commands(mounts),
            'max_hourly_spend': '' if budget is None else str(budget.per_hour),
        }
        if accelerators:
            variables['docker_run_options'] = ['--gpus all']
        return variables
