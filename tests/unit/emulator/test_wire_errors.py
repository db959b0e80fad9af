"""The emulator's refusals on the wire, byte for byte: every check the market
makes, seen through the routes that parse the request (in-process ASGI client,
manual clock). The market names the refused field; the routes say where the
request carried it (`body`, `path`, nested under `launch_specification`)."""

import json
from typing import Any, Dict, Iterator, List, Optional

import pytest
from fastapi.testclient import TestClient

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, Market
from sky_mithril.emulator.server import build_app

TYPE = 'gpu.sxm.1x'
REGION = 'region-a'
OTHER_REGION = 'region-b'
AUTH = {'Authorization': 'Bearer test-key'}
PUBLIC_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorTestKey test'


def _row(region: str) -> Dict[str, str]:
    return {
        'InstanceType': TYPE, 'AcceleratorName': 'H100',
        'AcceleratorCount': '1', 'vCPUs': '20', 'MemoryGiB': '200',
        'Price': '0.50', 'SpotPrice': '1.00', 'Region': region,
        'GpuInfo': "{'Gpus': [{'Name': 'H100', 'Count': 1, "
                   "'MemoryInfo': {'SizeInMiB': 81920}}]}",
    }


@pytest.fixture(name='market')
def fixture_market() -> Market:
    return Market(ManualClock(), PlaceholderHosts(),
                  [_row(REGION), _row(OTHER_REGION)])


@pytest.fixture(name='client')
def fixture_client(market: Market) -> Iterator[TestClient]:
    with TestClient(build_app(market)) as client:
        yield client


def _wire(content: Any) -> bytes:
    """What the server's JSON responses render `content` as."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False,
                      indent=None, separators=(',', ':')).encode()


def _refused(client: TestClient, method: str, path: str, status: int,
             detail: Any, body: Optional[Dict[str, Any]] = None,
             params: Optional[Dict[str, Any]] = None) -> None:
    response = client.request(method, path, headers=AUTH, json=body,
                              params=params)
    assert response.status_code == status, response.text
    assert response.content == _wire({'detail': detail})
    assert response.headers['content-type'] == 'application/json'


def _error(loc: List[Any], msg: str, kind: str = 'value_error') -> Dict[str, Any]:
    return {'loc': loc, 'msg': msg, 'type': kind}


def _created(client: TestClient, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
    response = client.post(path, headers=AUTH, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _bid_body(type_fid: str, **changes: Any) -> Dict[str, Any]:
    spec = changes.pop('launch_specification', {})
    return {
        'project': PROJECT_FID, 'region': REGION, 'instance_type': type_fid,
        'limit_price': '$5.00', 'instance_quantity': 1, 'name': 'job',
        'launch_specification': {'ssh_keys': [], 'volumes': [], **spec},
        **changes,
    }


def _volume_body(**changes: Any) -> Dict[str, Any]:
    return {'name': 'data', 'project': PROJECT_FID, 'disk_interface': 'File',
            'region': REGION, 'size_gb': 10, **changes}


def test_ssh_key_refusals(client: TestClient) -> None:
    _refused(client, 'POST', '/v2/ssh-keys', 422,
             [_error(['body', 'project'], 'Project proj_other not found')],
             {'project': 'proj_other', 'name': 'k'})
    _refused(client, 'POST', '/v2/ssh-keys', 422,
             [_error(['body', 'name'], 'name must not be empty',
                     'string_too_short')],
             {'project': PROJECT_FID, 'name': ' '})
    _refused(client, 'POST', '/v2/ssh-keys', 422,
             [_error(['body', 'public_key'],
                     'public_key is not an OpenSSH public key')],
             {'project': PROJECT_FID, 'name': 'k', 'public_key': 'nope'})
    _refused(client, 'GET', '/v2/ssh-keys', 404,
             'Project proj_other not found', params={'project': 'proj_other'})


def test_bid_refusals_every_field_at_once(client: TestClient,
                                         market: Market) -> None:
    type_fid = market.auctions.get(TYPE, REGION).instance_type.fid
    body = _bid_body(type_fid, project='proj_other', region='nowhere',
                     limit_price='12.50', instance_quantity=0, name=' ',
                     launch_specification={
                         'ssh_keys': ['sshkey_nope'],
                         'volumes': ['vol_nope', 'vol_nope'],
                         'image_version': 'imgv_nope',
                         'kubernetes_cluster': 'k8s_nope',
                         'memory_gb': 64,
                     })
    spec = ['body', 'launch_specification']
    _refused(client, 'POST', '/v2/spot/bids', 422, [
        _error(['body', 'project'], 'Project proj_other not found'),
        _error(['body', 'region'],
               f'No auction for instance type {type_fid} in region nowhere'),
        _error(['body', 'instance_quantity'],
               'Input should be greater than or equal to 1',
               'greater_than_equal'),
        _error(['body', 'limit_price'], 'limit_price must be a positive '
               'dollar amount such as "$12.50"'),
        _error(['body', 'name'], 'name must not be empty', 'string_too_short'),
        _error(spec + ['ssh_keys', 0], 'SSH key sshkey_nope not found in project'),
        _error(spec + ['volumes', 0], 'Volume vol_nope not found in project'),
        _error(spec + ['volumes', 1], 'Volume vol_nope is listed more than once'),
        _error(spec + ['image_version'], 'Image version imgv_nope not found'),
        _error(spec + ['kubernetes_cluster'], 'Kubernetes cluster k8s_nope not '
               'found in project (or terminated)'),
        _error(spec + ['memory_gb'], 'Memory is not adjustable in this auction'),
    ], body)
    _refused(client, 'POST', '/v2/spot/bids', 422, [
        _error(['body', 'instance_type'], 'Instance type it_nope not found'),
    ], _bid_body('it_nope'))


def test_bid_volume_refusals(client: TestClient, market: Market) -> None:
    type_fid = market.auctions.get(TYPE, REGION).instance_type.fid
    elsewhere = _created(client, '/v2/volumes',
                         _volume_body(name='elsewhere', region=OTHER_REGION))
    disk = _created(client, '/v2/volumes',
                    _volume_body(name='disk', disk_interface='Block'))
    first = _created(client, '/v2/spot/bids', _bid_body(
        type_fid, name='first', launch_specification={'volumes': [disk['fid']]}))
    spec_volumes = ['body', 'launch_specification', 'volumes']
    _refused(client, 'POST', '/v2/spot/bids', 422, [
        _error(spec_volumes + [0], f'Volume {elsewhere["fid"]} is in region '
               f"{OTHER_REGION}, not in the bid's region {REGION}"),
        _error(spec_volumes + [1], f'Block volume {disk["fid"]} is already '
               f'attached to bid {first["fid"]} (first); a block volume '
               'attaches to one bid at a time'),
    ], _bid_body(type_fid, launch_specification={
        'volumes': [elsewhere['fid'], disk['fid']]}))


def test_bid_update_refusals(client: TestClient, market: Market) -> None:
    type_fid = market.auctions.get(TYPE, REGION).instance_type.fid
    bid = _created(client, '/v2/spot/bids', _bid_body(type_fid))
    path = f'/v2/spot/bids/{bid["fid"]}'
    _refused(client, 'PATCH', path, 422, [
        _error(['body', 'limit_price'], 'limit_price must be a positive '
               'dollar amount such as "$12.50"'),
        _error(['body', 'volumes', 0], 'Volume vol_nope not found in project'),
        _error(['body', 'memory_gb'], 'Memory is not adjustable in this auction'),
    ], {'limit_price': '$0.001', 'volumes': ['vol_nope'], 'memory_gb': 8})
    assert client.delete(path, headers=AUTH).status_code == 204
    _refused(client, 'PATCH', path, 422, [
        _error(['path', 'bid_fid'], f'Bid {bid["fid"]} is terminated'),
    ], {'paused': True})
    _refused(client, 'PATCH', '/v2/spot/bids/bid_nope', 404,
             'Bid bid_nope not found', {'paused': True})


def test_volume_refusals(client: TestClient) -> None:
    _created(client, '/v2/volumes', _volume_body(name='taken', size_gb=16384))
    _refused(client, 'POST', '/v2/volumes', 422, [
        _error(['body', 'project'], 'Project proj_other not found'),
        _error(['body', 'region'], 'Region nowhere not found'),
        _error(['body', 'disk_interface'], "disk_interface must be 'Block' or "
               "'File'", 'enum'),
        _error(['body', 'size_gb'], 'size_gb must be an integer from 1 to 16384'),
        _error(['body', 'name'], 'name must not be empty', 'string_too_short'),
    ], _volume_body(project='proj_other', region='nowhere',
                    disk_interface='Tape', size_gb=0, name=''))
    _refused(client, 'POST', '/v2/volumes', 422, [
        _error(['body', 'size_gb'], 'Storage quota of 20000 GB exceeded: '
               '16384 GB used, 4000 GB requested'),
        _error(['body', 'name'], 'A volume named taken already exists in the '
               'project'),
    ], _volume_body(name='taken', size_gb=4000))
    volume = _created(client, '/v2/volumes', _volume_body(name='mine'))
    path = f'/v2/volumes/{volume["fid"]}'
    _refused(client, 'PATCH', path, 422, [
        _error(['body', 'name'], "Volume name 'a b' is not a directory name "
               '(no "/", spaces or control characters)'),
    ], {'name': 'a b'})
    _refused(client, 'PATCH', path, 422, [
        _error(['body', 'name'], 'A volume named taken already exists in the '
               'project'),
    ], {'name': 'taken'})
    _refused(client, 'PATCH', '/v2/volumes/vol_nope', 404,
             'Volume vol_nope not found', {'name': 'x'})


def test_volume_delete_conflict(client: TestClient, market: Market) -> None:
    type_fid = market.auctions.get(TYPE, REGION).instance_type.fid
    volume = _created(client, '/v2/volumes', _volume_body(name='keep'))
    bid = _created(client, '/v2/spot/bids', _bid_body(
        type_fid, name='user', launch_specification={'volumes': [volume['fid']]}))
    _refused(client, 'DELETE', f'/v2/volumes/{volume["fid"]}', 409,
             f'Volume {volume["fid"]} (keep) is attached to bid {bid["fid"]} '
             '(user); cancel the bid first.')


def test_kubernetes_cluster_refusals(client: TestClient) -> None:
    _refused(client, 'POST', '/v2/kubernetes/clusters', 422, [
        _error(['body', 'project'], 'Project proj_other not found'),
        _error(['body', 'name'], 'name must not be empty', 'string_too_short'),
        _error(['body', 'region'], 'Region nowhere not found'),
        _error(['body', 'instance_type'], 'Instance type no-type not found'),
        _error(['body', 'k8s_version'],
               "k8s_version must be one of ['1.34', '1.29']"),
        _error(['body', 'ssh_keys', 0], 'SSH key sshkey_x not found in project'),
    ], {'project': 'proj_other', 'name': ' ', 'region': 'nowhere',
        'instance_type': 'no-type', 'ssh_keys': ['sshkey_x'],
        'k8s_version': '1.0'})
    _refused(client, 'GET', '/v2/kubernetes/clusters/k8s_nope', 404,
             'Kubernetes cluster k8s_nope not found')


def test_query_and_control_refusals(client: TestClient, market: Market) -> None:
    _refused(client, 'GET', '/v2/instances', 422, [
        _error(['query', 'status_in'],
               "'STATUS_NOPE' is not a valid InstanceStatus"),
    ], params={'project': PROJECT_FID, 'status_in': 'STATUS_NOPE'})
    _refused(client, 'GET', '/v2/spot/bids', 422, [
        _error(['query', 'next_cursor'],
               'next_cursor is not a cursor this server issued'),
    ], params={'next_cursor': '!!'})
    _refused(client, 'GET', '/v2/instances', 404,
             'Project proj_other not found', params={'project': 'proj_other'})
    _refused(client, 'POST', '/_emulator/price', 422, [
        _error(['body', 'price'], 'price must be positive'),
    ], {'instance_type': TYPE, 'region': REGION, 'price': '$0'})
    _refused(client, 'POST', '/_emulator/price', 404,
             'Auction gpu.sxm.1x@nowhere not found',
             {'instance_type': TYPE, 'region': 'nowhere', 'price': '$1'})
    type_fid = market.auctions.get(TYPE, REGION).instance_type.fid
    bid = _created(client, '/v2/spot/bids', _bid_body(type_fid))
    _refused(client, 'POST', f'/_emulator/bids/{bid["fid"]}/preempt', 409,
             f'Bid {bid["fid"]} is Open; only a non-filler Allocated bid can '
             'be preempted')
