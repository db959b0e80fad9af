"""CPU VMs: the CPU catalog, launching one at once (no auction), what its
instance carries, the refusals, and terminating one."""

import pytest

from sky_mithril.emulator.market import (MCC_IMAGE_VERSION_FID, PROJECT_FID,
                                         InstanceStatus, InvalidRequest,
                                         InvalidState, Market, NotFound)

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, OTHER_REGION,
                                          PUBLIC_KEY, REGION, RecordingHosts,
                                          launch_cpu_vm, place_bid)


def test_the_cpu_catalog_is_apart_from_the_auctioned_types(
        market: Market) -> None:
    cpu_types = market.cpu_vms.instance_types()
    assert [(t.name, t.num_gpus, str(t.hourly_price)) for t in cpu_types] == [
        ('c2-standard', 0, '0.20'), ('c2-highmem', 0, '0.60')]
    auctioned = {t.fid for t in market.auctions.instance_types()}
    assert auctioned.isdisjoint(t.fid for t in cpu_types)
    assert all(t.hourly_price is None
               for t in market.auctions.instance_types())
    assert market.cpu_vms.regions() == [REGION, OTHER_REGION]


def test_a_cpu_vm_boots_at_once_without_an_auction(
        market: Market, hosts: RecordingHosts) -> None:
    key, _ = market.ssh_keys.create(PROJECT_FID, 'own', PUBLIC_KEY)
    instance = launch_cpu_vm(market, name='builder', ssh_keys=[key.fid])
    assert (instance.name, instance.status, instance.bid_fid) == (
        'builder', InstanceStatus.NEW, None)
    assert (instance.reservation_fid or '').startswith('res_')
    assert instance.price_paid is not None
    assert str(instance.price_paid) == '0.20'
    market.advance(BOOT_S)
    assert instance.status == InstanceStatus.RUNNING
    assert hosts.created_keys[instance.fid] == [PUBLIC_KEY]
    assert market.instances.list(PROJECT_FID) == [instance]
    assert market.instances.list(PROJECT_FID, order_types=['Bid']) == []
    assert market.instances.list(
        PROJECT_FID, reservation_fids=[instance.reservation_fid or '']) == [
            instance
        ]


def test_cpu_vm_instances_and_bid_instances_by_order_type(
        market: Market) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S)
    vm = launch_cpu_vm(market)
    assert market.instances.list(PROJECT_FID, order_types=['Bid']) == (
        bid.instances)
    assert market.instances.list(PROJECT_FID,
                                 order_types=['Reservation']) == [vm]


def test_cpu_vm_refusals_name_each_field(market: Market) -> None:
    gpu_type = market.auctions.instance_types()[0]
    with pytest.raises(InvalidRequest) as refused:
        market.cpu_vms.create(project='proj_other', name='',
                              instance_type=gpu_type.fid, region='nowhere',
                              ssh_keys=['sshkey_unknown'],
                              image_version='imgv_unknown')
    assert [(e.field, e.index) for e in refused.value.errors] == [
        ('project', None), ('name', None), ('instance_type', None),
        ('region', None), ('ssh_keys', 0), ('image_version', None)]
    instance = market.cpu_vms.create(
        project=PROJECT_FID, name='vm',
        instance_type=market.cpu_vms.instance_types()[1].fid, region=REGION,
        image_version=MCC_IMAGE_VERSION_FID)
    assert instance.instance_type.name == 'c2-highmem'


def test_terminating_a_cpu_vm_destroys_its_host_once(
        market: Market, hosts: RecordingHosts) -> None:
    instance = launch_cpu_vm(market)
    market.advance(BOOT_S)
    assert market.cpu_vms.terminate(instance.fid) is instance
    assert (instance.status, instance.price_paid) == (
        InstanceStatus.TERMINATED, None)
    assert hosts.hooks_for(instance.fid) == ['create', 'destroy']
    market.cpu_vms.terminate(instance.fid)
    assert hosts.hooks_for(instance.fid) == ['create', 'destroy']
    bid = place_bid(market)
    market.advance(CLEARING_S)
    for not_a_cpu_vm in (bid.instances[0].fid, 'inst_unknown'):
        with pytest.raises(NotFound):
            market.cpu_vms.terminate(not_a_cpu_vm)


def test_a_key_a_live_cpu_vm_lists_cannot_be_deleted(market: Market) -> None:
    key, _ = market.ssh_keys.create(PROJECT_FID, 'k', PUBLIC_KEY)
    instance = launch_cpu_vm(market, ssh_keys=[key.fid])
    with pytest.raises(InvalidState, match=instance.fid):
        market.ssh_keys.delete(key.fid)
    market.cpu_vms.terminate(instance.fid)
    market.ssh_keys.delete(key.fid)
