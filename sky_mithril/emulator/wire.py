"""The emulator's wire format: market objects as Mithril's API JSON, and back.

Wire conventions, as in Mithril's API: bid prices are "$x.yy" strings, the
pricing endpoints integer cents, timestamps ISO 8601 in UTC, create 201,
delete 204, validation errors 422 `{"detail": [{"loc", "msg", "type"}]}`
(the market names the refused field; the route that parsed the request says
where it carried it, with `fields_at`),
unknown fids 404 `{"detail": "..."}`, a clash with the current state (deleting
a volume a live bid lists) 409 `{"detail": "..."}`, an action the entity's
state rules out for a reason 422 `{"detail": "...", "reason": "..."}`, one
Mithril does not offer for that kind of entity (pausing a spot instance) 501
`{"detail": "..."}`. Pageable lists (bids,
instances) return `{"data": [...], "next_cursor": str | null}`, 100 per page
unless `limit` says otherwise, sorted by `created_at` ascending unless
`sort_by`/`sort_dir` say otherwise; the cursor is opaque (the sort key of the
page's last item). Other lists (SSH keys, volumes, ...) are bare JSON lists.
List query parameters (`bid_fid_in`, `status_in`, `order_type_in`, ...) are
accepted repeated (`?status_in=A&status_in=B`, as the OpenAPI client sends
them), comma-separated (`?status_in=A,B`, as its docs describe) and in the
`status_in[]=A` form. An instance (or a Kubernetes cluster's control node)
whose SSH port is not 22 (a real SSH host of the emulator) also carries
`ssh_port`, and one whose SSH user is not `ubuntu` carries `ssh_user`; the
real API sends neither.
"""

import base64
import binascii
import contextlib
import dataclasses
import datetime
import json
import uuid
from decimal import Decimal
from typing import (Any, Dict, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import pydantic
from fastapi import Request

from sky_mithril import money
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.market import Bid, Instance, KubernetesCluster, Market

DEFAULT_PAGE_SIZE = 100
# Durations as FastAPI writes them: ISO 8601 ("PT6H").
_DURATION = pydantic.TypeAdapter(datetime.timedelta)

# Where a request carried a value, as FastAPI writes it: ('body', 'name'),
# ('query', 'limit'), ('path', 'bid_fid').
Loc = Tuple[Union[str, int], ...]


def iso(when: Optional[datetime.datetime]) -> Optional[str]:
    return when.isoformat() if when is not None else None


def dollars(amount: Optional[Decimal]) -> Optional[str]:
    return money.format_dollars(amount) if amount is not None else None


def cents(amount: Optional[Decimal]) -> Optional[int]:
    return money.dollars_to_cents(amount) if amount is not None else None


def utc(when: datetime.datetime) -> datetime.datetime:
    """Reads naive query times as UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def instance_type_json(instance_type: market_lib.InstanceType,
                       spot_floor: Optional[Decimal] = None) -> Dict[str, Any]:
    """An instance type as Mithril's InstanceTypeModel. Its `hourly_price`
    (required, a number of dollars; Mithril's SDK bills CPU VMs by it) is a
    fixed-price (CPU) type's price, else `spot_floor`, the lowest floor among
    the type's auctions."""
    data: Dict[str, Any] = {
        'fid': instance_type.fid,
        'name': instance_type.name,
        'num_cpus': instance_type.num_cpus,
        'cpu_type': instance_type.cpu_type,
        'ram_gb': instance_type.ram_gb,
        'num_gpus': instance_type.num_gpus,
        'gpu_type': instance_type.gpu_type,
        'gpu_memory_gb': instance_type.gpu_memory_gb,
        'gpu_socket': instance_type.gpu_socket,
        'local_storage_gb': instance_type.local_storage_gb,
        'ib_count': instance_type.ib_count,
        'bridge_count': instance_type.bridge_count,
        'network_type': instance_type.network_type,
    }
    hourly_price = (instance_type.hourly_price
                    if instance_type.hourly_price is not None else spot_floor)
    if hourly_price is not None:
        data['hourly_price'] = float(hourly_price)
    return data


def region_json(region: str, region_id: str) -> Dict[str, Any]:
    """A region where CPU VMs run, as Mithril's RegionDTO."""
    return {
        'id': region_id,
        'name': region,
        'block_storage_enabled': True,
        'fileshare_storage_enabled': True,
        'k8s_enabled': True,
        'max_volume_size_tb': market_lib.MAX_VOLUME_GB // 1024,
    }


def launch_specification_json(
        spec: market_lib.LaunchSpecification) -> Dict[str, Any]:
    """A bid's or reservation's launch specification as Mithril's
    LaunchSpecificationModel."""
    return {
        'volumes': list(spec.volumes),
        'ssh_keys': list(spec.ssh_keys),
        'startup_script': spec.startup_script,
        'kubernetes_cluster': spec.kubernetes_cluster,
        'image_version': spec.image_version,
        'memory_gb': spec.memory_gb,
    }


def bid_json(bid: Bid) -> Dict[str, Any]:
    return {
        'fid': bid.fid,
        'name': bid.name,
        'project': bid.project,
        'created_by': bid.created_by,
        'created_at': iso(bid.created_at),
        'limit_price': dollars(bid.limit_price),
        'instance_quantity': bid.instance_quantity,
        'instance_type': bid.instance_type.fid,
        'instances': [instance.fid for instance in bid.instances],
        'launch_specification': launch_specification_json(
            bid.launch_specification),
        'status': bid.status.value,
        'deactivated_at': iso(bid.deactivated_at),
        'region': bid.region,
    }


def _with_ssh_extras(data: Dict[str, Any],
                     address: Optional[HostAddress]) -> Dict[str, Any]:
    """Adds `ssh_port` / `ssh_user` where the emulator's host differs from Mithril's."""
    if address is not None and address.ssh_port != 22:
        data['ssh_port'] = address.ssh_port
    if address is not None and address.ssh_user != 'ubuntu':
        data['ssh_user'] = address.ssh_user
    return data


def instance_json(instance: Instance) -> Dict[str, Any]:
    address = instance.address
    data = {
        'fid': instance.fid,
        'name': instance.name,
        'project': instance.project,
        'created_at': iso(instance.created_at),
        'created_by': instance.created_by,
        'instance_type': instance.instance_type.fid,
        'status': instance.status.value,
        'region': instance.region,
        'bid': instance.bid_fid,
        'reservation': instance.reservation_fid,
        'ssh_destination': address.ssh_destination if address else None,
        'private_ip': address.private_ip if address else None,
    }
    return _with_ssh_extras(data, address)


def status_history_json(
        instance: Instance,
        changes: Sequence[market_lib.StatusChange]) -> Dict[str, Any]:
    """An instance's status changes as Mithril's InstanceStatusHistory."""
    return {
        'instance_fid': instance.fid,
        'events': [{'timestamp': iso(c.timestamp), 'status': c.status.value}
                   for c in changes],
        'bid_fid': instance.bid_fid,
        'reservation_fid': instance.reservation_fid,
    }


def pricing_history_json(
        instance: Instance,
        charges: Sequence[market_lib.Charge]) -> Dict[str, Any]:
    """An instance's charges as Mithril's InstancePricingHistory: price per
    hour in cents, from `start_time` until `end_time` (null while it bills)."""
    return {
        'instance_fid': instance.fid,
        'events': [{'price_cents': cents(c.price),
                    'start_time': iso(c.start),
                    'end_time': iso(c.end)} for c in charges],
        'bid_fid': instance.bid_fid,
        'reservation_fid': instance.reservation_fid,
    }


def kubernetes_cluster_json(market: Market,
                            cluster: KubernetesCluster) -> Dict[str, Any]:
    """A cluster as Mithril's KubernetesClusterModel."""
    data = {
        'fid': cluster.fid,
        'name': cluster.name,
        'project': cluster.project,
        'region': cluster.region,
        'created_at': iso(cluster.created_at),
        'status': cluster.status.value,
        'k8s_version': cluster.k8s_version,
        'kube_host': cluster.kube_host,
        'ssh_keys': list(cluster.ssh_keys),
        'instances': [
            i.fid for i in market.kubernetes_clusters.instances(cluster)
        ],
        'join_command': cluster.join_command,
        'deleted_at': iso(cluster.deleted_at),
        'user_fid': market.accounts.user.fid,
    }
    return _with_ssh_extras(data, cluster.address)


def volume_json(market: Market, volume: market_lib.Volume) -> Dict[str, Any]:
    """A volume as Mithril's VolumeModel: `bids` and `reservations` are the
    live ones listing it, `attachments` maps the instances of those (and of
    CPU VMs listing it) to where each VM sees it. A deleted
    volume is gone from the market, so `deleted_at` (which the model
    requires) is always null."""
    return {
        'fid': volume.fid,
        'name': volume.name,
        'region': volume.region,
        'created_at': iso(volume.created_at),
        'deleted_at': None,
        'capacity_gb': volume.capacity_gb,
        'project': volume.project,
        'interface': volume.interface.value,
        'bids': [bid.fid for bid in market.volumes.bids_listing(volume)],
        'reservations': [
            r.fid for r in market.volumes.reservations_listing(volume)
        ],
        'attachments': market.volumes.attachments(volume),
    }


def teammate_json(user: market_lib.User,
                  projects: Sequence[market_lib.Project]) -> Dict[str, Any]:
    """A user as Mithril's TeammateResponse; `projects`: those it shares."""
    return {
        'id': user.id,
        'fid': user.fid,
        'user_name': user.user_name,
        'email': user.email,
        'organization_role': user.organization_role,
        'project_ids': [project.fid for project in projects],
        'deactivated_at': None,
    }


def region_storage_quota_json(
        quota: market_lib.RegionStorageQuota) -> Dict[str, Any]:
    """One region's storage as Mithril's OrganizationStorageQuotaModel."""
    return {
        'product_type': 'storage_gib',
        'cluster_id': quota.region_id,
        'region': quota.region,
        'granted': quota.granted,
        'used': quota.used,
        'remaining': quota.remaining,
        'limit_source': 'baseline',
        'units': 'GiB',
        'usage_by_project': [{
            'project_id': project_id,
            'used': used
        } for project_id, used in quota.used_by_project.items()],
    }


def mcc_image_version_json(regions: Sequence[str]) -> Dict[str, Any]:
    """The emulator's one MCC (CPU) image as Mithril's ImageVersionModel."""
    return {
        'image_version_fid': market_lib.MCC_IMAGE_VERSION_FID,
        'image_version_name': 'Ubuntu 22.04 MCC (emulated)',
        'os': 'ubuntu-22.04',
        'kernel': '5.15',
        'stable': True,
        'supported_regions': list(regions),
        'deactivated_at': None,
        'nvidia_driver': None,
        'cuda': None,
    }


def lifecycle_script_json(script: market_lib.LifecycleScript,
                          base_url: str) -> Dict[str, Any]:
    """A script as Mithril's LifecycleScriptModel; its content is served at
    `content_url`, under the emulator's `base_url`."""
    return {
        'fid': script.fid,
        'name': script.name,
        'description': script.description,
        'content_url': (f'{base_url.rstrip("/")}/v2/lifecycle-scripts/'
                        f'{script.fid}/content'),
        'project': script.project,
        'created_at': iso(script.created_at),
        'created_by': script.created_by,
        'last_modified_at': iso(script.last_modified_at),
        'last_modified_by': script.last_modified_by,
        'scope': script.scope.value,
    }


def ssh_key_json(key: market_lib.SshKey) -> Dict[str, Any]:
    return {
        'fid': key.fid,
        'name': key.name,
        'project': key.project,
        'public_key': key.public_key,
        'created_at': iso(key.created_at),
        'required': key.required,
    }


def api_key_json(key: market_lib.ApiKey) -> Dict[str, Any]:
    """A key as Mithril's ApiKeyModel (the secret only in the create answer)."""
    return {
        'fid': key.fid,
        'name': key.name,
        'created_at': iso(key.created_at),
        'expires_at': iso(key.expires_at),
        'deactivated_at': iso(key.deactivated_at),
        'snippet': key.snippet,
    }


def auction_json(market: Market, auction: market_lib.Auction) -> Dict[str, Any]:
    quote = market.auctions.current_prices(auction.instance_type.fid,
                                           auction.region)
    return {
        'fid': auction.fid,
        'instance_type': auction.instance_type.fid,
        'region': auction.region,
        'capacity': quote.free_capacity,
        'last_instance_price': dollars(auction.last_instance_price or
                                       auction.spot_price),
        'lowest_allocated_price': dollars(quote.lowest_allocated_limit),
        'adjustable_memory': False,
        'default_image_version': market_lib.IMAGE_VERSION_FID,
    }


def reservation_json(reservation: market_lib.Reservation) -> Dict[str, Any]:
    """A reservation as Mithril's ReservationModel: `total_price` is what it
    was charged (every grant in full), `unit_price` its price per
    instance-hour."""
    return {
        'fid': reservation.fid,
        'name': reservation.name,
        'project': reservation.project,
        'created_by': reservation.created_by,
        'created_at': iso(reservation.created_at),
        'deactivated_at': iso(reservation.deactivated_at),
        'instance_quantity': reservation.instance_quantity,
        'instance_type': reservation.instance_type.fid,
        'region': reservation.region,
        'instances': [instance.fid for instance in reservation.instances],
        'launch_specification': launch_specification_json(
            reservation.launch_specification),
        'status': reservation.status.value,
        'start_time': iso(reservation.start_time),
        'end_time': iso(reservation.end_time),
        'total_price': dollars(reservation.charged),
        'unit_price': dollars(reservation.terms.unit_price),
    }


def reservation_offer_json(
        offer: market_lib.ReservationOffer) -> Dict[str, Any]:
    """An offer as Mithril's ReservationOffer: rates per instance-hour
    (`return_buyback_price` the return credit, `pause_buyback_price` the
    pause credit) and their totals over the offer's instance-hours."""
    terms, instance_hours = offer.terms, offer.instance_hours
    return {
        'key': offer.key,
        'display_name': offer.display_name,
        'unit_price': dollars(terms.unit_price),
        'return_buyback_price': dollars(terms.return_credit),
        'pause_buyback_price': dollars(terms.pause_credit),
        'total_price': dollars(terms.unit_price * instance_hours),
        'total_etbp_value': dollars(terms.return_credit * instance_hours),
        'total_fubp_value': dollars(terms.pause_credit * instance_hours),
        'option_premium': dollars(offer.option_premium * instance_hours),
    }


def availability_slot_json(
        slot: market_lib.AvailabilitySlot) -> Dict[str, Any]:
    """A slot as Mithril's AvailabilitySlotModel."""
    return {'start_time': iso(slot.start), 'end_time': iso(slot.end),
            'quantity': slot.quantity}


def reservation_history_json(
        reservation: market_lib.Reservation) -> Dict[str, Any]:
    """A reservation's events as Mithril's ReservationHistoryResponse; the
    terms (in cents per instance-hour) on Terms Set and Terms Changed."""

    def terms_cents(terms: Optional[market_lib.ReservationTerms],
                    rate: str) -> Optional[int]:
        return cents(getattr(terms, rate)) if terms is not None else None

    return {
        'reservation_fid': reservation.fid,
        'events': [{
            'timestamp': iso(e.timestamp),
            'event_type': e.event_type.value,
            'user_id': e.user_id,
            'unit_price_cents': terms_cents(e.terms, 'unit_price'),
            'pause_credit_cents': terms_cents(e.terms, 'pause_credit'),
            'return_credit_cents': terms_cents(e.terms, 'return_credit'),
        } for e in reservation.events],
    }


# The reservation events its usage reports, under the names it gives them.
_USAGE_EVENT_NAMES = {
    market_lib.ReservationEventType.ACTIVE: 'Started',
    market_lib.ReservationEventType.PAUSED: 'Paused',
    market_lib.ReservationEventType.TERMS_CHANGED: 'Extended',
}
# The instance statuses that start or stop what a reserved instance uses.
_USAGE_STATUSES = (market_lib.InstanceStatus.RUNNING,
                   market_lib.InstanceStatus.PAUSED,
                   market_lib.InstanceStatus.TERMINATED)


def reservation_usage_json(reservation: market_lib.Reservation,
                           usage: market_lib.ReservationUsage
                          ) -> Dict[str, Any]:
    """A reservation's usage as Mithril's ReservationUsageResponse: money
    in cents, instance-hours as ISO 8601 durations; a grant per purchase
    (creation, extensions) with its rates in cents per instance-hour
    (`price_credit` the pause credit); its instances entering
    running, paused or terminated; its start, pauses and extensions."""

    def duration(span: datetime.timedelta) -> str:
        return _DURATION.dump_python(span, mode='json')

    return {
        'reservation': {
            'fid': reservation.fid,
            'order_name': reservation.name,
            'start_date': iso(reservation.start_time),
            'end_date': iso(reservation.end_time),
            'status': reservation.status.value,
            'committed_cost_cents': cents(usage.charged),
        },
        'summary': {
            'committed_cost_cents': cents(usage.charged),
            'flex_use_credits_cents': cents(usage.pause_credit),
            'early_termination_credits_cents': cents(usage.return_credit),
            'net_cost_cents': cents(usage.net_cost),
            'reserved_instance_hours': duration(usage.reserved),
            'active_instance_hours': duration(usage.active),
            'idle_instance_hours': duration(usage.idle),
            'as_of': iso(usage.as_of),
        },
        'grants': [{
            'fid': grant.fid,
            'starts_at': iso(grant.start),
            'ends_at': iso(grant.end),
            'quantity': grant.quantity,
            'unit_price': cents(grant.terms.unit_price),
            'price_credit': cents(grant.terms.pause_credit),
            'return_credit': cents(grant.terms.return_credit),
        } for grant in reservation.grants],
        'pricing_events': [{
            'id': str(uuid.uuid5(uuid.NAMESPACE_URL,
                                 f'{instance.fid}/{index}')),
            'occurred_at': iso(change.timestamp),
            'instance_fid': instance.fid,
            'instance_name': instance.name,
            'instance_status': change.status.value,
        } for instance in reservation.all_instances
                           for index, change in enumerate(
                               instance.status_changes)
                           if change.status in _USAGE_STATUSES],
        'reservation_events': [{
            'occurred_at': iso(e.timestamp),
            'event_type': _USAGE_EVENT_NAMES[e.event_type],
            'reservation_name': reservation.name,
        } for e in reservation.events if e.event_type in _USAGE_EVENT_NAMES],
    }


@dataclasses.dataclass(frozen=True)
class ErrorDetail:
    """One entry of a 422 body: where (`loc`), what, which kind."""

    loc: Loc
    msg: str
    type: str = 'value_error'


class UnprocessableRequest(Exception):
    """A request answered 422 `{"detail": [ErrorDetail, ...]}`."""

    def __init__(self, errors: Sequence[ErrorDetail]) -> None:
        super().__init__('; '.join(f'{e.loc}: {e.msg}' for e in errors))
        self.errors = list(errors)


def validation_error(loc: Loc, msg: str) -> UnprocessableRequest:
    """A 422 for one field; `loc` as in FastAPI's own, e.g. ('query', 'limit')."""
    return UnprocessableRequest([ErrorDetail(loc, msg)])


class LaunchSpecificationBody(pydantic.BaseModel):
    """The launch specification of a bid's or a reservation's create body."""

    ssh_keys: List[str]
    volumes: List[str]
    startup_script: Optional[str] = None
    kubernetes_cluster: Optional[str] = None
    image_version: Optional[str] = None
    memory_gb: Optional[int] = None


def in_body(*fields: str, under: Loc = ()) -> Dict[str, Loc]:
    """Market arguments carried as same-named fields of the JSON body (of its
    object at `under`), for `fields_at`."""
    return {field: ('body', *under, field) for field in fields}


@contextlib.contextmanager
def fields_at(locations: Mapping[str, Loc]) -> Iterator[None]:
    """Turns the market's InvalidRequest into a 422 that says where the
    request carried each refused field: `locations[field]`, then the index of
    the refused entry of a list."""
    try:
        yield
    except market_lib.InvalidRequest as e:
        raise UnprocessableRequest([
            ErrorDetail(
                locations[error.field] +
                (() if error.index is None else (error.index,)), error.msg,
                error.type) for error in e.errors
        ]) from e


def list_param(request: Request, name: str) -> Optional[List[str]]:
    """A list query parameter: repeated, comma-separated, or `name[]`; None if absent."""
    raw = (request.query_params.getlist(name) +
           request.query_params.getlist(f'{name}[]'))
    if not raw:
        return None
    return [item.strip() for value in raw for item in value.split(',')
            if item.strip()]


def page(rows: Sequence[Dict[str, Any]], orders: Mapping[str, int], *,
         sort_field: str, sort_dir: str, limit: Optional[int],
         cursor: Optional[str]) -> Dict[str, Any]:
    """One page of JSON `rows` after `cursor`, sorted by `sort_field`; equal
    values keep the market's order (`orders`, by fid), so pages never overlap."""

    def key(row: Dict[str, Any]) -> Tuple[Any, ...]:
        return (row[sort_field], orders[row['fid']])

    descending = sort_dir == 'desc'
    ordered = sorted(rows, key=key, reverse=descending)
    if cursor is not None:
        after = _decode_cursor(cursor)
        ordered = [
            row for row in ordered
            if (key(row) < after if descending else key(row) > after)
        ]
    size = limit or DEFAULT_PAGE_SIZE
    page_rows = ordered[:size]
    next_cursor = (_encode_cursor(key(page_rows[-1]))
                   if len(ordered) > size else None)
    return {'data': page_rows, 'next_cursor': next_cursor}


def history_page(rows: Sequence[Tuple[int, Dict[str, Any]]],
                 limit: Optional[int],
                 cursor: Optional[str]) -> Dict[str, Any]:
    """One page of the instance history endpoints: `rows` are (the
    instance's market order, its JSON), in that order; `{"instances": [...],
    "next_cursor": ...}`."""
    after = None
    if cursor is not None:
        key = _decode_cursor(cursor)
        if len(key) != 1 or not isinstance(key[0], int):
            raise validation_error(('query', 'next_cursor'),
                                   'next_cursor is not a cursor this server '
                                   'issued')
        after = key[0]
    left = [(order, row) for order, row in rows
            if after is None or order > after]
    size = limit or DEFAULT_PAGE_SIZE
    return {'instances': [row for _, row in left[:size]],
            'next_cursor': (_encode_cursor((left[size - 1][0],))
                            if len(left) > size else None)}


def _encode_cursor(key: Tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_cursor(cursor: str) -> Tuple[Any, ...]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError) as e:
        raise validation_error(('query', 'next_cursor'),
                               'next_cursor is not a cursor this server issued') from e
    if not isinstance(key, list):
        raise validation_error(('query', 'next_cursor'),
                               'next_cursor is not a cursor this server issued')
    return tuple(key)
