"""Instances' history, as Mithril's history endpoints report it: the statuses
each instance went through, and what it was charged, when.

The life cycle (`instances`) tells this backend of every change as it makes
it: an instance entering a status (`status_changed`), and its price per hour
being set or cleared (`price_changed`). An instance is charged from its bid's
allocation until the notice ends, the bid is paused or it is cancelled, at the
price the allocation cleared at (the clearing's second price, fixed for that
allocation: rule 4 of `auctions`); so each allocation is one charge, and a
re-allocation after a preemption or a resume starts the next at its own price.

What a query answers (`statuses`, `charges`): a project's instances, or one
instance's (`instance_fid`), or a bid's (`bid_fid`), or a reservation's
(`reservation_fid`; none for an unknown one, or a CPU VM's hidden one), in
creation order; of
each, the status changes whose time is in [start, end], or the charges that
overlap [start, end], each as recorded (not cut to the window); an instance
with none of them is left out.
"""

import datetime
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.errors import NotFound
from sky_mithril.emulator.market.records import (Charge, Instance,
                                                 StatusChange)
from sky_mithril.emulator.market.state import MarketState

_Event = TypeVar('_Event')


class History:
    """Records instances' status changes and charges, and answers for them."""

    def __init__(self, state: MarketState, accounts: Accounts) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts

    # What the life cycle tells.

    def status_changed(self, instance: Instance) -> None:
        """`instance` is in its status as of now (recorded once per change)."""
        changes = instance.status_changes
        if not changes or changes[-1].status != instance.status:
            changes.append(StatusChange(self._state.now, instance.status))

    def price_changed(self, instance: Instance) -> None:
        """`instance` is charged its `price_paid` from now (nothing when None)."""
        charges = instance.charges
        current = charges[-1] if charges and charges[-1].end is None else None
        if current is not None and current.price == instance.price_paid:
            return
        if current is not None:
            current.end = self._state.now
        if instance.price_paid is not None:
            charges.append(Charge(instance.price_paid, self._state.now))

    # The queries.

    def statuses(
        self,
        project: str,
        *,
        instance_fid: Optional[str] = None,
        bid_fid: Optional[str] = None,
        reservation_fid: Optional[str] = None,
        start: Optional[datetime.datetime] = None,
        end: Optional[datetime.datetime] = None,
    ) -> List[Tuple[Instance, List[StatusChange]]]:
        """Each instance's status changes in [start, end]; raises NotFound
        for an unknown project, instance or bid."""

        def within(change: StatusChange) -> bool:
            return ((start is None or change.timestamp >= start) and
                    (end is None or change.timestamp <= end))

        return self._each(project, instance_fid, bid_fid, reservation_fid,
                          lambda i: [c for c in i.status_changes if within(c)])

    def charges(
        self,
        project: str,
        *,
        instance_fid: Optional[str] = None,
        bid_fid: Optional[str] = None,
        reservation_fid: Optional[str] = None,
        start: Optional[datetime.datetime] = None,
        end: Optional[datetime.datetime] = None,
    ) -> List[Tuple[Instance, List[Charge]]]:
        """Each instance's charges that overlap [start, end]; raises NotFound
        for an unknown project, instance or bid."""

        def overlaps(charge: Charge) -> bool:
            return ((end is None or charge.start <= end) and
                    (start is None or charge.end is None or
                     charge.end >= start))

        return self._each(project, instance_fid, bid_fid, reservation_fid,
                          lambda i: [c for c in i.charges if overlaps(c)])

    def _each(self, project: str, instance_fid: Optional[str],
              bid_fid: Optional[str], reservation_fid: Optional[str],
              events: Callable[[Instance], Sequence[_Event]]
              ) -> List[Tuple[Instance, List[_Event]]]:
        """The chosen instances of `project` that have `events`, with them."""
        self._accounts.require_project(project)
        if instance_fid is not None and (
                self._store.instances.get(instance_fid) is None or
                self._store.instances[instance_fid].project != project):
            raise NotFound('Instance', instance_fid)
        if bid_fid is not None and (self._store.bids.get(bid_fid) is None or
                                    self._store.bids[bid_fid].project !=
                                    project):
            raise NotFound('Bid', bid_fid)
        if (reservation_fid is not None and
                reservation_fid not in self._store.reservations):
            return []  # Unknown, or a CPU VM's hidden reservation.
        chosen = []
        for instance in self._store.instances.values():
            if (instance.project != project or
                    instance_fid not in (None, instance.fid) or
                    bid_fid not in (None, instance.bid_fid) or
                    reservation_fid not in (None, instance.reservation_fid)):
                continue
            found = list(events(instance))
            if found:
                chosen.append((instance, found))
        return chosen

