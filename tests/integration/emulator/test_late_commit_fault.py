"""The emulator's late-commit fault over real HTTP on a manual clock: the
create is answered as failed (a 5xx, or the connection dropped) and committed
`late_commit_s` of market time later, when a test advances the clock."""

import datetime
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.faults import FaultRule
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

AUTH = {'Authorization': 'Bearer test-key'}
TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'


@pytest.fixture(name='server')
def _server() -> Iterator[EmulatorServer]:
    """An emulator whose clock moves only when the test advances it."""
    market = Market(ManualClock(), PlaceholderHosts(), load_catalog())
    with EmulatorServer(market) as server:
        yield server


def _late_commit(server: EmulatorServer, path: str, seconds: float,
                 answer: str = 'server_error') -> None:
    server.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': path, 'late_commit': 1.0,
        'late_commit_s': seconds, 'late_commit_answer': answer,
        'server_error_statuses': [504], 'max_faults': 1}])


def _post(server: EmulatorServer, path: str,
          body: Dict[str, Any]) -> requests.Response:
    return requests.post(f'{server.url}{path}', headers=AUTH, json=body,
                         timeout=10)


def _bid_body(server: EmulatorServer, name: str,
              instance_type: Optional[str] = None) -> Dict[str, Any]:
    types = requests.get(f'{server.url}/v2/instance-types', headers=AUTH,
                         timeout=10).json()
    return {
        'project': PROJECT_FID, 'region': REGION,
        'instance_type': instance_type or next(
            t['fid'] for t in types if t['name'] == TYPE),
        'limit_price': '$20.00', 'instance_quantity': 1, 'name': name,
        'launch_specification': {'ssh_keys': [], 'volumes': []},
    }


def _bids(server: EmulatorServer, name: str) -> List[Dict[str, Any]]:
    return [b for b in server.control('GET', 'state')['bids']
            if b['name'] == name]


def test_a_bid_answered_with_a_5xx_is_committed_n_seconds_later(server):
    _late_commit(server, '/v2/spot/bids', 30)
    answer = _post(server, '/v2/spot/bids', _bid_body(server, 'late'))
    assert answer.status_code == 504
    assert _bids(server, 'late') == []
    server.control('POST', 'advance', seconds=29)
    assert _bids(server, 'late') == []
    server.control('POST', 'advance', seconds=1)
    [bid] = _bids(server, 'late')
    assert bid['status'] == 'Open'
    listed = requests.get(f'{server.url}/v2/spot/bids', headers=AUTH,
                          params={'name': 'late'}, timeout=10).json()['data']
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    assert [datetime.datetime.fromisoformat(b['created_at'])
            for b in listed] == [start + datetime.timedelta(seconds=30)]
    assert server.control('GET', 'faults')['counts']['late_commit'] == 1
    # The fault was spent: the next create is answered and committed at once.
    assert _post(server, '/v2/spot/bids',
                 _bid_body(server, 'now')).status_code == 201
    assert len(_bids(server, 'now')) == 1


def test_a_bid_whose_connection_was_dropped_is_committed_later(server):
    _late_commit(server, '/v2/spot/bids', 10, answer='reset')
    with pytest.raises((requests.ConnectionError,
                        requests.exceptions.ChunkedEncodingError)):
        _post(server, '/v2/spot/bids', _bid_body(server, 'dropped'))
    assert _bids(server, 'dropped') == []
    server.control('POST', 'advance', seconds=10)
    assert [b['status'] for b in _bids(server, 'dropped')] == ['Open']


def test_a_late_commit_the_market_refuses_then_creates_nothing(server):
    _late_commit(server, '/v2/spot/bids', 5)
    answer = _post(server, '/v2/spot/bids',
                   _bid_body(server, 'refused', instance_type='it_nope'))
    assert answer.status_code == 504
    server.control('POST', 'advance', seconds=60)
    assert _bids(server, 'refused') == []
    # The server goes on answering creates.
    assert _post(server, '/v2/spot/bids',
                 _bid_body(server, 'after')).status_code == 201


def test_a_volume_create_can_be_committed_late_too(server):
    _late_commit(server, '/v2/volumes', 20)
    answer = _post(server, '/v2/volumes', {
        'name': 'share', 'project': PROJECT_FID, 'disk_interface': 'File',
        'region': REGION, 'size_gb': 10})
    assert answer.status_code == 504
    assert server.control('GET', 'state')['volumes'] == []
    server.control('POST', 'advance', seconds=20)
    assert [v['name'] for v in
            server.control('GET', 'state')['volumes']] == ['share']


def test_a_late_commit_rule_names_how_the_request_is_answered(server):
    with pytest.raises(ValueError, match='late_commit_answer'):
        FaultRule(late_commit=1.0, late_commit_answer='timeout')
    with pytest.raises(ValueError, match='late_commit_s'):
        FaultRule(late_commit=1.0, late_commit_s=-1)
    refused = requests.put(f'{server.url}/_emulator/faults', timeout=10,
                           json={'rules': [{'late_commit': 0.6,
                                            'lost_response': 0.6}]})
    assert refused.status_code == 422
