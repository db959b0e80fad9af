"""MithrilClient's reservation calls against a `responses`-mocked API: the
body Mithril wants, money parsed, a purchase never sent twice once it may
have been applied, and the partial (207) return of instances."""

import random
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Dict, Iterator, List

import pytest
import responses
from responses import matchers

from sky_mithril.api import (AmbiguousResponseError, CreateReservationRequest,
                             LaunchSpecification, MithrilClient,
                             PriceSpecification)

API_URL = 'https://api.mithril.test'
RESERVATIONS_URL = f'{API_URL}/v2/reservation'
START = datetime(2030, 1, 1, tzinfo=timezone.utc)
END = datetime(2030, 1, 2, tzinfo=timezone.utc)


@pytest.fixture
def waits() -> List[float]:
    return []


@pytest.fixture
def client(waits: List[float]) -> MithrilClient:
    return MithrilClient('mk_live_S3CRET', API_URL, max_retry_seconds=60.0,
                         sleep=waits.append, rng=random.Random(0))


@pytest.fixture
def mocked_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def reservation_json(**overrides: Any) -> Dict[str, Any]:
    return {'fid': 'res_1', 'name': 'train-week', 'project': 'proj_1',
            'created_by': 'user_1', 'created_at': '2029-12-31T00:00:00Z',
            'instance_quantity': 2, 'instance_type': 'it_a100',
            'instances': ['inst_1', 'inst_2'],
            'launch_specification': {'volumes': [], 'ssh_keys': ['sshkey_1']},
            'status': 'Pending', 'start_time': '2030-01-01T00:00:00Z',
            'end_time': '2030-01-02T00:00:00Z', 'total_price': '$95.52',
            'unit_price': '$1.99', 'region': 'us-central3-a', **overrides}


def request() -> CreateReservationRequest:
    return CreateReservationRequest(
        project='proj_1', instance_type='it_a100', region='us-central3-a',
        start_time=START, end_time=END, instance_quantity=2, name='train-week',
        launch_specification=LaunchSpecification(ssh_keys=['sshkey_1']),
        price_specification=PriceSpecification(max_unit_price=250))


def test_create_sends_the_spec_body_and_reads_the_price(client, mocked_api):
    mocked_api.post(RESERVATIONS_URL, status=201, json=reservation_json(),
                    match=[matchers.json_params_matcher({
                        'project': 'proj_1', 'instance_type': 'it_a100',
                        'region': 'us-central3-a',
                        'start_time': '2030-01-01T00:00:00Z',
                        'end_time': '2030-01-02T00:00:00Z',
                        'instance_quantity': 2, 'name': 'train-week',
                        'launch_specification': {'ssh_keys': ['sshkey_1'],
                                                 'volumes': []},
                        'price_specification': {'offer_key': 'standard',
                                                'max_unit_price': 250}})])
    bought = client.create_reservation(request())
    assert bought.total_price == Decimal('95.52') and bought.unit_price == Decimal('1.99')
    assert bought.instances == ['inst_1', 'inst_2'] and bought.start_time == START


def test_a_purchase_whose_answer_was_lost_is_not_repeated(client, mocked_api, waits):
    mocked_api.post(RESERVATIONS_URL, status=503, body='unavailable')
    with pytest.raises(AmbiguousResponseError) as info:
        client.create_reservation(request())
    assert len(mocked_api.calls) == 1 and waits == []
    assert "List reservations named 'train-week'" in str(info.value)


def test_quote_parses_every_offer_in_dollars(client, mocked_api):
    offer = {'key': 'standard', 'display_name': 'Standard', 'unit_price': '1.99',
             'return_buyback_price': '0.80', 'pause_buyback_price': '0.40',
             'total_price': '95.52', 'total_etbp_value': '38.40',
             'total_fubp_value': '19.20', 'option_premium': '0.00'}
    mocked_api.get(f'{RESERVATIONS_URL}/quote', json={'offers': [offer]},
                   match=[matchers.query_param_matcher({
                       'project': 'proj_1', 'instance_type': 'it_a100',
                       'region': 'us-central3-a',
                       'start_time': '2030-01-01T00:00:00+00:00',
                       'end_time': '2030-01-02T00:00:00+00:00', 'quantity': '2'})])
    [quoted] = client.quote_reservation('proj_1', 'it_a100', 'us-central3-a',
                                        START, END, 2).offers
    assert (quoted.unit_price, quoted.pause_buyback_price,
            quoted.return_buyback_price) == (Decimal('1.99'), Decimal('0.40'),
                                             Decimal('0.80'))


def test_returning_instances_reports_a_partial_return(client, mocked_api):
    url = f'{RESERVATIONS_URL}/res_1/terminate-instances'
    mocked_api.post(url, status=200, body='', match=[matchers.json_params_matcher(
        {'instances': ['inst_1'], 'reduce_capacity': True})])
    mocked_api.post(url, status=207, json={'terminated_instances': ['inst_1']})
    whole = client.return_reservation_instances('res_1', ['inst_1'])
    assert whole.terminated_instances == ['inst_1'] and not whole.partial
    partial = client.return_reservation_instances('res_1', ['inst_1', 'inst_2'])
    assert partial.terminated_instances == ['inst_1'] and partial.partial


def test_pausing_reserved_instances_says_where_each_is_going(client, mocked_api):
    mocked_api.patch(f'{API_URL}/v2/instances', json={'instances': {
        'inst_1': 'STATUS_STOPPING'}}, match=[matchers.json_params_matcher(
            {'instances': ['inst_1'], 'status': 'STATUS_PAUSED'})])
    assert client.set_instances_paused(['inst_1'], True) == {'inst_1': 'STATUS_STOPPING'}


def test_a_spec_violation_is_refused_before_sending():
    with pytest.raises(ValueError):
        PriceSpecification(max_unit_price=-1)
    with pytest.raises(ValueError):
        CreateReservationRequest(**{**request().model_dump(), 'instance_quantity': 0})
