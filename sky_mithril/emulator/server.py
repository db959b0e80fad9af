"""Mithril's v2 HTTP API over a `Market`, plus `/_emulator/` control endpoints.

`build_app` makes the FastAPI app; `EmulatorServer` runs it with uvicorn in a
background thread on loopback, with a ticker thread that brings the market up
to `clock.now()` every `tick_interval_s` of wall time. All market access, from
requests and from the ticker, holds one lock.

Wire conventions, as in Mithril's API: bid prices are "$x.yy" strings, the
pricing endpoints integer cents, timestamps ISO 8601 in UTC, create 201,
delete 204, validation errors 422 `{"detail": [{"loc", "msg", "type"}]}`,
unknown fids 404 `{"detail": "..."}`. Pageable lists (bids, instances) return
`{"data": [...], "next_cursor": str | null}`, 100 per page unless `limit`
says otherwise, sorted by `created_at` ascending unless `sort_by`/`sort_dir`
say otherwise; the cursor is opaque (the sort key of the page's last item).
List query parameters (`bid_fid_in`, `status_in`, `order_type_in`, ...) are
accepted repeated (`?status_in=A&status_in=B`, as the OpenAPI client sends
them), comma-separated (`?status_in=A,B`, as its docs describe) and in the
`status_in[]=A` form. An instance whose SSH port is not 22 (a real SSH host of
the emulator) also carries `ssh_port`, and one whose SSH user is not `ubuntu`
carries `ssh_user`; the real API sends neither.

Control endpoints (`/_emulator/...`, JSON, no auth, never faulted, not counted
in the request statistics):
  GET    /_emulator/state                  market.dump_state()
  POST   /_emulator/advance                {"seconds": float}
  POST   /_emulator/price                  {"instance_type", "region", "price": "$x.yy"}
  POST   /_emulator/capacity               {"instance_type", "region", "capacity": int}
  POST   /_emulator/price-script           {"instance_type", "region", "points": [Point]}
  POST   /_emulator/price-walk             {"instance_type", "region", "volatility": float}
  POST   /_emulator/price-history          {"instance_type", "region", "points": [Point]}
  POST   /_emulator/bids/{bid_fid}/preempt (no body)
  POST   /_emulator/filler                 {"count": int, "instance_type"?, "region"?}
  GET    /_emulator/faults                 -> {"rules": [FaultRule], "counts": {kind: n}}
  PUT    /_emulator/faults                 {"rules": [FaultRule], "seed"?: int}
  GET    /_emulator/stats                  -> {"total", "by_route": {"GET /v2/me": n}, "faults"}
  DELETE /_emulator/stats                  resets request and fault counts
where Point is {"price": "$x.yy"} plus either "at" (ISO time) or "offset_s"
(seconds from the current emulated time; negative = past), `instance_type` is
a type's name or fid, and FaultRule is `faults.FaultRule.to_dict()`'s shape.
"""

import base64
import binascii
import collections
import csv
import datetime
import hmac
import json
import logging
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import (Any, Callable, ContextManager, Dict, List, Literal, Optional,
                    Sequence, Tuple, TypeVar, Union)

import fastapi
import uvicorn
from fastapi import Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from sky_mithril import money
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator.clock import ScaledClock
from sky_mithril.emulator.faults import (CONTROL_PREFIX, ASGIApp,
                                         FaultInjector, FaultMiddleware,
                                         FaultRule, Receive, Scope, Send)
from sky_mithril.emulator.hosts import HostBackend, PlaceholderHosts
from sky_mithril.emulator.market import (Bid, BidStatus, Instance,
                                         InstanceStatus, Market)

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
ORDER_TYPES = ('Bid', 'Reservation')
_Item = TypeVar('_Item')


def default_catalog_path() -> Path:
    """The shipped catalog: inside the installed wheel, else the repo's catalog/."""
    package_dir = Path(__file__).resolve().parent.parent
    installed = package_dir / 'data' / 'vms.csv'
    return installed if installed.exists() else (package_dir.parent /
                                                 'catalog' / 'vms.csv')


def load_catalog(path: Optional[Union[str, Path]] = None) -> List[Dict[str, str]]:
    """Rows of a catalog CSV (`InstanceType, ..., Price, SpotPrice, Region, GpuInfo`)."""
    with open(path or default_catalog_path(), newline='',
              encoding='utf-8') as f:
        return list(csv.DictReader(f))


class RequestStats:
    """Requests received per "METHOD /route/{template}", thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_route: Dict[str, int] = collections.Counter()

    def record(self, method: str, route: str) -> None:
        with self._lock:
            self._by_route[f'{method} {route}'] += 1

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                'total': sum(self._by_route.values()),
                'by_route': dict(self._by_route),
            }

    def reset(self) -> None:
        with self._lock:
            self._by_route.clear()


class _CountingMiddleware:
    """Counts each API request under its route template (before any fault)."""

    def __init__(self, app: ASGIApp, router: fastapi.APIRouter,
                 stats: RequestStats) -> None:
        self.app = app
        self.router = router
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] == 'http' and not scope['path'].startswith(
                CONTROL_PREFIX):
            self.stats.record(scope['method'], self._route_template(scope['path']))
        await self.app(scope, receive, send)

    def _route_template(self, path: str) -> str:
        for route in self.router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(path):
                return route.path
        return path


class _EmulatorAPI(fastapi.FastAPI):
    """FastAPI with the request counter and the fault injector outermost, outside
    Starlette's error handling, so faults act on uvicorn's own connection."""

    def __init__(self, *, faults: FaultInjector, stats: RequestStats,
                 counted_router: fastapi.APIRouter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = faults
        self.stats = stats
        self.counted_router = counted_router

    def build_middleware_stack(self) -> ASGIApp:
        return _CountingMiddleware(
            FaultMiddleware(super().build_middleware_stack(), self.faults),
            self.counted_router, self.stats)


# Request bodies. Semantic checks (known fids, "$x.yy" prices, ...) are the
# market's; these only give the shape.


class _LaunchSpecificationBody(BaseModel):
    ssh_keys: List[str]
    volumes: List[str]
    startup_script: Optional[str] = None
    kubernetes_cluster: Optional[str] = None
    image_version: Optional[str] = None
    memory_gb: Optional[int] = None


class _CreateBidBody(BaseModel):
    project: str
    region: str
    instance_type: str
    limit_price: str
    instance_quantity: int
    name: str
    launch_specification: _LaunchSpecificationBody


class _UpdateBidBody(BaseModel):
    limit_price: Optional[str] = None
    paused: Optional[bool] = None
    volumes: Optional[List[str]] = None
    memory_gb: Optional[int] = None


class _CreateSshKeyBody(BaseModel):
    project: str
    name: str
    public_key: Optional[str] = None
    required: bool = False


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


# Wire formats.


def _iso(when: Optional[datetime.datetime]) -> Optional[str]:
    return when.isoformat() if when is not None else None


def _dollars(amount: Optional[Decimal]) -> Optional[str]:
    return money.format_dollars(amount) if amount is not None else None


def _cents(amount: Optional[Decimal]) -> Optional[int]:
    return money.dollars_to_cents(amount) if amount is not None else None


def _utc(when: datetime.datetime) -> datetime.datetime:
    """Reads naive query times as UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def _bid_json(bid: Bid) -> Dict[str, Any]:
    spec = bid.launch_specification
    return {
        'fid': bid.fid,
        'name': bid.name,
        'project': bid.project,
        'created_by': bid.created_by,
        'created_at': _iso(bid.created_at),
        'limit_price': _dollars(bid.limit_price),
        'instance_quantity': bid.instance_quantity,
        'instance_type': bid.instance_type.fid,
        'instances': [instance.fid for instance in bid.instances],
        'launch_specification': {
            'volumes': list(spec.volumes),
            'ssh_keys': list(spec.ssh_keys),
            'startup_script': spec.startup_script,
            'kubernetes_cluster': spec.kubernetes_cluster,
            'image_version': spec.image_version,
            'memory_gb': spec.memory_gb,
        },
        'status': bid.status.value,
        'deactivated_at': _iso(bid.deactivated_at),
        'region': bid.region,
    }


def _instance_json(instance: Instance) -> Dict[str, Any]:
    address = instance.address
    data = {
        'fid': instance.fid,
        'name': instance.name,
        'project': instance.project,
        'created_at': _iso(instance.created_at),
        'created_by': instance.created_by,
        'instance_type': instance.instance_type.fid,
        'status': instance.status.value,
        'region': instance.region,
        'bid': instance.bid_fid,
        'reservation': None,
        'ssh_destination': address.ssh_destination if address else None,
        'private_ip': address.private_ip if address else None,
    }
    if address is not None and address.ssh_port != 22:
        data['ssh_port'] = address.ssh_port
    if address is not None and address.ssh_user != 'ubuntu':
        data['ssh_user'] = address.ssh_user
    return data


def _ssh_key_json(key: market_lib.SshKey) -> Dict[str, Any]:
    return {
        'fid': key.fid,
        'name': key.name,
        'project': key.project,
        'public_key': key.public_key,
        'created_at': _iso(key.created_at),
        'required': key.required,
    }


def _auction_json(market: Market, auction: market_lib.Auction) -> Dict[str, Any]:
    quote = market.current_prices(auction.instance_type.fid, auction.region)
    return {
        'fid': auction.fid,
        'instance_type': auction.instance_type.fid,
        'region': auction.region,
        'capacity': quote.free_capacity,
        'last_instance_price': _dollars(auction.last_instance_price or
                                        auction.spot_price),
        'lowest_allocated_price': _dollars(quote.lowest_allocated_limit),
        'adjustable_memory': False,
        'default_image_version': market_lib.IMAGE_VERSION_FID,
    }


def _validation_error(loc: Tuple[Union[str, int], ...], msg: str) -> market_lib.InvalidRequest:
    return market_lib.InvalidRequest([market_lib.FieldError(loc, msg)])


def _list_param(request: Request, name: str) -> Optional[List[str]]:
    """A list query parameter: repeated, comma-separated, or `name[]`; None if absent."""
    raw = (request.query_params.getlist(name) +
           request.query_params.getlist(f'{name}[]'))
    if not raw:
        return None
    return [item.strip() for value in raw for item in value.split(',')
            if item.strip()]


def _page(items: Sequence[_Item], *, key: Callable[[_Item], Tuple[Any, ...]],
          descending: bool, limit: Optional[int],
          cursor: Optional[str]) -> Dict[str, Any]:
    """One page of `items` sorted by `key`, after `cursor`; items are already JSON."""
    ordered = sorted(items, key=key, reverse=descending)
    if cursor is not None:
        after = _decode_cursor(cursor)
        ordered = [
            item for item in ordered
            if (key(item) < after if descending else key(item) > after)
        ]
    size = limit or DEFAULT_PAGE_SIZE
    page = ordered[:size]
    next_cursor = (_encode_cursor(key(page[-1]))
                   if len(ordered) > size else None)
    return {'data': page, 'next_cursor': next_cursor}


def _encode_cursor(key: Tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_cursor(cursor: str) -> Tuple[Any, ...]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError) as e:
        raise _validation_error(('query', 'next_cursor'),
                                'next_cursor is not a cursor this server issued') from e
    if not isinstance(key, list):
        raise _validation_error(('query', 'next_cursor'),
                                'next_cursor is not a cursor this server issued')
    return tuple(key)


def _control_dollars(text: str) -> Decimal:
    """A control body's positive price, in any form `money.parse_dollars` reads."""
    try:
        amount = money.parse_dollars(text)
    except money.MoneyFormatError as e:
        raise _validation_error(('body', 'price'), str(e)) from e
    if amount <= 0:
        raise _validation_error(('body', 'price'), 'price must be positive')
    return amount


def _price_points(body: _PricePointsBody,
                  now: datetime.datetime) -> List[Tuple[datetime.datetime, Decimal]]:
    """A control body's points as (time, price); `offset_s` is relative to `now`."""
    points = []
    for point in body.points:
        if (point.at is None) == (point.offset_s is None):
            raise _validation_error(
                ('body', 'points'),
                'each point needs exactly one of "at" and "offset_s"')
        when = (_utc(point.at) if point.at is not None else now +
                datetime.timedelta(seconds=point.offset_s or 0.0))
        points.append((when, _control_dollars(point.price)))
    return points


def _api_router(market: Market, lock: ContextManager[Any],
                api_key: Optional[str]) -> fastapi.APIRouter:
    """Mithril's /v2 endpoints over `market`, each call holding `lock`."""

    def authenticate(request: Request) -> None:
        scheme, _, token = request.headers.get('authorization', '').partition(' ')
        token = token.strip()
        if scheme.lower() != 'bearer' or not token:
            raise fastapi.HTTPException(401, 'Not authenticated',
                                        headers={'WWW-Authenticate': 'Bearer'})
        if api_key is not None and not hmac.compare_digest(
                token.encode(), api_key.encode()):
            raise fastapi.HTTPException(401, 'Invalid API key',
                                        headers={'WWW-Authenticate': 'Bearer'})

    v2 = fastapi.APIRouter(prefix='/v2', dependencies=[Depends(authenticate)])

    @v2.get('/me')
    def me() -> Dict[str, Any]:
        with lock:
            user = market.user
        return {
            'id': user.id,
            'fid': user.fid,
            'email': user.email,
            'organization_id': user.organization_id,
            'user_name': user.user_name,
            'organization_role': 'owner',
        }

    @v2.get('/projects')
    def projects() -> List[Dict[str, Any]]:
        with lock:
            project = market.project
        return [{
            'fid': project.fid,
            'name': project.name,
            'created_at': _iso(project.created_at)
        }]

    @v2.get('/instance-types')
    def instance_types() -> List[Dict[str, Any]]:
        with lock:
            types = market.instance_types()
        return [{
            'fid': t.fid,
            'name': t.name,
            'num_cpus': t.num_cpus,
            'cpu_type': t.cpu_type,
            'ram_gb': t.ram_gb,
            'num_gpus': t.num_gpus,
            'gpu_type': t.gpu_type,
            'gpu_memory_gb': t.gpu_memory_gb,
            'gpu_socket': t.gpu_socket,
            'local_storage_gb': t.local_storage_gb,
            'ib_count': t.ib_count,
            'bridge_count': t.bridge_count,
            'network_type': t.network_type,
        } for t in types]

    @v2.get('/spot/availability')
    def auctions() -> List[Dict[str, Any]]:
        with lock:
            return [_auction_json(market, a) for a in market.auctions()]

    @v2.get('/pricing/current')
    def current_prices(instance_type: str,
                       region: Optional[str] = None,
                       instance_quantity: int = Query(1, ge=1)) -> Dict[str, Any]:
        with lock:
            quote = market.current_prices(instance_type, region,
                                          instance_quantity)
        return {
            'spot_price_cents': _cents(quote.spot_price),
            'reserved_price_cents': None,
            'minimum_price_cents': _cents(quote.minimum_price),
            'lowest_allocated_bid_cents': _cents(quote.lowest_allocated_limit),
            'dynamic_win_price_cents': _cents(quote.win_price),
            'available_capacity': quote.free_capacity,
            'total_capacity': quote.capacity,
        }

    @v2.get('/pricing/history')
    def price_history(request: Request,
                      region: Optional[str] = None,
                      num_samples: int = Query(100, ge=1),
                      start_time: Optional[datetime.datetime] = None,
                      end_time: Optional[datetime.datetime] = None) -> Dict[str, Any]:
        with lock:
            series = market.price_history(
                _list_param(request, 'instance_types'),
                region,
                start=_utc(start_time) if start_time else None,
                end=_utc(end_time) if end_time else None,
                num_samples=num_samples)
        return {
            'series': [{
                'instance_type': auction.instance_type.fid,
                'region': auction.region,
                'timestamps': [_iso(t) for t, _ in points],
                'spot_prices': [_dollars(price) for _, price in points],
                'reserved_prices': [],
            } for auction, points in series],
            'complete': True,
        }

    @v2.get('/ssh-keys')
    def ssh_keys(project: str) -> List[Dict[str, Any]]:
        with lock:
            return [_ssh_key_json(key) for key in market.ssh_keys(project)]

    @v2.post('/ssh-keys', status_code=201)
    def create_ssh_key(body: _CreateSshKeyBody) -> Dict[str, Any]:
        with lock:
            key, private_key = market.create_ssh_key(body.project, body.name,
                                                body.public_key, body.required)
        return {**_ssh_key_json(key), 'private_key': private_key}

    @v2.post('/spot/bids', status_code=201)
    def create_bid(body: _CreateBidBody) -> Dict[str, Any]:
        spec = body.launch_specification
        with lock:
            bid = market.create_bid(project=body.project,
                                    region=body.region,
                                    instance_type=body.instance_type,
                                    limit_price=body.limit_price,
                                    instance_quantity=body.instance_quantity,
                                    name=body.name,
                                    ssh_keys=spec.ssh_keys,
                                    volumes=spec.volumes,
                                    startup_script=spec.startup_script,
                                    kubernetes_cluster=spec.kubernetes_cluster,
                                    image_version=spec.image_version,
                                    memory_gb=spec.memory_gb)
            return _bid_json(bid)

    @v2.get('/spot/bids')
    def list_bids(project: Optional[str] = None,
                  name: Optional[str] = None,
                  status: Optional[BidStatus] = None,
                  region: Optional[str] = None,
                  instance_type: Optional[str] = None,
                  sort_by: Literal['created_at', 'status'] = 'created_at',
                  sort_dir: Literal['asc', 'desc'] = 'asc',
                  limit: Optional[int] = Query(None, ge=1),
                  next_cursor: Optional[str] = None) -> Dict[str, Any]:
        with lock:
            bids = market.bids(project=project,
                               name=name,
                               status=status,
                               region=region,
                               instance_type=instance_type)
            rows = [_bid_json(bid) for bid in bids]
            orders = {bid.fid: bid.order for bid in bids}
        field = 'created_at' if sort_by == 'created_at' else 'status'
        return _page(rows,
                     key=lambda bid: (bid[field], orders[bid['fid']]),
                     descending=sort_dir == 'desc',
                     limit=limit,
                     cursor=next_cursor)

    @v2.get('/spot/bids/{bid_fid}')
    def get_bid(bid_fid: str) -> Dict[str, Any]:
        with lock:
            return _bid_json(market.bid(bid_fid))

    @v2.get('/spot/bids/{bid_fid}/status')
    def bid_status(bid_fid: str) -> Dict[str, Any]:
        with lock:
            status = market.bid(bid_fid).status
        return {'bid_fid': bid_fid, 'status': status.value}

    @v2.get('/spot/bids/{bid_fid}/history')
    def bid_history(bid_fid: str) -> Dict[str, Any]:
        with lock:
            events = list(market.bid(bid_fid).events)
        return {
            'bid_fid': bid_fid,
            'events': [{
                'timestamp': _iso(e.timestamp),
                'event_type': e.event_type.value,
                'limit_price': _dollars(e.limit_price),
                'user_id': e.user_id,
            } for e in events],
        }

    @v2.patch('/spot/bids/{bid_fid}')
    def update_bid(bid_fid: str, body: _UpdateBidBody) -> Dict[str, Any]:
        with lock:
            bid = market.update_bid(bid_fid,
                                    limit_price=body.limit_price,
                                    paused=body.paused,
                                    volumes=body.volumes,
                                    memory_gb=body.memory_gb)
            return _bid_json(bid)

    @v2.delete('/spot/bids/{bid_fid}', status_code=204)
    def cancel_bid(bid_fid: str) -> Response:
        with lock:
            market.cancel_bid(bid_fid)
        return Response(status_code=204)

    @v2.get('/instances')
    def list_instances(request: Request,
                       project: str,
                       region: Optional[str] = None,
                       instance_type: Optional[str] = None,
                       sort_by: Literal['created_at', 'instance_status',
                                        'instance_type_fid'] = 'created_at',
                       sort_dir: Literal['asc', 'desc'] = 'asc',
                       limit: Optional[int] = Query(None, ge=1),
                       next_cursor: Optional[str] = None) -> Dict[str, Any]:
        statuses = _list_param(request, 'status_in')
        order_types = _list_param(request, 'order_type_in')
        try:
            status_filter = ([InstanceStatus(s) for s in statuses]
                             if statuses is not None else None)
        except ValueError as e:
            raise _validation_error(('query', 'status_in'), str(e)) from e
        unknown_order_types = set(order_types or ()) - set(ORDER_TYPES)
        if unknown_order_types:
            raise _validation_error(
                ('query', 'order_type_in'),
                f'unknown order types: {sorted(unknown_order_types)}')
        # The emulator has no reservations, so asking for them finds nothing.
        wants_reservations = (
            (order_types is not None and 'Bid' not in order_types) or
            _list_param(request, 'reservation_fid_in') is not None)
        with lock:
            instances = [] if wants_reservations else market.instances(
                project,
                bid_fids=_list_param(request, 'bid_fid_in'),
                statuses=status_filter,
                region=region,
                instance_type=instance_type)
            rows = [_instance_json(instance) for instance in instances]
            orders = {i.fid: i.order for i in instances}
        field = {
            'created_at': 'created_at',
            'instance_status': 'status',
            'instance_type_fid': 'instance_type',
        }[sort_by]
        return _page(rows,
                     key=lambda row: (row[field], orders[row['fid']]),
                     descending=sort_dir == 'desc',
                     limit=limit,
                     cursor=next_cursor)

    @v2.get('/instances/{instance_fid}/status')
    def instance_status(instance_fid: str) -> Dict[str, Any]:
        with lock:
            instance = market.instance(instance_fid)
            return {
                'fid': instance.fid,
                'name': instance.name,
                'status': instance.status.value,
                'bid': instance.bid_fid,
                'reservation': None,
                'end_time': _iso(instance.end_time),
            }

    @v2.get('/quotas')
    def quotas(project: str) -> List[Dict[str, Any]]:
        with lock:
            rows = market.quotas(project)
        return [{
            'fid': q.fid,
            'project': q.project,
            'product_type': 'spot',
            'total_quantity': q.total_quantity,
            'used_quantity': q.used_quantity,
            'units': 'instances',
            'name': q.instance_type.name,
            'instance_type': q.instance_type.fid,
        } for q in rows]

    @v2.get('/image-versions')
    def image_versions() -> List[Dict[str, Any]]:
        with lock:
            regions = sorted({a.region for a in market.auctions()})
        return [{
            'image_version_fid': market_lib.IMAGE_VERSION_FID,
            'image_version_name': 'Ubuntu 22.04 CUDA 12.4 (emulated)',
            'os': 'ubuntu-22.04',
            'kernel': '5.15',
            'stable': True,
            'supported_regions': regions,
            'nvidia_driver': '550',
            'cuda': '12.4',
        }]

    return v2


def _control_router(market: Market, lock: ContextManager[Any],
                    injector: FaultInjector,
                    stats: RequestStats) -> fastapi.APIRouter:
    """The /_emulator/ endpoints (see the module docstring)."""

    control = fastapi.APIRouter(prefix=CONTROL_PREFIX.rstrip('/'))

    @control.get('/state')
    def state() -> Dict[str, Any]:
        with lock:
            return market.dump_state()

    @control.post('/advance')
    def advance(body: _AdvanceBody) -> Dict[str, Any]:
        with lock:
            return {'now': _iso(market.advance(body.seconds))}

    @control.post('/price')
    def set_price(body: _PriceBody) -> Dict[str, Any]:
        price = _control_dollars(body.price)
        with lock:
            auction = market.set_price(body.instance_type, body.region, price)
            return _auction_json(market, auction)

    @control.post('/capacity')
    def set_capacity(body: _CapacityBody) -> Dict[str, Any]:
        with lock:
            auction = market.set_capacity(body.instance_type, body.region,
                                          body.capacity)
            return _auction_json(market, auction)

    @control.post('/price-script')
    def script_prices(body: _PricePointsBody) -> Dict[str, Any]:
        with lock:
            auction = market.script_prices(body.instance_type, body.region,
                                           _price_points(body, market.now))
            return _auction_json(market, auction)

    @control.post('/price-walk')
    def random_walk(body: _RandomWalkBody) -> Dict[str, Any]:
        with lock:
            auction = market.start_random_walk(body.instance_type, body.region,
                                               body.volatility)
            return _auction_json(market, auction)

    @control.post('/price-history')
    def script_history(body: _PricePointsBody) -> Dict[str, Any]:
        with lock:
            auction = market.script_history(body.instance_type, body.region,
                                            _price_points(body, market.now))
            return _auction_json(market, auction)

    @control.post('/bids/{bid_fid}/preempt')
    def force_preempt(bid_fid: str) -> Dict[str, Any]:
        with lock:
            return _bid_json(market.force_preempt(bid_fid))

    @control.post('/filler')
    def add_filler(body: _FillerBody) -> Dict[str, Any]:
        with lock:
            bids = market.add_filler_instances(body.count,
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
            raise _validation_error(('body', 'rules'), str(e)) from e
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


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    del request
    return JSONResponse({'detail': str(exc)}, status_code=404)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    del request
    assert isinstance(exc, market_lib.InvalidRequest)
    return JSONResponse(
        {
            'detail': [{
                'loc': list(e.loc),
                'msg': e.msg,
                'type': e.type
            } for e in exc.errors]
        },
        status_code=422)


async def _invalid_state(request: Request, exc: Exception) -> JSONResponse:
    del request
    return JSONResponse({'detail': str(exc)}, status_code=409)


def build_app(market: Market,
              *,
              api_key: Optional[str] = None,
              faults: Optional[FaultInjector] = None,
              lock: Optional[ContextManager[Any]] = None) -> fastapi.FastAPI:
    """The emulator's ASGI app over `market`.

    Any non-empty bearer token is accepted unless `api_key` is given, then only
    that one. `lock` (made if not given) guards every market access; share it
    with whatever else touches the market (the server's ticker). Both are also
    on `app.state.market` and `app.state.lock`.
    """
    market_lock = lock or threading.RLock()
    injector = faults or FaultInjector()
    stats = RequestStats()
    v2 = _api_router(market, market_lock, api_key)
    app = _EmulatorAPI(faults=injector,
                       stats=stats,
                       counted_router=v2,
                       title='Mithril API emulator',
                       openapi_url=None,
                       docs_url=None,
                       redoc_url=None)
    app.state.market = market
    app.state.lock = market_lock

    app.add_exception_handler(market_lib.NotFound, _not_found)
    app.add_exception_handler(market_lib.InvalidRequest, _invalid_request)
    app.add_exception_handler(market_lib.InvalidState, _invalid_state)
    app.include_router(v2)
    app.include_router(
        _control_router(market, market_lock, injector, stats))
    return app


class EmulatorServer:
    """The emulator on a loopback port, in background threads; a context manager.

    Without `market`, builds one from the catalog (`catalog_path`, default the
    shipped one) on a `ScaledClock(speed)` with `hosts` (default placeholder
    hosts), `capacity`, `clearing_interval_s` and `seed`; those arguments are
    ignored when a market is given. `seed` also seeds the default fault
    injector. Construct, adjust `.market` if needed (holding `.lock` once
    started), then `start()` (or `with`). `stop()` shuts the server down and
    closes the market's host backend.
    """

    def __init__(self,
                 market: Optional[Market] = None,
                 *,
                 host: str = '127.0.0.1',
                 port: int = 0,
                 speed: float = 60.0,
                 api_key: Optional[str] = None,
                 hosts: Optional[HostBackend] = None,
                 catalog_path: Optional[Union[str, Path]] = None,
                 seed: int = 0,
                 capacity: int = market_lib.DEFAULT_CAPACITY,
                 clearing_interval_s: float = 120.0,
                 faults: Optional[FaultInjector] = None,
                 tick_interval_s: float = 0.2) -> None:
        if market is None:
            market = Market(ScaledClock(speed),
                            hosts or PlaceholderHosts(),
                            load_catalog(catalog_path),
                            capacity=capacity,
                            clearing_interval_s=clearing_interval_s,
                            seed=seed)
        self.market = market
        self.faults = faults or FaultInjector(seed=seed)
        self.lock = threading.RLock()
        self.app = build_app(self.market,
                             api_key=api_key,
                             faults=self.faults,
                             lock=self.lock)
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None
        self._tick_interval_s = tick_interval_s
        self._stopping = threading.Event()
        self._server: Optional[uvicorn.Server] = None
        self._threads: List[threading.Thread] = []

    @property
    def url(self) -> str:
        """Base URL to give API clients (`MITHRIL_API_URL`)."""
        if self.port is None:
            raise RuntimeError('the emulator server is not started')
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}'

    def start(self, timeout_s: float = 10.0) -> 'EmulatorServer':
        """Binds the port, starts serving and ticking; returns once it accepts requests."""
        if self._server is not None:
            return self
        if self._stopping.is_set():
            raise RuntimeError('a stopped emulator server cannot be restarted')
        family = socket.AF_INET6 if ':' in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app,
                                log_config=None,
                                log_level='warning',
                                access_log=False,
                                lifespan='off',
                                ws='none',
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        serve = threading.Thread(target=self._server.run,
                                 kwargs={'sockets': [sock]},
                                 name=f'mithril-emulator-{self.port}',
                                 daemon=True)
        tick = threading.Thread(target=self._tick_forever,
                                name=f'mithril-emulator-tick-{self.port}',
                                daemon=True)
        self._threads = [serve, tick]
        serve.start()
        tick.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not serve.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError('the emulator server did not start')
            time.sleep(0.01)
        return self

    def control(self, method: str, path: str, **body: Any) -> Any:
        """Calls a `/_emulator/` control endpoint over HTTP; returns its JSON."""
        import requests  # pylint: disable=import-outside-toplevel
        response = requests.request(method, f'{self.url}/_emulator/{path}',
                                    json=body or None, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None

    def _tick_forever(self) -> None:
        while not self._stopping.wait(self._tick_interval_s):
            try:
                with self.lock:
                    self.market.tick()
            except Exception:  # pylint: disable=broad-except
                logger.exception('Emulator market tick failed')

    def stop(self) -> None:
        """Stops serving and ticking (if started), then closes the host backend.
        Idempotent."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        self._server = None
        self._threads = []
        with self.lock:
            self.market.hosts.close()

    def __enter__(self) -> 'EmulatorServer':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
