"""Actions on single instances over HTTP: PATCH /v2/instances (pause,
resume), restart and refresh-boot-disk, on a CPU VM (an instance of a
reservation) and on a spot instance, which Mithril answers 501 (the rules are
in tests/unit/emulator/market/test_instances.py)."""

from typing import Any, Dict

from sky_mithril.emulator.market import (IMAGE_VERSION_FID,
                                         MCC_IMAGE_VERSION_FID, PROJECT_FID)
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.emulator_api import api

BOOT_S = 60.0
STOP_S = 10.0
RESTART_S = 30.0


def _advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


def _launch_cpu_vm(server: EmulatorServer) -> Dict[str, Any]:
    cpu_type = api(server, 'GET', '/v2/cpu/instance-types').json()[0]
    region = api(server, 'GET', '/v2/cpu/regions').json()[0]['name']
    return api(server, 'POST', '/v2/cpu/instances', {
        'name': 'vm', 'project': PROJECT_FID,
        'instance_type': cpu_type['fid'], 'region': region}).json()


def _status(server: EmulatorServer, fid: str) -> str:
    return api(server, 'GET', f'/v2/instances/{fid}/status').json()['status']


def _set_status(server: EmulatorServer, status: str, *fids: str) -> Any:
    return api(server, 'PATCH', '/v2/instances',
               {'instances': list(fids), 'status': status})


def test_pause_refresh_resume_and_restart_a_cpu_vm(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    fid = _launch_cpu_vm(server)['fid']
    not_ready = _set_status(server, 'STATUS_PAUSED', fid)
    assert not_ready.status_code == 409
    _advance(server, BOOT_S)
    paused = _set_status(server, 'STATUS_PAUSED', fid)
    assert (paused.status_code, paused.json()) == (
        200, {'instances': {fid: 'STATUS_STOPPING'}})
    running = api(server, 'POST', f'/v2/instances/{fid}/refresh-boot-disk')
    assert running.status_code == 422
    assert running.json()['reason'] == 'INSTANCE_RUNNING'
    _advance(server, STOP_S)
    assert _status(server, fid) == 'STATUS_PAUSED'
    wrong_image = api(server, 'POST', f'/v2/instances/{fid}/refresh-boot-disk',
                      {'image_version': IMAGE_VERSION_FID})
    assert wrong_image.json()['reason'] == 'INVALID_IMAGE_VERSION'
    refreshed = api(server, 'POST', f'/v2/instances/{fid}/refresh-boot-disk')
    assert (refreshed.status_code, refreshed.json()) == (200, {
        'fid': fid, 'image_version': MCC_IMAGE_VERSION_FID,
        'status': 'REFRESHED'})
    resumed = _set_status(server, 'STATUS_RUNNING', fid)
    assert resumed.json() == {'instances': {fid: 'STATUS_CONFIRMED'}}
    _advance(server, BOOT_S)
    restarted = api(server, 'POST', f'/v2/instances/{fid}/restart')
    assert (restarted.status_code, restarted.json()) == (202, {
        'fid': fid, 'status': 'RESTARTING'})
    assert _status(server, fid) == 'STATUS_RUNNING'
    again = api(server, 'POST', f'/v2/instances/{fid}/restart')
    assert again.status_code == 409
    _advance(server, RESTART_S)
    assert api(server, 'POST', f'/v2/instances/{fid}/restart'
              ).status_code == 202


def test_spot_instances_are_not_supported(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    auction = api(server, 'GET', '/v2/spot/availability').json()[0]
    bid = api(server, 'POST', '/v2/spot/bids', {
        'project': PROJECT_FID, 'region': auction['region'],
        'instance_type': auction['instance_type'], 'limit_price': '$100.00',
        'instance_quantity': 1, 'name': 'spot',
        'launch_specification': {'ssh_keys': [], 'volumes': []}}).json()
    _advance(server, 120 + BOOT_S)
    spot = api(server, 'GET', f'/v2/spot/bids/{bid["fid"]}').json()[
        'instances'][0]
    for method, path, body in (
            ('PATCH', '/v2/instances', {'instances': [spot],
                                        'status': 'STATUS_PAUSED'}),
            ('POST', f'/v2/instances/{spot}/restart', None),
            ('POST', f'/v2/instances/{spot}/refresh-boot-disk', None)):
        answer = api(server, method, path, body)
        assert answer.status_code == 501, (path, answer.text)
        assert 'spot' in answer.json()['detail']
    assert _status(server, spot) == 'STATUS_RUNNING'
    assert api(server, 'DELETE', f'/v2/cpu/instances/{spot}'
              ).status_code == 404


def test_instance_action_refusals(manual_clock_emulator: EmulatorServer
                                 ) -> None:
    server = manual_clock_emulator
    fid = _launch_cpu_vm(server)['fid']
    assert _set_status(server, 'STATUS_PAUSED', fid,
                       'inst_unknown').status_code == 404
    assert _set_status(server, 'STATUS_PAUSED', fid,
                       fid).status_code == 422
    assert _set_status(server, 'STATUS_STOPPED', fid).status_code == 422
    for path in ('/v2/instances/inst_unknown/restart',
                 '/v2/instances/inst_unknown/refresh-boot-disk'):
        assert api(server, 'POST', path).status_code == 404
