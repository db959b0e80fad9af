"""CPU VMs over HTTP: the CPU catalog and regions, launching one, seeing its
instance, terminating it (the rules are in
tests/unit/emulator/market/test_cpu_vms.py)."""

from typing import Any, Dict

from sky_mithril.emulator.market import MCC_IMAGE_VERSION_FID, PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.emulator_api import api


def _launch(server: EmulatorServer, **fields: Any) -> Dict[str, Any]:
    cpu_type = api(server, 'GET', '/v2/cpu/instance-types').json()[0]
    region = api(server, 'GET', '/v2/cpu/regions').json()[0]['name']
    response = api(server, 'POST', '/v2/cpu/instances', {
        'name': 'builder', 'project': PROJECT_FID,
        'instance_type': cpu_type['fid'], 'region': region, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def test_cpu_catalog_and_regions(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    cpu_types = api(server, 'GET', '/v2/cpu/instance-types').json()
    assert [(t['name'], t['num_gpus'], t['hourly_price'])
            for t in cpu_types] == [('c2-standard', 0, 0.2),
                                    ('c2-highmem', 0, 0.6)]
    gpu_types = api(server, 'GET', '/v2/instance-types').json()
    gpu_fids = {t['fid'] for t in gpu_types}
    assert gpu_fids.isdisjoint(t['fid'] for t in cpu_types)
    regions = api(server, 'GET', '/v2/cpu/regions').json()
    auction_regions = {a['region'] for a in
                       api(server, 'GET', '/v2/spot/availability').json()}
    assert {r['name'] for r in regions} == auction_regions
    assert all(r['k8s_enabled'] and r['block_storage_enabled'] and
               r['fileshare_storage_enabled'] for r in regions)
    assert len({r['id'] for r in regions}) == len(regions)


def test_launch_list_and_terminate_a_cpu_vm(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    vm = _launch(server, image_version=MCC_IMAGE_VERSION_FID, ssh_keys=None)
    assert (vm['name'], vm['bid'], vm['status']) == ('builder', None,
                                                     'STATUS_NEW')
    assert vm['reservation'].startswith('res_')
    listed = api(server, 'GET', '/v2/instances', params={
        'project': PROJECT_FID, 'order_type_in': 'Reservation'}).json()
    assert [i['fid'] for i in listed['data']] == [vm['fid']]
    assert api(server, 'GET', '/v2/instances', params={
        'project': PROJECT_FID, 'order_type_in': 'Bid'}).json()['data'] == []
    status = api(server, 'GET', f'/v2/instances/{vm["fid"]}/status').json()
    assert (status['bid'], status['reservation']) == (None, vm['reservation'])

    for _ in range(2):  # idempotent
        deleted = api(server, 'DELETE', f'/v2/cpu/instances/{vm["fid"]}')
        assert (deleted.status_code, deleted.content) == (204, b'')
    status = api(server, 'GET', f'/v2/instances/{vm["fid"]}/status').json()
    assert status['status'] == 'STATUS_TERMINATED'
    assert api(server, 'DELETE', '/v2/cpu/instances/inst_unknown'
              ).status_code == 404


def test_cpu_vm_refusals(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    cpu_type = api(server, 'GET', '/v2/cpu/instance-types').json()[0]
    gpu_type = api(server, 'GET', '/v2/instance-types').json()[0]
    refused = api(server, 'POST', '/v2/cpu/instances', {
        'name': 'x', 'project': PROJECT_FID, 'instance_type': gpu_type['fid'],
        'region': 'nowhere-1a', 'ssh_keys': ['sshkey_unknown']})
    assert refused.status_code == 422
    assert [e['loc'] for e in refused.json()['detail']] == [
        ['body', 'instance_type'], ['body', 'region'], ['body', 'ssh_keys', 0]]
    region = api(server, 'GET', '/v2/cpu/regions').json()[0]['name']
    extra = api(server, 'POST', '/v2/cpu/instances', {
        'name': 'x', 'project': PROJECT_FID, 'instance_type': cpu_type['fid'],
        'region': region, 'limit_price': '$1.00'})
    assert extra.status_code == 422
