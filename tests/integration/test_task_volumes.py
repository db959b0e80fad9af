"""`config.mithril.volumes` against the emulator: resolved by name in the
project, pinned to the volumes' region, attached to the bid, and refused on a
cluster whose bid has other volumes. (The settings' own checks are in
tests/unit/test_task_volumes.py.)"""

import pytest

from tests.helpers.provisioning import bids_named, launch, provision_config

from sky_mithril.account import connection
from sky_mithril.task import mithril_volumes
from sky_mithril.api import models


def volume(name: str, region: str = 'us-central3-a',
           interface: models.VolumeInterface = models.VolumeInterface.FILE
           ) -> models.Volume:
    conn = connection.connect()
    return conn.client.create_volume(conn.project_id, name, region, 10,
                                     interface)


def test_volumes_are_found_by_name_or_fid_and_pin_one_region(fast_emulator):
    share = volume('ckpt')
    disk = volume('scratch', interface=models.VolumeInterface.BLOCK)
    mounts = mithril_volumes.resolve(connection.connect(), {
        '/ckpt': 'ckpt', '/scratch': disk.fid})
    assert [(m.path, m.volume.fid) for m in mounts] == [
        ('/ckpt', share.fid), ('/scratch', disk.fid)]
    assert mithril_volumes.region_of(mounts) == 'us-central3-a'
    with pytest.raises(mithril_volumes.VolumeConfigError,
                       match='--infra mithril/us-central3-a'):
        mithril_volumes.check_region(mounts, 'us-central5-a')


def test_an_unknown_volume_lists_the_projects_volumes(fast_emulator):
    volume('ckpt')
    with pytest.raises(mithril_volumes.VolumeConfigError,
                       match=r"'nope'.*its volumes: ckpt.*volumes create nope"):
        mithril_volumes.resolve(connection.connect(), {'/x': 'nope'})


def test_volumes_of_two_regions_are_refused(fast_emulator):
    volume('here')
    volume('there', region='us-central5-a')
    mounts = mithril_volumes.resolve(connection.connect(),
                                   {'/a': 'here', '/b': 'there'})
    with pytest.raises(mithril_volumes.VolumeConfigError, match='several regions'):
        mithril_volumes.region_of(mounts)


def test_the_bid_attaches_the_volumes_and_a_relaunch_cannot_change_them(
        fast_emulator):
    share = volume('ckpt')
    config = provision_config()
    config.provider_config['volume_fids'] = share.fid
    launch('with-volume', config)
    [bid] = bids_named(fast_emulator, 'with-volume')
    placed = connection.connect().client.get_bid(bid['fid'])
    assert placed.launch_specification.volumes == [share.fid]
    with pytest.raises(RuntimeError, match='sky .*down'):
        launch('with-volume', provision_config())
