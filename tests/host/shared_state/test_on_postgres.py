"""The plugin's shared state on a real Postgres, as a team's API server keeps
it: two worker processes, each with its own home (two replicas, two hosts)
whose SkyPilot config has `db:` pointing at one Postgres server, against one
emulator. A recovery record written by one is read by the other; two
launches on one reservation never claim the same instance; two launches at
once cannot both pass the spend budget; one live-price refresh per TTL
across both. Needs root (installs Debian's `postgresql` when missing and
runs it as the `postgres` user); about 25 s after the install."""

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any, Dict, Iterator, List

import pytest
from sky.provision import common

from sky_mithril.emulator.server import EmulatorServer

from tests.helpers import REPO
from tests.helpers.postgres import postgres_server
from tests.helpers.provisioning import bids_named, point_plugin_at
from tests.integration.provision.test_budget import _slow_bid_posts, within
from tests.helpers.reservations import reserve
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
def workers(emulator: EmulatorServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[List[Worker]]:
    """The team's Postgres and two workers on it, each with its own home
    whose SkyPilot config has `db:` on it (two replicas, two hosts). The
    first starts alone, making SkyPilot's tables as an API server does as
    it starts, before its workers run."""
    with postgres_server() as uri:
        started = []
        for n in range(2):
            home = tmp_path_factory.mktemp(f'worker-{n}')
            (home / '.sky').mkdir()
            (home / '.sky' / 'config.yaml').write_text(f'db: {uri}\n')
            started.append(Worker(subprocess.Popen(
                [sys.executable, '-m', 'tests.helpers.api_server_worker'],
                cwd=REPO, text=True, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, 'HOME': str(home), 'IS_SKYPILOT_SERVER': '1'})))
        try:
            for worker in started:
                worker.call('start')
            yield started
        finally:
            for worker in started:
                worker.process.communicate(timeout=60)


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
