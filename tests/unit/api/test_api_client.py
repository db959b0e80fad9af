"""MithrilClient against a `responses`-mocked API: paging, retries, errors, money, redaction."""

import email.utils
import json
import logging
import random
import re
import ssl
import traceback
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Dict, Iterator, List

import pytest
import requests
import responses
from responses import matchers
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

import sky_mithril
from sky_mithril.api import (AmbiguousResponseError, AuthenticationError,
                             ConnectionFailedError, CreateBidRequest,
                             LaunchSpecification, MithrilAPIError,
                             MithrilClient, NotFoundError,
                             PermissionDeniedError, RateLimitedError,
                             ServerError, ValidationError)
from sky_mithril.account.credentials import Credentials

API_KEY = 'mk_live_S3CRET_do_not_leak'
API_URL = 'https://api.mithril.test'
BIDS_URL = f'{API_URL}/v2/spot/bids'
ME_URL = f'{API_URL}/v2/me'
ME_JSON = {'id': 'u1', 'fid': 'usr_1', 'email': 'a@b.c', 'organization_id': 'org_1'}


class HighestJitter(random.Random):
    """Makes full-jitter backoff deterministic: always the largest allowed wait."""

    def uniform(self, a: float, b: float) -> float:
        return b


class RecordingSleep:
    """Stands in for time.sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def client(sleep: RecordingSleep) -> MithrilClient:
    return MithrilClient(API_KEY, API_URL, max_retry_seconds=60.0,
                         sleep=sleep, rng=HighestJitter())


@pytest.fixture
def mocked_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def bid_json(fid: str = 'bid_1', name: str = 'sky-train-1',
             limit_price: str = '$32.00', **overrides: Any) -> Dict[str, Any]:
    bid = {
        'fid': fid,
        'name': name,
        'project': 'proj_1',
        'created_by': 'usr_1',
        'created_at': '2025-06-01T12:00:00Z',
        'limit_price': limit_price,
        'instance_quantity': 1,
        'instance_type': 'it_h100x8',
        'instances': [],
        'launch_specification': {'ssh_keys': ['sshkey_1'], 'volumes': []},
        'status': 'Open',
        'region': 'us-central2-a',
    }
    bid.update(overrides)
    return bid


def instance_json(fid: str, bid: str = 'bid_1') -> Dict[str, Any]:
    return {
        'fid': fid,
        'name': fid,
        'project': 'proj_1',
        'created_at': '2025-06-01T12:05:00Z',
        'created_by': 'usr_1',
        'instance_type': 'it_h100x8',
        'status': 'STATUS_RUNNING',
        'bid': bid,
        'ssh_destination': '203.0.113.7',
    }


def bid_request(limit_price: Any = Decimal('12.50')) -> CreateBidRequest:
    return CreateBidRequest(project='proj_1',
                            region='us-central2-a',
                            instance_type='it_h100x8',
                            limit_price=limit_price,
                            instance_quantity=2,
                            name='sky-train-1',
                            launch_specification=LaunchSpecification(
                                ssh_keys=['sshkey_1']))


def connection_refused() -> requests.ConnectionError:
    """What requests raises when nothing listens: the request never left."""
    reason = NewConnectionError(
        None, 'Failed to establish a new connection: [Errno 111] Connection refused')
    return requests.ConnectionError(MaxRetryError(None, '/v2/spot/bids', reason))


def connection_reset() -> requests.ConnectionError:
    """What requests raises when the server drops the connection mid-response."""
    return requests.ConnectionError(
        ProtocolError('Connection aborted.',
                      ConnectionResetError(104, 'Connection reset by peer')))


# Paging and query encoding.


def test_list_bids_follows_next_cursor_over_three_pages(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    pages = [
        (None, ['bid_1', 'bid_2'], 'c1'),
        ('c1', ['bid_3', 'bid_4'], 'c2'),
        ('c2', ['bid_5'], None),
    ]
    for cursor, fids, next_cursor in pages:
        query = {'project': 'proj_1', 'name': 'sky-train-1', 'limit': '2'}
        if cursor:
            query['next_cursor'] = cursor
        mocked_api.get(BIDS_URL,
                       match=[matchers.query_param_matcher(query)],
                       json={'data': [bid_json(fid) for fid in fids],
                             'next_cursor': next_cursor})

    bids = client.list_bids('proj_1', name='sky-train-1', page_size=2)

    assert [bid.fid for bid in bids] == ['bid_1', 'bid_2', 'bid_3', 'bid_4',
                                         'bid_5']
    assert client.request_count == 3


def test_more_items_than_a_page_holds_are_asked_for_a_page_at_a_time(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    for cursor, fids, next_cursor in ((None, range(100), 'c1'),
                                      ('c1', range(100, 200), None)):
        query = {'project': 'proj_1', 'limit': '100'}
        if cursor:
            query['next_cursor'] = cursor
        mocked_api.get(BIDS_URL,
                       match=[matchers.query_param_matcher(query)],
                       json={'data': [bid_json(f'bid_{i}') for i in fids],
                             'next_cursor': next_cursor})

    bids = client.list_bids('proj_1', max_items=150)

    assert [bid.fid for bid in bids] == [f'bid_{i}' for i in range(150)]


def test_list_instances_sends_list_filters_as_repeated_query_params(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(f'{API_URL}/v2/instances',
                   match=[matchers.query_string_matcher(
                'project=proj_1&bid_fid_in=bid_1&bid_fid_in=bid_2'
                '&status_in=STATUS_RUNNING&status_in=STATUS_STARTING')],
                   json={'data': [instance_json('inst_1'),
                                  instance_json('inst_2', bid='bid_2')],
                         'next_cursor': None})

    instances = client.list_instances(
        'proj_1', bid_fids=['bid_1', 'bid_2'],
        status_in=['STATUS_RUNNING', 'STATUS_STARTING'])

    assert [(i.fid, i.bid) for i in instances] == [('inst_1', 'bid_1'),
                                                    ('inst_2', 'bid_2')]
    assert instances[0].ssh_destination == '203.0.113.7'
    assert instances[0].private_ip is None


def test_instance_pricing_history_follows_pages_of_instances(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    url = f'{API_URL}/v2/instances/pricing/history'
    since = datetime(2025, 1, 1, tzinfo=timezone.utc)
    query = {'project': 'proj_1', 'bid_fid': 'bid_1',
             'start_time': since.isoformat()}
    charge = {'price_cents': 125, 'start_time': '2025-01-01T00:02:00+00:00',
              'end_time': None}
    mocked_api.get(url, match=[matchers.query_param_matcher(query)],
                   json={'instances': [{'instance_fid': 'inst_1',
                                        'events': [charge],
                                        'bid_fid': 'bid_1',
                                        'reservation_fid': None}],
                         'next_cursor': 'c1'})
    mocked_api.get(url, match=[matchers.query_param_matcher(
        {**query, 'next_cursor': 'c1'})],
                   json={'instances': [{'instance_fid': 'inst_2',
                                        'events': [], 'bid_fid': 'bid_1'}],
                         'next_cursor': None})

    histories = client.get_instance_pricing_history('proj_1', bid_fid='bid_1',
                                                    start_time=since)

    assert [h.instance_fid for h in histories] == ['inst_1', 'inst_2']
    first, = histories[0].events
    assert first.price_cents == 125
    assert first.start_time == since + timedelta(minutes=2)
    assert first.end_time is None


def test_instance_status_history_by_instance(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(f'{API_URL}/v2/instances/status/history',
                   match=[matchers.query_param_matcher(
                       {'project': 'proj_1', 'instance_fid': 'inst_1'})],
                   json={'instances': [{
                       'instance_fid': 'inst_1',
                       'events': [{'timestamp': '2025-01-01T00:02:00Z',
                                   'status': 'STATUS_NEW'}]}],
                         'next_cursor': None})

    history, = client.get_instance_status_history('proj_1',
                                                  instance_fid='inst_1')

    assert [e.status for e in history.events] == ['STATUS_NEW']


def test_list_instances_with_empty_bid_list_matches_nothing_without_asking(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    assert client.list_instances('proj_1', bid_fids=[]) == []
    assert client.request_count == 0


def test_bare_list_endpoints_are_read(client: MithrilClient,
                                      mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(f'{API_URL}/v2/ssh-keys',
                   match=[matchers.query_param_matcher({'project': 'proj_1'})],
                   json=[{'fid': 'sshkey_1', 'name': 'sky-key', 'project': 'proj_1',
                          'public_key': 'ssh-ed25519 AAAA', 'created_at':
                          '2025-06-01T12:00:00Z', 'required': False}])

    keys = client.list_ssh_keys('proj_1')

    assert [key.fid for key in keys] == ['sshkey_1']
    assert keys[0].private_key is None


# Retries of idempotent requests.


def test_get_retries_a_503_then_returns_the_answer(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        sleep: RecordingSleep) -> None:
    mocked_api.get(ME_URL, status=503, json={'detail': 'try again'})
    mocked_api.get(ME_URL, json=ME_JSON)

    me = client.me()

    assert me.fid == 'usr_1'
    assert (client.request_count, client.retry_count) == (2, 1)
    assert sleep.waits == [0.5]


def test_retry_after_seconds_is_a_lower_bound_on_the_wait(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        sleep: RecordingSleep) -> None:
    mocked_api.get(ME_URL, status=429, headers={'Retry-After': '7'})
    mocked_api.get(ME_URL, json=ME_JSON)

    client.me()

    assert sleep.waits == [7.0]


def test_retry_after_http_date_is_honoured(client: MithrilClient,
                                           mocked_api: responses.RequestsMock,
                                           sleep: RecordingSleep) -> None:
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    mocked_api.get(ME_URL, status=503,
                   headers={'Retry-After': email.utils.format_datetime(later,
                                                                       usegmt=True)})
    mocked_api.get(ME_URL, json=ME_JSON)

    client.me()

    assert len(sleep.waits) == 1 and 25 < sleep.waits[0] <= 30


def test_retries_stop_at_max_retry_seconds_with_a_clear_error(
        sleep: RecordingSleep, mocked_api: responses.RequestsMock) -> None:
    client = MithrilClient(API_KEY, API_URL, max_retry_seconds=5,
                           sleep=sleep, rng=HighestJitter())
    mocked_api.get(ME_URL, status=503, json={'detail': 'maintenance'})

    with pytest.raises(ServerError) as caught:
        client.me()

    assert sleep.waits == [0.5, 1.0, 2.0]  # the next wait, 4 s, would pass 5 s
    assert client.request_count == 4
    assert 'Gave up after 4 attempts over 3.5 s' in str(caught.value)
    assert 'maintenance' in str(caught.value)


def test_retry_after_beyond_the_budget_gives_up_at_once(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        sleep: RecordingSleep) -> None:
    mocked_api.get(ME_URL, status=429, headers={'Retry-After': '120'})

    with pytest.raises(RateLimitedError) as caught:
        client.me()

    assert caught.value.retry_after == 120
    assert sleep.waits == []
    assert 'asked to wait 120 s' in str(caught.value)


def test_unreachable_server_error_names_the_api_url(
        sleep: RecordingSleep, mocked_api: responses.RequestsMock) -> None:
    client = MithrilClient(API_KEY, API_URL, max_retry_seconds=1,
                           sleep=sleep, rng=HighestJitter())
    mocked_api.get(ME_URL, body=connection_refused())

    with pytest.raises(ConnectionFailedError) as caught:
        client.me()

    message = str(caught.value)
    assert API_URL in message and 'unreachable' in message
    assert 'Connection refused' in message
    assert client.request_count == 2


# HTTP errors map to typed errors (not retried).


@pytest.mark.parametrize('status, error_type, hint', [
    (401, AuthenticationError, 'Check MITHRIL_API_KEY, or store a working key with '
     '`sky-mithril setup --api-key` (or Mithril\'s `ml setup`)'),
    (403, PermissionDeniedError, 'MITHRIL_PROJECT'),
    (404, NotFoundError, 'GET /v2/spot/bids/bid_gone'),
])
def test_client_errors_map_to_typed_errors(client: MithrilClient,
                                           mocked_api: responses.RequestsMock,
                                           status: int, error_type: type,
                                           hint: str) -> None:
    mocked_api.get(f'{BIDS_URL}/bid_gone', status=status,
                   json={'detail': 'server says no'})

    with pytest.raises(error_type) as caught:
        client.get_bid('bid_gone')

    assert caught.value.status_code == status
    assert hint in str(caught.value)
    assert 'server says no' in str(caught.value)
    assert client.request_count == 1


def test_422_message_carries_the_servers_msg_and_loc(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    detail = [{'loc': ['body', 'limit_price'], 'msg': 'must be at least $0.01',
               'type': 'value_error'},
              {'loc': ['body', 'region'], 'msg': 'unknown region',
               'type': 'value_error'}]
    mocked_api.post(BIDS_URL, status=422, json={'detail': detail})

    with pytest.raises(ValidationError) as caught:
        client.create_bid(bid_request())

    message = str(caught.value)
    assert 'body.limit_price: must be at least $0.01' in message
    assert 'body.region: unknown region' in message
    assert caught.value.detail == detail


# POST: never sent twice unless provably not applied.


@pytest.mark.parametrize('failure', [
    500,
    connection_reset(),
    requests.exceptions.ReadTimeout('read timed out'),
    requests.exceptions.ChunkedEncodingError('IncompleteRead(12 bytes read)'),
    requests.exceptions.SSLError(ssl.SSLError(
        1, '[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed')),
], ids=['500', 'reset-mid-response', 'read-timeout', 'incomplete-read',
        'tls-error-reading-the-answer'])
def test_create_bid_is_not_retried_when_it_may_have_been_applied(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        failure: Any) -> None:
    if isinstance(failure, int):
        mocked_api.post(BIDS_URL, status=failure, json={'detail': 'oops'})
    else:
        mocked_api.post(BIDS_URL, body=failure)

    with pytest.raises(AmbiguousResponseError) as caught:
        client.create_bid(bid_request())

    assert len(mocked_api.calls) == 1 and client.request_count == 1
    assert client.retry_count == 0
    assert "List bids named 'sky-train-1'" in str(caught.value)


def test_create_bid_with_a_refused_certificate_is_a_definite_failure(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    """A certificate is refused in the handshake, before the request is sent:
    nothing can have been placed, and the message names the URL to check."""
    mocked_api.post(BIDS_URL, body=requests.exceptions.SSLError(
        ssl.SSLCertVerificationError(1, 'certificate verify failed')))

    with pytest.raises(ConnectionFailedError) as caught:
        client.create_bid(bid_request())

    assert not isinstance(caught.value, AmbiguousResponseError)
    assert not caught.value.retryable
    assert 'Check MITHRIL_API_URL' in str(caught.value)


def test_create_bid_with_unreadable_201_is_ambiguous(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.post(BIDS_URL, status=201, body='<html>gateway</html>')

    with pytest.raises(AmbiguousResponseError):
        client.create_bid(bid_request())

    assert len(mocked_api.calls) == 1


@pytest.mark.parametrize('first_failure', [
    'rate-limited', connection_refused(),
    requests.exceptions.ConnectTimeout('connect timed out')
], ids=['429', 'connection-refused', 'connect-timeout'])
def test_create_bid_is_retried_when_provably_not_applied(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        sleep: RecordingSleep, first_failure: Any) -> None:
    if first_failure == 'rate-limited':
        mocked_api.post(BIDS_URL, status=429, headers={'Retry-After': '2'})
    else:
        mocked_api.post(BIDS_URL, body=first_failure)
    mocked_api.post(BIDS_URL, status=201, json=bid_json())

    bid = client.create_bid(bid_request())

    assert bid.fid == 'bid_1'
    assert len(mocked_api.calls) == 2
    assert (client.request_count, client.retry_count) == (2, 1)
    assert len(sleep.waits) == 1


# Money and models.


def test_limit_price_round_trips_between_decimal_and_dollar_strings(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.post(BIDS_URL, status=201, json=bid_json(limit_price='$32.00'))

    bid = client.create_bid(bid_request(limit_price=Decimal('12.5')))

    sent = json.loads(mocked_api.calls[0].request.body)
    assert sent['limit_price'] == '$12.50'
    assert sent['instance_quantity'] == 2
    assert sent['launch_specification']['ssh_keys'] == ['sshkey_1']
    assert bid.limit_price == Decimal('32.00')
    assert bid.created_at == datetime(2025, 6, 1, 12, tzinfo=timezone.utc)


def test_update_bid_sends_only_the_fields_given(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.patch(f'{BIDS_URL}/bid_1',
                     match=[matchers.json_params_matcher({'limit_price': '$40.00'})],
                     json=bid_json(limit_price='$40.00'))

    bid = client.update_bid('bid_1', limit_price=Decimal('40'))

    assert bid.limit_price == Decimal('40.00')


def test_sub_cent_limit_price_is_refused_before_anything_is_sent(
        client: MithrilClient) -> None:
    with pytest.raises(ValueError, match='whole cents'):
        bid_request(limit_price=Decimal('12.505'))


def test_unknown_fields_and_statuses_are_tolerated(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(f'{BIDS_URL}/bid_1',
                   json=bid_json(status='Hibernating', shiny_new_field={'a': 1},
                                 deactivated_at=None))

    bid = client.get_bid('bid_1')

    assert bid.status == 'Hibernating'
    assert bid.model_extra == {'shiny_new_field': {'a': 1}}


def test_current_price_cents_become_dollars(client: MithrilClient,
                                            mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(f'{API_URL}/v2/pricing/current',
                   match=[matchers.query_param_matcher({'instance_type': 'it_h100x8',
                                                        'instance_quantity': '1'})],
                   json={'spot_price_cents': 1234, 'reserved_price_cents': None,
                         'available_capacity': 3})

    price = client.get_current_price('it_h100x8')

    assert price.spot_price == Decimal('12.34')
    assert price.reserved_price is None


def test_cancel_bid_sends_delete_and_accepts_204(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.delete(f'{BIDS_URL}/bid_1', status=204)

    assert client.cancel_bid('bid_1') is None
    assert mocked_api.calls[0].request.method == 'DELETE'


# Transport details.


def test_requests_carry_auth_accept_and_user_agent_and_join_urls(
        mocked_api: responses.RequestsMock) -> None:
    credentials = Credentials(api_key=API_KEY, api_url=API_URL + '/',
                              project_id='proj_1', profile=None, source='test')
    client = MithrilClient.from_credentials(credentials)
    mocked_api.get(ME_URL, json=ME_JSON)

    client.me()

    headers = mocked_api.calls[0].request.headers
    assert mocked_api.calls[0].request.url == ME_URL
    assert headers['Authorization'] == f'Bearer {API_KEY}'
    assert headers['Accept'] == 'application/json'
    assert headers['User-Agent'] == f'sky-mithril/{sky_mithril.__version__}'


# The API key never leaks.


def _echo_401(mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(ME_URL, status=401,
                   json={'detail': f'invalid token Bearer {API_KEY}'})


def _echo_500(mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(ME_URL, status=500, body=f'Internal error for key {API_KEY}')


def _connection_error_with_key(mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(ME_URL, body=requests.ConnectionError(
        f'proxy refused Authorization: Bearer {API_KEY}'))


@pytest.mark.parametrize('failure', [_echo_401, _echo_500,
                                     _connection_error_with_key],
                         ids=['401-echo', '500-echo', 'connection-error'])
def test_api_key_never_appears_in_errors_or_logs(
        mocked_api: responses.RequestsMock, sleep: RecordingSleep,
        caplog: pytest.LogCaptureFixture, failure: Any) -> None:
    # The client logs under SkyPilot's `sky` logger, which does not propagate
    # to the root logger once SkyPilot configured it: listen on it directly.
    client_logger = logging.getLogger('sky.sky_mithril.api')
    caplog.set_level(logging.DEBUG, logger=client_logger.name)
    client_logger.addHandler(caplog.handler)
    client = MithrilClient(API_KEY, API_URL, max_retry_seconds=1, sleep=sleep,
                           rng=HighestJitter())
    failure(mocked_api)

    try:
        with pytest.raises(MithrilAPIError) as caught:
            client.me()
    finally:
        client_logger.removeHandler(caplog.handler)

    error = caught.value
    assert '<redacted>' in str(error)
    for text in (str(error), repr(error), repr(error.args), caplog.text,
                 repr(client)):
        assert API_KEY not in text
    assert 'GET /v2/me' in caplog.text


def test_ambiguous_post_error_redacts_an_echoed_key(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.post(BIDS_URL, status=502, json={'detail': f'upstream saw {API_KEY}'})

    with pytest.raises(AmbiguousResponseError) as caught:
        client.create_bid(bid_request())

    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)


# A key with the characters JSON may escape: `/` (as `\\/`) and `+` (as `\\u002b`).
ESCAPABLE_KEY = 'mk_live_S3/CR+ET'


def _escape_slashes(text: str) -> str:
    return text.replace('/', '\\/')


def _escape_plus(text: str) -> str:
    return text.replace('+', '\\u002b')


def _escape_every_character(text: str) -> str:
    return ''.join(f'\\u{ord(char):04x}' for char in text)


def _escaped_json(payload: Any, escape: Any) -> str:
    """`payload` as JSON whose copies of ESCAPABLE_KEY are written by `escape`."""
    return json.dumps(payload).replace(ESCAPABLE_KEY, escape(ESCAPABLE_KEY))


def _every_text_of(error: BaseException) -> List[str]:
    return [str(error), repr(error), repr(error.args),
            repr(getattr(error, 'detail', None)),
            ''.join(traceback.format_exception(error))]


@pytest.mark.parametrize('escape', [_escape_slashes, _escape_plus,
                                    _escape_every_character],
                         ids=['slash', 'u002b', 'every-character'])
@pytest.mark.parametrize('method, status, payload', [
    ('GET', 401, {'detail': f'invalid token Bearer {ESCAPABLE_KEY}'}),
    ('GET', 404, {'message': f'no bid for {ESCAPABLE_KEY}'}),
    ('POST', 422, {'detail': [{'loc': ['header', ESCAPABLE_KEY],
                               'msg': f'bad key {ESCAPABLE_KEY}',
                               'type': 'value_error'}]}),
    ('POST', 502, {'detail': f'upstream saw {ESCAPABLE_KEY}'}),
], ids=['detail-text', 'message-text', 'detail-list', 'ambiguous-post'])
def test_a_key_echoed_with_json_escapes_is_redacted_after_decoding(
        mocked_api: responses.RequestsMock, sleep: RecordingSleep,
        escape: Any, method: str, status: int, payload: Dict[str, Any]) -> None:
    client = MithrilClient(ESCAPABLE_KEY, API_URL, max_retry_seconds=0,
                           sleep=sleep, rng=HighestJitter())
    mocked_api.add(method, BIDS_URL if method == 'POST' else ME_URL,
                   status=status, body=_escaped_json(payload, escape),
                   content_type='application/json')

    with pytest.raises(MithrilAPIError) as caught:
        if method == 'POST':
            client.create_bid(bid_request())
        else:
            client.me()

    assert '<redacted>' in str(caught.value)
    for text in _every_text_of(caught.value):
        assert ESCAPABLE_KEY not in text


def test_malformed_api_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(AuthenticationError) as caught:
        MithrilClient('mk_live_abc\ndef', API_URL)

    assert 'mk_live_abc' not in str(caught.value)


@pytest.mark.parametrize('api_url', [
    'http://api.mithril.test', 'http://10.0.0.5:8080', 'http://0.0.0.0:8765',
    'http://127.0.0.1.example.test', 'ftp://127.0.0.1', 'api.mithril.ai',
    'https://', 'http://localhost.example.test:8765',
])
def test_the_key_is_sent_only_over_https_or_to_loopback(api_url: str) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as anywhere:
        anywhere.get(re.compile('.*'), json=ME_JSON)

        with pytest.raises(ConnectionFailedError) as caught:
            MithrilClient(API_KEY, api_url, max_retry_seconds=0).me()

    assert 'https' in str(caught.value) and 'MITHRIL_API_URL' in str(caught.value)
    assert caught.value.retryable is False
    assert not anywhere.calls


@pytest.mark.parametrize('api_url', [
    'https://api.mithril.test', 'https://10.0.0.5:8443', 'http://127.0.0.1:8765',
    'http://127.3.2.1', 'http://[::1]:8765', 'http://localhost:8765',
    'HTTP://LOCALHOST:8765',
])
def test_https_and_loopback_urls_are_used(mocked_api: responses.RequestsMock,
                                          api_url: str) -> None:
    mocked_api.get(re.compile('.*/v2/me'), json=ME_JSON)

    assert MithrilClient(API_KEY, api_url).me().fid == 'usr_1'


def test_close_leaves_a_caller_owned_session_open() -> None:
    session = requests.Session()
    closed: List[bool] = []
    session.close = lambda: closed.append(True)  # type: ignore[method-assign]

    with MithrilClient(API_KEY, API_URL, session=session):
        pass

    assert closed == []
