"""A cluster on a reservation (`config.mithril.reservation`), driven through
the provisioner against the emulator: its free instances are claimed, no bid
is placed; stop pauses them, start resumes them, down gives them back clean
and keeps the capacity; a full, not yet active or wrong-key reservation is
handled as a user would expect; claims live in SkyPilot's database; a
node's autodown gives the instances back, a pause in the console does
not."""

import datetime
import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any, Dict, List

import pytest

from sky import global_user_state
from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.account import node_keys
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import client as client_lib
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes

from tests.helpers.provisioning import PUBLIC_KEY, bids_named
from tests.helpers.reservations import reserve

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED
OTHER_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherkeyfortheconsolesreservation0000 console'


def _config(reservation: str, count: int = 1) -> Any:
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': REGION, 'limit_price_per_hour': '32.00',
         'provision_timeout': '', 'boot_timeout': '', 'reservation': reservation},
        key_fid, TYPE, count=count)


def _launch(name: str, config: Any) -> Any:
    return provisioner.run_instances(REGION, name, name, config)


def _query(name: str) -> Dict[str, Any]:
    return provisioner.query_instances(name, name, {'project_id': 'proj_emulator'})


def _instances(reservation_fid: str) -> List[models.Instance]:
    conn = connection.connect()
    return conn.client.list_instances(conn.project_id,
                                      reservation_fids=[reservation_fid])


def _wait_active(reservation_fid: str) -> None:
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    while datetime.datetime.now() < deadline:
        instances = _instances(reservation_fid)
        if instances and all(i.status == models.InstanceState.RUNNING
                             for i in instances):
            return
    raise AssertionError('the reservation\'s instances never ran')


def test_a_cluster_runs_on_the_reservation_stops_starts_and_gives_it_back(
        fast_emulator: EmulatorServer) -> None:
    reservation = reserve(fast_emulator, 'team-res', quantity=2)
    _wait_active(reservation.fid)
    record = _launch('on-res', _config(reservation.name, count=2))
    assert bids_named(fast_emulator, 'on-res') == []
    assert sorted(record.created_instance_ids) == sorted(reservation.instances)
    assert record.head_instance_id == record.created_instance_ids[0]
    assert _query('on-res') == {fid: (UP, None)
                                for fid in record.created_instance_ids}
    info = provisioner.get_cluster_info(REGION, 'on-res',
                                        {'project_id': 'proj_emulator'})
    assert info.head_instance_id == record.head_instance_id
    assert all(nodes[0].external_ip for nodes in info.instances.values())

    provisioner.stop_instances('on-res', {'project_id': 'proj_emulator'})
    assert {s for s, _ in _query('on-res').values()} == {STOPPED}
    reason = next(iter(_query('on-res').values()))[1]
    assert 'paused' in reason and '`sky start`' in reason

    restarted = _launch('on-res', _config(reservation.name, count=2))
    assert restarted.resumed_instance_ids == record.created_instance_ids
    assert {s for s, _ in _query('on-res').values()} == {UP}

    provisioner.terminate_instances('on-res', {'project_id': 'proj_emulator'})
    assert _query('on-res') == {}
    assert reservation_claims.of_cluster('on-res') == []
    kept = _instances(reservation.fid)
    assert sorted(i.fid for i in kept) == sorted(reservation.instances)
    assert {i.status for i in kept} == {models.InstanceState.PAUSED}
    assert bids_named(fast_emulator, 'on-res') == []

    # Given back clean, the instances are the next cluster's.
    again = _launch('next-one', _config(reservation.fid, count=2))
    assert sorted(again.created_instance_ids) == sorted(reservation.instances)
    provisioner.terminate_instances('next-one', {'project_id': 'proj_emulator'})


def test_a_start_right_after_a_stop_waits_for_the_stop_to_finish(
        fast_emulator: EmulatorServer) -> None:
    """`sky start` while the instances are still stopping (Mithril refuses
    to resume them until the stop is done): the start waits, then resumes
    them, instead of failing on Mithril's 409."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    record = _launch('on-res', _config(reservation.name))
    fast_emulator.market.stop_duration_s = 1800  # 3 s at 600x
    provisioner.stop_instances('on-res', {'project_id': 'proj_emulator'})
    assert {i.status for i in _instances(reservation.fid)} == {
        models.InstanceState.STOPPING}

    restarted = _launch('on-res', _config(reservation.name))

    assert restarted.resumed_instance_ids == record.created_instance_ids
    assert {s for s, _ in _query('on-res').values()} == {UP}
    assert bids_named(fast_emulator, 'on-res') == []
    provisioner.terminate_instances('on-res', {'project_id': 'proj_emulator'})


def test_a_full_reservation_bursts_to_a_spot_bid(
        fast_emulator: EmulatorServer) -> None:
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    first = _launch('first', _config(reservation.name))
    assert first.created_instance_ids == reservation.instances
    burst = _launch('burst', _config(reservation.name))
    [bid] = bids_named(fast_emulator, 'burst')
    assert bid['status'] == 'Allocated'
    assert burst.head_instance_id not in reservation.instances
    provisioner.terminate_instances('burst', {'project_id': 'proj_emulator'})
    provisioner.terminate_instances('first', {'project_id': 'proj_emulator'})


def test_a_reservation_that_has_not_started_bursts_to_spot(
        fast_emulator: EmulatorServer) -> None:
    reservation = reserve(fast_emulator, 'later', start_in_hours=5)
    _launch('early', _config(reservation.name))
    assert bids_named(fast_emulator, 'early')[0]['status'] == 'Allocated'
    assert reservation_claims.of_cluster('early') == []
    provisioner.terminate_instances('early', {'project_id': 'proj_emulator'})


def test_two_launches_at_once_never_share_an_instance(
        fast_emulator: EmulatorServer) -> None:
    reservation = reserve(fast_emulator, 'team-res', quantity=2)
    _wait_active(reservation.fid)
    records: Dict[str, Any] = {}

    def launch(name: str) -> None:
        records[name] = _launch(name, _config(reservation.name, count=2))

    threads = [threading.Thread(target=launch, args=(n,)) for n in ('a', 'b')]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_reservation = [n for n in ('a', 'b')
                      if set(records[n].created_instance_ids) ==
                      set(reservation.instances)]
    assert len(on_reservation) == 1
    [spot] = [n for n in ('a', 'b') if n not in on_reservation]
    assert len(bids_named(fast_emulator, spot)) == 1
    for name in ('a', 'b'):
        provisioner.terminate_instances(name, {'project_id': 'proj_emulator'})


def test_claims_are_read_by_another_process(fast_emulator: EmulatorServer) -> None:
    """An API-server restart (or a second worker) reads the same claims."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    _launch('kept', _config(reservation.name))
    other = subprocess.run(
        [sys.executable, '-c',
         'import json; from sky_mithril.provision import reservation_claims as c; '
         'print(json.dumps([x.instance_fid for x in c.of_cluster("kept")]))'],
        capture_output=True, text=True, check=True)
    assert json.loads(other.stdout.strip().splitlines()[-1]) == reservation.instances
    provisioner.terminate_instances('kept', {'project_id': 'proj_emulator'})


def test_a_reservation_without_skypilots_key_is_refused_naming_its_keys(
        fast_emulator: EmulatorServer) -> None:
    reservation = reserve(fast_emulator, 'console-made', public_key=OTHER_KEY)
    _wait_active(reservation.fid)
    with pytest.raises(reserved_nodes.ReservationError) as refused:
        _launch('nokey', _config(reservation.name))
    assert 'keys cannot change' in str(refused.value)
    assert reservation.launch_specification.ssh_keys[0] in str(refused.value)
    conn = connection.connect()
    [console_key] = [k for k in conn.client.list_ssh_keys(conn.project_id)
                     if k.fid == reservation.launch_specification.ssh_keys[0]]
    assert f'its keys are {console_key.name} (' in str(refused.value)
    assert 'private keys in ~/.ssh' in str(refused.value)
    assert '`sky-mithril reservations create`' in str(refused.value)
    assert bids_named(fast_emulator, 'nokey') == []
    assert reservation_claims.of_cluster('nokey') == []


def test_an_unknown_reservation_names_the_fix(fast_emulator: EmulatorServer) -> None:
    del fast_emulator
    with pytest.raises(reserved_nodes.ReservationError) as refused:
        _launch('typo', _config('no-such-reservation'))
    assert 'sky-mithril reservations list' in str(refused.value)


def test_the_reserved_rows_cover_every_pair() -> None:
    from sky_mithril.provision import status_table
    paused = (models.InstanceState.PAUSED, models.InstanceState.STOPPING,
              models.InstanceState.STOPPED)
    for reservation_status in status_table.RESERVATION_STATES:
        for instance_status in status_table.INSTANCE_STATES:
            reading = status_table.RESERVED_TRUTH_TABLE[(reservation_status,
                                                         instance_status)]
            ended = reservation_status in (models.ReservationState.ENDED,
                                           models.ReservationState.CANCELED)
            if reading.status is None:
                assert ended or instance_status in (
                    models.InstanceState.REPLACED, models.InstanceState.TERMINATED)
            elif reading.status == STOPPED:
                assert (reservation_status == models.ReservationState.PAUSED or
                        instance_status in paused)
            elif reading.status == UP:
                assert instance_status == models.InstanceState.RUNNING


def test_paused_outside_skypilot_reads_stopped_and_an_ended_reservation_reads_gone(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    reservation = reserve(server, 'short')
    server.control('POST', 'advance', seconds=120)
    _launch('short-lived', _config(reservation.name))
    assert _query('short-lived') == {reservation.instances[0]: (UP, None)}

    conn = connection.connect()
    conn.client.set_instances_paused(reservation.instances, paused=True)
    server.control('POST', 'advance', seconds=120)
    [(status, reason)] = _query('short-lived').values()
    assert status == STOPPED and 'outside SkyPilot' in reason

    server.control('POST', 'advance', seconds=3 * 3600)
    assert _query('short-lived') == {}
    assert bids_named(server, 'short-lived') == []

    # A relaunch (a managed job's recovery) after the end bursts to spot.
    relaunch = threading.Thread(target=_launch, args=(
        'short-lived', _config(reservation.name)))
    relaunch.start()
    while relaunch.is_alive():
        server.control('POST', 'advance', seconds=30)
        relaunch.join(0.05)
    [bid] = bids_named(server, 'short-lived')
    assert bid['status'] == 'Allocated'
    assert reservation_claims.of_cluster('short-lived') == []
    provisioner.terminate_instances('short-lived', {'project_id': 'proj_emulator'})
    assert [b['status'] for b in bids_named(server, 'short-lived')] == ['Terminated']


def test_a_node_on_a_reservation_launches_other_clusters_on_their_own_nodes(
        fast_emulator: EmulatorServer) -> None:
    """A jobs controller on reserved instances (a user-wide reservation)
    launches a job's cluster from its own node, whose SkyPilot database holds
    no claims but whose home holds the controller's NODE_FILE: the job's
    cluster gets its own bid, and its teardown leaves the controller's
    instances running; the controller's own teardown on its node pauses
    them."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    _launch('controller', _config(reservation.name))
    node_file = Path(reserved_nodes.NODE_FILE).expanduser()
    node_file.parent.mkdir(parents=True, exist_ok=True)
    node_file.write_text(
        reserved_nodes.node_file_path('controller').read_text(encoding='utf-8'),
        encoding='utf-8')
    reservation_claims.release(reservation_claims.of_cluster('controller'))
    try:
        job = _launch('job-cluster', _config(''))
        [bid] = bids_named(fast_emulator, 'job-cluster')
        assert bid['status'] == 'Allocated'
        assert job.head_instance_id not in reservation.instances
        provisioner.terminate_instances('job-cluster',
                                        {'project_id': 'proj_emulator'})
        assert {i.status for i in _instances(reservation.fid)} == {
            models.InstanceState.RUNNING}
        # The controller's own autodown, on its node, still pauses its own.
        provisioner.terminate_instances('controller',
                                        {'project_id': 'proj_emulator'})
        assert {i.status for i in _instances(reservation.fid)} <= {
            models.InstanceState.STOPPING, models.InstanceState.PAUSED}
    finally:
        node_file.unlink()
        reservation_claims.write(reservation, reservation.instances,
                                 'controller', 'controller')
        provisioner.terminate_instances('controller',
                                        {'project_id': 'proj_emulator'})


# A launch as a process of a SkyPilot controller runs it: SkyPilot exports
# IS_SKYPILOT_JOB_CONTROLLER in every controller process, and the local API
# server a remote controller starts (where its launches run) inherits it.
_CONTROLLERS_LAUNCH = (
    'import sys\n'
    'from sky_mithril.provision import reservation_claims\n'
    'from tests.helpers.reservations import launch_on_reservation\n'
    'try:\n'
    '    record = launch_on_reservation("job-cluster", sys.argv[1])\n'
    'except reservation_claims.SeparateDatabaseError as e:\n'
    '    print(f"refused: {e}")\n'
    '    sys.exit(3)\n'
    'print(f"head: {record.head_instance_id}")\n')


def _controller_launches(reservation_name: str, home: str) -> Any:
    """A jobs controller's launch of a job's cluster naming the reservation,
    in a process of its own whose SkyPilot database is under `home`."""
    env = dict(os.environ, HOME=home, IS_SKYPILOT_JOB_CONTROLLER='true',
               IS_SKYPILOT_SERVER='true')
    env.pop('SKYPILOT_DB_CONNECTION_URI', None)
    return subprocess.run([sys.executable, '-c', _CONTROLLERS_LAUNCH,
                           reservation_name],
                          capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parents[3], timeout=300)


def _held_by_the_user(server: EmulatorServer,
                      reservation: models.Reservation) -> None:
    """The user's cluster still holds and runs the reservation's instance,
    and nothing was bid for the job."""
    assert [c.instance_fid for c in reservation_claims.of_cluster(
        'users-cluster')] == reservation.instances
    assert {i.status for i in _instances(reservation.fid)} == {
        models.InstanceState.RUNNING}
    assert _query('users-cluster') and all(
        status == UP for status, _ in _query('users-cluster').values())
    assert bids_named(server, 'job-cluster') == []


def test_a_remote_controller_never_takes_a_held_instance_and_names_the_fix(
        fast_emulator: EmulatorServer, tmp_path: Path) -> None:
    """A user's cluster holds the reservation's instance (the API server's
    claim); a remote jobs controller, whose SkyPilot database is its own,
    launches a job's cluster naming the same reservation: it is refused
    before any bid or claim, saying how to make its launches see the API
    server's claims, and the user's instance runs on untouched."""
    # Days: a fresh SkyPilot home takes the controller's process seconds to
    # set up, hours of the emulator's (600x) time.
    reservation = reserve(fast_emulator, 'team-res', hours=48)
    _wait_active(reservation.fid)
    _launch('users-cluster', _config(reservation.name))
    controllers_home = tmp_path / 'controller-home'
    controllers_home.mkdir()

    controller = _controller_launches(reservation.name, str(controllers_home))

    assert controller.returncode == 3, controller.stdout + controller.stderr
    assert 'remote SkyPilot controller' in controller.stdout
    assert 'jobs.controller.consolidation_mode: true' in controller.stdout
    assert 'shared Postgres database (`db:`' in controller.stdout
    _held_by_the_user(fast_emulator, reservation)
    provisioner.terminate_instances('users-cluster',
                                    {'project_id': 'proj_emulator'})


def test_a_controller_in_consolidation_mode_sees_the_claims_and_bids(
        fast_emulator: EmulatorServer) -> None:
    """A jobs controller on the API server's host (consolidation mode: the
    API server's start wrote SkyPilot's signal file) shares its database:
    its job's launch sees the user's claim and bids on spot instead."""
    from sky.jobs import constants as jobs_constants  # pylint: disable=import-outside-toplevel
    reservation = reserve(fast_emulator, 'team-res', hours=48)
    _wait_active(reservation.fid)
    _launch('users-cluster', _config(reservation.name))
    signal = Path(jobs_constants.JOBS_CONSOLIDATION_RELOADED_SIGNAL_FILE
                  ).expanduser()
    signal.parent.mkdir(parents=True, exist_ok=True)
    signal.touch()
    try:
        controller = _controller_launches(reservation.name,
                                          os.environ['HOME'])
    finally:
        signal.unlink()
    try:
        assert controller.returncode == 0, controller.stdout + controller.stderr
        head = controller.stdout.strip().splitlines()[-1]
        assert head.startswith('head: ')
        assert head[len('head: '):] not in reservation.instances
        assert len(bids_named(fast_emulator, 'job-cluster')) == 1
        assert reservation_claims.of_cluster('job-cluster') == []
    finally:
        provisioner.terminate_instances('job-cluster',
                                        {'project_id': 'proj_emulator'})
    assert [c.instance_fid for c in reservation_claims.of_cluster(
        'users-cluster')] == reservation.instances
    provisioner.terminate_instances('users-cluster',
                                    {'project_id': 'proj_emulator'})


def _launch_with_node_key(name: str, config: Any) -> Any:
    """A launch as SkyPilot runs it: the cluster's config (and with it the
    nodes' API key) is written first."""
    node_keys.issue(connection.connect(), name, None)
    return _launch(name, config)


def _autodown_on_its_node(reservation: models.Reservation, name: str) -> None:
    """What the cluster's node does at autodown: its skylet's
    terminate_instances, with the staged NODE_FILE and none of the API
    server's claims (the node's SkyPilot database is its own)."""
    node_file = Path(reserved_nodes.NODE_FILE).expanduser()
    node_file.parent.mkdir(parents=True, exist_ok=True)
    node_file.write_text(
        reserved_nodes.node_file_path(name).read_text(encoding='utf-8'),
        encoding='utf-8')
    claims = reservation_claims.of_cluster(name)
    reservation_claims.release(claims)
    try:
        provisioner.terminate_instances(name, {'project_id': 'proj_emulator'})
    finally:
        node_file.unlink()
        reservation_claims.write(reservation, [c.instance_fid for c in claims],
                                 name, name)


def _refreshed_boot_disks(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The instances whose boot disk the plugin resets from now on."""
    refreshed: List[str] = []
    reset = client_lib.MithrilClient.refresh_boot_disk

    def recording(client: client_lib.MithrilClient, instance_fid: str) -> None:
        refreshed.append(instance_fid)
        reset(client, instance_fid)

    monkeypatch.setattr(client_lib.MithrilClient, 'refresh_boot_disk',
                        recording)
    return refreshed


def _paused(reservation_fid: str) -> None:
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    while datetime.datetime.now() < deadline:
        if {i.status for i in _instances(reservation_fid)} == {
                models.InstanceState.PAUSED}:
            return
    raise AssertionError('the reservation\'s instances never paused')


def test_a_console_pause_with_autodown_armed_reads_stopped_and_keeps_the_disks(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sky launch --down` on the reservation, then the user pauses its
    instances in Mithril's console: the cluster reads STOPPED, keeps its
    instances and their disks; `sky start` resumes them."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    _launch_with_node_key('armed', _config(reservation.name))
    monkeypatch.setattr(reserved_nodes, '_autodown_set',
                        lambda name: name == 'armed')
    refreshed = _refreshed_boot_disks(monkeypatch)
    connection.connect().client.set_instances_paused(reservation.instances,
                                                     paused=True)  # Console.
    _paused(reservation.fid)
    [(status, reason)] = _query('armed').values()
    assert status == STOPPED and 'outside SkyPilot' in reason
    assert refreshed == []
    assert [c.instance_fid for c in reservation_claims.of_cluster('armed')] == (
        reservation.instances)
    resumed = _launch('armed', _config(reservation.name))
    assert resumed.resumed_instance_ids == reservation.instances
    provisioner.terminate_instances('armed', {'project_id': 'proj_emulator'})


def test_a_real_autodown_gives_the_instances_back_clean(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    _launch_with_node_key('auto', _config(reservation.name))
    monkeypatch.setattr(reserved_nodes, '_autodown_set',
                        lambda name: name == 'auto')
    refreshed = _refreshed_boot_disks(monkeypatch)
    _autodown_on_its_node(reservation, 'auto')
    assert _query('auto') == {}
    assert refreshed == reservation.instances
    assert reservation_claims.of_cluster('auto') == []
    assert {i.status for i in _instances(reservation.fid)} == {
        models.InstanceState.PAUSED}


def test_only_a_revocation_of_the_clusters_node_keys_tells_of_its_teardown(
        fast_emulator: EmulatorServer) -> None:
    """No key of the name, a live one, or one that merely expired (a cluster
    left paused past its key's lifetime): no teardown ran."""
    conn = connection.connect()
    assert not node_keys.revoked_by_teardown(conn, 'idle')
    node_keys.issue(conn, 'idle', None)
    assert not node_keys.revoked_by_teardown(conn, 'idle')
    fast_emulator.control('POST', 'advance',
                          seconds=node_keys.LIFETIME.total_seconds() + 60)
    assert not node_keys.revoked_by_teardown(conn, 'idle')
    node_keys.issue(conn, 'idle', None)
    node_keys.revoke_all(conn, 'idle')
    assert node_keys.revoked_by_teardown(conn, 'idle')


def test_after_its_autodown_a_cluster_back_on_spot_stages_no_reserved_instance(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster on the reservation takes itself down (autodown: its node
    pauses its instances, a status refresh gives them back); a teammate's
    cluster takes the instance; the first name launches again and bursts to
    spot. What its nodes get as NODE_FILE names no reserved instance, so
    its autostop on the node pauses its own bid (billing stops), not the
    teammate's instance."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    _launch_with_node_key('dev', _config(reservation.name))
    _autodown_on_its_node(reservation, 'dev')
    monkeypatch.setattr(reserved_nodes, '_autodown_set',
                        lambda name: name == 'dev')
    assert _query('dev') == {}
    provisioner.cleanup_cluster_resources('dev', {'project_id': 'proj_emulator'})
    _launch('teammate', _config(reservation.name))
    _launch('dev', _config(reservation.name))
    [bid] = bids_named(fast_emulator, 'dev')
    staged = reserved_nodes.stage_node_file('dev')  # As the launch stages it.
    node_file = Path(reserved_nodes.NODE_FILE).expanduser()
    node_file.parent.mkdir(parents=True, exist_ok=True)
    node_file.write_text(staged.read_text(encoding='utf-8'), encoding='utf-8')
    reservation_claims.release(  # Not in the node's database.
        reservation_claims.of_cluster('teammate'))
    try:
        provisioner.stop_instances('dev', {'project_id': 'proj_emulator'})
        [bid] = bids_named(fast_emulator, 'dev')
        assert bid['status'] == 'Paused'
        assert {i.status for i in _instances(reservation.fid)} == {
            models.InstanceState.RUNNING}
    finally:
        node_file.unlink()
        reservation_claims.write(reservation, reservation.instances,
                                 'teammate', 'teammate')
        for name in ('dev', 'teammate'):
            provisioner.terminate_instances(name,
                                            {'project_id': 'proj_emulator'})


def test_a_late_commit_of_a_burst_bid_never_bills_beside_the_reserved_cluster(
        manual_clock_emulator: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch bursts to spot (the reservation is full), its bid POSTs are
    answered with 503s and it fails; the first POST is committed minutes
    later. Meanwhile the reservation has room and the cluster launches on
    it. The late bid of its name bills for nothing: a status refresh
    cancels it (`sky stop` would leave it billing, the cluster read
    STOPPED)."""
    server = manual_clock_emulator
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 0.02)
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_WINDOW_SECONDS', 0.2)
    reservation = reserve(server, 'team-res')
    server.control('POST', 'advance', seconds=120)
    _launch('holder', _config(reservation.name))
    server.control('PUT', 'faults', rules=[
        {'method': 'POST', 'path': '/v2/spot/bids', 'late_commit': 1.0,
         'late_commit_s': 300, 'late_commit_answer': 'server_error',
         'server_error_statuses': [503], 'max_faults': 1},
        {'method': 'POST', 'path': '/v2/spot/bids', 'server_error': 1.0,
         'server_error_statuses': [503]}])
    with pytest.raises(Exception):
        _launch('x', _config(reservation.name))
    server.control('PUT', 'faults', rules=[])
    reservation_claims.release(reservation_claims.of_cluster('holder'))
    record = _launch('x', _config(reservation.name))
    assert record.created_instance_ids == reservation.instances
    server.control('POST', 'advance', seconds=300)
    assert [b['status'] for b in bids_named(server, 'x')] != [], 'no late commit'
    try:
        assert {s for s, _ in _query('x').values()} == {UP}
        assert [b for b in bids_named(server, 'x')
                if b['status'] != 'Terminated'] == []
    finally:  # The instance's pause would need the manual clock moved.
        reservation_claims.release(reservation_claims.of_cluster('x'))
        cluster_bid.cancel_all(connection.connect(), 'x')


def test_a_launch_that_cannot_pause_again_keeps_its_claims_for_the_teardown(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch resumes a paused free instance and fails; pausing it again
    fails too (Mithril unreachable). The instance runs as the launch left
    it, so the claim is kept rather than hand it to the next launch as it
    is: SkyPilot's teardown of the failed launch gives it back clean."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    connection.connect().client.set_instances_paused(reservation.instances,
                                                     paused=True)
    _paused(reservation.fid)

    def never_ready(nodes: reserved_nodes.ReservedNodes,
                    boot_timeout: float) -> List[models.Instance]:
        raise reserved_nodes.ReservationError('boot failed')

    resume_or_pause = client_lib.MithrilClient.set_instances_paused

    def resume_only(client: client_lib.MithrilClient, instance_fids: List[str],
                    paused: bool) -> None:
        if paused:
            raise ConnectionError('Mithril unreachable')
        resume_or_pause(client, instance_fids, paused=paused)

    monkeypatch.setattr(reserved_nodes.ReservedNodes, '_wait', never_ready)
    monkeypatch.setattr(client_lib.MithrilClient, 'set_instances_paused',
                        resume_only)
    with pytest.raises(reserved_nodes.ReservationError):
        _launch('half-set-up', _config(reservation.name))
    assert [c.instance_fid for c in reservation_claims.of_cluster(
        'half-set-up')] == reservation.instances
    assert reserved_nodes.free_instances(connection.connect(),
                                         reservation) == []

    # Mithril answers again; SkyPilot tears the failed launch down.
    monkeypatch.setattr(client_lib.MithrilClient, 'set_instances_paused',
                        resume_or_pause)
    _wait_active(reservation.fid)
    refreshed = _refreshed_boot_disks(monkeypatch)
    provisioner.terminate_instances('half-set-up',
                                    {'project_id': 'proj_emulator'})
    assert refreshed == reservation.instances
    assert reservation_claims.of_cluster('half-set-up') == []
    assert {i.status for i in _instances(reservation.fid)} == {
        models.InstanceState.PAUSED}


def test_autostop_on_a_node_whose_staged_instances_are_gone_pauses_its_bid(
        fast_emulator: EmulatorServer) -> None:
    """A spot cluster's node holds a NODE_FILE naming reserved instances
    that no longer exist (returned for good). Its autostop pauses the
    cluster's bid, as any spot cluster's does, and never cancels it as a
    bid beside reserved instances."""
    reservation = reserve(fast_emulator, 'team-res')
    _wait_active(reservation.fid)
    conn = connection.connect()
    conn.client.return_reservation_instances(reservation.fid,
                                             reservation.instances)
    assert {i.status for i in _instances(reservation.fid)} <= {
        models.InstanceState.TERMINATED}
    _launch('spot-dev', _config(''))
    node_file = Path(reserved_nodes.NODE_FILE).expanduser()
    node_file.parent.mkdir(parents=True, exist_ok=True)
    node_file.write_text(json.dumps({'cluster': 'spot-dev',
                                     'reservation': reservation.fid,
                                     'instances': reservation.instances}),
                         encoding='utf-8')
    try:
        provisioner.stop_instances('spot-dev', {'project_id': 'proj_emulator'})
        [bid] = bids_named(fast_emulator, 'spot-dev')
        assert bid['status'] == 'Paused'
    finally:
        node_file.unlink()
        cluster_bid.cancel_all(conn, 'spot-dev')


def test_a_reserved_cluster_that_stays_up_has_its_node_key_renewed(
        fast_emulator: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a spot cluster's: a refresh within RENEW_WITHIN of the key's
    expiry puts a new key on the nodes, then revokes the old; a refresh far
    from it asks Mithril nothing about keys."""
    server = fast_emulator
    conn = connection.connect()
    node_keys.issue(conn, 'long-up', None)
    [first] = [k for k in conn.client.list_api_keys()
               if k.name == node_keys.key_name(conn.project_id, 'long-up')]
    # The cluster has run for weeks (reservations bought one after another).
    server.control('POST', 'advance',
                   seconds=(node_keys.LIFETIME - node_keys.RENEW_WITHIN
                            ).total_seconds())
    reservation = reserve(server, 'team-res', hours=24)
    _wait_active(reservation.fid)
    _launch('long-up', _config(reservation.name))
    delivered: List[str] = []
    runners = [types.SimpleNamespace(
        node=(i.ssh_destination, cluster_bid.ssh_port(i)),
        rsync=lambda source, target, up, stream_logs: delivered.append(target))
        for i in _instances(reservation.fid)]
    monkeypatch.setattr(
        global_user_state, 'get_handle_from_cluster_name',
        lambda name: types.SimpleNamespace(
            launched_nodes=1, get_command_runners=lambda: runners)
        if name == 'long-up' else None)
    try:
        assert _query('long-up') == {reservation.instances[0]: (UP, None)}
        assert delivered == [node_keys.NODE_PATH]
        live = [k for k in conn.client.list_api_keys()
                if k.name == first.name and k.is_live(conn.client.server_now())]
        assert len(live) == 1 and live[0].fid != first.fid

        server.control('DELETE', 'stats')
        assert _query('long-up') == {reservation.instances[0]: (UP, None)}
        assert 'GET /v2/api-keys' not in server.control(
            'GET', 'stats')['by_route']
        assert delivered == [node_keys.NODE_PATH]
    finally:
        reservation_claims.release(reservation_claims.of_cluster('long-up'))
