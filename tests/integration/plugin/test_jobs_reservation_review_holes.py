"""Holes found reviewing the reservation placement (merge 9a27095), on the
races module's two jobs: a poll that counted a reservation's free instances
before another job's relaunch claimed them and dropped its promise must not
start a move onto a full reservation (its hooks run, its spot bid is torn
down, and it relaunches onto spot again); nor may a fresh launch whose
deploy step ran before the promise claim the promised instance (the
provisioner's claim counts no promise: fails)."""

import contextlib
import threading
from typing import Any, Iterator, List

from sky_mithril import shared_state
from sky_mithril.recovery import back_to_reservation

from tests.helpers.reservations import (deploy, launch_as_deployed,
                                        market_read)
from tests.integration.plugin import test_jobs_back_to_reservation as moves
from tests.integration.plugin import test_jobs_reservation_end as ends
from tests.integration.plugin.test_jobs_reservation_list_races import (
    MOVER, REGION, claimed, job_leaves, job_recovers, mover_moves,
    mover_polled, two_jobs)

__all__ = ['two_jobs']


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
