"""Pydantic models of Mithril v2 API payloads (field names as in Mithril's OpenAPI).

Response models accept and keep unknown fields, so a server that adds fields
does not break the plugin. Statuses stay plain strings; the known values are
listed in `BidState` and `InstanceState`, so a status Mithril adds later
parses too. Money is `Decimal` in Python and "$x.yy" on the wire.
"""

import enum
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Dict, List, Optional

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict,
                      Field, PlainSerializer)

from sky_mithril.money import (CENT, cents_to_dollars, format_dollars,
                               parse_dollars)


def _assume_utc(value: datetime) -> datetime:
    """Timestamps without a zone are UTC, so they compare with aware ones."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _positive_whole_cents(amount: Decimal) -> Decimal:
    """A limit price must be above zero and not silently rounded on the wire."""
    if amount <= 0:
        raise ValueError(f'a limit price must be above $0.00, got {amount}')
    if amount != amount.quantize(CENT):
        raise ValueError(f'a limit price must be whole cents, got {amount}')
    return amount


Dollars = Annotated[Decimal,
                    BeforeValidator(parse_dollars),
                    PlainSerializer(format_dollars, return_type=str,
                                    when_used='json')]
"""A dollar amount: reads "$32.00"/32/"32.5", dumps to JSON as "$32.00"."""

LimitPrice = Annotated[Dollars, AfterValidator(_positive_whole_cents)]
"""A bid's limit price per instance-hour: positive, whole cents."""

Timestamp = Annotated[datetime, AfterValidator(_assume_utc)]
"""An ISO 8601 timestamp, always timezone-aware."""


class BidState:
    """Known bid status strings (`Bid.status`, `BidStatus.status`)."""

    OPEN = 'Open'
    ALLOCATED = 'Allocated'
    PREEMPTING = 'Preempting'
    PAUSED = 'Paused'
    TERMINATED = 'Terminated'
    RELOCATING = 'Relocating'
    """Only reported by the bid-status endpoint."""


class InstanceState:
    """Known instance status strings (`Instance.status`, `InstanceStatus.status`)."""

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


class KubernetesClusterState:
    """Known `KubernetesCluster.status` strings."""

    PENDING = 'Pending'
    AVAILABLE = 'Available'
    TERMINATED = 'Terminated'


class BidEventType:
    """Known `BidEvent.event_type` strings."""

    PLACED = 'Placed'
    ALLOCATED = 'Allocated'
    PREEMPTED = 'Preempted'
    PAUSED = 'Paused'
    RESUMED = 'Resumed'
    TERMINATED = 'Terminated'
    LIMIT_PRICE_CHANGED = 'Limit Price Changed'
    MEMORY_ADJUSTED = 'Memory Adjusted'
    VOLUMES_ATTACHED = 'Volumes Attached'
    VOLUMES_REMOVED = 'Volumes Removed'


class VolumeInterface(str, enum.Enum):
    """How a volume reaches a VM: a shared file system or a block device."""

    FILE = 'File'
    BLOCK = 'Block'


class ApiModel(BaseModel):
    """Base of response models: unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra='allow')


class RequestModel(BaseModel):
    """Base of request bodies: a misspelt field is an error, not silently sent."""

    model_config = ConfigDict(extra='forbid')

    def to_wire(self) -> Dict[str, Any]:
        """The JSON body: money as "$x.yy", unset optional fields left out."""
        return self.model_dump(mode='json', exclude_none=True)


class Me(ApiModel):
    """The user the API key belongs to (GET /v2/me)."""

    id: str
    fid: str
    email: str
    organization_id: str
    user_name: Optional[str] = None
    organization_role: Optional[str] = None


class Project(ApiModel):
    """A project the user belongs to."""

    fid: str
    name: str
    created_at: Timestamp


class InstanceType(ApiModel):
    """A hardware shape. The same `name` can appear under several fids."""

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
    network_type: Optional[str] = None


class CpuInstanceType(InstanceType):
    """A CPU VM type (`/v2/cpu/instance-types`): no GPU, sold outside the
    auction at a fixed `hourly_price` per instance-hour."""

    hourly_price: Dollars


class Region(ApiModel):
    """A region (`/v2/cpu/regions`): its name is what requests carry."""

    name: str


class Auction(ApiModel):
    """One spot auction: an (instance type fid, region) pair with its capacity and prices."""

    fid: str
    instance_type: str
    region: str
    capacity: int
    last_instance_price: Dollars
    adjustable_memory: bool = False
    lowest_allocated_price: Optional[Dollars] = None
    default_image_version: Optional[str] = None


def _dollars_of(cents_field: str, doc: str) -> property:
    """A read-only dollars view of an integer-cents field; None stays None."""

    def dollars(self: BaseModel) -> Optional[Decimal]:
        cents: Optional[int] = getattr(self, cents_field)
        return None if cents is None else cents_to_dollars(cents)

    return property(dollars, doc=doc)


class CurrentPrice(ApiModel):
    """Current prices of one instance type (in cents, each may be null)."""

    spot_price_cents: Optional[int] = None
    reserved_price_cents: Optional[int] = None
    minimum_price_cents: Optional[int] = None
    lowest_allocated_bid_cents: Optional[int] = None
    dynamic_win_price_cents: Optional[int] = None
    available_capacity: Optional[int] = None
    total_capacity: Optional[int] = None

    spot_price = _dollars_of(
        'spot_price_cents',
        'The current clearing price per instance-hour, in dollars.')
    reserved_price = _dollars_of(
        'reserved_price_cents',
        'The reserved (non-spot) price per instance-hour, in dollars.')
    minimum_price = _dollars_of(
        'minimum_price_cents',
        'The auction floor per instance-hour, in dollars.')
    lowest_allocated_bid = _dollars_of(
        'lowest_allocated_bid_cents',
        'The lowest limit price currently holding capacity, in dollars.')
    dynamic_win_price = _dollars_of(
        'dynamic_win_price_cents',
        'The limit price that would win the requested quantity now, in dollars.')


class PriceSeries(ApiModel):
    """Sampled prices of one instance type in one region."""

    instance_type: str
    region: str
    timestamps: List[Timestamp] = Field(default_factory=list)
    spot_prices: List[Dollars] = Field(default_factory=list)
    reserved_prices: List[Dollars] = Field(default_factory=list)


class PriceHistory(ApiModel):
    """GET /v2/pricing/history; `complete` is False when the server cut the series short."""

    series: List[PriceSeries] = Field(default_factory=list)
    complete: bool = True


class SshKey(ApiModel):
    """An SSH public key registered in a project.

    `private_key` is only set when the server generated the pair on create;
    it is kept out of repr.
    """

    fid: str
    name: str
    project: str
    public_key: str
    created_at: Timestamp
    required: bool = False
    private_key: Optional[str] = Field(default=None, repr=False)


class LaunchSpecification(ApiModel):
    """What a bid's instances boot with. Shared by requests and responses."""

    ssh_keys: List[str] = Field(default_factory=list)
    volumes: List[str] = Field(default_factory=list)
    startup_script: Optional[str] = Field(default=None, repr=False)
    kubernetes_cluster: Optional[str] = None
    image_version: Optional[str] = None
    memory_gb: Optional[int] = None


class CreateBidRequest(RequestModel):
    """POST /v2/spot/bids body. `instance_type` is a fid (`it_...`), not a name."""

    project: str
    region: str
    instance_type: str
    limit_price: LimitPrice
    instance_quantity: int = Field(ge=1)
    name: str
    launch_specification: LaunchSpecification


class CreateCpuInstanceRequest(RequestModel):
    """POST /v2/cpu/instances body. `instance_type` is a CPU type's fid."""

    project: str
    name: str
    instance_type: str
    region: str
    volumes: List[str] = Field(default_factory=list)
    ssh_keys: Optional[List[str]] = None
    image_version: Optional[str] = None


class UpdateBidRequest(RequestModel):
    """PATCH /v2/spot/bids/{fid} body; only the fields that are set are sent."""

    limit_price: Optional[LimitPrice] = None
    paused: Optional[bool] = None
    volumes: Optional[List[str]] = None
    memory_gb: Optional[int] = None


class Bid(ApiModel):
    """A spot bid. `instances` are instance fids; `limit_price` is per instance-hour."""

    fid: str
    name: str
    project: str
    created_by: str
    created_at: Timestamp
    limit_price: Dollars
    instance_quantity: int
    instance_type: str
    instances: List[str] = Field(default_factory=list)
    launch_specification: LaunchSpecification = Field(
        default_factory=LaunchSpecification)
    status: str
    deactivated_at: Optional[Timestamp] = None
    region: Optional[str] = None


class BidStatus(ApiModel):
    """GET /v2/spot/bids/{fid}/status."""

    bid_fid: str
    status: str


class BidEvent(ApiModel):
    """One entry of a bid's history."""

    timestamp: Timestamp
    event_type: str
    limit_price: Optional[Dollars] = None
    user_id: Optional[str] = None
    memory_gb: Optional[int] = None
    persistent_disk_change: Optional[Dict[str, Any]] = None


class BidHistory(ApiModel):
    """GET /v2/spot/bids/{fid}/history, oldest event first as the server sends it."""

    bid_fid: str
    events: List[BidEvent] = Field(default_factory=list)


class Instance(ApiModel):
    """A machine. `ssh_destination` is its public address (user `ubuntu`, port 22)."""

    fid: str
    name: str
    project: str
    created_at: Timestamp
    created_by: str
    instance_type: str
    status: str
    region: Optional[str] = None
    bid: Optional[str] = None
    reservation: Optional[str] = None
    ssh_destination: Optional[str] = None
    private_ip: Optional[str] = None


class InstanceStatus(ApiModel):
    """GET /v2/instances/{fid}/status."""

    fid: str
    name: str
    status: str
    bid: Optional[str] = None
    reservation: Optional[str] = None
    end_time: Optional[Timestamp] = None


class InstanceCharge(ApiModel):
    """A period an instance was billed at one price (InstancePricingEvent):
    `price_cents` per hour from `start_time` until `end_time` (None while it
    still bills)."""

    price_cents: int
    start_time: Timestamp
    end_time: Optional[Timestamp] = None


class InstancePricingHistory(ApiModel):
    """One instance's charges (GET /v2/instances/pricing/history)."""

    instance_fid: str
    events: List[InstanceCharge] = Field(default_factory=list)
    bid_fid: Optional[str] = None
    reservation_fid: Optional[str] = None


class InstanceStatusEvent(ApiModel):
    """An instance entered `status` at `timestamp`."""

    timestamp: Timestamp
    status: str


class InstanceStatusHistory(ApiModel):
    """One instance's statuses (GET /v2/instances/status/history)."""

    instance_fid: str
    events: List[InstanceStatusEvent] = Field(default_factory=list)
    bid_fid: Optional[str] = None
    reservation_fid: Optional[str] = None


class KubernetesCluster(ApiModel):
    """A Kubernetes cluster: a control node at `kube_host` (SSH user `ubuntu`,
    port 22) that bids join as workers through
    `launch_specification.kubernetes_cluster`; `instances` are worker fids."""

    fid: str
    name: str
    project: str
    region: str
    created_at: Timestamp
    status: str
    k8s_version: Optional[str] = None
    ssh_keys: List[str] = Field(default_factory=list)
    instances: List[str] = Field(default_factory=list)
    kube_host: Optional[str] = None
    join_command: Optional[str] = Field(default=None, repr=False)
    deleted_at: Optional[Timestamp] = None
    user_fid: Optional[str] = None


class Volume(ApiModel):
    """A persistent volume. `bids` are the fids of live bids using it;
    `attachments` maps an instance fid to where the volume appears on that
    VM (`/mnt/<name>` for File, a `/dev/disk/by-id/...` device for Block)."""

    fid: str
    name: str
    region: str
    created_at: Timestamp
    capacity_gb: int
    project: str
    interface: VolumeInterface
    bids: List[str] = Field(default_factory=list)
    reservations: List[str] = Field(default_factory=list)
    attachments: Dict[str, str] = Field(default_factory=dict)


class CreateVolumeRequest(RequestModel):
    """POST /v2/volumes body."""

    name: str = Field(min_length=1)
    project: str
    disk_interface: VolumeInterface
    region: str
    size_gb: int = Field(ge=1)


class ApiKey(ApiModel):
    """An API key of the user's (GET /v2/api-keys). Listings never carry the
    secret, only `snippet`, its first characters (kept out of repr too)."""

    fid: str
    name: str
    created_at: Timestamp
    expires_at: Timestamp
    deactivated_at: Optional[Timestamp] = None
    snippet: Optional[str] = Field(default=None, repr=False)

    def is_live(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.deactivated_at is None and now < self.expires_at


class CreatedApiKey(ApiKey):
    """POST /v2/api-keys: the new key with its secret, which Mithril shows
    this once; kept out of repr."""

    secret: str = Field(repr=False)


class CreateApiKeyRequest(RequestModel):
    """POST /v2/api-keys body: names under 60 characters, an expiry within a
    year (Mithril answers 400 otherwise)."""

    name: str = Field(min_length=1)
    expires_at: Timestamp


class ReservationState:
    """Known reservation status strings (`Reservation.status`)."""

    PENDING = 'Pending'
    ACTIVE = 'Active'
    PAUSED = 'Paused'
    CANCELED = 'Canceled'
    ENDED = 'Ended'


class Reservation(ApiModel):
    """Capacity bought for a window: `instance_quantity` instances of one
    type, `unit_price` per instance-hour charged in full (`total_price`) at
    create. `instances` are instance fids; the launch specification is fixed
    at create except its volumes."""

    fid: str
    name: str
    project: str
    created_by: str
    created_at: Timestamp
    instance_quantity: int
    instance_type: str
    instances: List[str] = Field(default_factory=list)
    launch_specification: LaunchSpecification = Field(
        default_factory=LaunchSpecification)
    status: str
    start_time: Timestamp
    end_time: Timestamp
    total_price: Dollars
    unit_price: Dollars
    deactivated_at: Optional[Timestamp] = None
    region: Optional[str] = None


class PriceSpecification(RequestModel):
    """Which offer of a quote to take, and the most the buyer accepts per
    unit (Mithril refuses the create if its price moved above it)."""

    offer_key: str = 'standard'
    max_unit_price: Optional[int] = Field(default=None, ge=0)


class CreateReservationRequest(RequestModel):
    """POST /v2/reservation body. `instance_type` is a fid; whole hours."""

    project: str
    instance_type: str
    region: str
    start_time: Timestamp
    end_time: Timestamp
    instance_quantity: int = Field(ge=1)
    name: str
    launch_specification: LaunchSpecification
    price_specification: Optional[PriceSpecification] = None
    notification_email: Optional[str] = None


class ReservationOffer(ApiModel):
    """One offer of a quote: dollars per instance-hour (`unit_price`), what a
    paused or returned instance-hour earns back, and the total charged now."""

    key: str
    display_name: str
    unit_price: Dollars
    return_buyback_price: Dollars
    pause_buyback_price: Dollars
    total_price: Dollars
    total_etbp_value: Dollars
    total_fubp_value: Dollars
    option_premium: Dollars


class ReservationQuote(ApiModel):
    """GET /v2/reservation/quote."""

    offers: List[ReservationOffer] = Field(default_factory=list)


class AvailabilitySlot(ApiModel):
    """A window in which `quantity` instances can be reserved."""

    start_time: Timestamp
    end_time: Timestamp
    quantity: int


class ExtensionAvailability(ApiModel):
    """GET /v2/reservation/{fid}/extension-availability."""

    latest_extension_time: Timestamp
    available: bool


class ReservationEvent(ApiModel):
    """One entry of a reservation's history (Placed, Active, Paused, ...)."""

    timestamp: Timestamp
    event_type: str
    user_id: Optional[str] = None
    unit_price_cents: Optional[int] = None
    pause_credit_cents: Optional[int] = None
    return_credit_cents: Optional[int] = None


class ReservationHistory(ApiModel):
    """GET /v2/reservation/{fid}/history."""

    reservation_fid: str
    events: List[ReservationEvent] = Field(default_factory=list)


class ReservationUsageSummary(ApiModel):
    """What a reservation cost and earned back, in cents, and its
    instance-hours (ISO 8601 durations on the wire)."""

    committed_cost_cents: int
    flex_use_credits_cents: int
    early_termination_credits_cents: int
    net_cost_cents: int
    reserved_instance_hours: timedelta
    active_instance_hours: timedelta
    idle_instance_hours: timedelta
    as_of: Timestamp


class ReservationUsage(ApiModel):
    """GET /v2/reservation/{fid}/usage (grants and events kept as sent)."""

    summary: ReservationUsageSummary
    grants: List[Dict[str, Any]] = Field(default_factory=list)
    pricing_events: List[Dict[str, Any]] = Field(default_factory=list)
    reservation_events: List[Dict[str, Any]] = Field(default_factory=list)


class ReturnedInstances(ApiModel):
    """What terminate-instances gave back: every instance asked for (200),
    or only `terminated_instances` (207)."""

    terminated_instances: List[str] = Field(default_factory=list)
    partial: bool = False
