"""Volumes in the market: creating, renaming, deleting, the storage quota,
which bids (and CPU VMs) may list which volumes, and what the hosts get.
Manual clock, no HTTP (the /v2/volumes routes are tested over HTTP with the
emulator server)."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from sky_mithril.emulator import wire
from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts import HostAddress, VolumeAttachment
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import (PROJECT_FID, Bid, BidEventType,
                                         BidStatus, InstanceStatus,
                                         InvalidRequest, InvalidState, Market,
                                         NotFound, Volume)

from tests.helpers.market_testing import launch_cpu_vm

TYPE = 'gpu.sxm.1x'
REGION = 'region-a'
OTHER_REGION = 'region-b'
CLEARING_S = 120.0
BOOT_S = 60.0


def _row(region: str) -> Dict[str, str]:
    return {
        'InstanceType': TYPE, 'AcceleratorName': 'H100',
        'AcceleratorCount': '1', 'vCPUs': '20', 'MemoryGiB': '200',
        'Price': '0.50', 'SpotPrice': '1.00', 'Region': region,
        'GpuInfo': "{'Gpus': [{'Name': 'H100', 'Count': 1, "
                   "'MemoryInfo': {'SizeInMiB': 81920}}]}",
    }


class VolumeRecordingHosts(PlaceholderHosts):
    """Placeholder hosts that remember the volumes of every create and resume."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: List[Tuple[str, str, List[str]]] = []
        self.deleted_volumes: List[str] = []

    def create(self, instance_fid: str, ssh_public_keys: List[str],
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        self.starts.append(('create', instance_fid, [v.fid for v in volumes]))
        return super().create(instance_fid, ssh_public_keys, volumes)

    def resume(self, instance_fid: str,
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        self.starts.append(('resume', instance_fid, [v.fid for v in volumes]))
        return super().resume(instance_fid, volumes)

    def delete_volume(self, volume_fid: str) -> None:
        self.deleted_volumes.append(volume_fid)


# This module's own market: one price in both regions, hosts that record volumes.


@pytest.fixture(name='hosts')
def fixture_hosts() -> VolumeRecordingHosts:
    return VolumeRecordingHosts()


@pytest.fixture(name='market')
def fixture_market(hosts: VolumeRecordingHosts) -> Market:
    return Market(ManualClock(), hosts, [_row(REGION), _row(OTHER_REGION)],
                  clearing_interval_s=CLEARING_S)


def _volume(market: Market, name: str = 'data', interface: str = 'File',
            region: str = REGION, size_gb: int = 100) -> Volume:
    return market.volumes.create(project=PROJECT_FID,
                                 name=name,
                                 interface=interface,
                                 region=region,
                                 size_gb=size_gb)


def _bid(market: Market, volumes: Sequence[str], name: str = 'job',
         region: str = REGION, quantity: int = 1) -> Bid:
    return market.bids.create(project=PROJECT_FID,
                              region=region,
                              instance_type=market.auctions.get(
                                  TYPE, region).instance_type.fid,
                              limit_price='$5.00',
                              instance_quantity=quantity,
                              name=name,
                              volumes=volumes)


def _messages(
        excinfo: pytest.ExceptionInfo) -> Dict[Tuple[str, Optional[int]], str]:
    return {(e.field, e.index): e.msg for e in excinfo.value.errors}


def test_create_list_rename_delete(market: Market,
                                   hosts: VolumeRecordingHosts) -> None:
    share = _volume(market, 'data', 'File', REGION, 100)
    disk = _volume(market, 'scratch', 'Block', OTHER_REGION, 50)
    assert share.fid.startswith('vol_') and share.fid != disk.fid
    assert wire.volume_json(market, share) == {
        'fid': share.fid, 'name': 'data', 'region': REGION,
        'created_at': market.now.isoformat(), 'deleted_at': None,
        'capacity_gb': 100, 'project': PROJECT_FID, 'interface': 'File',
        'bids': [],
        'reservations': [], 'attachments': {},
    }
    assert market.volumes.list(PROJECT_FID) == [share, disk]
    assert market.volumes.list(PROJECT_FID, OTHER_REGION) == [disk]
    with pytest.raises(NotFound):
        market.volumes.list('proj_other')

    assert market.volumes.rename(share.fid, 'renamed').name == 'renamed'
    assert market.volumes.rename(share.fid, 'renamed').name == 'renamed'
    market.volumes.delete(share.fid)
    assert market.volumes.list(PROJECT_FID) == [disk]
    assert hosts.deleted_volumes == [share.fid]
    with pytest.raises(NotFound):
        market.volumes.delete(share.fid)
    with pytest.raises(NotFound):
        market.volumes.rename(share.fid, 'again')


@pytest.mark.parametrize('field, value, words', [
    ('project', 'proj_other', ['proj_other', 'not found']),
    ('region', 'region-z', ['region-z', 'not found']),
    ('interface', 'Tape', ['Block', 'File']),
    ('size_gb', 0, ['1', '16384']),
    ('size_gb', 16385, ['1', '16384']),
    ('name', ' ', ['empty']),
    ('name', 'a/b', ['directory name']),
    ('name', 'taken', ['taken', 'already exists']),
])
def test_create_refuses_bad_fields(market: Market, field: str, value: Any,
                                   words: List[str]) -> None:
    _volume(market, 'taken')
    arguments: Dict[str, Any] = {'project': PROJECT_FID, 'name': 'new',
                                 'interface': 'File', 'region': REGION,
                                 'size_gb': 10}
    arguments[field] = value
    with pytest.raises(InvalidRequest) as excinfo:
        market.volumes.create(**arguments)
    [message] = _messages(excinfo).values()
    assert list(_messages(excinfo)) == [(field, None)]
    assert all(word in message for word in words), message
    assert [v.name for v in market.volumes.list(PROJECT_FID)] == ['taken']


def test_rename_refuses_a_name_in_use(market: Market) -> None:
    _volume(market, 'first')
    second = _volume(market, 'second')
    with pytest.raises(InvalidRequest) as excinfo:
        market.volumes.rename(second.fid, 'first')
    assert 'already exists' in _messages(excinfo)[('name', None)]
    assert second.name == 'second'


def test_storage_quota_is_20000_gb_per_project(market: Market) -> None:
    _volume(market, 'big', size_gb=16384)
    _volume(market, 'rest', 'Block', size_gb=3616)
    with pytest.raises(InvalidRequest) as excinfo:
        _volume(market, 'one-more', size_gb=1)
    message = _messages(excinfo)[('size_gb', None)]
    assert 'quota of 20000 GB' in message
    assert '20000 GB used' in message and '1 GB requested' in message
    storage = market.accounts.quotas(PROJECT_FID)[-1]
    assert (storage.product_type, storage.units, storage.total_quantity,
            storage.used_quantity) == ('storage', 'GB', 20000, 20000)


def test_bid_volumes_must_exist_in_the_bids_region(market: Market) -> None:
    elsewhere = _volume(market, 'elsewhere', region=OTHER_REGION)
    with pytest.raises(InvalidRequest) as excinfo:
        _bid(market, [elsewhere.fid, 'vol_missing', elsewhere.fid])
    messages = _messages(excinfo)
    assert OTHER_REGION in messages[('volumes', 0)]
    assert REGION in messages[('volumes', 0)].replace(OTHER_REGION, '')
    assert 'vol_missing not found' in messages[('volumes', 1)]
    assert 'more than once' in messages[('volumes', 2)]
    assert market.bids.list() == []


def test_a_block_volume_goes_with_one_live_bid_a_file_share_with_many(
        market: Market) -> None:
    disk = _volume(market, 'disk', 'Block')
    share = _volume(market, 'share', 'File')
    first = _bid(market, [disk.fid, share.fid], name='first')
    with pytest.raises(InvalidRequest) as excinfo:
        _bid(market, [disk.fid], name='second')
    [message] = _messages(excinfo).values()
    assert first.fid in message and '(first)' in message
    second = _bid(market, [share.fid], name='second')
    assert wire.volume_json(market, share)['bids'] == [first.fid, second.fid]

    with pytest.raises(InvalidRequest):
        market.bids.update(second.fid, volumes=[share.fid, disk.fid])
    market.bids.update(first.fid, volumes=[disk.fid])  # its own block volume
    market.bids.cancel(first.fid)
    market.bids.update(second.fid, volumes=[share.fid, disk.fid])
    assert wire.volume_json(market, disk)['bids'] == [second.fid]


def test_a_volume_a_live_bid_lists_cannot_be_deleted(
        market: Market, hosts: VolumeRecordingHosts) -> None:
    share = _volume(market, 'keep')
    bid = _bid(market, [share.fid], name='user')
    with pytest.raises(InvalidState) as excinfo:
        market.volumes.delete(share.fid)
    assert str(excinfo.value) == (
        f'Volume {share.fid} (keep) is attached to bid {bid.fid} (user); '
        'cancel the bid first.')
    assert hosts.deleted_volumes == []
    market.bids.cancel(bid.fid)
    market.volumes.delete(share.fid)
    assert hosts.deleted_volumes == [share.fid]
    assert wire.bid_json(bid)['launch_specification']['volumes'] == [share.fid]


def test_patching_volumes_replaces_the_list_and_records_events(
        market: Market) -> None:
    first = _volume(market, 'first')
    second = _volume(market, 'second')
    bid = _bid(market, [first.fid])
    market.bids.update(bid.fid, volumes=[first.fid, second.fid])
    market.bids.update(bid.fid, volumes=[second.fid, first.fid])
    market.bids.update(bid.fid, volumes=[second.fid])
    market.bids.update(bid.fid, limit_price='$6.00')
    assert wire.bid_json(bid)['launch_specification']['volumes'] == [second.fid]
    assert [e.event_type for e in bid.events] == [
        BidEventType.PLACED, BidEventType.VOLUMES_ATTACHED,
        BidEventType.VOLUMES_REMOVED, BidEventType.LIMIT_PRICE_CHANGED]
    assert wire.volume_json(market, first)['bids'] == []


def test_hosts_get_the_bids_volumes_at_every_start(
        market: Market, hosts: VolumeRecordingHosts) -> None:
    share = _volume(market, 'share')
    disk = _volume(market, 'disk', 'Block')
    bid = _bid(market, [share.fid])
    market.advance(CLEARING_S + BOOT_S)
    [instance] = bid.instances
    assert instance.status == InstanceStatus.RUNNING
    market.bids.update(bid.fid, paused=True)
    market.bids.update(bid.fid, volumes=[share.fid, disk.fid])
    market.bids.update(bid.fid, paused=False)
    market.advance(CLEARING_S + BOOT_S)
    assert instance.status == InstanceStatus.RUNNING
    assert hosts.starts == [('create', instance.fid, [share.fid]),
                            ('resume', instance.fid, [share.fid, disk.fid])]


def test_attachments_list_the_live_instances_and_where_they_see_it(
        market: Market) -> None:
    share = _volume(market, 'shared-data')
    disk = _volume(market, 'disk', 'Block')
    bid = _bid(market, [share.fid, disk.fid], quantity=2)
    assert wire.volume_json(market, share)['attachments'] == {}
    market.advance(CLEARING_S + BOOT_S)
    fids = [i.fid for i in bid.instances]
    assert wire.volume_json(market, share)['attachments'] == {
        fid: '/mnt/shared-data' for fid in fids}
    assert wire.volume_json(market, disk)['attachments'] == {
        fid: f'/dev/disk/by-id/virtio-{disk.fid[:36]}' for fid in fids}
    market.bids.update(bid.fid, paused=True)
    assert list(wire.volume_json(market, share)['attachments']) == fids
    market.bids.cancel(bid.fid)
    assert bid.status == BidStatus.TERMINATED
    assert wire.volume_json(market, share)['attachments'] == {}
    assert wire.volume_json(market, share)['bids'] == []


def test_a_cpu_vm_gets_its_volumes_and_holds_them_while_it_lives(
        market: Market, hosts: VolumeRecordingHosts) -> None:
    share = _volume(market, 'share')
    disk = _volume(market, 'disk', 'Block')
    vm = launch_cpu_vm(market, volumes=[share.fid, disk.fid])
    market.advance(BOOT_S)
    assert vm.status == InstanceStatus.RUNNING
    assert hosts.starts == [('create', vm.fid, [share.fid, disk.fid])]
    assert wire.volume_json(market, disk)['attachments'] == {
        vm.fid: f'/dev/disk/by-id/virtio-{disk.fid[:36]}'}
    assert wire.volume_json(market, disk)['bids'] == []
    with pytest.raises(InvalidRequest) as excinfo:
        _bid(market, [disk.fid])
    [message] = _messages(excinfo).values()
    assert vm.fid in message
    with pytest.raises(InvalidRequest):
        launch_cpu_vm(market, name='other', volumes=[disk.fid])
    with pytest.raises(InvalidState, match=vm.fid):
        market.volumes.delete(share.fid)
    market.cpu_vms.terminate(vm.fid)
    assert wire.volume_json(market, share)['attachments'] == {}
    market.volumes.delete(share.fid)
    _bid(market, [disk.fid])


def test_state_dump_lists_volumes(market: Market) -> None:
    share = _volume(market, 'share')
    bid = _bid(market, [share.fid])
    state = market.dump_state()
    assert state['volumes'] == [{
        'fid': share.fid, 'name': 'share', 'region': REGION,
        'interface': 'File', 'capacity_gb': 100, 'bids': [bid.fid],
        'attachments': {},
    }]
    assert state['bids'][0]['volumes'] == [share.fid]
