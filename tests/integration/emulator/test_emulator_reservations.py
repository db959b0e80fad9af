"""Reservations over HTTP: the answers the contract scenario does not
reach (a shrink refused 400 once ended, 404 for an instance not the
reservation's, 502 when none could be stopped; a launch specification
field in a PATCH refused; an availability mode missing its parameters) and
what `/_emulator/state` shows of them (the rules are in
tests/unit/emulator/market/test_reservations.py)."""

import datetime
from typing import Any, Dict

from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.emulator_api import api

BOOT_S = 60.0
HOUR = datetime.timedelta(hours=1)


def _advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


def _auction(server: EmulatorServer) -> Dict[str, Any]:
    return api(server, 'GET', '/v2/spot/availability').json()[0]


def _reserve(server: EmulatorServer, quantity: int) -> Dict[str, Any]:
    auction = _auction(server)
    start = datetime.datetime.fromisoformat(
        server.control('GET', 'state')['now'])
    made = api(server, 'POST', '/v2/reservation', {
        'project': PROJECT_FID, 'instance_type': auction['instance_type'],
        'region': auction['region'], 'start_time': start.isoformat(),
        'end_time': (start + 3 * HOUR).isoformat(),
        'instance_quantity': quantity, 'name': 'reserved',
        'launch_specification': {'volumes': [], 'ssh_keys': []}})
    assert made.status_code == 201, made.text
    return made.json()


def _shrink(server: EmulatorServer, fid: str, *instances: str) -> Any:
    return api(server, 'POST', f'/v2/reservation/{fid}/terminate-instances',
               {'instances': list(instances), 'reduce_capacity': True})


def test_shrinking_refusals(manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    reservation = _reserve(server, 2)
    busy, idle = reservation['instances']
    _advance(server, BOOT_S)
    unknown = _shrink(server, reservation['fid'], 'inst_unknown')
    assert unknown.status_code == 404
    assert api(server, 'POST', f'/v2/instances/{busy}/restart').ok
    none_stopped = _shrink(server, reservation['fid'], busy)
    assert none_stopped.status_code == 502
    assert busy in none_stopped.json()['detail']
    partial = _shrink(server, reservation['fid'], busy, idle)
    assert (partial.status_code, partial.json()) == (
        207, {'terminated_instances': [idle]})
    _advance(server, 3 * HOUR.total_seconds())
    ended = _shrink(server, reservation['fid'], busy)
    assert ended.status_code == 400


def test_a_launch_specification_field_cannot_be_patched(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    fid = _reserve(server, 1)['fid']
    refused = api(server, 'PATCH', f'/v2/reservation/{fid}',
                  {'ssh_keys': ['sshkey_other']})
    assert refused.status_code == 422
    assert refused.json()['detail'][0]['loc'] == ['body', 'ssh_keys']


def test_an_availability_mode_needs_its_parameters(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    auction = _auction(server)
    missing = api(server, 'GET', '/v2/reservation/availability', params={
        'project': PROJECT_FID, 'instance_type': auction['instance_type'],
        'region': auction['region'], 'mode': 'check', 'quantity': 1})
    assert missing.status_code == 422
    assert [e['loc'] for e in missing.json()['detail']] == [
        ['query', 'start_time'], ['query', 'end_time']]


def test_the_state_shows_what_reservations_hold(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    reservation = _reserve(server, 2)
    _advance(server, BOOT_S)
    paused = reservation['instances'][0]
    assert api(server, 'PATCH', '/v2/instances', {
        'instances': [paused], 'status': 'STATUS_PAUSED'}).ok
    state = server.control('GET', 'state')
    [shown] = state['reservations']
    assert (shown['fid'], shown['held'], shown['lent']) == (
        reservation['fid'], 1, [paused])
    auction = _auction(server)
    [held] = [a['held_by_reservations'] for a in state['auctions']
              if a['instance_type_fid'] == auction['instance_type'] and
              a['region'] == auction['region']]
    assert held == 1
