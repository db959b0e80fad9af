"""Mithril's spot market as a pure, deterministic model: no HTTP, no threads.

One auction runs per (instance type, region). Emulated time comes from a
`Clock`; `Market.tick()` / `advance_to(when)` runs everything due up to then,
in time order: clearings every `clearing_interval_s`, ends of preemption
notices, instance life-cycle steps, Kubernetes control nodes coming up.
Randomness (fids, the optional price random walk) comes from RNGs seeded with
`seed`.

Like a large moto service, the market is one backend per kind of resource,
each in its module with its rules, all over one shared `state.MarketState`
(clock, timers, fids, the store of `records`) and composed into one `Market`,
whose public attributes they are (each in the module of its name unless said):
  auctions             auctions, prices, price history, capacity, the clearing
  bids                 placing, changing, cancelling bids; filler bids
  instances            instances' life cycle: boot, notice, stop, termination;
                       pausing, resuming, restarting one instance
  history              instances' status changes and charges
  volumes              (storage.py) file shares and block volumes
  ssh_keys             SSH keys
  lifecycle_scripts    scripts kept for instances to run
  kubernetes_clusters  (kubernetes.py) clusters and their control nodes
  cpu_vms              fixed-price CPU VMs and their catalog
  reservations         reserved capacity: quotes, availability, the
                       reservations' life, pause and return credits
                       (reserved_capacity.py: what they take of an auction)
  accounts             the organization, its project and user; quotas
  api_keys             API keys the user mints, and which tokens authenticate
Whoever reads or changes the market catches it up with its clock first
(`Market.caught_up`; market.py says who and how).
A refusal (`errors`) names the refused field; where an HTTP request carried it
is the routes' business.

This package's face is what its users import: `Market`, the records, the
errors and the constants below.
"""

from sky_mithril.emulator.market.accounts import ORGANIZATION_ID, PROJECT_FID
from sky_mithril.emulator.market.api_keys import ApiKey
from sky_mithril.emulator.market.auctions import DEFAULT_CAPACITY
from sky_mithril.emulator.market.errors import (Declined, FieldError,
                                                InvalidRequest, InvalidState,
                                                MarketError, NotFound,
                                                NotSupported)
from sky_mithril.emulator.market.images import (IMAGE_VERSION_FID,
                                                MCC_IMAGE_VERSION_FID)
from sky_mithril.emulator.market.instances import BOOT_SEQUENCE, ORDER_TYPES
from sky_mithril.emulator.market.kubernetes import DEFAULT_K8S_VERSION
from sky_mithril.emulator.market.market import Market
from sky_mithril.emulator.market.records import (
    KUBE_API_PORT, Auction, AvailabilitySlot, Bid, BidEventType, BidStatus,
    Charge, CpuVm, Instance, InstanceStatus, InstanceType, KubernetesCluster,
    KubernetesClusterStatus, LaunchSpecification, LifecycleScript,
    LifecycleScriptScope, Project,
    RegionStorageQuota, Reservation, ReservationEventType, ReservationOffer,
    ReservationStatus, ReservationTerms, ReservationUsage, SshKey,
    StatusChange, User, Volume)
from sky_mithril.emulator.market.reservations import STANDARD_OFFER_KEY
from sky_mithril.emulator.market.state import region_id
from sky_mithril.emulator.market.storage import MAX_VOLUME_GB

__all__ = [
    'ApiKey', 'Auction', 'AvailabilitySlot', 'BOOT_SEQUENCE', 'Bid',
    'BidEventType', 'BidStatus', 'Charge', 'CpuVm',
    'DEFAULT_CAPACITY', 'DEFAULT_K8S_VERSION', 'Declined', 'FieldError',
    'IMAGE_VERSION_FID', 'Instance', 'InstanceStatus', 'InstanceType',
    'InvalidRequest', 'InvalidState', 'KUBE_API_PORT', 'KubernetesCluster',
    'KubernetesClusterStatus', 'LaunchSpecification', 'LifecycleScript', 'LifecycleScriptScope',
    'MAX_VOLUME_GB', 'MCC_IMAGE_VERSION_FID', 'Market', 'MarketError',
    'NotFound', 'NotSupported', 'ORDER_TYPES', 'ORGANIZATION_ID',
    'PROJECT_FID', 'Project', 'RegionStorageQuota', 'Reservation',
    'ReservationEventType', 'ReservationOffer', 'ReservationStatus',
    'ReservationTerms', 'ReservationUsage', 'STANDARD_OFFER_KEY', 'SshKey', 'StatusChange', 'User',
    'Volume', 'region_id'
]
