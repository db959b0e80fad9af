"""Holes found reviewing the reservation placement (merge 9a27095), on the
races module's two jobs: a poll that counted a reservation's free instances
before another job's relaunch claimed them and dropped its promise must not
start a move onto a full reservation (its hooks run, its spot bid is torn
down, and it relaunches onto spot again)."""

import contextlib
import threading
from typing import Any, Iterator, List

from sky_mithril import shared_state
from sky_mithril.recovery import back_to_reservation

from tests.integration.plugin import test_jobs_back_to_reservation as moves
from tests.integration.plugin.test_jobs_reservation_list_races import (
    REGION, claimed, job_leaves, job_recovers, mover_polled, two_jobs)

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
