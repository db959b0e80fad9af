"""Mithril's spot market as a pure, deterministic model: no HTTP, no threads.

One auction runs per (instance type, region). Emulated time comes from a
`Clock`; `tick()` / `advance_to(when)` runs everything due up to then, in time
order: clearings every `clearing_interval_s`, ends of preemption notices, and
instance life-cycle steps. Every public method first catches up with the
clock, so a caller always sees the market as of `clock.now()`. Randomness (fids,
the optional price random walk) comes from RNGs seeded with `seed`.

Rules of a clearing, per auction:
  1. The spot price is updated: a scripted price whose time has come, or a
     random-walk step, or else it stays as `set_price` left it. The new price
     is recorded in the auction's price history.
  2. Allocated bids whose limit price is now below the spot price get a
     preemption notice (`Preempting` for `preemption_notice_s`, recorded as
     the "Preempted" event; a started notice always runs to its end, then the
     bid is Open again). Allocated bids are never displaced by new, higher
     bids; only the price preempts.
  3. Open bids whose limit >= spot price are served by priority: higher limit
     first, equal limits in submission order. A bid gets all of its
     `instance_quantity` instances or none (all-or-nothing); a bid that does
     not fit the remaining capacity "loses for lack of capacity" and a smaller,
     lower-priority bid may still fit after it.
  4. Second price: the clearing price is max(spot price, highest limit among
     the bids that lost for lack of capacity). Each winner pays the clearing
     price, capped at its own limit (the cap binds only when a bigger bid with a
     higher limit did not fit). The price paid is recorded on the bid and its
     instances (`price_paid`) and stays fixed for that allocation.
A bid placed between clearings waits for the next one; nothing is allocated
out of turn.

User actions: a limit price change (any live bid) takes effect at the next
clearing; a notice already running is not withdrawn. Pausing an Allocated or
Preempting bid stops its instances and frees its capacity at once; pausing an
Open bid only takes it out of the market; unpausing puts it back as Open.
Cancelling terminates the bid and its instances and destroys their hosts;
cancelling a terminated bid does nothing.

Capacity is held by `Allocated` and `Preempting` bids; `free_capacity` is
capacity minus that, never below zero. Filler bids (`add_filler_instances`,
for benchmarks) are scenery: they are listed like any bid but take no part in
clearings and hold no auction capacity.

Instance life cycle after allocation: STATUS_NEW -> STATUS_CONFIRMED ->
STATUS_SCHEDULED -> STATUS_INITIALIZING -> STATUS_STARTING (host created or
resumed here; the address becomes visible) -> STATUS_RUNNING. Pausing goes
STATUS_STOPPING -> STATUS_PAUSED; a preemption notice STATUS_PREEMPTING ->
STATUS_PREEMPTED. A re-allocated bid (after preemption or unpause) boots the
same instances again from STATUS_NEW, resuming their hosts (same disks).
Instances are named `<bid name>-<index>`, index from 0.

Kubernetes clusters: a created cluster is `Pending` for `k8s_boot_s`, then its
control node's host comes up (with the cluster's SSH keys and the market's own
control-node key) and it is `Available` with `kube_host` = the host's address;
`control_node_ready` (if set) is then called, e.g. to install the kubeconfig.
A bid whose `launch_specification.kubernetes_cluster` names a cluster joins it:
its instances are listed in the cluster's `instances` while the bid lives.
Deleting a cluster makes it `Terminated` and removes the control node's host.

Volumes: a project's file shares (`File`, any number of bids and hosts at
once) and block volumes (`Block`, listed by at most one live bid), each in one
region, at most `VOLUME_QUOTA_GB` per project in all. A bid lists volumes of
its own region in `launch_specification.volumes`; PATCHing a live bid's
`volumes` replaces the list ("Volumes Attached" / "Volumes Removed"). The host
backend gets the bid's volumes whenever one of its hosts is created or resumed,
so a change reaches hosts that are up at their next start. A volume listed by
a live (not Terminated) bid cannot be deleted; deleting one also removes its
data from the host backend.
"""

import ast
import bisect
import dataclasses
import datetime
import enum
import functools
import hashlib
import heapq
import itertools
import logging
import math
import random
import re
import string
from decimal import Decimal
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Set, Tuple, TypeVar, Union)

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sky_mithril import money
from sky_mithril.emulator.clock import Clock
from sky_mithril.emulator.hosts import (HostAddress, HostBackend,
                                        VolumeAttachment, VolumeInterface,
                                        volume_vm_path)

logger = logging.getLogger('sky.sky_mithril.emulator')

PROJECT_FID = 'proj_emulator'
PROJECT_NAME = 'emulator'
USER_FID = 'user_emulator'
IMAGE_VERSION_FID = 'imgv_emulator_ubuntu2204'
DEFAULT_CAPACITY = 8
PRICE_HISTORY_LIMIT = 50_000
VOLUME_QUOTA_GB = 20_000
MAX_VOLUME_GB = 16_384
# A volume's name becomes a directory, `/mnt/<name>`, on every VM it reaches.
_BAD_VOLUME_NAME = re.compile(r'[/\s\x00-\x1f\x7f]')

Loc = Tuple[Union[str, int], ...]
PricePoint = Tuple[datetime.datetime, Decimal]


class BidStatus(str, enum.Enum):
    OPEN = 'Open'
    ALLOCATED = 'Allocated'
    PREEMPTING = 'Preempting'
    PAUSED = 'Paused'
    TERMINATED = 'Terminated'


class InstanceStatus(str, enum.Enum):
    NEW = 'STATUS_NEW'
    CONFIRMED = 'STATUS_CONFIRMED'
    SCHEDULED = 'STATUS_SCHEDULED'
    INITIALIZING = 'STATUS_INITIALIZING'
    STARTING = 'STATUS_STARTING'
    RUNNING = 'STATUS_RUNNING'
    RELOCATING = 'STATUS_RELOCATING'
    PREEMPTING = 'STATUS_PREEMPTING'
    PREEMPTED = 'STATUS_PREEMPTED'
    PAUSED = 'STATUS_PAUSED'
    STOPPING = 'STATUS_STOPPING'
    STOPPED = 'STATUS_STOPPED'
    REPLACED = 'STATUS_REPLACED'
    TERMINATED = 'STATUS_TERMINATED'
    ERROR = 'STATUS_ERROR'


class BidEventType(str, enum.Enum):
    PLACED = 'Placed'
    ALLOCATED = 'Allocated'
    PREEMPTED = 'Preempted'
    PAUSED = 'Paused'
    RESUMED = 'Resumed'
    TERMINATED = 'Terminated'
    LIMIT_PRICE_CHANGED = 'Limit Price Changed'
    VOLUMES_ATTACHED = 'Volumes Attached'
    VOLUMES_REMOVED = 'Volumes Removed'


class KubernetesClusterStatus(str, enum.Enum):
    PENDING = 'Pending'
    AVAILABLE = 'Available'
    TERMINATED = 'Terminated'


K8S_VERSIONS = ('1.34', '1.29')
DEFAULT_K8S_VERSION = '1.34'
KUBE_API_PORT = 6443

BOOT_SEQUENCE = (InstanceStatus.NEW, InstanceStatus.CONFIRMED,
                 InstanceStatus.SCHEDULED, InstanceStatus.INITIALIZING,
                 InstanceStatus.STARTING, InstanceStatus.RUNNING)
# Emulated seconds spent in each boot status before the next (60 s in all).
DEFAULT_BOOT_DURATIONS_S: Mapping[InstanceStatus, float] = {
    InstanceStatus.NEW: 5.0,
    InstanceStatus.CONFIRMED: 10.0,
    InstanceStatus.SCHEDULED: 10.0,
    InstanceStatus.INITIALIZING: 25.0,
    InstanceStatus.STARTING: 10.0,
}
_CAPACITY_HOLDERS = (BidStatus.ALLOCATED, BidStatus.PREEMPTING)


class MarketError(Exception):
    """A request the market refuses."""


class NotFound(MarketError):
    """An unknown fid (or instance type / region pair)."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f'{kind} {key} not found')
        self.kind = kind
        self.key = key


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One entry of a 422 body: where (`loc`, as FastAPI writes it), what, which kind."""

    loc: Loc
    msg: str
    type: str = 'value_error'


class InvalidRequest(MarketError):
    """The request is well-formed but not acceptable (HTTP 422)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__('; '.join(f'{e.loc}: {e.msg}' for e in errors))
        self.errors = list(errors)


class InvalidState(MarketError):
    """A control action that does not apply to the entity's current state."""


class _Host(enum.Enum):
    """Where an instance's host is, so each host hook is called only when it applies."""
    NONE = 'none'
    UP = 'up'
    DOWN = 'down'


@dataclasses.dataclass
class Project:
    fid: str
    name: str
    created_at: datetime.datetime


@dataclasses.dataclass
class User:
    fid: str
    id: str
    email: str
    organization_id: str
    user_name: str


@dataclasses.dataclass
class InstanceType:
    """Specs from the catalog; `fid` is stable per name."""

    fid: str
    name: str
    num_cpus: int
    cpu_type: str
    ram_gb: int
    num_gpus: int
    gpu_type: str
    gpu_memory_gb: int
    gpu_socket: str
    local_storage_gb: int
    ib_count: int
    bridge_count: int
    network_type: Optional[str]


@dataclasses.dataclass
class Auction:
    """One (instance type, region) market. `live_bids`: its bids that take part
    in clearings (not terminated, not fillers), in submission order."""

    fid: str
    instance_type: InstanceType
    region: str
    capacity: int
    spot_price: Decimal
    minimum_price: Decimal
    last_instance_price: Optional[Decimal] = None
    price_script: List[PricePoint] = dataclasses.field(default_factory=list)
    walk_volatility: Optional[float] = None
    price_history: List[PricePoint] = dataclasses.field(default_factory=list)
    live_bids: List['Bid'] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SshKey:
    fid: str
    name: str
    project: str
    public_key: str
    created_at: datetime.datetime
    required: bool


@dataclasses.dataclass
class Volume:
    """A project's persistent volume in one region."""

    fid: str
    name: str
    project: str
    region: str
    interface: VolumeInterface
    capacity_gb: int
    created_at: datetime.datetime

    @property
    def vm_path(self) -> str:
        """Where a VM the volume is attached to sees it."""
        return volume_vm_path(self.interface, self.name, self.fid)

    def attachment(self) -> VolumeAttachment:
        """What a host backend needs to attach the volume."""
        return VolumeAttachment(fid=self.fid, name=self.name,
                                interface=self.interface, region=self.region,
                                capacity_gb=self.capacity_gb)


@dataclasses.dataclass
class LaunchSpecification:
    ssh_keys: List[str]
    volumes: List[str]
    startup_script: Optional[str] = None
    kubernetes_cluster: Optional[str] = None
    image_version: Optional[str] = None
    memory_gb: Optional[int] = None


@dataclasses.dataclass
class BidEvent:
    timestamp: datetime.datetime
    event_type: BidEventType
    limit_price: Optional[Decimal] = None
    user_id: Optional[str] = None


@dataclasses.dataclass
class Instance:
    """One instance of a bid; `host` tracks which host hooks apply, `epoch`
    moves on every state change so pending boot or stop steps are ignored."""

    fid: str
    name: str
    project: str
    created_at: datetime.datetime
    created_by: str
    bid_fid: str
    instance_type: InstanceType
    region: str
    order: int
    status: InstanceStatus = InstanceStatus.NEW
    address: Optional[HostAddress] = None
    price_paid: Optional[Decimal] = None
    end_time: Optional[datetime.datetime] = None
    host: _Host = _Host.NONE
    epoch: int = 0


@dataclasses.dataclass
class Bid:
    """A spot bid. `order` ranks equal limits (submission order); `epoch` moves
    on every state change so timers set before it are ignored."""

    fid: str
    name: str
    project: str
    created_by: str
    created_at: datetime.datetime
    limit_price: Decimal
    instance_quantity: int
    auction: Auction
    launch_specification: LaunchSpecification
    order: int
    status: BidStatus = BidStatus.OPEN
    instances: List[Instance] = dataclasses.field(default_factory=list)
    deactivated_at: Optional[datetime.datetime] = None
    price_paid: Optional[Decimal] = None
    preemption_end_time: Optional[datetime.datetime] = None
    events: List[BidEvent] = dataclasses.field(default_factory=list)
    filler: bool = False
    epoch: int = 0

    @property
    def region(self) -> str:
        return self.auction.region

    @property
    def instance_type(self) -> InstanceType:
        return self.auction.instance_type


@dataclasses.dataclass
class KubernetesCluster:
    """A Kubernetes cluster: a control node (a host the market owns, not an
    instance) that bids join as workers. `token` authenticates its kube API."""

    fid: str
    name: str
    project: str
    region: str
    created_at: datetime.datetime
    k8s_version: str
    ssh_keys: List[str]
    instance_type: InstanceType
    control_node_fid: str
    token: str
    image_version: Optional[str] = None
    status: KubernetesClusterStatus = KubernetesClusterStatus.PENDING
    address: Optional[HostAddress] = None
    deleted_at: Optional[datetime.datetime] = None
    epoch: int = 0

    @property
    def kube_host(self) -> Optional[str]:
        return self.address.ssh_destination if self.address else None

    @property
    def join_command(self) -> Optional[str]:
        if self.address is None:
            return None
        digest = hashlib.sha256(self.token.encode()).hexdigest()
        return (f'kubeadm join {self.address.private_ip}:{KUBE_API_PORT} '
                f'--token {self.token[:6]}.{self.token[6:22]} '
                f'--discovery-token-ca-cert-hash sha256:{digest}')


@dataclasses.dataclass(frozen=True)
class PriceQuote:
    """What /v2/pricing/current reports for one auction."""

    spot_price: Decimal
    minimum_price: Decimal
    lowest_allocated_limit: Optional[Decimal]
    win_price: Optional[Decimal]
    free_capacity: int
    capacity: int


@dataclasses.dataclass(frozen=True)
class Quota:
    """One /v2/quotas row: spot instances of one type, or volume storage."""

    fid: str
    project: str
    product_type: str
    name: str
    units: str
    total_quantity: int
    used_quantity: int
    instance_type: Optional[InstanceType] = None


@dataclasses.dataclass(order=True)
class _Due:
    at: datetime.datetime
    sequence: int
    action: Callable[[], None] = dataclasses.field(compare=False)


_Method = TypeVar('_Method', bound=Callable[..., Any])


def _caught_up(method: _Method) -> _Method:
    """Runs everything due up to `clock.now()` before the method."""

    @functools.wraps(method)
    def wrapper(self: 'Market', *args: Any, **kwargs: Any) -> Any:
        self.tick()
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _stable_fid(prefix: str, key: str) -> str:
    return f'{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:16]}'


def _instance_type_from_row(row: Mapping[str, str]) -> InstanceType:
    """Specs from a catalog row; fields the catalog lacks get plausible placeholders."""
    name = row['InstanceType']
    num_gpus = int(float(row['AcceleratorCount']))
    gpu_info = ast.literal_eval(row['GpuInfo']) if row.get('GpuInfo') else {}
    gpus = gpu_info.get('Gpus') or [{}]
    gpu_memory_mib = gpus[0].get('MemoryInfo', {}).get('SizeInMiB', 0)
    ib_count = num_gpus if num_gpus >= 8 else 0
    return InstanceType(fid=_stable_fid('it', name),
                        name=name,
                        num_cpus=int(float(row['vCPUs'])),
                        cpu_type='Emulated Xeon',
                        ram_gb=int(float(row['MemoryGiB'])),
                        num_gpus=num_gpus,
                        gpu_type=row['AcceleratorName'],
                        gpu_memory_gb=int(gpu_memory_mib) // 1024,
                        gpu_socket='SXM' if '.sxm' in name else 'PCIe',
                        local_storage_gb=1000 * num_gpus,
                        ib_count=ib_count,
                        bridge_count=0,
                        network_type='InfiniBand' if ib_count else 'Ethernet')


def _parse_limit_price(value: Any, loc: Loc) -> Decimal:
    """Reads a "$x.yy" limit price (positive, at most cents); raises InvalidRequest."""
    error = InvalidRequest([
        FieldError(loc, 'limit_price must be a positive dollar amount such '
                   'as "$12.50"')
    ])
    if not isinstance(value, str) or not value.strip().startswith('$'):
        raise error
    try:
        amount = money.parse_dollars(value)
    except money.MoneyFormatError as e:
        raise error from e
    if amount <= 0 or amount != amount.quantize(money.CENT):
        raise error
    return amount


def _downsample(points: Sequence[PricePoint], count: int) -> List[PricePoint]:
    """At most `count` points spread evenly, always keeping the latest."""
    if len(points) <= count:
        return list(points)
    if count == 1:
        return [points[-1]]
    last = len(points) - 1
    return [points[round(i * last / (count - 1))] for i in range(count)]


class Market:
    """The auction market, driven by `clock`; see the module docstring for its rules."""

    def __init__(
        self,
        clock: Clock,
        hosts: HostBackend,
        catalog: Iterable[Mapping[str, str]],
        *,
        capacity: int = DEFAULT_CAPACITY,
        clearing_interval_s: float = 120.0,
        preemption_notice_s: float = 300.0,
        boot_durations_s: Optional[Mapping[InstanceStatus, float]] = None,
        stop_duration_s: float = 10.0,
        k8s_boot_s: float = 60.0,
        seed: int = 0,
    ) -> None:
        if clearing_interval_s <= 0:
            raise ValueError('clearing_interval_s must be positive')
        self.clock = clock
        self.hosts = hosts
        self.clearing_interval_s = clearing_interval_s
        self.preemption_notice_s = preemption_notice_s
        self.boot_durations_s = {**DEFAULT_BOOT_DURATIONS_S,
                                 **(boot_durations_s or {})}
        self.stop_duration_s = stop_duration_s
        self.k8s_boot_s = k8s_boot_s
        self.control_node_ready: Optional[
            Callable[[KubernetesCluster], None]] = None
        self._control_key: Optional[Tuple[str, str]] = None
        self._id_rng = random.Random(f'{seed}:ids')
        self._price_rng = random.Random(f'{seed}:prices')
        self._now = clock.now()
        self._due: List[_Due] = []
        self._sequence = itertools.count()
        self._order = itertools.count()
        self._fids: Set[str] = set()
        self.project = Project(PROJECT_FID, PROJECT_NAME, self._now)
        self.user = User(fid=USER_FID,
                         id='00000000-0000-4000-8000-000000000001',
                         email='emulator@localhost',
                         organization_id='org_emulator',
                         user_name='emulator')
        self._instance_types: Dict[str, InstanceType] = {}
        self._auctions: Dict[Tuple[str, str], Auction] = {}
        for row in catalog:
            self._add_auction(row, capacity)
        if not self._auctions:
            raise ValueError('the catalog has no rows')
        self._ssh_keys: Dict[str, SshKey] = {}
        self._bids: Dict[str, Bid] = {}
        self._instances: Dict[str, Instance] = {}
        self._k8s_clusters: Dict[str, KubernetesCluster] = {}
        self._volumes: Dict[str, Volume] = {}
        self._after(clearing_interval_s, self._clearing)

    def _add_auction(self, row: Mapping[str, str], capacity: int) -> None:
        instance_type = _instance_type_from_row(row)
        instance_type = self._instance_types.setdefault(instance_type.fid,
                                                        instance_type)
        region = row['Region']
        key = (instance_type.fid, region)
        if key in self._auctions:
            return
        spot_price = money.parse_dollars(row['SpotPrice']).quantize(money.CENT)
        self._auctions[key] = Auction(
            fid=_stable_fid('auc', f'{instance_type.name}@{region}'),
            instance_type=instance_type,
            region=region,
            capacity=capacity,
            spot_price=spot_price,
            minimum_price=money.parse_dollars(row['Price']).quantize(
                money.CENT))

    # Time.

    @property
    def now(self) -> datetime.datetime:
        """The emulated time the market has been brought up to."""
        return self._now

    def tick(self) -> None:
        """Runs everything due up to `clock.now()`."""
        self.advance_to(self.clock.now())

    def advance_to(self, when: datetime.datetime) -> None:
        """Runs, in time order, everything due up to `when`."""
        while self._due and self._due[0].at <= when:
            due = heapq.heappop(self._due)
            self._now = max(self._now, due.at)
            due.action()
        self._now = max(self._now, when)

    def advance(self, seconds: float) -> datetime.datetime:
        """Moves the clock `seconds` ahead and runs everything due; returns the new time."""
        self.clock.advance(seconds)
        self.tick()
        return self._now

    def _after(self, delay_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(
            self._due,
            _Due(self._now + datetime.timedelta(seconds=delay_s),
                 next(self._sequence), action))

    def _timer(self, entity: Union[Bid, Instance, KubernetesCluster],
               delay_s: float,
               action: Callable[[], None]) -> None:
        """Schedules `action` unless `entity` changes state first (its epoch moves)."""
        epoch = entity.epoch

        def guarded() -> None:
            if entity.epoch == epoch:
                action()

        self._after(delay_s, guarded)

    # Catalog and prices.

    @_caught_up
    def instance_types(self) -> List[InstanceType]:
        return list(self._instance_types.values())

    @_caught_up
    def auctions(self) -> List[Auction]:
        return list(self._auctions.values())

    def _instance_type(self, name_or_fid: str) -> InstanceType:
        if name_or_fid in self._instance_types:
            return self._instance_types[name_or_fid]
        for instance_type in self._instance_types.values():
            if instance_type.name == name_or_fid:
                return instance_type
        raise NotFound('Instance type', name_or_fid)

    def auction(self, instance_type: str, region: str) -> Auction:
        """The auction for an instance type (name or fid) in `region`."""
        auction = self._auctions.get(
            (self._instance_type(instance_type).fid, region))
        if auction is None:
            raise NotFound('Auction', f'{instance_type}@{region}')
        return auction

    @_caught_up
    def free_capacity(self, auction: Auction) -> int:
        """Capacity not held by Allocated or Preempting bids (never negative)."""
        return self._free_capacity(auction)

    def _free_capacity(self, auction: Auction) -> int:
        held = sum(bid.instance_quantity
                   for bid in auction.live_bids
                   if bid.status in _CAPACITY_HOLDERS)
        return max(0, auction.capacity - held)

    @_caught_up
    def current_prices(self,
                       instance_type: str,
                       region: Optional[str] = None,
                       instance_quantity: int = 1) -> PriceQuote:
        """Prices of one auction; without a region, of the type's cheapest region."""
        if region is not None:
            auction = self.auction(instance_type, region)
        else:
            fid = self._instance_type(instance_type).fid
            auction = min(
                (a for a in self._auctions.values()
                 if a.instance_type.fid == fid),
                key=lambda a: (a.spot_price, a.region))
        limits = [
            bid.limit_price
            for bid in auction.live_bids
            if bid.status in _CAPACITY_HOLDERS
        ]
        return PriceQuote(spot_price=auction.spot_price,
                          minimum_price=auction.minimum_price,
                          lowest_allocated_limit=min(limits, default=None),
                          win_price=self._win_price(auction,
                                                    instance_quantity),
                          free_capacity=self._free_capacity(auction),
                          capacity=auction.capacity)

    def _win_price(self, auction: Auction, quantity: int) -> Optional[Decimal]:
        """The lowest limit a new bid for `quantity` would win with at the next
        clearing at today's spot price; None if it cannot win at any price."""
        spot = auction.spot_price
        rivals = self._open_bids_by_priority(auction)
        candidates = sorted({spot} | {
            bid.limit_price + money.CENT
            for bid in rivals
            if bid.limit_price >= spot
        })
        for limit in candidates:
            free = self._free_capacity(auction)
            for rival in rivals:
                if rival.limit_price >= limit and rival.instance_quantity <= free:
                    free -= rival.instance_quantity
            if quantity <= free:
                return limit
        return None

    @_caught_up
    def price_history(
        self,
        instance_types: Optional[Sequence[str]] = None,
        region: Optional[str] = None,
        *,
        start: Optional[datetime.datetime] = None,
        end: Optional[datetime.datetime] = None,
        num_samples: int = 100,
    ) -> List[Tuple[Auction, List[PricePoint]]]:
        """Spot-price samples per auction in [start, end], at most `num_samples` each."""
        wanted = ({self._instance_type(t).fid for t in instance_types}
                  if instance_types else None)
        series = []
        for auction in self._auctions.values():
            if wanted is not None and auction.instance_type.fid not in wanted:
                continue
            if region is not None and auction.region != region:
                continue
            points = [(t, price)
                      for t, price in auction.price_history
                      if (start is None or t >= start) and
                      (end is None or t <= end)]
            series.append((auction, _downsample(points, num_samples)))
        return series

    @_caught_up
    def set_price(self, instance_type: str, region: str,
                  price: money.MoneyInput) -> Auction:
        """Fixes the spot price now (dropping any script or random walk); bids
        react at the next clearing."""
        auction = self.auction(instance_type, region)
        auction.spot_price = money.parse_dollars(price).quantize(money.CENT)
        auction.price_script = []
        auction.walk_volatility = None
        return auction

    @_caught_up
    def script_prices(self, instance_type: str, region: str,
                      points: Sequence[Tuple[datetime.datetime,
                                             money.MoneyInput]]) -> Auction:
        """Future spot prices: each takes effect at the first clearing at or after its time."""
        auction = self.auction(instance_type, region)
        auction.price_script = sorted(
            (t, money.parse_dollars(p).quantize(money.CENT)) for t, p in points)
        auction.walk_volatility = None
        return auction

    @_caught_up
    def start_random_walk(self,
                          instance_type: str,
                          region: str,
                          volatility: float = 0.1) -> Auction:
        """At each clearing the spot price is multiplied by exp(N(0, volatility)),
        floored at the auction's minimum price (seeded, so reproducible)."""
        auction = self.auction(instance_type, region)
        auction.walk_volatility = volatility
        auction.price_script = []
        return auction

    @_caught_up
    def script_history(self, instance_type: str, region: str,
                       points: Sequence[Tuple[datetime.datetime,
                                              money.MoneyInput]]) -> Auction:
        """Adds past spot-price samples to the auction's history (for pricing tests)."""
        auction = self.auction(instance_type, region)
        for t, price in points:
            bisect.insort(auction.price_history,
                          (t, money.parse_dollars(price).quantize(money.CENT)))
        del auction.price_history[:-PRICE_HISTORY_LIMIT]
        return auction

    @_caught_up
    def set_capacity(self, instance_type: str, region: str,
                     capacity: int) -> Auction:
        """Sets an auction's capacity; allocated bids keep theirs if it shrinks."""
        if capacity < 0:
            raise InvalidRequest([
                FieldError(('body', 'capacity'), 'capacity must be >= 0',
                           'greater_than_equal')
            ])
        auction = self.auction(instance_type, region)
        auction.capacity = capacity
        return auction

    # SSH keys.

    @_caught_up
    def ssh_keys(self, project: str) -> List[SshKey]:
        if project != self.project.fid:
            raise NotFound('Project', project)
        return [key for key in self._ssh_keys.values() if key.project == project]

    @_caught_up
    def create_ssh_key(self,
                       project: str,
                       name: str,
                       public_key: Optional[str] = None,
                       required: bool = False) -> Tuple[SshKey, Optional[str]]:
        """Registers a key; without `public_key` generates a pair and also
        returns its private key (OpenSSH PEM), as Mithril does."""
        if project != self.project.fid:
            raise InvalidRequest([
                FieldError(('body', 'project'), f'Project {project} not found')
            ])
        if not name.strip():
            raise InvalidRequest([
                FieldError(('body', 'name'), 'name must not be empty',
                           'string_too_short')
            ])
        private_key = None
        if public_key is None:
            public_key, private_key = _generate_key_pair()
        elif not public_key.strip().startswith(('ssh-', 'ecdsa-', 'sk-')):
            raise InvalidRequest([
                FieldError(('body', 'public_key'),
                           'public_key is not an OpenSSH public key')
            ])
        key = SshKey(fid=self._new_fid('sshkey'),
                     name=name,
                     project=project,
                     public_key=public_key.strip(),
                     created_at=self._now,
                     required=required)
        self._ssh_keys[key.fid] = key
        return key, private_key

    # Bids.

    def _new_fid(self, prefix: str) -> str:
        alphabet = string.ascii_letters + string.digits
        while True:
            fid = f'{prefix}_' + ''.join(self._id_rng.choices(alphabet, k=16))
            if fid not in self._fids:
                self._fids.add(fid)
                return fid

    @_caught_up
    def create_bid(self,
                   *,
                   project: str,
                   region: str,
                   instance_type: str,
                   limit_price: str,
                   instance_quantity: int,
                   name: str,
                   ssh_keys: Sequence[str] = (),
                   volumes: Sequence[str] = (),
                   startup_script: Optional[str] = None,
                   kubernetes_cluster: Optional[str] = None,
                   image_version: Optional[str] = None,
                   memory_gb: Optional[int] = None) -> Bid:
        """Places an Open bid, evaluated at the next clearing; raises InvalidRequest."""
        errors: List[FieldError] = []
        spec_loc: Loc = ('body', 'launch_specification')
        if project != self.project.fid:
            errors.append(
                FieldError(('body', 'project'), f'Project {project} not found'))
        auction = None
        if instance_type not in self._instance_types:
            errors.append(
                FieldError(('body', 'instance_type'),
                           f'Instance type {instance_type} not found'))
        else:
            auction = self._auctions.get((instance_type, region))
            if auction is None:
                errors.append(
                    FieldError(('body', 'region'),
                               f'No auction for instance type '
                               f'{instance_type} in region {region}'))
        if instance_quantity < 1:
            errors.append(
                FieldError(('body', 'instance_quantity'),
                           'Input should be greater than or equal to 1',
                           'greater_than_equal'))
        price = None
        try:
            price = _parse_limit_price(limit_price, ('body', 'limit_price'))
        except InvalidRequest as e:
            errors.extend(e.errors)
        if not name.strip():
            errors.append(
                FieldError(('body', 'name'), 'name must not be empty',
                           'string_too_short'))
        for index, key_fid in enumerate(ssh_keys):
            key = self._ssh_keys.get(key_fid)
            if key is None or key.project != project:
                errors.append(
                    FieldError(spec_loc + ('ssh_keys', index),
                               f'SSH key {key_fid} not found in project'))
        errors.extend(
            self._volume_errors(project, region, volumes,
                                spec_loc + ('volumes',)))
        if image_version is not None and image_version != IMAGE_VERSION_FID:
            errors.append(
                FieldError(spec_loc + ('image_version',),
                           f'Image version {image_version} not found'))
        if kubernetes_cluster is not None:
            cluster = self._k8s_clusters.get(kubernetes_cluster)
            if (cluster is None or cluster.project != project or
                    cluster.status == KubernetesClusterStatus.TERMINATED):
                errors.append(
                    FieldError(spec_loc + ('kubernetes_cluster',),
                               f'Kubernetes cluster {kubernetes_cluster} not '
                               'found in project (or terminated)'))
        if memory_gb is not None:
            errors.append(
                FieldError(spec_loc + ('memory_gb',),
                           'Memory is not adjustable in this auction'))
        if errors:
            raise InvalidRequest(errors)
        assert auction is not None and price is not None
        bid = Bid(fid=self._new_fid('bid'),
                  name=name,
                  project=project,
                  created_by=self.user.fid,
                  created_at=self._now,
                  limit_price=price,
                  instance_quantity=instance_quantity,
                  auction=auction,
                  launch_specification=LaunchSpecification(
                      ssh_keys=list(ssh_keys),
                      volumes=list(volumes),
                      startup_script=startup_script,
                      kubernetes_cluster=kubernetes_cluster,
                      image_version=image_version),
                  order=next(self._order))
        self._bids[bid.fid] = bid
        auction.live_bids.append(bid)
        self._record(bid, BidEventType.PLACED, limit_price=price,
                     by_user=True)
        return bid

    def _volume_errors(self,
                       project: str,
                       region: str,
                       volumes: Sequence[str],
                       loc: Loc,
                       bid: Optional[Bid] = None) -> List[FieldError]:
        """Why `bid` (a new bid when None) of `project` in `region` cannot
        list `volumes`, one error per refused entry."""
        errors = []
        for index, fid in enumerate(volumes):
            if fid in volumes[:index]:
                message: Optional[str] = f'Volume {fid} is listed more than once'
            else:
                message = self._why_not_attachable(project, region, fid, bid)
            if message is not None:
                errors.append(FieldError(loc + (index,), message))
        return errors

    def _why_not_attachable(self, project: str, region: str, fid: str,
                            bid: Optional[Bid]) -> Optional[str]:
        """Why volume `fid` cannot go with `bid`: unknown in `project`, in
        another region, or a block volume another live bid lists."""
        volume = self._volumes.get(fid)
        if volume is None or volume.project != project:
            return f'Volume {fid} not found in project'
        if volume.region != region:
            return (f'Volume {fid} is in region {volume.region}, not in the '
                    f'bid\'s region {region}')
        if volume.interface == VolumeInterface.BLOCK:
            for other in self.volume_bids(volume):
                if other is not bid:
                    return (f'Block volume {fid} is already attached to bid '
                            f'{other.fid} ({other.name}); a block volume '
                            'attaches to one bid at a time')
        return None

    @_caught_up
    def bid(self, fid: str) -> Bid:
        return self._find_bid(fid)

    def _find_bid(self, fid: str) -> Bid:
        bid = self._bids.get(fid)
        if bid is None:
            raise NotFound('Bid', fid)
        return bid

    @_caught_up
    def bids(self,
             *,
             project: Optional[str] = None,
             name: Optional[str] = None,
             status: Optional[BidStatus] = None,
             region: Optional[str] = None,
             instance_type: Optional[str] = None) -> List[Bid]:
        """Bids matching every given filter, in submission order."""
        return [
            bid for bid in self._bids.values()
            if (project is None or bid.project == project) and
            (name is None or bid.name == name) and
            (status is None or bid.status == status) and
            (region is None or bid.region == region) and
            (instance_type is None or bid.instance_type.fid == instance_type)
        ]

    @_caught_up
    def update_bid(self,
                   fid: str,
                   *,
                   limit_price: Optional[str] = None,
                   paused: Optional[bool] = None,
                   volumes: Optional[Sequence[str]] = None,
                   memory_gb: Optional[int] = None) -> Bid:
        """PATCH: a new limit (effective at the next clearing), pause or
        unpause, a new list of volumes (for the hosts' next start)."""
        bid = self._find_bid(fid)
        errors: List[FieldError] = []
        if bid.status == BidStatus.TERMINATED:
            errors.append(
                FieldError(('path', 'bid_fid'), f'Bid {fid} is terminated'))
        price = None
        if limit_price is not None:
            try:
                price = _parse_limit_price(limit_price, ('body', 'limit_price'))
            except InvalidRequest as e:
                errors.extend(e.errors)
        if volumes is not None:
            errors.extend(
                self._volume_errors(bid.project, bid.region, volumes,
                                    ('body', 'volumes'), bid))
        if memory_gb is not None:
            errors.append(
                FieldError(('body', 'memory_gb'),
                           'Memory is not adjustable in this auction'))
        if errors:
            raise InvalidRequest(errors)
        if price is not None and price != bid.limit_price:
            bid.limit_price = price
            self._record(bid, BidEventType.LIMIT_PRICE_CHANGED,
                         limit_price=price, by_user=True)
        if volumes is not None:
            self._replace_volumes(bid, volumes)
        if paused and bid.status != BidStatus.PAUSED:
            self._pause(bid)
        elif paused is False and bid.status == BidStatus.PAUSED:
            bid.status = BidStatus.OPEN
            self._record(bid, BidEventType.RESUMED, by_user=True)
        return bid

    def _replace_volumes(self, bid: Bid, volumes: Sequence[str]) -> None:
        """Gives the bid a new list of volumes, recording what came and went."""
        before, after = set(bid.launch_specification.volumes), set(volumes)
        bid.launch_specification.volumes = list(volumes)
        if after - before:
            self._record(bid, BidEventType.VOLUMES_ATTACHED, by_user=True)
        if before - after:
            self._record(bid, BidEventType.VOLUMES_REMOVED, by_user=True)

    @_caught_up
    def cancel_bid(self, fid: str) -> Bid:
        """DELETE: terminates the bid and its instances; a no-op if already terminated."""
        bid = self._find_bid(fid)
        if bid.status == BidStatus.TERMINATED:
            return bid
        bid.status = BidStatus.TERMINATED
        bid.epoch += 1
        bid.deactivated_at = self._now
        bid.price_paid = None
        bid.preemption_end_time = None
        if not bid.filler:
            bid.auction.live_bids.remove(bid)
        self._record(bid, BidEventType.TERMINATED, by_user=True)
        for instance in bid.instances:
            instance.epoch += 1
            instance.status = InstanceStatus.TERMINATED
            instance.price_paid = None
            if instance.host != _Host.NONE:
                self._call_host(instance, self.hosts.destroy)
                instance.host = _Host.NONE
        return bid

    @_caught_up
    def force_preempt(self, fid: str) -> Bid:
        """Starts a preemption notice on an allocated bid whatever the price (tests)."""
        bid = self._find_bid(fid)
        if bid.status != BidStatus.ALLOCATED or bid.filler:
            raise InvalidState(
                f'Bid {fid} is {bid.status.value}; only a non-filler '
                f'Allocated bid can be preempted')
        self._start_notice(bid)
        return bid

    def _record(self,
                bid: Bid,
                event_type: BidEventType,
                *,
                limit_price: Optional[Decimal] = None,
                by_user: bool = False) -> None:
        bid.events.append(
            BidEvent(timestamp=self._now,
                     event_type=event_type,
                     limit_price=limit_price,
                     user_id=self.user.fid if by_user else None))

    # Volumes.

    @_caught_up
    def volumes(self, project: str,
                region: Optional[str] = None) -> List[Volume]:
        """A project's volumes (only `region`'s when given), in creation order."""
        if project != self.project.fid:
            raise NotFound('Project', project)
        return [
            volume for volume in self._volumes.values()
            if volume.project == project and
            (region is None or volume.region == region)
        ]

    def _find_volume(self, fid: str) -> Volume:
        volume = self._volumes.get(fid)
        if volume is None:
            raise NotFound('Volume', fid)
        return volume

    @_caught_up
    def create_volume(self, *, project: str, name: str, interface: str,
                      region: str, size_gb: int) -> Volume:
        """A new, empty volume; raises InvalidRequest (the quota included)."""
        errors: List[FieldError] = []
        if project != self.project.fid:
            errors.append(
                FieldError(('body', 'project'), f'Project {project} not found'))
        if not any(a.region == region for a in self._auctions.values()):
            errors.append(
                FieldError(('body', 'region'), f'Region {region} not found'))
        kind = None
        try:
            kind = VolumeInterface(interface)
        except ValueError:
            errors.append(
                FieldError(('body', 'disk_interface'),
                           "disk_interface must be 'Block' or 'File'", 'enum'))
        if (not isinstance(size_gb, int) or isinstance(size_gb, bool) or
                not 1 <= size_gb <= MAX_VOLUME_GB):
            errors.append(
                FieldError(('body', 'size_gb'),
                           f'size_gb must be an integer from 1 to '
                           f'{MAX_VOLUME_GB}'))
        else:
            used = self._volume_storage_used(project)
            if used + size_gb > VOLUME_QUOTA_GB:
                errors.append(
                    FieldError(('body', 'size_gb'),
                               f'Storage quota of {VOLUME_QUOTA_GB} GB '
                               f'exceeded: {used} GB used, {size_gb} GB '
                               'requested'))
        errors.extend(self._volume_name_errors(project, name))
        if errors:
            raise InvalidRequest(errors)
        assert kind is not None
        volume = Volume(fid=self._new_fid('vol'),
                        name=name,
                        project=project,
                        region=region,
                        interface=kind,
                        capacity_gb=size_gb,
                        created_at=self._now)
        self._volumes[volume.fid] = volume
        return volume

    def _volume_name_errors(self,
                            project: str,
                            name: str,
                            renamed: Optional[Volume] = None) -> List[FieldError]:
        """Why `name` cannot name a volume of `project` (`renamed` may keep its own)."""
        loc: Loc = ('body', 'name')
        if not name.strip():
            return [FieldError(loc, 'name must not be empty', 'string_too_short')]
        if _BAD_VOLUME_NAME.search(name) or name in ('.', '..'):
            return [
                FieldError(loc, f'Volume name {name!r} is not a directory '
                           'name (no "/", spaces or control characters)')
            ]
        if any(v.name == name and v.project == project and v is not renamed
               for v in self._volumes.values()):
            return [
                FieldError(loc, f'A volume named {name} already exists in '
                           'the project')
            ]
        return []

    @_caught_up
    def rename_volume(self, fid: str, name: str) -> Volume:
        """PATCH: a new name; hosts see it at `/mnt/<name>` from their next start."""
        volume = self._find_volume(fid)
        errors = self._volume_name_errors(volume.project, name, volume)
        if errors:
            raise InvalidRequest(errors)
        volume.name = name
        return volume

    @_caught_up
    def delete_volume(self, fid: str) -> None:
        """Deletes a volume no live bid lists (InvalidState otherwise) and its data."""
        volume = self._find_volume(fid)
        attached = self.volume_bids(volume)
        if attached:
            raise InvalidState(
                f'Volume {fid} ({volume.name}) is attached to bid '
                f'{attached[0].fid} ({attached[0].name}); cancel the bid first.')
        del self._volumes[fid]
        try:
            self.hosts.delete_volume(fid)
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend failed to delete volume %s', fid)

    def volume_bids(self, volume: Volume) -> List[Bid]:
        """The live (not Terminated) bids that list `volume`, in submission order."""
        return [
            bid for bid in self._bids.values()
            if bid.status != BidStatus.TERMINATED and
            volume.fid in bid.launch_specification.volumes
        ]

    def volume_attachments(self, volume: Volume) -> Dict[str, str]:
        """Instance fid -> where that VM sees `volume`, for the live bids' instances."""
        return {
            instance.fid: volume.vm_path
            for bid in self.volume_bids(volume)
            for instance in bid.instances
            if instance.status != InstanceStatus.TERMINATED
        }

    def _volume_storage_used(self, project: str) -> int:
        return sum(v.capacity_gb
                   for v in self._volumes.values()
                   if v.project == project)

    # Kubernetes clusters.

    @_caught_up
    def create_kubernetes_cluster(self,
                                  *,
                                  project: str,
                                  name: str,
                                  region: str,
                                  instance_type: str,
                                  ssh_keys: Sequence[str] = (),
                                  k8s_version: str = DEFAULT_K8S_VERSION,
                                  image_version: Optional[str] = None
                                 ) -> KubernetesCluster:
        """A Pending cluster whose control node comes up after `k8s_boot_s`;
        raises InvalidRequest."""
        errors: List[FieldError] = []
        if project != self.project.fid:
            errors.append(
                FieldError(('body', 'project'), f'Project {project} not found'))
        if not name.strip():
            errors.append(
                FieldError(('body', 'name'), 'name must not be empty',
                           'string_too_short'))
        if not any(a.region == region for a in self._auctions.values()):
            errors.append(
                FieldError(('body', 'region'), f'Region {region} not found'))
        found_type = None
        try:
            found_type = self._instance_type(instance_type)
        except NotFound:
            errors.append(
                FieldError(('body', 'instance_type'),
                           f'Instance type {instance_type} not found'))
        if k8s_version not in K8S_VERSIONS:
            errors.append(
                FieldError(('body', 'k8s_version'),
                           f'k8s_version must be one of {list(K8S_VERSIONS)}'))
        for index, key_fid in enumerate(ssh_keys):
            key = self._ssh_keys.get(key_fid)
            if key is None or key.project != project:
                errors.append(
                    FieldError(('body', 'ssh_keys', index),
                               f'SSH key {key_fid} not found in project'))
        if errors:
            raise InvalidRequest(errors)
        assert found_type is not None
        cluster = KubernetesCluster(
            fid=self._new_fid('k8s'),
            name=name,
            project=project,
            region=region,
            created_at=self._now,
            k8s_version=k8s_version,
            ssh_keys=list(ssh_keys),
            instance_type=found_type,
            control_node_fid=self._new_fid('inst'),
            token=''.join(self._id_rng.choices(string.ascii_lowercase +
                                               string.digits, k=22)),
            image_version=image_version)
        self._k8s_clusters[cluster.fid] = cluster
        self._timer(cluster, self.k8s_boot_s,
                    lambda: self._bring_up_control_node(cluster))
        return cluster

    @_caught_up
    def kubernetes_cluster(self, fid: str) -> KubernetesCluster:
        cluster = self._k8s_clusters.get(fid)
        if cluster is None:
            raise NotFound('Kubernetes cluster', fid)
        return cluster

    @_caught_up
    def kubernetes_clusters(self, project: str) -> List[KubernetesCluster]:
        """A project's clusters (terminated ones too), in creation order."""
        if project != self.project.fid:
            raise NotFound('Project', project)
        return [c for c in self._k8s_clusters.values() if c.project == project]

    def cluster_instances(self, cluster: KubernetesCluster) -> List[Instance]:
        """Instances of the live bids that joined `cluster`, in creation order."""
        return [
            instance for bid in self._bids.values()
            if bid.launch_specification.kubernetes_cluster == cluster.fid and
            bid.status != BidStatus.TERMINATED for instance in bid.instances
        ]

    @_caught_up
    def delete_kubernetes_cluster(self, fid: str) -> KubernetesCluster:
        """Terminates the cluster and removes its control node; idempotent."""
        cluster = self.kubernetes_cluster(fid)
        if cluster.status == KubernetesClusterStatus.TERMINATED:
            return cluster
        cluster.status = KubernetesClusterStatus.TERMINATED
        cluster.epoch += 1
        cluster.deleted_at = self._now
        if cluster.address is not None:
            try:
                self.hosts.destroy(cluster.control_node_fid)
            except Exception:  # pylint: disable=broad-except
                logger.exception('Host backend failed to remove control node '
                                 '%s', cluster.control_node_fid)
        return cluster

    @property
    def control_node_private_key(self) -> str:
        """The private half of the key every control node also accepts, so the
        emulator can set the node up (OpenSSH PEM)."""
        return self._control_key_pair()[1]

    def _control_key_pair(self) -> Tuple[str, str]:
        if self._control_key is None:
            self._control_key = _generate_key_pair()
        return self._control_key

    def _bring_up_control_node(self, cluster: KubernetesCluster) -> None:
        """Creates the control node's host; the cluster stays Pending if the
        backend fails (logged)."""
        keys = [self._ssh_keys[fid].public_key for fid in cluster.ssh_keys]
        keys.append(self._control_key_pair()[0])
        try:
            cluster.address = self.hosts.create(cluster.control_node_fid,
                                                list(dict.fromkeys(keys)))
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend failed to start the control node '
                             'of %s', cluster.fid)
            return
        cluster.status = KubernetesClusterStatus.AVAILABLE
        if self.control_node_ready is not None:
            try:
                self.control_node_ready(cluster)
            except Exception:  # pylint: disable=broad-except
                logger.exception('Setting up the control node of %s failed',
                                 cluster.fid)

    # Instances.

    @_caught_up
    def instance(self, fid: str) -> Instance:
        instance = self._instances.get(fid)
        if instance is None:
            raise NotFound('Instance', fid)
        return instance

    @_caught_up
    def instances(self,
                  project: str,
                  *,
                  bid_fids: Optional[Sequence[str]] = None,
                  statuses: Optional[Sequence[InstanceStatus]] = None,
                  region: Optional[str] = None,
                  instance_type: Optional[str] = None) -> List[Instance]:
        """A project's instances matching every given filter, in creation order."""
        if project != self.project.fid:
            raise NotFound('Project', project)
        bid_set = set(bid_fids) if bid_fids is not None else None
        status_set = set(statuses) if statuses is not None else None
        return [
            instance for instance in self._instances.values()
            if instance.project == project and
            (bid_set is None or instance.bid_fid in bid_set) and
            (status_set is None or instance.status in status_set) and
            (region is None or instance.region == region) and
            (instance_type is None or
             instance.instance_type.fid == instance_type)
        ]

    @_caught_up
    def quotas(self, project: str) -> List[Quota]:
        """Spot capacity per instance type (the sum over regions, and what
        the project holds), then the project's volume storage."""
        if project != self.project.fid:
            raise NotFound('Project', project)
        quotas = []
        for instance_type in self._instance_types.values():
            auctions = [
                a for a in self._auctions.values()
                if a.instance_type is instance_type
            ]
            used = sum(bid.instance_quantity
                       for a in auctions
                       for bid in a.live_bids
                       if bid.project == project and
                       bid.status in _CAPACITY_HOLDERS)
            quotas.append(
                Quota(fid=_stable_fid('quota', instance_type.name),
                      project=project,
                      product_type='spot',
                      name=instance_type.name,
                      units='instances',
                      total_quantity=sum(a.capacity for a in auctions),
                      used_quantity=used,
                      instance_type=instance_type))
        quotas.append(
            Quota(fid=_stable_fid('quota', 'storage'),
                  project=project,
                  product_type='storage',
                  name='storage',
                  units='GB',
                  total_quantity=VOLUME_QUOTA_GB,
                  used_quantity=self._volume_storage_used(project)))
        return quotas

    @_caught_up
    def add_filler_instances(self,
                             count: int,
                             *,
                             instance_type: Optional[str] = None,
                             region: Optional[str] = None) -> List[Bid]:
        """`count` one-instance bids, already Allocated and RUNNING at placeholder
        addresses, named `filler-<n>`; no host backend calls, no auction capacity.
        Default auction: the catalog's first."""
        auction = (self.auction(instance_type, region or '')
                   if instance_type is not None else next(
                       iter(self._auctions.values())))
        bids = []
        for _ in range(count):
            order = next(self._order)
            bid = Bid(fid=self._new_fid('bid'),
                      name=f'filler-{order}',
                      project=self.project.fid,
                      created_by=self.user.fid,
                      created_at=self._now,
                      limit_price=auction.spot_price,
                      instance_quantity=1,
                      auction=auction,
                      launch_specification=LaunchSpecification([], []),
                      order=order,
                      status=BidStatus.ALLOCATED,
                      price_paid=auction.spot_price,
                      filler=True)
            self._record(bid, BidEventType.PLACED,
                         limit_price=bid.limit_price)
            self._record(bid, BidEventType.ALLOCATED)
            instance = self._new_instance(bid, 0)
            instance.status = InstanceStatus.RUNNING
            instance.price_paid = bid.price_paid
            instance.address = HostAddress(
                ssh_destination=f'127.79.{order // 254 % 256}.{order % 254 + 1}',
                private_ip=f'127.80.{order // 254 % 256}.{order % 254 + 1}')
            self._bids[bid.fid] = bid
            bids.append(bid)
        return bids

    def _new_instance(self, bid: Bid, index: int) -> Instance:
        instance = Instance(fid=self._new_fid('inst'),
                            name=f'{bid.name}-{index}',
                            project=bid.project,
                            created_at=self._now,
                            created_by=bid.created_by,
                            bid_fid=bid.fid,
                            instance_type=bid.instance_type,
                            region=bid.region,
                            order=next(self._order))
        bid.instances.append(instance)
        self._instances[instance.fid] = instance
        return instance

    # The clearing and what it sets in motion.

    def _clearing(self) -> None:
        for auction in self._auctions.values():
            self._clear(auction)
        self._after(self.clearing_interval_s, self._clearing)

    def _open_bids_by_priority(self, auction: Auction) -> List[Bid]:
        return sorted((b for b in auction.live_bids
                       if b.status == BidStatus.OPEN),
                      key=lambda b: (-b.limit_price, b.order))

    def _clear(self, auction: Auction) -> None:
        auction.spot_price = self._next_spot_price(auction)
        auction.price_history.append((self._now, auction.spot_price))
        del auction.price_history[:-PRICE_HISTORY_LIMIT]
        for bid in list(auction.live_bids):
            if (bid.status == BidStatus.ALLOCATED and
                    bid.limit_price < auction.spot_price):
                self._start_notice(bid)
        free = self._free_capacity(auction)
        winners: List[Bid] = []
        lost_limits: List[Decimal] = []
        for bid in self._open_bids_by_priority(auction):
            if bid.limit_price < auction.spot_price:
                break
            if bid.instance_quantity <= free:
                winners.append(bid)
                free -= bid.instance_quantity
            else:
                lost_limits.append(bid.limit_price)
        clearing_price = max([auction.spot_price, *lost_limits])
        for bid in winners:
            self._allocate(bid, min(clearing_price, bid.limit_price))

    def _next_spot_price(self, auction: Auction) -> Decimal:
        if auction.price_script:
            price = auction.spot_price
            while auction.price_script and auction.price_script[0][0] <= self._now:
                price = auction.price_script.pop(0)[1]
            return price
        if auction.walk_volatility:
            factor = Decimal(
                repr(math.exp(self._price_rng.gauss(0.0,
                                                    auction.walk_volatility))))
            return max(auction.minimum_price,
                       (auction.spot_price * factor).quantize(money.CENT))
        return auction.spot_price

    def _allocate(self, bid: Bid, price: Decimal) -> None:
        bid.status = BidStatus.ALLOCATED
        bid.price_paid = price
        bid.auction.last_instance_price = price
        self._record(bid, BidEventType.ALLOCATED)
        if not bid.instances:
            for index in range(bid.instance_quantity):
                self._new_instance(bid, index)
        for instance in bid.instances:
            if instance.status == InstanceStatus.STOPPING:
                self._finish_stopping(instance)
            instance.epoch += 1
            instance.price_paid = price
            instance.end_time = None
            self._boot_step(instance, InstanceStatus.NEW)

    def _boot_step(self, instance: Instance, status: InstanceStatus) -> None:
        instance.status = status
        if status == InstanceStatus.STARTING and not self._bring_up_host(
                instance):
            return
        if status == InstanceStatus.RUNNING:
            return
        following = BOOT_SEQUENCE[BOOT_SEQUENCE.index(status) + 1]
        self._timer(instance, self.boot_durations_s[status],
                    lambda: self._boot_step(instance, following))

    def _bring_up_host(self, instance: Instance) -> bool:
        """Creates (first boot) or resumes the host with the bid's volumes; a
        failing backend puts the instance in STATUS_ERROR."""
        bid = self._bids[instance.bid_fid]
        volumes = [
            self._volumes[fid].attachment()
            for fid in bid.launch_specification.volumes
        ]
        # Only when there are some, so backends that predate volumes still work.
        with_volumes: Dict[str, Any] = {'volumes': volumes} if volumes else {}
        try:
            if instance.host == _Host.NONE:
                instance.address = self.hosts.create(
                    instance.fid, self._public_keys(bid), **with_volumes)
            else:
                instance.address = self.hosts.resume(instance.fid,
                                                     **with_volumes)
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend failed to start %s', instance.fid)
            instance.status = InstanceStatus.ERROR
            return False
        instance.host = _Host.UP
        return True

    def _public_keys(self, bid: Bid) -> List[str]:
        """The bid's keys plus the project's required keys, without duplicates."""
        fids = list(bid.launch_specification.ssh_keys) + [
            key.fid for key in self._ssh_keys.values()
            if key.required and key.project == bid.project
        ]
        return list(dict.fromkeys(self._ssh_keys[fid].public_key for fid in fids))

    def _call_host(self, instance: Instance, hook: Callable[..., Any],
                   **kwargs: Any) -> None:
        """Calls a host hook whose failure must not stop the market; logs it."""
        try:
            hook(instance.fid, **kwargs)
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend %s failed for %s', hook.__name__,
                             instance.fid)

    def _start_notice(self, bid: Bid) -> None:
        end_time = self._now + datetime.timedelta(
            seconds=self.preemption_notice_s)
        bid.status = BidStatus.PREEMPTING
        bid.epoch += 1
        bid.preemption_end_time = end_time
        self._record(bid, BidEventType.PREEMPTED)
        for instance in bid.instances:
            instance.epoch += 1
            instance.status = InstanceStatus.PREEMPTING
            instance.end_time = end_time
            if instance.host == _Host.UP:
                self._call_host(instance,
                                self.hosts.notify_preemption,
                                bid_status=BidStatus.PREEMPTING.value,
                                end_time=end_time)
        self._timer(bid, self.preemption_notice_s,
                    lambda: self._end_notice(bid))

    def _end_notice(self, bid: Bid) -> None:
        bid.status = BidStatus.OPEN
        bid.epoch += 1
        bid.price_paid = None
        bid.preemption_end_time = None
        for instance in bid.instances:
            instance.epoch += 1
            instance.status = InstanceStatus.PREEMPTED
            instance.price_paid = None
            if instance.host == _Host.UP:
                self._call_host(instance, self.hosts.preempt)
                instance.host = _Host.DOWN

    def _pause(self, bid: Bid) -> None:
        held_capacity = bid.status in _CAPACITY_HOLDERS
        bid.status = BidStatus.PAUSED
        bid.epoch += 1
        bid.price_paid = None
        bid.preemption_end_time = None
        self._record(bid, BidEventType.PAUSED, by_user=True)
        if not held_capacity:
            return
        for instance in bid.instances:
            instance.epoch += 1
            instance.status = InstanceStatus.STOPPING
            instance.price_paid = None
            instance.end_time = None
            self._timer(instance, self.stop_duration_s,
                        functools.partial(self._finish_stopping, instance))

    def _finish_stopping(self, instance: Instance) -> None:
        instance.epoch += 1
        instance.status = InstanceStatus.PAUSED
        if instance.host == _Host.UP:
            self._call_host(instance, self.hosts.pause)
            instance.host = _Host.DOWN

    # Inspection.

    @_caught_up
    def dump_state(self) -> Dict[str, Any]:
        """Every auction, bid (with instances) and volume as plain JSON-able
        data, for tests."""

        def price(amount: Optional[Decimal]) -> Optional[str]:
            return money.format_dollars(amount) if amount is not None else None

        return {
            'now': self._now.isoformat(),
            'auctions': [{
                'fid': a.fid,
                'instance_type': a.instance_type.name,
                'instance_type_fid': a.instance_type.fid,
                'region': a.region,
                'capacity': a.capacity,
                'free_capacity': self._free_capacity(a),
                'spot_price': price(a.spot_price),
                'last_instance_price': price(a.last_instance_price),
            } for a in self._auctions.values()],
            'bids': [{
                'fid': b.fid,
                'name': b.name,
                'status': b.status.value,
                'limit_price': price(b.limit_price),
                'price_paid': price(b.price_paid),
                'instance_quantity': b.instance_quantity,
                'instance_type': b.instance_type.name,
                'region': b.region,
                'filler': b.filler,
                'preemption_end_time': (b.preemption_end_time.isoformat()
                                        if b.preemption_end_time else None),
                'events': [e.event_type.value for e in b.events],
                'instances': [{
                    'fid': i.fid,
                    'name': i.name,
                    'status': i.status.value,
                    'ssh_destination': i.address.ssh_destination
                                       if i.address else None,
                    'private_ip': i.address.private_ip if i.address else None,
                    'ssh_port': i.address.ssh_port if i.address else None,
                    'price_paid': price(i.price_paid),
                } for i in b.instances],
                'volumes': list(b.launch_specification.volumes),
            } for b in self._bids.values()],
            'volumes': [{
                'fid': v.fid,
                'name': v.name,
                'region': v.region,
                'interface': v.interface.value,
                'capacity_gb': v.capacity_gb,
                'bids': [b.fid for b in self.volume_bids(v)],
                'attachments': self.volume_attachments(v),
            } for v in self._volumes.values()],
        }


def _generate_key_pair() -> Tuple[str, str]:
    """A fresh ed25519 pair: (OpenSSH public key, OpenSSH private key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH,
        serialization.PublicFormat.OpenSSH).decode()
    return public, private
