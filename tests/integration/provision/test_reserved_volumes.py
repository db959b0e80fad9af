"""A task's volumes (`config.mithril.volumes`) on a reservation
(`config.mithril.reservation`) whose launch specification lacks them,
driven through the provisioner against the emulator: the launch adds them to
the reservation (keeping its other volumes) and restarts the claimed
instance, whose host then starts with them; a volume the reservation cannot
take bursts the launch to spot, saying which and why. A relaunch or start of
a cluster that already holds reserved instances adds a new volume the same
way, or is refused naming the fix (it cannot move to spot), before
provisioning when the volume is visibly held elsewhere (SkyPilot would stop
a running cluster whose provisioning fails)."""

import datetime
from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

import pytest

import sky
from sky.clouds import cloud as sky_cloud
from sky.utils import resources_utils
from sky.utils import status_lib

from sky_mithril import cloud

from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.hosts import HostAddress, VolumeAttachment
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes
from sky_mithril.task import mithril_volumes

from tests.helpers.provisioning import PUBLIC_KEY, bids_named, point_plugin_at
from tests.helpers.reservations import reserve

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
PROJECT = {'project_id': 'proj_emulator'}


class VolumeRecordingHosts(PlaceholderHosts):
    """Placeholder hosts that remember the volumes of every start."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: List[Tuple[str, List[str]]] = []

    def create(self, instance_fid: str, ssh_public_keys: List[str],
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        self.starts.append((instance_fid, [v.fid for v in volumes]))
        return super().create(instance_fid, ssh_public_keys, volumes)

    def resume(self, instance_fid: str,
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        self.starts.append((instance_fid, [v.fid for v in volumes]))
        return super().resume(instance_fid, volumes)

    def volumes_at_last_start(self, instance_fid: str) -> List[str]:
        return [volumes for fid, volumes in self.starts
                if fid == instance_fid][-1]


@pytest.fixture
def hosts() -> VolumeRecordingHosts:
    return VolumeRecordingHosts()


@pytest.fixture
def server(hosts: VolumeRecordingHosts, monkeypatch: pytest.MonkeyPatch,
           tmp_path: Path) -> Iterator[EmulatorServer]:
    """A fast emulator (600x time) on hosts that record their volumes, the
    plugin pointed at it."""
    with EmulatorServer(speed=600, hosts=hosts) as emulator:
        point_plugin_at(emulator, monkeypatch, tmp_path)
        yield emulator


def _volume(name: str, interface: models.VolumeInterface =
            models.VolumeInterface.FILE) -> models.Volume:
    conn = connection.connect()
    return conn.client.create_volume(conn.project_id, name, REGION, 10,
                                     interface)


def _reservation(fid: str) -> models.Reservation:
    conn = connection.connect()
    [reservation] = [r for r in conn.client.list_reservations(conn.project_id)
                     if r.fid == fid]
    return reservation


def _wait_running(reservation_fid: str) -> None:
    conn = connection.connect()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    while datetime.datetime.now() < deadline:
        instances = conn.client.list_instances(
            conn.project_id, reservation_fids=[reservation_fid])
        if instances and all(i.status == models.InstanceState.RUNNING
                             for i in instances):
            return
    raise AssertionError('the reservation\'s instances never ran')


def _config(reservation: str, volume_fids: List[str]) -> Any:
    config = devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': REGION, 'limit_price_per_hour': '32.00',
         'provision_timeout': '', 'boot_timeout': '',
         'reservation': reservation},
        ssh_key_fid_for(connection.connect(), PUBLIC_KEY), TYPE)
    config.provider_config['volume_fids'] = ','.join(volume_fids)
    return config


def _launch(name: str, config: Any) -> Any:
    return provisioner.run_instances(REGION, name, name, config)


def test_the_task_volume_is_added_and_the_running_instance_restarts_with_it(
        server: EmulatorServer, hosts: VolumeRecordingHosts,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level('INFO')
    other = _volume('datasets')
    checkpoints = _volume('train-checkpoints')
    reservation = reserve(server, 'team-res', volumes=[other.fid])
    _wait_running(reservation.fid)
    [fid] = reservation.instances
    assert hosts.volumes_at_last_start(fid) == [other.fid]

    record = _launch('trainer', _config(reservation.name, [checkpoints.fid]))

    assert record.created_instance_ids == [fid]
    assert bids_named(server, 'trainer') == []
    assert _reservation(reservation.fid).launch_specification.volumes == [
        other.fid, checkpoints.fid]
    assert hosts.volumes_at_last_start(fid) == [other.fid, checkpoints.fid]
    assert f'Restarting reserved instance(s) {fid}' in caplog.text
    assert checkpoints.fid in caplog.text
    provisioner.terminate_instances('trainer', PROJECT)


def test_volumes_already_on_the_reservation_change_nothing(
        server: EmulatorServer, hosts: VolumeRecordingHosts) -> None:
    checkpoints = _volume('train-checkpoints')
    reservation = reserve(server, 'team-res', volumes=[checkpoints.fid])
    _wait_running(reservation.fid)
    [fid] = reservation.instances
    starts = len(hosts.starts)

    _launch('trainer', _config(reservation.name, [checkpoints.fid]))

    assert len(hosts.starts) == starts  # not restarted
    assert _reservation(reservation.fid).launch_specification.volumes == [
        checkpoints.fid]
    assert hosts.volumes_at_last_start(fid) == [checkpoints.fid]
    provisioner.terminate_instances('trainer', PROJECT)


def test_a_block_volume_another_reservation_holds_is_not_on_the_reservation(
        server: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level('INFO')
    disk = _volume('scratch', models.VolumeInterface.BLOCK)
    holder = reserve(server, 'holder', volumes=[disk.fid])
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)

    # The spot bid the launch bursts to cannot take the disk either.
    with pytest.raises(errors.ValidationError, match=disk.fid):
        _launch('trainer', _config(reservation.name, [disk.fid]))

    assert (f'Not on the reservation: reservation team-res ({reservation.fid}) '
            f'cannot take the task\'s volume(s) {disk.fid}') in caplog.text
    assert f'already attached to reservation {holder.fid}' in caplog.text
    assert 'Bidding on spot' in caplog.text
    assert _reservation(reservation.fid).launch_specification.volumes == []
    assert reservation_claims.of_cluster('trainer') == []


def test_a_refused_volume_change_bursts_to_spot_with_the_volume(
        server: EmulatorServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level('INFO')
    checkpoints = _volume('train-checkpoints')
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)

    def refuse(self: client_lib.MithrilClient, reservation_fid: str,
               **changes: Any) -> models.Reservation:
        del self, changes
        raise errors.PermissionDeniedError(
            f'Not allowed to change reservation {reservation_fid}',
            status_code=403)

    monkeypatch.setattr(client_lib.MithrilClient, 'update_reservation', refuse)

    record = _launch('trainer', _config(reservation.name, [checkpoints.fid]))

    assert record.head_instance_id not in reservation.instances
    [bid] = bids_named(server, 'trainer')
    placed = connection.connect().client.get_bid(bid['fid'])
    assert placed.launch_specification.volumes == [checkpoints.fid]
    assert (f'cannot take the task\'s volume(s) {checkpoints.fid}: Not '
            f'allowed to change reservation {reservation.fid}') in caplog.text
    assert reservation_claims.of_cluster('trainer') == []
    provisioner.terminate_instances('trainer', PROJECT)


def test_a_relaunch_of_a_cluster_on_the_reservation_adds_a_new_volume(
        server: EmulatorServer, hosts: VolumeRecordingHosts,
        caplog: pytest.LogCaptureFixture) -> None:
    """`sky launch` again on a cluster that holds the reservation's instance,
    with a volume the reservation lacks: added and attached (the running
    instance restarts with it), as at a first launch, with no bid."""
    caplog.set_level('INFO')
    checkpoints = _volume('train-checkpoints')
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)
    [fid] = reservation.instances
    _launch('trainer', _config(reservation.name, []))
    assert hosts.volumes_at_last_start(fid) == []

    again = _launch('trainer', _config(reservation.name, [checkpoints.fid]))

    assert again.head_instance_id == fid
    assert bids_named(server, 'trainer') == []
    assert _reservation(reservation.fid).launch_specification.volumes == [
        checkpoints.fid]
    assert hosts.volumes_at_last_start(fid) == [checkpoints.fid]
    assert f'Restarting reserved instance(s) {fid}' in caplog.text
    assert [c.instance_fid for c in reservation_claims.of_cluster(
        'trainer')] == [fid]
    provisioner.terminate_instances('trainer', PROJECT)


def test_a_start_of_a_stopped_cluster_on_the_reservation_adds_its_volume(
        server: EmulatorServer, hosts: VolumeRecordingHosts) -> None:
    """`sky start` of a stopped cluster whose task now names a volume the
    reservation lacks: added, and the instance resumes with it."""
    checkpoints = _volume('train-checkpoints')
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)
    [fid] = reservation.instances
    _launch('trainer', _config(reservation.name, []))
    provisioner.stop_instances('trainer', PROJECT)

    started = _launch('trainer', _config(reservation.name, [checkpoints.fid]))

    assert started.resumed_instance_ids == [fid]
    assert bids_named(server, 'trainer') == []
    assert _reservation(reservation.fid).launch_specification.volumes == [
        checkpoints.fid]
    assert hosts.volumes_at_last_start(fid) == [checkpoints.fid]
    provisioner.terminate_instances('trainer', PROJECT)


def test_a_relaunch_with_a_volume_the_reservation_refuses_names_the_fix(
        server: EmulatorServer, hosts: VolumeRecordingHosts) -> None:
    """A block volume another reservation holds cannot join the cluster's
    reservation, and the cluster cannot move to spot: the relaunch is
    refused naming the volume, Mithril's reason and the fix, and the
    cluster keeps its instance running as it was, with no bid."""
    disk = _volume('scratch', models.VolumeInterface.BLOCK)
    holder = reserve(server, 'holder', volumes=[disk.fid])
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)
    [fid] = reservation.instances
    _launch('trainer', _config(reservation.name, []))
    starts = len(hosts.starts)

    with pytest.raises(reserved_nodes.ReservationError) as refused:
        _launch('trainer', _config(reservation.name, [disk.fid]))

    message = str(refused.value)
    assert f'cannot take the task\'s volume(s) {disk.fid}' in message
    assert f'already attached to reservation {holder.fid}' in message
    assert 'launch without those volumes' in message
    assert '`sky down` the cluster and launch again' in message
    assert bids_named(server, 'trainer') == []
    assert len(hosts.starts) == starts  # not restarted
    assert _reservation(reservation.fid).launch_specification.volumes == []
    assert [c.instance_fid for c in reservation_claims.of_cluster(
        'trainer')] == [fid]
    assert provisioner.query_instances('trainer', 'trainer', PROJECT) == {
        fid: (status_lib.ClusterStatus.UP, None)}
    provisioner.terminate_instances('trainer', PROJECT)


def test_a_relaunch_with_a_block_volume_held_elsewhere_is_refused_before_provisioning(
        server: EmulatorServer, hosts: VolumeRecordingHosts) -> None:
    """The deploy step (before SkyPilot provisions, which would stop the
    running cluster on a failure) sees the block volume another reservation
    holds and refuses naming it and the fix; nothing changes."""
    disk = _volume('scratch', models.VolumeInterface.BLOCK)
    holder = reserve(server, 'holder', volumes=[disk.fid])
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)
    _launch('trainer', _config(reservation.name, []))
    starts = len(hosts.starts)
    resources = sky.Resources(
        cloud=cloud.Mithril(), instance_type=TYPE, region=REGION,
        _cluster_config_overrides={'mithril': {
            'reservation': reservation.name,
            'volumes': {'/scratch': 'scratch'}}})

    with pytest.raises(mithril_volumes.VolumeConfigError) as refused:
        cloud.Mithril().make_deploy_resources_variables(
            resources, resources_utils.ClusterName('trainer', 'trainer'),
            sky_cloud.Region(REGION), None, 1)

    message = str(refused.value)
    assert f'Block volume scratch ({disk.fid}) is attached to {holder.fid}' in message
    assert 'launch without that volume' in message
    assert '`sky down` the cluster and launch again' in message
    assert len(hosts.starts) == starts
    assert _reservation(reservation.fid).launch_specification.volumes == []
    assert provisioner.query_instances('trainer', 'trainer', PROJECT) == {
        fid: (status_lib.ClusterStatus.UP, None) for fid in reservation.instances}
    provisioner.terminate_instances('trainer', PROJECT)


def test_a_relaunch_naming_no_reservation_is_checked_against_the_one_it_holds(
        server: EmulatorServer, hosts: VolumeRecordingHosts) -> None:
    """A relaunch whose task drops `reservation:` (the takeover puts the
    task's `config.mithril` in place of the cluster's) still runs on the
    reserved instances the cluster holds, and the provisioner adds the
    volume to that reservation; a block volume another order holds must be
    refused at the deploy step then too, before SkyPilot provisions (which
    would stop the running cluster when the reservation refuses it)."""
    disk = _volume('scratch', models.VolumeInterface.BLOCK)
    holder = reserve(server, 'holder', volumes=[disk.fid])
    reservation = reserve(server, 'team-res')
    _wait_running(reservation.fid)
    _launch('trainer', _config(reservation.name, []))
    resources = sky.Resources(
        cloud=cloud.Mithril(), instance_type=TYPE, region=REGION,
        _cluster_config_overrides={'mithril': {
            'volumes': {'/scratch': 'scratch'}}})

    with pytest.raises(mithril_volumes.VolumeConfigError) as refused:
        cloud.Mithril().make_deploy_resources_variables(
            resources, resources_utils.ClusterName('trainer', 'trainer'),
            sky_cloud.Region(REGION), None, 1)

    assert f'is attached to {holder.fid}' in str(refused.value)
    provisioner.terminate_instances('trainer', PROJECT)
