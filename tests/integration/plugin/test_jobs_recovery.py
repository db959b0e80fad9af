"""When the managed-job recovery gets a standby bid, that a standby which
cannot be made ready is cancelled, and that a promoted standby's head has
the task's ports open (manual-clock emulator). The standby's success path,
with SkyPilot's runtime set up on it, runs end to end in
tests/e2e/test_e2e.py."""

import contextlib
import os
import signal
import subprocess
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import yaml

import sky.provision
from sky.provision import provisioner as sky_provisioner

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import public_ports
from sky_mithril.recovery import records
from sky_mithril.recovery import runtime
from sky_mithril.recovery import staging
from sky_mithril.recovery import standby as standby_lib
from sky_mithril.recovery import strategy

from tests.helpers.provisioning import bids_named, launch_on_manual_clock, provision_config
from tests.helpers.recovery_records import forget_recovery_records

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
BOOT_S = 60.0
NO_PLAN = strategy.RecoveryPlan()  # recover as SkyPilot's strategy does


def handle(mithril: Dict[str, Any], ports: Optional[List[str]] = None,
           cluster_yaml: Optional[str] = None) -> Any:
    """The parts of SkyPilot's cluster handle the recovery reads: the task's
    `ports`, and its cluster config at `cluster_yaml` (needed with ports)."""
    return types.SimpleNamespace(
        cluster_name='job', cluster_name_on_cloud='job',
        cluster_yaml=cluster_yaml,
        launched_resources=types.SimpleNamespace(
            cloud=types.SimpleNamespace(canonical_name=lambda: 'mithril'),
            accelerators={'A100': 1}, max_hourly_cost=None, ports=ports,
            cluster_config_overrides={'mithril': mithril}))


def set_price(server: EmulatorServer, price: str) -> None:
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price=price)


@contextlib.contextmanager
def advancing_clock(server: EmulatorServer,
                    at_each_step: Callable[[], None] = lambda: None
                    ) -> Iterator[None]:
    """The market's clock runs at a quarter clearing every 50 ms (the notice
    lasts half a second), calling `at_each_step` after each step."""
    advancing = True

    def advance() -> None:
        while advancing:
            server.control('POST', 'advance', seconds=CLEARING_S / 4)
            at_each_step()
            time.sleep(0.05)

    clock = threading.Thread(target=advance)
    clock.start()
    try:
        yield
    finally:
        advancing = False
        clock.join()


def preempt(server: EmulatorServer, volume_fids: str = '') -> None:
    """Launches `job` at $10/h (with `volume_fids`) and starts its notice."""
    config = provision_config(limit='10.00')
    config.provider_config['volume_fids'] = volume_fids
    launch_on_manual_clock(server, 'job', config, CLEARING_S)
    set_price(server, '$50.00')
    server.control('POST', 'advance', seconds=CLEARING_S)
    assert [b['status'] for b in bids_named(server, 'job')] == ['Preempting']


@pytest.fixture
def recovery_emulator(manual_clock_emulator: EmulatorServer, monkeypatch) -> EmulatorServer:
    monkeypatch.setattr(runtime, 'provider_config', lambda h: {
        'project_id': 'proj_emulator', 'limit_price_per_hour': '10.00'})
    forget_recovery_records()
    # No SkyPilot cluster record behind these handles: no runtime files.
    monkeypatch.setattr(staging, 'fetch_runtime_files',
                        lambda handle, into: {})
    return manual_clock_emulator


def test_no_standby_when_recovery_waits_for_the_node(recovery_emulator):
    preempt(recovery_emulator)
    assert strategy.plan_recovery(
        handle({'recovery_starts': 'node_lost'}), dag=None, cancelled=threading.Event()) == NO_PLAN
    assert len(bids_named(recovery_emulator, 'job')) == 1


def test_no_standby_for_a_block_volume(recovery_emulator):
    volume = connection.connect().client.create_volume(
        'proj_emulator', 'scratch', REGION, 10, models.VolumeInterface.BLOCK)
    preempt(recovery_emulator, volume_fids=volume.fid)
    assert strategy.plan_recovery(
        handle({'recovery_limit_price': 60}), dag=None, cancelled=threading.Event()) == NO_PLAN
    assert len(bids_named(recovery_emulator, 'job')) == 1


def test_no_standby_where_it_cannot_win_when_the_job_can_move(
        recovery_emulator, monkeypatch):
    """No Mithril volume ties the job to its region, the region's price is
    above the relaunch limit, and the catalog offers the type elsewhere:
    the job moves at once, instead of a standby waiting out the notice."""
    preempt(recovery_emulator)
    monkeypatch.setattr(strategy, '_other_regions',
                        lambda handle: ('us-central2-a',))
    assert strategy.plan_recovery(
        handle({'recovery_limit_price': 40}), dag=None,
        cancelled=threading.Event()) == (
            strategy.RecoveryPlan(other_regions=('us-central2-a',)))
    assert [b['status'] for b in bids_named(recovery_emulator, 'job')] == ['Preempting']


def record_promotions(recovery_emulator: EmulatorServer, monkeypatch) -> List[List[str]]:
    """The cluster's bid statuses (oldest first) right after each time a
    standby is made the cluster's bid."""
    promoted: List[List[str]] = []
    promote = standby_lib.promote_standby

    def recording(*args: Any) -> None:
        promote(*args)
        promoted.append([b['status'] for b in bids_named(recovery_emulator, 'job')])

    monkeypatch.setattr(standby_lib, 'promote_standby', recording)
    monkeypatch.setattr(standby_lib.StandbyWatch, 'POLL_SECONDS', 0.2)
    return promoted


def test_a_standby_that_cannot_win_takes_the_old_bids_place_when_the_notice_ends(
        recovery_emulator, monkeypatch):
    """A file share keeps the job in its region, where the price ($50) stays
    above the recovery limit ($40). When the notice ends, the old bid is
    cancelled (back to Open, it could win a second node) and the standby
    waits on as the cluster's bid, up to the cluster's provision_timeout;
    then it is cancelled too."""
    share = connection.connect().client.create_volume(
        'proj_emulator', 'checkpoints', REGION, 10, models.VolumeInterface.FILE)
    preempt(recovery_emulator, volume_fids=share.fid)
    monkeypatch.setattr(runtime, 'provider_config', lambda h: {
        'project_id': 'proj_emulator', 'limit_price_per_hour': '10.00',
        'provision_timeout': '10'})
    promoted = record_promotions(recovery_emulator, monkeypatch)
    with advancing_clock(recovery_emulator):
        assert strategy.plan_recovery(
            handle({'recovery_limit_price': 40}), dag=None,
            cancelled=threading.Event()) == NO_PLAN
    assert promoted == [['Terminated', 'Open']]  # (old, standby)
    old, standby = bids_named(recovery_emulator, 'job')  # oldest first
    assert standby['limit_price'] == '$40.00'
    assert (old['status'], standby['status']) == ('Terminated', 'Terminated')
    assert records.standby_of('job') is None


def test_the_old_bid_is_cancelled_when_the_notice_ends_during_the_setup(
        recovery_emulator, monkeypatch):
    """The standby won within the notice, but its setup (a real node's
    runtime install, the task's own setup) outlasts it: the old bid is
    cancelled then, not left to win a second node until the switch."""
    preempt(recovery_emulator)
    promoted = record_promotions(recovery_emulator, monkeypatch)

    def slow_setup(*args: Any) -> None:
        deadline = time.monotonic() + 30
        while not promoted:
            assert time.monotonic() < deadline, 'the old bid was not cancelled'
            time.sleep(0.1)

    monkeypatch.setattr(staging, 'set_up_runtime', slow_setup)
    monkeypatch.setattr(staging, 'stage_job', lambda *args: None)
    with advancing_clock(recovery_emulator):
        plan = strategy.plan_recovery(
            handle({'recovery_limit_price': 60}), dag=None,
            cancelled=threading.Event())
    old, standby = bids_named(recovery_emulator, 'job')  # oldest first
    assert plan.standby_fid == standby['fid']
    assert promoted == [['Terminated', 'Allocated']]
    assert records.standby_of('job') is None


def test_a_cancelled_job_cancels_its_standby(recovery_emulator):
    """The user cancels the managed job while its standby waits to win: the
    standby is cancelled, and the old bid is left to SkyPilot's teardown."""
    share = connection.connect().client.create_volume(
        'proj_emulator', 'checkpoints', REGION, 10, models.VolumeInterface.FILE)
    preempt(recovery_emulator, volume_fids=share.fid)
    cancelled = threading.Event()
    plans: List[Any] = []
    planning = threading.Thread(target=lambda: plans.append(
        strategy.plan_recovery(handle({'recovery_limit_price': 40}),
                                    dag=None, cancelled=cancelled)))
    planning.start()
    deadline = time.monotonic() + 30
    while len(bids_named(recovery_emulator, 'job')) < 2:
        assert time.monotonic() < deadline, 'no standby placed'
        time.sleep(0.1)
    cancelled.set()
    planning.join(timeout=30)
    assert plans == [NO_PLAN]
    old, standby = bids_named(recovery_emulator, 'job')  # oldest first
    assert (old['status'], standby['status']) == ('Preempting', 'Terminated')


def test_a_job_cancelled_while_its_standby_post_is_unanswered_leaves_no_bid(
        recovery_emulator, monkeypatch):
    """The standby's POST is answered with a 503 and committed 30 s of
    market time later. Meanwhile the user cancels the job, and SkyPilot
    tears the cluster down (every live bid of its name, and the standby's
    record). The placement then finds its late commit: it cancels it, and
    does not write the standby's record back for a cluster that is gone."""
    server = recovery_emulator
    server.market.preemption_notice_s = 100 * CLEARING_S  # outlasts the test
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_WINDOW_SECONDS', 30.0)
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 0.02)
    preempt(server)
    server.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/spot/bids', 'late_commit': 1.0,
        'late_commit_s': 30, 'server_error_statuses': [503],
        'max_faults': 1}])
    cancelled = threading.Event()
    planning = Planning(handle({'recovery_limit_price': 60}), cancelled)
    deadline = time.monotonic() + 30
    while server.control('GET', 'faults')['counts']['late_commit'] < 1:
        assert time.monotonic() < deadline, 'no standby POST'
        time.sleep(0.02)
    assert records.standby_of('job') == ''

    cancelled.set()
    provisioner.terminate_instances('job', {'project_id': 'proj_emulator'})
    assert records.standby_of('job') is None
    with advancing_clock(server):
        planning.join(timeout=30)

    assert not planning.is_alive()
    assert [b['status'] for b in bids_named(server, 'job')] == [
        'Terminated', 'Terminated']
    assert records.standby_of('job') is None


class Planning(threading.Thread):
    """`strategy.plan_recovery` in a thread of the jobs controller, as
    `recover` runs it; its plan or its error kept."""

    def __init__(self, cluster: Any, cancelled: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cluster, self.cancelled = cluster, cancelled
        self.plan: Any = None
        self.error: Optional[BaseException] = None
        self.start()

    def run(self) -> None:
        try:
            self.plan = strategy.plan_recovery(self.cluster, dag=None,
                                               cancelled=self.cancelled)
        except Exception as e:  # pylint: disable=broad-except
            self.error = e


@pytest.mark.parametrize('failing_step', ['set_up_runtime', 'stage_job'])
def test_a_standby_whose_setup_fails_is_cancelled(recovery_emulator, monkeypatch,
                                                  failing_step):
    """SkyPilot's runtime, or the job's own file mounts and setup, cannot be
    set up on the standby: it is cancelled, the old bid left as it was."""
    recovery_emulator.market.preemption_notice_s = 100 * CLEARING_S  # outlasts the test
    preempt(recovery_emulator)

    def fail(*args: Any) -> None:
        info = args[-1]
        assert info.head_instance_id, 'set up before the standby booted'
        raise RuntimeError(f'{failing_step} failed')

    monkeypatch.setattr(staging, 'set_up_runtime', lambda *args: None)
    monkeypatch.setattr(staging, failing_step, fail)
    with advancing_clock(recovery_emulator):
        assert strategy.plan_recovery(
            handle({'recovery_limit_price': 60}), dag=None, cancelled=threading.Event()) == NO_PLAN
    old, standby = bids_named(recovery_emulator, 'job')  # oldest first
    assert standby['limit_price'] == '$60.00'
    assert standby['status'] == 'Terminated' != old['status']
    assert records.standby_of('job') is None


# Ports no other test's forwarder uses.
PORTS = ['47021', '47030-47031']
OPENED = (47021, 47030, 47031)
SUDO = '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n'
FOUNDRYPF = '#!/bin/sh\necho "forwarding $1"\nwhile :; do sleep 0.2; done\n'


class HeadsOnThisMachine:
    """The emulator's hosts are addresses nobody listens on: here SSH to a
    head runs its commands on this machine, with that head's own
    `foundrypf` stand-in (a forwarder that runs until it is killed), so a
    forwarder's command line says which head opened which port."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _bin(self, address: str) -> Path:
        folder = self.root / address / 'bin'
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for name, text in (('sudo', SUDO), ('foundrypf', FOUNDRYPF)):
                (folder / name).write_text(text)
                (folder / name).chmod(0o755)
        return folder

    def runners(self, cloud: str, info: Any, **credentials: Any) -> List[Any]:
        """`sky.provision.get_command_runners` for the head of `info`."""
        del cloud, credentials
        [head] = info.instances[info.head_instance_id]
        path = f'{self._bin(head.external_ip)}:/usr/sbin:/usr/bin:/sbin:/bin'

        def run(cmd: str, **kwargs: Any) -> Any:
            del kwargs
            done = subprocess.run(['bash', '-c', cmd], env={'PATH': path},
                                  capture_output=True, text=True, timeout=30,
                                  check=False)
            return done.returncode, done.stdout, done.stderr

        return [types.SimpleNamespace(run=run)]

    def _forwarders(self, pattern: str) -> List[int]:
        found = subprocess.run(['pgrep', '-f', pattern], capture_output=True,
                               text=True, check=False).stdout.split()
        return [int(pid) for pid in found]

    def open_ports(self, address: str) -> List[int]:
        """The ports a forwarder runs for on the head at `address`."""
        return [port for port in OPENED if self._forwarders(
            f'{self.root}/{address}/bin/foundrypf {port}$')]

    def stop(self) -> None:
        """Ends the forwarders the heads started, and removes their logs."""
        for pid in self._forwarders(f'{self.root}/.*/foundrypf'):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for port in OPENED:
            Path(f'/tmp/foundrypf-{port}.log').unlink(missing_ok=True)


@pytest.fixture
def heads(monkeypatch, tmp_path: Path) -> Iterator[HeadsOnThisMachine]:
    on_this_machine = HeadsOnThisMachine(tmp_path / 'heads')
    monkeypatch.setattr(sky_provisioner, 'wait_for_ssh', lambda *args: None)
    monkeypatch.setattr(sky.provision, 'get_command_runners',
                        on_this_machine.runners)
    try:
        yield on_this_machine
    finally:
        on_this_machine.stop()


def test_a_promoted_standby_has_the_tasks_ports_open_on_its_head(
        recovery_emulator, monkeypatch, heads, tmp_path):
    """A task with `ports:` recovers onto a standby, which skips SkyPilot's
    relaunch (the step that opens them): the standby's head opens them while
    it is staged, so once it is the cluster's bid, the endpoints the user
    is shown (query_ports, `sky status --endpoints`) are the standby's head,
    where each port is open; the old head opened none."""
    recovery_emulator.market.preemption_notice_s = 100 * CLEARING_S
    preempt(recovery_emulator)
    old_head = provisioner.get_cluster_info(
        '', 'job', {'project_id': 'proj_emulator'}).get_head_instance()
    cluster_yaml = tmp_path / 'job-with-ports.yml'
    cluster_yaml.write_text(yaml.safe_dump({'auth': {
        'ssh_user': 'ubuntu', 'ssh_private_key': str(tmp_path / 'sky-key')}}))
    monkeypatch.setattr(staging, 'set_up_runtime', lambda *args: None)
    monkeypatch.setattr(staging, 'stage_job', lambda *args: None)
    with advancing_clock(recovery_emulator):
        plan = strategy.plan_recovery(
            handle({'recovery_limit_price': 60}, PORTS, str(cluster_yaml)),
            dag=None, cancelled=threading.Event())
    assert plan.standby_fid is not None
    standby_lib.promote_standby(connection.connect(), 'job', plan.standby_fid)

    endpoints = provisioner.query_ports('job', PORTS, provider_config={
        'project_id': 'proj_emulator'})
    [new_head] = {e.host for listed in endpoints.values() for e in listed}
    assert sorted(endpoints) == list(OPENED)
    assert new_head != old_head.external_ip
    assert heads.open_ports(new_head) == list(OPENED)
    assert heads.open_ports(old_head.external_ip) == []


def test_a_standby_whose_head_cannot_open_the_ports_is_cancelled(
        recovery_emulator, monkeypatch, tmp_path):
    """The standby's head cannot open a port of the task (its `foundrypf`
    refuses it): the standby is cancelled, and SkyPilot's strategy recovers
    as usual, whose launch opens them or fails saying why."""
    recovery_emulator.market.preemption_notice_s = 100 * CLEARING_S
    preempt(recovery_emulator)
    cluster_yaml = tmp_path / 'job-refused-ports.yml'
    cluster_yaml.write_text(yaml.safe_dump({'auth': {
        'ssh_user': 'ubuntu', 'ssh_private_key': str(tmp_path / 'sky-key')}}))

    def refuse(*args: Any) -> None:
        del args
        raise public_ports.PortsNotOpenedError('port 47021: refused')

    monkeypatch.setattr(public_ports, 'open_on_head', refuse)
    monkeypatch.setattr(staging, 'set_up_runtime', lambda *args: None)
    monkeypatch.setattr(staging, 'stage_job', lambda *args: None)
    with advancing_clock(recovery_emulator):
        assert strategy.plan_recovery(
            handle({'recovery_limit_price': 60}, PORTS, str(cluster_yaml)),
            dag=None, cancelled=threading.Event()) == NO_PLAN
    old, standby = bids_named(recovery_emulator, 'job')  # oldest first
    assert (old['status'], standby['status']) == ('Preempting', 'Terminated')
