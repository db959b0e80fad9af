"""MithrilClient's volume calls against a `responses`-mocked API: parsing,
the create POST never repeated when it may have been applied, 409 and 422."""

import random
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List

import pydantic
import pytest
import requests
import responses
from responses import matchers

from sky_mithril.api import (AmbiguousResponseError, ConflictError,
                             MithrilAPIError, MithrilClient, NotFoundError,
                             ValidationError, Volume, VolumeInterface)

API_KEY = 'mk_live_S3CRET_do_not_leak'
API_URL = 'https://api.mithril.test'
VOLUMES_URL = f'{API_URL}/v2/volumes'


class NoWaits:
    """Stands in for time.sleep: counts the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleep() -> NoWaits:
    return NoWaits()


@pytest.fixture
def client(sleep: NoWaits) -> MithrilClient:
    return MithrilClient(API_KEY, API_URL, max_retry_seconds=60.0,
                         sleep=sleep, rng=random.Random(0))


@pytest.fixture
def mocked_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def volume_json(fid: str = 'vol_1', name: str = 'data',
                **overrides: Any) -> Dict[str, Any]:
    volume = {
        'fid': fid,
        'name': name,
        'region': 'us-central3-a',
        'created_at': '2025-06-01T12:00:00',
        'capacity_gb': 100,
        'project': 'proj_1',
        'interface': 'File',
        'bids': [],
        'reservations': [],
        'attachments': {},
    }
    volume.update(overrides)
    return volume


def test_list_volumes_parses_each_field_and_filters_by_region(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    block_device = '/dev/disk/by-id/virtio-vol_2'
    mocked_api.get(VOLUMES_URL,
                   match=[matchers.query_param_matcher({'project': 'proj_1',
                                                        'region': 'us-central3-a'})],
                   json=[volume_json(),
                         volume_json('vol_2', 'scratch', interface='Block',
                                     bids=['bid_9'],
                                     attachments={'inst_1': block_device},
                                     tier='fast')])

    file_share, block = client.list_volumes('proj_1', region='us-central3-a')

    assert file_share.interface is VolumeInterface.FILE
    assert file_share.created_at == datetime(2025, 6, 1, 12,
                                             tzinfo=timezone.utc)
    assert (file_share.bids, file_share.attachments) == ([], {})
    assert block.interface is VolumeInterface.BLOCK
    assert block.capacity_gb == 100 and block.bids == ['bid_9']
    assert block.attachments == {'inst_1': block_device}
    assert block.model_extra == {'tier': 'fast'}


def test_list_volumes_without_region_sends_only_the_project(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.get(VOLUMES_URL,
                   match=[matchers.query_param_matcher({'project': 'proj_1'})],
                   json=[])

    assert client.list_volumes('proj_1') == []


def test_a_volume_missing_a_field_is_an_unreadable_answer(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    broken = volume_json()
    del broken['capacity_gb']
    mocked_api.get(VOLUMES_URL, json=[broken])

    with pytest.raises(MithrilAPIError, match='Volume capacity_gb: Field required'):
        client.list_volumes('proj_1')


def test_create_volume_sends_the_wire_body_and_reads_the_201(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.post(VOLUMES_URL, status=201,
                    match=[matchers.json_params_matcher({
                 'name': 'data', 'project': 'proj_1', 'disk_interface': 'Block',
                 'region': 'us-central3-a', 'size_gb': 250})],
                    json=volume_json(interface='Block', capacity_gb=250))

    volume = client.create_volume('proj_1', 'data', 'us-central3-a', 250,
                                  VolumeInterface.BLOCK)

    assert isinstance(volume, Volume)
    assert (volume.fid, volume.capacity_gb) == ('vol_1', 250)


def test_create_volume_refuses_a_size_below_one_before_sending(
        client: MithrilClient) -> None:
    with pytest.raises(pydantic.ValidationError, match='size_gb'):
        client.create_volume('proj_1', 'data', 'us-central3-a', 0,
                             VolumeInterface.FILE)


def test_create_volume_422_carries_the_servers_detail(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    detail = [{'loc': ['body', 'name'],
               'msg': "A volume named 'data' already exists",
               'type': 'value_error'}]
    mocked_api.post(VOLUMES_URL, status=422, json={'detail': detail})

    with pytest.raises(ValidationError) as caught:
        client.create_volume('proj_1', 'data', 'us-central3-a', 10,
                             VolumeInterface.FILE)

    assert caught.value.detail == detail
    assert "body.name: A volume named 'data' already exists" in str(caught.value)
    assert len(mocked_api.calls) == 1


@pytest.mark.parametrize('failure', [
    502,
    requests.exceptions.ReadTimeout('read timed out'),
    requests.ConnectionError('Connection aborted: reset by peer'),
], ids=['502', 'read-timeout', 'reset-mid-response'])
def test_create_volume_is_not_repeated_when_it_may_have_been_applied(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        failure: Any) -> None:
    if isinstance(failure, int):
        mocked_api.post(VOLUMES_URL, status=failure, json={'detail': 'upstream'})
    else:
        mocked_api.post(VOLUMES_URL, body=failure)

    with pytest.raises(AmbiguousResponseError) as caught:
        client.create_volume('proj_1', 'data', 'us-central3-a', 10,
                             VolumeInterface.FILE)

    assert len(mocked_api.calls) == 1 and client.retry_count == 0
    assert "whether 'data' was created" in str(caught.value)


def test_create_volume_with_an_unreadable_201_is_ambiguous(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.post(VOLUMES_URL, status=201, json={'fid': 'vol_1'})

    with pytest.raises(AmbiguousResponseError):
        client.create_volume('proj_1', 'data', 'us-central3-a', 10,
                             VolumeInterface.FILE)

    assert len(mocked_api.calls) == 1


def test_create_volume_is_retried_after_a_429(
        client: MithrilClient, mocked_api: responses.RequestsMock,
        sleep: NoWaits) -> None:
    mocked_api.post(VOLUMES_URL, status=429, headers={'Retry-After': '1'})
    mocked_api.post(VOLUMES_URL, status=201, json=volume_json())

    assert client.create_volume('proj_1', 'data', 'us-central3-a', 10,
                                VolumeInterface.FILE).fid == 'vol_1'
    assert len(mocked_api.calls) == 2 and sleep.waits == [1.0]


def test_rename_volume_patches_only_the_name(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.patch(f'{VOLUMES_URL}/vol_1',
                     match=[matchers.json_params_matcher({'name': 'renamed'})],
                     json=volume_json(name='renamed'))

    assert client.rename_volume('vol_1', 'renamed').name == 'renamed'


def test_delete_volume_accepts_204(client: MithrilClient,
                                   mocked_api: responses.RequestsMock) -> None:
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=204)

    assert client.delete_volume('vol_1') is None


def test_deleting_an_attached_volume_is_a_conflict_with_the_servers_words(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    said = 'Volume vol_1 is attached to bid bid_9; cancel the bid first.'
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=409, json={'detail': said})

    with pytest.raises(ConflictError) as caught:
        client.delete_volume('vol_1')

    assert caught.value.status_code == 409
    assert str(caught.value).endswith(said)
    assert '..' not in str(caught.value)
    assert len(mocked_api.calls) == 1, 'a 409 is not retried'


def test_deleting_an_unknown_volume_is_not_found(
        client: MithrilClient, mocked_api: responses.RequestsMock) -> None:
    mocked_api.delete(f'{VOLUMES_URL}/vol_gone', status=404,
                      json={'detail': 'Volume vol_gone not found'})

    with pytest.raises(NotFoundError, match='vol_gone not found'):
        client.delete_volume('vol_gone')


def test_delete_volume_is_retried_on_503(client: MithrilClient,
                                         mocked_api: responses.RequestsMock) -> None:
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=503)
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=204)

    client.delete_volume('vol_1')

    assert len(mocked_api.calls) == 2 and client.retry_count == 1

