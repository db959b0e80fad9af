"""A managed job that burst onto a spot bid because its reservation was full
moves back onto the reservation once an instance frees, on a manual-clock
emulator: the jobs controller's poll tells the head node (its preemption
hooks run) and reports "recover now" only once they have run; the strategy
tears the cluster down (the spot bid cancelled) and the relaunch lands on
the reservation. A reservation ending within the job's lead time does not
attract it, and a move that lost the instance to another launch is not
tried again within the interval."""

import datetime
import types
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import yaml

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
from tests.helpers.reservations import launch_on_reservation, reserve
from tests.integration.plugin.test_jobs_reservation_end import (
    LocalRunner, advance_until_left, config, market_now, while_the_clock_moves)

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
PROVIDER = {'project_id': 'proj_emulator'}
RECOVER_NOW = (None, None)
NAMES_IT = {'reservation': 'train-res'}
MINUTE = datetime.timedelta(minutes=1)
LIVE = ('Open', 'Allocated', 'Preempting', 'Paused')


def handle(mithril: Dict[str, Any], runner: Any) -> Any:
    """The parts of SkyPilot's cluster handle the runtime reads."""
    return types.SimpleNamespace(
        cluster_name='job', cluster_name_on_cloud='job', cluster_yaml=None,
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
        for cluster in ('job', 'other', 'third'):
            reservation_claims.release(reservation_claims.of_cluster(cluster))
            cluster_bid.cancel_all(connection.connect(), cluster)


def status(mithril: Dict[str, Any], runner: Any) -> Any:
    return runtime.MithrilJobRuntime().get_job_status(handle(mithril, runner),
                                                      'job')


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
    hooks_run(tmp_path)
    assert status(NAMES_IT, runner) == RECOVER_NOW

    runtime.MithrilJobRuntime().on_before_recovery(
        handle(NAMES_IT, runner), None, 1, None)
    assert records.is_recovering('job')
    assert strategy.plan_recovery(
        handle(NAMES_IT, runner), None, None) == strategy.RecoveryPlan(
            back_to_reservation=True)

    # The strategy tears the cluster down (the bid cancelled, confirmed)
    # and relaunches it in its region, onto the reservation.
    give_back(server, 'job')
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


def test_a_move_that_lost_the_instance_is_not_tried_again_within_the_interval(
        on_spot, tmp_path):
    server, reservation, runner = on_spot
    give_back(server, 'other')
    assert status(NAMES_IT, runner) is None
    moved_at = market_now(server)
    hooks_run(tmp_path)
    assert status(NAMES_IT, runner) == RECOVER_NOW
    runtime.MithrilJobRuntime().on_before_recovery(
        handle(NAMES_IT, runner), None, 1, None)
    assert strategy.plan_recovery(handle(NAMES_IT, runner), None, None) == (
        strategy.RecoveryPlan(back_to_reservation=True))
    give_back(server, 'job')

    # Another launch claims the free instance first: the relaunch bids on
    # spot, the one live bid of the job.
    while_the_clock_moves(server, lambda: launch_on_reservation(
        'third', reservation.name))
    relaunch = while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job', 'job', config(reservation.name, 600)))
    assert relaunch.head_instance_id not in reservation.instances
    assert [b['status'] for b in live_bids(server)] == ['Allocated']

    # The instance frees again: within the interval the job stays put.
    give_back(server, 'third')
    new_head = tmp_path / 'new-head'
    runner = LocalRunner(new_head)
    server.control('POST', 'advance', seconds=(
        moved_at + policy.BACK_TO_RESERVATION_INTERVAL - MINUTE -
        market_now(server)).total_seconds())
    assert status(NAMES_IT, runner) is None
    assert not told(new_head)
    # Past it, the next move starts.
    server.control('POST', 'advance', seconds=2 * 60)
    assert status(NAMES_IT, runner) is None
    assert told(new_head)
    assert [b['status'] for b in live_bids(server)] == ['Allocated']
