"""A managed job that burst onto a spot bid because its reservation was full
moves back onto the reservation once an instance frees, on a manual-clock
emulator: the jobs controller's poll tells the head node (its preemption
hooks run) and reports "recover now" only once they have run; the strategy
tears the cluster down (the spot bid cancelled) and the relaunch lands on
the reservation. A reservation ending within the job's lead time does not
attract it, a move that lost the instance to another launch is not tried
again within the interval (doubled for each move), one free instance starts
one move (and stays the moving job's until its relaunch returns), a poll
finding the count busy moves nothing at once, and a pool's worker, a node
whose hooks already ran and `sky jobs logs` never move a job. A task naming
several reservations moves onto the first with room besides the free
instances promised to other jobs' moves. A move whose recovery fails
leaves no instance promised."""

import asyncio
import datetime
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import sky
import sqlalchemy
import yaml
from sky import global_user_state

from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.recovery import back_to_reservation
from sky_mithril.recovery import policy
from sky_mithril.recovery import records
from sky_mithril.recovery import reservation_end
from sky_mithril.recovery import runtime
from sky_mithril.recovery import strategy

from tests.helpers.provisioning import bids_named
from tests.helpers.recovery_records import forget_recovery_records
from tests.helpers.reservations import (deploy, launch_as_deployed,
                                        launch_on_reservation, market_read,
                                        reserve)
from tests.integration.plugin.test_jobs_reservation_end import (
    EagerNextRegion, LocalRunner, advance_until_left, config, market_now,
    while_the_clock_moves)

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
PROVIDER = {'project_id': 'proj_emulator'}
RECOVER_NOW = (None, None)
NAMES_IT = {'reservation': 'train-res'}
MINUTE = datetime.timedelta(minutes=1)
LIVE = ('Open', 'Allocated', 'Preempting', 'Paused')


def handle(mithril: Dict[str, Any], runner: Any, name: str = 'job') -> Any:
    """The parts of SkyPilot's cluster handle the runtime reads."""
    return types.SimpleNamespace(
        cluster_name=name, cluster_name_on_cloud=name, cluster_yaml=None,
        get_command_runners=lambda: [runner],
        launched_resources=types.SimpleNamespace(
            cloud=types.SimpleNamespace(canonical_name=lambda: 'mithril'),
            instance_type=TYPE, region=REGION, max_hourly_cost=None,
            cluster_config_overrides={'mithril': mithril}))


def told(home: Path) -> bool:
    """Whether the head node (here, `home`) was told it leaves its node."""
    return (home / '.sky' / 'mithril' / 'reservation-end.yml').exists()


def hooks_run(home: Path) -> None:
    """What the head node's watcher does once the preemption hooks ran."""
    done = home / '.sky' / 'mithril' / 'preemption-hooks-done'
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text('done\n')


def give_back(server: EmulatorServer, cluster: str) -> None:
    """`sky down` of a cluster on the reservation."""
    while_the_clock_moves(server, lambda: provisioner.terminate_instances(
        cluster, PROVIDER))


def live_bids(server: EmulatorServer) -> list:
    return [b for b in bids_named(server, 'job') if b['status'] in LIVE]


@pytest.fixture
def on_spot(manual_clock_emulator: EmulatorServer, monkeypatch, tmp_path
            ) -> Iterator[Tuple[EmulatorServer, models.Reservation, Any]]:
    """Cluster `job` on a spot bid, its 1-instance reservation held by
    cluster `other`; the job's head node runs its commands in tmp_path."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    server = manual_clock_emulator
    monkeypatch.setattr(runtime, 'provider_config', lambda h: PROVIDER)
    monkeypatch.setattr(runtime, '_finished_status', lambda h: None)
    # Each test's emulator numbers its bids afresh.
    monkeypatch.setattr(back_to_reservation, '_hooks_ran', {})
    forget_recovery_records()
    kv_cache.delete_cache_entries_by_prefix(reservation_end.LEAD_KEY_PREFIX)
    kv_cache.delete_cache_entries_by_prefix(
        back_to_reservation.MOVE_KEY_PREFIX)
    reservation = reserve(server, 'train-res', hours=6)
    server.control('POST', 'advance', seconds=120)
    launch_on_reservation('other', reservation.name)
    record = while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job', 'job', config(reservation.name, 600)))
    assert record.head_instance_id not in reservation.instances
    assert [b['status'] for b in live_bids(server)] == ['Allocated']
    try:
        yield server, reservation, LocalRunner(tmp_path)
    finally:
        for cluster in ('job', 'job2', 'other', 'third'):
            reservation_claims.release(reservation_claims.of_cluster(cluster))
            cluster_bid.cancel_all(connection.connect(), cluster)


def status(mithril: Dict[str, Any], runner: Any) -> Any:
    return runtime.MithrilJobRuntime().get_job_status(handle(mithril, runner),
                                                      'job')


def recover_now(home: Path, mithril: Dict[str, Any] = NAMES_IT,
                cluster: str = 'job') -> None:
    """The head node (`home`) of `cluster` told of the move runs its hooks;
    the poll says recover now and SkyPilot's recovery begins."""
    job = handle(mithril, LocalRunner(home), cluster)
    hooks_run(home)
    assert runtime.MithrilJobRuntime().get_job_status(job, cluster) == (
        RECOVER_NOW)
    runtime.MithrilJobRuntime().on_before_recovery(job, None, 1, None)


def recover_for_the_move(server: EmulatorServer, home: Path,
                         mithril: Dict[str, Any] = NAMES_IT,
                         cluster: str = 'job') -> None:
    """`recover_now`; the recovery is planned as the move and the
    strategy's teardown gives the cluster's instances back."""
    recover_now(home, mithril, cluster)
    assert strategy.plan_recovery(handle(mithril, LocalRunner(home), cluster),
                                  None, None) == strategy.RecoveryPlan(
                                      back_to_reservation=True)
    give_back(server, cluster)


def test_the_job_moves_back_once_an_instance_frees_and_its_hooks_ran(
        on_spot, tmp_path):
    server, reservation, runner = on_spot
    # The reservation is full: the job stays on spot.
    assert status(NAMES_IT, runner) is None
    assert not told(tmp_path)

    give_back(server, 'other')
    # Opted out, or recovering only once the node is lost: it stays.
    assert status({**NAMES_IT, 'back_to_reservation': False}, runner) is None
    assert status({**NAMES_IT, 'recovery_starts': 'node_lost'},
                  runner) is None
    assert not told(tmp_path)

    # The head node is told; the job trains on until its hooks have run.
    assert status(NAMES_IT, runner) is None
    assert told(tmp_path)
    end = datetime.datetime.fromisoformat(str(yaml.safe_load(
        (tmp_path / '.sky/mithril/reservation-end.yml').read_text())[
            'end_time']))
    assert end > datetime.datetime.now(datetime.timezone.utc)
    assert status(NAMES_IT, runner) is None

    recover_for_the_move(server, tmp_path)
    # A move is no preemption: a relaunch that loses the race bids at the
    # normal limit price, not recovery_limit_price.
    assert not records.is_recovering('job')
    # The strategy tore the cluster down (the bid cancelled, confirmed) and
    # relaunches it in its region, onto the reservation.
    assert live_bids(server) == []
    relaunch = while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job', 'job', config(reservation.name, 600)))
    assert relaunch.head_instance_id in reservation.instances
    assert [c.instance_fid for c in reservation_claims.of_cluster('job')] == (
        reservation.instances)
    assert live_bids(server) == []
    # On the reservation, the poll has nothing to move.
    assert status(NAMES_IT, LocalRunner(tmp_path / 'new-head')) is None


def test_a_reservation_ending_within_the_lead_does_not_attract_the_job(
        on_spot, tmp_path):
    server, reservation, runner = on_spot
    give_back(server, 'other')
    advance_until_left(server, reservation, 30 * MINUTE - MINUTE)
    assert status({**NAMES_IT, 'reservation_end_lead_minutes': 30},
                  runner) is None
    assert not told(tmp_path)
    assert [b['status'] for b in live_bids(server)] == ['Allocated']


def lose_the_move(server: EmulatorServer, reservation: models.Reservation,
                  home: Path) -> None:
    """The move under way (head node `home` told) runs its hooks and
    recovers, but another cluster holds the free instance first (written
    as a launch claims; a launch now leaves a promised instance, so only
    one racing the promise could): the relaunch bids on spot, the one live
    bid of the job; that cluster then gives the instance back."""
    recover_for_the_move(server, home)
    with reservation_claims.lock(reservation.fid):
        reservation_claims.write(reservation, list(reservation.instances),
                                 'third', 'third')
    relaunch = while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job', 'job', config(reservation.name, 600)))
    assert relaunch.head_instance_id not in reservation.instances
    assert [b['status'] for b in live_bids(server)] == ['Allocated']
    give_back(server, 'third')


def test_a_move_that_lost_the_instance_waits_the_interval_doubled_each_time(
        on_spot, tmp_path):
    server, reservation, _ = on_spot
    give_back(server, 'other')
    home = tmp_path
    for wait in (policy.BACK_TO_RESERVATION_INTERVAL,
                 2 * policy.BACK_TO_RESERVATION_INTERVAL):
        assert status(NAMES_IT, LocalRunner(home)) is None
        assert told(home)
        moved_at = market_now(server)
        lose_the_move(server, reservation, home)
        # The instance is free again: within the wait the job stays put.
        home = home / 'new-head'
        server.control('POST', 'advance', seconds=(
            moved_at + wait - MINUTE - market_now(server)).total_seconds())
        assert status(NAMES_IT, LocalRunner(home)) is None
        assert not told(home)
        server.control('POST', 'advance', seconds=2 * 60)
    # Past the doubled wait, the third move starts.
    assert status(NAMES_IT, LocalRunner(home)) is None
    assert told(home)
    assert [b['status'] for b in live_bids(server)] == ['Allocated']


def test_one_free_instance_starts_the_move_of_one_job_only(on_spot, tmp_path):
    """Two jobs on spot wait for the same 1-instance reservation: once the
    instance frees, only one is told (the other would pay a teardown and a
    relaunch on spot for nothing)."""
    server, reservation, runner = on_spot
    while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job2', 'job2', config(reservation.name, 600)))
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    assert runtime.MithrilJobRuntime().get_job_status(
        handle(NAMES_IT, LocalRunner(tmp_path / 'job2'), 'job2'),
        'job2') is None
    assert told(tmp_path)
    assert not told(tmp_path / 'job2')


def test_the_instance_stays_promised_until_the_moving_jobs_relaunch_returns(
        on_spot, tmp_path):
    """Between the move's teardown (its spot bid cancelled) and its relaunch
    (which claims the instance), the free instance is still the moving
    job's: a second waiting job is not told to give up its spot bid."""
    server, reservation, runner = on_spot
    second = handle(NAMES_IT, LocalRunner(tmp_path / 'job2'), 'job2')
    while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job2', 'job2', config(reservation.name, 600)))
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    recover_for_the_move(server, tmp_path)
    # The instance is free on Mithril, but the relaunch has not claimed it.
    assert runtime.MithrilJobRuntime().get_job_status(second, 'job2') is None
    assert not told(tmp_path / 'job2')

    relaunch = while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job', 'job', config(reservation.name, 600)))
    assert relaunch.head_instance_id in reservation.instances
    back_to_reservation.relaunched('job')  # as the strategy does
    assert runtime.MithrilJobRuntime().get_job_status(second, 'job2') is None
    assert not told(tmp_path / 'job2')
    # Once the moved job gives the instance back, the second job moves.
    give_back(server, 'job')
    assert runtime.MithrilJobRuntime().get_job_status(second, 'job2') is None
    assert told(tmp_path / 'job2')


def test_a_poll_that_finds_the_count_busy_moves_nothing_at_once(
        on_spot, tmp_path):
    """Another job holding the lock around a move's decision (its database
    slow) does not hold this job's status poll up: the poll moves nothing
    this time, and the next one does."""
    server, _, runner = on_spot
    give_back(server, 'other')
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with shared_state.held(back_to_reservation.LOCK):
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        started = time.monotonic()
        assert status(NAMES_IT, runner) is None
        assert time.monotonic() - started < 20
        assert not told(tmp_path)
    finally:
        release.set()
        holder.join()
    assert status(NAMES_IT, runner) is None
    assert told(tmp_path)


def test_a_node_whose_hooks_already_ran_is_not_moved(on_spot, tmp_path):
    """A move whose recovery left the node running (the strategy never took
    it): its hooks-done file stays, and the watcher runs the hooks once per
    node, so a later move would recover at once without them."""
    server, _, runner = on_spot
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    recover_now(tmp_path)
    (tmp_path / '.sky/mithril/reservation-end.yml').unlink()
    server.control('POST', 'advance', seconds=(
        policy.BACK_TO_RESERVATION_INTERVAL + 2 * MINUTE).total_seconds())
    assert status(NAMES_IT, runner) is None
    assert not told(tmp_path)
    # The next polls remember it: no SSH to the head node every poll.
    runner.commands.clear()
    assert status(NAMES_IT, runner) is None
    assert status(NAMES_IT, runner) is None
    assert runner.commands == []
    assert not told(tmp_path)


def test_a_stale_move_does_not_turn_a_later_recovery_into_one(
        on_spot, tmp_path, monkeypatch):
    """A move recorded as recovering that no recovery took (the controller
    restarted): a recovery well past its hooks' deadline is SkyPilot's."""
    server, _, runner = on_spot
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    recover_now(tmp_path)
    later = time.time() + (back_to_reservation.HOOKS_SECONDS +
                           back_to_reservation.STALE_AFTER_SECONDS + 60)
    monkeypatch.setattr(back_to_reservation, 'time',
                        types.SimpleNamespace(time=lambda: later))
    assert strategy.plan_recovery(handle(NAMES_IT, runner), None, None) == (
        strategy.RecoveryPlan())


def test_a_move_whose_recovery_fails_leaves_no_instance_promised(
        on_spot, tmp_path, monkeypatch):
    """The job's spot bid is preempted while its move's hooks run: its
    recovery takes the move, then fails to place a standby (an API error)
    and recovers as SkyPilot does. The free instance is promised to it no
    more: the next job waiting for it moves now, not an hour later."""
    server, reservation, runner = on_spot
    home2, job2 = second_job_on_spot(server, reservation, tmp_path)
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    assert told(tmp_path)
    recover_now(tmp_path)
    [bid] = live_bids(server)
    server.control('POST', f'bids/{bid["fid"]}/preempt')

    def api_error(conn: Any, bid: models.Bid) -> bool:
        raise RuntimeError('Mithril answered 503')

    monkeypatch.setattr(strategy, '_has_block_volume', api_error)
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        lambda name: handle(NAMES_IT, runner))
    executor = EagerNextRegion(sky.Task(run='train'))
    asyncio.run(executor.recover())

    assert executor.steps == ['SkyPilot recovers']
    assert runtime.MithrilJobRuntime().get_job_status(job2, 'job2') is None
    assert told(home2)


def test_a_pool_worker_is_never_moved(on_spot, tmp_path):
    """SkyPilot resubmits a pool's job onto the same worker, never torn
    down: a move would only restart the job there."""
    from sky.serve import serve_state  # pylint: disable=import-outside-toplevel
    server, _, runner = on_spot
    serve_state.add_service('workers', 1, 'autoscaler', 'resources',
                            'round_robin',
                            serve_state.ServiceStatus.READY, False, True, 0,
                            'sky jobs pool apply')
    serve_state.add_version('workers')
    try:
        give_back(server, 'other')
        worker = handle(NAMES_IT, runner)
        worker.cluster_name = 'workers-1'
        assert runtime.MithrilJobRuntime().get_job_status(
            worker, 'workers-1') is None
        assert not told(tmp_path)
    finally:
        serve_state.remove_service_completely('workers')


def test_sky_jobs_logs_never_starts_a_move(on_spot, tmp_path):
    server, _, runner = on_spot
    give_back(server, 'other')
    assert runtime.MithrilJobRuntime().get_job_status(
        handle(NAMES_IT, runner), 'job', returncode=0) is None
    assert not told(tmp_path)
    assert status(NAMES_IT, runner) is None
    assert told(tmp_path)


def test_a_failing_state_database_leaves_the_status_poll_alone(
        on_spot, tmp_path, monkeypatch):
    """A job naming no reservation never reads the moves; any error while
    checking for a move leaves the job where it is."""
    server, _, runner = on_spot
    give_back(server, 'other')
    reads = []

    def broken(cluster_name: str) -> None:
        reads.append(cluster_name)
        raise sqlalchemy.exc.OperationalError(
            'SELECT', {}, Exception('database is locked'))

    monkeypatch.setattr(back_to_reservation, 'move_of', broken)
    assert status({}, runner) is None
    assert reads == []
    assert status(NAMES_IT, runner) is None
    assert reads == ['job']
    assert not told(tmp_path)


BOTH = {'reservation': ['train-res', 'second-res']}


def second_reservation_held(server: EmulatorServer) -> models.Reservation:
    """A second 1-instance reservation, which cluster `third` holds."""
    second = reserve(server, 'second-res', hours=6)
    server.control('POST', 'advance', seconds=120)
    while_the_clock_moves(server, lambda: launch_on_reservation(
        'third', second.name))
    return second


def test_the_job_moves_onto_the_second_reservation_it_lists_once_it_has_room(
        on_spot, tmp_path, monkeypatch):
    server, reservation, runner = on_spot
    second = second_reservation_held(server)
    assert status(BOTH, runner) is None
    assert not told(tmp_path)

    give_back(server, 'third')
    assert status(BOTH, runner) is None
    assert told(tmp_path)
    assert back_to_reservation.move_of('job').reservation == second.fid
    recover_for_the_move(server, tmp_path, BOTH)

    # Relaunched in its region: the deploy step passes the full first
    # reservation by for the second.
    with market_read(monkeypatch):
        variables = deploy('job', BOTH)
    relaunch = while_the_clock_moves(
        server, lambda: launch_as_deployed('job', variables))
    assert variables['mithril_reservation'] == second.fid
    assert relaunch.head_instance_id in second.instances
    assert [c.reservation_fid for c in reservation_claims.of_cluster('job')] == [
        second.fid]
    assert live_bids(server) == []
    assert reservation_claims.on(reservation.fid).keys() == set(
        reservation.instances)  # still `other`'s


def second_job_on_spot(server: EmulatorServer,
                       reservation: models.Reservation,
                       tmp_path: Path) -> Tuple[Path, Any]:
    """`job2`, naming only the first reservation, launched onto spot (the
    reservation is full): its head node's home and its handle."""
    home2 = tmp_path / 'job2'
    while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job2', 'job2', config(reservation.name, 600)))
    return home2, handle(NAMES_IT, LocalRunner(home2), 'job2')


def test_a_job_moves_onto_the_second_reservation_while_the_firsts_room_is_promised(
        on_spot, tmp_path, monkeypatch):
    """`job2` (naming only the first reservation) moves onto its freed
    instance; `job` (naming both) does not wait for it on spot: it moves
    onto the second at once, and each relaunch lands on its own."""
    server, reservation, runner = on_spot
    second = second_reservation_held(server)
    home2, job2 = second_job_on_spot(server, reservation, tmp_path)
    give_back(server, 'other')
    assert runtime.MithrilJobRuntime().get_job_status(job2, 'job2') is None
    assert told(home2)
    give_back(server, 'third')

    assert status(BOTH, runner) is None
    assert told(tmp_path)
    assert back_to_reservation.move_of('job').reservation == second.fid

    recover_for_the_move(server, home2, NAMES_IT, 'job2')
    recover_for_the_move(server, tmp_path, BOTH)
    with market_read(monkeypatch):
        variables = deploy('job', BOTH)
    assert variables['mithril_reservation'] == second.fid
    while_the_clock_moves(server, lambda: launch_as_deployed('job', variables))
    while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job2', 'job2', config(reservation.name, 600)))
    assert [c.reservation_fid for c in reservation_claims.of_cluster(
        'job2')] == [reservation.fid]
    assert [c.reservation_fid for c in reservation_claims.of_cluster(
        'job')] == [second.fid]
    assert live_bids(server) == []


def test_a_move_onto_the_second_reservation_does_not_take_the_first_from_another_move(
        on_spot, tmp_path, monkeypatch):
    """`job` (naming both) is moving onto the second reservation when the
    first frees, and `job2` (naming only the first) starts its move onto
    that instance. `job`'s relaunch goes on the second, promised to it, and
    leaves the first to `job2`: taking it would leave `job2` torn down off
    its spot bid and relaunched onto a new one for nothing."""
    server, reservation, runner = on_spot
    second = second_reservation_held(server)
    home2, job2 = second_job_on_spot(server, reservation, tmp_path)
    give_back(server, 'third')
    assert status(BOTH, runner) is None
    assert back_to_reservation.move_of('job').reservation == second.fid

    # The first reservation's instance frees during `job`'s move.
    give_back(server, 'other')
    assert runtime.MithrilJobRuntime().get_job_status(job2, 'job2') is None
    assert told(home2)
    assert back_to_reservation.move_of('job2').reservation == reservation.fid

    recover_for_the_move(server, tmp_path, BOTH)
    with market_read(monkeypatch):
        variables = deploy('job', BOTH)
    while_the_clock_moves(server, lambda: launch_as_deployed('job', variables))
    back_to_reservation.relaunched('job')  # as the strategy does
    recover_for_the_move(server, home2, NAMES_IT, 'job2')
    while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job2', 'job2', config(reservation.name, 600)))

    assert [c.reservation_fid for c in reservation_claims.of_cluster(
        'job2')] == [reservation.fid]
    assert [c.reservation_fid for c in reservation_claims.of_cluster(
        'job')] == [second.fid]
    assert live_bids(server) == []
