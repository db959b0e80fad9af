"""The market's records: what it keeps about auctions, bids, instances, keys,
lifecycle scripts, volumes, Kubernetes clusters and reservations, and the
statuses they move through. Plain data; the backends of this package change
them."""

import dataclasses
import datetime
import enum
import hashlib
from decimal import Decimal
from typing import Dict, List, Optional, Protocol, Set, Tuple

from sky_mithril.emulator.hosts import (HostAddress, VolumeAttachment,
                                        VolumeInterface, volume_vm_path)

KUBE_API_PORT = 6443

PricePoint = Tuple[datetime.datetime, Decimal]


class BidStatus(str, enum.Enum):
    OPEN = 'Open'
    ALLOCATED = 'Allocated'
    PREEMPTING = 'Preempting'
    PAUSED = 'Paused'
    TERMINATED = 'Terminated'


class InstanceStatus(str, enum.Enum):
    """The instance statuses of Mithril's spec (InstanceModel.status)."""

    NEW = 'STATUS_NEW'
    CONFIRMED = 'STATUS_CONFIRMED'
    INITIALIZING = 'STATUS_INITIALIZING'
    STARTING = 'STATUS_STARTING'
    RUNNING = 'STATUS_RUNNING'
    RELOCATING = 'STATUS_RELOCATING'
    PREEMPTING = 'STATUS_PREEMPTING'
    PREEMPTED = 'STATUS_PREEMPTED'
    PAUSED = 'STATUS_PAUSED'
    STOPPING = 'STATUS_STOPPING'
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


class LifecycleScriptScope(str, enum.Enum):
    """Who sees a lifecycle script; `PLATFORM` ones are Mithril's own."""
    PROJECT = 'PROJECT'
    ORGANIZATION = 'ORGANIZATION'
    PLATFORM = 'PLATFORM'


class KubernetesClusterStatus(str, enum.Enum):
    PENDING = 'Pending'
    AVAILABLE = 'Available'
    TERMINATED = 'Terminated'


# The bid statuses that hold their auction's capacity.
CAPACITY_HOLDERS = (BidStatus.ALLOCATED, BidStatus.PREEMPTING)


class HostState(enum.Enum):
    """Where an instance's host is, so each host hook is called only when it applies."""
    NONE = 'none'
    UP = 'up'
    DOWN = 'down'


@dataclasses.dataclass
class Project:
    """A project; `id` is its UUID (where Mithril reports usage by project)."""

    fid: str
    id: str
    name: str
    created_at: datetime.datetime


@dataclasses.dataclass
class User:
    fid: str
    id: str
    email: str
    organization_id: str
    organization_role: str
    user_name: str


@dataclasses.dataclass
class InstanceType:
    """Specs from the catalog; `fid` is stable per name. `hourly_price`: the
    fixed price of a CPU VM type; None for a type sold at auction."""

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
    hourly_price: Optional[Decimal] = None


@dataclasses.dataclass
class Auction:
    """One (instance type, region) market. `live_bids`: its bids that take part
    in clearings (not terminated, not fillers), in submission order;
    `held_by_reservations`: the capacity reservations hold now, out of the
    spot market's reach (`reservations`)."""

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
    held_by_reservations: int = 0


@dataclasses.dataclass
class SshKey:
    fid: str
    name: str
    project: str
    public_key: str
    created_at: datetime.datetime
    required: bool


@dataclasses.dataclass
class LifecycleScript:
    """A script kept for instances to run; `order` ranks equal sort keys."""

    fid: str
    name: str
    description: str
    content: str
    project: str
    scope: LifecycleScriptScope
    created_at: datetime.datetime
    created_by: str
    last_modified_at: datetime.datetime
    last_modified_by: str
    order: int


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
class StatusChange:
    """An instance entered `status` at `timestamp`."""

    timestamp: datetime.datetime
    status: InstanceStatus


@dataclasses.dataclass
class Charge:
    """An instance billed `price` per hour from `start` until `end` (None
    while it still bills)."""

    price: Decimal
    start: datetime.datetime
    end: Optional[datetime.datetime] = None


@dataclasses.dataclass
class Instance:
    """One instance of a bid (`bid_fid`) or of a reservation
    (`reservation_fid`: a CPU VM's hidden one); `host` tracks which host
    hooks apply, `restarting` whether its VM is restarting, `epoch` moves on
    every state change so pending boot or stop steps are ignored.
    `status_changes` and `charges` are its history (`history`), oldest
    first."""

    fid: str
    name: str
    project: str
    created_at: datetime.datetime
    created_by: str
    bid_fid: Optional[str]
    instance_type: InstanceType
    region: str
    order: int
    reservation_fid: Optional[str] = None
    status: InstanceStatus = InstanceStatus.NEW
    address: Optional[HostAddress] = None
    price_paid: Optional[Decimal] = None
    end_time: Optional[datetime.datetime] = None
    host: HostState = HostState.NONE
    restarting: bool = False
    epoch: int = 0
    status_changes: List[StatusChange] = dataclasses.field(
        default_factory=list)
    charges: List[Charge] = dataclasses.field(default_factory=list)


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

    def record(self,
               at: datetime.datetime,
               event_type: BidEventType,
               *,
               limit_price: Optional[Decimal] = None,
               user_id: Optional[str] = None) -> None:
        """Adds an event to the bid's history (`user_id`: the user whose
        request it was; None for the market's own doing)."""
        self.events.append(
            BidEvent(timestamp=at,
                     event_type=event_type,
                     limit_price=limit_price,
                     user_id=user_id))


@dataclasses.dataclass
class CpuVm:
    """A fixed-price CPU VM: the hidden reservation Mithril backs it with
    (`fid`), holding its one instance, launched at once, no auction."""

    fid: str
    name: str
    project: str
    created_by: str
    created_at: datetime.datetime
    instance_type: InstanceType
    region: str
    launch_specification: LaunchSpecification
    instances: List[Instance] = dataclasses.field(default_factory=list)
    deactivated_at: Optional[datetime.datetime] = None


class Order(Protocol):
    """What instances boot from: a bid, a CPU VM's reservation or a
    reservation."""

    project: str
    launch_specification: LaunchSpecification


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
class RegionStorageQuota:
    """One /v2/organizations/{id}/quotas row: the organization's volume
    storage in one region (GB; `remaining` is what a new volume there may
    take)."""

    region: str
    region_id: str
    granted: int
    used: int
    remaining: int
    used_by_project: Dict[str, int]


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


class ReservationStatus(str, enum.Enum):
    PENDING = 'Pending'
    ACTIVE = 'Active'
    PAUSED = 'Paused'
    CANCELED = 'Canceled'
    ENDED = 'Ended'


# The reservation statuses that hold capacity (from now or later).
LIVE_RESERVATION_STATUSES = (ReservationStatus.PENDING,
                             ReservationStatus.ACTIVE,
                             ReservationStatus.PAUSED)


class ReservationEventType(str, enum.Enum):
    PLACED = 'Placed'
    ACTIVE = 'Active'
    PAUSED = 'Paused'
    RESUMED = 'Resumed'
    CANCELED = 'Canceled'
    ENDED = 'Ended'
    TERMS_SET = 'Terms Set'
    TERMS_CHANGED = 'Terms Changed'


@dataclasses.dataclass(frozen=True)
class ReservationTerms:
    """A reservation's prices, in dollars per instance-hour: `unit_price`
    (charged in full for the whole window when bought), `pause_credit`
    (earned per hour an instance stays paused, from one hour on) and
    `return_credit` (per instance returned, per hour left)."""

    unit_price: Decimal
    pause_credit: Decimal
    return_credit: Decimal


@dataclasses.dataclass(frozen=True)
class ReservationOffer:
    """One offer of a quote: `terms` for `quantity` instances over `hours`
    hours; `option_premium` is the part of the unit price that buys the
    pause and return credits (dollars per instance-hour)."""

    key: str
    display_name: str
    terms: ReservationTerms
    option_premium: Decimal
    quantity: int
    hours: Decimal

    @property
    def instance_hours(self) -> Decimal:
        return self.quantity * self.hours


@dataclasses.dataclass
class ReservationEvent:
    """One entry of a reservation's history; `terms` on Terms Set and Terms
    Changed, `user_id` when a user's request caused it."""

    timestamp: datetime.datetime
    event_type: ReservationEventType
    user_id: Optional[str] = None
    terms: Optional[ReservationTerms] = None


@dataclasses.dataclass
class Grant:
    """Reserved capacity bought at once: the reservation's creation or one
    extension, `quantity` instances from `start` to `end` at `terms`."""

    fid: str
    start: datetime.datetime
    end: datetime.datetime
    quantity: int
    terms: ReservationTerms

    @property
    def instance_hours(self) -> Decimal:
        return self.quantity * hours_between(self.start, self.end)

    @property
    def cost(self) -> Decimal:
        return self.terms.unit_price * self.instance_hours


@dataclasses.dataclass
class PauseSpan:
    """One instance of a reservation paused from `start` until `end` (None
    while it stays paused)."""

    instance_fid: str
    start: datetime.datetime
    end: Optional[datetime.datetime] = None


@dataclasses.dataclass(frozen=True)
class InstanceReturn:
    """Instances given back at `at`: deleted for good, credited `credit`
    dollars for `instance_hours` of the window they no longer hold."""

    at: datetime.datetime
    instances: Tuple['Instance', ...]
    instance_hours: Decimal
    credit: Decimal


@dataclasses.dataclass
class Reservation:
    """Capacity of one auction reserved from `start_time` to `end_time`.

    `instances` are its instances now (made when it becomes Active; those
    returned move to `returns`). `claimed`: it holds its capacity in the
    auction (from one preemption notice before its start until its end),
    less that of its instances in `lent` (paused, so lent to spot).
    `order` ranks equal sort keys."""

    fid: str
    name: str
    project: str
    created_by: str
    created_at: datetime.datetime
    auction: Auction
    start_time: datetime.datetime
    end_time: datetime.datetime
    instance_quantity: int
    launch_specification: LaunchSpecification
    terms: ReservationTerms
    order: int
    status: ReservationStatus = ReservationStatus.PENDING
    instances: List[Instance] = dataclasses.field(default_factory=list)
    deactivated_at: Optional[datetime.datetime] = None
    claimed: bool = False
    lent: Set[str] = dataclasses.field(default_factory=set)
    grants: List[Grant] = dataclasses.field(default_factory=list)
    pauses: List[PauseSpan] = dataclasses.field(default_factory=list)
    returns: List[InstanceReturn] = dataclasses.field(default_factory=list)
    events: List[ReservationEvent] = dataclasses.field(default_factory=list)

    @property
    def region(self) -> str:
        return self.auction.region

    @property
    def instance_type(self) -> InstanceType:
        return self.auction.instance_type

    @property
    def live(self) -> bool:
        """Not ended (nor canceled): it holds capacity, now or later."""
        return self.status in LIVE_RESERVATION_STATUSES

    @property
    def held(self) -> int:
        """The capacity it holds in its auction now."""
        return self.instance_quantity - len(self.lent) if self.claimed else 0

    @property
    def all_instances(self) -> List[Instance]:
        """Every instance it had: those it has, then those returned."""
        return [*self.instances,
                *(i for given_back in self.returns for i in given_back.instances)]

    @property
    def charged(self) -> Decimal:
        """Dollars charged: every grant in full."""
        return sum((grant.cost for grant in self.grants), Decimal(0))

    @property
    def return_credit(self) -> Decimal:
        """Dollars credited for instances returned."""
        return sum((r.credit for r in self.returns), Decimal(0))

    def record(self,
               at: datetime.datetime,
               event_type: ReservationEventType,
               *,
               user_id: Optional[str] = None,
               terms: Optional[ReservationTerms] = None) -> None:
        """Adds an event to the reservation's history."""
        self.events.append(
            ReservationEvent(timestamp=at, event_type=event_type,
                             user_id=user_id, terms=terms))


def hours_between(start: datetime.datetime,
                  end: datetime.datetime) -> Decimal:
    """The hours from `start` to `end` (never negative), exactly."""
    span = max(datetime.timedelta(0), end - start)
    return (Decimal(span // datetime.timedelta(microseconds=1)) /
            Decimal(3_600_000_000))


@dataclasses.dataclass(frozen=True)
class AvailabilitySlot:
    """From `start` to `end`, `quantity` instances of an auction are free to
    reserve."""

    start: datetime.datetime
    end: datetime.datetime
    quantity: int


@dataclasses.dataclass(frozen=True)
class ReservationUsage:
    """What a reservation cost and earned as of `as_of`, in dollars:
    `charged` (every grant in full), `pause_credit`, `return_credit`, and
    what is left, `net_cost`; its instance-hours: `reserved` (bought, less
    those returned), `active` (instances up so far), `idle` (paused so
    far)."""

    charged: Decimal
    pause_credit: Decimal
    return_credit: Decimal
    reserved: datetime.timedelta
    active: datetime.timedelta
    idle: datetime.timedelta
    as_of: datetime.datetime

    @property
    def net_cost(self) -> Decimal:
        return self.charged - self.pause_credit - self.return_credit
