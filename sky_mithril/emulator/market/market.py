"""The market as one object: the backends of this package over one shared
state, behind the API the routes, the control endpoints, devtools and tests
call.

Every public method that reads or changes the market first catches up with
the clock (`tick()`), so a caller always sees the market as of `clock.now()`;
the backends themselves never look at the clock.
"""

import datetime
import functools
from decimal import Decimal
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, TypeVar)

from sky_mithril import money
from sky_mithril.emulator.clock import Clock
from sky_mithril.emulator.hosts import HostBackend
from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.auctions import DEFAULT_CAPACITY, Auctions
from sky_mithril.emulator.market.bids import Bids
from sky_mithril.emulator.market.errors import MarketError
from sky_mithril.emulator.market.history import History
from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.kubernetes import (DEFAULT_K8S_VERSION,
                                                    KubernetesClusters)
from sky_mithril.emulator.market.records import (Auction, Bid, BidStatus,
                                                 Instance, InstanceStatus,
                                                 InstanceType,
                                                 KubernetesCluster, PricePoint,
                                                 PriceQuote, Project, Quota,
                                                 SshKey, User, Volume)
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState
from sky_mithril.emulator.market.storage import Storage

_Method = TypeVar('_Method', bound=Callable[..., Any])


def _caught_up(method: _Method) -> _Method:
    """Runs everything due up to `clock.now()` before the method."""

    @functools.wraps(method)
    def wrapper(self: 'Market', *args: Any, **kwargs: Any) -> Any:
        self.tick()
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
        self._accounts = Accounts(self._state)
        self._ssh_keys = SshKeys(self._state, self._accounts)
        self._storage = Storage(self._state, self._accounts)
        # Instances' status changes and charges: read it after `tick()`.
        self.history = History(self._state, self._accounts)
        self._instances = Instances(self._state,
                                    self._accounts,
                                    self._ssh_keys,
                                    self._storage,
                                    self.history,
                                    preemption_notice_s=preemption_notice_s,
                                    boot_durations_s=boot_durations_s,
                                    stop_duration_s=stop_duration_s)
        self._auctions = Auctions(self._state,
                                  self._instances,
                                  catalog,
                                  capacity=capacity,
                                  clearing_interval_s=clearing_interval_s,
                                  seed=seed)
        self._kubernetes = KubernetesClusters(self._state,
                                              self._accounts,
                                              self._ssh_keys,
                                              self._auctions,
                                              k8s_boot_s=k8s_boot_s)
        self._bids = Bids(self._state, self._accounts, self._auctions,
                          self._instances, self._ssh_keys, self._storage,
                          self._kubernetes)
        self._auctions.start_clearings()

    # What the market was made with, and its settings (read live: a change
    # applies to what is scheduled after it).

    @property
    def clock(self) -> Clock:
        return self._state.clock

    @property
    def hosts(self) -> HostBackend:
        return self._state.hosts

    @property
    def project(self) -> Project:
        return self._accounts.project

    @property
    def user(self) -> User:
        return self._accounts.user

    @property
    def clearing_interval_s(self) -> float:
        return self._auctions.clearing_interval_s

    @clearing_interval_s.setter
    def clearing_interval_s(self, seconds: float) -> None:
        self._auctions.clearing_interval_s = seconds

    @property
    def preemption_notice_s(self) -> float:
        return self._instances.preemption_notice_s

    @preemption_notice_s.setter
    def preemption_notice_s(self, seconds: float) -> None:
        self._instances.preemption_notice_s = seconds

    @property
    def boot_durations_s(self) -> Dict[InstanceStatus, float]:
        """Emulated seconds spent in each boot status before the next."""
        return self._instances.boot_durations_s

    @boot_durations_s.setter
    def boot_durations_s(self, durations: Dict[InstanceStatus, float]) -> None:
        self._instances.boot_durations_s = durations

    @property
    def stop_duration_s(self) -> float:
        return self._instances.stop_duration_s

    @stop_duration_s.setter
    def stop_duration_s(self, seconds: float) -> None:
        self._instances.stop_duration_s = seconds

    @property
    def k8s_boot_s(self) -> float:
        return self._kubernetes.k8s_boot_s

    @k8s_boot_s.setter
    def k8s_boot_s(self, seconds: float) -> None:
        self._kubernetes.k8s_boot_s = seconds

    @property
    def control_node_ready(
            self) -> Optional[Callable[[KubernetesCluster], None]]:
        """Called when a cluster's control node is up (e.g. to install the
        kubeconfig); None to do nothing."""
        return self._kubernetes.control_node_ready

    @control_node_ready.setter
    def control_node_ready(
            self, hook: Optional[Callable[[KubernetesCluster], None]]) -> None:
        self._kubernetes.control_node_ready = hook

    @property
    def control_node_private_key(self) -> str:
        """The private half of the key every control node also accepts, so the
        emulator can set the node up (OpenSSH PEM)."""
        return self._kubernetes.control_node_private_key

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

    @_caught_up
    def commit_later(self, delay_s: float, commit: Callable[[], Any]) -> None:
        """Runs `commit` (a call of this market's, e.g. `create_bid`)
        `delay_s` emulated seconds from now, as of then; a refusal then is
        dropped. The emulator's late commits (`faults.LATE_COMMIT`)."""

        def run() -> None:
            try:
                commit()
            except MarketError:
                pass

        self._state.after(delay_s, run)

    # Catalog, prices and capacity (`auctions`).

    @_caught_up
    def instance_types(self) -> List[InstanceType]:
        return self._auctions.instance_types()

    @_caught_up
    def auctions(self) -> List[Auction]:
        return self._auctions.listed()

    def auction(self, instance_type: str, region: str) -> Auction:
        """The auction for an instance type (name or fid) in `region`."""
        return self._auctions.get(instance_type, region)

    @_caught_up
    def free_capacity(self, auction: Auction) -> int:
        """Capacity not held by Allocated or Preempting bids (never negative)."""
        return self._auctions.free_capacity(auction)

    @_caught_up
    def current_prices(self,
                       instance_type: str,
                       region: Optional[str] = None,
                       instance_quantity: int = 1) -> PriceQuote:
        """Prices of one auction; without a region, of the type's cheapest region."""
        return self._auctions.current_prices(instance_type, region,
                                             instance_quantity)

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
        return self._auctions.price_history(instance_types,
                                            region,
                                            start=start,
                                            end=end,
                                            num_samples=num_samples)

    @_caught_up
    def set_price(self, instance_type: str, region: str,
                  price: money.MoneyInput) -> Auction:
        """Fixes the spot price now; bids react at the next clearing."""
        return self._auctions.set_price(instance_type, region, price)

    @_caught_up
    def script_prices(self, instance_type: str, region: str,
                      points: Sequence[Tuple[datetime.datetime,
                                             money.MoneyInput]]) -> Auction:
        """Future spot prices, each from the first clearing at or after its time."""
        return self._auctions.script_prices(instance_type, region, points)

    @_caught_up
    def start_random_walk(self,
                          instance_type: str,
                          region: str,
                          volatility: float = 0.1) -> Auction:
        """A seeded random walk of the spot price, one step per clearing."""
        return self._auctions.start_random_walk(instance_type, region,
                                                volatility)

    @_caught_up
    def script_history(self, instance_type: str, region: str,
                       points: Sequence[Tuple[datetime.datetime,
                                              money.MoneyInput]]) -> Auction:
        """Adds past spot-price samples to the auction's history."""
        return self._auctions.script_history(instance_type, region, points)

    @_caught_up
    def set_capacity(self, instance_type: str, region: str,
                     capacity: int) -> Auction:
        """Sets an auction's capacity; allocated bids keep theirs if it shrinks."""
        return self._auctions.set_capacity(instance_type, region, capacity)

    # SSH keys (`ssh_keys`).

    @_caught_up
    def ssh_keys(self, project: str) -> List[SshKey]:
        return self._ssh_keys.in_project(project)

    @_caught_up
    def create_ssh_key(self,
                       project: str,
                       name: str,
                       public_key: Optional[str] = None,
                       required: bool = False) -> Tuple[SshKey, Optional[str]]:
        """Registers a key; without `public_key` generates a pair and also
        returns its private key."""
        return self._ssh_keys.create(project, name, public_key, required)

    # Bids (`bids`).

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
        return self._bids.create(project=project,
                                 region=region,
                                 instance_type=instance_type,
                                 limit_price=limit_price,
                                 instance_quantity=instance_quantity,
                                 name=name,
                                 ssh_keys=ssh_keys,
                                 volumes=volumes,
                                 startup_script=startup_script,
                                 kubernetes_cluster=kubernetes_cluster,
                                 image_version=image_version,
                                 memory_gb=memory_gb)

    @_caught_up
    def bid(self, fid: str) -> Bid:
        return self._bids.get(fid)

    @_caught_up
    def bids(self,
             *,
             project: Optional[str] = None,
             name: Optional[str] = None,
             status: Optional[BidStatus] = None,
             region: Optional[str] = None,
             instance_type: Optional[str] = None) -> List[Bid]:
        """Bids matching every given filter, in submission order."""
        return self._bids.matching(project=project,
                                   name=name,
                                   status=status,
                                   region=region,
                                   instance_type=instance_type)

    @_caught_up
    def update_bid(self,
                   fid: str,
                   *,
                   limit_price: Optional[str] = None,
                   paused: Optional[bool] = None,
                   volumes: Optional[Sequence[str]] = None,
                   memory_gb: Optional[int] = None) -> Bid:
        """PATCH: a new limit, pause or unpause, a new list of volumes."""
        return self._bids.update(fid,
                                 limit_price=limit_price,
                                 paused=paused,
                                 volumes=volumes,
                                 memory_gb=memory_gb)

    @_caught_up
    def cancel_bid(self, fid: str) -> Bid:
        """DELETE: terminates the bid and its instances; a no-op if already terminated."""
        return self._bids.cancel(fid)

    @_caught_up
    def force_preempt(self, fid: str) -> Bid:
        """Starts a preemption notice on an allocated bid whatever the price (tests)."""
        return self._bids.force_preempt(fid)

    @_caught_up
    def add_filler_instances(self,
                             count: int,
                             *,
                             instance_type: Optional[str] = None,
                             region: Optional[str] = None) -> List[Bid]:
        """`count` running one-instance bids that are scenery (benchmarks)."""
        return self._bids.add_fillers(count,
                                      instance_type=instance_type,
                                      region=region)

    # Instances (`instances`).

    @_caught_up
    def instance(self, fid: str) -> Instance:
        return self._instances.get(fid)

    @_caught_up
    def instances(self,
                  project: str,
                  *,
                  bid_fids: Optional[Sequence[str]] = None,
                  statuses: Optional[Sequence[InstanceStatus]] = None,
                  region: Optional[str] = None,
                  instance_type: Optional[str] = None) -> List[Instance]:
        """A project's instances matching every given filter, in creation order."""
        return self._instances.in_project(project,
                                          bid_fids=bid_fids,
                                          statuses=statuses,
                                          region=region,
                                          instance_type=instance_type)

    # Volumes (`storage`).

    @_caught_up
    def volumes(self, project: str,
                region: Optional[str] = None) -> List[Volume]:
        """A project's volumes (only `region`'s when given), in creation order."""
        return self._storage.in_project(project, region)

    @_caught_up
    def create_volume(self, *, project: str, name: str, interface: str,
                      region: str, size_gb: int) -> Volume:
        """A new, empty volume; raises InvalidRequest (the quota included)."""
        return self._storage.create(project=project,
                                    name=name,
                                    interface=interface,
                                    region=region,
                                    size_gb=size_gb)

    @_caught_up
    def rename_volume(self, fid: str, name: str) -> Volume:
        """PATCH: a new name; hosts see it at `/mnt/<name>` from their next start."""
        return self._storage.rename(fid, name)

    @_caught_up
    def delete_volume(self, fid: str) -> None:
        """Deletes a volume no live bid lists (InvalidState otherwise) and its data."""
        self._storage.delete(fid)

    def volume_bids(self, volume: Volume) -> List[Bid]:
        """The live (not Terminated) bids that list `volume`, in submission order."""
        return self._storage.bids_listing(volume)

    def volume_attachments(self, volume: Volume) -> Dict[str, str]:
        """Instance fid -> where that VM sees `volume`, for the live bids' instances."""
        return self._storage.attachments(volume)

    # Kubernetes clusters (`kubernetes`).

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
        return self._kubernetes.create(project=project,
                                       name=name,
                                       region=region,
                                       instance_type=instance_type,
                                       ssh_keys=ssh_keys,
                                       k8s_version=k8s_version,
                                       image_version=image_version)

    @_caught_up
    def kubernetes_cluster(self, fid: str) -> KubernetesCluster:
        return self._kubernetes.get(fid)

    @_caught_up
    def kubernetes_clusters(self, project: str) -> List[KubernetesCluster]:
        """A project's clusters (terminated ones too), in creation order."""
        return self._kubernetes.in_project(project)

    def cluster_instances(self, cluster: KubernetesCluster) -> List[Instance]:
        """Instances of the live bids that joined `cluster`, in creation order."""
        return self._kubernetes.instances(cluster)

    @_caught_up
    def delete_kubernetes_cluster(self, fid: str) -> KubernetesCluster:
        """Terminates the cluster and removes its control node; idempotent."""
        return self._kubernetes.delete(fid)

    # Accounts (`accounts`).

    @_caught_up
    def quotas(self, project: str) -> List[Quota]:
        """Spot capacity per instance type, then the project's volume storage."""
        return self._accounts.quotas(project)

    # Inspection.

    @_caught_up
    def dump_state(self) -> Dict[str, Any]:
        """Every auction, bid (with instances) and volume as plain JSON-able
        data, for tests."""

        def price(amount: Optional[Decimal]) -> Optional[str]:
            return money.format_dollars(amount) if amount is not None else None

        store = self._state.store
        return {
            'now': self.now.isoformat(),
            'auctions': [{
                'fid': a.fid,
                'instance_type': a.instance_type.name,
                'instance_type_fid': a.instance_type.fid,
                'region': a.region,
                'capacity': a.capacity,
                'free_capacity': self._auctions.free_capacity(a),
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
            } for b in store.bids.values()],
            'volumes': [{
                'fid': v.fid,
                'name': v.name,
                'region': v.region,
                'interface': v.interface.value,
                'capacity_gb': v.capacity_gb,
                'bids': [b.fid for b in self._storage.bids_listing(v)],
                'attachments': self._storage.attachments(v),
            } for v in store.volumes.values()],
        }
