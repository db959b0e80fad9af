"""Mithril's /v2 API over a `Market`: the routes the SkyPilot plugin and
Mithril's own clients call.

`api_router` builds them as one FastAPI router; each route holds the market
lock while it touches the market, and turns what it got into JSON with `wire`
(whose docstring has the wire conventions: money, times, paging, list query
parameters). Any non-empty bearer token is accepted unless an API key is
given, then only that one. A create route commits at once, or later under
the fault injector's late commit (`created`).
"""

import datetime
import hmac
from typing import (Any, Callable, ContextManager, Dict, List, Literal,
                    Optional, TypeVar)

import fastapi
from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel

from sky_mithril.emulator import faults
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator import wire
from sky_mithril.emulator.market import BidStatus, InstanceStatus, Market

ORDER_TYPES = ('Bid', 'Reservation')
_Made = TypeVar('_Made')


# Request bodies. Semantic checks (known fids, "$x.yy" prices, ...) are the
# market's; these only give the shape. The `_*_FIELDS` maps say where each
# body carries the market's arguments, so a refusal points into the request.


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


_CREATE_BID_FIELDS = {
    **wire.in_body('project', 'region', 'instance_type', 'limit_price',
                   'instance_quantity', 'name'),
    **wire.in_body(*_LaunchSpecificationBody.model_fields,
                   under=('launch_specification',)),
}


class _UpdateBidBody(BaseModel):
    limit_price: Optional[str] = None
    paused: Optional[bool] = None
    volumes: Optional[List[str]] = None
    memory_gb: Optional[int] = None


# The bid is the path's `bid_fid`.
_UPDATE_BID_FIELDS = {
    'fid': ('path', 'bid_fid'),
    **wire.in_body(*_UpdateBidBody.model_fields),
}


class _CreateKubernetesClusterBody(BaseModel):
    name: str
    project: str
    region: str
    instance_type: str
    ssh_keys: List[str]
    k8s_version: str = market_lib.DEFAULT_K8S_VERSION
    image_version: Optional[str] = None


_CREATE_KUBERNETES_CLUSTER_FIELDS = wire.in_body(
    *_CreateKubernetesClusterBody.model_fields)


class _CreateVolumeBody(BaseModel):
    name: str
    project: str
    disk_interface: str
    region: str
    size_gb: int


# The market's `interface` is the body's `disk_interface`.
_CREATE_VOLUME_FIELDS = {
    **wire.in_body('name', 'project', 'region', 'size_gb'),
    'interface': ('body', 'disk_interface'),
}


class _UpdateVolumeBody(BaseModel):
    name: str


_UPDATE_VOLUME_FIELDS = wire.in_body(*_UpdateVolumeBody.model_fields)


class _CreateSshKeyBody(BaseModel):
    project: str
    name: str
    public_key: Optional[str] = None
    required: bool = False


_CREATE_SSH_KEY_FIELDS = wire.in_body(*_CreateSshKeyBody.model_fields)


def api_router(market: Market, lock: ContextManager[Any],
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

    def created(request: Request, create: Callable[[], _Made],
                as_json: Callable[[_Made], Dict[str, Any]]) -> Dict[str, Any]:
        """What a create route answers: `create()`'s result as JSON. Under a
        late-commit fault (`faults.late_commit_delay`) `create` runs that
        much later on the market's clock, and the answer, which the client
        never gets, is empty. Called holding the lock."""
        delay = faults.late_commit_delay(request.scope)
        if delay is not None:
            market.commit_later(delay, create)
            return {}
        return as_json(create())

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
            'created_at': wire.iso(project.created_at)
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
            return [wire.auction_json(market, a) for a in market.auctions()]

    @v2.get('/pricing/current')
    def current_prices(instance_type: str,
                       region: Optional[str] = None,
                       instance_quantity: int = Query(1, ge=1)) -> Dict[str, Any]:
        with lock:
            quote = market.current_prices(instance_type, region,
                                          instance_quantity)
        return {
            'spot_price_cents': wire.cents(quote.spot_price),
            'reserved_price_cents': None,
            'minimum_price_cents': wire.cents(quote.minimum_price),
            'lowest_allocated_bid_cents': wire.cents(quote.lowest_allocated_limit),
            'dynamic_win_price_cents': wire.cents(quote.win_price),
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
                wire.list_param(request, 'instance_types'),
                region,
                start=wire.utc(start_time) if start_time else None,
                end=wire.utc(end_time) if end_time else None,
                num_samples=num_samples)
        return {
            'series': [{
                'instance_type': auction.instance_type.fid,
                'region': auction.region,
                'timestamps': [wire.iso(t) for t, _ in points],
                'spot_prices': [wire.dollars(price) for _, price in points],
                'reserved_prices': [],
            } for auction, points in series],
            'complete': True,
        }

    @v2.get('/ssh-keys')
    def ssh_keys(project: str) -> List[Dict[str, Any]]:
        with lock:
            return [wire.ssh_key_json(key) for key in market.ssh_keys(project)]

    @v2.post('/ssh-keys', status_code=201)
    def create_ssh_key(request: Request,
                       body: _CreateSshKeyBody) -> Dict[str, Any]:
        with lock, wire.fields_at(_CREATE_SSH_KEY_FIELDS):
            return created(
                request, lambda: market.create_ssh_key(
                    body.project, body.name, body.public_key, body.required),
                lambda made: {**wire.ssh_key_json(made[0]),
                              'private_key': made[1]})

    @v2.post('/spot/bids', status_code=201)
    def create_bid(request: Request, body: _CreateBidBody) -> Dict[str, Any]:
        spec = body.launch_specification

        def create() -> market_lib.Bid:
            return market.create_bid(project=body.project,
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

        with lock, wire.fields_at(_CREATE_BID_FIELDS):
            return created(request, create, wire.bid_json)

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
            rows = [wire.bid_json(bid) for bid in bids]
            orders = {bid.fid: bid.order for bid in bids}
        field = 'created_at' if sort_by == 'created_at' else 'status'
        return wire.page(rows, orders, sort_field=field, sort_dir=sort_dir,
                         limit=limit, cursor=next_cursor)

    @v2.get('/spot/bids/{bid_fid}')
    def get_bid(bid_fid: str) -> Dict[str, Any]:
        with lock:
            return wire.bid_json(market.bid(bid_fid))

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
                'timestamp': wire.iso(e.timestamp),
                'event_type': e.event_type.value,
                'limit_price': wire.dollars(e.limit_price),
                'user_id': e.user_id,
            } for e in events],
        }

    @v2.patch('/spot/bids/{bid_fid}')
    def update_bid(bid_fid: str, body: _UpdateBidBody) -> Dict[str, Any]:
        with lock, wire.fields_at(_UPDATE_BID_FIELDS):
            bid = market.update_bid(bid_fid,
                                    limit_price=body.limit_price,
                                    paused=body.paused,
                                    volumes=body.volumes,
                                    memory_gb=body.memory_gb)
            return wire.bid_json(bid)

    @v2.delete('/spot/bids/{bid_fid}', status_code=204)
    def cancel_bid(bid_fid: str) -> Response:
        with lock:
            market.cancel_bid(bid_fid)
        return Response(status_code=204)

    @v2.get('/volumes')
    def list_volumes(project: str,
                     region: Optional[str] = None) -> List[Dict[str, Any]]:
        with lock:
            return [wire.volume_json(market, v)
                    for v in market.volumes(project, region)]

    @v2.post('/volumes', status_code=201)
    def create_volume(request: Request,
                      body: _CreateVolumeBody) -> Dict[str, Any]:
        with lock, wire.fields_at(_CREATE_VOLUME_FIELDS):
            return created(
                request, lambda: market.create_volume(
                    project=body.project, name=body.name,
                    interface=body.disk_interface, region=body.region,
                    size_gb=body.size_gb),
                lambda volume: wire.volume_json(market, volume))

    @v2.patch('/volumes/{volume_fid}')
    def rename_volume(volume_fid: str,
                      body: _UpdateVolumeBody) -> Dict[str, Any]:
        with lock, wire.fields_at(_UPDATE_VOLUME_FIELDS):
            volume = market.rename_volume(volume_fid, body.name)
            return wire.volume_json(market, volume)

    @v2.delete('/volumes/{volume_fid}', status_code=204)
    def delete_volume(volume_fid: str) -> Response:
        with lock:
            market.delete_volume(volume_fid)
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
        statuses = wire.list_param(request, 'status_in')
        order_types = wire.list_param(request, 'order_type_in')
        try:
            status_filter = ([InstanceStatus(s) for s in statuses]
                             if statuses is not None else None)
        except ValueError as e:
            raise wire.validation_error(('query', 'status_in'), str(e)) from e
        unknown_order_types = set(order_types or ()) - set(ORDER_TYPES)
        if unknown_order_types:
            raise wire.validation_error(
                ('query', 'order_type_in'),
                f'unknown order types: {sorted(unknown_order_types)}')
        # The emulator has no reservations, so asking for them finds nothing.
        wants_reservations = (
            (order_types is not None and 'Bid' not in order_types) or
            wire.list_param(request, 'reservation_fid_in') is not None)
        with lock:
            instances = [] if wants_reservations else market.instances(
                project,
                bid_fids=wire.list_param(request, 'bid_fid_in'),
                statuses=status_filter,
                region=region,
                instance_type=instance_type)
            rows = [wire.instance_json(instance) for instance in instances]
            orders = {i.fid: i.order for i in instances}
        field = {
            'created_at': 'created_at',
            'instance_status': 'status',
            'instance_type_fid': 'instance_type',
        }[sort_by]
        return wire.page(rows, orders, sort_field=field, sort_dir=sort_dir,
                         limit=limit, cursor=next_cursor)

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
                'end_time': wire.iso(instance.end_time),
            }

    # Instances' history (`market.history`): by instance, by bid, or the
    # project's; the emulator has no reservations, so asking for one's finds
    # nothing.

    def history_window(start_time: Optional[datetime.datetime],
                       end_time: Optional[datetime.datetime]) -> Dict[str, Any]:
        return {'start': wire.utc(start_time) if start_time else None,
                'end': wire.utc(end_time) if end_time else None}

    @v2.get('/instances/status/history')
    def instance_status_history(
            project: str,
            instance_fid: Optional[str] = None,
            bid_fid: Optional[str] = None,
            reservation_fid: Optional[str] = None,
            limit: Optional[int] = Query(None, ge=1, le=100),
            start_time: Optional[datetime.datetime] = None,
            end_time: Optional[datetime.datetime] = None,
            next_cursor: Optional[str] = None) -> Dict[str, Any]:
        with lock:
            market.tick()
            rows = [] if reservation_fid is not None else [
                (instance.order, wire.status_history_json(instance, changes))
                for instance, changes in market.history.statuses(
                    project, instance_fid=instance_fid, bid_fid=bid_fid,
                    **history_window(start_time, end_time))]
        return wire.history_page(rows, limit, next_cursor)

    @v2.get('/instances/pricing/history')
    def instance_pricing_history(
            project: str,
            instance_fid: Optional[str] = None,
            bid_fid: Optional[str] = None,
            reservation_fid: Optional[str] = None,
            limit: Optional[int] = Query(None, ge=1, le=100),
            start_time: Optional[datetime.datetime] = None,
            end_time: Optional[datetime.datetime] = None,
            next_cursor: Optional[str] = None) -> Dict[str, Any]:
        with lock:
            market.tick()
            rows = [] if reservation_fid is not None else [
                (instance.order, wire.pricing_history_json(instance, charges))
                for instance, charges in market.history.charges(
                    project, instance_fid=instance_fid, bid_fid=bid_fid,
                    **history_window(start_time, end_time))]
        return wire.history_page(rows, limit, next_cursor)

    @v2.get('/kubernetes/clusters')
    def kubernetes_clusters(project: str) -> List[Dict[str, Any]]:
        with lock:
            return [wire.kubernetes_cluster_json(market, c)
                    for c in market.kubernetes_clusters(project)]

    @v2.get('/kubernetes/clusters/{cluster_fid}')
    def kubernetes_cluster(cluster_fid: str) -> Dict[str, Any]:
        with lock:
            return wire.kubernetes_cluster_json(
                market, market.kubernetes_cluster(cluster_fid))

    @v2.post('/kubernetes/clusters', status_code=201)
    def create_kubernetes_cluster(
            request: Request,
            body: _CreateKubernetesClusterBody) -> Dict[str, Any]:
        with lock, wire.fields_at(_CREATE_KUBERNETES_CLUSTER_FIELDS):
            return created(
                request, lambda: market.create_kubernetes_cluster(
                    project=body.project,
                    name=body.name,
                    region=body.region,
                    instance_type=body.instance_type,
                    ssh_keys=body.ssh_keys,
                    k8s_version=body.k8s_version,
                    image_version=body.image_version),
                lambda cluster: wire.kubernetes_cluster_json(market, cluster))

    @v2.delete('/kubernetes/clusters/{cluster_fid}', status_code=204)
    def delete_kubernetes_cluster(cluster_fid: str) -> Response:
        with lock:
            market.delete_kubernetes_cluster(cluster_fid)
        return Response(status_code=204)

    @v2.get('/quotas')
    def quotas(project: str) -> List[Dict[str, Any]]:
        with lock:
            rows = market.quotas(project)
        return [{
            'fid': q.fid,
            'project': q.project,
            'product_type': q.product_type,
            'total_quantity': q.total_quantity,
            'used_quantity': q.used_quantity,
            'units': q.units,
            'name': q.name,
            'instance_type': q.instance_type.fid if q.instance_type else None,
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
