"""Bids: placing one (and what is refused), the user's changes (limit price,
pause, cancel), forced preemption, the bid's history, filler bids. Manual
clock, no sleeping."""

from decimal import Decimal

import pytest

from sky_mithril.emulator.market import (PROJECT_FID, BidEventType, BidStatus,
                                         InstanceStatus, InvalidRequest,
                                         InvalidState, Market, NotFound)

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, NOTICE_S, REGION, TYPE,
                                          RecordingHosts, event_types, instance_statuses,
                                          place_bid, type_fid)


def test_pausing_an_open_bid_takes_it_out_of_the_market(market: Market) -> None:
    bid = place_bid(market)
    market.bids.update(bid.fid, paused=True)
    market.advance(3 * CLEARING_S)
    assert bid.status == BidStatus.PAUSED and bid.instances == []


def test_cancel_terminates_destroys_hosts_and_is_idempotent(
        market: Market, hosts: RecordingHosts) -> None:
    bid = place_bid(market, quantity=2)
    market.advance(CLEARING_S + BOOT_S)
    market.bids.cancel(bid.fid)
    assert bid.status == BidStatus.TERMINATED
    assert bid.deactivated_at == market.now
    assert instance_statuses(bid) == [InstanceStatus.TERMINATED] * 2
    assert market.auctions.free_capacity(bid.auction) == 8
    destroyed = [fid for hook, fid in hosts.calls if hook == 'destroy']
    assert destroyed == [i.fid for i in bid.instances]
    market.bids.cancel(bid.fid)
    assert len([c for c in hosts.calls if c[0] == 'destroy']) == 2
    with pytest.raises(NotFound):
        market.bids.cancel('bid_unknown')


def test_limit_price_changes_take_effect_at_next_clearing(
        market: Market) -> None:
    bid = place_bid(market, limit='$0.50')
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.OPEN
    market.bids.update(bid.fid, limit_price='$1.50')
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.ALLOCATED
    market.bids.update(bid.fid, limit_price='$0.75')
    assert bid.status == BidStatus.ALLOCATED
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.PREEMPTING
    changes = [e for e in bid.events
               if e.event_type == BidEventType.LIMIT_PRICE_CHANGED]
    assert [e.limit_price for e in changes] == [Decimal('1.50'),
                                                Decimal('0.75')]


def test_bid_history_records_each_event(market: Market) -> None:
    bid = place_bid(market, limit='$3.00')
    market.advance(CLEARING_S)
    market.bids.update(bid.fid, limit_price='$3.50')
    market.bids.force_preempt(bid.fid)
    market.advance(NOTICE_S)
    market.bids.update(bid.fid, paused=True)
    market.bids.update(bid.fid, paused=False)
    market.bids.cancel(bid.fid)
    assert event_types(bid) == [
        BidEventType.PLACED, BidEventType.ALLOCATED,
        BidEventType.LIMIT_PRICE_CHANGED, BidEventType.PREEMPTED,
        BidEventType.PAUSED, BidEventType.RESUMED, BidEventType.TERMINATED
    ]
    assert bid.events[0].limit_price == Decimal('3.00')
    times = [e.timestamp for e in bid.events]
    assert times == sorted(times)


def test_bid_names_need_not_be_unique(market: Market) -> None:
    old = place_bid(market, name='same')
    market.bids.cancel(old.fid)
    new = place_bid(market, name='same')
    market.advance(CLEARING_S)
    assert new.status == BidStatus.ALLOCATED
    assert [b.fid for b in market.bids.list(name='same')] == [old.fid, new.fid]


def test_force_preempt_needs_an_allocated_bid(market: Market) -> None:
    bid = place_bid(market)
    with pytest.raises(InvalidState):
        market.bids.force_preempt(bid.fid)
    market.advance(CLEARING_S)
    market.bids.force_preempt(bid.fid)
    assert bid.status == BidStatus.PREEMPTING
    market.advance(NOTICE_S)
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S)  # the price never rose: allocated again
    assert bid.status == BidStatus.ALLOCATED


def test_filler_instances_are_cheap_scenery(market: Market,
                                            hosts: RecordingHosts) -> None:
    market.bids.add_fillers(1000)
    instances = market.instances.list(PROJECT_FID)
    assert len(instances) == 1000
    assert {i.status for i in instances} == {InstanceStatus.RUNNING}
    assert len({i.address.ssh_destination for i in instances if i.address}) == 1000
    assert hosts.calls == []
    auction = market.auctions.get(TYPE, REGION)
    assert market.auctions.free_capacity(auction) == 8
    market.auctions.set_price(TYPE, REGION, '$100.00')
    market.advance(CLEARING_S)
    assert {b.status for b in market.bids.list()} == {BidStatus.ALLOCATED}


def test_create_bid_validation(market: Market) -> None:
    with pytest.raises(InvalidRequest) as info:
        market.bids.create(project='proj_nope',
                           region='nowhere',
                           instance_type=type_fid(market),
                           limit_price='abc',
                           instance_quantity=0,
                           name=' ',
                           ssh_keys=['sshkey_nope'])
    fields = {(e.field, e.index) for e in info.value.errors}
    assert fields == {('project', None), ('region', None),
                      ('instance_quantity', None), ('limit_price', None),
                      ('name', None), ('ssh_keys', 0)}
    for bad_price in ('12.50', '$0.00', '$-1', '$1.234', '$'):
        with pytest.raises(InvalidRequest):
            place_bid(market, limit=bad_price)
    with pytest.raises(InvalidRequest):
        market.bids.create(project=PROJECT_FID,
                           region=REGION,
                           instance_type='it_unknown',
                           limit_price='$1.00',
                           instance_quantity=1,
                           name='x')
    assert market.bids.list() == []


def test_update_of_terminated_bid_is_refused(market: Market) -> None:
    bid = place_bid(market)
    market.bids.cancel(bid.fid)
    with pytest.raises(InvalidRequest):
        market.bids.update(bid.fid, limit_price='$2.00')
    with pytest.raises(NotFound):
        market.bids.update('bid_unknown', paused=True)
