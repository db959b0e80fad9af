"""`/v2/api-keys` over real HTTP: a minted key works like the account's key
until it is revoked or expires, then every endpoint answers 401."""

import datetime
from typing import Any, Dict, Iterator

import pytest
import requests

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

ACCOUNT_KEY = 'account-key'
# One read per kind of resource, and the key listing itself.
ENDPOINTS = ('/v2/me', '/v2/projects', f'/v2/spot/bids?project={PROJECT_FID}',
             f'/v2/instances?project={PROJECT_FID}', '/v2/spot/availability',
             f'/v2/volumes?project={PROJECT_FID}', '/v2/api-keys')


@pytest.fixture(name='emulator')
def fixture_emulator() -> Iterator[EmulatorServer]:
    """Only the account's key (and keys minted with it) get in; time moves
    when the test advances it."""
    market = Market(ManualClock(), PlaceholderHosts(), load_catalog())
    with EmulatorServer(market, api_key=ACCOUNT_KEY) as server:
        yield server


def call(server: EmulatorServer, method: str, path: str, token: str,
         **kwargs: Any) -> requests.Response:
    return requests.request(method, f'{server.url}{path}',
                            headers={'Authorization': f'Bearer {token}'},
                            timeout=10, **kwargs)


def mint(server: EmulatorServer, name: str = 'sky-node',
         lifetime: datetime.timedelta = datetime.timedelta(hours=1),
         token: str = ACCOUNT_KEY) -> Dict[str, Any]:
    now = datetime.datetime.fromisoformat(
        server.control('GET', 'state')['now'])
    answer = call(server, 'POST', '/v2/api-keys', token,
                  json={'name': name,
                        'expires_at': (now + lifetime).isoformat()})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_minted_key_is_answered_in_mithrils_shape_and_works(emulator):
    created = mint(emulator)
    assert set(created) == {'fid', 'name', 'created_at', 'expires_at',
                            'deactivated_at', 'snippet', 'secret'}
    assert created['deactivated_at'] is None
    assert created['secret'].startswith(created['snippet'].rstrip('.'))
    for path in ENDPOINTS:
        assert call(emulator, 'GET', path, created['secret']).status_code == 200, path
    listed = call(emulator, 'GET', '/v2/api-keys', ACCOUNT_KEY).json()
    assert listed == [{k: v for k, v in created.items() if k != 'secret'}]


def test_a_revoked_key_gets_401_everywhere(emulator):
    created = mint(emulator)
    # A minted key can mint and revoke as the account can: Mithril has no
    # scoped keys.
    other = mint(emulator, 'other', token=created['secret'])
    revoked = call(emulator, 'DELETE', f'/v2/api-keys/{created["fid"]}',
                   other['secret'])
    assert revoked.status_code == 204
    for path in ENDPOINTS:
        assert call(emulator, 'GET', path, created['secret']).status_code == 401, path
    assert call(emulator, 'GET', '/v2/me', other['secret']).status_code == 200
    listed = {k['fid']: k for k in
              call(emulator, 'GET', '/v2/api-keys', ACCOUNT_KEY).json()}
    assert listed[created['fid']]['deactivated_at'] is not None
    assert call(emulator, 'DELETE', f'/v2/api-keys/{created["fid"]}',
                ACCOUNT_KEY).status_code == 204


def test_an_expired_key_gets_401_on_the_markets_clock(emulator):
    created = mint(emulator, lifetime=datetime.timedelta(minutes=10))
    emulator.control('POST', 'advance', seconds=599)
    assert call(emulator, 'GET', '/v2/me', created['secret']).status_code == 200
    emulator.control('POST', 'advance', seconds=1)
    for path in ENDPOINTS:
        assert call(emulator, 'GET', path, created['secret']).status_code == 401, path
    assert call(emulator, 'GET', '/v2/me', ACCOUNT_KEY).status_code == 200


def test_other_tokens_get_401(emulator):
    assert call(emulator, 'GET', '/v2/me', 'not-a-key').status_code == 401
    assert call(emulator, 'POST', '/v2/api-keys', 'not-a-key',
                json={'name': 'x', 'expires_at': '2030-01-01T00:00:00Z'}
                ).status_code == 401


@pytest.mark.parametrize('name,lifetime,detail', [
    ('n' * 60, datetime.timedelta(hours=1),
     'API key name must be less than 60 characters'),
    ('node', datetime.timedelta(days=366),
     'API key expiry must be between now and 1 year from now'),
], ids=['long-name', 'over-a-year'])
def test_a_refused_name_or_expiry_is_400(emulator, name, lifetime, detail):
    now = datetime.datetime.fromisoformat(emulator.control('GET', 'state')['now'])
    answer = call(emulator, 'POST', '/v2/api-keys', ACCOUNT_KEY,
                  json={'name': name, 'expires_at': (now + lifetime).isoformat()})
    assert answer.status_code == 400 and answer.json() == {'detail': detail}
    assert call(emulator, 'GET', '/v2/api-keys', ACCOUNT_KEY).json() == []


def test_revoking_an_unknown_key_is_404(emulator):
    assert call(emulator, 'DELETE', '/v2/api-keys/apikey_unknown',
                ACCOUNT_KEY).status_code == 404
