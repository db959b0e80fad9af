"""The market's records: what it keeps about auctions, bids, instances, keys,
lifecycle scripts, volumes and Kubernetes clusters, and the statuses they
move through. Plain data; the backends of this package change them."""

import dataclasses
import datetime
import enum
import hashlib
from decimal import Decimal
from typing import Dict, List, Optional, Protocol, Tuple

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
    """What instances boot from: a bid or a CPU VM's reservation."""

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
