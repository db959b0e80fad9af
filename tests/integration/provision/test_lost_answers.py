"""A bid POST answered by a 5xx or a dropped connection that Mithril commits
seconds later (the emulator's late-commit fault, on a manual clock): a launch
or a standby never leaves two bids of one name. The late-commit window is
shrunk to a few wall seconds; the emulator's clock moves only when a test
advances it, so each commit lands exactly when the test says. Where looking
for a bid fails too, a standby's placement stays recorded until its late
commit is found and cancelled."""

import os
import signal
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from sky.provision import common

from sky_mithril.account import connection
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.recovery import records
from sky_mithril.recovery import standby as standby_lib

from tests.helpers.provisioning import (bids_named, launch, launch_on_manual_clock,
                                        provision_config)
from tests.helpers.recovery_records import forget_recovery_records

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
PROVIDER = {'project_id': 'proj_emulator'}


@pytest.fixture
def window(monkeypatch) -> Callable[[float], None]:
    """Sets the late-commit window (wall seconds), polled every 20 ms."""
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 0.02)

    def set_window(seconds: float) -> None:
        monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_WINDOW_SECONDS',
                            seconds)

    return set_window


def late_commit_first_post(server: EmulatorServer, seconds: float,
                           answer: str = 'server_error',
                           then_fail: bool = False,
                           answered_after: float = 0.0) -> None:
    """The next bid POST is answered with a 503 (or a reset), after
    `answered_after` wall seconds, and committed `seconds` of market time
    later; with `then_fail`, later POSTs get a plain 503 and are never
    committed."""
    rules: List[Dict[str, Any]] = [{
        'method': 'POST', 'path': '/v2/spot/bids', 'late_commit': 1.0,
        'late_commit_s': seconds, 'late_commit_answer': answer,
        'server_error_statuses': [503], 'max_faults': 1,
        'latency': 1.0 if answered_after else 0.0,
        'latency_s': answered_after}]
    if then_fail:
        rules.append({'method': 'POST', 'path': '/v2/spot/bids',
                      'server_error': 1.0, 'server_error_statuses': [503]})
    server.control('PUT', 'faults', rules=rules)


def fail_listing(server: EmulatorServer, times: int) -> None:
    """Looking for bids by name fails with a 503 the next `times` times."""
    server.control('PUT', 'faults', rules=[{
        'method': 'GET', 'path': '/v2/spot/bids', 'server_error': 1.0,
        'server_error_statuses': [503], 'max_faults': times}])


def failed_requests(server: EmulatorServer) -> int:
    return server.control('GET', 'faults')['counts']['server_error']


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def late_commits(server: EmulatorServer) -> int:
    return server.control('GET', 'faults')['counts']['late_commit']


def bid_posts(server: EmulatorServer) -> int:
    return server.control('GET', 'stats')['by_route'].get(
        'POST /v2/spot/bids', 0)


def live(server: EmulatorServer, name: str) -> List[Dict[str, Any]]:
    return [b for b in bids_named(server, name) if b['status'] != 'Terminated']


class Background(threading.Thread):
    """Runs `call` in a thread, keeping its result or error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as e:  # pylint: disable=broad-except
            self.error = e


def drive_clock(server: EmulatorServer, worker: threading.Thread) -> None:
    """Moves the manual clock a quarter clearing at a time until `worker`
    ends."""
    while worker.is_alive():
        server.control('POST', 'advance', seconds=CLEARING_S / 4)
        worker.join(0.05)


def test_a_late_commit_inside_the_window_is_used_not_posted_again(
        manual_clock_emulator, window):
    server = manual_clock_emulator
    window(10.0)
    late_commit_first_post(server, 60)
    launcher = Background(lambda: launch('late', provision_config()))
    wait_for(lambda: late_commits(server) == 1, 'the bid POST never came')
    # Time to look for the bid once and find nothing, as Mithril has not
    # committed it yet (it does 60 s of market time later).
    time.sleep(0.3)
    drive_clock(server, launcher)
    assert launcher.error is None, launcher.error
    [bid] = live(server, 'late')
    assert bid['status'] == 'Allocated'
    assert [i['fid'] for i in bid['instances']] == (
        launcher.result.created_instance_ids)
    assert len(bids_named(server, 'late')) == 1
    assert bid_posts(server) == 1


def test_a_late_commit_after_the_window_is_cancelled_by_the_launch(
        manual_clock_emulator, window, caplog):
    server = manual_clock_emulator
    window(0.3)
    caplog.set_level('INFO')
    late_commit_first_post(server, 600, answer='reset')
    launcher = Background(lambda: launch('later', provision_config()))
    wait_for(lambda: bid_posts(server) == 2,
             'the bid was never POSTed again')
    # One jump: the second bid wins and boots, and the first POST is
    # committed (600 s after it was answered) before the launch sees its
    # nodes up.
    server.control('POST', 'advance', seconds=600)
    drive_clock(server, launcher)
    assert launcher.error is None, launcher.error
    bids = bids_named(server, 'later')
    assert len(bids) == 2
    [kept] = live(server, 'later')
    [extra] = [b for b in bids if b['fid'] != kept['fid']]
    assert extra['status'] == 'Terminated'
    assert [i['fid'] for i in kept['instances']] == (
        launcher.result.created_instance_ids)
    assert f'Cancelled bid {extra["fid"]}: a second live bid' in caplog.text


def test_a_standby_whose_post_is_committed_late_is_the_only_standby(
        manual_clock_emulator, window):
    server = manual_clock_emulator
    window(10.0)
    forget_recovery_records()
    launch_on_manual_clock(server, 'job', provision_config(limit='10.00'),
                           CLEARING_S)
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price='$50.00')
    server.control('POST', 'advance', seconds=CLEARING_S)
    conn = connection.connect()
    old = cluster_bid.live_bid(conn, 'job')
    assert old is not None and old.status == 'Preempting'
    late_commit_first_post(server, 30, then_fail=True)
    placing = Background(lambda: standby_lib.place_standby(
        conn, old, Decimal('30.00'), None))
    wait_for(lambda: late_commits(server) == 1, 'the standby POST never came')
    # Before looking again for long, a placement that gives up after its
    # POSTs has taken its error path by now.
    time.sleep(0.3)
    server.control('POST', 'advance', seconds=30)
    placing.join(30)
    server.control('PUT', 'faults', rules=[])
    standby = placing.result
    expected = {old.fid} | ({standby.bid.fid} if standby else set())
    assert {b['fid'] for b in live(server, 'job')} == expected
    assert standby is not None, placing.error
    assert records.standby_of('job') == standby.bid.fid
    assert bid_posts(server) == 2  # the launch's, and one for the standby


def test_a_standby_whose_late_commit_was_not_watched_stays_recorded(
        manual_clock_emulator, window, monkeypatch):
    """The standby's POST is answered with a 503 and committed later, and
    looking for it fails for the whole window, until its placement gives
    up: the placement stays recorded, so its late commit is taken for a
    standby beside the cluster's bid, not a second bid of the cluster, and
    the recovery's fallback cancels it."""
    server = manual_clock_emulator
    window(1.0)
    # The window is looked at twice: at its start and, the poll coming
    # after its end, last.
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 2.0)
    forget_recovery_records()
    launch_on_manual_clock(server, 'job', provision_config(limit='10.00'),
                           CLEARING_S)
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price='$50.00')
    server.control('POST', 'advance', seconds=CLEARING_S)
    conn = connection.connect(max_retry_seconds=0.0)
    old = cluster_bid.live_bid(conn, 'job')
    assert old is not None and old.status == 'Preempting'
    late_commit_first_post(server, 30, answered_after=0.5)
    placing = Background(lambda: standby_lib.place_standby(
        conn, old, Decimal('30.00'), None))
    wait_for(lambda: late_commits(server) == 1, 'the standby POST never came')
    # Before the POST is answered: looking for the bid fails three times,
    # the two look-ups of the window its placement waits out, and once more
    # as the placement, given up, watches for it to cancel it.
    fail_listing(server, 3)
    placing.join(30)
    assert isinstance(placing.error, cluster_bid.UnwatchedCommitError)
    assert records.standby_of('job') == ''

    server.control('POST', 'advance', seconds=30)
    [late] = [b['fid'] for b in live(server, 'job') if b['fid'] != old.fid]
    assert cluster_bid.live_bid(conn, 'job').fid == old.fid
    standby_lib.drop_recorded_standby(connection.connect(), 'job')

    assert [b['fid'] for b in live(server, 'job')] == [old.fid]
    assert {b['fid']: b['status'] for b in bids_named(server, 'job')}[
        late] == 'Terminated'
    assert records.standby_of('job') is None


def test_a_look_up_that_fails_mid_window_does_not_end_the_watch(
        manual_clock_emulator, window):
    """The standby's POST is answered with a 503 and committed 30 s of
    market time later; looking for it fails once before that: the placement
    looks again, finds the late commit and records it as the standby,
    without a second POST."""
    server = manual_clock_emulator
    window(30.0)
    forget_recovery_records()
    launch_on_manual_clock(server, 'job', provision_config(limit='10.00'),
                           CLEARING_S)
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price='$50.00')
    server.control('POST', 'advance', seconds=CLEARING_S)
    conn = connection.connect(max_retry_seconds=0.0)
    old = cluster_bid.live_bid(conn, 'job')
    assert old is not None and old.status == 'Preempting'
    late_commit_first_post(server, 30)
    placing = Background(lambda: standby_lib.place_standby(
        conn, old, Decimal('30.00'), None))
    wait_for(lambda: late_commits(server) == 1, 'the standby POST never came')
    fail_listing(server, 1)
    wait_for(lambda: failed_requests(server) == 1, 'it was never looked for')
    server.control('POST', 'advance', seconds=30)
    placing.join(30)

    assert placing.error is None, placing.error
    standby = placing.result
    assert {b['fid'] for b in live(server, 'job')} == {old.fid,
                                                       standby.bid.fid}
    assert records.standby_of('job') == standby.bid.fid
    assert bid_posts(server) == 2  # the launch's, and one for the standby


def test_a_standby_unwatched_after_its_cluster_was_torn_down_is_cancelled(
        manual_clock_emulator, window, monkeypatch):
    """The standby's POST is answered with a 503 after SkyPilot tore the
    cluster down (`sky jobs cancel`); Mithril commits it within the window,
    but every look-up for it fails until its placement gives up. The
    cluster being gone, its standby's record is not written back (nothing
    would read it): the placement looks for the bid again and cancels it."""
    server = manual_clock_emulator
    window(1.0)
    # The window is looked at twice: at its start and, the poll coming
    # after its end, last.
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 2.0)
    monkeypatch.setattr(standby_lib, 'DROP_RETRY_SECONDS', 0.05)
    forget_recovery_records()
    launch_on_manual_clock(server, 'job', provision_config(limit='10.00'),
                           CLEARING_S)
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price='$50.00')
    server.control('POST', 'advance', seconds=CLEARING_S)
    conn = connection.connect(max_retry_seconds=0.0)
    old = cluster_bid.live_bid(conn, 'job')
    assert old is not None and old.status == 'Preempting'
    late_commit_first_post(server, 30, answered_after=2.0)
    placing = Background(lambda: standby_lib.place_standby(
        conn, old, Decimal('30.00'), None))
    wait_for(lambda: late_commits(server) == 1, 'the standby POST never came')
    provisioner.terminate_instances('job', PROVIDER)
    assert records.standby_of('job') is None
    # Before the POST is answered: looking for the bid fails four times,
    # the window's two look-ups, the one more as the placement, given up,
    # watches for it to cancel it, and the one before it gives up.
    fail_listing(server, 4)
    wait_for(lambda: failed_requests(server) == 1, 'it was never looked for')
    server.control('POST', 'advance', seconds=30)
    placing.join(30)

    assert isinstance(placing.error, common.StopFailoverError), placing.error
    assert failed_requests(server) == 4
    assert live(server, 'job') == []
    assert len(bids_named(server, 'job')) == 2
    assert records.standby_of('job') is None


@pytest.fixture
def sigterm_raises() -> Iterator[threading.Event]:
    """While the event is set, SIGTERM raises KeyboardInterrupt, as in
    SkyPilot's request worker; otherwise it is dropped."""
    armed = threading.Event()

    def interrupt(signum: int, frame: Any) -> None:
        del signum, frame
        if armed.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield armed
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch_interrupted(name: str, armed: threading.Event) -> None:
    """A launch that SIGTERM interrupts."""
    armed.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                launch(name, provision_config())
            finally:
                armed.clear()
    finally:
        armed.clear()


def test_ctrl_c_while_waiting_out_a_lost_answer_cancels_its_late_commit(
        manual_clock_emulator, window, sigterm_raises):
    server = manual_clock_emulator
    window(30.0)
    late_commit_first_post(server, 60)

    def interrupt_then_commit() -> None:
        wait_for(lambda: late_commits(server) == 1, 'no bid POST')
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        server.control('POST', 'advance', seconds=60)

    helper = Background(interrupt_then_commit)
    started = time.monotonic()
    launch_interrupted('cancelled', sigterm_raises)
    helper.join(10)
    # The signal was not held for the window: the launch left once the
    # late commit was there to cancel.
    assert time.monotonic() - started < 10
    assert [b['status'] for b in bids_named(server, 'cancelled')] == [
        'Terminated']
    assert bid_posts(server) == 1


def test_a_watch_after_ctrl_c_looks_again_after_a_failed_look_up(
        manual_clock_emulator, window, sigterm_raises, monkeypatch):
    """Ctrl-C while a lost answer is waited out; as the launch then watches
    for its late commit to cancel it, looking for it fails once, and Mithril
    commits it after that: the watch goes on, and the bid is cancelled."""
    server = manual_clock_emulator
    window(30.0)
    original = connection.connect
    monkeypatch.setattr(connection, 'connect',
                        lambda **kw: original(**kw, max_retry_seconds=0.0))
    late_commit_first_post(server, 60)

    def interrupt_fail_once_then_commit() -> None:
        wait_for(lambda: late_commits(server) == 1, 'no bid POST')
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        fail_listing(server, 1)
        wait_for(lambda: failed_requests(server) == 1,
                 'it was never looked for')
        server.control('POST', 'advance', seconds=60)

    helper = Background(interrupt_fail_once_then_commit)
    launch_interrupted('watched', sigterm_raises)
    helper.join(10)
    assert helper.error is None, helper.error
    assert [b['status'] for b in bids_named(server, 'watched')] == [
        'Terminated']
    assert bid_posts(server) == 1


def test_a_second_ctrl_c_stops_the_watch_and_says_what_may_still_bill(
        manual_clock_emulator, window, sigterm_raises, caplog):
    server = manual_clock_emulator
    window(30.0)
    caplog.set_level('INFO')
    late_commit_first_post(server, 60)

    def interrupt_twice() -> None:
        wait_for(lambda: late_commits(server) == 1, 'no bid POST')
        for _ in range(2):
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGTERM)

    helper = Background(interrupt_twice)
    started = time.monotonic()
    launch_interrupted('abandoned', sigterm_raises)
    helper.join(10)
    assert time.monotonic() - started < 10
    assert 'Stopped watching for bid' in caplog.text
    assert 'Run `sky down` for this cluster' in caplog.text
    server.control('POST', 'advance', seconds=60)
    assert [b['status'] for b in bids_named(server, 'abandoned')] == ['Open']
    provisioner.terminate_instances('abandoned', PROVIDER)
    assert [b['status'] for b in bids_named(server, 'abandoned')] == [
        'Terminated']
