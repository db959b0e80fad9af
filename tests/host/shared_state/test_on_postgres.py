"""The plugin's shared state on a real Postgres, as a team's API server keeps
it: two worker processes, each with its own home (two replicas, two hosts)
whose SkyPilot config has `db:` pointing at one Postgres server, against one
emulator. A recovery record written by one is read by the other; two
launches on one reservation never claim the same instance; two launches at
once cannot both pass the spend budget; one live-price refresh per TTL
across both. Then a real SkyPilot API server (`sky api start`, sandboxed,
with the plugin) whose `db:` points at the same Postgres shares the live
prices with the workers both ways: its `sky gpus list` lists the market a
worker fetched without asking Mithril, and a worker reads the market the
server's listing fetched; its SkyPilot state is in Postgres, not SQLite.
Needs root (installs Debian's `postgresql` when missing and runs it as the
`postgres` user); about 45 s after the install (the API server's start and
first request take half of it)."""

import dataclasses
import json
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any, Dict, Iterator, List

import pytest
from sky.provision import common

from sky_mithril.catalog import live_prices
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers import REPO
from tests.helpers.postgres import postgres_server
from tests.helpers.provisioning import bids_named, point_plugin_at
from tests.integration.provision.test_budget import _slow_bid_posts, within
from tests.helpers.reservations import reserve
from tests.helpers.sandbox import forget_live_prices
from tests.integration.provision.test_reserved_nodes import _config, _wait_active

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason='installs and runs Postgres as root'),
]


@dataclasses.dataclass
class Worker:
    """A child process acting as an API-server worker
    (`tests.helpers.api_server_worker`)."""

    process: subprocess.Popen

    def send(self, action: str, **args: Any) -> None:
        """Starts `action`; its result comes from `receive`."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({'action': action, 'args': args}) + '\n')
        self.process.stdin.flush()

    def receive(self) -> Any:
        """The result of the action sent last."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith('RESULT '):
                return json.loads(line[len('RESULT '):])
        raise AssertionError(f'the worker ended: {self.process.wait()}')

    def call(self, action: str, **args: Any) -> Any:
        """Runs `action` alone: its result."""
        self.send(action, **args)
        return self.receive()


@pytest.fixture(scope='module')
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """One emulator (600x time) for the module; the plugin, here and in the
    workers, pointed at it."""
    with EmulatorServer(speed=600) as server, pytest.MonkeyPatch.context() as patch:
        point_plugin_at(server, patch, tmp_path_factory.mktemp('config'))
        yield server


@pytest.fixture(scope='module')
def postgres() -> Iterator[str]:
    """The team's Postgres: its URI, as `db:` takes it."""
    with postgres_server() as uri:
        yield uri


@pytest.fixture(scope='module')
def workers(postgres: str, emulator: EmulatorServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[List[Worker]]:
    """Two workers on the team's Postgres, each with its own home whose
    SkyPilot config has `db:` on it (two replicas, two hosts). The first
    starts alone, making SkyPilot's tables as an API server does as it
    starts, before its workers run."""
    started = []
    try:
        for n in range(2):
            home = tmp_path_factory.mktemp(f'worker-{n}')
            (home / '.sky').mkdir()
            (home / '.sky' / 'config.yaml').write_text(f'db: {postgres}\n')
            started.append(Worker(subprocess.Popen(
                [sys.executable, '-m', 'tests.helpers.api_server_worker'],
                cwd=REPO, text=True, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, 'HOME': str(home),
                     'IS_SKYPILOT_SERVER': '1'})))
            # The second process starts only now: SkyPilot migrates its
            # tables as it starts, and two at once race on Postgres.
            started[-1].call('start')
        yield started
    finally:
        for worker in started:
            worker.process.communicate(timeout=60)


@pytest.fixture(scope='module')
def api_server(postgres: str, emulator: EmulatorServer, workers: List[Worker],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkySandbox]:
    """A real SkyPilot API server (`sky api start` in a sandboxed home with
    the plugin) whose config has `db:` on the team's Postgres, with the
    Mithril key, URL and project the workers have, in its environment as a
    team's server has them. It starts once the workers made SkyPilot's
    tables; stopped at the end."""
    del workers
    box = SkySandbox(tmp_path_factory.mktemp('api-server'),
                     api_url=emulator.url, api_key=os.environ['MITHRIL_API_KEY'],
                     project_id=os.environ['MITHRIL_PROJECT'],
                     sky_config={'db': postgres}, credentials_in_environment=True)
    try:
        _sky(box, 'api', 'start')
        yield box
    finally:
        box.stop_api_server()


def _sky(box: SkySandbox, *args: str) -> str:
    """`sky ARGS` through the sandbox's API server; its output. It must
    succeed."""
    result = box.sky(list(args), timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'sky {" ".join(args)} failed:\n{output}'
    return output


def _as_json(config: common.ProvisionConfig) -> Dict[str, Any]:
    return {field: getattr(config, field)
            for field in ('provider_config', 'authentication_config',
                          'docker_config', 'node_config', 'count', 'tags',
                          'resume_stopped_nodes', 'ports_to_open_on_launch')}


def test_a_recovery_record_written_by_one_worker_is_read_by_the_other(
        workers: List[Worker]) -> None:
    writer, reader = workers
    writer.call('mark', cluster='job-pg', bid='bid_pg', preemptions=2)
    assert reader.call('records', cluster='job-pg', bid='bid_pg') == [True, 2]


def test_two_launches_on_one_reservation_never_claim_the_same_instance(
        workers: List[Worker], emulator: EmulatorServer) -> None:
    reservation = reserve(emulator, 'team-res', quantity=2)
    _wait_active(reservation.fid)
    config = _as_json(_config(reservation.name, count=2))
    for worker, name in zip(workers, ('res-a', 'res-b')):
        worker.send('launch', name=name, config=config)
    assert [w.receive() for w in workers] == ['DONE', 'DONE']
    claims = workers[0].call('claims', clusters=['res-a', 'res-b'])
    [on_reservation] = [n for n in claims if claims[n]]
    assert sorted(claims[on_reservation]) == sorted(reservation.instances)
    [spot] = [n for n in claims if n != on_reservation]
    assert claims[spot] == []
    assert len(bids_named(emulator, spot)) == 1
    assert bids_named(emulator, on_reservation) == []
    for worker, name in zip(workers, ('res-a', 'res-b')):
        worker.call('down', name=name)
    assert workers[1].call('claims', clusters=['res-a', 'res-b']) == {
        'res-a': [], 'res-b': []}


def test_two_launches_at_once_cannot_both_pass_the_budget(
        workers: List[Worker], emulator: EmulatorServer) -> None:
    config = _as_json(within('15.00', limit='10.00'))
    _slow_bid_posts(emulator)
    try:
        for worker, name in zip(workers, ('spend-a', 'spend-b')):
            worker.send('launch', name=name, config=config)
        outcomes = [w.receive() for w in workers]
    finally:
        emulator.control('PUT', 'faults', rules=[])
    assert sorted(o.split()[0] for o in outcomes) == ['DONE', 'FAILED']
    refused = next(o for o in outcomes if o.startswith('FAILED'))
    assert 'Mithril spend budget' in refused and 'would lift' in refused
    # The shared lock kept the second from placing anything at all.
    assert [b['status'] for b in bids_named(emulator, 'spend-a') +
            bids_named(emulator, 'spend-b')] == ['Allocated']


def test_one_live_price_refresh_per_ttl_across_both_workers(
        workers: List[Worker], emulator: EmulatorServer) -> None:
    ttl, seconds = 2.0, 5.0
    emulator.control('DELETE', 'stats')
    for worker in workers:
        worker.send('refresh', ttl=ttl, seconds=seconds)
    for worker in workers:
        worker.receive()
    refreshes = emulator.control('GET', 'stats')['by_route'].get(
        'GET /v2/spot/availability', 0)
    # One at the start and one each time the TTL ran out; each worker alone
    # would have made as many.
    assert 2 <= refreshes <= seconds // ttl + 1


# The auction the real server's listing shows: `sky gpus list H100:8` prints
# the cheapest region's spot price, and the tests below price this one lowest.
H100_8X, H100_REGION = 'h100-80gb.sxm.8x', 'us-central2-a'


def _price_h100(emulator: EmulatorServer, price: str) -> None:
    emulator.control('POST', 'price', instance_type=H100_8X,
                     region=H100_REGION, price=price)


def _h100_listing(box: SkySandbox) -> str:
    """The line `sky gpus list` shows for H100_8X, with its spot price: the
    plugin's catalog, read in the real server."""
    out = _sky(box, 'gpus', 'list', 'H100:8', '--infra', 'mithril')
    [line] = [line for line in out.splitlines() if H100_8X in line]
    return line


def _server_market_fetched_at(box: SkySandbox) -> float:
    """When the market the real server's host lists from was fetched (its
    state next to its overlay)."""
    state_file = live_prices._state_path().name  # pylint: disable=protected-access
    state = box.home / '.sky' / 'mithril' / state_file
    return json.loads(state.read_text())['fetched_at']


def _availability_requests(emulator: EmulatorServer) -> int:
    return emulator.control('GET', 'stats')['by_route'].get(
        'GET /v2/spot/availability', 0)


def test_a_real_api_server_on_the_postgres_lists_the_market_a_worker_fetched(
        api_server: SkySandbox, workers: List[Worker],
        emulator: EmulatorServer) -> None:
    """The real server's host has no market yet; a worker fetched one
    ($9.87) and the market moved since ($8.76): within the TTL the server
    lists the worker's market from Postgres and asks Mithril nothing. Its
    SkyPilot state is on Postgres too: its user is there, and its home has
    no SQLite database but its request queue's."""
    forget_live_prices(api_server)
    _price_h100(emulator, '$9.87')
    shared = workers[0].call('share_market')
    _price_h100(emulator, '$8.76')
    emulator.control('DELETE', 'stats')
    assert '$ 9.870' in _h100_listing(api_server)
    assert _availability_requests(emulator) == 0
    assert _server_market_fetched_at(api_server) == shared['fetched_at']

    user_hash = (api_server.home / '.sky' / 'user_hash').read_text().strip()
    assert user_hash in workers[1].call('users')
    sky_dir = api_server.home / '.sky'
    assert [str(db.relative_to(sky_dir)) for db in sky_dir.rglob('*.db')] == [
        'api_server/requests.db']


def test_a_worker_reads_the_market_the_real_api_server_fetched(
        api_server: SkySandbox, workers: List[Worker],
        emulator: EmulatorServer) -> None:
    """No market shared and none on the real server's host: its listing
    fetches the market once, and a worker reads that very market from
    Postgres."""
    forget_live_prices(api_server)
    workers[0].call('forget_market')
    assert workers[1].call('market') is None
    _price_h100(emulator, '$8.76')
    emulator.control('DELETE', 'stats')
    assert '$ 8.760' in _h100_listing(api_server)
    assert _availability_requests(emulator) == 1
    shared = workers[1].call('market')
    assert shared['fetched_at'] == _server_market_fetched_at(api_server)
    price, _ = shared['quotes'][f'{H100_8X}@{H100_REGION}']
    assert Decimal(price) == Decimal('8.76')
