"""Two managed jobs after the same free reserved instance, on a manual-clock
emulator: `job` leaves its ending reservation (`short-res`) for the next it
lists (`next-res`, `reservation_end.next_reservation`), while `mover`, on a
spot bid, moves back onto `next-res` once it has room
(`back_to_reservation`). An instance promised to one job's move is taken
neither by the other's nor by a fresh `sky launch`: the losing job would
have had its spot bid torn down and a new one placed, or its instance
taken, for nothing. That holds too when the fresh launch's deploy step
ran before the promise, and when a poll counted the instance free before
a relaunch claimed it. A recovery cancelled while it plans leaves nothing
promised, and one waiting on Mithril holds no other job's poll up."""

import asyncio
import contextlib
import datetime
import threading
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
import sky
from sky import global_user_state

from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes
from sky_mithril.recovery import back_to_reservation
from sky_mithril.recovery import notice
from sky_mithril.recovery import runtime
from sky_mithril.recovery import strategy

from tests.helpers.provisioning import bids_named, forget_earlier_jobs
from tests.helpers.recovery_records import forget_recovery_records
from tests.helpers.reservations import (deploy, launch_as_deployed,
                                        launch_on_reservation, market_read,
                                        reserve)
from tests.integration.plugin import test_jobs_back_to_reservation as moves
from tests.integration.plugin import test_jobs_reservation_end as ends

REGION = 'us-central3-a'
PROVIDER = {'project_id': 'proj_emulator'}
RECOVER_NOW = (None, None)
MINUTE = datetime.timedelta(minutes=1)
LEAD = datetime.timedelta(minutes=30)
# `job` lists its ending reservation, then the next; `mover` only the next.
JOB = {'reservation_end_lead_minutes': 30,
       'reservation': ['short-res', 'next-res']}
MOVER = {'reservation': 'next-res'}
LIVE = ('Open', 'Allocated', 'Preempting', 'Paused')


def claimed(cluster: str) -> List[str]:
    return [c.reservation_fid for c in reservation_claims.of_cluster(cluster)]


def live_bids(server: EmulatorServer, cluster: str) -> List[str]:
    return [b['fid'] for b in bids_named(server, cluster)
            if b['status'] in LIVE]


@pytest.fixture
def two_jobs(manual_clock_emulator: EmulatorServer, monkeypatch, tmp_path
             ) -> Iterator[Tuple[EmulatorServer, models.Reservation,
                                 models.Reservation]]:
    """`job` on the one instance of the 3-hour `short-res`; `mover` on a
    spot bid, waiting for the 6-hour `next-res`, whose one instance `other`
    holds."""
    server = manual_clock_emulator
    monkeypatch.setattr(runtime, 'provider_config', lambda h: PROVIDER)
    monkeypatch.setattr(runtime, '_finished_status', lambda h: None)
    monkeypatch.setattr(back_to_reservation, '_hooks_ran', {})
    monkeypatch.setattr(notice, 'wait_for_preemption_hooks', lambda h: 0.0)
    forget_recovery_records()
    forget_earlier_jobs()
    ending = reserve(server, 'short-res')
    following = reserve(server, 'next-res', hours=6)
    server.control('POST', 'advance', seconds=120)
    provisioner.run_instances(REGION, 'job', 'job',
                              ends.config(ending.name, 600))
    launch_on_reservation('other', following.name)
    ends.while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'mover', 'mover', ends.config(following.name, 600)))
    assert claimed('job') == [ending.fid]
    assert claimed('mover') == [] and live_bids(server, 'mover')
    try:
        yield server, ending, following
    finally:
        for cluster in ('job', 'mover', 'other', 'fresh'):
            reservation_claims.release(reservation_claims.of_cluster(cluster))
            cluster_bid.cancel_all(connection.connect(), cluster)
        # Their moves' promises would count against a later module's
        # reservations (a new emulator may give out the same fids).
        forget_earlier_jobs()


def job_handle(home: Path) -> Any:
    return ends.handle(JOB, ends.LocalRunner(home))


def mover_handle(home: Path) -> Any:
    return moves.handle(MOVER, ends.LocalRunner(home), 'mover')


def mover_polled(home: Path) -> bool:
    """`mover`'s status poll (never "recover now" here); whether it has told
    its head node (`home`) of a move."""
    assert runtime.MithrilJobRuntime().get_job_status(mover_handle(home),
                                                      'mover') is None
    return moves.told(home)


def job_leaves(server: EmulatorServer, ending: models.Reservation,
               home: Path) -> Any:
    """`short-res` ends within `job`'s lead: its poll says recover now and
    the controller's runtime prepares the recovery; `job`'s handle."""
    job = job_handle(home)
    ends.advance_until_left(server, ending, LEAD - MINUTE)
    assert runtime.MithrilJobRuntime().get_job_status(job, 'job') == (
        RECOVER_NOW)
    runtime.MithrilJobRuntime().on_before_recovery(job, None, 1, None)
    return job


def job_recovers(server: EmulatorServer, job: Any, monkeypatch) -> List[str]:
    """sky-mithril's EAGER_NEXT_REGION recovers `job` (torn down, then
    relaunched in its region or by SkyPilot's own recovery); its steps."""
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        lambda name: job)
    task = sky.Task(run='train')
    task.set_resources(job.launched_resources)
    executor = ends.EagerNextRegion(task)
    with market_read(monkeypatch):
        ends.while_the_clock_moves(server,
                                   lambda: asyncio.run(executor.recover()))
    return executor.steps


def mover_moves(server: EmulatorServer, home: Path,
                following: models.Reservation) -> None:
    """`mover`'s move under way: its hooks run, its spot bid is torn down
    and it relaunches on `next-res` (spot when that is full)."""
    moves.recover_for_the_move(server, home, MOVER, 'mover')
    ends.while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'mover', 'mover', ends.config(following.name, 600)))
    back_to_reservation.relaunched('mover')  # as the strategy does


def test_a_job_leaving_its_reservation_leaves_an_instance_promised_to_a_move(
        two_jobs, tmp_path, monkeypatch):
    """`mover` was told first (its hooks run; `next-res`'s free instance is
    its own): `job` leaves `short-res` as with no room on `next-res`, and
    `mover` lands there. Taking it would tear `mover`'s spot bid down and
    place a new one for nothing."""
    server, ending, following = two_jobs
    moves.give_back(server, 'other')
    mover_home = tmp_path / 'mover'
    assert mover_polled(mover_home)

    job = job_leaves(server, ending, tmp_path / 'job')
    steps = job_recovers(server, job, monkeypatch)
    mover_moves(server, mover_home, following)

    assert claimed('mover') == [following.fid]
    assert live_bids(server, 'mover') == []
    assert steps == ['down', 'SkyPilot recovers']
    assert claimed('job') == []


def test_a_move_does_not_start_onto_the_instance_a_leaving_job_relaunches_on(
        two_jobs, tmp_path, monkeypatch):
    """`job`'s recovery chose `next-res` (its free instance): until its
    relaunch claims it, a poll of `mover` does not start a move onto that
    instance (its hooks, its spot bid torn down, a relaunch that finds the
    instance taken and bids on spot again)."""
    server, ending, following = two_jobs
    moves.give_back(server, 'other')
    job = job_leaves(server, ending, tmp_path / 'job')
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        lambda name: job)
    plan = strategy.plan_recovery(job, None, threading.Event())
    assert plan == strategy.RecoveryPlan(leaves_reservation=True,
                                         onto_next_reservation=True)

    # The strategy's teardown of `short-res` (pause, fresh boot disk) and
    # the relaunch take minutes; `mover`'s status polls go on meanwhile.
    mover_home = tmp_path / 'mover'
    assert not mover_polled(mover_home)

    assert job_recovers(server, job, monkeypatch) == [
        'down', f'launch in {REGION}']
    assert claimed('job') == [following.fid]
    assert live_bids(server, 'job') == []


def test_a_poll_counting_before_a_relaunch_claims_does_not_move_onto_it(
        two_jobs, tmp_path, monkeypatch):
    """`mover`'s poll counts `next-res`'s one free instance, then waits for
    the move lock while `job`, leaving `short-res`, relaunches onto that
    instance and its recovery drops its promise. Once the poll has the lock
    the instance is `job`'s: `mover` is not told to move."""
    server, ending, following = two_jobs
    moves.give_back(server, 'other')
    job = job_leaves(server, ending, tmp_path / 'job')

    at_lock, go = threading.Event(), threading.Event()
    real_held = shared_state.held
    polls: List[Any] = []

    @contextlib.contextmanager
    def held(name: str, blocking: bool = True) -> Iterator[bool]:
        if not blocking and threading.current_thread() is poller:
            at_lock.set()
            assert go.wait(300)
        with real_held(name, blocking) as got:
            yield got

    monkeypatch.setattr(shared_state, 'held', held)
    poller = threading.Thread(target=lambda: polls.append(
        mover_polled(tmp_path / 'mover')))
    poller.start()
    try:
        assert at_lock.wait(120)
        assert job_recovers(server, job, monkeypatch) == [
            'down', f'launch in {REGION}']
        assert claimed('job') == [following.fid]
    finally:
        go.set()
        poller.join()

    assert polls == [False]
    assert back_to_reservation.promised('job') == {}


def test_a_fresh_launch_leaves_the_instance_promised_to_a_move(
        two_jobs, tmp_path, monkeypatch, caplog):
    """`sky launch -c fresh` naming `next-res` while `mover`'s hooks run
    for its move onto the free instance: `fresh` bids on spot, saying why,
    and `mover` lands on the instance rather than on spot again."""
    server, _, following = two_jobs
    moves.give_back(server, 'other')
    mover_home = tmp_path / 'mover'
    assert mover_polled(mover_home)
    caplog.set_level('INFO')

    with market_read(monkeypatch):
        variables = deploy('fresh', MOVER)
    ends.while_the_clock_moves(server, lambda: launch_as_deployed(
        'fresh', variables))
    mover_moves(server, mover_home, following)

    assert f'reservation next-res ({following.fid}) has 1 of its 1 ' \
        'instances free (1 promised to managed jobs moving onto it); the ' \
        'cluster needs 1; the cluster bids on spot' in caplog.text
    assert claimed('fresh') == [] and live_bids(server, 'fresh')
    assert claimed('mover') == [following.fid]
    assert live_bids(server, 'mover') == []


def test_a_fresh_launch_deployed_before_a_move_was_promised_leaves_it(
        two_jobs, tmp_path, monkeypatch):
    """`sky launch -c fresh` naming `next-res`: its deploy step finds the
    free instance unpromised, then `mover`'s poll promises it to its move
    before `fresh`'s provisioner claims. `fresh` bids on spot and `mover`
    lands on the instance, rather than `mover` being torn down off its spot
    bid only to bid on spot again."""
    server, _, following = two_jobs
    moves.give_back(server, 'other')
    with market_read(monkeypatch):
        variables = deploy('fresh', MOVER)
    assert variables['mithril_reservation'] == following.fid
    assert mover_polled(tmp_path / 'mover')

    ends.while_the_clock_moves(server, lambda: launch_as_deployed(
        'fresh', variables))
    mover_moves(server, tmp_path / 'mover', following)

    assert claimed('mover') == [following.fid]
    assert claimed('fresh') == []


def slow_first_look(monkeypatch: pytest.MonkeyPatch
                    ) -> Tuple[threading.Event, threading.Event]:
    """The first look-up of listed reservations (`job`'s recovery looking
    for room) waits for Mithril's answer: the first event is set once it
    waits, the second lets it go on."""
    looking, answer = threading.Event(), threading.Event()
    find_each = reserved_nodes.find_each

    def slow_find_each(conn: Any, names: Any) -> Any:
        if not looking.is_set():
            looking.set()
            assert answer.wait(60)
        return find_each(conn, names)

    monkeypatch.setattr(reserved_nodes, 'find_each', slow_find_each)
    return looking, answer


def test_a_slow_look_for_room_holds_no_other_jobs_poll_up(
        two_jobs, tmp_path, monkeypatch):
    """While `job`'s recovery waits on Mithril looking for room on
    `next-res`, `mover`'s poll is not skipped: it moves onto the free
    instance, and `job`, finding it promised, leaves as with no room."""
    server, ending, _ = two_jobs
    moves.give_back(server, 'other')
    job = job_leaves(server, ending, tmp_path / 'job')
    looking, answer = slow_first_look(monkeypatch)
    plans: List[strategy.RecoveryPlan] = []
    planner = threading.Thread(target=lambda: plans.append(
        strategy.plan_recovery(job, None, threading.Event())))
    planner.start()
    try:
        assert looking.wait(60)
        assert mover_polled(tmp_path / 'mover')
    finally:
        answer.set()
        planner.join()
    assert plans == [strategy.RecoveryPlan(leaves_reservation=True)]


def test_a_recovery_cancelled_while_it_plans_leaves_nothing_promised(
        two_jobs, tmp_path, monkeypatch):
    """`sky jobs cancel` of `job` while its recovery looks for room on
    `next-res` (the look goes on in its thread): `next-res`'s free
    instance is not left promised to the cancelled job for an hour, and
    `mover` moves onto it at its next poll."""
    server, ending, _ = two_jobs
    moves.give_back(server, 'other')
    job = job_leaves(server, ending, tmp_path / 'job')
    looking, answer = slow_first_look(monkeypatch)
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        lambda name: job)
    task = sky.Task(run='train')
    task.set_resources(job.launched_resources)

    async def cancel_the_recovery() -> None:
        recovery = asyncio.ensure_future(ends.EagerNextRegion(task).recover())
        assert await asyncio.to_thread(looking.wait, 60)
        recovery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await recovery
        answer.set()

    with market_read(monkeypatch):
        asyncio.run(cancel_the_recovery())  # its planning thread joined

    assert mover_polled(tmp_path / 'mover')
