"""Mithril's /v2 API over a `Market`: the routes the SkyPilot plugin and
Mithril's own clients call.

`api_router` builds them as one FastAPI router; each route touches the market
inside `market.caught_up(lock)` (the lock held, the market caught up with its
clock once per request), and turns what it got into JSON with `wire`
(whose docstring has the wire conventions: money, times, paging, list query
parameters). Any non-empty bearer token is accepted unless an API key is
given, then only that one; a key minted through `/v2/api-keys` only while
it is live (`market.api_keys`). A create route commits at once, or later under
the fault injector's late commit (`created`). The reservation endpoints are
in `reservation_routes`, included here.
"""

import datetime
import uuid
from typing import (Any, Callable, ContextManager, Dict, List, Literal,
                    Optional, TypeVar)

import fastapi
from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from sky_mithril.emulator import faults
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator import wire
from sky_mithril.emulator.market import (BidStatus, InstanceStatus,
                                         LifecycleScriptScope, Market)
from sky_mithril.emulator.reservation_routes import reservation_router

_Made = TypeVar('_Made')

# `/v2/pricing/history`'s num_samples: -1 asks for every sample (the complete
# history, as Mithril's SDK asks for it), else at most this many.
COMPLETE_HISTORY = -1
MAX_PRICE_SAMPLES = 1000


# Request bodies. Semantic checks (known fids, "$x.yy" prices, ...) are the
# market's; these only give the shape. The `_*_FIELDS` maps say where each
# body carries the market's arguments, so a refusal points into the request.


class _CreateBidBody(BaseModel):
    project: str
    region: str
    instance_type: str
    limit_price: str
    instance_quantity: int
    name: str
    launch_specification: wire.LaunchSpecificationBody


_CREATE_BID_FIELDS = {
    **wire.in_body('project', 'region', 'instance_type', 'limit_price',
                   'instance_quantity', 'name'),
    **wire.in_body(*wire.LaunchSpecificationBody.model_fields,
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


class _UpdateSshKeyBody(BaseModel):
    required: bool


class _CreateLifecycleScriptBody(BaseModel):
    project: str
    name: str
    content: str
    description: Optional[str] = None
    scope: LifecycleScriptScope = LifecycleScriptScope.PROJECT


_CREATE_LIFECYCLE_SCRIPT_FIELDS = wire.in_body(
    *_CreateLifecycleScriptBody.model_fields)


class _UpdateLifecycleScriptBody(BaseModel):
    name: Optional[str] = None
    description: Optional[str] = None
    scope: Optional[LifecycleScriptScope] = None


_UPDATE_LIFECYCLE_SCRIPT_FIELDS = wire.in_body(
    *_UpdateLifecycleScriptBody.model_fields)


class _CreateCpuInstanceBody(BaseModel):
    model_config = ConfigDict(extra='forbid')

    name: str
    project: str
    instance_type: str
    region: str
    volumes: List[str] = []
    ssh_keys: Optional[List[str]] = None
    image_version: Optional[str] = None


_CREATE_CPU_INSTANCE_FIELDS = wire.in_body(
    *_CreateCpuInstanceBody.model_fields)


class _InstanceStatusBody(BaseModel):
    instances: List[str]
    status: Literal['STATUS_RUNNING', 'STATUS_PAUSED']


class _RefreshBootDiskBody(BaseModel):
    image_version: Optional[str] = None


class _CreateApiKeyBody(BaseModel):
    name: str
    expires_at: datetime.datetime


def api_router(market: Market, lock: ContextManager[Any],
               api_key: Optional[str]) -> fastapi.APIRouter:
    """Mithril's /v2 endpoints over `market`, each call holding `lock`
    (`market.caught_up`)."""

    def authenticate(request: Request) -> None:
        scheme, _, token = request.headers.get('authorization', '').partition(' ')
        token = token.strip()
        if scheme.lower() != 'bearer' or not token:
            raise fastapi.HTTPException(401, 'Not authenticated',
                                        headers={'WWW-Authenticate': 'Bearer'})
        with market.caught_up(lock):
            accepted = market.api_keys.authenticates(token, api_key)
        if not accepted:
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
        with market.caught_up(lock):
            user = market.accounts.user
        return {
            'id': user.id,
            'fid': user.fid,
            'email': user.email,
            'organization_id': user.organization_id,
            'user_name': user.user_name,
            'organization_role': user.organization_role,
        }

    @v2.get('/me/teammates')
    def teammates() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            users = market.accounts.teammates()
            project = market.accounts.project
        return [wire.teammate_json(user, [project]) for user in users]

    @v2.get('/projects')
    def projects() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            project = market.accounts.project
        return [{
            'fid': project.fid,
            'name': project.name,
            'created_at': wire.iso(project.created_at)
        }]

    @v2.get('/instance-types')
    def instance_types() -> List[Dict[str, Any]]:
        """Each type as InstanceTypeModel, a spot type's `hourly_price`
        being the lowest floor among its auctions."""
        with market.caught_up(lock):
            types = market.auctions.instance_types()
            floors = market.auctions.lowest_floors()
        return [wire.instance_type_json(t, floors.get(t.fid)) for t in types]

    @v2.get('/spot/availability')
    def auctions() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            return [
                wire.auction_json(market, a) for a in market.auctions.list()
            ]

    @v2.get('/pricing/current')
    def current_prices(instance_type: str,
                       region: Optional[str] = None,
                       instance_quantity: int = Query(1, ge=1)) -> Dict[str, Any]:
        with market.caught_up(lock):
            quote = market.auctions.current_prices(instance_type, region,
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
                      num_samples: int = Query(100, ge=COMPLETE_HISTORY,
                                               le=MAX_PRICE_SAMPLES),
                      start_time: Optional[datetime.datetime] = None,
                      end_time: Optional[datetime.datetime] = None) -> Dict[str, Any]:
        with market.caught_up(lock):
            series = market.auctions.price_history(
                wire.list_param(request, 'instance_types'),
                region,
                start=wire.utc(start_time) if start_time else None,
                end=wire.utc(end_time) if end_time else None,
                num_samples=(None if num_samples == COMPLETE_HISTORY else
                             num_samples))
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
        with market.caught_up(lock):
            return [
                wire.ssh_key_json(key) for key in market.ssh_keys.list(project)
            ]

    @v2.post('/ssh-keys', status_code=201)
    def create_ssh_key(request: Request,
                       body: _CreateSshKeyBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(_CREATE_SSH_KEY_FIELDS):
            return created(
                request, lambda: market.ssh_keys.create(
                    body.project, body.name, body.public_key, body.required),
                lambda made: {**wire.ssh_key_json(made[0]),
                              'private_key': made[1]})

    @v2.patch('/ssh-keys/{ssh_key_fid}')
    def update_ssh_key(ssh_key_fid: str,
                       body: _UpdateSshKeyBody) -> Dict[str, Any]:
        with market.caught_up(lock):
            return wire.ssh_key_json(
                market.ssh_keys.update(ssh_key_fid, required=body.required))

    @v2.delete('/ssh-keys/{ssh_key_fid}', status_code=204)
    def delete_ssh_key(ssh_key_fid: str) -> Response:
        with market.caught_up(lock):
            market.ssh_keys.delete(ssh_key_fid)
        return Response(status_code=204)

    @v2.post('/lifecycle-scripts', status_code=201)
    def create_lifecycle_script(
            request: Request,
            body: _CreateLifecycleScriptBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(
                _CREATE_LIFECYCLE_SCRIPT_FIELDS):
            return created(
                request, lambda: market.lifecycle_scripts.create(
                    project=body.project, name=body.name,
                    content=body.content, description=body.description,
                    scope=body.scope),
                lambda script: wire.lifecycle_script_json(
                    script, str(request.base_url)))

    @v2.get('/lifecycle-scripts')
    def list_lifecycle_scripts(
            request: Request,
            project: str,
            sort_by: Literal['created_at', 'last_modified_at'] = 'created_at',
            sort_dir: Literal['asc', 'desc'] = 'asc',
            limit: Optional[int] = Query(None, ge=1, le=100),
            next_cursor: Optional[str] = None) -> Dict[str, Any]:
        with market.caught_up(lock):
            scripts = market.lifecycle_scripts.list(project)
            rows = [
                wire.lifecycle_script_json(script, str(request.base_url))
                for script in scripts
            ]
            orders = {script.fid: script.order for script in scripts}
        return wire.page(rows, orders, sort_field=sort_by, sort_dir=sort_dir,
                         limit=limit, cursor=next_cursor)

    @v2.get('/lifecycle-scripts/{ls_fid}/content')
    def lifecycle_script_content(ls_fid: str) -> str:
        with market.caught_up(lock):
            return market.lifecycle_scripts.get(ls_fid).content

    @v2.patch('/lifecycle-scripts/{ls_fid}')
    def update_lifecycle_script(
            request: Request, ls_fid: str,
            body: _UpdateLifecycleScriptBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(
                _UPDATE_LIFECYCLE_SCRIPT_FIELDS):
            script = market.lifecycle_scripts.update(
                ls_fid, name=body.name, description=body.description,
                scope=body.scope)
            return wire.lifecycle_script_json(script, str(request.base_url))

    @v2.delete('/lifecycle-scripts/{ls_fid}', status_code=204)
    def delete_lifecycle_script(ls_fid: str) -> Response:
        with market.caught_up(lock):
            market.lifecycle_scripts.delete(ls_fid)
        return Response(status_code=204)

    @v2.post('/spot/bids', status_code=201)
    def create_bid(request: Request, body: _CreateBidBody) -> Dict[str, Any]:
        spec = body.launch_specification

        def create() -> market_lib.Bid:
            return market.bids.create(
                project=body.project,
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

        with market.caught_up(lock), wire.fields_at(_CREATE_BID_FIELDS):
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
        with market.caught_up(lock):
            bids = market.bids.list(project=project,
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
        with market.caught_up(lock):
            return wire.bid_json(market.bids.get(bid_fid))

    @v2.get('/spot/bids/{bid_fid}/status')
    def bid_status(bid_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            status = market.bids.get(bid_fid).status
        return {'bid_fid': bid_fid, 'status': status.value}

    @v2.get('/spot/bids/{bid_fid}/history')
    def bid_history(bid_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            events = list(market.bids.get(bid_fid).events)
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
        with market.caught_up(lock), wire.fields_at(_UPDATE_BID_FIELDS):
            bid = market.bids.update(bid_fid,
                                     limit_price=body.limit_price,
                                     paused=body.paused,
                                     volumes=body.volumes,
                                     memory_gb=body.memory_gb)
            return wire.bid_json(bid)

    @v2.delete('/spot/bids/{bid_fid}', status_code=204)
    def cancel_bid(bid_fid: str) -> Response:
        with market.caught_up(lock):
            market.bids.cancel(bid_fid)
        return Response(status_code=204)

    @v2.get('/volumes')
    def list_volumes(project: str,
                     region: Optional[str] = None) -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            return [
                wire.volume_json(market, v)
                for v in market.volumes.list(project, region)
            ]

    @v2.post('/volumes', status_code=201)
    def create_volume(request: Request,
                      body: _CreateVolumeBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(_CREATE_VOLUME_FIELDS):
            return created(
                request,
                lambda: market.volumes.create(project=body.project,
                                              name=body.name,
                                              interface=body.disk_interface,
                                              region=body.region,
                                              size_gb=body.size_gb),
                lambda volume: wire.volume_json(market, volume))

    @v2.patch('/volumes/{volume_fid}')
    def rename_volume(volume_fid: str,
                      body: _UpdateVolumeBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(_UPDATE_VOLUME_FIELDS):
            volume = market.volumes.rename(volume_fid, body.name)
            return wire.volume_json(market, volume)

    @v2.delete('/volumes/{volume_fid}', status_code=204)
    def delete_volume(volume_fid: str) -> Response:
        with market.caught_up(lock):
            market.volumes.delete(volume_fid)
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
        unknown_order_types = set(order_types or ()) - set(
            market_lib.ORDER_TYPES)
        if unknown_order_types:
            raise wire.validation_error(
                ('query', 'order_type_in'),
                f'unknown order types: {sorted(unknown_order_types)}')
        with market.caught_up(lock):
            instances = market.instances.list(
                project,
                bid_fids=wire.list_param(request, 'bid_fid_in'),
                statuses=status_filter,
                region=region,
                instance_type=instance_type,
                order_types=order_types,
                reservation_fids=wire.list_param(request,
                                                 'reservation_fid_in'))
            rows = [wire.instance_json(instance) for instance in instances]
            orders = {i.fid: i.order for i in instances}
        field = {
            'created_at': 'created_at',
            'instance_status': 'status',
            'instance_type_fid': 'instance_type',
        }[sort_by]
        return wire.page(rows, orders, sort_field=field, sort_dir=sort_dir,
                         limit=limit, cursor=next_cursor)

    @v2.patch('/instances')
    def set_instance_status(body: _InstanceStatusBody) -> Dict[str, Any]:
        if len(set(body.instances)) != len(body.instances):
            raise wire.validation_error(('body', 'instances'),
                                        'instances must be unique')
        with market.caught_up(lock):
            statuses = market.instances.set_status(
                body.instances, InstanceStatus(body.status))
        return {
            'instances': {fid: status.value for fid, status in statuses.items()}
        }

    @v2.post('/instances/{instance_fid}/restart', status_code=202)
    def restart_instance(instance_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            market.instances.restart(instance_fid)
        return {'fid': instance_fid, 'status': 'RESTARTING'}

    @v2.post('/instances/{instance_fid}/refresh-boot-disk')
    def refresh_boot_disk(
            instance_fid: str,
            body: Optional[_RefreshBootDiskBody] = None) -> Dict[str, Any]:
        with market.caught_up(lock):
            image = market.instances.refresh_boot_disk(
                instance_fid, body.image_version if body else None)
        return {'fid': instance_fid, 'image_version': image,
                'status': 'REFRESHED'}

    @v2.get('/cpu/instance-types')
    def cpu_instance_types() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            types = market.cpu_vms.instance_types()
        return [wire.instance_type_json(t) for t in types]

    @v2.get('/cpu/regions')
    def cpu_regions() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            regions = market.cpu_vms.regions()
        return [wire.region_json(r, market_lib.region_id(r)) for r in regions]

    @v2.post('/cpu/instances', status_code=201)
    def create_cpu_instance(request: Request,
                            body: _CreateCpuInstanceBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(
                _CREATE_CPU_INSTANCE_FIELDS):
            return created(
                request, lambda: market.cpu_vms.create(
                    project=body.project, name=body.name,
                    instance_type=body.instance_type, region=body.region,
                    volumes=body.volumes, ssh_keys=body.ssh_keys,
                    image_version=body.image_version), wire.instance_json)

    @v2.delete('/cpu/instances/{instance_fid}', status_code=204)
    def terminate_cpu_instance(instance_fid: str) -> Response:
        with market.caught_up(lock):
            market.cpu_vms.terminate(instance_fid)
        return Response(status_code=204)

    @v2.get('/instances/{instance_fid}/status')
    def instance_status(instance_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            instance = market.instances.get(instance_fid)
            return {
                'fid': instance.fid,
                'name': instance.name,
                'status': instance.status.value,
                'bid': instance.bid_fid,
                'reservation': instance.reservation_fid,
                'end_time': wire.iso(instance.end_time),
            }

    # Instances' history (`market.history`): by instance, by bid, by
    # reservation, or the project's.

    def history_route(path: str, query: Callable[..., List[Any]],
                      to_json: Callable[[Any, Any], Dict[str, Any]]) -> None:
        """Serves `path`: what `query` (a `market.history` query) returns,
        each instance's entries as `to_json` writes them, paged."""

        @v2.get(path)
        def instance_history(
                project: str,
                instance_fid: Optional[str] = None,
                bid_fid: Optional[str] = None,
                reservation_fid: Optional[str] = None,
                limit: Optional[int] = Query(None, ge=1, le=100),
                start_time: Optional[datetime.datetime] = None,
                end_time: Optional[datetime.datetime] = None,
                next_cursor: Optional[str] = None) -> Dict[str, Any]:
            with market.caught_up(lock):
                rows = [
                    (instance.order, to_json(instance, entries))
                    for instance, entries in query(
                        project, instance_fid=instance_fid, bid_fid=bid_fid,
                        reservation_fid=reservation_fid,
                        start=wire.utc(start_time) if start_time else None,
                        end=wire.utc(end_time) if end_time else None)]
            return wire.history_page(rows, limit, next_cursor)

    history_route('/instances/status/history', market.history.statuses,
                  wire.status_history_json)
    history_route('/instances/pricing/history', market.history.charges,
                  wire.pricing_history_json)

    @v2.get('/kubernetes/clusters')
    def kubernetes_clusters(project: str) -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            return [
                wire.kubernetes_cluster_json(market, c)
                for c in market.kubernetes_clusters.list(project)
            ]

    @v2.get('/kubernetes/clusters/{cluster_fid}')
    def kubernetes_cluster(cluster_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            return wire.kubernetes_cluster_json(
                market, market.kubernetes_clusters.get(cluster_fid))

    @v2.post('/kubernetes/clusters', status_code=201)
    def create_kubernetes_cluster(
            request: Request,
            body: _CreateKubernetesClusterBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(
                _CREATE_KUBERNETES_CLUSTER_FIELDS):
            return created(
                request, lambda: market.kubernetes_clusters.create(
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
        with market.caught_up(lock):
            market.kubernetes_clusters.delete(cluster_fid)
        return Response(status_code=204)

    @v2.get('/quotas')
    def quotas(project: str) -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            rows = market.accounts.quotas(project)
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

    @v2.get('/organizations/{organization_id}/quotas')
    def organization_quotas(
            organization_id: uuid.UUID) -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            rows = market.accounts.organization_storage_quotas(
                str(organization_id))
        return [wire.region_storage_quota_json(q) for q in rows]

    @v2.get('/mcc-image-versions')
    def mcc_image_versions(region: str) -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            regions = market.auctions.regions()
        if region not in regions:
            return []
        return [wire.mcc_image_version_json(regions)]

    @v2.get('/image-versions')
    def image_versions() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            regions = sorted({a.region for a in market.auctions.list()})
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

    @v2.get('/api-keys')
    def list_api_keys() -> List[Dict[str, Any]]:
        with market.caught_up(lock):
            return [wire.api_key_json(k) for k in market.api_keys.list()]

    @v2.post('/api-keys', status_code=201)
    def create_api_key(request: Request,
                       body: _CreateApiKeyBody) -> Dict[str, Any]:
        # Mithril answers a refused name or expiry with 400, not 422.
        with market.caught_up(lock):
            try:
                return created(
                    request,
                    lambda: market.api_keys.create(body.name, body.expires_at),
                    lambda key: {**wire.api_key_json(key),
                                 'secret': key.secret})
            except market_lib.InvalidRequest as e:
                raise fastapi.HTTPException(
                    400, '; '.join(error.msg for error in e.errors)) from e

    @v2.delete('/api-keys/{key_fid}', status_code=204)
    def revoke_api_key(key_fid: str) -> Response:
        with market.caught_up(lock):
            market.api_keys.revoke(key_fid)
        return Response(status_code=204)

    v2.include_router(reservation_router(market, lock, created))
    return v2
