"""Typed client for Mithril's v2 REST API, with retries that never duplicate a bid.

Retry rules:

* GET, PATCH and DELETE are idempotent: they are retried on 429, 500, 502,
  503, 504, connection failures and timeouts, with exponential backoff and
  full jitter, waiting at least as long as the server's `Retry-After`, until
  the time spent waiting would exceed `max_retry_seconds`.
* POST (create a bid, an SSH key, a volume or an API key) is retried only when the
  server provably did not apply it: 429, or the connection was never
  established. After any other failure the request may have been applied, so
  it raises `AmbiguousResponseError` and the caller reconciles (lists bids or
  volumes by name).
"""

import email.utils
import enum
import ipaddress
import logging
import random
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import (Any, Callable, Dict, Iterator, List, Optional, Protocol,
                    Tuple, Type, TypeVar)
from urllib.parse import quote, urlsplit

import pydantic
import requests
from urllib3.exceptions import ConnectTimeoutError

from sky_mithril import __version__
from sky_mithril.api import errors
from sky_mithril.api.errors import redact
from sky_mithril.api.models import (ApiKey, Auction, AvailabilitySlot, Bid,
                                    BidHistory, BidStatus, CpuInstanceType,
                                    CreateApiKeyRequest, CreateBidRequest,
                                    CreateCpuInstanceRequest,
                                    CreateReservationRequest,
                                    CreateVolumeRequest, CreatedApiKey,
                                    CurrentPrice, ExtensionAvailability,
                                    Instance, InstancePricingHistory,
                                    InstanceState, InstanceStatus,
                                    InstanceStatusHistory, InstanceType,
                                    KubernetesCluster, Me, PriceHistory,
                                    PriceSpecification, Project, Region,
                                    Reservation,
                                    ReservationHistory, ReservationQuote,
                                    ReservationUsage, ReturnedInstances, SshKey,
                                    UpdateBidRequest, Volume, VolumeInterface)

# Under SkyPilot's `sky` logger, so SKYPILOT_DEBUG=1 shows the HTTP lines.
logger = logging.getLogger('sky.sky_mithril.api')

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({'GET', 'PATCH', 'DELETE'})
MAX_REASON_CHARS = 200
# The most items a page of a pageable list holds (its `limit` parameter's maximum).
MAX_PAGE_SIZE = 100

DEFAULT_API_URL = 'https://api.mithril.ai'

ModelT = TypeVar('ModelT', bound=pydantic.BaseModel)


class ApiAccess(Protocol):
    """What a client needs of resolved credentials: the key and the API URL."""

    api_key: str
    api_url: str


def _is_loopback(host: Optional[str]) -> bool:
    """Whether `host` is this machine's loopback: 127.0.0.0/8, ::1 or localhost."""
    if not host:
        return False
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_safe_api_url(api_url: str) -> None:
    """Refuses an API URL the key must not be sent to: anything but https,
    except plain http to loopback, which never leaves this machine."""
    parts = urlsplit(api_url)
    if parts.scheme == 'https' and parts.hostname:
        return
    if parts.scheme == 'http' and _is_loopback(parts.hostname):
        return
    raise errors.ConnectionFailedError(
        f'The Mithril API key is not sent to {api_url}: the API URL must use '
        'https (plain http only to this machine\'s loopback: 127.0.0.0/8, '
        '::1, localhost). Check MITHRIL_API_URL or the api_url of your '
        'Mithril profile.', retryable=False)


class _TransportFailure(enum.Enum):
    """What a requests exception tells about whether the server saw the request."""

    UNREACHABLE = enum.auto()  # never connected: safe to repeat any request
    TIMED_OUT = enum.auto()  # sent, no answer in time: may have been applied
    DROPPED = enum.auto()  # connection broke mid-exchange: may have been applied
    UNUSABLE = enum.auto()  # bad URL or TLS failure: repeating cannot help


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps (causes, contexts, urllib3 reasons, args)."""
    seen = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__,
                  getattr(current, 'reason', None), *current.args]
        pending.extend(item for item in linked
                       if isinstance(item, BaseException))


def _classify(exc: requests.RequestException) -> _TransportFailure:
    """What a request that got no HTTP answer tells about the server having
    acted on it. A TLS error other than a refused certificate may come while
    the answer is read, after the server had the whole request: DROPPED."""
    if isinstance(exc, (requests.exceptions.InvalidURL,
                        requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return _TransportFailure.UNUSABLE
    if isinstance(exc, requests.exceptions.SSLError):
        refused_certificate = any(
            isinstance(link, ssl.SSLCertVerificationError)
            for link in _exception_chain(exc))
        return (_TransportFailure.UNUSABLE if refused_certificate else
                _TransportFailure.DROPPED)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or any(
            isinstance(link, ConnectTimeoutError)
            for link in _exception_chain(exc)):
        # urllib3's NewConnectionError (refused, DNS failure) is a ConnectTimeoutError.
        return _TransportFailure.UNREACHABLE
    if isinstance(exc, requests.exceptions.Timeout):
        return _TransportFailure.TIMED_OUT
    return _TransportFailure.DROPPED


def _root_reason(exc: BaseException) -> str:
    """The innermost wrapped error, as text: "[Errno 111] Connection refused"."""
    *_, innermost = _exception_chain(exc)
    text = str(innermost) or type(innermost).__name__
    return ' '.join(text.split())[:MAX_REASON_CHARS]


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _iso(value: Optional[datetime]) -> Optional[str]:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(
        tzinfo=timezone.utc)).isoformat()


def _fid(value: str) -> str:
    """A fid as one URL path segment."""
    return quote(value, safe='')


def _page_limit(size: Optional[int]) -> Optional[int]:
    """A page size as the `limit` parameter: at most MAX_PAGE_SIZE."""
    return None if size is None else min(size, MAX_PAGE_SIZE)


def _drop_none(params: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


class _BearerAuth(requests.auth.AuthBase):
    """Adds the bearer token; also stops requests from applying ~/.netrc credentials."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers['Authorization'] = f'Bearer {self._api_key}'
        return request

    def __repr__(self) -> str:
        return '_BearerAuth(<redacted>)'


class MithrilClient:
    """Mithril v2 API client. See the module docstring for the retry rules.

    The key is sent only to an https API URL, or over plain http to this
    machine's loopback; any other URL is refused before a request.

    `retry_refused=False` (the interactive commands) fails at once when
    nothing accepts connections at the API URL (connection refused: a
    stopped emulator, a wrong port), instead of retrying it for
    `max_retry_seconds` in silence.

    `sleep` and `rng` are injectable so tests run without waiting.
    `request_count` counts HTTP attempts made (retries included) and
    `retry_count` the retries among them.
    """

    def __init__(self,
                 api_key: str,
                 api_url: str = DEFAULT_API_URL,
                 *,
                 timeout: float = 30.0,
                 max_retry_seconds: float = 60.0,
                 retry_refused: bool = True,
                 session: Optional[requests.Session] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Optional[random.Random] = None) -> None:
        api_key = (api_key or '').strip()
        if not api_key or any(char.isspace() or not char.isprintable()
                              for char in api_key):
            raise errors.AuthenticationError(
                'The Mithril API key is empty or contains spaces or control '
                f'characters. {errors.SETUP_HINT}')
        _require_safe_api_url(api_url)
        self._api_key = api_key
        self.api_url = api_url.rstrip('/')
        self._timeout = timeout
        self._max_retry_seconds = max_retry_seconds
        self._retry_refused = retry_refused
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._auth = _BearerAuth(api_key)
        self._headers = {
            'Accept': 'application/json',
            'User-Agent': f'sky-mithril/{__version__}',
        }
        self._counter_lock = threading.Lock()
        self.request_count = 0
        self.retry_count = 0
        # The last answer's `Date` and the local monotonic time it came at.
        self._server_date: Optional[Tuple[datetime, float]] = None

    @classmethod
    def from_credentials(cls, credentials: ApiAccess,
                         **kwargs: Any) -> 'MithrilClient':
        """A client for resolved credentials (key and API URL)."""
        return cls(credentials.api_key, credentials.api_url, **kwargs)

    def __repr__(self) -> str:
        return f'MithrilClient(api_url={self.api_url!r})'

    def close(self) -> None:
        """Releases pooled connections; a session passed in stays open for its owner."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> 'MithrilClient':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Account and catalog.

    def me(self) -> Me:
        """The user the API key belongs to; the cheapest way to check a key."""
        return self._get_one('/v2/me', Me)

    def list_projects(self) -> List[Project]:
        """Projects the user belongs to."""
        return self._get_list('/v2/projects', Project)

    def list_instance_types(self) -> List[InstanceType]:
        """All instance types (the same name may appear under several fids)."""
        return self._get_list('/v2/instance-types', InstanceType)

    def list_spot_availability(self) -> List[Auction]:
        """One row per (instance type, region) spot auction."""
        return self._get_list('/v2/spot/availability', Auction)

    def get_current_price(self,
                          instance_type: str,
                          region: Optional[str] = None,
                          instance_quantity: int = 1) -> CurrentPrice:
        """Current prices for an instance type fid (optionally in one region)."""
        params = _drop_none({'instance_type': instance_type, 'region': region,
                             'instance_quantity': instance_quantity})
        return self._get_one('/v2/pricing/current', CurrentPrice, params)

    def get_price_history(self,
                          instance_types: Optional[List[str]] = None,
                          region: Optional[str] = None,
                          num_samples: int = 100,
                          start_time: Optional[datetime] = None,
                          end_time: Optional[datetime] = None) -> PriceHistory:
        """Sampled spot prices; `instance_types` are fids, sent comma-separated."""
        params = _drop_none({
            'instance_types': ','.join(instance_types) if instance_types else None,
            'region': region,
            'num_samples': num_samples,
            'start_time': _iso(start_time),
            'end_time': _iso(end_time),
        })
        return self._get_one('/v2/pricing/history', PriceHistory, params)

    # API keys.

    def create_api_key(self, name: str, expires_at: datetime) -> CreatedApiKey:
        """Mints an API key that acts as this key's user until it is revoked
        or `expires_at`. Not retried once possibly applied.

        Raises AmbiguousResponseError when a key may have been minted without
        a readable answer: its secret is then lost, so revoke the keys of that
        name (`list_api_keys`) before minting another.
        """
        request = CreateApiKeyRequest(name=name, expires_at=expires_at)
        return self._post('/v2/api-keys', request.to_wire(), CreatedApiKey,
                          f'Revoke the API keys named {name!r} that you do '
                          'not hold before minting another.')

    def list_api_keys(self) -> List[ApiKey]:
        """Every API key of the user, revoked and expired ones included."""
        return self._get_list('/v2/api-keys', ApiKey)

    def revoke_api_key(self, key_fid: str) -> None:
        """Revokes an API key at once (NotFoundError if unknown)."""
        self._request('DELETE', f'/v2/api-keys/{_fid(key_fid)}')

    # SSH keys.

    def list_ssh_keys(self, project: str) -> List[SshKey]:
        """SSH keys registered in a project."""
        return self._get_list('/v2/ssh-keys', SshKey, {'project': project})

    def create_ssh_key(self, project: str, name: str,
                       public_key: str) -> SshKey:
        """Registers a public key. Not retried once possibly applied.

        Raises AmbiguousResponseError when the key may have been created
        without a readable answer; list the project's keys to find out.
        """
        body = {'project': project, 'name': name, 'public_key': public_key}
        return self._post('/v2/ssh-keys', body, SshKey,
                          'List the project\'s SSH keys to see whether it '
                          'was created before creating it again.')

    # Bids.

    def create_bid(self, request: CreateBidRequest) -> Bid:
        """Places a spot bid. Never sent twice unless provably not applied.

        Retried only on 429 and on failure to connect. A read timeout, a
        connection dropped mid-response, an unreadable answer or a 5xx raise
        AmbiguousResponseError: the bid may exist, so list bids by
        `request.name` before placing it again.
        """
        return self._post('/v2/spot/bids', request.to_wire(), Bid,
                          f'List bids named {request.name!r} to see whether '
                          'it was placed before placing it again.')

    def list_bids(self,
                  project: str,
                  *,
                  name: Optional[str] = None,
                  status: Optional[str] = None,
                  region: Optional[str] = None,
                  instance_type: Optional[str] = None,
                  sort_by: Optional[str] = None,
                  sort_dir: Optional[str] = None,
                  page_size: Optional[int] = None,
                  max_items: Optional[int] = None) -> List[Bid]:
        """Bids in a project matching every filter given: all pages, or the
        first `max_items` (e.g. the newest few, with sort_dir='desc')."""
        params = _drop_none({
            'project': project, 'name': name, 'status': status,
            'region': region, 'instance_type': instance_type,
            'sort_by': sort_by, 'sort_dir': sort_dir,
            'limit': _page_limit(page_size or max_items),
        })
        return self._get_list('/v2/spot/bids', Bid, params, max_items)

    def get_bid(self, bid_fid: str) -> Bid:
        """One bid by fid (NotFoundError if unknown)."""
        return self._get_one(f'/v2/spot/bids/{_fid(bid_fid)}', Bid)

    def get_bid_status(self, bid_fid: str) -> BidStatus:
        """A bid's status only (can be 'Relocating', unlike Bid.status)."""
        return self._get_one(f'/v2/spot/bids/{_fid(bid_fid)}/status',
                             BidStatus)

    def get_bid_history(self, bid_fid: str) -> BidHistory:
        """A bid's events: placed, allocated, preempted, price changes..."""
        return self._get_one(f'/v2/spot/bids/{_fid(bid_fid)}/history',
                             BidHistory)

    def update_bid(self,
                   bid_fid: str,
                   *,
                   limit_price: Optional[Decimal] = None,
                   paused: Optional[bool] = None) -> Bid:
        """Changes a bid's limit price and/or pauses or resumes it."""
        if limit_price is None and paused is None:
            raise ValueError('update_bid needs limit_price or paused')
        body = UpdateBidRequest(limit_price=limit_price,
                                paused=paused).to_wire()
        return self._patch(f'/v2/spot/bids/{_fid(bid_fid)}', body, Bid)

    def cancel_bid(self, bid_fid: str) -> None:
        """Cancels a bid and terminates its instances (NotFoundError if unknown)."""
        self._request('DELETE', f'/v2/spot/bids/{_fid(bid_fid)}')

    # Instances.

    def list_instances(self,
                       project: str,
                       *,
                       bid_fids: Optional[List[str]] = None,
                       reservation_fids: Optional[List[str]] = None,
                       status_in: Optional[List[str]] = None,
                       region: Optional[str] = None,
                       instance_type: Optional[str] = None,
                       page_size: Optional[int] = None) -> List[Instance]:
        """Instances in a project matching every filter given, all pages.

        An empty `bid_fids`, `reservation_fids` or `status_in` list matches nothing and returns []
        without a request (rather than dropping the filter and listing all).
        """
        if bid_fids is not None and not bid_fids:
            return []
        if reservation_fids is not None and not reservation_fids:
            return []
        if status_in is not None and not status_in:
            return []
        params = _drop_none({
            'project': project, 'bid_fid_in': bid_fids,
            'reservation_fid_in': reservation_fids,
            'status_in': status_in, 'region': region,
            'instance_type': instance_type, 'limit': _page_limit(page_size),
        })
        return self._get_list('/v2/instances', Instance, params)

    def get_instance_status(self, instance_fid: str) -> InstanceStatus:
        """One instance's status."""
        return self._get_one(f'/v2/instances/{_fid(instance_fid)}/status',
                             InstanceStatus)

    def get_instance_pricing_history(
            self,
            project: str,
            *,
            bid_fid: Optional[str] = None,
            instance_fid: Optional[str] = None,
            start_time: Optional[datetime] = None,
            end_time: Optional[datetime] = None) -> List[InstancePricingHistory]:
        """What each instance was charged per hour, from when until when: a
        bid's instances, one instance, or (neither given) the project's;
        charges that overlap [start_time, end_time]; all pages."""
        return self._get_list('/v2/instances/pricing/history',
                              InstancePricingHistory,
                              self._history_params(project, bid_fid,
                                                   instance_fid, start_time,
                                                   end_time),
                              items_key='instances')

    def get_instance_status_history(
            self,
            project: str,
            *,
            bid_fid: Optional[str] = None,
            instance_fid: Optional[str] = None,
            start_time: Optional[datetime] = None,
            end_time: Optional[datetime] = None) -> List[InstanceStatusHistory]:
        """The statuses each instance entered, when (chosen as in
        `get_instance_pricing_history`); all pages."""
        return self._get_list('/v2/instances/status/history',
                              InstanceStatusHistory,
                              self._history_params(project, bid_fid,
                                                   instance_fid, start_time,
                                                   end_time),
                              items_key='instances')

    @staticmethod
    def _history_params(project: str, bid_fid: Optional[str],
                        instance_fid: Optional[str],
                        start_time: Optional[datetime],
                        end_time: Optional[datetime]) -> Dict[str, Any]:
        return _drop_none({'project': project, 'bid_fid': bid_fid,
                           'instance_fid': instance_fid,
                           'start_time': _iso(start_time),
                           'end_time': _iso(end_time)})

    # Kubernetes clusters.

    def list_kubernetes_clusters(self, project: str) -> List[KubernetesCluster]:
        """A project's Kubernetes clusters, terminated ones included."""
        return self._get_list('/v2/kubernetes/clusters', KubernetesCluster,
                              {'project': project})

    def get_kubernetes_cluster(self, cluster_fid: str) -> KubernetesCluster:
        """One Kubernetes cluster by fid (NotFoundError if unknown)."""
        return self._get_one(f'/v2/kubernetes/clusters/{_fid(cluster_fid)}',
                             KubernetesCluster)

    # Volumes.

    def list_volumes(self, project: str,
                     region: Optional[str] = None) -> List[Volume]:
        """A project's volumes (only one region's when `region` is given)."""
        return self._get_list('/v2/volumes', Volume,
                              _drop_none({'project': project,
                                          'region': region}))

    def create_volume(self, project: str, name: str, region: str,
                      size_gb: int, interface: VolumeInterface) -> Volume:
        """Creates a volume. Not retried once possibly applied.

        Raises AmbiguousResponseError when it may have been created without
        a readable answer; list the project's volumes by name to find out.
        """
        request = CreateVolumeRequest(name=name, project=project,
                                      disk_interface=interface, region=region,
                                      size_gb=size_gb)
        return self._post('/v2/volumes', request.to_wire(), Volume,
                          f'List the project\'s volumes to see whether '
                          f'{name!r} was created before creating it again.')

    def rename_volume(self, volume_fid: str, name: str) -> Volume:
        """Gives a volume a new name."""
        return self._patch(f'/v2/volumes/{_fid(volume_fid)}', {'name': name},
                           Volume)

    def delete_volume(self, volume_fid: str) -> None:
        """Deletes a volume and its data: NotFoundError if unknown,
        ConflictError while a live bid uses it."""
        self._request('DELETE', f'/v2/volumes/{_fid(volume_fid)}')

    # Reservations.

    def list_reservations(self, project: str, *,
                          status: Optional[str] = None,
                          region: Optional[str] = None,
                          instance_type: Optional[str] = None) -> List[Reservation]:
        """Reservations in a project matching every filter given, all pages."""
        params = _drop_none({'project': project, 'status': status,
                             'region': region, 'instance_type': instance_type,
                             'limit': _page_limit(None)})
        return self._get_list('/v2/reservation', Reservation, params)

    def list_reservation_instance_types(self) -> List[InstanceType]:
        """The instance types that can be reserved."""
        return self._get_list('/v2/reservation/instance-types', InstanceType)

    def quote_reservation(self, project: str, instance_type: str, region: str,
                          start_time: datetime, end_time: datetime,
                          quantity: int) -> ReservationQuote:
        """What a reservation would cost now, offer by offer (nothing is bought)."""
        return self._get_one('/v2/reservation/quote', ReservationQuote, {
            'project': project, 'instance_type': instance_type,
            'region': region, 'start_time': _iso(start_time),
            'end_time': _iso(end_time), 'quantity': quantity})

    def reservation_slots(self, project: str, instance_type: str, region: str,
                          earliest_start_time: datetime,
                          latest_end_time: datetime,
                          quantity: Optional[int] = None) -> List[AvailabilitySlot]:
        """Windows in which the type can be reserved (`mode=slots`)."""
        return self._get_list('/v2/reservation/availability', AvailabilitySlot,
                              _drop_none({
                                  'project': project, 'instance_type': instance_type,
                                  'region': region, 'mode': 'slots',
                                  'earliest_start_time': _iso(earliest_start_time),
                                  'latest_end_time': _iso(latest_end_time),
                                  'quantity': quantity}))

    def create_reservation(self, request: CreateReservationRequest) -> Reservation:
        """Buys a reservation: its whole price is charged now. Never sent
        twice unless provably not applied (AmbiguousResponseError otherwise:
        list reservations by `request.name` before buying again)."""
        return self._post('/v2/reservation', request.to_wire(), Reservation,
                          f'List reservations named {request.name!r} to see '
                          'whether it was bought before buying it again.')

    def update_reservation(self, reservation_fid: str, *,
                           paused: Optional[bool] = None,
                           volumes: Optional[List[str]] = None) -> Reservation:
        """Pauses or resumes a whole reservation and/or sets its volumes."""
        if paused is None and volumes is None:
            raise ValueError('update_reservation needs paused or volumes')
        return self._patch(f'/v2/reservation/{_fid(reservation_fid)}',
                           _drop_none({'paused': paused, 'volumes': volumes}),
                           Reservation)

    def get_extension_availability(self, reservation_fid: str) -> ExtensionAvailability:
        """How far a reservation can be extended."""
        return self._get_one(
            f'/v2/reservation/{_fid(reservation_fid)}/extension-availability',
            ExtensionAvailability)

    def extend_reservation(self, reservation_fid: str, end_time: datetime,
                           price_specification: Optional[PriceSpecification] = None
                           ) -> Reservation:
        """Moves a reservation's end (charged at create's terms for the new hours)."""
        body = _drop_none({'end_time': _iso(end_time),
                           'price_specification': (price_specification.to_wire()
                                                   if price_specification else None)})
        path = f'/v2/reservation/{_fid(reservation_fid)}/extend'
        response = self._request(
            'POST', path, json_body=body,
            reconcile_hint='Read the reservation to see whether its end moved '
            'before extending it again.')
        return self._parse(Reservation, self._json(response, 'POST', path),
                           'POST', path)

    def return_reservation_instances(self, reservation_fid: str,
                                     instance_fids: List[str]) -> ReturnedInstances:
        """Gives instances back for good (`reduce_capacity`): the reservation
        shrinks and earns its return credit. A 207 names those returned."""
        path = f'/v2/reservation/{_fid(reservation_fid)}/terminate-instances'
        response = self._request(
            'POST', path,
            json_body={'instances': instance_fids, 'reduce_capacity': True},
            reconcile_hint='List the reservation\'s instances to see which '
            'were returned before returning them again.')
        if response.status_code == 207:
            partial = self._json(response, 'POST', path)
            returned = partial.get('terminated_instances') if isinstance(partial, dict) else None
            if not isinstance(returned, list):
                raise self._unreadable('POST', path,
                                       'a 207 without terminated_instances')
            return ReturnedInstances(terminated_instances=returned, partial=True)
        return ReturnedInstances(terminated_instances=list(instance_fids))

    def get_reservation_history(self, reservation_fid: str) -> ReservationHistory:
        """A reservation's events: placed, active, paused, terms changed..."""
        return self._get_one(f'/v2/reservation/{_fid(reservation_fid)}/history',
                             ReservationHistory)

    def get_reservation_usage(self, reservation_fid: str) -> ReservationUsage:
        """What a reservation cost, what it earned back, its instance-hours."""
        return self._get_one(f'/v2/reservation/{_fid(reservation_fid)}/usage',
                             ReservationUsage)

    def set_instances_paused(self, instance_fids: List[str],
                             paused: bool) -> Dict[str, str]:
        """Pauses or resumes reserved instances (asynchronous; spot ones
        answer 501): the status each is moving to, by fid."""
        body = {'instances': instance_fids,
                'status': InstanceState.PAUSED if paused else InstanceState.RUNNING}
        response = self._request('PATCH', '/v2/instances', json_body=body)
        answer = self._json(response, 'PATCH', '/v2/instances')
        moving = answer.get('instances') if isinstance(answer, dict) else None
        if not isinstance(moving, dict):
            raise self._unreadable('PATCH', '/v2/instances',
                                   'expected {"instances": {fid: status}}')
        return {str(fid): str(status) for fid, status in moving.items()}

    def refresh_boot_disk(self, instance_fid: str) -> None:
        """Resets a paused reserved instance's boot disk to its image."""
        self._request('POST', f'/v2/instances/{_fid(instance_fid)}/refresh-boot-disk',
                      reconcile_hint='A second refresh of a paused instance is harmless.')

    # CPU VMs: fixed price, outside the auction.

    def list_cpu_instance_types(self) -> List[CpuInstanceType]:
        """The CPU VM types, each with its fixed hourly price."""
        return self._get_list('/v2/cpu/instance-types', CpuInstanceType)

    def list_cpu_regions(self) -> List[Region]:
        """The regions CPU VMs run in."""
        return self._get_list('/v2/cpu/regions', Region)

    def create_cpu_instance(self, request: CreateCpuInstanceRequest) -> Instance:
        """Launches a CPU VM at once (no bid); its instance. Never sent
        twice unless provably not applied (AmbiguousResponseError otherwise:
        list instances by `request.name` before creating it again)."""
        return self._post('/v2/cpu/instances', request.to_wire(), Instance,
                          f'List instances named {request.name!r} to see '
                          'whether the CPU VM was created before creating it '
                          'again.')

    def terminate_cpu_instance(self, instance_fid: str) -> None:
        """Terminates a CPU VM (a terminated one: nothing; NotFoundError for
        an instance that is not a CPU VM)."""
        self._request('DELETE', f'/v2/cpu/instances/{_fid(instance_fid)}')

    # Response handling.

    def _get_one(self,
                 path: str,
                 model: Type[ModelT],
                 params: Optional[Dict[str, Any]] = None) -> ModelT:
        response = self._request('GET', path, params=params)
        return self._parse(model, self._json(response, 'GET', path), 'GET',
                           path)

    def _patch(self, path: str, body: Dict[str, Any],
               model: Type[ModelT]) -> ModelT:
        response = self._request('PATCH', path, json_body=body)
        return self._parse(model, self._json(response, 'PATCH', path),
                           'PATCH', path)

    def _get_list(self,
                  path: str,
                  model: Type[ModelT],
                  params: Optional[Dict[str, Any]] = None,
                  max_items: Optional[int] = None,
                  items_key: str = 'data') -> List[ModelT]:
        """All items of a list endpoint (or the first `max_items`): a bare
        JSON list, or pages of `{"data": [...], "next_cursor": ...}` (the
        history endpoints say `instances` for `data`: `items_key`) followed
        until the cursor is null."""
        items: List[ModelT] = []
        seen_cursors = set()
        page_params = dict(params or {})
        while True:
            payload = self._json(self._request('GET', path, params=page_params),
                                 'GET', path)
            if isinstance(payload, list):
                return items + self._parse_items(model, payload, path)
            if not isinstance(payload, dict) or not isinstance(
                    payload.get(items_key), list):
                raise self._unreadable('GET', path, 'expected a list or a '
                                       f'{{"{items_key}": [...]}} page')
            items.extend(self._parse_items(model, payload[items_key], path))
            if max_items is not None and len(items) >= max_items:
                return items[:max_items]
            cursor = payload.get('next_cursor')
            if not cursor:
                return items
            if cursor in seen_cursors:
                raise self._unreadable('GET', path,
                                       'the same page cursor came back twice')
            seen_cursors.add(cursor)
            page_params['next_cursor'] = cursor

    def _parse_items(self, model: Type[ModelT], payload: List[Any],
                     path: str) -> List[ModelT]:
        return [self._parse(model, item, 'GET', path) for item in payload]

    def _parse(self, model: Type[ModelT], payload: Any, method: str,
               path: str) -> ModelT:
        try:
            return model.model_validate(payload)
        except pydantic.ValidationError as exc:
            problems = '; '.join(
                f"{'.'.join(str(part) for part in problem['loc'])}: "
                f"{problem['msg']}" for problem in exc.errors()[:5])
            raise self._unreadable(method, path,
                                   f'{model.__name__} {problems}') from None

    def _json(self, response: requests.Response, method: str,
              path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self._unreadable(method, path,
                                   'the body is not JSON') from None

    def _unreadable(self, method: str, path: str,
                    problem: str) -> errors.MithrilAPIError:
        return errors.MithrilAPIError(
            redact(f'Mithril answered {method} {path} with a response the '
                   f'plugin cannot read ({problem}).', self._api_key),
            method=method, path=path)

    def _post(self, path: str, body: Dict[str, Any], model: Type[ModelT],
              reconcile_hint: str) -> ModelT:
        """A non-idempotent create; an unreadable 2xx answer is ambiguous too."""
        response = self._request('POST', path, json_body=body,
                                 reconcile_hint=reconcile_hint)
        try:
            return model.model_validate(response.json())
        except (ValueError, pydantic.ValidationError):
            raise self._ambiguous(
                'POST', path, f'it answered {response.status_code} with a '
                'body the plugin cannot read', reconcile_hint,
                response.status_code) from None

    # Transport and retries.

    def _url(self, path: str) -> str:
        return f'{self.api_url}/{path.lstrip("/")}'

    def _send(self, method: str, path: str, params: Optional[Dict[str, Any]],
              json_body: Optional[Dict[str, Any]],
              attempt: int) -> requests.Response:
        """One HTTP attempt, counted and logged (never headers or the key)."""
        with self._counter_lock:
            self.request_count += 1
        started = time.monotonic()
        outcome = 'no response'
        try:
            response = self._session.request(method, self._url(path),
                                             params=params,
                                             json=json_body,
                                             headers=self._headers,
                                             auth=self._auth,
                                             timeout=self._timeout,
                                             allow_redirects=False)
            outcome = str(response.status_code)
            self._note_server_date(response)
            return response
        except requests.RequestException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            logger.debug('%s %s -> %s in %.0f ms (attempt %d)', method, path,
                         outcome, elapsed_ms, attempt)

    def _note_server_date(self, response: requests.Response) -> None:
        try:
            when = email.utils.parsedate_to_datetime(
                response.headers.get('Date', ''))
        except (TypeError, ValueError):
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        with self._counter_lock:
            self._server_date = (when, time.monotonic())

    def server_now(self) -> datetime:
        """The server's clock now: its last answer's `Date` header plus the
        local time since, else this machine's clock. Times the server checks
        (an API key's expiry) are set from it: an emulator's clock may run
        faster than, or far from, this machine's."""
        with self._counter_lock:
            dated = self._server_date
        if dated is None:
            return datetime.now(timezone.utc)
        when, at = dated
        return when + timedelta(seconds=time.monotonic() - at)

    def _backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        """Full-jitter exponential backoff, never shorter than Retry-After."""
        ceiling = min(BACKOFF_CAP_SECONDS,
                      BACKOFF_BASE_SECONDS * 2**(attempt - 1))
        delay = self._rng.uniform(0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay

    def _request(self,
                 method: str,
                 path: str,
                 *,
                 params: Optional[Dict[str, Any]] = None,
                 json_body: Optional[Dict[str, Any]] = None,
                 reconcile_hint: str = '') -> requests.Response:
        """Sends with the retry rules of the module docstring; returns a 2xx response."""
        idempotent = method in IDEMPOTENT_METHODS
        attempt = 0
        waited = 0.0
        while True:
            attempt += 1
            retry_after: Optional[float] = None
            try:
                response = self._send(method, path, params, json_body, attempt)
            except requests.RequestException as exc:
                error = self._transport_error(exc, method, path, idempotent,
                                              reconcile_hint)
            else:
                if response.status_code < 300:
                    return response
                retry_after = parse_retry_after(
                    response.headers.get('Retry-After'))
                error = self._status_error(response, method, path, idempotent,
                                           retry_after, reconcile_hint)
            if not self._is_retryable(error, idempotent):
                raise error
            delay = self._backoff(attempt, retry_after)
            if waited + delay > self._max_retry_seconds:
                error.extend_message(
                    self._give_up_note(attempt, waited, retry_after))
                raise error
            logger.debug('%s %s: retrying in %.2f s (attempt %d failed)',
                         method, path, delay, attempt)
            self._sleep(delay)
            waited += delay
            with self._counter_lock:
                self.retry_count += 1

    @staticmethod
    def _is_retryable(error: errors.MithrilAPIError, idempotent: bool) -> bool:
        """Whether repeating the request is safe and may help.

        A POST only gets here retryable when the server provably did not
        apply it (429, or never connected): the error builders turn every
        other POST failure into AmbiguousResponseError, which is never retried.
        """
        if isinstance(error, errors.RateLimitedError):
            return True
        if isinstance(error, errors.ConnectionFailedError):
            return error.retryable
        return idempotent and error.status_code in RETRYABLE_STATUSES

    def _give_up_note(self, attempts: int, waited: float,
                      retry_after: Optional[float]) -> str:
        note = (f'Gave up after {attempts} attempt{"s" * (attempts != 1)} '
                f'over {waited:.1f} s (retry budget {self._max_retry_seconds:g} s).')
        if retry_after is not None and retry_after > self._max_retry_seconds:
            note += f' The server asked to wait {retry_after:g} s.'
        return note

    @staticmethod
    def _body(response: requests.Response) -> str:
        """The response body as text, '' when unreadable. Not redacted: the
        error builders redact the key in it as written and once decoded."""
        try:
            return response.text or ''
        except (requests.RequestException, ValueError):
            return ''

    def _status_error(self, response: requests.Response, method: str,
                      path: str, idempotent: bool,
                      retry_after: Optional[float],
                      reconcile_hint: str) -> errors.MithrilAPIError:
        """The typed error for a non-2xx answer; a 5xx to a POST is ambiguous."""
        body = self._body(response)
        status = response.status_code
        if not idempotent and status >= 500:
            detail = errors.parse_error_body(body, self._api_key)[0]
            return self._ambiguous(method, path,
                                   f'it answered {status} ({detail})',
                                   reconcile_hint, status)
        return errors.error_for_status(status, method, path, body,
                                       secret=self._api_key,
                                       retry_after=retry_after)

    def _transport_error(self, exc: requests.RequestException, method: str,
                         path: str, idempotent: bool,
                         reconcile_hint: str) -> errors.MithrilAPIError:
        """The typed error for a request that got no HTTP answer."""
        failure = _classify(exc)
        reason = redact(_root_reason(exc), self._api_key)
        if not idempotent and failure is _TransportFailure.TIMED_OUT:
            return self._ambiguous(method, path,
                                   f'no answer came within {self._timeout:g} s',
                                   reconcile_hint)
        if not idempotent and failure is _TransportFailure.DROPPED:
            return self._ambiguous(method, path,
                                   f'the connection broke before the answer '
                                   f'was complete ({reason})', reconcile_hint)
        refused = any(isinstance(link, ConnectionRefusedError)
                      for link in _exception_chain(exc))
        if refused:
            message = (f'Cannot reach the Mithril API at {self.api_url}: '
                       f'nothing accepts connections there ({reason}). Check '
                       'MITHRIL_API_URL or the api_url of your Mithril '
                       'profile; for the emulator, check that `sky-mithril '
                       'emulator` is running.')
        elif failure is _TransportFailure.UNREACHABLE:
            message = (f'Cannot reach the Mithril API at {self.api_url}: the '
                       f'server is unreachable ({reason}). Check your network '
                       'connection and MITHRIL_API_URL.')
        elif failure is _TransportFailure.TIMED_OUT:
            message = (f'The Mithril API at {self.api_url} did not answer '
                       f'{method} {path} within {self._timeout:g} s.')
        elif failure is _TransportFailure.DROPPED:
            message = (f'The connection to the Mithril API at {self.api_url} '
                       f'broke during {method} {path} ({reason}).')
        else:
            message = (f'Cannot use the Mithril API at {self.api_url} '
                       f'({reason}). Check MITHRIL_API_URL.')
        return errors.ConnectionFailedError(
            redact(message, self._api_key),
            retryable=(failure is not _TransportFailure.UNUSABLE and
                       (self._retry_refused or not refused)),
            method=method,
            path=path)

    def _ambiguous(self,
                   method: str,
                   path: str,
                   what_happened: str,
                   reconcile_hint: str,
                   status_code: Optional[int] = None
                  ) -> errors.AmbiguousResponseError:
        message = (f'{method} {path} may or may not have been applied by '
                   f'Mithril at {self.api_url}: {what_happened}. It was not '
                   f'retried, to avoid doing it twice. {reconcile_hint}')
        return errors.AmbiguousResponseError(redact(message.strip(),
                                                    self._api_key),
                                             status_code=status_code,
                                             method=method,
                                             path=path)
