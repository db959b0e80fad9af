"""When a recovery through a standby falls back to SkyPilot's own strategy
(manual-clock emulator, the API failing where the test says): SkyPilot's
FAILOVER relaunches onto the cluster as it is, adopting its live bid, so
the standby must be gone first, or the recovery must stop, even a standby
whose placement failed but whose POST Mithril may still commit. Never two
billing bids, and never the cluster's own bid cancelled."""

import asyncio
import threading
import time
import types
from typing import Any, Dict, List, Optional

import pytest

from sky import global_user_state

from sky_mithril.account import connection
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.recovery import records
from sky_mithril.recovery import runtime
from sky_mithril.recovery import staging
from sky_mithril.recovery import standby as standby_lib
from sky_mithril.recovery import strategy

from tests.helpers.provisioning import bids_named, provision_config
from tests.helpers.recovery_records import forget_recovery_records
from tests.integration.plugin.test_jobs_recovery import (CLEARING_S, REGION,
                                                         advancing_clock,
                                                         handle, preempt)

PROVIDER = {'project_id': 'proj_emulator'}
# The relaunch limit: the standby wins in the cluster's region.
MITHRIL = {'recovery_limit_price': 60}


class SkyPilotsFailover:
    """Stands for SkyPilot's FAILOVER strategy, whose recovery first
    relaunches the job in the cluster's region onto the cluster as it is,
    without a teardown. The provisioner's first step there,
    `ClusterBid.acquire`, adopts the cluster's live bid at the relaunch's
    limit (the cluster is being recovered: `recovery_limit_price`): that is
    what this does and records. A job submitted on a cluster starts at
    once."""

    cluster_name = 'job'
    pool = None
    dag = None

    def __init__(self) -> None:
        self.adopted: List[str] = []

    async def recover(self) -> float:
        held = await asyncio.to_thread(
            cluster_bid.ClusterBid.acquire, connection.connect(), REGION,
            'job', provision_config(
                limit=f'{MITHRIL["recovery_limit_price"]:.2f}'))
        self.adopted.append(held.bid.fid)
        return time.time()

    async def _wait_until_job_starts_on_cluster(self) -> float:
        return time.time()


class Failover(strategy._StandbyRecovery,  # pylint: disable=protected-access
               SkyPilotsFailover):
    """sky-mithril's FAILOVER, over the stand-in for SkyPilot's."""


@pytest.fixture
def recovery_emulator(manual_clock_emulator: EmulatorServer, monkeypatch) -> EmulatorServer:
    """The emulator, a notice that outlasts the test, a job's cluster handle
    behind the name `job`, a standby's setup that succeeds at once, and API
    clients that give up at the first failure."""
    manual_clock_emulator.market.preemption_notice_s = 100 * CLEARING_S
    monkeypatch.setattr(runtime, 'provider_config', lambda h: {
        'project_id': 'proj_emulator', 'limit_price_per_hour': '10.00'})
    forget_recovery_records()
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        lambda name: handle(MITHRIL))
    for step in ('fetch_runtime_files', 'set_up_runtime', 'stage_job'):
        monkeypatch.setattr(staging, step, lambda *args: {})
    original = connection.connect
    monkeypatch.setattr(connection, 'connect',
                        lambda **kw: original(**kw, max_retry_seconds=0.0))
    monkeypatch.setattr(standby_lib.StandbyWatch, 'POLL_SECONDS', 0.2)
    monkeypatch.setattr(standby_lib, 'DROP_RETRY_SECONDS', 0.05)
    return manual_clock_emulator


def fail_cancelling(server: EmulatorServer, fid: Optional[str] = None,
                    times: Optional[int] = None) -> None:
    """Cancelling bid `fid` (every bid if None) fails with a 503, `times`
    times (always if None)."""
    server.control('PUT', 'faults', rules=[{
        'method': 'DELETE', 'path': f'/v2/spot/bids/{fid}' if fid else
        '/v2/spot/bids', 'server_error': 1.0,
        'server_error_statuses': [503], 'max_faults': times}])


def statuses(server: EmulatorServer) -> Dict[str, str]:
    return {b['fid']: b['status'] for b in bids_named(server, 'job')}


def the_standby(server: EmulatorServer, old: str) -> str:
    [standby] = [fid for fid in statuses(server) if fid != old]
    return standby


def recover(executor: Failover, server: EmulatorServer) -> Any:
    with advancing_clock(server):
        return asyncio.run(executor.recover())


def test_a_failed_promotion_cancels_the_standby_before_failover_relaunches(
        recovery_emulator):
    """The standby is ready, but cancelling the old bid fails (the API's
    retries exhausted): the move onto the standby fails, the standby is
    cancelled, and FAILOVER's relaunch adopts the old bid alone."""
    server = recovery_emulator
    preempt(server)
    [old] = statuses(server)
    fail_cancelling(server, old)
    executor = Failover()

    recover(executor, server)

    standby = the_standby(server, old)
    assert executor.adopted == [old]
    assert statuses(server) == {old: 'Preempting', standby: 'Terminated'}
    assert records.standby_of('job') is None


def test_a_standby_whose_cancel_failed_while_planning_is_cancelled_first(
        recovery_emulator, monkeypatch):
    """Setting the standby up fails, and so does its cancellation right
    then: before FAILOVER's relaunch the standby is cancelled again."""
    server = recovery_emulator

    def set_up_fails(*args: Any) -> None:
        fail_cancelling(server, times=1)
        raise RuntimeError('the runtime could not be set up')

    monkeypatch.setattr(staging, 'set_up_runtime', set_up_fails)
    preempt(server)
    [old] = statuses(server)
    executor = Failover()

    recover(executor, server)

    standby = the_standby(server, old)
    assert server.control('GET', 'faults')['counts']['server_error'] == 1
    assert executor.adopted == [old]
    assert statuses(server) == {old: 'Preempting', standby: 'Terminated'}
    assert records.standby_of('job') is None


def test_a_standby_that_cannot_be_cancelled_stops_the_recovery(
        recovery_emulator):
    """No bid can be cancelled: nothing is relaunched onto the cluster
    beside the live standby; the recovery fails naming it, which SkyPilot's
    jobs controller answers by tearing the cluster down (every bid of its
    name) once the API answers again."""
    server = recovery_emulator
    preempt(server)
    [old] = statuses(server)
    fail_cancelling(server)
    executor = Failover()

    with pytest.raises(standby_lib.StandbyLeftLiveError) as left:
        recover(executor, server)

    standby = the_standby(server, old)
    assert standby in str(left.value)
    assert executor.adopted == []
    assert statuses(server) == {old: 'Preempting', standby: 'Allocated'}
    server.control('PUT', 'faults', rules=[])
    provisioner.terminate_instances('job', PROVIDER)
    assert set(statuses(server).values()) == {'Terminated'}


def fail_looking_for_bids_after_the_standby_post(server: EmulatorServer
                                                  ) -> threading.Thread:
    """The standby's POST is answered with a 503 half a second after it
    came, and committed 30 s of market time later; once it came, looking for
    bids by name fails three times: at the start and at the end of the
    late-commit window its placement waits out (`LATE_COMMIT_POLL_SECONDS`
    longer than the window), and as the placement, given up, watches for it
    to cancel it."""
    server.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/spot/bids', 'late_commit': 1.0,
        'late_commit_s': 30, 'server_error_statuses': [503],
        'max_faults': 1, 'latency': 1.0, 'latency_s': 0.5}])

    def then_fail_listing() -> None:
        deadline = time.monotonic() + 30
        while server.control('GET', 'faults')['counts']['late_commit'] < 1:
            assert time.monotonic() < deadline, 'no standby POST'
            time.sleep(0.02)
        server.control('PUT', 'faults', rules=[{
            'method': 'GET', 'path': '/v2/spot/bids', 'server_error': 1.0,
            'server_error_statuses': [503], 'max_faults': 3}])

    failing = threading.Thread(target=then_fail_listing)
    failing.start()
    return failing


def test_a_standby_post_committed_after_its_placement_gave_up_is_cancelled(
        recovery_emulator, monkeypatch):
    """The standby's placement fails without knowing whether its lost POST
    was committed, every look-up of its late-commit window having failed;
    Mithril commits the POST after the planning is over: the standby, still
    recorded as being placed, is cancelled before FAILOVER's relaunch,
    which adopts the old bid alone."""
    server = recovery_emulator
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_WINDOW_SECONDS', 1.0)
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 2.0)
    preempt(server)
    [old] = statuses(server)
    plan = strategy.plan_recovery

    def plan_then_commit(*args: Any) -> strategy.RecoveryPlan:
        try:
            return plan(*args)
        finally:
            server.control('POST', 'advance', seconds=30)

    monkeypatch.setattr(strategy, 'plan_recovery', plan_then_commit)
    failing = fail_looking_for_bids_after_the_standby_post(server)
    executor = Failover()

    asyncio.run(executor.recover())
    failing.join()

    late = the_standby(server, old)
    assert server.control('GET', 'faults')['counts']['server_error'] == 3
    assert executor.adopted == [old]
    assert statuses(server) == {old: 'Preempting', late: 'Terminated'}
    assert records.standby_of('job') is None


def test_a_promotion_that_fails_once_is_made_again_before_falling_back(
        recovery_emulator, monkeypatch):
    """The standby is ready; making it the cluster's bid fails once (listing
    the cluster's bids answers a 503): the move promotes it once more, and
    the job is submitted on the standby; nothing is relaunched."""
    server = recovery_emulator
    preempt(server)
    [old] = statuses(server)
    plan = strategy.plan_recovery

    def plan_then_fail_listing_once(*args: Any) -> strategy.RecoveryPlan:
        planned = plan(*args)
        # The bid's own routes are not faulted; the listing fails once.
        server.control('PUT', 'faults', rules=[
            {'method': 'GET', 'path': '/v2/spot/bids/{bid_fid}'},
            {'method': 'GET', 'path': '/v2/spot/bids/{bid_fid}/status'},
            {'method': 'GET', 'path': '/v2/spot/bids', 'server_error': 1.0,
             'server_error_statuses': [503], 'max_faults': 1}])
        return planned

    moved = types.SimpleNamespace(cluster_name='job',
                                  close_skylet_ssh_tunnel=lambda: None)
    pointed: List[Any] = []
    submitted: List[Any] = []
    monkeypatch.setattr(strategy, 'plan_recovery', plan_then_fail_listing_once)
    monkeypatch.setattr(staging, 'pointed_at',
                        lambda handle, info: pointed.append(info) or moved)
    monkeypatch.setattr(global_user_state, 'update_cluster_handle',
                        lambda name, handle: None)
    monkeypatch.setattr(staging, 'submit_job',
                        lambda dag, handle: submitted.append(handle))
    executor = Failover()

    recover(executor, server)

    standby = the_standby(server, old)
    assert server.control('GET', 'faults')['counts']['server_error'] == 1
    assert submitted == [moved] and len(pointed) == 1
    assert executor.adopted == []
    assert statuses(server) == {old: 'Terminated', standby: 'Allocated'}
    assert records.standby_of('job') is None


def test_a_move_that_cancelled_the_old_bid_before_failing_keeps_the_standby(
        recovery_emulator, monkeypatch):
    """The move onto the standby cancels the old bid, but reading its status
    back fails (the API's retries exhausted), and so does making the standby
    the cluster's bid once more (listing the bids fails): the standby, now
    the name's only live bid, is not cancelled with it; FAILOVER's relaunch
    adopts it, rather than place a bid that would wait in the auction."""
    server = recovery_emulator
    preempt(server)
    [old] = statuses(server)
    plan = strategy.plan_recovery

    def plan_then_fail_the_move(*args: Any) -> strategy.RecoveryPlan:
        planned = plan(*args)
        # The old bid's status always fails; a bid's other routes never do.
        # Of the listings, the move's passes (its rule spends its one fault
        # on a millisecond's delay) and the one more promotion's fails.
        server.control('PUT', 'faults', rules=[
            {'method': 'GET', 'path': f'/v2/spot/bids/{old}/status',
             'server_error': 1.0, 'server_error_statuses': [503]},
            {'method': 'GET', 'path': '/v2/spot/bids/{bid_fid}'},
            {'method': 'GET', 'path': '/v2/spot/bids/{bid_fid}/status'},
            {'method': 'GET', 'path': '/v2/spot/bids', 'latency': 1.0,
             'latency_s': 0.001, 'max_faults': 1},
            {'method': 'GET', 'path': '/v2/spot/bids', 'server_error': 1.0,
             'server_error_statuses': [503], 'max_faults': 1}])
        return planned

    monkeypatch.setattr(strategy, 'plan_recovery', plan_then_fail_the_move)
    executor = Failover()

    recover(executor, server)

    standby = the_standby(server, old)
    assert executor.adopted == [standby]
    assert statuses(server) == {old: 'Terminated', standby: 'Allocated'}
    assert records.standby_of('job') is None
