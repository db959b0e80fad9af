"""Reservations: capacity of one auction bought for a window of whole hours,
its prices and credits, its instances, and the user's actions on it.

Buying:
  window    from `start_time` (now, within `START_GRACE` of the past, or
            later) to `end_time`, whole hours from `MIN_HOURS` to
            `MAX_HOURS`; 1 to `MAX_QUANTITY` instances, which must be free
            for the whole window (`reserved_capacity`: other reservations
            count, spot bids do not).
  price     an offer (`quote`; the one offer is `STANDARD_OFFER_KEY`) sets
            the terms, per instance-hour: the unit price, the auction's spot
            price (at least its floor) raised by the share of its capacity
            already reserved in the window at its busiest, plus an option
            premium of `OPTION_PREMIUM_SHARE` of that, which buys the
            credits; a pause credit of `PAUSE_CREDIT_SHARE` and a return
            credit of `RETURN_CREDIT_SHARE` of the unit price. A quote with
            no capacity free has no offer.
            The unit price times instances times hours is charged in full at
            creation; `max_unit_price` (cents) refuses a unit price above it.
  launch    its launch specification (SSH keys, startup script, volumes,
            Kubernetes cluster, image) is fixed at creation, checked as a
            bid's; only its volumes change later (at each host's next start).

Its life: Pending until `start_time`, when it is Active and its instances
(`<name>-<index>`) boot as real hosts, like a bid's; Ended at `end_time`,
when its instances are terminated and their hosts destroyed. Its capacity
leaves the spot auction from one preemption notice before its start, so the
spot bids it displaces get their full notice (starting sooner, its instances
wait for the notices' end). Nothing cancels a reservation (Mithril has no
such call); extending it moves its `end_time` later, at its own terms, while
the capacity is free and the window stays within `MAX_HOURS`.

Pausing (the whole reservation, or single instances through
`PATCH /v2/instances`, via `Instances.reservation_hooks`): a paused
instance's capacity is lent to spot at once; resuming takes it back,
giving the spot bids that no longer fit their notice, and the instance
boots once they are gone (minutes), in STATUS_CONFIRMED meanwhile. An
instance paused for at least `MIN_PAUSE` earns the pause credit for every
hour of that pause (the whole pause, to the second).

Returning instances (`return_instances`) deletes them for good and credits
the return credit times instances times the hours left in the window; an
instance whose VM is restarting cannot be stopped and stays (a partial
return). Credits and charges are in dollars, rounded down to the cent.
"""

import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from sky_mithril import money
from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.auctions import Auctions
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                InvalidState, NotFound)
from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.kubernetes import KubernetesClusters
from sky_mithril.emulator.market.launch_specification import \
    launch_specification_errors
from sky_mithril.emulator.market.records import (
    Auction, AvailabilitySlot, Grant, Instance, InstanceReturn, InstanceStatus,
    InstanceType, LaunchSpecification, PauseSpan, Reservation,
    ReservationEventType, ReservationOffer, ReservationStatus,
    ReservationTerms, ReservationUsage, hours_between)
from sky_mithril.emulator.market.reserved_capacity import ReservedCapacity
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState
from sky_mithril.emulator.market.storage import Volumes

MIN_HOURS = 3
MAX_HOURS = 336
MAX_QUANTITY = 100
START_GRACE = datetime.timedelta(minutes=10)
MIN_PAUSE = datetime.timedelta(hours=1)
STANDARD_OFFER_KEY = 'standard'
STANDARD_OFFER_NAME = 'Standard'
OPTION_PREMIUM_SHARE = Decimal('0.25')
PAUSE_CREDIT_SHARE = Decimal('0.40')
RETURN_CREDIT_SHARE = Decimal('0.60')

_HOUR = datetime.timedelta(hours=1)
# Instances in these statuses are not paused again by pausing their
# reservation (they are paused, on their way there, or gone).
_NOT_PAUSABLE = (InstanceStatus.PAUSED, InstanceStatus.STOPPING,
                 InstanceStatus.TERMINATED, InstanceStatus.ERROR)


class Reservations:
    """Quotes, creates, finds, pauses, extends and shrinks reservations, and
    runs their life in time (module docstring)."""

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
        self._capacity = ReservedCapacity(state, instances)
        instances.reservation_hooks = self

    # What can be reserved, when, at what price.

    def instance_types(self) -> List[InstanceType]:
        """The instance types that can be reserved: every auctioned one."""
        return self._auctions.instance_types()

    def quote(self, *, project: str, instance_type: str, region: str,
              start_time: datetime.datetime, end_time: datetime.datetime,
              quantity: int) -> List[ReservationOffer]:
        """The offers for the window (none when the capacity is not free);
        raises InvalidRequest."""
        auction = self._window_request(project, instance_type, region,
                                       start_time, end_time, quantity)
        if self._capacity.free(auction, start_time, end_time) < quantity:
            return []
        return [self._offer(auction, start_time, end_time, quantity)]

    def latest_end_time(self, *, project: str, instance_type: str,
                        region: str, start_time: datetime.datetime,
                        quantity: int) -> Tuple[datetime.datetime, bool]:
        """The latest end of a reservation of `quantity` from `start_time`
        (whole hours, at most `MAX_HOURS`), and whether it is at least
        `MIN_HOURS` long; raises InvalidRequest."""
        auction = self._availability_request(project, instance_type, region,
                                             quantity)
        limit = start_time + MAX_HOURS * _HOUR
        latest = _whole_hours_after(
            start_time,
            self._capacity.latest_end(auction, start_time, quantity, limit))
        return latest, latest - start_time >= MIN_HOURS * _HOUR

    def slots(self,
              *,
              project: str,
              instance_type: str,
              region: str,
              earliest_start_time: datetime.datetime,
              latest_end_time: datetime.datetime,
              quantity: Optional[int] = None) -> List[AvailabilitySlot]:
        """Where in the range (from now on) `quantity` (default 1) instances
        are free; raises InvalidRequest."""
        auction = self._availability_request(project, instance_type, region,
                                             quantity or 1)
        start = max(earliest_start_time, self._state.now)
        if latest_end_time <= start:
            return []
        return self._capacity.slots(auction, start, latest_end_time,
                                    quantity or 1)

    def check(self, *, project: str, instance_type: str, region: str,
              start_time: datetime.datetime, end_time: datetime.datetime,
              quantity: int) -> bool:
        """Whether `quantity` instances can be reserved for the window;
        raises InvalidRequest."""
        auction = self._window_request(project, instance_type, region,
                                       start_time, end_time, quantity)
        return self._capacity.free(auction, start_time, end_time) >= quantity

    # Reservations.

    def create(self,
               *,
               project: str,
               instance_type: str,
               region: str,
               start_time: datetime.datetime,
               end_time: datetime.datetime,
               instance_quantity: int,
               name: str,
               ssh_keys: Sequence[str] = (),
               volumes: Sequence[str] = (),
               startup_script: Optional[str] = None,
               kubernetes_cluster: Optional[str] = None,
               image_version: Optional[str] = None,
               memory_gb: Optional[int] = None,
               offer_key: str = STANDARD_OFFER_KEY,
               max_unit_price: Optional[int] = None) -> Reservation:
        """Buys a reservation, charged in full now; raises InvalidRequest."""
        errors = self._accounts.order_errors(project, name)
        auction = self._auction(instance_type, region, errors)
        errors += _window_errors(start_time, end_time, self._state.now)
        errors += _quantity_errors(instance_quantity, 'instance_quantity')
        errors += launch_specification_errors(
            self._ssh_keys, self._volumes, self._kubernetes, project=project,
            region=region if auction is not None else None, ssh_keys=ssh_keys,
            volumes=volumes, image_version=image_version,
            kubernetes_cluster=kubernetes_cluster, memory_gb=memory_gb)
        if errors:
            raise InvalidRequest(errors)
        assert auction is not None
        free = self._capacity.free(auction, start_time, end_time)
        if free < instance_quantity:
            raise InvalidRequest([
                FieldError('instance_quantity',
                           f'Only {free} instances of '
                           f'{auction.instance_type.name} in {region} are '
                           'free for the whole window')
            ])
        offer = self._offer(auction, start_time, end_time, instance_quantity)
        self._check_price_specification(offer.terms, offer_key, max_unit_price)
        reservation = Reservation(
            fid=self._state.new_fid('res'),
            name=name,
            project=project,
            created_by=self._accounts.user.fid,
            created_at=self._state.now,
            auction=auction,
            start_time=start_time,
            end_time=end_time,
            instance_quantity=instance_quantity,
            launch_specification=LaunchSpecification(
                ssh_keys=list(ssh_keys),
                volumes=list(volumes),
                startup_script=startup_script,
                kubernetes_cluster=kubernetes_cluster,
                image_version=image_version),
            terms=offer.terms,
            order=self._state.next_order())
        self._store.reservations[reservation.fid] = reservation
        self._grant(reservation, start_time, end_time)
        user = self._accounts.user.fid
        reservation.record(self._state.now, ReservationEventType.PLACED,
                           user_id=user)
        reservation.record(self._state.now, ReservationEventType.TERMS_SET,
                           user_id=user, terms=offer.terms)
        self._at(start_time - self._notice, lambda: self._claim(reservation))
        self._at(start_time, lambda: self._activate(reservation))
        self._at(end_time, lambda: self._end(reservation))
        return reservation

    def get(self, fid: str) -> Reservation:
        reservation = self._store.reservations.get(fid)
        if reservation is None:
            raise NotFound('Reservation', fid)
        return reservation

    def list(self,
             project: str,
             *,
             instance_type: Optional[str] = None,
             region: Optional[str] = None,
             status: Optional[ReservationStatus] = None) -> List[Reservation]:
        """A project's reservations matching every given filter, in creation
        order; raises NotFound for another project."""
        self._accounts.require_project(project)
        return [
            r for r in self._store.reservations.values()
            if r.project == project and
            (instance_type is None or r.instance_type.fid == instance_type) and
            (region is None or r.region == region) and
            (status is None or r.status == status)
        ]

    def update(self,
               fid: str,
               *,
               paused: Optional[bool] = None,
               volumes: Optional[Sequence[str]] = None) -> Reservation:
        """Pauses or resumes every instance of an Active or Paused
        reservation, and/or gives it a new list of volumes (for its hosts'
        next start); raises InvalidRequest."""
        reservation = self.get(fid)
        errors: List[FieldError] = []
        if not reservation.live:
            errors.append(
                FieldError('fid', f'Reservation {fid} has ended'))
        elif paused and reservation.status == ReservationStatus.PENDING:
            errors.append(
                FieldError('paused', f'Reservation {fid} starts at '
                           f'{reservation.start_time.isoformat()}; only an '
                           'active reservation can be paused'))
        if volumes is not None and reservation.live:
            errors += self._volumes.attachable_errors(
                reservation.project, reservation.region, volumes, reservation)
        if errors:
            raise InvalidRequest(errors)
        if volumes is not None:
            reservation.launch_specification.volumes = list(volumes)
        user = self._accounts.user.fid
        if paused and reservation.status == ReservationStatus.ACTIVE:
            reservation.status = ReservationStatus.PAUSED
            reservation.record(self._state.now, ReservationEventType.PAUSED,
                               user_id=user)
            for instance in reservation.instances:
                if instance.status not in _NOT_PAUSABLE:
                    self._instances.pause(instance)
        elif paused is False and reservation.status == ReservationStatus.PAUSED:
            reservation.status = ReservationStatus.ACTIVE
            reservation.record(self._state.now, ReservationEventType.RESUMED,
                               user_id=user)
            for instance in reservation.instances:
                if instance.status in (InstanceStatus.PAUSED,
                                       InstanceStatus.STOPPING):
                    self._instances.resume(instance)
        return reservation

    def extension_availability(
            self, fid: str) -> Tuple[datetime.datetime, bool]:
        """The latest `end_time` the reservation can be extended to, and
        whether that is at least an hour past its end."""
        reservation = self.get(fid)
        if not reservation.live:
            return reservation.end_time, False
        latest = _whole_hours_after(
            reservation.start_time,
            self._capacity.latest_end(
                reservation.auction, reservation.end_time,
                reservation.instance_quantity,
                reservation.start_time + MAX_HOURS * _HOUR))
        return latest, latest - reservation.end_time >= _HOUR

    def extend(self,
               fid: str,
               end_time: datetime.datetime,
               *,
               offer_key: str = STANDARD_OFFER_KEY,
               max_unit_price: Optional[int] = None) -> Reservation:
        """Moves the end later, charging the added hours at the
        reservation's terms; raises InvalidRequest."""
        reservation = self.get(fid)
        errors: List[FieldError] = []
        if not reservation.live:
            errors.append(
                FieldError('end_time',
                           f'Reservation {fid} has ended; it cannot be '
                           'extended'))
        elif end_time <= reservation.end_time:
            errors.append(
                FieldError('end_time', 'end_time must be later than the '
                           f'reservation\'s end, '
                           f'{reservation.end_time.isoformat()}'))
        else:
            errors += _length_errors(reservation.start_time, end_time)
            free = self._capacity.free(reservation.auction,
                                       reservation.end_time, end_time)
            if not errors and free < reservation.instance_quantity:
                errors.append(
                    FieldError('end_time',
                               f'Only {free} instances are free until '
                               f'{end_time.isoformat()}; the reservation '
                               f'has {reservation.instance_quantity}'))
        if errors:
            raise InvalidRequest(errors)
        self._check_price_specification(reservation.terms, offer_key,
                                        max_unit_price)
        self._grant(reservation, reservation.end_time, end_time)
        reservation.end_time = end_time
        reservation.record(self._state.now,
                           ReservationEventType.TERMS_CHANGED,
                           user_id=self._accounts.user.fid,
                           terms=reservation.terms)
        self._at(end_time, lambda: self._end(reservation))
        return reservation

    def return_instances(
            self, fid: str,
            instance_fids: Sequence[str]) -> Tuple[List[Instance],
                                                   List[Instance]]:
        """Gives instances back for the return credit, deleting them for
        good: (those returned, those that could not be stopped). Raises
        InvalidState once the reservation has ended, NotFound for an
        instance it does not have."""
        reservation = self.get(fid)
        if not reservation.live:
            raise InvalidState(f'Reservation {fid} has ended')
        own = {instance.fid: instance for instance in reservation.instances}
        for instance_fid in instance_fids:
            if instance_fid not in own:
                raise NotFound(f'Instance of reservation {fid}', instance_fid)
        chosen = [own[instance_fid] for instance_fid in instance_fids]
        returned = [i for i in chosen if not i.restarting]
        kept = [i for i in chosen if i.restarting]
        if not returned:
            return returned, kept
        now = self._state.now
        instance_hours = len(returned) * hours_between(
            max(now, reservation.start_time), reservation.end_time)
        for instance in returned:
            self._end_pause(reservation, instance)
            reservation.lent.discard(instance.fid)
            reservation.instances.remove(instance)
        reservation.instance_quantity -= len(returned)
        reservation.returns.append(
            InstanceReturn(at=now, instances=tuple(returned),
                           instance_hours=instance_hours,
                           credit=_cents_down(reservation.terms.return_credit *
                                              instance_hours)))
        self._instances.terminate(returned)
        self._capacity.hold(reservation.auction)
        return returned, kept

    # Money.

    def pause_credit(self, reservation: Reservation) -> Decimal:
        """Dollars its instances earned paused, as of now: every pause of
        at least `MIN_PAUSE` (within the window), at the pause credit."""
        hours = sum((hours_between(span.start, end)
                     for span, end in self._pause_spans(reservation)
                     if end - span.start >= MIN_PAUSE), Decimal(0))
        return _cents_down(reservation.terms.pause_credit * hours)

    def usage(self, fid: str) -> ReservationUsage:
        """What the reservation cost and earned so far, and its
        instance-hours."""
        reservation = self.get(fid)
        now = self._state.now
        until = min(now, reservation.end_time)
        idle = sum((end - span.start
                    for span, end in self._pause_spans(reservation)),
                   datetime.timedelta(0))
        up_until = {i.fid: until for i in reservation.instances}
        for given_back in reservation.returns:
            up_until.update({i.fid: given_back.at
                             for i in given_back.instances})
        elapsed = sum((max(datetime.timedelta(0),
                           up_until[i.fid] - i.created_at)
                       for i in reservation.all_instances),
                      datetime.timedelta(0))
        reserved_hours = (sum((g.instance_hours for g in reservation.grants),
                              Decimal(0)) -
                          sum((r.instance_hours for r in reservation.returns),
                              Decimal(0)))
        return ReservationUsage(
            charged=reservation.charged,
            pause_credit=self.pause_credit(reservation),
            return_credit=reservation.return_credit,
            reserved=datetime.timedelta(hours=float(reserved_hours)),
            active=max(datetime.timedelta(0), elapsed - idle),
            idle=idle,
            as_of=now)

    # What instances tell (`Instances.reservation_hooks`).

    def pausing(self, instance: Instance) -> None:
        """An instance of a reservation is being paused: its pause starts
        and its capacity is lent to spot."""
        reservation = self._reservation_of(instance)
        if reservation is None:
            return
        reservation.pauses.append(PauseSpan(instance.fid, self._state.now))
        reservation.lent.add(instance.fid)
        self._capacity.hold(reservation.auction)

    def resuming(self, instance: Instance) -> float:
        """An instance of a reservation is resuming: its pause ends and its
        capacity is taken back; the seconds until spot has left it."""
        reservation = self._reservation_of(instance)
        if reservation is None:
            return 0.0
        self._end_pause(reservation, instance)
        reservation.lent.discard(instance.fid)
        free_at = self._capacity.hold(reservation.auction)
        return (free_at - self._state.now).total_seconds()

    # Inspection.

    def dump(self) -> List[Dict[str, Any]]:
        """Every reservation with what the API does not show (capacity held,
        instances lent to spot, credits) as plain JSON-able data, for tests."""

        def dollars(amount: Decimal) -> str:
            return money.format_dollars(amount)

        return [{
            'fid': r.fid,
            'name': r.name,
            'status': r.status.value,
            'instance_type': r.instance_type.name,
            'region': r.region,
            'start_time': r.start_time.isoformat(),
            'end_time': r.end_time.isoformat(),
            'instance_quantity': r.instance_quantity,
            'claimed': r.claimed,
            'held': r.held,
            'lent': sorted(r.lent),
            'instances': [{'fid': i.fid, 'name': i.name,
                           'status': i.status.value} for i in r.instances],
            'returned': [i.fid for given_back in r.returns
                         for i in given_back.instances],
            'unit_price': dollars(r.terms.unit_price),
            'pause_credit_rate': dollars(r.terms.pause_credit),
            'return_credit_rate': dollars(r.terms.return_credit),
            'charged': dollars(r.charged),
            'pause_credit': dollars(self.pause_credit(r)),
            'return_credit': dollars(r.return_credit),
            'events': [e.event_type.value for e in r.events],
        } for r in self._store.reservations.values()]

    # Its life in time.

    @property
    def _notice(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self._instances.preemption_notice_s)

    def _at(self, when: datetime.datetime, action: Callable[[], None]) -> None:
        """Runs `action` at `when`: now if that has come."""
        delay = (when - self._state.now).total_seconds()
        if delay <= 0:
            action()
        else:
            self._state.after(delay, action)

    def _claim(self, reservation: Reservation) -> None:
        """Takes the live reservation's capacity from spot (one notice
        before it starts)."""
        reservation.claimed = reservation.live
        self._capacity.hold(reservation.auction)

    def _activate(self, reservation: Reservation) -> None:
        """Active: its instances boot once spot has left their capacity."""
        if reservation.status != ReservationStatus.PENDING:
            return
        reservation.claimed = True
        free_at = self._capacity.hold(reservation.auction)
        wait_s = (free_at - self._state.now).total_seconds()
        reservation.status = ReservationStatus.ACTIVE
        reservation.record(self._state.now, ReservationEventType.ACTIVE)
        for index in range(reservation.instance_quantity):
            self._instances.launch(reservation, f'{reservation.name}-{index}',
                                   reservation.terms.unit_price,
                                   wait_s=wait_s)

    def _end(self, reservation: Reservation) -> None:
        """Ended, if its (possibly extended) end has come: its instances are
        terminated and its capacity goes back to spot."""
        if not reservation.live or self._state.now < reservation.end_time:
            return
        reservation.status = ReservationStatus.ENDED
        reservation.deactivated_at = self._state.now
        reservation.record(self._state.now, ReservationEventType.ENDED)
        for instance in reservation.instances:
            self._end_pause(reservation, instance)
        reservation.claimed = False
        reservation.lent.clear()
        self._capacity.hold(reservation.auction)
        self._instances.terminate(reservation.instances)

    # Helpers.

    def _reservation_of(self, instance: Instance) -> Optional[Reservation]:
        """The reservation an instance belongs to; None for a CPU VM's."""
        return self._store.reservations.get(instance.reservation_fid or '')

    def _end_pause(self, reservation: Reservation, instance: Instance) -> None:
        for span in reservation.pauses:
            if span.instance_fid == instance.fid and span.end is None:
                span.end = self._state.now

    def _pause_spans(
            self, reservation: Reservation
    ) -> List[Tuple[PauseSpan, datetime.datetime]]:
        """Each pause with its end so far, within the window."""
        until = min(self._state.now, reservation.end_time)
        return [(span, min(span.end or until, reservation.end_time))
                for span in reservation.pauses]

    def _grant(self, reservation: Reservation, start: datetime.datetime,
               end: datetime.datetime) -> None:
        reservation.grants.append(
            Grant(fid=self._state.new_fid('grant'), start=start, end=end,
                  quantity=reservation.instance_quantity,
                  terms=reservation.terms))

    def _offer(self, auction: Auction, start: datetime.datetime,
               end: datetime.datetime, quantity: int) -> ReservationOffer:
        """The standard offer for the window (module docstring)."""
        capacity = auction.capacity
        reserved_share = (Decimal(capacity -
                                  self._capacity.free(auction, start, end)) /
                          capacity if capacity else Decimal(1))
        base = (max(auction.spot_price, auction.minimum_price) *
                (1 + reserved_share))
        premium = (base * OPTION_PREMIUM_SHARE).quantize(money.CENT)
        unit_price = base.quantize(money.CENT) + premium
        return ReservationOffer(
            key=STANDARD_OFFER_KEY,
            display_name=STANDARD_OFFER_NAME,
            terms=ReservationTerms(
                unit_price=unit_price,
                pause_credit=_cents_down(unit_price * PAUSE_CREDIT_SHARE),
                return_credit=_cents_down(unit_price * RETURN_CREDIT_SHARE)),
            option_premium=premium,
            quantity=quantity,
            hours=hours_between(start, end))

    def _check_price_specification(self, terms: ReservationTerms,
                                   offer_key: str,
                                   max_unit_price: Optional[int]) -> None:
        """Refuses an unknown offer, or a unit price above `max_unit_price`
        (cents)."""
        errors = []
        if offer_key != STANDARD_OFFER_KEY:
            errors.append(
                FieldError('offer_key', f'Unknown offer {offer_key!r}; the '
                           f'one offer is {STANDARD_OFFER_KEY!r}'))
        if (max_unit_price is not None and
                money.dollars_to_cents(terms.unit_price) > max_unit_price):
            errors.append(
                FieldError('max_unit_price',
                           'The unit price is '
                           f'{money.format_dollars(terms.unit_price)}, above '
                           'max_unit_price '
                           f'{money.format_dollars(money.cents_to_dollars(max_unit_price))}'))
        if errors:
            raise InvalidRequest(errors)

    def _auction(self, instance_type: str, region: str,
                 errors: List[FieldError]) -> Optional[Auction]:
        """The auction of an instance type fid in `region`; None, with the
        error added, if there is none."""
        if instance_type not in self._store.instance_types:
            errors.append(
                FieldError('instance_type',
                           f'Instance type {instance_type} not found'))
            return None
        auction = self._store.auctions.get((instance_type, region))
        if auction is None:
            errors.append(
                FieldError('region', f'Instance type {instance_type} is not '
                           f'offered in region {region}'))
        return auction

    def _availability_request(self, project: str, instance_type: str,
                              region: str, quantity: int) -> Auction:
        """The auction an availability or quote request is about; raises
        InvalidRequest."""
        errors = [e for e in (self._accounts.project_error(project),)
                  if e is not None]
        auction = self._auction(instance_type, region, errors)
        errors += _quantity_errors(quantity, 'quantity')
        if errors:
            raise InvalidRequest(errors)
        assert auction is not None
        return auction

    def _window_request(self, project: str, instance_type: str, region: str,
                        start_time: datetime.datetime,
                        end_time: datetime.datetime, quantity: int) -> Auction:
        """`_availability_request`, with a window a reservation could have."""
        errors: List[FieldError] = []
        auction: Optional[Auction] = None
        try:
            auction = self._availability_request(project, instance_type,
                                                 region, quantity)
        except InvalidRequest as e:
            errors += e.errors
        errors += _window_errors(start_time, end_time, self._state.now)
        if errors:
            raise InvalidRequest(errors)
        assert auction is not None
        return auction


def _window_errors(start: datetime.datetime, end: datetime.datetime,
                   now: datetime.datetime) -> List[FieldError]:
    """Why a reservation cannot have the window [start, end)."""
    errors = []
    if start < now - START_GRACE:
        errors.append(
            FieldError('start_time', f'start_time is in the past (it is '
                       f'{now.isoformat()})'))
    return errors + _length_errors(start, end)


def _length_errors(start: datetime.datetime,
                   end: datetime.datetime) -> List[FieldError]:
    """Why [start, end) is no window of whole hours from MIN_HOURS to
    MAX_HOURS."""
    length = end - start
    if length % _HOUR or not MIN_HOURS * _HOUR <= length <= MAX_HOURS * _HOUR:
        return [
            FieldError('end_time',
                       f'A reservation lasts whole hours, from {MIN_HOURS} '
                       f'to {MAX_HOURS}; this one would last {length}')
        ]
    return []


def _quantity_errors(quantity: int, field: str) -> List[FieldError]:
    if not 1 <= quantity <= MAX_QUANTITY:
        return [
            FieldError(field, f'{field} must be from 1 to {MAX_QUANTITY}')
        ]
    return []


def _whole_hours_after(start: datetime.datetime,
                       moment: datetime.datetime) -> datetime.datetime:
    """The latest time at most `moment` a whole number of hours after
    `start`."""
    return start + (moment - start) // _HOUR * _HOUR


def _cents_down(amount: Decimal) -> Decimal:
    return amount.quantize(money.CENT, rounding=ROUND_DOWN)
