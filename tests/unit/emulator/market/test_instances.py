"""Instances' life cycle: boot steps and host creation, the preemption
notice and re-allocation of the same instances, a replaced instance, pause
and stop, cancellation
during boot, a failing host backend; and the actions on one instance of a
reservation (a CPU VM's): pause, resume, restart, a fresh boot disk. Manual
clock, no sleeping."""

import datetime
from decimal import Decimal

import pytest

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.market import (IMAGE_VERSION_FID,
                                         MCC_IMAGE_VERSION_FID, PROJECT_FID,
                                         BidStatus, Declined, InstanceStatus,
                                         InvalidState, Market, NotFound,
                                         NotSupported)
from sky_mithril.emulator.market.instances import RESTART_DURATION_S

from tests.helpers.market_testing import (BOOT_S, CATALOG, CLEARING_S, NOTICE_S, PUBLIC_KEY,
                                          REGION, TYPE, RecordingHosts, instance_statuses,
                                          launch_cpu_vm, place_bid)

STOP_S = 10.0  # the market's default stop_duration_s


def test_price_rise_preempts_after_notice_and_reallocates_same_instances(
        market: Market, hosts: RecordingHosts) -> None:
    bid = place_bid(market, limit='$3.00', quantity=2)
    market.advance(CLEARING_S + BOOT_S)
    assert instance_statuses(bid) == [InstanceStatus.RUNNING] * 2
    instance_fids = [i.fid for i in bid.instances]
    addresses = [i.address for i in bid.instances]

    market.auctions.set_price(TYPE, REGION, '$4.00')
    market.advance(CLEARING_S - BOOT_S)
    assert bid.status == BidStatus.PREEMPTING
    assert instance_statuses(bid) == [InstanceStatus.PREEMPTING] * 2
    end_time = market.now + datetime.timedelta(seconds=NOTICE_S)
    assert all(hosts.preemption_end_times[fid] == end_time
               for fid in instance_fids)
    assert market.auctions.free_capacity(
        bid.auction) == 6  # held during the notice

    market.advance(NOTICE_S - 1)
    assert bid.status == BidStatus.PREEMPTING
    market.advance(1)
    assert bid.status == BidStatus.OPEN
    assert instance_statuses(bid) == [InstanceStatus.PREEMPTED] * 2
    assert market.auctions.free_capacity(bid.auction) == 8
    assert all(hosts.hooks_for(fid)[-1] == 'preempt' for fid in instance_fids)

    market.auctions.set_price(TYPE, REGION, '$2.00')
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.ALLOCATED
    assert bid.price_paid == Decimal('2.00')
    market.advance(BOOT_S)
    assert [i.fid for i in bid.instances] == instance_fids
    assert instance_statuses(bid) == [InstanceStatus.RUNNING] * 2
    assert [i.address for i in bid.instances] == addresses
    for fid in instance_fids:
        assert hosts.hooks_for(fid) == ['create', 'notify_preemption',
                                        'preempt', 'resume']


def test_a_replaced_instance_gives_its_place_in_the_bid_to_a_new_one(
        market: Market, hosts: RecordingHosts) -> None:
    bid = place_bid(market, limit='$3.00', quantity=2)
    market.advance(CLEARING_S + BOOT_S)
    head, worker = bid.instances

    new = market.instances.replace(head.fid)

    assert head.status == InstanceStatus.REPLACED
    assert head.price_paid is None
    assert hosts.hooks_for(head.fid) == ['create', 'destroy']
    assert [i.fid for i in bid.instances] == [new.fid, worker.fid]
    assert new.status == InstanceStatus.NEW and new.address is None
    assert new.price_paid == bid.price_paid
    assert {i.fid for i in market.instances.list(
        PROJECT_FID, bid_fids=[bid.fid])} == {head.fid, worker.fid, new.fid}
    market.advance(BOOT_S)
    assert new.status == InstanceStatus.RUNNING
    assert new.address not in (None, head.address, worker.address)
    assert bid.status == BidStatus.ALLOCATED
    with pytest.raises(InvalidState):
        market.instances.replace(head.fid)


def test_pause_stops_instances_frees_capacity_and_unpause_resumes_them(
        market: Market, hosts: RecordingHosts) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S)
    fid = bid.instances[0].fid

    market.bids.update(bid.fid, paused=True)
    assert bid.status == BidStatus.PAUSED
    assert instance_statuses(bid) == [InstanceStatus.STOPPING]
    assert bid.price_paid is None and bid.instances[0].price_paid is None
    assert market.auctions.free_capacity(bid.auction) == 8
    market.advance(market.stop_duration_s)
    assert instance_statuses(bid) == [InstanceStatus.PAUSED]
    market.advance(2 * CLEARING_S)
    assert bid.status == BidStatus.PAUSED  # out of the market

    market.bids.update(bid.fid, paused=False)
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S + BOOT_S)
    assert bid.status == BidStatus.ALLOCATED
    assert [i.fid for i in bid.instances] == [fid]
    assert instance_statuses(bid) == [InstanceStatus.RUNNING]
    assert hosts.hooks_for(fid) == ['create', 'pause', 'resume']


def test_cancel_during_boot_stops_the_boot(market: Market,
                                           hosts: RecordingHosts) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + 10)
    market.bids.cancel(bid.fid)
    market.advance(BOOT_S)
    assert instance_statuses(bid) == [InstanceStatus.TERMINATED]
    assert hosts.calls == []


def test_instance_boot_sequence_and_host_creation(clock: ManualClock,
                                                  hosts: RecordingHosts) -> None:
    durations = {InstanceStatus.NEW: 1, InstanceStatus.CONFIRMED: 2,
                 InstanceStatus.INITIALIZING: 4, InstanceStatus.STARTING: 5}
    market = Market(clock, hosts, CATALOG, clearing_interval_s=CLEARING_S,
                    boot_durations_s=durations)
    key, _ = market.ssh_keys.create(PROJECT_FID, 'mine', PUBLIC_KEY)
    bid = place_bid(market, ssh_keys=[key.fid])
    market.advance(CLEARING_S)
    instance = bid.instances[0]
    seen = []
    for seconds in (1, 2, 4, 5):
        seen.append((instance.status, instance.address is not None))
        market.advance(seconds)
    seen.append((instance.status, instance.address is not None))
    assert seen == [(InstanceStatus.NEW, False),
                    (InstanceStatus.CONFIRMED, False),
                    (InstanceStatus.INITIALIZING, False),
                    (InstanceStatus.STARTING, True),
                    (InstanceStatus.RUNNING, True)]
    assert hosts.created_keys[instance.fid] == [PUBLIC_KEY]
    assert instance.name == 'job-0'


def test_default_boot_takes_about_a_minute(market: Market) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S - 1)
    assert instance_statuses(bid) == [InstanceStatus.STARTING]
    market.advance(1)
    assert instance_statuses(bid) == [InstanceStatus.RUNNING]


def test_pause_during_notice_cancels_the_preemption(market: Market,
                                                    hosts: RecordingHosts) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S)
    market.bids.force_preempt(bid.fid)
    market.bids.update(bid.fid, paused=True)
    market.advance(NOTICE_S)
    assert bid.status == BidStatus.PAUSED
    assert instance_statuses(bid) == [InstanceStatus.PAUSED]
    assert hosts.hooks_for(bid.instances[0].fid) == ['create',
                                                     'notify_preemption',
                                                     'pause']


def test_failing_host_backend_marks_instance_error(market: Market,
                                                  hosts: RecordingHosts) -> None:
    hosts.fail_create = True
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S)
    assert instance_statuses(bid) == [InstanceStatus.ERROR]
    assert bid.status == BidStatus.ALLOCATED


def test_single_instance_actions_are_for_reserved_instances_only(
        market: Market) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S)
    spot = bid.instances[0].fid
    with pytest.raises(NotSupported):
        market.instances.set_status([spot], InstanceStatus.PAUSED)
    with pytest.raises(NotSupported):
        market.instances.restart(spot)
    with pytest.raises(NotSupported):
        market.instances.refresh_boot_disk(spot)
    vm = launch_cpu_vm(market)
    with pytest.raises(NotFound):  # unknown before spot, whatever the order
        market.instances.set_status([spot, vm.fid, 'inst_unknown'],
                                    InstanceStatus.PAUSED)
    assert bid.instances[0].status == InstanceStatus.RUNNING


def test_pausing_and_resuming_a_cpu_vm(market: Market,
                                       hosts: RecordingHosts) -> None:
    vm = launch_cpu_vm(market)
    with pytest.raises(InvalidState, match='not ready'):
        market.instances.set_status([vm.fid], InstanceStatus.PAUSED)
    assert market.instances.set_status(
        [vm.fid], InstanceStatus.RUNNING) == {vm.fid: InstanceStatus.NEW}
    market.advance(BOOT_S)
    assert market.instances.set_status(
        [vm.fid], InstanceStatus.PAUSED) == {vm.fid: InstanceStatus.STOPPING}
    with pytest.raises(InvalidState, match='not ready'):
        market.instances.set_status([vm.fid], InstanceStatus.RUNNING)
    market.advance(STOP_S)
    assert vm.status == InstanceStatus.PAUSED
    assert market.instances.set_status(
        [vm.fid], InstanceStatus.PAUSED) == {vm.fid: InstanceStatus.PAUSED}
    assert market.instances.set_status(
        [vm.fid], InstanceStatus.RUNNING) == {vm.fid: InstanceStatus.CONFIRMED}
    market.advance(BOOT_S)
    assert vm.status == InstanceStatus.RUNNING
    assert hosts.hooks_for(vm.fid) == ['create', 'pause', 'resume']
    assert str(vm.price_paid) == '0.20'  # its fixed price, paused or not
    market.cpu_vms.terminate(vm.fid)
    assert market.instances.set_status(
        [vm.fid], InstanceStatus.RUNNING) == {vm.fid: InstanceStatus.TERMINATED}


def test_a_restart_takes_the_vm_down_and_back_while_running(
        market: Market, hosts: RecordingHosts) -> None:
    vm = launch_cpu_vm(market)
    with pytest.raises(InvalidState, match='fully running'):
        market.instances.restart(vm.fid)
    market.advance(BOOT_S)
    assert market.instances.restart(vm.fid) is vm
    assert (vm.status, vm.restarting) == (InstanceStatus.RUNNING, True)
    with pytest.raises(InvalidState, match='restarting'):
        market.instances.restart(vm.fid)
    with pytest.raises(InvalidState, match='not ready'):
        market.instances.set_status([vm.fid], InstanceStatus.PAUSED)
    market.advance(RESTART_DURATION_S)
    assert (vm.status, vm.restarting) == (InstanceStatus.RUNNING, False)
    assert hosts.hooks_for(vm.fid) == ['create', 'pause', 'resume']
    market.instances.restart(vm.fid)
    market.cpu_vms.terminate(vm.fid)
    market.advance(RESTART_DURATION_S)
    assert (vm.status, vm.restarting) == (InstanceStatus.TERMINATED, False)
    assert hosts.hooks_for(vm.fid)[-2:] == ['pause', 'destroy']


def test_a_fresh_boot_disk_for_a_paused_vm(market: Market,
                                           hosts: RecordingHosts) -> None:
    vm = launch_cpu_vm(market)
    market.advance(BOOT_S)
    with pytest.raises(Declined) as declined:
        market.instances.refresh_boot_disk(vm.fid)
    assert declined.value.reason == 'INSTANCE_RUNNING'
    market.instances.set_status([vm.fid], InstanceStatus.PAUSED)
    market.advance(STOP_S)
    with pytest.raises(Declined) as declined:
        market.instances.refresh_boot_disk(vm.fid, IMAGE_VERSION_FID)
    assert declined.value.reason == 'INVALID_IMAGE_VERSION'
    assert market.instances.refresh_boot_disk(
        vm.fid, MCC_IMAGE_VERSION_FID) == MCC_IMAGE_VERSION_FID
    assert vm.address is None
    market.instances.set_status([vm.fid], InstanceStatus.RUNNING)
    market.advance(BOOT_S)
    assert vm.status == InstanceStatus.RUNNING and vm.address is not None
    assert hosts.hooks_for(vm.fid) == ['create', 'pause', 'destroy', 'create']
    market.cpu_vms.terminate(vm.fid)
    with pytest.raises(InvalidState, match='no VM'):
        market.instances.refresh_boot_disk(vm.fid)
