"""The market as one object: the backends of this package, each a public
attribute named after what it holds (`market.bids.create(...)`,
`market.instances.get(fid)`, `market.ssh_keys.list(project)`, as moto's
backends), over one shared state, plus what spans them: the clock and
catching up with it, the settings, late commits and the state dump.

Whoever reads or changes the market first catches it up with the clock, once:
a served market through `caught_up(lock)` (every API request, control call,
kube API call and devtool), a market nobody serves yet (the CLI building one,
tests on a manual clock, whose `advance()` catches up) by `tick()`. So a
request sees the market at one moment, `clock.now()`; the backends themselves
never look at the clock.
"""

import contextlib
import datetime
from decimal import Decimal
from typing import (Any, Callable, ContextManager, Dict, Iterable, Iterator,
                    Mapping, Optional)

from sky_mithril import money
from sky_mithril.emulator.clock import Clock
from sky_mithril.emulator.hosts import HostBackend
from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.api_keys import ApiKeys
from sky_mithril.emulator.market.auctions import DEFAULT_CAPACITY, Auctions
from sky_mithril.emulator.market.bids import Bids
from sky_mithril.emulator.market.cpu_vms import CpuVms
from sky_mithril.emulator.market.errors import MarketError
from sky_mithril.emulator.market.history import History
from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.kubernetes import KubernetesClusters
from sky_mithril.emulator.market.lifecycle_scripts import LifecycleScripts
from sky_mithril.emulator.market.records import InstanceStatus
from sky_mithril.emulator.market.reservations import Reservations
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState
from sky_mithril.emulator.market.storage import Volumes


class Market:
    """Mithril's spot market, driven by `clock`; the rules are in the
    backends' modules (`auctions`, `bids`, `instances`, ...)."""

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
        self._state = MarketState(clock, hosts, seed)
        self.accounts = Accounts(self._state)
        self.ssh_keys = SshKeys(self._state, self.accounts)
        self.lifecycle_scripts = LifecycleScripts(self._state, self.accounts)
        self.volumes = Volumes(self._state, self.accounts)
        # Instances' status changes and charges.
        self.history = History(self._state, self.accounts)
        self.instances = Instances(self._state,
                                   self.accounts,
                                   self.ssh_keys,
                                   self.volumes,
                                   self.history,
                                   preemption_notice_s=preemption_notice_s,
                                   boot_durations_s=boot_durations_s,
                                   stop_duration_s=stop_duration_s)
        self.auctions = Auctions(self._state,
                                 self.instances,
                                 catalog,
                                 capacity=capacity,
                                 clearing_interval_s=clearing_interval_s,
                                 seed=seed)
        self.kubernetes_clusters = KubernetesClusters(self._state,
                                                      self.accounts,
                                                      self.ssh_keys,
                                                      self.auctions,
                                                      k8s_boot_s=k8s_boot_s)
        self.bids = Bids(self._state, self.accounts, self.auctions,
                         self.instances, self.ssh_keys, self.volumes,
                         self.kubernetes_clusters)
        self.cpu_vms = CpuVms(self._state, self.accounts, self.ssh_keys,
                              self.volumes, self.instances)
        self.reservations = Reservations(self._state, self.accounts,
                                         self.auctions, self.instances,
                                         self.ssh_keys, self.volumes,
                                         self.kubernetes_clusters)
        self.api_keys = ApiKeys(self._state)
        self.auctions.start_clearings()

    # What the market was made with, and its settings (read live: a change
    # applies to what is scheduled after it).

    @property
    def clock(self) -> Clock:
        return self._state.clock

    @property
    def hosts(self) -> HostBackend:
        return self._state.hosts

    @property
    def clearing_interval_s(self) -> float:
        return self.auctions.clearing_interval_s

    @clearing_interval_s.setter
    def clearing_interval_s(self, seconds: float) -> None:
        self.auctions.clearing_interval_s = seconds

    @property
    def preemption_notice_s(self) -> float:
        return self.instances.preemption_notice_s

    @preemption_notice_s.setter
    def preemption_notice_s(self, seconds: float) -> None:
        self.instances.preemption_notice_s = seconds

    @property
    def boot_durations_s(self) -> Dict[InstanceStatus, float]:
        """Emulated seconds spent in each boot status before the next."""
        return self.instances.boot_durations_s

    @boot_durations_s.setter
    def boot_durations_s(self, durations: Dict[InstanceStatus, float]) -> None:
        self.instances.boot_durations_s = durations

    @property
    def stop_duration_s(self) -> float:
        return self.instances.stop_duration_s

    @stop_duration_s.setter
    def stop_duration_s(self, seconds: float) -> None:
        self.instances.stop_duration_s = seconds

    @property
    def k8s_boot_s(self) -> float:
        return self.kubernetes_clusters.k8s_boot_s

    @k8s_boot_s.setter
    def k8s_boot_s(self, seconds: float) -> None:
        self.kubernetes_clusters.k8s_boot_s = seconds

    # Time.

    @property
    def now(self) -> datetime.datetime:
        """The emulated time the market has been brought up to."""
        return self._state.now

    def tick(self) -> None:
        """Runs everything due up to `clock.now()`."""
        self.advance_to(self.clock.now())

    def advance_to(self, when: datetime.datetime) -> None:
        """Runs, in time order, everything due up to `when`."""
        self._state.advance_to(when)

    def advance(self, seconds: float) -> datetime.datetime:
        """Moves the clock `seconds` ahead and runs everything due; returns the new time."""
        self.clock.advance(seconds)
        self.tick()
        return self.now

    @contextlib.contextmanager
    def caught_up(self, lock: ContextManager[Any]) -> Iterator['Market']:
        """Holds `lock` and brings the market up to `clock.now()` first: how
        a served market is read or changed (module docstring)."""
        with lock:
            self.tick()
            yield self

    def commit_later(self, delay_s: float, commit: Callable[[], Any]) -> None:
        """Runs `commit` (a call of this market's backends, e.g.
        `bids.create`)
        `delay_s` emulated seconds from now, as of then; a refusal then is
        dropped. The emulator's late commits (`faults.LATE_COMMIT`)."""

        def run() -> None:
            try:
                commit()
            except MarketError:
                pass

        self._state.after(delay_s, run)

    # Inspection.

    def dump_state(self) -> Dict[str, Any]:
        """Every auction, bid (with instances), volume and reservation as
        plain JSON-able data, for tests."""

        def price(amount: Optional[Decimal]) -> Optional[str]:
            return money.format_dollars(amount) if amount is not None else None

        store = self._state.store
        return {
            'now':
                self.now.isoformat(),
            'auctions': [{
                'fid': a.fid,
                'instance_type': a.instance_type.name,
                'instance_type_fid': a.instance_type.fid,
                'region': a.region,
                'capacity': a.capacity,
                'free_capacity': self.auctions.free_capacity(a),
                'held_by_reservations': a.held_by_reservations,
                'spot_price': price(a.spot_price),
                'last_instance_price': price(a.last_instance_price),
            } for a in store.auctions.values()],
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
                    'fid':
                        i.fid,
                    'name':
                        i.name,
                    'status':
                        i.status.value,
                    'ssh_destination':
                        i.address.ssh_destination if i.address else None,
                    'private_ip':
                        i.address.private_ip if i.address else None,
                    'ssh_port':
                        i.address.ssh_port if i.address else None,
                    'price_paid':
                        price(i.price_paid),
                } for i in b.instances],
                'volumes': list(b.launch_specification.volumes),
            } for b in store.bids.values()],
            'volumes': [{
                'fid': v.fid,
                'name': v.name,
                'region': v.region,
                'interface': v.interface.value,
                'capacity_gb': v.capacity_gb,
                'bids': [b.fid for b in self.volumes.bids_listing(v)],
                'attachments': self.volumes.attachments(v),
            } for v in store.volumes.values()],
            'reservations': self.reservations.dump(),
        }
