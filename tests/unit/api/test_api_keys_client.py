"""MithrilClient's API-key calls against a `responses`-mocked API: the body
Mithril wants, the secret kept out of reprs, the create POST never repeated
once it may have been applied, revoking retried like any DELETE."""

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List

import pytest
import responses
from responses import matchers

from sky_mithril.api import (AmbiguousResponseError, ApiKey, MithrilClient,
                             NotFoundError)

API_KEY = 'mk_live_S3CRET_account'
MINTED = 'fkey_S3CRETminted0123456789'
API_URL = 'https://api.mithril.test'
KEYS_URL = f'{API_URL}/v2/api-keys'
EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def waits() -> List[float]:
    return []


@pytest.fixture
def client(waits: List[float]) -> MithrilClient:
    return MithrilClient(API_KEY, API_URL, max_retry_seconds=60.0,
                         sleep=waits.append, rng=random.Random(0))


@pytest.fixture
def mocked_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def key_json(**overrides: Any) -> Dict[str, Any]:
    return {'fid': 'apikey_1', 'name': 'sky-c-1234', 'created_at':
            '2029-12-01T00:00:00Z', 'expires_at': '2030-01-01T00:00:00Z',
            'deactivated_at': None, 'snippet': 'fkey_S3CR...', **overrides}


def test_create_sends_name_and_expiry_and_keeps_the_secret_out_of_repr(
        client, mocked_api):
    mocked_api.post(KEYS_URL, status=201,
                    json={**key_json(), 'secret': MINTED},
                    match=[matchers.json_params_matcher(
                        {'name': 'sky-c-1234',
                         'expires_at': '2030-01-01T00:00:00Z'})])
    created = client.create_api_key('sky-c-1234', EXPIRES)
    assert created.secret == MINTED and created.fid == 'apikey_1'
    assert created.expires_at == EXPIRES
    assert MINTED not in repr(created) and 'S3CR' not in repr(created)


def test_a_create_whose_answer_was_lost_is_not_repeated(client, mocked_api,
                                                        waits):
    mocked_api.post(KEYS_URL, status=502, body='bad gateway')
    with pytest.raises(AmbiguousResponseError) as info:
        client.create_api_key('sky-c-1234', EXPIRES)
    assert len(mocked_api.calls) == 1 and waits == []
    assert 'Revoke the API keys named' in str(info.value)


def test_list_and_liveness(client, mocked_api):
    mocked_api.get(KEYS_URL, json=[
        key_json(),
        key_json(fid='apikey_2', deactivated_at='2029-12-02T00:00:00Z'),
        key_json(fid='apikey_3', expires_at='2029-12-03T00:00:00Z')])
    keys = client.list_api_keys()
    now = datetime(2029, 12, 10, tzinfo=timezone.utc)
    assert [k.fid for k in keys if k.is_live(now)] == ['apikey_1']
    assert all(isinstance(k, ApiKey) for k in keys)
    assert not keys[0].is_live(EXPIRES) and keys[0].is_live(EXPIRES - timedelta(seconds=1))


def test_revoke_is_retried_and_404_names_the_key(client, mocked_api, waits):
    url = f'{KEYS_URL}/apikey_1'
    mocked_api.delete(url, status=503)
    mocked_api.delete(url, status=204)
    client.revoke_api_key('apikey_1')
    assert len(waits) == 1
    mocked_api.delete(f'{KEYS_URL}/apikey_9', status=404,
                      json={'detail': 'API key not found'})
    with pytest.raises(NotFoundError):
        client.revoke_api_key('apikey_9')


def test_server_now_follows_the_servers_date_header(client, mocked_api):
    before = client.server_now()
    assert abs(before - datetime.now(timezone.utc)) < timedelta(minutes=1)
    mocked_api.get(KEYS_URL, json=[],
                   headers={'Date': 'Wed, 01 Jan 2025 00:00:00 GMT'})
    client.list_api_keys()
    now = client.server_now()
    assert datetime(2025, 1, 1, tzinfo=timezone.utc) <= now < datetime(
        2025, 1, 1, 0, 1, tzinfo=timezone.utc)
