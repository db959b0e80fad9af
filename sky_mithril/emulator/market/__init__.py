"""Mithril's spot market as a pure, deterministic model: no HTTP, no threads.

One auction runs per (instance type, region). Emulated time comes from a
`Clock`; `Market.tick()` / `advance_to(when)` runs everything due up to then,
in time order: clearings every `clearing_interval_s`, ends of preemption
notices, instance life-cycle steps, Kubernetes control nodes coming up.
Randomness (fids, the optional price random walk) comes from RNGs seeded with
`seed`.

Like a large moto service, the market is one backend per kind of resource,
each in its module with its rules, all over one shared `state.MarketState`
(clock, timers, fids, the store of `records`) and composed into one `Market`:
  auctions     auctions, prices, price history, capacity, the clearing
  bids         placing, changing, cancelling bids; filler bids
  instances    instances' life cycle: boot, preemption notice, stop, termination
  history      instances' status changes and charges (`Market.history`)
  storage      volumes (file shares and block volumes)
  ssh_keys     SSH keys
  kubernetes   Kubernetes clusters and their control nodes
  accounts     the project, the user, quotas
A refusal (`errors`) names the refused field; where an HTTP request carried it
is the routes' business.

This package's face is what its users import: `Market`, the records, the
errors and the constants below.
"""

from sky_mithril.emulator.market.accounts import PROJECT_FID
from sky_mithril.emulator.market.auctions import DEFAULT_CAPACITY
from sky_mithril.emulator.market.bids import IMAGE_VERSION_FID
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                InvalidState, MarketError,
                                                NotFound)
from sky_mithril.emulator.market.instances import BOOT_SEQUENCE
from sky_mithril.emulator.market.kubernetes import DEFAULT_K8S_VERSION
from sky_mithril.emulator.market.market import Market
from sky_mithril.emulator.market.records import (KUBE_API_PORT, Auction, Bid,
                                                 BidEventType, BidStatus,
                                                 Charge, Instance,
                                                 InstanceStatus,
                                                 KubernetesCluster,
                                                 KubernetesClusterStatus,
                                                 SshKey, StatusChange, Volume)

__all__ = [
    'Auction', 'BOOT_SEQUENCE', 'Bid', 'BidEventType', 'BidStatus', 'Charge',
    'DEFAULT_CAPACITY', 'DEFAULT_K8S_VERSION', 'FieldError', 'IMAGE_VERSION_FID',
    'Instance', 'InstanceStatus', 'InvalidRequest', 'InvalidState',
    'KUBE_API_PORT', 'KubernetesCluster', 'KubernetesClusterStatus', 'Market',
    'MarketError', 'NotFound', 'PROJECT_FID', 'SshKey', 'StatusChange',
    'Volume'
]
