"""Mithril's reservation endpoints (`/v2/reservation...`) over a `Market`'s
`reservations` backend, in the shapes of Mithril's published spec.

`reservation_router` builds them as a router that `api_routes.api_router`
includes under `/v2`, behind its authentication; each route touches the
market inside `market.caught_up(lock)` and writes JSON with `wire`. Where the
spec leaves the answer to a mode or an outcome open:
  availability  `mode=latest_end_time` answers `{latest_end_time,
                available}`, `mode=check` `{available}` (as the endpoint's
                description and Mithril's older generated client say; the
                spec's schema names only the slot list of `mode=slots`).
  terminate-instances  200 with a JSON null when every instance was
                returned, 207 `{terminated_instances}` when some could not
                be stopped, 502 when none could, 400 once the reservation
                has ended.
"""

import datetime
from typing import (Any, Callable, ContextManager, Dict, List, Literal,
                    Optional)

import fastapi
from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator import wire
from sky_mithril.emulator.market import Market, ReservationStatus

# `api_routes`' answer to a create request (it knows the late-commit fault).
Created = Callable[[Request, Callable[[], Any], Callable[[Any], Dict[str, Any]]],
                   Dict[str, Any]]


# Request bodies: the shapes only; the market checks the rest. The `_*_FIELDS`
# maps say where each body carries the market's arguments.


class _PriceSpecificationBody(BaseModel):
    offer_key: str = market_lib.STANDARD_OFFER_KEY
    max_unit_price: Optional[int] = Field(None, ge=0)


_PRICE_SPECIFICATION_FIELDS = wire.in_body(
    *_PriceSpecificationBody.model_fields, under=('price_specification',))


class _CreateReservationBody(BaseModel):
    project: str
    instance_type: str
    region: str
    start_time: datetime.datetime
    end_time: datetime.datetime
    instance_quantity: int
    name: str
    launch_specification: wire.LaunchSpecificationBody
    price_specification: Optional[_PriceSpecificationBody] = None
    notification_email: Optional[str] = None


_CREATE_RESERVATION_FIELDS = {
    **wire.in_body('project', 'instance_type', 'region', 'start_time',
                   'end_time', 'instance_quantity', 'name'),
    **wire.in_body(*wire.LaunchSpecificationBody.model_fields,
                   under=('launch_specification',)),
    **_PRICE_SPECIFICATION_FIELDS,
}


class _UpdateReservationBody(BaseModel):
    # Only these two change after creation: the rest of the launch
    # specification is fixed, so a request naming it is refused.
    model_config = ConfigDict(extra='forbid')

    paused: Optional[bool] = None
    volumes: Optional[List[str]] = None


_UPDATE_RESERVATION_FIELDS = {
    'fid': ('path', 'reservation_fid'),
    **wire.in_body(*_UpdateReservationBody.model_fields),
}


class _ExtendReservationBody(BaseModel):
    end_time: datetime.datetime
    price_specification: Optional[_PriceSpecificationBody] = None


_EXTEND_RESERVATION_FIELDS = {
    **wire.in_body('end_time'),
    **_PRICE_SPECIFICATION_FIELDS,
}


class _TerminateInstancesBody(BaseModel):
    instances: List[str] = Field(min_length=1)
    reduce_capacity: Literal[True]


# Where the availability and quote queries carry the market's arguments.
_QUERY_FIELDS = {
    field: ('query', field)
    for field in ('project', 'instance_type', 'region', 'start_time',
                  'end_time', 'quantity')
}


def reservation_router(market: Market, lock: ContextManager[Any],
                       created: Created) -> fastapi.APIRouter:
    """The reservation endpoints over `market`, each call holding `lock`
    (`market.caught_up`); `created` answers a create request."""

    router = fastapi.APIRouter()

    def price_specification(
            body: Optional[_PriceSpecificationBody]) -> Dict[str, Any]:
        """The market's pricing arguments from a request's
        `price_specification`."""
        if body is None:
            return {}
        return {'offer_key': body.offer_key,
                'max_unit_price': body.max_unit_price}

    @router.get('/reservation/instance-types')
    def instance_types() -> List[Dict[str, Any]]:
        """Each type as InstanceTypeModel, its `hourly_price` the lowest
        floor among its auctions (as in /v2/instance-types)."""
        with market.caught_up(lock):
            types = market.reservations.instance_types()
            floors = market.auctions.lowest_floors()
        return [wire.instance_type_json(t, floors[t.fid]) for t in types]

    @router.get('/reservation/quote')
    def quote(project: str, instance_type: str, region: str,
              start_time: datetime.datetime, end_time: datetime.datetime,
              quantity: int = Query(ge=1)) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(_QUERY_FIELDS):
            offers = market.reservations.quote(
                project=project, instance_type=instance_type, region=region,
                start_time=wire.utc(start_time), end_time=wire.utc(end_time),
                quantity=quantity)
        return {'offers': [wire.reservation_offer_json(o) for o in offers]}

    @router.get('/reservation/availability')
    def availability(
        project: str,
        instance_type: str,
        region: str,
        mode: Literal['slots', 'latest_end_time',
                      'check'] = 'latest_end_time',
        earliest_start_time: Optional[datetime.datetime] = None,
        latest_end_time: Optional[datetime.datetime] = None,
        start_time: Optional[datetime.datetime] = None,
        end_time: Optional[datetime.datetime] = None,
        quantity: Optional[int] = Query(None, gt=0)
    ) -> Any:
        required: Dict[str, Dict[str, Any]] = {
            'latest_end_time': {'start_time': start_time,
                                'quantity': quantity},
            'slots': {'earliest_start_time': earliest_start_time,
                      'latest_end_time': latest_end_time},
            'check': {'start_time': start_time, 'end_time': end_time,
                      'quantity': quantity},
        }
        missing = [name for name, value in required[mode].items()
                   if value is None]
        if missing:
            raise wire.UnprocessableRequest([
                wire.ErrorDetail(('query', name),
                                 f'{name} is required with mode={mode}',
                                 'missing') for name in missing
            ])
        where = {'project': project, 'instance_type': instance_type,
                 'region': region}
        with market.caught_up(lock), wire.fields_at(_QUERY_FIELDS):
            if mode == 'slots':
                assert earliest_start_time and latest_end_time
                return [
                    wire.availability_slot_json(slot)
                    for slot in market.reservations.slots(
                        **where,
                        earliest_start_time=wire.utc(earliest_start_time),
                        latest_end_time=wire.utc(latest_end_time),
                        quantity=quantity)
                ]
            assert start_time and quantity
            if mode == 'check':
                assert end_time
                return {'available': market.reservations.check(
                    **where, start_time=wire.utc(start_time),
                    end_time=wire.utc(end_time), quantity=quantity)}
            latest, available = market.reservations.latest_end_time(
                **where, start_time=wire.utc(start_time), quantity=quantity)
            return {'latest_end_time': wire.iso(latest),
                    'available': available}

    @router.post('/reservation', status_code=201)
    def create_reservation(request: Request,
                           body: _CreateReservationBody) -> Dict[str, Any]:
        spec = body.launch_specification

        def create() -> market_lib.Reservation:
            return market.reservations.create(
                project=body.project,
                instance_type=body.instance_type,
                region=body.region,
                start_time=wire.utc(body.start_time),
                end_time=wire.utc(body.end_time),
                instance_quantity=body.instance_quantity,
                name=body.name,
                ssh_keys=spec.ssh_keys,
                volumes=spec.volumes,
                startup_script=spec.startup_script,
                kubernetes_cluster=spec.kubernetes_cluster,
                image_version=spec.image_version,
                memory_gb=spec.memory_gb,
                **price_specification(body.price_specification))

        with market.caught_up(lock), wire.fields_at(
                _CREATE_RESERVATION_FIELDS):
            return created(request, create, wire.reservation_json)

    @router.get('/reservation')
    def list_reservations(
            project: str,
            instance_type: Optional[str] = None,
            region: Optional[str] = None,
            status: Optional[ReservationStatus] = None,
            sort_by: Optional[Literal['created_at', 'status']] = None,
            sort_dir: Optional[Literal['asc', 'desc']] = None,
            limit: Optional[int] = Query(None, ge=1, le=100),
            next_cursor: Optional[str] = None) -> Dict[str, Any]:
        with market.caught_up(lock):
            reservations = market.reservations.list(
                project, instance_type=instance_type, region=region,
                status=status)
            rows = [wire.reservation_json(r) for r in reservations]
            orders = {r.fid: r.order for r in reservations}
        return wire.page(rows, orders, sort_field=sort_by or 'created_at',
                         sort_dir=sort_dir or 'asc', limit=limit,
                         cursor=next_cursor)

    @router.patch('/reservation/{reservation_fid}')
    def update_reservation(reservation_fid: str,
                           body: _UpdateReservationBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(
                _UPDATE_RESERVATION_FIELDS):
            return wire.reservation_json(
                market.reservations.update(reservation_fid,
                                           paused=body.paused,
                                           volumes=body.volumes))

    @router.get('/reservation/{reservation_fid}/extension-availability')
    def extension_availability(reservation_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            latest, available = market.reservations.extension_availability(
                reservation_fid)
        return {'latest_extension_time': wire.iso(latest),
                'available': available}

    @router.post('/reservation/{reservation_fid}/extend')
    def extend_reservation(reservation_fid: str,
                           body: _ExtendReservationBody) -> Dict[str, Any]:
        with market.caught_up(lock), wire.fields_at(
                _EXTEND_RESERVATION_FIELDS):
            return wire.reservation_json(
                market.reservations.extend(
                    reservation_fid, wire.utc(body.end_time),
                    **price_specification(body.price_specification)))

    @router.post('/reservation/{reservation_fid}/terminate-instances')
    def terminate_instances(reservation_fid: str,
                            body: _TerminateInstancesBody) -> Any:
        if len(set(body.instances)) != len(body.instances):
            raise wire.validation_error(('body', 'instances'),
                                        'instances must be unique')
        with market.caught_up(lock):
            try:
                returned, kept = market.reservations.return_instances(
                    reservation_fid, body.instances)
            except market_lib.InvalidState as e:
                raise fastapi.HTTPException(400, str(e)) from e
        if not returned:
            raise fastapi.HTTPException(
                502, 'No instance could be stopped: '
                f'{", ".join(i.fid for i in kept)} are restarting')
        if kept:
            return JSONResponse(
                {'terminated_instances': [i.fid for i in returned]},
                status_code=207)
        return None

    @router.get('/reservation/{reservation_fid}/history')
    def reservation_history(reservation_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            return wire.reservation_history_json(
                market.reservations.get(reservation_fid))

    @router.get('/reservation/{reservation_fid}/usage')
    def reservation_usage(reservation_fid: str) -> Dict[str, Any]:
        with market.caught_up(lock):
            return wire.reservation_usage_json(
                market.reservations.get(reservation_fid),
                market.reservations.usage(reservation_fid))

    return router
