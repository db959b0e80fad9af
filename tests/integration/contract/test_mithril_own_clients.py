"""Mithril's own clients, unchanged, against the emulator: its `ml` CLI and
the OpenAPI-generated client inside its SDK (PyPI mithril-client), and the
read commands of its older `flow` CLI (PyPI flow-compute). Each is installed
from PyPI once, into a cached venv of its own (`tests.helpers.mithril_clients`;
a skip without PyPI), pointed at the emulator through its own environment
variables, in a private HOME, and kept on loopback: every test also checks
that the client tried to reach nothing else.

The emulator runs on a manual clock, so a bid is allocated and boots only when
a test advances it. What each test asserts is what a user of the client sees.
"""

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

from tests.helpers import REPO, mithril_clients
from tests.helpers.mithril_clients import LoopbackGuard

API_KEY = 'own-clients-test-key'
TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
# What the market's clock is advanced by, a step at a time, until a bid's
# instances run (a clearing, then the boot).
STEP_S = 30.0
STEPS = 20
BINDINGS_SCRIPT = REPO / 'tests' / 'helpers' / 'mithril_bindings_script.py'


def _venv_or_skip(requirement: str) -> Path:
    try:
        return mithril_clients.client_venv(requirement)
    except mithril_clients.ClientUnavailable as e:
        pytest.skip(f'{requirement} is unavailable: {e}')


@pytest.fixture(scope='session')
def mithril_client() -> Path:
    """The venv holding Mithril's `ml` and SDK (installed on first use)."""
    return _venv_or_skip(mithril_clients.MITHRIL_CLIENT)


@pytest.fixture(scope='session')
def flow_compute() -> Path:
    """The venv holding Mithril's `flow` (installed on first use)."""
    return _venv_or_skip(mithril_clients.FLOW_COMPUTE)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """An emulator on a manual clock that accepts only API_KEY, TYPE in
    REGION at a steady $2.00."""
    market = Market(ManualClock(), PlaceholderHosts(), load_catalog())
    with EmulatorServer(market, api_key=API_KEY) as server:
        server.control('POST', 'price', instance_type=TYPE, region=REGION,
                       price='$2.00')
        yield server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The client's HOME, with the SSH key pair `ml` looks for."""
    home = tmp_path / 'home'
    (home / '.ssh').mkdir(parents=True)
    key = ed25519.Ed25519PrivateKey.generate()
    (home / '.ssh' / 'id_ed25519').write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    (home / '.ssh' / 'id_ed25519').chmod(0o600)
    (home / '.ssh' / 'id_ed25519.pub').write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                      serialization.PublicFormat.OpenSSH) +
        b' own-clients@test\n')
    return home


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[LoopbackGuard]:
    """Keeps the clients on loopback; the test fails if one tried to leave."""
    with LoopbackGuard(tmp_path / 'refused.txt') as loopback:
        yield loopback
        assert loopback.attempts() == [], (
            'a client tried to reach beyond loopback')


@pytest.fixture
def env(home: Path, emulator: EmulatorServer,
        guard: LoopbackGuard) -> Dict[str, str]:
    return mithril_clients.client_environment(home, emulator.url, API_KEY,
                                              PROJECT_FID, guard)


def _api(server: EmulatorServer, method: str, path: str,
         **kwargs: Any) -> Any:
    response = requests.request(
        method, f'{server.url}{path}', timeout=10,
        headers={'Authorization': f'Bearer {API_KEY}'}, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def _register_key(server: EmulatorServer, home: Path, name: str) -> str:
    """Registers HOME's public key in the project, as the web console does
    (`ml` has no command for it); its fid."""
    public_key = (home / '.ssh' / 'id_ed25519.pub').read_text().strip()
    return _api(server, 'POST', '/v2/ssh-keys',
                json={'project': PROJECT_FID, 'name': name,
                      'public_key': public_key})['fid']


def _run(venv: Path, env: Dict[str, str], *argv: str) -> str:
    """The client's standard output; fails the test if it exits non-zero."""
    result = mithril_clients.run_client(venv, argv, env)
    assert result.returncode == 0, (
        f'{" ".join(argv)} exited {result.returncode}:\n{result.stdout}\n'
        f'{result.stderr}')
    return result.stdout


def _json_of(output: str) -> Any:
    """The JSON a client printed with `--json`; `ml` prints a progress line
    ("Fetching bids...") before it on the same stream."""
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line[:1] in ('[', '{'))
    return json.loads('\n'.join(lines[start:]))


def _bid_named(server: EmulatorServer, name: str) -> Dict[str, Any]:
    [bid] = _api(server, 'GET', '/v2/spot/bids',
                 params={'project': PROJECT_FID, 'name': name})['data']
    return bid


def _advance_until_running(server: EmulatorServer, bid_fid: str) -> List[str]:
    """Moves the clock until the bid's instances all run; their fids."""
    for _ in range(STEPS):
        server.control('POST', 'advance', seconds=STEP_S)
        listed = _api(server, 'GET', '/v2/instances',
                      params={'project': PROJECT_FID, 'bid_fid_in': bid_fid})
        statuses = {i['status'] for i in listed['data']}
        if statuses == {'STATUS_RUNNING'}:
            return [i['fid'] for i in listed['data']]
    raise AssertionError(f'{bid_fid} did not run in {STEP_S * STEPS:g} '
                         'emulated s')


def test_the_guard_refuses_and_notes_any_other_host(tmp_path: Path) -> None:
    """What would reach beyond loopback is stopped before it leaves: through
    the proxy (a client honouring the proxy variables) or by the audit hook
    (a Python socket or name lookup); each try is noted. The targets reach
    nobody should a guard fail: 192.0.2.1 is TEST-NET-1, example.invalid a
    name reserved never to resolve."""
    with LoopbackGuard(tmp_path / 'refused.txt') as loopback:
        env = mithril_clients.client_environment(
            tmp_path, 'http://127.0.0.1:9', API_KEY, PROJECT_FID, loopback)
        for code in (
                "import urllib.request; "
                "urllib.request.urlopen('http://example.invalid/', timeout=5)",
                "import socket; socket.create_connection(('192.0.2.1', 80), 5)",
                "import socket; socket.getaddrinfo('example.invalid', 443)"):
            result = subprocess.run([sys.executable, '-c', code], env=env,
                                    capture_output=True, text=True,
                                    timeout=60, check=False)
            assert result.returncode != 0 and 'Error' in result.stderr
        attempts = loopback.attempts()
    assert attempts[0] == ('through the proxy: GET http://example.invalid/ '
                           'HTTP/1.1')
    assert [a.split(' (pid')[0] for a in attempts[1:]] == [
        'in Python: connect to 192.0.2.1:80',
        "in Python: look up 'example.invalid'"]


# Mithril's `ml` CLI.


def test_ml_lists_the_auctioned_types(mithril_client: Path,
                                      env: Dict[str, str]) -> None:
    table = _run(mithril_client, env, 'ml', 'instance', 'list-types')
    assert TYPE in table and REGION in table and '$2.00/hr' in table
    listed = _json_of(_run(mithril_client, env, 'ml', 'instance',
                             'list-types', '--json'))
    [row] = [r for r in listed if (r['name'], r['region']) == (TYPE, REGION)]
    assert row['spot_price'] == '$2.00' and row['capacity'] > 0


def test_ml_instance_create_list_info_ssh_delete(mithril_client: Path,
                                                 emulator: EmulatorServer,
                                                 home: Path,
                                                 env: Dict[str, str]) -> None:
    _register_key(emulator, home, 'laptop')
    created = _run(mithril_client, env, 'ml', 'instance', 'create', '-i', TYPE,
                   '-r', REGION, '-m', '8.0', '-n', 'ml-bid', '-p',
                   PROJECT_FID)
    bid = _bid_named(emulator, 'ml-bid')
    assert 'Bid created successfully' in created and bid['fid'] in created
    assert bid['limit_price'] == '$8.00' and bid['status'] == 'Open'
    [instance_fid] = _advance_until_running(emulator, bid['fid'])
    [address] = [i['ssh_destination'] for i in _api(
        emulator, 'GET', '/v2/instances',
        params={'project': PROJECT_FID, 'bid_fid_in': bid['fid']})['data']]

    listed = _run(mithril_client, env, 'ml', 'instance', 'list')
    assert 'ml-bid' in listed and 'Allocated' in listed and TYPE in listed
    info = _run(mithril_client, env, 'ml', 'instance', 'info', 'ml-bid')
    assert bid['fid'] in info and 'Allocated' in info
    assert 'ml-bid-0' in info and f'ubuntu@{address}' in info
    detail = _json_of(_run(mithril_client, env, 'ml', 'instance', 'info',
                             'ml-bid', '--json'))
    assert [i['fid'] for i in detail['instances']] == [instance_fid]
    ssh = _run(mithril_client, env, 'ml', 'ssh', 'ml-bid', '--show')
    assert ssh.strip().splitlines()[-1] == f'ssh ubuntu@{address}'

    deleted = _run(mithril_client, env, 'ml', 'instance', 'delete', 'ml-bid',
                   '-y')
    assert "Bid 'ml-bid' cancelled" in deleted
    assert _bid_named(emulator, 'ml-bid')['status'] == 'Terminated'
    assert 'ml-bid' not in _run(mithril_client, env, 'ml', 'instance', 'list')
    assert 'Terminated' in _run(mithril_client, env, 'ml', 'instance', 'list',
                                '--all')


def test_ml_k8s_list_and_info(mithril_client: Path, emulator: EmulatorServer,
                              home: Path, env: Dict[str, str]) -> None:
    key = _register_key(emulator, home, 'laptop')
    cluster = _api(emulator, 'POST', '/v2/kubernetes/clusters',
                   json={'name': 'ml-cluster', 'project': PROJECT_FID,
                         'region': REGION, 'ssh_keys': [key],
                         'instance_type': TYPE})
    emulator.control('POST', 'advance', seconds=600)
    _run(mithril_client, env, 'ml', 'instance', 'create', '-i', TYPE, '-r',
         REGION, '-m', '8.0', '-n', 'ml-worker', '-p', PROJECT_FID, '--k8s',
         'ml-cluster')
    _advance_until_running(emulator, _bid_named(emulator, 'ml-worker')['fid'])

    listed = _run(mithril_client, env, 'ml', 'k8s', 'list')
    assert 'ml-cluster' in listed and 'Available' in listed
    info = _run(mithril_client, env, 'ml', 'k8s', 'info', 'ml-cluster')
    assert cluster['fid'] in info and 'Available' in info
    assert 'Active Instances: 1/1' in info and 'ml-worker-0' in info
    detail = _json_of(_run(mithril_client, env, 'ml', 'k8s', 'info',
                             'ml-cluster', '--json'))
    assert detail['cluster']['kube_host'] == _api(
        emulator, 'GET', f'/v2/kubernetes/clusters/{cluster["fid"]}')[
            'kube_host']


# The OpenAPI-generated client inside Mithril's SDK.


def test_generated_client_places_reads_and_cancels_a_bid(
        mithril_client: Path, emulator: EmulatorServer, home: Path,
        env: Dict[str, str]) -> None:
    public_key = (home / '.ssh' / 'id_ed25519.pub').read_text().strip()
    placed = json.loads(_run(mithril_client, env, 'python',
                             str(BINDINGS_SCRIPT), 'place', 'sdk-bid',
                             public_key))
    assert placed['projects'] == [PROJECT_FID]
    assert TYPE in placed['instance_types'] and placed['auctions'] > 1
    assert placed['history_series'] == 1
    assert placed['ssh_keys'] == [placed['ssh_key']]
    bid = placed['bid']
    assert bid['status'] == 'Open' and placed['bids_named'] == [bid['fid']]
    instance_fids = _advance_until_running(emulator, bid['fid'])

    settled = json.loads(_run(mithril_client, env, 'python',
                              str(BINDINGS_SCRIPT), 'settle', bid['fid']))
    assert settled == {
        'status': 'Allocated',
        'status_endpoint': 'Allocated',
        'instances': instance_fids,
        'instance_statuses': ['STATUS_RUNNING'],
        'cancel_status': 204,
        'history': ['Placed', 'Allocated', 'Terminated'],
        'status_after_cancel': 'Terminated',
    }


# The read commands of Mithril's `flow` CLI.


def test_flow_pricing_and_availability(flow_compute: Path,
                                       env: Dict[str, str]) -> None:
    pricing = json.loads(_run(flow_compute, env, 'flow', 'pricing', '--json'))
    assert pricing['error'] is None and pricing['data']['warnings'] == []
    [row] = [r for r in pricing['data']['raw_listings']
             if (r['instance_type'], r['region']) == (TYPE, REGION)]
    assert row['price_per_instance_hour'] == 2.0
    available = json.loads(_run(flow_compute, env, 'flow', 'availability',
                                '--json'))
    assert available['error'] is None
    [row] = [r for r in available['data']['availability']
             if (r['instance_type'], r['region']) == (TYPE, REGION)]
    assert row['available_instances'] > 0
    table = _run(flow_compute, env, 'flow', 'availability')
    assert REGION in table


def test_flow_status_lists_a_bid_and_a_reservation(
        flow_compute: Path, emulator: EmulatorServer, home: Path,
        env: Dict[str, str]) -> None:
    key = _register_key(emulator, home, 'laptop')
    [type_fid] = [t['fid'] for t in _api(emulator, 'GET', '/v2/instance-types')
                  if t['name'] == TYPE]
    bid = _api(emulator, 'POST', '/v2/spot/bids', json={
        'project': PROJECT_FID, 'region': REGION, 'instance_type': type_fid,
        'limit_price': '$8.00', 'instance_quantity': 1, 'name': 'flow-bid',
        'launch_specification': {'volumes': [], 'ssh_keys': [key]}})
    _advance_until_running(emulator, bid['fid'])
    start = datetime.datetime.fromisoformat(
        emulator.control('GET', 'state')['now'])
    reservation = _api(emulator, 'POST', '/v2/reservation', json={
        'project': PROJECT_FID, 'region': REGION, 'instance_type': type_fid,
        'start_time': start.isoformat(),
        'end_time': (start + datetime.timedelta(hours=3)).isoformat(),
        'instance_quantity': 2, 'name': 'flow-reservation',
        'launch_specification': {'volumes': [], 'ssh_keys': [key]}})
    status = json.loads(_run(flow_compute, env, 'flow', 'status', '--json'))
    [task] = status['data']
    assert (task['task_id'], task['name'], task['status']) == (
        bid['fid'], 'flow-bid', 'running')
    assert task['max_price_per_hour'] == 8.0
    [reserved] = status['reservations']
    assert (reserved['id'], reserved['name'], reserved['status'],
            reserved['instance_type'], reserved['quantity'],
            reserved['price_total_usd']) == (
                reservation['fid'], 'flow-reservation', 'active', TYPE, 2,
                float(reservation['total_price'].lstrip('$')))
    assert status['degraded_sources'] == []
    table = _run(flow_compute, env, 'flow', 'status')
    assert 'flow-bid' in table and 'flow-reservation' in table
