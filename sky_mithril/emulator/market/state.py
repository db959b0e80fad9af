"""What every backend of the market shares: emulated time and the timers that
run in it, fids and submission order, the host backend, and the store of
records.

Emulated time comes from a `Clock`; `advance_to(when)` runs everything due up
to then, in time order (equal times in the order they were scheduled), and the
market's `now` never goes back. An action that calls back into the market (a
late commit) finds it at the action's own time: that call's catching up with
the clock is left to the `advance_to` that runs the action. Fids come from an
RNG seeded with the market's seed, so a run is reproducible.
"""

import dataclasses
import datetime
import hashlib
import heapq
import itertools
import random
import string
import uuid
from typing import Callable, Dict, List, Protocol, Set, Tuple

from sky_mithril.emulator.clock import Clock
from sky_mithril.emulator.hosts import HostBackend
from sky_mithril.emulator.market.records import (Auction, Bid, CpuVm,
                                                 Instance, InstanceType,
                                                 KubernetesCluster,
                                                 LifecycleScript,
                                                 Reservation, SshKey, Volume)


class Versioned(Protocol):
    """A record whose `epoch` moves on every state change."""

    epoch: int


@dataclasses.dataclass
class Store:
    """Every record of the market, by fid (auctions by (instance type fid,
    region); CPU VMs by their reservation's fid), each dict in creation
    order."""

    instance_types: Dict[str, InstanceType] = dataclasses.field(
        default_factory=dict)
    cpu_instance_types: Dict[str, InstanceType] = dataclasses.field(
        default_factory=dict)
    auctions: Dict[Tuple[str, str], Auction] = dataclasses.field(
        default_factory=dict)
    bids: Dict[str, Bid] = dataclasses.field(default_factory=dict)
    instances: Dict[str, Instance] = dataclasses.field(default_factory=dict)
    cpu_vms: Dict[str, CpuVm] = dataclasses.field(default_factory=dict)
    reservations: Dict[str, Reservation] = dataclasses.field(
        default_factory=dict)
    ssh_keys: Dict[str, SshKey] = dataclasses.field(default_factory=dict)
    lifecycle_scripts: Dict[str, LifecycleScript] = dataclasses.field(
        default_factory=dict)
    volumes: Dict[str, Volume] = dataclasses.field(default_factory=dict)
    k8s_clusters: Dict[str, KubernetesCluster] = dataclasses.field(
        default_factory=dict)

    def has_region(self, region: str) -> bool:
        """Whether any auction runs in `region`."""
        return any(a.region == region for a in self.auctions.values())

    def regions(self) -> List[str]:
        """Every region some auction runs in, in catalog order."""
        return list(dict.fromkeys(a.region for a in self.auctions.values()))


@dataclasses.dataclass(order=True)
class _Due:
    at: datetime.datetime
    sequence: int
    action: Callable[[], None] = dataclasses.field(compare=False)


class MarketState:
    """The clock, timers, fid generator and store one market's backends share."""

    def __init__(self, clock: Clock, hosts: HostBackend, seed: int) -> None:
        self.clock = clock
        self.hosts = hosts
        self.store = Store()
        self._now = clock.now()
        self._advancing = False
        self._due: List[_Due] = []
        self._sequence = itertools.count()
        self._order = itertools.count()
        self._fids: Set[str] = set()
        self._id_rng = random.Random(f'{seed}:ids')

    # Time.

    @property
    def now(self) -> datetime.datetime:
        """The emulated time the market has been brought up to."""
        return self._now

    def advance_to(self, when: datetime.datetime) -> None:
        """Runs, in time order, everything due up to `when`; from inside a
        running action, does nothing (module docstring)."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while self._due and self._due[0].at <= when:
                due = heapq.heappop(self._due)
                self._now = max(self._now, due.at)
                due.action()
            self._now = max(self._now, when)
        finally:
            self._advancing = False

    def after(self, delay_s: float, action: Callable[[], None]) -> None:
        """Schedules `action` `delay_s` emulated seconds from now."""
        heapq.heappush(
            self._due,
            _Due(self._now + datetime.timedelta(seconds=delay_s),
                 next(self._sequence), action))

    def timer(self, entity: Versioned, delay_s: float,
              action: Callable[[], None]) -> None:
        """Schedules `action` unless `entity` changes state first (its epoch moves)."""
        epoch = entity.epoch

        def guarded() -> None:
            if entity.epoch == epoch:
                action()

        self.after(delay_s, guarded)

    # Identity and order.

    def new_fid(self, prefix: str) -> str:
        """A fresh random fid, `<prefix>_` and 16 letters or digits."""
        alphabet = string.ascii_letters + string.digits
        while True:
            fid = f'{prefix}_' + ''.join(self._id_rng.choices(alphabet, k=16))
            if fid not in self._fids:
                self._fids.add(fid)
                return fid

    def random_token(self, length: int) -> str:
        """Lower-case letters and digits from the fid RNG (a secret's stand-in)."""
        return ''.join(
            self._id_rng.choices(string.ascii_lowercase + string.digits,
                                 k=length))

    def next_order(self) -> int:
        """The next submission order: ranks bids and instances created at
        the same time."""
        return next(self._order)


def stable_fid(prefix: str, key: str) -> str:
    """A fid that depends only on `key` (catalog entries, quotas)."""
    return f'{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:16]}'


def region_id(region: str) -> str:
    """The UUID Mithril names a region (and the cluster behind it) by; it
    depends only on the region's name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f'mithril-emulator:{region}'))
