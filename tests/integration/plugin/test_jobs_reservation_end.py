"""A managed job on a reservation moves off it before its end, on a
manual-clock emulator (the test moves the market's clock): the jobs
controller's poll reads "recover now" once the reservation ends within the
job's lead time and not before; before the recovery the head node is told
(the notice its watcher reads, ending at the reservation's end) and the
cluster is recorded as recovering; the strategy gives the instances back
(paused, claims dropped) and the relaunch, which takes no reservation ending
within the lead, bids on spot with nothing left beside it, or, when the
task lists another reservation with room in the cluster's region, goes on
that one, relaunched there by the strategy."""

import asyncio
import datetime
import os
import subprocess
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
import sky
import yaml
from sky import global_user_state

from sky_mithril import cloud
from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.recovery import notice
from sky_mithril.recovery import records
from sky_mithril.recovery import reservation_end
from sky_mithril.recovery import runtime
from sky_mithril.recovery import strategy

from tests.helpers.provisioning import PUBLIC_KEY, bids_named
from tests.helpers.recovery_records import forget_recovery_records
from tests.helpers.reservations import (deploy, launch_as_deployed,
                                        market_read, reserve)

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
PROVIDER = {'project_id': 'proj_emulator'}
RECOVER_NOW = (None, None)
LEAD = datetime.timedelta(minutes=30)
WITH_LEAD = {'reservation_end_lead_minutes': 30}
MINUTE = datetime.timedelta(minutes=1)


class LocalRunner:
    """SkyPilot's command runner for the head node, run here in `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.commands: List[str] = []

    def run(self, command: str, stream_logs: bool = False) -> int:
        del stream_logs
        self.commands.append(command)
        return subprocess.run(command, shell=True, check=False,
                              env={**os.environ, 'HOME': str(self.home)}
                              ).returncode


def handle(mithril: Dict[str, Any], runner: Any = None) -> Any:
    """The parts of SkyPilot's cluster handle the runtime reads."""
    return types.SimpleNamespace(
        cluster_name='job', cluster_name_on_cloud='job', cluster_yaml=None,
        get_command_runners=lambda: [runner], launched_nodes=1,
        launched_resources=sky.Resources(
            cloud=cloud.Mithril(), instance_type=TYPE, region=REGION,
            _cluster_config_overrides={'mithril': mithril}))


def config(reservation: str, lead_seconds: float) -> Any:
    """What the cloud renders for the provisioner: the reservation and the
    lead a launch keeps from its end."""
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': REGION, 'limit_price_per_hour': '32.00',
         'provision_timeout': '', 'boot_timeout': '',
         'reservation': reservation,
         'reservation_end_lead_seconds': str(lead_seconds)},
        key_fid, TYPE)


def while_the_clock_moves(server: EmulatorServer, work: Callable[[], Any]
                          ) -> Any:
    """Runs `work` while the market's clock moves 30 s at a time (a pause,
    an auction and a boot take market time); its result."""
    result: List[Any] = []
    worker = threading.Thread(target=lambda: result.append(work()))
    worker.start()
    while worker.is_alive():
        server.control('POST', 'advance', seconds=30)
        worker.join(0.05)
    assert result, 'the work failed (its error is above)'
    return result[0]


def market_now(server: EmulatorServer) -> datetime.datetime:
    return datetime.datetime.fromisoformat(server.control('GET', 'state')['now'])


def advance_until_left(server: EmulatorServer, reservation: models.Reservation,
                       left: datetime.timedelta) -> None:
    """Moves the clock to `left` before the reservation's end."""
    now = market_now(server)
    end = reservation.end_time
    if now.tzinfo is None:
        end = end.replace(tzinfo=None)
    server.control('POST', 'advance',
                   seconds=(end - left - now).total_seconds())


@pytest.fixture
def on_reservation(manual_clock_emulator: EmulatorServer, monkeypatch
                   ) -> Iterator[Tuple[EmulatorServer, models.Reservation]]:
    """Cluster `job` on the only instance of a 3-hour reservation, up."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    server = manual_clock_emulator
    monkeypatch.setattr(runtime, 'provider_config', lambda h: PROVIDER)
    monkeypatch.setattr(runtime, '_finished_status', lambda h: None)
    forget_recovery_records()
    kv_cache.delete_cache_entries_by_prefix(reservation_end.LEAD_KEY_PREFIX)
    reservation = reserve(server, 'short-res')
    server.control('POST', 'advance', seconds=120)
    record = provisioner.run_instances(REGION, 'job', 'job',
                                       config(reservation.name, 600))
    assert record.created_instance_ids == reservation.instances
    try:
        yield server, reservation
    finally:
        reservation_claims.release(reservation_claims.of_cluster('job'))
        cluster_bid.cancel_all(connection.connect(), 'job')


def status(mithril: Dict[str, Any]) -> Any:
    return runtime.MithrilJobRuntime().get_job_status(handle(mithril), 'job')


def test_recovery_starts_once_the_reservation_ends_within_the_lead(
        on_reservation):
    server, reservation = on_reservation
    advance_until_left(server, reservation, LEAD + MINUTE)
    assert status(WITH_LEAD) is None
    assert strategy.plan_recovery(handle(WITH_LEAD), None,
                                  threading.Event()) == strategy.RecoveryPlan()

    advance_until_left(server, reservation, LEAD - MINUTE)
    assert status(WITH_LEAD) == RECOVER_NOW
    assert strategy.plan_recovery(
        handle(WITH_LEAD), None,
        threading.Event()) == strategy.RecoveryPlan(leaves_reservation=True)
    # Without the setting, the default lead (10 minutes: nothing measured).
    assert status({}) is None
    # A task that recovers only once the node is gone waits for the end.
    assert status({**WITH_LEAD, 'recovery_starts': 'node_lost'}) is None


def test_the_default_lead_is_ten_minutes_without_a_measured_launch(
        on_reservation):
    server, reservation = on_reservation
    advance_until_left(server, reservation, 11 * MINUTE)
    assert status({}) is None
    advance_until_left(server, reservation, 9 * MINUTE)
    assert status({}) == RECOVER_NOW


def test_the_job_leaves_the_reservation_clean_and_its_relaunch_bids_on_spot(
        on_reservation, monkeypatch, tmp_path, caplog):
    server, reservation = on_reservation
    advance_until_left(server, reservation, LEAD - MINUTE)
    runner = LocalRunner(tmp_path)
    waited: List[Any] = []
    monkeypatch.setattr(notice, 'wait_for_preemption_hooks',
                        lambda h: waited.append(h) or 0.0)

    runtime.MithrilJobRuntime().on_before_recovery(
        handle(WITH_LEAD, runner), None, 1, None)

    # The head node's watcher reads the reservation's end as its notice
    # (the market's clock is in the past here: read as the watcher parses).
    told = tmp_path / '.sky' / 'mithril' / 'reservation-end.yml'
    assert datetime.datetime.fromisoformat(str(yaml.safe_load(
        told.read_text())['end_time'])) == reservation.end_time
    assert len(waited) == 1
    assert records.is_recovering('job')
    assert reservation_end.lead_for_launch('job', ({}, {})) == LEAD

    # The strategy's teardown gives the instance back, as `sky down` does.
    while_the_clock_moves(server, lambda: provisioner.terminate_instances(
        'job', PROVIDER))
    assert reservation_claims.of_cluster('job') == []
    conn = connection.connect()
    assert {i.status for i in conn.client.list_instances(
        conn.project_id, reservation_fids=[reservation.fid])} == {
            models.InstanceState.PAUSED}

    # The relaunch, rendered with the lead its job left by, bids on spot.
    caplog.set_level('INFO')
    relaunch = while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'job', 'job', config(reservation.name, LEAD.total_seconds())))
    assert relaunch.head_instance_id not in reservation.instances
    assert f'ends at {reservation.end_time.isoformat()}, within the job\'s ' \
        'lead time (30 min)' in caplog.text
    assert [b['status'] for b in bids_named(server, 'job')] == ['Allocated']
    assert reservation_claims.of_cluster('job') == []


class SkyPilotsEagerNextRegion:
    """Stands for SkyPilot's EAGER_NEXT_REGION strategy. Its own recovery
    would relaunch the job outside the cluster's region first: recorded
    here, nothing launched. Its teardown is `sky down`'s; its launch is
    SkyPilot's deploy step, then the provisioner, for the task's resources
    as the strategy set them."""

    cluster_name = 'job'
    pool = None

    def __init__(self, task: Any) -> None:
        self.dag = types.SimpleNamespace(tasks=[task])
        self.steps: List[str] = []

    async def recover(self) -> float:
        self.steps.append('SkyPilot recovers')
        return time.time()

    def _cleanup_cluster(self) -> None:
        self.steps.append('down')
        provisioner.terminate_instances('job', PROVIDER)

    async def _launch(self, raise_on_failure: bool = True,
                      recovery: bool = False) -> float:
        del raise_on_failure, recovery
        [resources] = self.dag.tasks[0].resources
        self.steps.append(f'launch in {resources.region}')
        await asyncio.to_thread(launch_as_deployed, 'job', deploy(
            'job', resources.cluster_config_overrides['mithril']))
        return time.time()


class EagerNextRegion(strategy._StandbyRecovery,  # pylint: disable=protected-access
                      SkyPilotsEagerNextRegion):
    """sky-mithril's EAGER_NEXT_REGION, over the stand-in for SkyPilot's."""

    moves_at_once = True


def recover_with_the_strategy(server: EmulatorServer, job: Any,
                              monkeypatch: pytest.MonkeyPatch
                              ) -> 'EagerNextRegion':
    """The jobs controller's recovery of `job` by sky-mithril's
    EAGER_NEXT_REGION (over the stand-in for SkyPilot's), the market read
    as the API server reads it; returns the executor and its steps."""
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        lambda name: job)
    task = sky.Task(run='train')
    task.set_resources(job.launched_resources)
    executor = EagerNextRegion(task)
    with market_read(monkeypatch):
        while_the_clock_moves(server, lambda: asyncio.run(executor.recover()))
    return executor


def test_the_job_moves_onto_the_next_reservation_it_lists(
        on_reservation, monkeypatch, tmp_path):
    server, reservation = on_reservation
    following = reserve(server, 'next-res', hours=6)
    mithril = {**WITH_LEAD, 'reservation': [reservation.name, 'next-res']}
    job = handle(mithril, LocalRunner(tmp_path))
    advance_until_left(server, reservation, LEAD - MINUTE)
    monkeypatch.setattr(notice, 'wait_for_preemption_hooks', lambda h: 0.0)
    assert runtime.MithrilJobRuntime().get_job_status(job, 'job') == (
        RECOVER_NOW)
    runtime.MithrilJobRuntime().on_before_recovery(job, None, 1, None)
    assert strategy.plan_recovery(job, None, threading.Event()) == (
        strategy.RecoveryPlan(leaves_reservation=True,
                              onto_next_reservation=True))

    executor = recover_with_the_strategy(server, job, monkeypatch)

    # Torn down, then relaunched in its region (not elsewhere first, as
    # SkyPilot's own EAGER_NEXT_REGION would), onto the next reservation.
    assert executor.steps == ['down', f'launch in {REGION}']
    assert {c.instance_fid: c.reservation_fid
            for c in reservation_claims.of_cluster('job')} == {
                fid: following.fid for fid in following.instances}
    assert bids_named(server, 'job') == []
    # The ending reservation's instance was given back, as `sky down` does.
    assert reservation_claims.on(reservation.fid) == {}
    conn = connection.connect()
    assert {i.status for i in conn.client.list_instances(
        conn.project_id, reservation_fids=[reservation.fid])} == {
            models.InstanceState.PAUSED}


def test_without_room_on_the_next_reservation_the_job_leaves_as_before(
        on_reservation, monkeypatch, tmp_path):
    """The next reservation is full: the job leaves its reservation as with
    one (torn down, then SkyPilot's own recovery, onto spot)."""
    server, reservation = on_reservation
    following = reserve(server, 'next-res', hours=6)
    server.control('POST', 'advance', seconds=120)
    while_the_clock_moves(server, lambda: provisioner.run_instances(
        REGION, 'other', 'other', config(following.name, 600)))
    try:
        mithril = {**WITH_LEAD, 'reservation': [reservation.name, 'next-res']}
        job = handle(mithril, LocalRunner(tmp_path))
        advance_until_left(server, reservation, LEAD - MINUTE)
        monkeypatch.setattr(notice, 'wait_for_preemption_hooks',
                            lambda h: 0.0)
        runtime.MithrilJobRuntime().on_before_recovery(job, None, 1, None)
        executor = recover_with_the_strategy(server, job, monkeypatch)
        assert executor.steps == ['down', 'SkyPilot recovers']
        assert reservation_claims.of_cluster('job') == []
    finally:
        reservation_claims.release(reservation_claims.of_cluster('other'))
