"""`config.mithril.volumes` in-process: the settings checked, and the node's
mount commands. (Resolving them in the project and attaching them to the bid,
against the emulator, is in tests/integration/test_task_volumes.py.)"""

import pytest

from sky_mithril.task import mithril_volumes
from sky_mithril.api import models


@pytest.mark.parametrize('value,needle', [
    ({'relative/path': 'x'}, 'must be an absolute path'),
    ({'/': 'x'}, 'must be an absolute path'),
    ({'/a': ''}, 'needs a volume name'),
    ({'/a': 'x', '/b': 'x'}, 'mounts one volume at two paths'),
    (['x'], 'must map mount paths to volume names'),
])
def test_bad_volume_settings_name_the_fix(value, needle):
    with pytest.raises(mithril_volumes.VolumeConfigError, match=needle):
        mithril_volumes.requested({'volumes': value})


def test_setup_moves_a_file_share_and_formats_a_block_volume_only_once():
    share = models.Volume(fid='vol_a', name='ckpt', region='r',
                          created_at='2026-11-27T00:00:00Z', capacity_gb=1,
                          project='p', interface='File')
    disk = share.model_copy(update={'fid': 'vol_b', 'name': 'scratch',
                                    'interface': models.VolumeInterface.BLOCK})
    script = mithril_volumes.setup_commands([
        mithril_volumes.Mount('/ckpt', share), mithril_volumes.Mount('/data', disk)])
    assert 's| /mnt/ckpt | /ckpt |' in script
    assert ('blkid "$MITHRIL_DISK" >/dev/null 2>&1 || sudo mkfs.ext4'
            in script)
    assert '/dev/disk/by-id/virtio-vol_b' in script


def _block(**holders):
    return mithril_volumes.Mount('/scratch', models.Volume(
        fid='vol_b', name='scratch', region='r', created_at='2026-01-01T00:00:00Z',
        capacity_gb=10, project='p', interface=models.VolumeInterface.BLOCK,
        **holders))


@pytest.mark.parametrize('holders, holder', [
    ({'bids': ['bid_x']}, 'bid_x'),
    ({'reservations': ['res_other']}, 'res_other'),
    ({'attachments': {'inst_cpu_vm': '/dev/disk/by-id/virtio-vol_b'}}, 'inst_cpu_vm'),
])
def test_a_cluster_on_a_reservation_cannot_take_a_block_volume_held_elsewhere(
        holders, holder):
    with pytest.raises(mithril_volumes.VolumeConfigError, match=(
            f'Block volume scratch \\(vol_b\\) is attached to {holder}.*'
            'launch without that volume')):
        mithril_volumes.check_reservation_takes([_block(**holders)], 'res_mine')


def test_a_block_volume_free_or_already_on_the_reservation_is_taken():
    mithril_volumes.check_reservation_takes([_block()], 'res_mine')
    mithril_volumes.check_reservation_takes([_block(
        reservations=['res_mine'],
        attachments={'inst_mine': '/dev/disk/by-id/virtio-vol_b'})], 'res_mine')
