"""`config.mithril.volumes`: checked, resolved by name in the project,
pinned to the volumes' region, attached to the bid, and refused on a
cluster whose bid has other volumes."""

import pytest

from provisioning import bids_named, launch, provision_config

from sky_mithril import connection
from sky_mithril import volumes
from sky_mithril.api import models


def volume(name: str, region: str = 'us-central3-a',
           interface: models.VolumeInterface = models.VolumeInterface.FILE
           ) -> models.Volume:
    conn = connection.connect()
    return conn.client.create_volume(conn.project_id, name, region, 10,
                                     interface)


@pytest.mark.parametrize('value,needle', [
    ({'relative/path': 'x'}, 'must be an absolute path'),
    ({'/': 'x'}, 'must be an absolute path'),
    ({'/a': ''}, 'needs a volume name'),
    ({'/a': 'x', '/b': 'x'}, 'mounts one volume at two paths'),
    (['x'], 'must map mount paths to volume names'),
])
def test_bad_volume_settings_name_the_fix(value, needle):
    with pytest.raises(volumes.VolumeConfigError, match=needle):
        volumes.requested({'volumes': value})


def test_volumes_are_found_by_name_or_fid_and_pin_one_region(emulator):
    share = volume('ckpt')
    disk = volume('scratch', interface=models.VolumeInterface.BLOCK)
    mounts = volumes.resolve(connection.connect(), {
        '/ckpt': 'ckpt', '/scratch': disk.fid})
    assert [(m.path, m.volume.fid) for m in mounts] == [
        ('/ckpt', share.fid), ('/scratch', disk.fid)]
    assert volumes.region_of(mounts) == 'us-central3-a'
    with pytest.raises(volumes.VolumeConfigError,
                       match='--infra mithril/us-central3-a'):
        volumes.check_region(mounts, 'us-central5-a')


def test_an_unknown_volume_lists_the_projects_volumes(emulator):
    volume('ckpt')
    with pytest.raises(volumes.VolumeConfigError,
                       match=r"'nope'.*its volumes: ckpt.*volumes create nope"):
        volumes.resolve(connection.connect(), {'/x': 'nope'})


def test_volumes_of_two_regions_are_refused(emulator):
    volume('here')
    volume('there', region='us-central5-a')
    mounts = volumes.resolve(connection.connect(),
                                   {'/a': 'here', '/b': 'there'})
    with pytest.raises(volumes.VolumeConfigError, match='several regions'):
        volumes.region_of(mounts)


def test_the_bid_attaches_the_volumes_and_a_relaunch_cannot_change_them(
        emulator):
    share = volume('ckpt')
    config = provision_config()
    config.provider_config['volume_fids'] = share.fid
    launch('with-volume', config)
    [bid] = bids_named(emulator, 'with-volume')
    placed = connection.connect().client.get_bid(bid['fid'])
    assert placed.launch_specification.volumes == [share.fid]
    with pytest.raises(RuntimeError, match='sky .*down'):
        launch('with-volume', provision_config())


def test_setup_moves_a_file_share_and_formats_a_block_volume_only_once():
    share = models.Volume(fid='vol_a', name='ckpt', region='r',
                          created_at='2026-11-27T00:00:00Z', capacity_gb=1,
                          project='p', interface='File')
    disk = share.model_copy(update={'fid': 'vol_b', 'name': 'scratch',
                                    'interface': models.VolumeInterface.BLOCK})
    script = volumes.setup_commands([
        volumes.Mount('/ckpt', share), volumes.Mount('/data', disk)])
    assert 's| /mnt/ckpt | /ckpt |' in script
    assert ('blkid "$MITHRIL_DISK" >/dev/null 2>&1 || sudo mkfs.ext4'
            in script)
    assert '/dev/disk/by-id/virtio-vol_b' in script
