"""The emulator over real HTTP on 127.0.0.1, hit with plain `requests`."""

import datetime
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import click
import pytest
import requests

from sky_mithril.emulator import cli
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer, load_catalog

from tests.helpers import REPO

AUTH = {'Authorization': 'Bearer test-key'}
TYPE = 'h100-80gb.sxm.8x'
REGION = 'us-central2-a'
MONEY = re.compile(r'^\$\d+\.\d\d$')


def _control(server: EmulatorServer, method: str, path: str,
             **kwargs: Any) -> Any:
    response = requests.request(method, f'{server.url}/_emulator/{path}',
                                timeout=10, **kwargs)
    assert response.ok, response.text
    return response.json() if response.content else None


def _get(server: EmulatorServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(f'{server.url}{path}', headers=AUTH, timeout=10,
                        **kwargs)


def _type_fid(server: EmulatorServer) -> str:
    types = _get(server, '/v2/instance-types').json()
    return next(t['fid'] for t in types if t['name'] == TYPE)


def _bid_body(server: EmulatorServer, name: str = 'job',
              limit: str = '$20.00', quantity: int = 1) -> Dict[str, Any]:
    return {
        'project': PROJECT_FID, 'region': REGION,
        'instance_type': _type_fid(server), 'limit_price': limit,
        'instance_quantity': quantity, 'name': name,
        'launch_specification': {'ssh_keys': [], 'volumes': []},
    }


def _create_bid(server: EmulatorServer, **kwargs: Any) -> Dict[str, Any]:
    response = requests.post(f'{server.url}/v2/spot/bids', headers=AUTH,
                             json=_bid_body(server, **kwargs), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _set_faults(server: EmulatorServer, *rules: Dict[str, Any]) -> None:
    _control(server, 'PUT', 'faults', json={'rules': list(rules)})


def _bid_state(server: EmulatorServer, fid: str) -> Dict[str, Any]:
    state = _control(server, 'GET', 'state')
    return next(b for b in state['bids'] if b['fid'] == fid)


@pytest.fixture(name='keyed_server')
def fixture_keyed_server() -> Iterator[EmulatorServer]:
    server = EmulatorServer(api_key='the-only-key')
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_missing_bearer_is_401(bare_emulator: EmulatorServer) -> None:
    assert requests.get(f'{bare_emulator.url}/v2/me',
                        timeout=10).status_code == 401
    assert requests.get(f'{bare_emulator.url}/v2/me',
                        headers={'Authorization': 'Bearer '},
                        timeout=10).status_code == 401
    assert _get(bare_emulator, '/v2/me').json()['fid']


def test_wrong_key_is_401_without_echo(keyed_server: EmulatorServer) -> None:
    wrong = requests.get(f'{keyed_server.url}/v2/projects',
                         headers={'Authorization': 'Bearer guess-me-123'},
                         timeout=10)
    assert wrong.status_code == 401
    assert 'guess-me-123' not in wrong.text
    assert 'the-only-key' not in wrong.text
    assert wrong.json()['detail']
    right = requests.get(f'{keyed_server.url}/v2/projects',
                         headers={'Authorization': 'Bearer the-only-key'},
                         timeout=10)
    assert right.json() == [{'fid': PROJECT_FID, 'name': 'emulator',
                             'created_at': right.json()[0]['created_at']}]


def test_bid_round_trip(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    created = _create_bid(server, limit='$20.00', quantity=2)
    fid = created['fid']
    assert created['status'] == 'Open'
    assert created['limit_price'] == '$20.00'
    assert created['instances'] == []
    assert created['region'] == REGION

    assert _get(server, f'/v2/spot/bids/{fid}').json() == created
    listed = _get(server, '/v2/spot/bids', params={'project': PROJECT_FID})
    assert [b['fid'] for b in listed.json()['data']] == [fid]
    assert listed.json()['next_cursor'] is None

    _control(server, 'POST', 'advance', json={'seconds': 180})
    bid = _get(server, f'/v2/spot/bids/{fid}').json()
    assert bid['status'] == 'Allocated' and len(bid['instances']) == 2
    instances = _get(server, '/v2/instances',
                     params={'project': PROJECT_FID}).json()['data']
    assert {i['status'] for i in instances} == {'STATUS_RUNNING'}
    assert all(i['ssh_destination'] and i['private_ip'] for i in instances)

    patched = requests.patch(f'{server.url}/v2/spot/bids/{fid}', headers=AUTH,
                             json={'limit_price': '$25.50'}, timeout=10)
    assert patched.status_code == 200
    assert patched.json()['limit_price'] == '$25.50'
    history = _get(server, f'/v2/spot/bids/{fid}/history').json()
    assert [e['event_type'] for e in history['events']] == [
        'Placed', 'Allocated', 'Limit Price Changed'
    ]
    assert all(MONEY.match(e['limit_price'])
               for e in history['events'] if e['limit_price'])

    deleted = requests.delete(f'{server.url}/v2/spot/bids/{fid}',
                              headers=AUTH, timeout=10)
    assert deleted.status_code == 204 and deleted.content == b''
    assert _get(server, f'/v2/spot/bids/{fid}/status').json() == {
        'bid_fid': fid, 'status': 'Terminated'
    }
    again = requests.delete(f'{server.url}/v2/spot/bids/{fid}', headers=AUTH,
                            timeout=10)
    assert again.status_code == 204
    final = _get(server, f'/v2/spot/bids/{fid}').json()
    assert final['deactivated_at'] is not None
    status = _get(server, f'/v2/instances/{instances[0]["fid"]}/status')
    assert status.json()['status'] == 'STATUS_TERMINATED'


def test_unknown_fids_are_404(bare_emulator: EmulatorServer) -> None:
    for path in ('/v2/spot/bids/bid_nope', '/v2/spot/bids/bid_nope/status',
                 '/v2/instances/inst_nope/status'):
        response = _get(bare_emulator, path)
        assert response.status_code == 404
        assert 'not found' in response.json()['detail']
    assert requests.delete(f'{bare_emulator.url}/v2/spot/bids/bid_nope',
                           headers=AUTH, timeout=10).status_code == 404


def test_bad_body_is_422_in_fastapi_shape(
        bare_emulator: EmulatorServer) -> None:
    body = _bid_body(bare_emulator, limit='abc')
    response = requests.post(f'{bare_emulator.url}/v2/spot/bids',
                             headers=AUTH, json=body, timeout=10)
    assert response.status_code == 422
    detail, = response.json()['detail']
    assert detail['loc'] == ['body', 'limit_price']
    assert isinstance(detail['msg'], str) and isinstance(detail['type'], str)
    del body['name']
    missing = requests.post(f'{bare_emulator.url}/v2/spot/bids',
                            headers=AUTH, json=body, timeout=10)
    assert missing.status_code == 422
    assert missing.json()['detail'][0]['loc'] == ['body', 'name']
    no_project = _get(bare_emulator, '/v2/instances')
    assert no_project.status_code == 422


def test_paging_with_next_cursor(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    fids = [_create_bid(server, name=f'job-{n}')['fid'] for n in range(5)]
    pages: List[List[str]] = []
    cursor: Optional[str] = None
    while True:
        params: Dict[str, Any] = {'limit': 2}
        if cursor:
            params['next_cursor'] = cursor
        page = _get(server, '/v2/spot/bids', params=params).json()
        pages.append([b['fid'] for b in page['data']])
        cursor = page['next_cursor']
        if cursor is None:
            break
    assert pages == [fids[0:2], fids[2:4], fids[4:5]]
    newest_first = _get(server, '/v2/spot/bids',
                        params={'sort_dir': 'desc', 'limit': 3}).json()
    assert [b['fid'] for b in newest_first['data']] == fids[::-1][:3]
    bad = _get(server, '/v2/spot/bids', params={'next_cursor': '!!'})
    assert bad.status_code == 422


def test_instances_default_page_is_100(bare_emulator: EmulatorServer) -> None:
    _control(bare_emulator, 'POST', 'filler', json={'count': 150})
    first = _get(bare_emulator, '/v2/instances',
                 params={'project': PROJECT_FID}).json()
    assert len(first['data']) == 100 and first['next_cursor']
    second = _get(bare_emulator, '/v2/instances',
                  params={'project': PROJECT_FID,
                          'next_cursor': first['next_cursor']}).json()
    assert len(second['data']) == 50 and second['next_cursor'] is None
    seen = {i['fid'] for i in first['data'] + second['data']}
    assert len(seen) == 150


def test_instances_filtered_by_bid_and_status(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    first = _create_bid(server, name='first', quantity=2)
    second = _create_bid(server, name='second')
    _create_bid(server, name='third')
    _control(server, 'POST', 'advance', json={'seconds': 120})
    _control(server, 'POST', 'bids/' + second['fid'] + '/preempt')

    def bid_fids(params: Any) -> List[str]:
        data = _get(server, '/v2/instances', params=params).json()['data']
        return sorted(i['bid'] for i in data)

    project = [('project', PROJECT_FID)]
    both = sorted([first['fid']] * 2 + [second['fid']])
    assert bid_fids(project + [('bid_fid_in', first['fid']),
                               ('bid_fid_in', second['fid'])]) == both
    assert bid_fids(project + [('bid_fid_in',
                                f'{first["fid"]},{second["fid"]}')]) == both
    assert bid_fids(project + [('bid_fid_in[]', first['fid'])]) == [
        first['fid']
    ] * 2
    assert bid_fids(project + [('status_in', 'STATUS_PREEMPTING')]) == [
        second['fid']
    ]
    assert bid_fids(project + [('order_type_in', 'Reservation')]) == []
    bad_status = _get(server, '/v2/instances',
                      params=project + [('status_in', 'STATUS_NOPE')])
    assert bad_status.status_code == 422


def test_rate_limit_fault_sends_retry_after(
        bare_emulator: EmulatorServer) -> None:
    _set_faults(bare_emulator, {'method': 'GET', 'path': '/v2/spot/bids',
                                'rate_limit': 1.0, 'retry_after_s': 7,
                                'max_faults': 1})
    limited = _get(bare_emulator, '/v2/spot/bids')
    assert limited.status_code == 429
    assert limited.headers['Retry-After'] == '7'
    assert _get(bare_emulator, '/v2/spot/bids').status_code == 200
    assert _control(bare_emulator, 'GET', 'faults')['counts']['rate_limit'] == 1


def test_server_error_fault(bare_emulator: EmulatorServer) -> None:
    _set_faults(bare_emulator, {'path': '/v2/spot/bids/{bid_fid}',
                                'server_error': 1.0,
                                'server_error_statuses': [503]})
    assert _get(bare_emulator, '/v2/spot/bids/bid_x').status_code == 503
    # A route template matches only its own route.
    assert _get(bare_emulator,
                '/v2/spot/bids/bid_x/status').status_code == 404
    created = requests.post(f'{bare_emulator.url}/v2/spot/bids',
                            headers=AUTH, json=_bid_body(bare_emulator),
                            timeout=10)
    assert created.status_code == 201


def test_latency_fault(bare_emulator: EmulatorServer) -> None:
    _set_faults(bare_emulator, {'path': '/v2/me', 'latency': 1.0,
                                'latency_s': 0.3})
    started = time.monotonic()
    assert _get(bare_emulator, '/v2/me').status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert _get(bare_emulator, '/v2/projects').status_code == 200
    assert time.monotonic() - started < 0.3


def test_reset_fault_drops_connection_without_applying(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    _set_faults(server, {'method': 'POST', 'path': '/v2/spot/bids',
                         'reset': 1.0, 'max_faults': 1})
    with pytest.raises(requests.ConnectionError):
        requests.post(f'{server.url}/v2/spot/bids', headers=AUTH,
                      json=_bid_body(server, name='reset'), timeout=10)
    assert _control(server, 'GET', 'state')['bids'] == []
    assert _control(server, 'GET', 'faults')['counts']['reset'] == 1


def test_lost_response_fault_applies_the_change(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    _set_faults(server, {'method': 'POST', 'path': '/v2/spot/bids',
                         'lost_response': 1.0, 'max_faults': 1})
    with pytest.raises((requests.ConnectionError,
                        requests.exceptions.ChunkedEncodingError)):
        requests.post(f'{server.url}/v2/spot/bids', headers=AUTH,
                      json=_bid_body(server, name='committed'), timeout=10)
    listed = _get(server, '/v2/spot/bids', params={'name': 'committed'})
    assert [b['name'] for b in listed.json()['data']] == ['committed']
    assert _control(server, 'GET', 'faults')['counts']['lost_response'] == 1


def test_control_endpoints_are_never_faulted(
        bare_emulator: EmulatorServer) -> None:
    _set_faults(bare_emulator, {'path': '/', 'server_error': 1.0})
    assert _control(bare_emulator, 'GET', 'state')['bids'] == []
    assert _get(bare_emulator, '/v2/me').status_code >= 500


def test_bad_fault_rule_is_422(bare_emulator: EmulatorServer) -> None:
    response = requests.put(f'{bare_emulator.url}/_emulator/faults',
                            json={'rules': [{'reset': 2.0}]}, timeout=10)
    assert response.status_code == 422
    response = requests.put(f'{bare_emulator.url}/_emulator/faults',
                            json={'rules': [{'bogus': 1}]}, timeout=10)
    assert response.status_code == 422


def test_advance_allocates_and_forced_preemption_runs_its_notice(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    fid = _create_bid(server)['fid']
    _control(server, 'POST', 'advance', json={'seconds': 120})
    assert _bid_state(server, fid)['status'] == 'Allocated'
    preempted = _control(server, 'POST', f'bids/{fid}/preempt')
    assert preempted['status'] == 'Preempting'
    # Keep it from being re-allocated by a clearing right after the notice.
    _control(server, 'POST', 'price',
             json={'instance_type': TYPE, 'region': REGION, 'price': '$99.00'})
    instance_fid = _bid_state(server, fid)['instances'][0]['fid']
    status = _get(server, f'/v2/instances/{instance_fid}/status').json()
    assert status['status'] == 'STATUS_PREEMPTING' and status['end_time']
    _control(server, 'POST', 'advance', json={'seconds': 300})
    state = _bid_state(server, fid)
    assert state['status'] == 'Open'
    assert [i['status'] for i in state['instances']] == ['STATUS_PREEMPTED']
    again = requests.post(f'{server.url}/_emulator/bids/{fid}/preempt',
                          timeout=10)
    assert again.status_code == 409


def test_price_and_capacity_control(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    auction = _control(server, 'POST', 'price',
                       json={'instance_type': TYPE, 'region': REGION,
                             'price': '$12.34'})
    assert auction['capacity'] == 8
    _control(server, 'POST', 'capacity',
             json={'instance_type': TYPE, 'region': REGION, 'capacity': 3})
    prices = _get(server, '/v2/pricing/current',
                  params={'instance_type': _type_fid(server),
                          'region': REGION}).json()
    assert prices['spot_price_cents'] == 1234
    # The auction floor of the emulator's default market for this auction.
    [row] = [r for r in load_catalog()
             if (r['InstanceType'], r['Region']) == (TYPE, REGION)]
    assert prices['minimum_price_cents'] == round(float(row['Price']) * 100)
    assert (prices['available_capacity'], prices['total_capacity']) == (3, 3)
    cheap = _create_bid(server, limit='$12.00')
    _control(server, 'POST', 'advance', json={'seconds': 120})
    assert _bid_state(server, cheap['fid'])['status'] == 'Open'
    unknown = requests.post(f'{server.url}/_emulator/price',
                            json={'instance_type': 'nope', 'region': REGION,
                                  'price': '$1.00'}, timeout=10)
    assert unknown.status_code == 404


def test_price_history_endpoints(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    before = datetime.datetime.fromisoformat(
        _control(server, 'GET', 'state')['now'])
    _control(server, 'POST', 'price-history',
             json={'instance_type': TYPE, 'region': REGION,
                   'points': [{'offset_s': -7200, 'price': '$7.00'},
                              {'offset_s': -3600, 'price': '$9.00'}]})
    # The default market already has a seeded week of history: look at the
    # two scripted hours (the clock runs at 60x, hence the margin).
    window = {'start_time': (before - datetime.timedelta(seconds=7201)).isoformat(),
              'end_time': (before - datetime.timedelta(seconds=3480)).isoformat()}
    history = _get(server, '/v2/pricing/history',
                   params={'instance_types': _type_fid(server),
                           'region': REGION, 'num_samples': 1000,
                           **window}).json()
    series, = history['series']
    prices = series['spot_prices']
    assert [p for p in prices if p in ('$7.00', '$9.00')] == ['$7.00', '$9.00']
    assert len(series['timestamps']) == len(prices)
    availability = _get(server, '/v2/spot/availability').json()
    row = next(a for a in availability if a['region'] == REGION and
               a['instance_type'] == _type_fid(server))
    assert MONEY.match(row['last_instance_price'])


def test_price_history_num_samples_as_the_spec_bounds_it(
        bare_emulator: EmulatorServer) -> None:
    """-1 is the complete history (Mithril's SDK asks for it), 1000 the most
    samples; outside [-1, 1000] is a 422."""
    server = bare_emulator
    query = {'instance_types': _type_fid(server), 'region': REGION}
    complete, = _get(server, '/v2/pricing/history',
                     params={**query, 'num_samples': -1}).json()['series']
    most, = _get(server, '/v2/pricing/history',
                 params={**query, 'num_samples': 1000}).json()['series']
    assert len(complete['timestamps']) >= len(most['timestamps']) > 100
    for refused in (-2, 1001):
        answer = _get(server, '/v2/pricing/history',
                      params={**query, 'num_samples': refused})
        assert answer.status_code == 422
        assert answer.json()['detail'][0]['loc'] == ['query', 'num_samples']


def test_ssh_keys_and_minimal_endpoints(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    created = requests.post(f'{server.url}/v2/ssh-keys', headers=AUTH,
                            json={'project': PROJECT_FID, 'name': 'gen'},
                            timeout=10)
    assert created.status_code == 201
    assert 'PRIVATE KEY' in created.json()['private_key']
    keys = _get(server, '/v2/ssh-keys', params={'project': PROJECT_FID}).json()
    assert [k['fid'] for k in keys] == [created.json()['fid']]
    assert 'private_key' not in keys[0]
    assert _get(server, '/v2/quotas', params={'project': PROJECT_FID}).json()
    images = _get(server, '/v2/image-versions').json()
    assert images[0]['image_version_fid']


def test_request_stats_count_by_route_template(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    _control(server, 'DELETE', 'stats')
    fid = _create_bid(server)['fid']
    for _ in range(3):
        _get(server, f'/v2/spot/bids/{fid}')
    _get(server, '/v2/spot/bids/bid_other')
    stats = _control(server, 'GET', 'stats')
    assert stats['by_route']['GET /v2/spot/bids/{bid_fid}'] == 4
    assert stats['by_route']['POST /v2/spot/bids'] == 1
    assert stats['total'] == sum(stats['by_route'].values())
    _control(server, 'DELETE', 'stats')
    assert _control(server, 'GET', 'stats')['total'] == 0


def test_default_server_allocates_within_seconds(
        bare_emulator: EmulatorServer) -> None:
    fid = _create_bid(bare_emulator, limit='$32.00')['fid']
    deadline = time.monotonic() + 6
    status = None
    while time.monotonic() < deadline:
        status = _get(bare_emulator, f'/v2/spot/bids/{fid}/status').json()
        if status['status'] == 'Allocated':
            break
        time.sleep(0.1)
    assert status == {'bid_fid': fid, 'status': 'Allocated'}


def test_shipped_catalog_has_auctions() -> None:
    rows = load_catalog()
    assert {'InstanceType', 'Region', 'SpotPrice', 'Price'} <= set(rows[0])


def test_cli_prints_env_and_stops_on_ctrl_c() -> None:
    script = ('import sys\n'
              'from sky_mithril.emulator import cli\n'
              'sys.exit(cli.command.main(sys.argv[1:], standalone_mode=False))\n')
    process = subprocess.Popen(
        [sys.executable, '-u', '-c', script, '--port', '0', '--price',
         f'{TYPE}@{REGION}=$3.21'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, 'PYTHONPATH': str(REPO)}, cwd=REPO)
    try:
        assert process.stdout is not None
        lines = []
        while not any(line.startswith('Press Ctrl-C') for line in lines):
            line = process.stdout.readline()
            assert line, ''.join(lines)
            lines.append(line.strip())
        env = dict(line.split(' ', 1)[1].split('=', 1) for line in lines
                   if line.startswith('export '))
        assert env['MITHRIL_PROJECT'] == PROJECT_FID
        assert env['MITHRIL_API_KEY']
        prices = requests.get(
            f'{env["MITHRIL_API_URL"]}/_emulator/state', timeout=10).json()
        auction = next(a for a in prices['auctions']
                       if a['instance_type'] == TYPE and a['region'] == REGION)
        assert auction['spot_price'] == '$3.21'
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert 'stopped' in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class LoopbackRecordingHosts(PlaceholderHosts):
    """Placeholder hosts that remember the port their loopback leads to."""

    api_address = '127.0.0.2'

    def __init__(self) -> None:
        super().__init__()
        self.loopback_ports: List[int] = []

    def reach_api_on_loopback(self, api_port: int) -> None:
        self.loopback_ports.append(api_port)


def test_clients_and_hosts_reach_the_api_at_a_loopback_url() -> None:
    hosts = LoopbackRecordingHosts()
    with EmulatorServer(hosts=hosts, host=hosts.api_address) as server:
        assert server.url == f'http://127.0.0.2:{server.port}'
        assert hosts.loopback_ports == [server.port]
        assert requests.get(f'{server.url}/v2/me', headers=AUTH,
                            timeout=10).status_code == 200


def _emulator_options(*argv: str) -> cli.EmulatorOptions:
    with cli.command.make_context('emulator', list(argv)) as context:
        return cli.EmulatorOptions(**context.params)


def test_cli_takes_no_api_key_on_its_command_line() -> None:
    # Other local users read any process's arguments (`ps`).
    with pytest.raises(click.NoSuchOption):
        _emulator_options('--api-key', 'the-only-key')


@pytest.mark.parametrize('source', ['key-file', 'environment'])
def test_cli_accepts_only_the_key_from_a_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    argv = ['--port', '0']
    if source == 'key-file':
        key_file = tmp_path / 'emulator-key'
        key_file.write_text('the-only-key\n')
        argv += ['--key-file', str(key_file)]
    else:
        monkeypatch.setenv(cli.ENV_API_KEY, 'the-only-key')
    args = _emulator_options(*argv)

    with cli.build_server(args) as server:
        def status(key: str) -> int:
            return requests.get(f'{server.url}/v2/me', timeout=10, headers={
                'Authorization': f'Bearer {key}'}).status_code

        assert status('another-key') == 401
        assert status('the-only-key') == 200
    assert all('the-only-key' not in line for line in cli.usage(server, args))


def test_kubernetes_cluster_routes_and_kube_endpoint(
        bare_emulator: EmulatorServer) -> None:
    body = {'project': PROJECT_FID, 'name': 'pool', 'region': REGION,
            'instance_type': TYPE, 'ssh_keys': []}
    created = requests.post(f'{bare_emulator.url}/v2/kubernetes/clusters',
                            headers=AUTH, json=body, timeout=10)
    assert created.status_code == 201, created.text
    cluster = created.json()
    assert set(cluster) == {'fid', 'name', 'project', 'region', 'created_at',
                            'status', 'k8s_version', 'kube_host', 'ssh_keys',
                            'instances', 'join_command', 'deleted_at',
                            'user_fid'}
    assert (cluster['status'], cluster['k8s_version']) == ('Pending', '1.34')
    kube = f'{bare_emulator.url}/_kube/{cluster["fid"]}'
    assert requests.get(f'{kube}/version', timeout=10).status_code == 503

    bid_body = _bid_body(bare_emulator, name='workers', quantity=2)
    bid_body['launch_specification']['kubernetes_cluster'] = cluster['fid']
    bid = requests.post(f'{bare_emulator.url}/v2/spot/bids', headers=AUTH,
                        json=bid_body, timeout=10).json()
    _control(bare_emulator, 'POST', 'advance', json={'seconds': 300})
    listed = _get(bare_emulator, '/v2/kubernetes/clusters',
                  params={'project': PROJECT_FID}).json()
    [one] = listed
    assert one == _get(bare_emulator,
                       f'/v2/kubernetes/clusters/{cluster["fid"]}').json()
    assert one['status'] == 'Available' and one['kube_host']
    assert len(one['instances']) == 2
    assert one['instances'] == _get(bare_emulator, f'/v2/spot/bids/{bid["fid"]}').json()['instances']
    assert requests.get(f'{kube}/version', timeout=10).json()['gitVersion'] == 'v1.34.0'
    nodes = requests.get(f'{kube}/api/v1/nodes', timeout=10).json()
    assert [n['metadata']['name'] for n in nodes['items']] == [
        'pool-control', 'workers-0', 'workers-1']
    table = requests.get(f'{kube}/api/v1/nodes', timeout=10, headers={
        'Accept': 'application/json;as=Table;v=v1;g=meta.k8s.io'}).json()
    assert table['kind'] == 'Table' and len(table['rows']) == 3
    assert requests.get(f'{kube}/api/v1/nodes/nope', timeout=10).status_code == 404

    deleted = requests.delete(
        f'{bare_emulator.url}/v2/kubernetes/clusters/{cluster["fid"]}',
        headers=AUTH, timeout=10)
    assert deleted.status_code == 204
    assert _get(bare_emulator, f'/v2/kubernetes/clusters/{cluster["fid"]}'
                ).json()['status'] == 'Terminated'
    assert _get(bare_emulator,
                '/v2/kubernetes/clusters/k8s_missing').status_code == 404
