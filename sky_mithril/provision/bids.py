"""One bid per cluster: finding it, placing it exactly once, waiting for the
auction, and cancelling it for certain.

A cluster's bid is named exactly `cluster_name_on_cloud`. The live bid is
found by that exact name (server-side filter, newest first), so the lookup
costs one request however many instances the project has, and old Terminated
bids of the same name are ignored. Everything after that goes by bid fid.
"""

import dataclasses
import time
from decimal import Decimal
from typing import Callable, List, Optional

from sky import sky_logging

from sky_mithril import money
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.connection import Connection

logger = sky_logging.init_logger('sky.sky_mithril.provision')


# The live bid of a cluster is always its newest bid of that name.
_NEWEST_BIDS_TO_SCAN = 10
CANCEL_CONFIRM_SECONDS = 30.0
# The first "why is it waiting" report comes once the bid has sat through a
# few polls, so a bid that wins right away costs no pricing request.
FIRST_STATUS_AFTER_SECONDS = 5.0
STATUS_INTERVAL_SECONDS = 30.0


class AllocationTimeoutError(RuntimeError):
    """The bid was not allocated in time; it has been cancelled. SkyPilot
    fails over to the next region or cloud on this error."""


def live_bids(conn: Connection, name: str) -> List[models.Bid]:
    """Non-terminated bids named exactly `name`, newest first."""
    bids = conn.client.list_bids(conn.project_id,
                                 name=name,
                                 sort_by='created_at',
                                 sort_dir='desc',
                                 max_items=_NEWEST_BIDS_TO_SCAN)
    return [b for b in bids
            if b.name == name and b.status != models.BidState.TERMINATED]


def live_bid(conn: Connection, name: str) -> Optional[models.Bid]:
    """The cluster's bid, or None once it is gone."""
    bids = live_bids(conn, name)
    if len(bids) > 1:
        fids = ', '.join(b.fid for b in bids)
        raise RuntimeError(
            f'Mithril has {len(bids)} live bids named {name!r} ({fids}); '
            'sky-mithril expects one per cluster. Cancel the extra ones '
            '(`sky down` cancels all of them).')
    return bids[0] if bids else None


def instance_type_fid(conn: Connection, instance_type: str, region: str) -> str:
    """The fid of `instance_type` that is auctioned in `region` (a name may
    appear under several fids)."""
    fids = {t.fid for t in conn.client.list_instance_types()
            if t.name == instance_type}
    for auction in conn.client.list_spot_availability():
        if auction.instance_type in fids and auction.region == region:
            return auction.instance_type
    raise RuntimeError(f'Mithril has no auction for {instance_type} in '
                       f'{region} right now; try another region.')


def bid_for_cluster(conn: Connection, request: models.CreateBidRequest,
                    attempts: int = 3) -> models.Bid:
    """Places the cluster's bid exactly once.

    A POST whose response was lost may or may not have created the bid, so
    before every retry the bid is looked up by its name; the client never
    retries a POST on its own once it may have reached the server.
    """
    for attempt in range(1, attempts + 1):
        try:
            return conn.client.create_bid(request)
        except errors.AmbiguousResponseError as e:
            found = live_bid(conn, request.name)
            if found is not None:
                logger.info(f'Bid {found.fid} was placed although the '
                            'response was lost; using it.')
                return found
            if attempt == attempts:
                raise
            logger.info(f'Placing the bid failed ({e}); it was not created, '
                        'retrying.')
    raise AssertionError('unreachable')


def cancel_and_confirm(conn: Connection, bid_fid: str,
                       sleep: Callable[[float], None] = time.sleep) -> None:
    """Cancels the bid and waits until Mithril reports it Terminated.

    404 means it is already gone. Raises RuntimeError if it cannot be confirmed.
    """
    try:
        conn.client.cancel_bid(bid_fid)
    except errors.NotFoundError:
        return
    deadline = time.monotonic() + CANCEL_CONFIRM_SECONDS
    while True:
        try:
            status = conn.client.get_bid_status(bid_fid).status
        except errors.NotFoundError:
            return
        if status == models.BidState.TERMINATED:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f'Bid {bid_fid} is still {status} after '
                               f'cancelling it for {CANCEL_CONFIRM_SECONDS:.0f}s.')
        sleep(1.0)


@dataclasses.dataclass(frozen=True)
class MarketView:
    """What the market looks like to a waiting bid."""

    spot_price: Optional[Decimal]
    available: Optional[int]

    def reason(self, limit: Decimal, quantity: int) -> str:
        """Why a bid at `limit` for `quantity` instances waits."""
        if self.spot_price is not None and self.spot_price > limit:
            return (f'the spot price {money.format_dollars(self.spot_price)}/h '
                    f'is above your limit {money.format_dollars(limit)}/h')
        if self.available is not None and self.available < quantity:
            return (f'no capacity: {self.available} instance(s) free, '
                    f'{quantity} needed')
        return 'waiting for the next auction round'


def market_view(conn: Connection, bid: models.Bid) -> MarketView:
    """The current spot price and free capacity for the bid's auction."""
    price = conn.client.get_current_price(bid.instance_type,
                                          region=bid.region,
                                          instance_quantity=bid.instance_quantity)
    return MarketView(price.spot_price, price.available_capacity)


def _limit_hint(limit_key_hint: str, timeout: Optional[float]) -> str:
    waits = ('waits without a deadline' if timeout is None else
             f'is cancelled after {timeout:.0f}s')
    return f'The bid {waits}; {limit_key_hint}'


def wait_for_allocation(conn: Connection,
                        bid: models.Bid,
                        timeout: Optional[float],
                        limit_key_hint: str,
                        sleep: Callable[[float], None] = time.sleep
                        ) -> models.Bid:
    """Polls the bid (one request per poll, every ≤3 s) until Allocated.

    While it waits the user sees why (spot price vs limit, capacity) and for
    how long. On timeout raises AllocationTimeoutError; the caller cancels.
    """
    start = time.monotonic()
    interval = 0.5
    next_report = start + FIRST_STATUS_AFTER_SECONDS
    while True:
        if bid.status in (models.BidState.ALLOCATED,
                          models.BidState.PREEMPTING):
            return bid
        if bid.status == models.BidState.TERMINATED:
            raise RuntimeError(f'Bid {bid.fid} was terminated on Mithril '
                               'before it was allocated.')
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            view = market_view(conn, bid)
            raise AllocationTimeoutError(
                f'Mithril bid {bid.fid} in {bid.region} was not allocated '
                f'within {timeout:.0f}s: '
                f'{view.reason(bid.limit_price, bid.instance_quantity)}. '
                f'It was cancelled. {limit_key_hint}')
        if now >= next_report:
            view = market_view(conn, bid)
            logger.info(
                f'Bid {bid.fid} is {bid.status} in {bid.region} '
                f'({now - start:.0f}s): '
                f'{view.reason(bid.limit_price, bid.instance_quantity)}. '
                f'{_limit_hint(limit_key_hint, timeout)}')
            next_report = now + STATUS_INTERVAL_SECONDS
        sleep(interval)
        interval = min(interval * 2, 3.0)
        bid = conn.client.get_bid(bid.fid)
