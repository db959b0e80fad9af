"""What the project was actually charged: per bid, its instance-hours and the
prices its instances were billed at, from Mithril's pricing history
(`GET /v2/instances/pricing/history`), within a window of time.

A charge is a period an instance was billed at one price per hour (the
clearing price, never above the bid's limit); one still running bills until
the window's end (now, for a window without one). What a charge billed in the window is its price × the hours
of it inside the window; money is rounded to cents only when shown.
"""

import dataclasses
import datetime
from decimal import Decimal
from typing import Dict, List, Optional

from sky_mithril import money
from sky_mithril.account import connection
from sky_mithril.api import models

SECONDS_PER_HOUR = Decimal(3600)


@dataclasses.dataclass(frozen=True)
class Charge:
    """One instance billed `price` per hour from `start` until `end` (None:
    still billing), and its `hours` inside the window."""

    instance_fid: str
    price: Decimal
    start: datetime.datetime
    end: Optional[datetime.datetime]
    hours: Decimal

    @property
    def cost(self) -> Decimal:
        return self.price * self.hours


@dataclasses.dataclass(frozen=True)
class BidSpend:
    """A bid and what its instances were charged in the window."""

    bid: models.Bid
    charges: List[Charge]

    @property
    def instance_hours(self) -> Decimal:
        return sum((c.hours for c in self.charges), Decimal(0))

    @property
    def cost(self) -> Decimal:
        return sum((c.cost for c in self.charges), Decimal(0))

    def hours_by_price(self) -> Dict[Decimal, Decimal]:
        """Instance-hours at each price charged, cheapest first."""
        hours: Dict[Decimal, Decimal] = {}
        for charge in sorted(self.charges, key=lambda c: c.price):
            hours[charge.price] = hours.get(charge.price,
                                            Decimal(0)) + charge.hours
        return hours


def _hours_within(charge: models.InstanceCharge,
                  since: Optional[datetime.datetime],
                  until: Optional[datetime.datetime]) -> Decimal:
    begin = charge.start_time if since is None else max(charge.start_time,
                                                       since)
    finish = charge.end_time or until or datetime.datetime.now(
        datetime.timezone.utc)
    if until is not None:
        finish = min(finish, until)
    seconds = Decimal(repr(max((finish - begin).total_seconds(), 0.0)))
    return seconds / SECONDS_PER_HOUR


def bid_spend(conn: connection.Connection, bid: models.Bid,
              since: Optional[datetime.datetime],
              until: Optional[datetime.datetime]) -> BidSpend:
    """What `bid`'s instances were charged in [since, until]; None leaves
    that end open (both None: over the bid's life, a charge still running
    billing until now). A bid never allocated has no instances: no
    request."""
    if not bid.instances:
        return BidSpend(bid, [])
    histories = conn.client.get_instance_pricing_history(
        conn.project_id, bid_fid=bid.fid, start_time=since, end_time=until)
    return BidSpend(bid, [
        Charge(history.instance_fid, money.cents_to_dollars(charge.price_cents),
               charge.start_time, charge.end_time,
               _hours_within(charge, since, until))
        for history in histories for charge in history.events
    ])


def project_spend(conn: connection.Connection, since: datetime.datetime,
                  until: datetime.datetime) -> List[BidSpend]:
    """Every bid of the project that lived in [since, until], oldest first,
    with what it was charged in that window."""
    bids = [b for b in conn.client.list_bids(conn.project_id)
            if b.created_at <= until and
            (b.deactivated_at is None or b.deactivated_at >= since)]
    return [bid_spend(conn, b, since, until)
            for b in sorted(bids, key=lambda b: (b.created_at, b.fid))]
