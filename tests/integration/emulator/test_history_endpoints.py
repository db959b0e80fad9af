"""The instance history endpoints over HTTP, in the shapes of Mithril's
published spec: status history and pricing history, by bid and by instance,
in pages, in a time window."""

import datetime
from typing import Any, Dict

import requests

from sky_mithril.emulator.clock import DEFAULT_START, ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

AUTH = {'Authorization': 'Bearer test-key'}
TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'


def _get(server: EmulatorServer, path: str, **params: Any) -> Dict[str, Any]:
    response = requests.get(f'{server.url}{path}', headers=AUTH,
                            params={'project': PROJECT_FID, **params},
                            timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _market() -> Market:
    return Market(ManualClock(), PlaceholderHosts(), load_catalog())


def test_pricing_and_status_history_of_a_bid() -> None:
    market = _market()
    market.auctions.set_price(TYPE, REGION, '$1.25')
    fid = market.auctions.get(TYPE, REGION).instance_type.fid
    bid = market.bids.create(project=PROJECT_FID, region=REGION,
                            instance_type=fid, limit_price='$3.00',
                            instance_quantity=2, name='job')
    market.advance(120 + 60 + 1)
    market.bids.cancel(bid.fid)
    with EmulatorServer(market) as server:
        pricing = _get(server, '/v2/instances/pricing/history',
                       bid_fid=bid.fid)
        statuses = _get(server, '/v2/instances/status/history',
                        bid_fid=bid.fid)
    allocated = (DEFAULT_START + datetime.timedelta(seconds=120)).isoformat()
    cancelled = market.now.isoformat()
    assert pricing == {
        'instances': [{'instance_fid': i.fid,
                       'events': [{'price_cents': 125,
                                   'start_time': allocated,
                                   'end_time': cancelled}],
                       'bid_fid': bid.fid, 'reservation_fid': None}
                      for i in bid.instances],
        'next_cursor': None,
    }
    history = statuses['instances'][0]
    assert history['instance_fid'] == bid.instances[0].fid
    assert [e['status'] for e in history['events']] == [
        'STATUS_NEW', 'STATUS_CONFIRMED', 'STATUS_INITIALIZING',
        'STATUS_STARTING', 'STATUS_RUNNING', 'STATUS_TERMINATED']
    assert history['events'][0]['timestamp'] == allocated


def test_pages_window_and_unknown_fids() -> None:
    market = _market()
    fid = market.auctions.get(TYPE, REGION).instance_type.fid
    bid = market.bids.create(project=PROJECT_FID, region=REGION,
                            instance_type=fid, limit_price='$30.00',
                            instance_quantity=3, name='job')
    market.advance(121)
    with EmulatorServer(market) as server:
        first = _get(server, '/v2/instances/pricing/history', limit=2)
        rest = _get(server, '/v2/instances/pricing/history', limit=2,
                    next_cursor=first['next_cursor'])
        one = _get(server, '/v2/instances/status/history',
                   instance_fid=bid.instances[1].fid)
        before = _get(server, '/v2/instances/pricing/history',
                      end_time=DEFAULT_START.isoformat())
        reservation = _get(server, '/v2/instances/pricing/history',
                           reservation_fid='res_x')
        unknown = requests.get(f'{server.url}/v2/instances/pricing/history',
                               headers=AUTH, timeout=10,
                               params={'project': PROJECT_FID,
                                       'bid_fid': 'bid_nope'})
        too_many = requests.get(f'{server.url}/v2/instances/status/history',
                                headers=AUTH, timeout=10,
                                params={'project': PROJECT_FID, 'limit': 101})
    assert [h['instance_fid'] for h in first['instances'] + rest['instances']
            ] == [i.fid for i in bid.instances]
    assert rest['next_cursor'] is None
    assert [h['instance_fid'] for h in one['instances']] == [
        bid.instances[1].fid]
    # Still billing: no end yet.
    assert one['instances'][0]['events'][-1]['status'] == 'STATUS_NEW'
    assert first['instances'][0]['events'][0]['end_time'] is None
    assert before['instances'] == []
    assert reservation == {'instances': [], 'next_cursor': None}
    assert unknown.status_code == 404
    assert too_many.status_code == 422
