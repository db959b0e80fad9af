"""Mithril volumes in the emulator over HTTP: the /v2/volumes routes (the
market's volume rules are in tests/unit/emulator/market/test_storage.py)."""

from typing import Any, Dict, Optional

import requests

from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

AUTH = {'Authorization': 'Bearer test-key'}


def _api(server: EmulatorServer, method: str, path: str,
         json: Optional[Dict[str, Any]] = None,
         params: Optional[Dict[str, str]] = None) -> requests.Response:
    return requests.request(method, f'{server.url}{path}', headers=AUTH,
                            json=json, params=params, timeout=10)


def _server_volume(server: EmulatorServer, name: str,
                   interface: str = 'File') -> Dict[str, Any]:
    region = server.market.auctions.list()[0].region
    response = _api(server, 'POST', '/v2/volumes', {
        'name': name, 'project': PROJECT_FID, 'disk_interface': interface,
        'region': region, 'size_gb': 10})
    assert response.status_code == 201, response.text
    return response.json()


def test_volume_routes(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    share = _server_volume(server, 'share')
    disk = _server_volume(server, 'disk', 'Block')
    assert (share['interface'], disk['interface']) == ('File', 'Block')
    listed = _api(server, 'GET', '/v2/volumes', params={'project': PROJECT_FID})
    assert [v['fid'] for v in listed.json()] == [share['fid'], disk['fid']]
    assert _api(server, 'GET', '/v2/volumes', params={
        'project': PROJECT_FID, 'region': 'nowhere'}).json() == []
    assert _api(server, 'GET', '/v2/volumes').status_code == 422

    renamed = _api(server, 'PATCH', f'/v2/volumes/{share["fid"]}',
                   {'name': 'shared'})
    assert renamed.json()['name'] == 'shared'
    clash = _api(server, 'PATCH', f'/v2/volumes/{share["fid"]}', {'name': 'disk'})
    assert clash.status_code == 422
    [error] = clash.json()['detail']
    assert error['loc'] == ['body', 'name'] and 'already exists' in error['msg']

    bad = _api(server, 'POST', '/v2/volumes', {
        'name': 'x', 'project': PROJECT_FID, 'disk_interface': 'Tape',
        'region': share['region'], 'size_gb': 10})
    assert bad.status_code == 422
    assert [e['loc'] for e in bad.json()['detail']] == [['body', 'disk_interface']]

    quotas = _api(server, 'GET', '/v2/quotas', params={'project': PROJECT_FID})
    storage = [q for q in quotas.json() if q['product_type'] == 'storage']
    assert [(q['units'], q['total_quantity'], q['used_quantity'])
            for q in storage] == [('GB', 20000, 20)]
    state = server.control('GET', 'state')
    assert [v['name'] for v in state['volumes']] == ['shared', 'disk']


def test_deleting_a_volume_a_live_bid_lists_is_409(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    share = _server_volume(server, 'share')
    instance_type = server.market.auctions.list()[0].instance_type.fid
    created = _api(server, 'POST', '/v2/spot/bids', {
        'project': PROJECT_FID, 'region': share['region'],
        'instance_type': instance_type, 'limit_price': '$1.00',
        'instance_quantity': 1, 'name': 'user',
        'launch_specification': {'ssh_keys': [], 'volumes': [share['fid']]}})
    assert created.status_code == 201, created.text
    bid = created.json()
    assert bid['launch_specification']['volumes'] == [share['fid']]
    volume_url = f'/v2/volumes/{share["fid"]}'
    refused = _api(server, 'DELETE', volume_url)
    assert refused.status_code == 409
    assert refused.json() == {'detail': (
        f'Volume {share["fid"]} (share) is attached to bid {bid["fid"]} '
        '(user); cancel the bid first.')}

    patched = _api(server, 'PATCH', f'/v2/spot/bids/{bid["fid"]}',
                   {'volumes': []})
    assert patched.json()['launch_specification']['volumes'] == []
    history = _api(server, 'GET', f'/v2/spot/bids/{bid["fid"]}/history').json()
    assert history['events'][-1]['event_type'] == 'Volumes Removed'
    assert _api(server, 'DELETE', volume_url).status_code == 204
    assert _api(server, 'DELETE', volume_url).status_code == 404
