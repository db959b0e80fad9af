"""The emulator's control endpoints, for tests, benchmarks and demos: steer
the market (prices, capacity, time, preemptions, replaced instances) and the
fault injector, and read the request statistics.

Control endpoints (`/_emulator/...`, JSON, no auth, never faulted, not counted
in the request statistics):
  GET    /_emulator/state                  market.dump_state() (auctions, bids, volumes,
                                           reservations)
  POST   /_emulator/advance                {"seconds": float}
  POST   /_emulator/price                  {"instance_type", "region", "price": "$x.yy"}
  POST   /_emulator/capacity               {"instance_type", "region", "capacity": int}
  POST   /_emulator/price-script           {"instance_type", "region", "points": [Point]}
  POST   /_emulator/price-walk             {"instance_type", "region", "volatility": float}
  POST   /_emulator/price-history          {"instance_type", "region", "points": [Point]}
  POST   /_emulator/bids/{bid_fid}/preempt (no body)
  POST   /_emulator/instances/{instance_fid}/replace  (no body) -> the new instance
  POST   /_emulator/filler                 {"count": int, "instance_type"?, "region"?}
  GET    /_emulator/faults                 -> {"rules": [FaultRule], "counts": {kind: n}}
  PUT    /_emulator/faults                 {"rules": [FaultRule], "seed"?: int}
  GET    /_emulator/stats                  -> {"total", "by_route": {"GET /v2/me": n}, "faults"}
  DELETE /_emulator/stats                  resets request and fault counts
  GET    /_emulator/network-probe          200: SkyPilot's network probe on the hosts
                                           (`hosts.network_probe`), HEAD too
where Point is {"price": "$x.yy"} plus either "at" (ISO time) or "offset_s"
(seconds from the current emulated time; negative = past), `instance_type` is
a type's name or fid, and FaultRule is `faults.FaultRule.to_dict()`'s shape.
"""

import datetime
from decimal import Decimal
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import fastapi
from fastapi import Response
from pydantic import BaseModel, Field

from sky_mithril import money
from sky_mithril.emulator import wire
from sky_mithril.emulator.faults import CONTROL_PREFIX, FaultInjector, FaultRule
from sky_mithril.emulator.hosts import network_probe
from sky_mithril.emulator.market import Auction, Market
from sky_mithril.emulator.stats import RequestStats


# Request bodies. They only give the shape: prices and points are checked
# below, fids and regions by the market.


class _AuctionBody(BaseModel):
    instance_type: str
    region: str


class _PriceBody(_AuctionBody):
    price: str


class _CapacityBody(_AuctionBody):
    capacity: int = Field(ge=0)


class _PricePointBody(BaseModel):
    price: str
    at: Optional[datetime.datetime] = None
    offset_s: Optional[float] = None


class _PricePointsBody(_AuctionBody):
    points: List[_PricePointBody]


class _RandomWalkBody(_AuctionBody):
    volatility: float = Field(default=0.1, gt=0)


class _AdvanceBody(BaseModel):
    seconds: float = Field(ge=0)


class _FillerBody(BaseModel):
    count: int = Field(ge=1)
    instance_type: Optional[str] = None
    region: Optional[str] = None


class _FaultsBody(BaseModel):
    rules: List[Dict[str, Any]]
    seed: Optional[int] = None


def _control_dollars(text: str) -> Decimal:
    """A control body's positive price, in any form `money.parse_dollars` reads."""
    try:
        amount = money.parse_dollars(text)
    except money.MoneyFormatError as e:
        raise wire.validation_error(('body', 'price'), str(e)) from e
    if amount <= 0:
        raise wire.validation_error(('body', 'price'), 'price must be positive')
    return amount


def _price_points(body: _PricePointsBody,
                  now: datetime.datetime) -> List[Tuple[datetime.datetime, Decimal]]:
    """A control body's points as (time, price); `offset_s` is relative to `now`."""
    points = []
    for point in body.points:
        if (point.at is None) == (point.offset_s is None):
            raise wire.validation_error(
                ('body', 'points'),
                'each point needs exactly one of "at" and "offset_s"')
        when = (wire.utc(point.at) if point.at is not None else now +
                datetime.timedelta(seconds=point.offset_s or 0.0))
        points.append((when, _control_dollars(point.price)))
    return points


def control_router(market: Market, lock: ContextManager[Any],
                   injector: FaultInjector,
                   stats: RequestStats) -> fastapi.APIRouter:
    """The /_emulator/ endpoints (see the module docstring)."""

    control = fastapi.APIRouter(prefix=CONTROL_PREFIX.rstrip('/'))

    @control.api_route(network_probe.PROBE_PATH.removeprefix(
        CONTROL_PREFIX.rstrip('/')), methods=['GET', 'HEAD'])
    def network_is_up() -> Response:
        return Response(status_code=200)

    @control.get('/state')
    def state() -> Dict[str, Any]:
        with market.caught_up(lock):
            return market.dump_state()

    @control.post('/advance')
    def advance(body: _AdvanceBody) -> Dict[str, Any]:
        with market.caught_up(lock):
            return {'now': wire.iso(market.advance(body.seconds))}

    def changed_auction(change: Callable[[], Auction]) -> Dict[str, Any]:
        """Applies one change to an auction under the lock; the auction as
        /v2/spot/availability shows it afterwards."""
        with market.caught_up(lock):
            return wire.auction_json(market, change())

    @control.post('/price')
    def set_price(body: _PriceBody) -> Dict[str, Any]:
        price = _control_dollars(body.price)
        return changed_auction(lambda: market.auctions.set_price(
            body.instance_type, body.region, price))

    @control.post('/capacity')
    def set_capacity(body: _CapacityBody) -> Dict[str, Any]:
        with wire.fields_at(wire.in_body('capacity')):
            return changed_auction(lambda: market.auctions.set_capacity(
                body.instance_type, body.region, body.capacity))

    @control.post('/price-script')
    def script_prices(body: _PricePointsBody) -> Dict[str, Any]:
        return changed_auction(lambda: market.auctions.script_prices(
            body.instance_type, body.region, _price_points(body, market.now)))

    @control.post('/price-walk')
    def random_walk(body: _RandomWalkBody) -> Dict[str, Any]:
        return changed_auction(lambda: market.auctions.start_random_walk(
            body.instance_type, body.region, body.volatility))

    @control.post('/price-history')
    def script_history(body: _PricePointsBody) -> Dict[str, Any]:
        return changed_auction(lambda: market.auctions.script_history(
            body.instance_type, body.region, _price_points(body, market.now)))

    @control.post('/bids/{bid_fid}/preempt')
    def force_preempt(bid_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            return wire.bid_json(market.bids.force_preempt(bid_fid))

    @control.post('/instances/{instance_fid}/replace')
    def replace_instance(instance_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            return wire.instance_json(market.instances.replace(instance_fid))

    @control.post('/filler')
    def add_filler(body: _FillerBody) -> Dict[str, Any]:
        with market.caught_up(lock):
            bids = market.bids.add_fillers(body.count,
                                           instance_type=body.instance_type,
                                           region=body.region)
        return {'added': len(bids)}

    def faults_json() -> Dict[str, Any]:
        return {
            'rules': [rule.to_dict() for rule in injector.rules],
            'counts': injector.counts(),
        }

    @control.get('/faults')
    def get_faults() -> Dict[str, Any]:
        return faults_json()

    @control.put('/faults')
    def set_faults(body: _FaultsBody) -> Dict[str, Any]:
        try:
            rules = [FaultRule.from_dict(rule) for rule in body.rules]
        except (TypeError, ValueError) as e:
            raise wire.validation_error(('body', 'rules'), str(e)) from e
        injector.set_rules(rules, seed=body.seed)
        return faults_json()

    @control.get('/stats')
    def get_stats() -> Dict[str, Any]:
        return {**stats.snapshot(), 'faults': injector.counts()}

    @control.delete('/stats', status_code=204)
    def reset_stats() -> Response:
        stats.reset()
        injector.reset_counts()
        return Response(status_code=204)

    return control
