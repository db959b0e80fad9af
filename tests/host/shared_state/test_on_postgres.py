"""The plugin's shared state on a real Postgres, as a team's API server keeps
it: two worker processes, each with its own home (two replicas, two hosts)
whose SkyPilot config has `db:` pointing at one Postgres server, against one
emulator. A recovery record written by one is read by the other; two
launches on one reservation never claim the same instance; two launches at
once cannot both pass the spend budget; one live-price refresh per TTL
across both. Needs root (installs Debian's `postgresql` when missing and
runs it as the `postgres` user); about a minute after the install."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from sky.provision import common

from sky_mithril.emulator.server import EmulatorServer

from tests.helpers import REPO
from tests.helpers.postgres import postgres_server
from tests.helpers.provisioning import bids_named, point_plugin_at, provision_config
from tests.integration.provision.test_budget import _slow_bid_posts, within
from tests.integration.provision.test_reserved_nodes import _config, _reserve, _wait_active

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason='installs and runs Postgres as root'),
]


@pytest.fixture(scope='module')
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The team's Postgres, with SkyPilot's tables made as the API server
    makes them when it starts: its connection URI."""
    with postgres_server() as uri:
        [server] = workers(uri, tmp_path_factory.mktemp('api-server'), 'start')
        server.go({})
        yield uri


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer(speed=600) as server:
        point_plugin_at(server, monkeypatch, tmp_path)
        yield server


@dataclasses.dataclass
class Worker:
    """A child process set up as an API-server worker, READY for its action's
    args (`tests.helpers.api_server_worker`)."""

    process: subprocess.Popen

    def release(self, args: Dict[str, Any]) -> None:
        """Lets the action run with `args`."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(args) + '\n')
        self.process.stdin.flush()

    def result(self) -> Any:
        """The released action's JSON result, once it ends."""
        out, _ = self.process.communicate(timeout=240)
        assert self.process.returncode == 0, out
        return json.loads(out.strip().splitlines()[-1])

    def go(self, args: Dict[str, Any]) -> Any:
        """Runs the action alone: its result."""
        self.release(args)
        return self.result()


def workers(database: str, tmp_path: Path, *actions: str) -> List[Worker]:
    """One worker per action, each with its own home whose SkyPilot config
    points at `database`; returned once all are READY."""
    started = []
    for n, action in enumerate(actions):
        home = tmp_path / f'worker-{n}'
        (home / '.sky').mkdir(parents=True, exist_ok=True)
        (home / '.sky' / 'config.yaml').write_text(f'db: {database}\n')
        started.append(Worker(subprocess.Popen(
            [sys.executable, '-m', 'tests.helpers.api_server_worker', action],
            cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, 'HOME': str(home), 'IS_SKYPILOT_SERVER': '1'})))
    for worker in started:
        assert worker.process.stdout is not None
        line = worker.process.stdout.readline().strip()
        assert line == 'READY', line
    return started


def _as_json(config: common.ProvisionConfig) -> Dict[str, Any]:
    return {field: getattr(config, field)
            for field in ('provider_config', 'authentication_config',
                          'docker_config', 'node_config', 'count', 'tags',
                          'resume_stopped_nodes', 'ports_to_open_on_launch')}


def test_a_recovery_record_written_by_one_worker_is_read_by_the_other(
        database: str, tmp_path: Path) -> None:
    writer, reader = workers(database, tmp_path, 'mark', 'records')
    writer.go({'cluster': 'job-pg', 'bid': 'bid_pg', 'preemptions': 2})
    assert reader.go({'cluster': 'job-pg', 'bid': 'bid_pg'}) == [True, 2]


def test_two_launches_on_one_reservation_never_claim_the_same_instance(
        database: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    *launches, reader = workers(database, tmp_path, 'launch', 'launch', 'claims')
    # Reserved once the workers are up: the emulator's hours pass in seconds.
    reservation = _reserve(emulator, 2)
    _wait_active(reservation.fid)
    config = _as_json(_config(reservation.name, count=2))
    for worker, name in zip(launches, ('res-a', 'res-b')):
        worker.release({'name': name, 'config': config})
    assert [w.result() for w in launches] == ['DONE', 'DONE']
    claims = reader.go({'clusters': ['res-a', 'res-b']})
    [on_reservation] = [n for n in claims if claims[n]]
    assert sorted(claims[on_reservation]) == sorted(reservation.instances)
    [spot] = [n for n in claims if n != on_reservation]
    assert claims[spot] == []
    assert len(bids_named(emulator, spot)) == 1
    assert bids_named(emulator, on_reservation) == []


def test_two_launches_at_once_cannot_both_pass_the_budget(
        database: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    config = _as_json(within('15.00', limit='10.00'))
    _slow_bid_posts(emulator)
    launches = workers(database, tmp_path, 'launch', 'launch')
    for worker, name in zip(launches, ('spend-a', 'spend-b')):
        worker.release({'name': name, 'config': config})
    outcomes = [w.result() for w in launches]
    assert sorted(o.split()[0] for o in outcomes) == ['DONE', 'FAILED']
    refused = next(o for o in outcomes if o.startswith('FAILED'))
    assert 'Mithril spend budget' in refused and 'would lift' in refused
    # The shared lock kept the second from placing anything at all.
    assert [b['status'] for b in emulator.control('GET', 'state')['bids']] == [
        'Allocated']


def test_one_live_price_refresh_per_ttl_across_both_workers(
        database: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    ttl, seconds = 2.0, 5.0
    refreshing = workers(database, tmp_path, 'refresh', 'refresh')
    emulator.control('DELETE', 'stats')
    for worker in refreshing:
        worker.release({'ttl': ttl, 'seconds': seconds})
    for worker in refreshing:
        worker.result()
    refreshes = emulator.control('GET', 'stats')['by_route'].get(
        'GET /v2/spot/availability', 0)
    # One at the start and one each time the TTL ran out; each worker alone
    # would have made as many.
    assert 2 <= refreshes <= seconds // ttl + 1
