"""Instances' life cycle: what happens to a bid and its instances once the
clearing allocates it, when a notice preempts it, when it is paused and when
it is terminated, and which host backend hook each step calls.

After allocation: STATUS_NEW -> STATUS_CONFIRMED -> STATUS_SCHEDULED ->
STATUS_INITIALIZING -> STATUS_STARTING (host created or resumed here, with the
bid's SSH keys and volumes; the address becomes visible) -> STATUS_RUNNING; a
host backend that fails puts the instance in STATUS_ERROR. A preemption notice
(`Preempting` for `preemption_notice_s`) goes STATUS_PREEMPTING ->
STATUS_PREEMPTED and always runs to its end, then the bid is Open again;
stopping a paused bid's instances goes STATUS_STOPPING -> STATUS_PAUSED. A
re-allocated bid (after preemption or unpause) boots the same instances again
from STATUS_NEW, resuming their hosts (same disks). Instances are named
`<bid name>-<index>`, index from 0. Each status an instance enters, and each
change of what it is charged, is told to `history`.
"""

import datetime
import functools
import logging
from decimal import Decimal
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.errors import NotFound
from sky_mithril.emulator.market.history import History
from sky_mithril.emulator.market.records import (Bid, BidEventType, BidStatus,
                                                 HostState, Instance,
                                                 InstanceStatus)
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState
from sky_mithril.emulator.market.storage import Storage

logger = logging.getLogger('sky.sky_mithril.emulator')

BOOT_SEQUENCE = (InstanceStatus.NEW, InstanceStatus.CONFIRMED,
                 InstanceStatus.SCHEDULED, InstanceStatus.INITIALIZING,
                 InstanceStatus.STARTING, InstanceStatus.RUNNING)
# Emulated seconds spent in each boot status before the next (60 s in all).
DEFAULT_BOOT_DURATIONS_S: Mapping[InstanceStatus, float] = {
    InstanceStatus.NEW: 5.0,
    InstanceStatus.CONFIRMED: 10.0,
    InstanceStatus.SCHEDULED: 10.0,
    InstanceStatus.INITIALIZING: 25.0,
    InstanceStatus.STARTING: 10.0,
}


class Instances:
    """Moves bids and their instances through allocation, boot, notice,
    stop and termination, calling the host backend as they go."""

    def __init__(self,
                 state: MarketState,
                 accounts: Accounts,
                 ssh_keys: SshKeys,
                 storage: Storage,
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
        self._storage = storage
        self._history = history
        self.preemption_notice_s = preemption_notice_s
        self.boot_durations_s = {
            **DEFAULT_BOOT_DURATIONS_S,
            **(boot_durations_s or {})
        }
        self.stop_duration_s = stop_duration_s

    # Lookups.

    def get(self, fid: str) -> Instance:
        instance = self._store.instances.get(fid)
        if instance is None:
            raise NotFound('Instance', fid)
        return instance

    def in_project(self,
                   project: str,
                   *,
                   bid_fids: Optional[Sequence[str]] = None,
                   statuses: Optional[Sequence[InstanceStatus]] = None,
                   region: Optional[str] = None,
                   instance_type: Optional[str] = None) -> List[Instance]:
        """A project's instances matching every given filter, in creation order."""
        self._accounts.require_project(project)
        bid_set = set(bid_fids) if bid_fids is not None else None
        status_set = set(statuses) if statuses is not None else None
        return [
            instance for instance in self._store.instances.values()
            if instance.project == project and
            (bid_set is None or instance.bid_fid in bid_set) and
            (status_set is None or instance.status in status_set) and
            (region is None or instance.region == region) and
            (instance_type is None or
             instance.instance_type.fid == instance_type)
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

    def _boot_step(self, instance: Instance, status: InstanceStatus) -> None:
        self._set_status(instance, status)
        if status == InstanceStatus.STARTING and not self._bring_up_host(
                instance):
            return
        if status == InstanceStatus.RUNNING:
            return
        following = BOOT_SEQUENCE[BOOT_SEQUENCE.index(status) + 1]
        self._state.timer(instance, self.boot_durations_s[status],
                          lambda: self._boot_step(instance, following))

    def _bring_up_host(self, instance: Instance) -> bool:
        """Creates (first boot) or resumes the host with the bid's volumes; a
        failing backend puts the instance in STATUS_ERROR."""
        bid = self._store.bids[instance.bid_fid]
        volumes = self._storage.for_bid(bid)
        # Only when there are some, so backends that predate volumes still work.
        with_volumes: Dict[str, Any] = {'volumes': volumes} if volumes else {}
        hosts = self._state.hosts
        try:
            if instance.host == HostState.NONE:
                instance.address = hosts.create(instance.fid,
                                                self._ssh_keys.for_bid(bid),
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
            instance.epoch += 1
            self._set_status(instance, InstanceStatus.STOPPING)
            self._set_price(instance, None)
            instance.end_time = None
            self._state.timer(instance, self.stop_duration_s,
                              functools.partial(self._finish_stopping, instance))

    def _finish_stopping(self, instance: Instance) -> None:
        instance.epoch += 1
        self._set_status(instance, InstanceStatus.PAUSED)
        if instance.host == HostState.UP:
            self._call_host(instance, self._state.hosts.pause)
            instance.host = HostState.DOWN

    def terminate(self, bid: Bid) -> None:
        """Terminates a cancelled bid's instances and destroys their hosts."""
        for instance in bid.instances:
            instance.epoch += 1
            self._set_status(instance, InstanceStatus.TERMINATED)
            self._set_price(instance, None)
            if instance.host != HostState.NONE:
                self._call_host(instance, self._state.hosts.destroy)
                instance.host = HostState.NONE
