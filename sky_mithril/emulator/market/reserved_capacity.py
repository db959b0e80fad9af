"""How much of an auction's capacity reservations take: over time, for
reserving, and now, for the spot market.

Over time (what availability, quotes, creation and extensions check): a live
reservation takes its `instance_quantity` of its auction's capacity over
[start_time, end_time). What is left is a step function of time that moves
only where a reservation starts or ends. Paused instances give nothing back
here (their capacity stays reserved), and spot bids do not count: a
reservation displaces them.

Now (what the spot auction sees): a reservation holds its capacity from one
preemption notice before its start (`Reservation.claimed`) until it ends,
less that of its paused instances (lent to spot). The sum is the auction's
`held_by_reservations`, which `Auctions.free_capacity` keeps from bids. When
it leaves spot bids holding more than the rest, the lowest-priority ones
(lowest limit, then latest placed) get a preemption notice, Preempting bids
first counting as gone; `hold` says when their capacity is free.
"""

import datetime
from typing import Iterable, List, Optional

from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.records import (CAPACITY_HOLDERS, Auction,
                                                 AvailabilitySlot, BidStatus,
                                                 Reservation)
from sky_mithril.emulator.market.state import MarketState


class ReservedCapacity:
    """Reserved capacity per auction, over time and now."""

    def __init__(self, state: MarketState, instances: Instances) -> None:
        self._state = state
        self._store = state.store
        self._instances = instances

    # Over time.

    def free(self,
             auction: Auction,
             start: datetime.datetime,
             end: datetime.datetime,
             ignoring: Optional[Reservation] = None) -> int:
        """The capacity no live reservation (but `ignoring`) takes at any
        moment of [start, end)."""
        moments = [start, *(t for t in self._changes(auction)
                            if start < t < end)]
        return min(self._free_at(auction, t, ignoring) for t in moments)

    def latest_end(self, auction: Auction, start: datetime.datetime,
                   quantity: int,
                   limit: datetime.datetime) -> datetime.datetime:
        """The latest end, at most `limit`, of a window from `start` with
        `quantity` free throughout; `start` itself if it is not free then."""
        if self._free_at(auction, start) < quantity:
            return start
        for moment in sorted(self._changes(auction)):
            if start < moment < limit and self._free_at(auction,
                                                        moment) < quantity:
                return moment
        return limit

    def slots(self, auction: Auction, start: datetime.datetime,
              end: datetime.datetime, quantity: int) -> List[AvailabilitySlot]:
        """The stretches of [start, end) with at least `quantity` (and at
        least one) free, each as long as what is free stays the same."""
        moments = sorted({start, *(t for t in self._changes(auction)
                                   if start < t < end)}) + [end]
        slots: List[AvailabilitySlot] = []
        for since, until in zip(moments, moments[1:]):
            free = self._free_at(auction, since)
            if slots and slots[-1].end == since and slots[-1].quantity == free:
                slots[-1] = AvailabilitySlot(slots[-1].start, until, free)
            elif free >= max(quantity, 1):
                slots.append(AvailabilitySlot(since, until, free))
        return slots

    def _reservations(self, auction: Auction) -> Iterable[Reservation]:
        return (r for r in self._store.reservations.values()
                if r.auction is auction and r.live)

    def _changes(self, auction: Auction) -> List[datetime.datetime]:
        """Where what reservations take of `auction` may change."""
        return [t for r in self._reservations(auction)
                for t in (r.start_time, r.end_time)]

    def _free_at(self,
                 auction: Auction,
                 moment: datetime.datetime,
                 ignoring: Optional[Reservation] = None) -> int:
        taken = sum(r.instance_quantity
                    for r in self._reservations(auction)
                    if r is not ignoring and
                    r.start_time <= moment < r.end_time)
        return max(0, auction.capacity - taken)

    # Now.

    def hold(self, auction: Auction) -> datetime.datetime:
        """Sets what reservations hold of `auction` now, gives notice to the
        spot bids that no longer fit, and returns when the capacity those
        hold is free (now if none has to go)."""
        auction.held_by_reservations = sum(
            r.held for r in self._store.reservations.values()
            if r.auction is auction)
        holders = [b for b in auction.live_bids if b.status in CAPACITY_HOLDERS]
        excess = (auction.held_by_reservations +
                  sum(b.instance_quantity for b in holders) - auction.capacity)
        free_at = self._state.now
        leaving = sorted((b for b in holders
                          if b.status == BidStatus.PREEMPTING),
                         key=lambda b: b.preemption_end_time or free_at)
        displaced = sorted((b for b in holders
                            if b.status == BidStatus.ALLOCATED),
                           key=lambda b: (b.limit_price, -b.order))
        for bid in leaving + displaced:
            if excess <= 0:
                break
            if bid.status == BidStatus.ALLOCATED:
                self._instances.start_notice(bid)
            assert bid.preemption_end_time is not None
            free_at = max(free_at, bid.preemption_end_time)
            excess -= bid.instance_quantity
        return free_at
