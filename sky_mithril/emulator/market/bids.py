"""Spot bids: placing one (checked against every resource it names), finding
them, and the user's actions on them.

A placed bid is Open and waits for the next clearing. A limit price change
(any live bid) takes effect at the next clearing; a notice already running is
not withdrawn. Pausing an Allocated or Preempting bid stops its instances and
frees its capacity at once; pausing an Open bid only takes it out of the
market; unpausing puts it back as Open. PATCHing `volumes` replaces the list
("Volumes Attached" / "Volumes Removed"). Cancelling terminates the bid and
its instances and destroys their hosts; cancelling a terminated bid does
nothing. Filler bids (`add_fillers`, for benchmarks) are scenery: they are
listed like any bid but take no part in clearings and hold no auction capacity.
"""

from decimal import Decimal
from typing import Any, List, Optional, Sequence

from sky_mithril import money
from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.auctions import Auctions
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                InvalidState, NotFound)
from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.kubernetes import KubernetesClusters
from sky_mithril.emulator.market.launch_specification import (
    MEMORY_NOT_ADJUSTABLE, launch_specification_errors)
from sky_mithril.emulator.market.records import (CAPACITY_HOLDERS, Bid,
                                                 BidEventType, BidStatus,
                                                 LaunchSpecification)
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState
from sky_mithril.emulator.market.storage import Volumes


class Bids:
    """Places, finds, changes and cancels bids."""

    def __init__(self, state: MarketState, accounts: Accounts,
                 auctions: Auctions, instances: Instances, ssh_keys: SshKeys,
                 volumes: Volumes, kubernetes: KubernetesClusters) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts
        self._auctions = auctions
        self._instances = instances
        self._ssh_keys = ssh_keys
        self._volumes = volumes
        self._kubernetes = kubernetes

    def create(self,
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
        project_error = self._accounts.project_error(project)
        if project_error is not None:
            errors.append(project_error)
        auction = None
        if instance_type not in self._store.instance_types:
            errors.append(
                FieldError('instance_type',
                           f'Instance type {instance_type} not found'))
        else:
            auction = self._store.auctions.get((instance_type, region))
            if auction is None:
                errors.append(
                    FieldError('region',
                               f'No auction for instance type '
                               f'{instance_type} in region {region}'))
        if instance_quantity < 1:
            errors.append(
                FieldError('instance_quantity',
                           'Input should be greater than or equal to 1',
                           'greater_than_equal'))
        price = None
        try:
            price = _limit_price(limit_price)
        except InvalidRequest as e:
            errors.extend(e.errors)
        if not name.strip():
            errors.append(
                FieldError('name', 'name must not be empty',
                           'string_too_short'))
        errors.extend(launch_specification_errors(
            self._ssh_keys, self._volumes, self._kubernetes, project=project,
            region=region, ssh_keys=ssh_keys, volumes=volumes,
            image_version=image_version, kubernetes_cluster=kubernetes_cluster,
            memory_gb=memory_gb))
        if errors:
            raise InvalidRequest(errors)
        assert auction is not None and price is not None
        bid = Bid(fid=self._state.new_fid('bid'),
                  name=name,
                  project=project,
                  created_by=self._accounts.user.fid,
                  created_at=self._state.now,
                  limit_price=price,
                  instance_quantity=instance_quantity,
                  auction=auction,
                  launch_specification=LaunchSpecification(
                      ssh_keys=list(ssh_keys),
                      volumes=list(volumes),
                      startup_script=startup_script,
                      kubernetes_cluster=kubernetes_cluster,
                      image_version=image_version),
                  order=self._state.next_order())
        self._store.bids[bid.fid] = bid
        auction.live_bids.append(bid)
        self._record_user_action(bid, BidEventType.PLACED, limit_price=price)
        return bid

    def get(self, fid: str) -> Bid:
        bid = self._store.bids.get(fid)
        if bid is None:
            raise NotFound('Bid', fid)
        return bid

    def list(self,
             *,
             project: Optional[str] = None,
             name: Optional[str] = None,
             status: Optional[BidStatus] = None,
             region: Optional[str] = None,
             instance_type: Optional[str] = None) -> List[Bid]:
        """Bids matching every given filter, in submission order."""
        return [
            bid for bid in self._store.bids.values()
            if (project is None or bid.project == project) and
            (name is None or bid.name == name) and
            (status is None or bid.status == status) and
            (region is None or bid.region == region) and
            (instance_type is None or bid.instance_type.fid == instance_type)
        ]

    def update(self,
               fid: str,
               *,
               limit_price: Optional[str] = None,
               paused: Optional[bool] = None,
               volumes: Optional[Sequence[str]] = None,
               memory_gb: Optional[int] = None) -> Bid:
        """A new limit (effective at the next clearing), pause or unpause, a
        new list of volumes (for the hosts' next start)."""
        bid = self.get(fid)
        errors: List[FieldError] = []
        if bid.status == BidStatus.TERMINATED:
            errors.append(FieldError('fid', f'Bid {fid} is terminated'))
        price = None
        if limit_price is not None:
            try:
                price = _limit_price(limit_price)
            except InvalidRequest as e:
                errors.extend(e.errors)
        if volumes is not None:
            errors.extend(
                self._volumes.attachable_errors(bid.project, bid.region,
                                                volumes, bid))
        if memory_gb is not None:
            errors.append(FieldError('memory_gb', MEMORY_NOT_ADJUSTABLE))
        if errors:
            raise InvalidRequest(errors)
        if price is not None and price != bid.limit_price:
            bid.limit_price = price
            self._record_user_action(bid, BidEventType.LIMIT_PRICE_CHANGED,
                                     limit_price=price)
        if volumes is not None:
            self._replace_volumes(bid, volumes)
        if paused and bid.status != BidStatus.PAUSED:
            self._pause(bid)
        elif paused is False and bid.status == BidStatus.PAUSED:
            bid.status = BidStatus.OPEN
            self._record_user_action(bid, BidEventType.RESUMED)
        return bid

    def _replace_volumes(self, bid: Bid, volumes: Sequence[str]) -> None:
        """Gives the bid a new list of volumes, recording what came and went."""
        before, after = set(bid.launch_specification.volumes), set(volumes)
        bid.launch_specification.volumes = list(volumes)
        if after - before:
            self._record_user_action(bid, BidEventType.VOLUMES_ATTACHED)
        if before - after:
            self._record_user_action(bid, BidEventType.VOLUMES_REMOVED)

    def _pause(self, bid: Bid) -> None:
        held_capacity = bid.status in CAPACITY_HOLDERS
        bid.status = BidStatus.PAUSED
        bid.epoch += 1
        bid.price_paid = None
        bid.preemption_end_time = None
        self._record_user_action(bid, BidEventType.PAUSED)
        if held_capacity:
            self._instances.stop(bid)

    def cancel(self, fid: str) -> Bid:
        """Terminates the bid and its instances; a no-op if already terminated."""
        bid = self.get(fid)
        if bid.status == BidStatus.TERMINATED:
            return bid
        bid.status = BidStatus.TERMINATED
        bid.epoch += 1
        bid.deactivated_at = self._state.now
        bid.price_paid = None
        bid.preemption_end_time = None
        if not bid.filler:
            bid.auction.live_bids.remove(bid)
        self._record_user_action(bid, BidEventType.TERMINATED)
        self._instances.terminate(bid.instances)
        return bid

    def force_preempt(self, fid: str) -> Bid:
        """Starts a preemption notice on an allocated bid whatever the price (tests)."""
        bid = self.get(fid)
        if bid.status != BidStatus.ALLOCATED or bid.filler:
            raise InvalidState(
                f'Bid {fid} is {bid.status.value}; only a non-filler '
                f'Allocated bid can be preempted')
        self._instances.start_notice(bid)
        return bid

    def add_fillers(self,
                    count: int,
                    *,
                    instance_type: Optional[str] = None,
                    region: Optional[str] = None) -> List[Bid]:
        """`count` one-instance bids, already Allocated and RUNNING at placeholder
        addresses, named `filler-<n>`; no host backend calls, no auction capacity.
        Default auction: the catalog's first."""
        auction = (self._auctions.get(instance_type, region or '')
                   if instance_type is not None else next(
                       iter(self._store.auctions.values())))
        bids = []
        for _ in range(count):
            order = self._state.next_order()
            bid = Bid(fid=self._state.new_fid('bid'),
                      name=f'filler-{order}',
                      project=self._accounts.project.fid,
                      created_by=self._accounts.user.fid,
                      created_at=self._state.now,
                      limit_price=auction.spot_price,
                      instance_quantity=1,
                      auction=auction,
                      launch_specification=LaunchSpecification([], []),
                      order=order,
                      status=BidStatus.ALLOCATED,
                      price_paid=auction.spot_price,
                      filler=True)
            bid.record(self._state.now, BidEventType.PLACED,
                       limit_price=bid.limit_price)
            bid.record(self._state.now, BidEventType.ALLOCATED)
            instance = self._instances.create(bid, 0)
            self._instances.run_filler(instance, auction.spot_price, HostAddress(
                ssh_destination=f'127.79.{order // 254 % 256}.{order % 254 + 1}',
                private_ip=f'127.80.{order // 254 % 256}.{order % 254 + 1}'))
            self._store.bids[bid.fid] = bid
            bids.append(bid)
        return bids

    def _record_user_action(self,
                            bid: Bid,
                            event_type: BidEventType,
                            *,
                            limit_price: Optional[Decimal] = None) -> None:
        bid.record(self._state.now,
                   event_type,
                   limit_price=limit_price,
                   user_id=self._accounts.user.fid)


def _limit_price(value: Any) -> Decimal:
    """Reads a "$x.yy" limit price (positive, at most cents); raises
    InvalidRequest naming `limit_price`."""
    error = InvalidRequest([
        FieldError('limit_price',
                   'limit_price must be a positive dollar amount such '
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
