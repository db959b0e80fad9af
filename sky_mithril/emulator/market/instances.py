"""Instances' life cycle: what happens to a bid and its instances once the
clearing allocates it, when a notice preempts it, when it is paused and when
it is terminated; to a CPU VM's or a reservation's instance from its launch;
to an instance of a reservation paused, resumed, restarted or given a fresh
boot disk; and which host backend hook each step calls.

After allocation (a CPU VM: at once; a reservation's instance: once the
capacity it takes from spot is free): STATUS_NEW -> STATUS_CONFIRMED ->
STATUS_INITIALIZING -> STATUS_STARTING (host created or resumed here, with
the order's SSH keys and volumes; the address becomes visible) ->
STATUS_RUNNING; a host backend that fails puts the instance in
STATUS_ERROR. A preemption notice (`Preempting` for `preemption_notice_s`)
goes STATUS_PREEMPTING -> STATUS_PREEMPTED and always runs to its end, then
the bid is Open again; stopping a paused bid's instances goes STATUS_STOPPING
-> STATUS_PAUSED. A re-allocated bid (after preemption or unpause) boots the
same instances again from STATUS_NEW, resuming their hosts (same disks).
A running instance of an Allocated bid can be replaced (`replace`, a control
endpoint): STATUS_REPLACED, and a new instance with a new host in its place.
Instances are named `<bid name>-<index>`, index from 0 (so are a
reservation's); a CPU VM's instance has the VM's name.

Actions on single instances (`PATCH /v2/instances`, restart,
refresh-boot-disk) apply to instances of a reservation only (a reservation's,
or a CPU VM's, whose hidden reservation Mithril sets on their rows; the
reservations backend is told of a pause or resume through
`reservation_hooks`, and a resume waits for the capacity it takes back from
spot, in STATUS_CONFIRMED); a spot instance is
NotSupported, as Mithril answers 501. Each checks every instance before it
changes any:
  pause     a RUNNING instance stops (STATUS_STOPPING, `stop_duration_s`,
            STATUS_PAUSED, host paused); a stopping or paused one stays as it
            is, as does one that cannot run (terminated, in error); one still
            booting or restarting is not ready (InvalidState).
  resume    a PAUSED instance boots again from STATUS_CONFIRMED (its host
            resumed at STATUS_STARTING); a stopping one is not ready; any
            other stays as it is.
  restart   a RUNNING instance's VM goes down for `RESTART_DURATION_S` and
            comes back, the instance RUNNING throughout; one not running, or
            already restarting, is InvalidState.
  refresh   a PAUSED instance's boot disk is recreated (its host destroyed,
            created afresh at its next start, volumes kept); a terminated one
            has no VM (InvalidState); any other is declined, INSTANCE_RUNNING,
            as is an image version other than the one its type boots,
            INVALID_IMAGE_VERSION.
Unknown fids are NotFound before anything else. A CPU VM costs its hourly
price until it is terminated, paused or not. Each status an instance enters, and
each change of what it is charged, is told to `history`.
"""

import datetime
import functools
import logging
from decimal import Decimal
from typing import (Any, Callable, Dict, List, Mapping, Optional, Protocol,
                    Sequence, Union)

from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.errors import (Declined, InvalidState,
                                                NotFound, NotSupported)
from sky_mithril.emulator.market.history import History
from sky_mithril.emulator.market.images import image_for
from sky_mithril.emulator.market.records import (Bid, BidEventType, BidStatus,
                                                 CpuVm, HostState, Instance,
                                                 InstanceStatus, Order,
                                                 Reservation)
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState
from sky_mithril.emulator.market.storage import Volumes

logger = logging.getLogger('sky.sky_mithril.emulator')

BOOT_SEQUENCE = (InstanceStatus.NEW, InstanceStatus.CONFIRMED,
                 InstanceStatus.INITIALIZING, InstanceStatus.STARTING,
                 InstanceStatus.RUNNING)
# Emulated seconds spent in each boot status before the next (60 s in all).
DEFAULT_BOOT_DURATIONS_S: Mapping[InstanceStatus, float] = {
    InstanceStatus.NEW: 5.0,
    InstanceStatus.CONFIRMED: 20.0,
    InstanceStatus.INITIALIZING: 25.0,
    InstanceStatus.STARTING: 10.0,
}
# Emulated seconds an instance's VM is down while it restarts.
RESTART_DURATION_S = 30.0
ORDER_TYPES = ('Bid', 'Reservation')


class ReservationHooks(Protocol):
    """What the reservations backend does as one of a reservation's
    instances is paused or resumed (it ignores CPU VMs' instances)."""

    def pausing(self, instance: Instance) -> None:
        """`instance` is being paused: its capacity is lent to spot."""

    def resuming(self, instance: Instance) -> float:
        """`instance` is resuming: its capacity is taken back from spot;
        returns the seconds until the spot bids that held it are gone."""


class Instances:
    """Moves bids', CPU VMs' and reservations' instances through
    allocation or launch, boot, notice, stop and termination, and single
    instances through the actions on them, calling the host backend as they
    go."""

    def __init__(self,
                 state: MarketState,
                 accounts: Accounts,
                 ssh_keys: SshKeys,
                 volumes: Volumes,
                 history: History,
                 *,
                 preemption_notice_s: float,
                 boot_durations_s: Optional[Mapping[InstanceStatus,
                                                    float]] = None,
                 stop_duration_s: float) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts
        self._ssh_keys = ssh_keys
        self._volumes = volumes
        self._history = history
        self.preemption_notice_s = preemption_notice_s
        self.boot_durations_s = {
            **DEFAULT_BOOT_DURATIONS_S,
            **(boot_durations_s or {})
        }
        self.stop_duration_s = stop_duration_s
        # Set by the reservations backend.
        self.reservation_hooks: Optional[ReservationHooks] = None

    # Lookups.

    def get(self, fid: str) -> Instance:
        instance = self._store.instances.get(fid)
        if instance is None:
            raise NotFound('Instance', fid)
        return instance

    def list(self,
             project: str,
             *,
             bid_fids: Optional[Sequence[str]] = None,
             statuses: Optional[Sequence[InstanceStatus]] = None,
             region: Optional[str] = None,
             instance_type: Optional[str] = None,
             order_types: Optional[Sequence[str]] = None,
             reservation_fids: Optional[Sequence[str]] = None
            ) -> List[Instance]:
        """A project's instances matching every given filter, in creation
        order; `order_types` among `ORDER_TYPES` (an instance of a bid is a
        'Bid', one of a reservation a 'Reservation')."""
        self._accounts.require_project(project)
        bid_set = set(bid_fids) if bid_fids is not None else None
        status_set = set(statuses) if statuses is not None else None
        reservation_set = (set(reservation_fids)
                           if reservation_fids is not None else None)
        return [
            instance for instance in self._store.instances.values()
            if instance.project == project and
            (bid_set is None or instance.bid_fid in bid_set) and
            (status_set is None or instance.status in status_set) and
            (region is None or instance.region == region) and
            (instance_type is None or
             instance.instance_type.fid == instance_type) and
            (order_types is None or _order_type(instance) in order_types) and
            (reservation_set is None or
             instance.reservation_fid in reservation_set)
        ]

    # The life cycle.

    def create(self, bid: Bid, index: int) -> Instance:
        """The bid's instance number `index`, STATUS_NEW, no host yet."""
        instance = Instance(fid=self._state.new_fid('inst'),
                            name=f'{bid.name}-{index}',
                            project=bid.project,
                            created_at=self._state.now,
                            created_by=bid.created_by,
                            bid_fid=bid.fid,
                            instance_type=bid.instance_type,
                            region=bid.region,
                            order=self._state.next_order())
        bid.instances.append(instance)
        self._store.instances[instance.fid] = instance
        self._history.status_changed(instance)
        return instance

    def launch(self,
               order: Union[CpuVm, Reservation],
               name: str,
               price: Optional[Decimal],
               *,
               wait_s: float = 0.0) -> Instance:
        """An instance of a CPU VM or a reservation named `name`, charged
        `price` per hour from now, booting after `wait_s`."""
        instance = Instance(fid=self._state.new_fid('inst'),
                            name=name,
                            project=order.project,
                            created_at=self._state.now,
                            created_by=order.created_by,
                            bid_fid=None,
                            reservation_fid=order.fid,
                            instance_type=order.instance_type,
                            region=order.region,
                            order=self._state.next_order())
        order.instances.append(instance)
        self._store.instances[instance.fid] = instance
        self._set_price(instance, price)
        self._boot_step(instance, InstanceStatus.NEW, wait_s)
        return instance

    def _set_status(self, instance: Instance, status: InstanceStatus) -> None:
        instance.status = status
        self._history.status_changed(instance)

    def _set_price(self, instance: Instance, price: Optional[Decimal]) -> None:
        """What `instance` is charged per hour from now; None: nothing."""
        instance.price_paid = price
        self._history.price_changed(instance)

    def run_filler(self, instance: Instance, price: Decimal,
                   address: HostAddress) -> None:
        """A filler bid's instance: RUNNING at `address` from now, charged
        `price`, with no host behind it."""
        self._set_status(instance, InstanceStatus.RUNNING)
        self._set_price(instance, price)
        instance.address = address

    def allocate(self, bid: Bid, price: Decimal) -> None:
        """The bid won at `price`: its instances (made on the first win) boot."""
        bid.status = BidStatus.ALLOCATED
        bid.price_paid = price
        bid.auction.last_instance_price = price
        bid.record(self._state.now, BidEventType.ALLOCATED)
        if not bid.instances:
            for index in range(bid.instance_quantity):
                self.create(bid, index)
        for instance in bid.instances:
            if instance.status == InstanceStatus.STOPPING:
                self._finish_stopping(instance)
            instance.epoch += 1
            self._set_price(instance, price)
            instance.end_time = None
            self._boot_step(instance, InstanceStatus.NEW)

    def _boot_step(self,
                   instance: Instance,
                   status: InstanceStatus,
                   wait_s: float = 0.0) -> None:
        """Enters `status` of the boot; the next one follows after its
        duration plus `wait_s`."""
        self._set_status(instance, status)
        if status == InstanceStatus.STARTING and not self._bring_up_host(
                instance):
            return
        if status == InstanceStatus.RUNNING:
            return
        following = BOOT_SEQUENCE[BOOT_SEQUENCE.index(status) + 1]
        self._state.timer(instance, self.boot_durations_s[status] + wait_s,
                          lambda: self._boot_step(instance, following))

    def _bring_up_host(self, instance: Instance) -> bool:
        """Creates (first boot) or resumes the host with the order's volumes;
        a failing backend puts the instance in STATUS_ERROR."""
        order = self._order_of(instance)
        volumes = self._volumes.for_order(order)
        # Only when there are some, so backends that predate volumes still work.
        with_volumes: Dict[str, Any] = {'volumes': volumes} if volumes else {}
        hosts = self._state.hosts
        try:
            if instance.host == HostState.NONE:
                instance.address = hosts.create(instance.fid,
                                                self._ssh_keys.for_order(order),
                                                **with_volumes)
            else:
                instance.address = hosts.resume(instance.fid, **with_volumes)
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend failed to start %s', instance.fid)
            self._set_status(instance, InstanceStatus.ERROR)
            return False
        instance.host = HostState.UP
        return True

    def _call_host(self, instance: Instance, hook: Callable[..., Any],
                   **kwargs: Any) -> None:
        """Calls a host hook whose failure must not stop the market; logs it."""
        try:
            hook(instance.fid, **kwargs)
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend %s failed for %s', hook.__name__,
                             instance.fid)

    def start_notice(self, bid: Bid) -> None:
        """Preempting for `preemption_notice_s`, the hosts told when it ends;
        then the bid is Open again and its hosts are preempted."""
        end_time = self._state.now + datetime.timedelta(
            seconds=self.preemption_notice_s)
        bid.status = BidStatus.PREEMPTING
        bid.epoch += 1
        bid.preemption_end_time = end_time
        bid.record(self._state.now, BidEventType.PREEMPTED)
        for instance in bid.instances:
            instance.epoch += 1
            self._set_status(instance, InstanceStatus.PREEMPTING)
            instance.end_time = end_time
            if instance.host == HostState.UP:
                self._call_host(instance,
                                self._state.hosts.notify_preemption,
                                bid_status=BidStatus.PREEMPTING.value,
                                end_time=end_time)
        self._state.timer(bid, self.preemption_notice_s,
                          lambda: self._end_notice(bid))

    def _end_notice(self, bid: Bid) -> None:
        bid.status = BidStatus.OPEN
        bid.epoch += 1
        bid.price_paid = None
        bid.preemption_end_time = None
        for instance in bid.instances:
            instance.epoch += 1
            self._set_status(instance, InstanceStatus.PREEMPTED)
            self._set_price(instance, None)
            if instance.host == HostState.UP:
                self._call_host(instance, self._state.hosts.preempt)
                instance.host = HostState.DOWN

    def stop(self, bid: Bid) -> None:
        """Stops a paused bid's instances; `stop_duration_s` later they are
        paused and their hosts too."""
        for instance in bid.instances:
            self._set_price(instance, None)
            self._stop(instance)

    def replace(self, fid: str) -> Instance:
        """Replaces a running instance of an Allocated bid, as Mithril does
        a failed node: it becomes STATUS_REPLACED (its host destroyed, no
        longer charged), and a new instance takes its place in the bid's
        order, charged the bid's price, booting from STATUS_NEW on a host of
        its own (a new address). Returns the new instance."""
        old = self.get(fid)
        bid = (self._store.bids.get(old.bid_fid)
               if old.bid_fid is not None else None)
        if (bid is None or bid.status != BidStatus.ALLOCATED or
                old.status != InstanceStatus.RUNNING):
            raise InvalidState(
                f'Instance {fid} is {old.status.value}; only a running '
                'instance of an Allocated bid can be replaced.')
        old.epoch += 1
        self._set_status(old, InstanceStatus.REPLACED)
        self._set_price(old, None)
        if old.host != HostState.NONE:
            self._call_host(old, self._state.hosts.destroy)
            old.host = HostState.NONE
        index = bid.instances.index(old)
        new = self.create(bid, index)
        bid.instances.remove(new)
        bid.instances[index] = new
        self._set_price(new, bid.price_paid)
        self._boot_step(new, InstanceStatus.NEW)
        return new

    def _stop(self, instance: Instance) -> None:
        instance.epoch += 1
        self._set_status(instance, InstanceStatus.STOPPING)
        instance.end_time = None
        self._state.timer(instance, self.stop_duration_s,
                          functools.partial(self._finish_stopping, instance))

    def _finish_stopping(self, instance: Instance) -> None:
        instance.epoch += 1
        self._set_status(instance, InstanceStatus.PAUSED)
        if instance.host == HostState.UP:
            self._call_host(instance, self._state.hosts.pause)
            instance.host = HostState.DOWN

    def terminate(self, instances: Sequence[Instance]) -> None:
        """Terminates a cancelled bid's (or a CPU VM's) instances and destroys
        their hosts."""
        for instance in instances:
            instance.epoch += 1
            self._set_status(instance, InstanceStatus.TERMINATED)
            self._set_price(instance, None)
            instance.restarting = False
            if instance.host != HostState.NONE:
                self._call_host(instance, self._state.hosts.destroy)
                instance.host = HostState.NONE

    # Actions on single instances of a reservation (module docstring).

    def set_status(self, fids: Sequence[str],
                   status: InstanceStatus) -> Dict[str, InstanceStatus]:
        """Pauses (STATUS_PAUSED) or resumes (STATUS_RUNNING) the instances;
        each one's status afterwards, by fid."""
        if status not in (InstanceStatus.PAUSED, InstanceStatus.RUNNING):
            raise ValueError(f'cannot set an instance to {status.value}')
        for fid in fids:
            self.get(fid)
        instances = [self._reserved(fid) for fid in fids]
        pausing = status == InstanceStatus.PAUSED
        for instance in instances:
            if _not_ready(instance, pausing):
                raise InvalidState(
                    f'Instance {instance.fid} is {instance.status.value}'
                    f'{" and restarting" if instance.restarting else ""}; '
                    'it is not ready to be '
                    f'{"paused" if pausing else "resumed"}.')
        for instance in instances:
            if pausing and instance.status == InstanceStatus.RUNNING:
                self.pause(instance)
            elif not pausing and instance.status == InstanceStatus.PAUSED:
                self.resume(instance)
        return {instance.fid: instance.status for instance in instances}

    def pause(self, instance: Instance) -> None:
        """Stops an instance of a reservation, whatever it is doing (a
        reservation's hooks told first)."""
        if self.reservation_hooks is not None:
            self.reservation_hooks.pausing(instance)
        instance.restarting = False
        self._stop(instance)

    def resume(self, instance: Instance) -> None:
        """Boots a paused (or stopping) instance of a reservation again from
        STATUS_CONFIRMED, once the capacity its reservation takes back is
        free (the hooks say when)."""
        if instance.status == InstanceStatus.STOPPING:
            self._finish_stopping(instance)
        wait_s = (self.reservation_hooks.resuming(instance)
                  if self.reservation_hooks is not None else 0.0)
        instance.epoch += 1
        self._boot_step(instance, InstanceStatus.CONFIRMED, wait_s)

    def restart(self, fid: str) -> Instance:
        """Restarts a RUNNING instance's VM (the instance stays RUNNING)."""
        instance = self._reserved(fid)
        if instance.status != InstanceStatus.RUNNING or instance.restarting:
            raise InvalidState(
                f'Instance {fid} is {instance.status.value}'
                f'{" and restarting" if instance.restarting else ""}; only a '
                'fully running instance can be restarted.')
        instance.restarting = True
        self._call_host(instance, self._state.hosts.pause)
        instance.host = HostState.DOWN
        self._state.timer(instance, RESTART_DURATION_S,
                          functools.partial(self._finish_restart, instance))
        return instance

    def _finish_restart(self, instance: Instance) -> None:
        instance.restarting = False
        self._bring_up_host(instance)

    def refresh_boot_disk(self, fid: str,
                          image_version: Optional[str] = None) -> str:
        """Recreates a PAUSED instance's boot disk; returns the image version
        it will boot (the one its type boots)."""
        instance = self._reserved(fid)
        image = image_for(instance.instance_type)
        if instance.status == InstanceStatus.TERMINATED:
            raise InvalidState(f'Instance {fid} is terminated; it has no VM '
                               'to refresh.')
        if instance.status != InstanceStatus.PAUSED:
            raise Declined(
                'INSTANCE_RUNNING',
                f'Instance {fid} is {instance.status.value}; pause it first.')
        if image_version is not None and image_version != image:
            raise Declined(
                'INVALID_IMAGE_VERSION',
                f'Image version {image_version} is not available for '
                f'instance {fid} in region {instance.region}.')
        if instance.host != HostState.NONE:
            self._call_host(instance, self._state.hosts.destroy)
            instance.host = HostState.NONE
            instance.address = None
        return image

    def _reserved(self, fid: str) -> Instance:
        """Instance `fid` if it is a reservation's; NotSupported for a spot
        instance."""
        instance = self.get(fid)
        if instance.reservation_fid is None:
            raise NotSupported(
                f'Instance {fid} is a spot instance (bid '
                f'{instance.bid_fid}); this action is supported for reserved '
                'instances only. Spot bids are not yet supported.')
        return instance

    def _order_of(self, instance: Instance) -> Order:
        """The bid, CPU VM or reservation the instance boots from."""
        if instance.bid_fid is not None:
            return self._store.bids[instance.bid_fid]
        assert instance.reservation_fid is not None
        reservation = self._store.reservations.get(instance.reservation_fid)
        if reservation is not None:
            return reservation
        return self._store.cpu_vms[instance.reservation_fid]


# Statuses of an instance still on its way to STATUS_RUNNING.
_BOOTING = frozenset(BOOT_SEQUENCE[:-1])


def _not_ready(instance: Instance, pausing: bool) -> bool:
    """Whether the instance is between states for a pause (booting,
    restarting) or a resume (stopping)."""
    if pausing:
        return instance.status in _BOOTING or instance.restarting
    return instance.status == InstanceStatus.STOPPING


def _order_type(instance: Instance) -> str:
    """The instance's order type, one of `ORDER_TYPES`."""
    return 'Bid' if instance.bid_fid is not None else 'Reservation'
