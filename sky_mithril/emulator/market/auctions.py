"""Auctions and their clearing: one auction per (instance type, region) from
the catalog, its spot price (fixed, scripted or a seeded random walk) and
price history, and the clearing every `clearing_interval_s` that decides which
bids win.

Rules of a clearing, per auction:
  1. The spot price is updated: a scripted price whose time has come, or a
     random-walk step, or else it stays as `set_price` left it. The new price
     is recorded in the auction's price history.
  2. Allocated bids whose limit price is now below the spot price get a
     preemption notice (recorded as the "Preempted" event). Allocated bids are
     never displaced by new, higher bids; only the price preempts.
  3. Open bids whose limit >= spot price are served by priority: higher limit
     first, equal limits in submission order. A bid gets all of its
     `instance_quantity` instances or none (all-or-nothing); a bid that does
     not fit the remaining capacity "loses for lack of capacity" and a smaller,
     lower-priority bid may still fit after it.
  4. Second price: the clearing price is max(spot price, highest limit among
     the bids that lost for lack of capacity). Each winner pays the clearing
     price, capped at its own limit (the cap binds only when a bigger bid with a
     higher limit did not fit). The price paid is recorded on the bid and its
     instances (`price_paid`) and stays fixed for that allocation.
A bid placed between clearings waits for the next one; nothing is allocated
out of turn. Capacity is held by `Allocated` and `Preempting` bids and by
reservations (`held_by_reservations`, kept by `reservations`);
`free_capacity` is capacity minus those, never below zero.
"""

import ast
import bisect
import datetime
import math
import random
from decimal import Decimal
from typing import (Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

from sky_mithril import money
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                NotFound)
from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.records import (CAPACITY_HOLDERS, Auction,
                                                 Bid, BidStatus, InstanceType,
                                                 PricePoint, PriceQuote)
from sky_mithril.emulator.market.state import MarketState, stable_fid

DEFAULT_CAPACITY = 8
PRICE_HISTORY_LIMIT = 50_000


class Auctions:
    """The catalog's auctions: lookups, prices, capacity, and the clearing."""

    def __init__(self, state: MarketState, instances: Instances,
                 catalog: Iterable[Mapping[str, str]], *, capacity: int,
                 clearing_interval_s: float, seed: int) -> None:
        self._state = state
        self._store = state.store
        self._instances = instances
        self.clearing_interval_s = clearing_interval_s
        self._price_rng = random.Random(f'{seed}:prices')
        for row in catalog:
            self._add_auction(row, capacity)
        if not self._store.auctions:
            raise ValueError('the catalog has no rows')

    def start_clearings(self) -> None:
        """Schedules the first clearing, `clearing_interval_s` from now."""
        self._state.after(self.clearing_interval_s, self._clearing)

    def _add_auction(self, row: Mapping[str, str], capacity: int) -> None:
        instance_type = _instance_type_from_row(row)
        instance_type = self._store.instance_types.setdefault(
            instance_type.fid, instance_type)
        region = row['Region']
        key = (instance_type.fid, region)
        if key in self._store.auctions:
            return
        spot_price = money.parse_dollars(row['SpotPrice']).quantize(money.CENT)
        self._store.auctions[key] = Auction(
            fid=stable_fid('auc', f'{instance_type.name}@{region}'),
            instance_type=instance_type,
            region=region,
            capacity=capacity,
            spot_price=spot_price,
            minimum_price=money.parse_dollars(row['Price']).quantize(
                money.CENT))

    # Lookups.

    def instance_types(self) -> List[InstanceType]:
        return list(self._store.instance_types.values())

    def list(self) -> List[Auction]:
        """Every auction, in catalog order."""
        return list(self._store.auctions.values())

    def regions(self) -> List[str]:
        """Every region with an auction, in catalog order."""
        return self._store.regions()

    def instance_type(self, name_or_fid: str) -> InstanceType:
        if name_or_fid in self._store.instance_types:
            return self._store.instance_types[name_or_fid]
        for instance_type in self._store.instance_types.values():
            if instance_type.name == name_or_fid:
                return instance_type
        raise NotFound('Instance type', name_or_fid)

    def get(self, instance_type: str, region: str) -> Auction:
        """The auction for an instance type (name or fid) in `region`."""
        auction = self._store.auctions.get(
            (self.instance_type(instance_type).fid, region))
        if auction is None:
            raise NotFound('Auction', f'{instance_type}@{region}')
        return auction

    # Prices and capacity.

    def lowest_floors(self) -> Dict[str, Decimal]:
        """Each auctioned type's lowest floor (minimum price) among its
        auctions, by its fid."""
        floors: Dict[str, Decimal] = {}
        for auction in self._store.auctions.values():
            fid = auction.instance_type.fid
            floors[fid] = min(floors.get(fid, auction.minimum_price),
                              auction.minimum_price)
        return floors

    def free_capacity(self, auction: Auction) -> int:
        """Capacity not held by reservations nor by Allocated or Preempting
        bids (never negative)."""
        held = sum(bid.instance_quantity
                   for bid in auction.live_bids
                   if bid.status in CAPACITY_HOLDERS)
        return max(0, auction.capacity - auction.held_by_reservations - held)

    def current_prices(self,
                       instance_type: str,
                       region: Optional[str] = None,
                       instance_quantity: int = 1) -> PriceQuote:
        """Prices of one auction; without a region, of the type's cheapest region."""
        if region is not None:
            auction = self.get(instance_type, region)
        else:
            fid = self.instance_type(instance_type).fid
            auction = min(
                (a for a in self._store.auctions.values()
                 if a.instance_type.fid == fid),
                key=lambda a: (a.spot_price, a.region))
        limits = [
            bid.limit_price
            for bid in auction.live_bids
            if bid.status in CAPACITY_HOLDERS
        ]
        return PriceQuote(spot_price=auction.spot_price,
                          minimum_price=auction.minimum_price,
                          lowest_allocated_limit=min(limits, default=None),
                          win_price=self._win_price(auction,
                                                    instance_quantity),
                          free_capacity=self.free_capacity(auction),
                          capacity=auction.capacity)

    def _win_price(self, auction: Auction, quantity: int) -> Optional[Decimal]:
        """The lowest limit a new bid for `quantity` would win with at the next
        clearing at today's spot price; None if it cannot win at any price."""
        spot = auction.spot_price
        rivals = _open_bids_by_priority(auction)
        candidates = sorted({spot} | {
            bid.limit_price + money.CENT
            for bid in rivals
            if bid.limit_price >= spot
        })
        for limit in candidates:
            free = self.free_capacity(auction)
            for rival in rivals:
                if rival.limit_price >= limit and rival.instance_quantity <= free:
                    free -= rival.instance_quantity
            if quantity <= free:
                return limit
        return None

    def price_history(
        self,
        instance_types: Optional[Sequence[str]] = None,
        region: Optional[str] = None,
        *,
        start: Optional[datetime.datetime] = None,
        end: Optional[datetime.datetime] = None,
        num_samples: Optional[int] = 100,
    ) -> List[Tuple[Auction, List[PricePoint]]]:
        """Spot-price samples per auction in [start, end], at most
        `num_samples` each (None: every one, the complete history), of the
        `instance_types` named (names or fids; all without). A type the
        market does not know has no series, as Mithril answers its own SDK,
        which asks for every type it has a fid for."""
        wanted = set(instance_types) if instance_types else None
        series = []
        for auction in self._store.auctions.values():
            if wanted is not None and not wanted & {
                    auction.instance_type.fid, auction.instance_type.name}:
                continue
            if region is not None and auction.region != region:
                continue
            points = [(t, price)
                      for t, price in auction.price_history
                      if (start is None or t >= start) and
                      (end is None or t <= end)]
            series.append((auction, points if num_samples is None else
                           _downsample(points, num_samples)))
        return series

    def set_price(self, instance_type: str, region: str,
                  price: money.MoneyInput) -> Auction:
        """Fixes the spot price now (dropping any script or random walk); bids
        react at the next clearing."""
        auction = self.get(instance_type, region)
        auction.spot_price = money.parse_dollars(price).quantize(money.CENT)
        auction.price_script = []
        auction.walk_volatility = None
        return auction

    def script_prices(self, instance_type: str, region: str,
                      points: Sequence[Tuple[datetime.datetime,
                                             money.MoneyInput]]) -> Auction:
        """Future spot prices: each takes effect at the first clearing at or after its time."""
        auction = self.get(instance_type, region)
        auction.price_script = sorted(
            (t, money.parse_dollars(p).quantize(money.CENT)) for t, p in points)
        auction.walk_volatility = None
        return auction

    def start_random_walk(self,
                          instance_type: str,
                          region: str,
                          volatility: float = 0.1) -> Auction:
        """At each clearing the spot price is multiplied by exp(N(0, volatility)),
        floored at the auction's minimum price (seeded, so reproducible)."""
        auction = self.get(instance_type, region)
        auction.walk_volatility = volatility
        auction.price_script = []
        return auction

    def script_history(self, instance_type: str, region: str,
                       points: Sequence[Tuple[datetime.datetime,
                                              money.MoneyInput]]) -> Auction:
        """Adds past spot-price samples to the auction's history (for pricing tests)."""
        auction = self.get(instance_type, region)
        for t, price in points:
            bisect.insort(auction.price_history,
                          (t, money.parse_dollars(price).quantize(money.CENT)))
        del auction.price_history[:-PRICE_HISTORY_LIMIT]
        return auction

    def set_capacity(self, instance_type: str, region: str,
                     capacity: int) -> Auction:
        """Sets an auction's capacity; allocated bids keep theirs if it shrinks."""
        if capacity < 0:
            raise InvalidRequest([
                FieldError('capacity', 'capacity must be >= 0',
                           'greater_than_equal')
            ])
        auction = self.get(instance_type, region)
        auction.capacity = capacity
        return auction

    # The clearing.

    def _clearing(self) -> None:
        for auction in self._store.auctions.values():
            self._clear(auction)
        self._state.after(self.clearing_interval_s, self._clearing)

    def _clear(self, auction: Auction) -> None:
        auction.spot_price = self._next_spot_price(auction)
        auction.price_history.append((self._state.now, auction.spot_price))
        del auction.price_history[:-PRICE_HISTORY_LIMIT]
        for bid in list(auction.live_bids):
            if (bid.status == BidStatus.ALLOCATED and
                    bid.limit_price < auction.spot_price):
                self._instances.start_notice(bid)
        free = self.free_capacity(auction)
        winners: List[Bid] = []
        lost_limits: List[Decimal] = []
        for bid in _open_bids_by_priority(auction):
            if bid.limit_price < auction.spot_price:
                break
            if bid.instance_quantity <= free:
                winners.append(bid)
                free -= bid.instance_quantity
            else:
                lost_limits.append(bid.limit_price)
        clearing_price = max([auction.spot_price, *lost_limits])
        for bid in winners:
            self._instances.allocate(bid, min(clearing_price, bid.limit_price))

    def _next_spot_price(self, auction: Auction) -> Decimal:
        if auction.price_script:
            price = auction.spot_price
            while (auction.price_script and
                   auction.price_script[0][0] <= self._state.now):
                price = auction.price_script.pop(0)[1]
            return price
        if auction.walk_volatility:
            factor = Decimal(
                repr(math.exp(self._price_rng.gauss(0.0,
                                                    auction.walk_volatility))))
            return max(auction.minimum_price,
                       (auction.spot_price * factor).quantize(money.CENT))
        return auction.spot_price


def _open_bids_by_priority(auction: Auction) -> List[Bid]:
    return sorted((b for b in auction.live_bids if b.status == BidStatus.OPEN),
                  key=lambda b: (-b.limit_price, b.order))


def _instance_type_from_row(row: Mapping[str, str]) -> InstanceType:
    """Specs from a catalog row; fields the catalog lacks get plausible placeholders."""
    name = row['InstanceType']
    num_gpus = int(float(row['AcceleratorCount']))
    gpu_info = ast.literal_eval(row['GpuInfo']) if row.get('GpuInfo') else {}
    gpus = gpu_info.get('Gpus') or [{}]
    gpu_memory_mib = gpus[0].get('MemoryInfo', {}).get('SizeInMiB', 0)
    ib_count = num_gpus if num_gpus >= 8 else 0
    return InstanceType(fid=stable_fid('it', name),
                        name=name,
                        num_cpus=int(float(row['vCPUs'])),
                        cpu_type='Emulated Xeon',
                        ram_gb=int(float(row['MemoryGiB'])),
                        num_gpus=num_gpus,
                        gpu_type=row['AcceleratorName'],
                        gpu_memory_gb=int(gpu_memory_mib) // 1024,
                        gpu_socket='SXM' if '.sxm' in name else 'PCIe',
                        local_storage_gb=1000 * num_gpus,
                        ib_count=ib_count,
                        bridge_count=0,
                        network_type='InfiniBand' if ib_count else 'Ethernet')


def _downsample(points: Sequence[PricePoint], count: int) -> List[PricePoint]:
    """At most `count` points spread evenly, always keeping the latest."""
    if len(points) <= count:
        return list(points)
    if count == 1:
        return [points[-1]]
    last = len(points) - 1
    return [points[round(i * last / (count - 1))] for i in range(count)]
