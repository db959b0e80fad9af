"""Reservations, one rule a test, as a user would notice it: the window's
whole hours, Pending -> Active -> Ended, the price charged in full at
creation, the pause and return credits, the capacity taken from (and lent
to) the spot auction, a spot bid preempted by a resume, the launch
specification fixed at creation, real hosts, extensions, quotes and
availability. Manual clock, no sleeping."""

import datetime
from decimal import Decimal
from typing import Any, Dict

import pytest

from sky_mithril.emulator.market import (PROJECT_FID, BidStatus,
                                         InstanceStatus, InvalidRequest,
                                         InvalidState, Market,
                                         ReservationEventType,
                                         ReservationStatus)

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, NOTICE_S,
                                          PUBLIC_KEY, REGION, TYPE,
                                          RecordingHosts, instance_statuses,
                                          place_bid, reserve, type_fid)

HOUR_S = 3600.0
STOP_S = 10.0  # the market's default stop_duration_s
# With nothing reserved yet: the spot price, $1.00, plus a quarter.
UNIT_PRICE = Decimal('1.25')
PAUSE_CREDIT = Decimal('0.50')
RETURN_CREDIT = Decimal('0.75')


def _hours(hours: float) -> datetime.timedelta:
    return datetime.timedelta(hours=hours)


def _free_for_spot(market: Market) -> int:
    return market.auctions.free_capacity(market.auctions.get(TYPE, REGION))


def test_a_window_lasts_whole_hours_from_3_to_336(market: Market) -> None:
    for hours in (2, 3.5, 337):
        start = market.now + _hours(1)
        with pytest.raises(InvalidRequest) as refused:
            market.reservations.create(
                project=PROJECT_FID, instance_type=type_fid(market),
                region=REGION, start_time=start,
                end_time=start + _hours(hours), instance_quantity=1,
                name='odd')
        assert [e.field for e in refused.value.errors] == ['end_time']
    assert reserve(market, hours=3).end_time - market.now == _hours(3)
    assert reserve(market, hours=336).end_time - market.now == _hours(336)


def test_pending_until_its_start_active_then_ended_at_its_end(
        market: Market, hosts: RecordingHosts) -> None:
    reservation = reserve(market, start_in_s=HOUR_S, hours=3, quantity=2)
    assert (reservation.status, reservation.instances) == (
        ReservationStatus.PENDING, [])
    market.advance(HOUR_S)
    assert reservation.status == ReservationStatus.ACTIVE
    assert [i.name for i in reservation.instances] == ['reserved-0',
                                                       'reserved-1']
    market.advance(BOOT_S)
    assert instance_statuses(reservation) == [InstanceStatus.RUNNING] * 2
    market.advance(3 * HOUR_S - BOOT_S - 1)
    assert reservation.status == ReservationStatus.ACTIVE
    market.advance(1)
    assert reservation.status == ReservationStatus.ENDED
    assert reservation.deactivated_at == reservation.end_time
    assert instance_statuses(reservation) == [InstanceStatus.TERMINATED] * 2
    assert all(hosts.hooks_for(i.fid)[-1] == 'destroy'
               for i in reservation.instances)
    assert [e.event_type for e in reservation.events] == [
        ReservationEventType.PLACED, ReservationEventType.TERMS_SET,
        ReservationEventType.ACTIVE, ReservationEventType.ENDED]


def test_one_starting_now_is_active_at_once(market: Market) -> None:
    reservation = reserve(market)
    assert reservation.status == ReservationStatus.ACTIVE
    assert instance_statuses(reservation) == [InstanceStatus.NEW]


def test_the_unit_price_is_charged_in_full_at_creation(
        market: Market) -> None:
    reservation = reserve(market, start_in_s=HOUR_S, hours=4, quantity=2)
    assert reservation.terms.unit_price == UNIT_PRICE
    assert reservation.charged == UNIT_PRICE * 2 * 4
    usage = market.reservations.usage(reservation.fid)
    assert (usage.charged, usage.net_cost, usage.reserved) == (
        Decimal('10.00'), Decimal('10.00'), _hours(8))


def test_max_unit_price_refuses_a_quote_that_moved(market: Market) -> None:
    with pytest.raises(InvalidRequest) as refused:
        reserve(market, max_unit_price=124)
    assert [e.field for e in refused.value.errors] == ['max_unit_price']
    assert market.reservations.list(PROJECT_FID) == []
    assert reserve(market, max_unit_price=125).terms.unit_price == UNIT_PRICE


def test_pause_credit_only_for_instances_paused_an_hour_or_more(
        market: Market) -> None:
    reservation = reserve(market, hours=6, quantity=2)
    market.advance(BOOT_S)
    short, long = reservation.instances
    market.instances.set_status([short.fid, long.fid], InstanceStatus.PAUSED)
    market.advance(HOUR_S - 60)
    market.instances.set_status([short.fid], InstanceStatus.RUNNING)
    assert market.reservations.pause_credit(reservation) == 0
    market.advance(HOUR_S + 60)
    # Two hours paused: credited for both, to the second.
    assert market.reservations.pause_credit(reservation) == PAUSE_CREDIT * 2
    usage = market.reservations.usage(reservation.fid)
    assert usage.pause_credit == Decimal('1.00')
    assert usage.idle == _hours(3) - datetime.timedelta(seconds=60)


def test_returning_credits_rate_times_instances_times_hours_left_and_deletes(
        market: Market, hosts: RecordingHosts) -> None:
    reservation = reserve(market, hours=5, quantity=3)
    market.advance(BOOT_S)
    market.advance(HOUR_S - BOOT_S)
    gone = reservation.instances[:2]
    returned, kept = market.reservations.return_instances(
        reservation.fid, [i.fid for i in gone])
    assert (returned, kept) == (gone, [])
    assert reservation.return_credit == RETURN_CREDIT * 2 * 4
    assert market.reservations.usage(reservation.fid).net_cost == (
        UNIT_PRICE * 3 * 5 - RETURN_CREDIT * 2 * 4)
    assert reservation.instance_quantity == 1
    assert reservation.instances == reservation.all_instances[:1]
    assert all(hosts.hooks_for(i.fid)[-1] == 'destroy' for i in gone)
    assert market.instances.set_status(
        [gone[0].fid], InstanceStatus.RUNNING) == {
            gone[0].fid: InstanceStatus.TERMINATED}


def test_a_restarting_instance_is_not_returned(market: Market) -> None:
    reservation = reserve(market, quantity=2)
    market.advance(BOOT_S)
    busy, idle = reservation.instances
    market.instances.restart(busy.fid)
    returned, kept = market.reservations.return_instances(
        reservation.fid, [busy.fid, idle.fid])
    assert (returned, kept) == ([idle], [busy])
    assert reservation.instances == [busy]


def test_nothing_is_returned_once_it_has_ended(market: Market) -> None:
    reservation = reserve(market, hours=3)
    market.advance(3 * HOUR_S)
    with pytest.raises(InvalidState):
        market.reservations.return_instances(
            reservation.fid, [reservation.instances[0].fid])


def test_reserved_capacity_leaves_the_spot_auction_for_its_window(
        market: Market) -> None:
    reservation = reserve(market, start_in_s=HOUR_S, hours=3, quantity=3)
    assert _free_for_spot(market) == 8
    # Taken one notice ahead, so the spot bids it displaces get their notice.
    market.advance(HOUR_S - NOTICE_S)
    assert _free_for_spot(market) == 5
    market.advance(NOTICE_S + 3 * HOUR_S - 1)
    assert _free_for_spot(market) == 5
    market.advance(1)
    assert reservation.status == ReservationStatus.ENDED
    assert _free_for_spot(market) == 8


def test_a_starting_reservation_preempts_spot_bids_with_notice(
        market: Market) -> None:
    early, late = place_bid(market, '$5.00', 4), place_bid(market, '$5.00', 4)
    market.advance(CLEARING_S)
    reservation = reserve(market, start_in_s=HOUR_S, quantity=2)
    market.advance(HOUR_S - NOTICE_S)
    assert (early.status, late.status) == (BidStatus.ALLOCATED,
                                           BidStatus.PREEMPTING)
    market.advance(NOTICE_S)
    assert late.status == BidStatus.OPEN
    market.advance(BOOT_S)
    assert instance_statuses(reservation) == [InstanceStatus.RUNNING] * 2


def test_a_paused_instance_lends_its_capacity_to_spot(market: Market) -> None:
    reservation = reserve(market, quantity=8)
    market.advance(BOOT_S)
    bid = place_bid(market, '$5.00', 1)
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.OPEN
    market.instances.set_status([reservation.instances[0].fid],
                                InstanceStatus.PAUSED)
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.ALLOCATED


def test_resuming_preempts_a_spot_bid_with_notice_and_takes_minutes(
        market: Market, hosts: RecordingHosts) -> None:
    reservation = reserve(market, quantity=8)
    market.advance(BOOT_S)
    instance = reservation.instances[0]
    market.instances.set_status([instance.fid], InstanceStatus.PAUSED)
    bid = place_bid(market, '$5.00', 1)
    market.advance(CLEARING_S + BOOT_S)
    assert instance_statuses(bid) == [InstanceStatus.RUNNING]

    statuses = market.instances.set_status([instance.fid],
                                           InstanceStatus.RUNNING)
    assert statuses == {instance.fid: InstanceStatus.CONFIRMED}
    assert bid.status == BidStatus.PREEMPTING
    market.advance(NOTICE_S)
    assert bid.status == BidStatus.OPEN
    assert instance.status == InstanceStatus.CONFIRMED
    market.advance(BOOT_S)
    assert instance.status == InstanceStatus.RUNNING
    spot_instance = bid.instances[0].fid
    assert hosts.calls.index(('preempt', spot_instance)) < hosts.calls.index(
        ('resume', instance.fid))


def test_resuming_with_capacity_to_spare_boots_at_once(
        market: Market) -> None:
    reservation = reserve(market)
    market.advance(BOOT_S)
    instance = reservation.instances[0]
    market.instances.set_status([instance.fid], InstanceStatus.PAUSED)
    market.advance(STOP_S)
    market.instances.set_status([instance.fid], InstanceStatus.RUNNING)
    market.advance(BOOT_S - 5)  # from STATUS_CONFIRMED
    assert instance.status == InstanceStatus.RUNNING


def test_pausing_the_reservation_pauses_every_instance(market: Market) -> None:
    reservation = reserve(market, quantity=2)
    with pytest.raises(InvalidRequest):
        market.reservations.update(
            reserve(market, start_in_s=HOUR_S, name='later').fid, paused=True)
    market.advance(BOOT_S)
    market.reservations.update(reservation.fid, paused=True)
    market.advance(STOP_S)
    assert reservation.status == ReservationStatus.PAUSED
    assert instance_statuses(reservation) == [InstanceStatus.PAUSED] * 2
    assert _free_for_spot(market) == 8  # lent; the other one starts later
    market.reservations.update(reservation.fid, paused=False)
    market.advance(BOOT_S)
    assert reservation.status == ReservationStatus.ACTIVE
    assert instance_statuses(reservation) == [InstanceStatus.RUNNING] * 2


def test_the_launch_specification_is_fixed_at_creation(
        market: Market, hosts: RecordingHosts) -> None:
    key, _ = market.ssh_keys.create(PROJECT_FID, 'sky', PUBLIC_KEY)
    reservation = reserve(market, ssh_keys=[key.fid])
    market.advance(BOOT_S)
    assert hosts.created_keys[reservation.instances[0].fid] == [PUBLIC_KEY]
    with pytest.raises(InvalidState):
        market.ssh_keys.delete(key.fid)
    volume = market.volumes.create(project=PROJECT_FID, name='data',
                                   interface='File', region=REGION,
                                   size_gb=10)
    market.reservations.update(reservation.fid, volumes=[volume.fid])
    assert reservation.launch_specification.ssh_keys == [key.fid]
    assert market.volumes.reservations_listing(volume) == [reservation]
    with pytest.raises(InvalidState):
        market.volumes.delete(volume.fid)


def test_reserved_instances_are_real_hosts(market: Market,
                                           hosts: RecordingHosts) -> None:
    reservation = reserve(market, hours=3)
    market.advance(BOOT_S)
    instance = reservation.instances[0]
    market.instances.set_status([instance.fid], InstanceStatus.PAUSED)
    market.advance(STOP_S)
    market.instances.set_status([instance.fid], InstanceStatus.RUNNING)
    market.advance(3 * HOUR_S)
    assert hosts.hooks_for(instance.fid) == ['create', 'pause', 'resume',
                                             'destroy']
    assert instance.address is not None


def test_extending_charges_the_added_hours_until_capacity_runs_out(
        market: Market) -> None:
    reservation = reserve(market, hours=3, quantity=4)
    reserve(market, start_in_s=5 * HOUR_S, hours=3, quantity=6, name='next')
    latest, available = market.reservations.extension_availability(
        reservation.fid)
    assert (latest - market.now, available) == (_hours(5), True)
    with pytest.raises(InvalidRequest):
        market.reservations.extend(reservation.fid, market.now + _hours(6))
    market.reservations.extend(reservation.fid, market.now + _hours(5))
    assert reservation.charged == UNIT_PRICE * 4 * 5
    assert [e.event_type for e in reservation.events][-1] == (
        ReservationEventType.TERMS_CHANGED)
    market.advance(3 * HOUR_S)
    assert reservation.status == ReservationStatus.ACTIVE
    market.advance(2 * HOUR_S)
    assert reservation.status == ReservationStatus.ENDED


def test_a_quote_prices_the_window_and_has_no_offer_when_full(
        market: Market) -> None:
    start = market.now + _hours(1)
    window: Dict[str, Any] = dict(
        project=PROJECT_FID, instance_type=type_fid(market), region=REGION,
        start_time=start, end_time=start + _hours(3))
    [offer] = market.reservations.quote(**window, quantity=2)
    assert (offer.key, offer.terms.unit_price, offer.terms.pause_credit,
            offer.terms.return_credit, offer.instance_hours) == (
                'standard', UNIT_PRICE, PAUSE_CREDIT, RETURN_CREDIT, 6)
    reserve(market, start_in_s=HOUR_S, quantity=4)
    # Half the capacity reserved: the price rises by half.
    [offer] = market.reservations.quote(**window, quantity=2)
    assert offer.terms.unit_price == Decimal('1.88')
    assert market.reservations.quote(**window, quantity=5) == []


def test_availability_in_its_three_modes(market: Market) -> None:
    reserve(market, start_in_s=4 * HOUR_S, hours=3, quantity=6)
    where = dict(project=PROJECT_FID, instance_type=type_fid(market),
                 region=REGION)
    now = market.now
    latest, available = market.reservations.latest_end_time(
        **where, start_time=now, quantity=4)
    assert (latest - now, available) == (_hours(4), True)
    assert market.reservations.check(**where, start_time=now,
                                     end_time=now + _hours(5),
                                     quantity=2) is True
    assert market.reservations.check(**where, start_time=now,
                                     end_time=now + _hours(5),
                                     quantity=3) is False
    slots = market.reservations.slots(**where, earliest_start_time=now,
                                      latest_end_time=now + _hours(10),
                                      quantity=2)
    assert [(s.start - now, s.end - now, s.quantity) for s in slots] == [
        (_hours(0), _hours(4), 8), (_hours(4), _hours(7), 2),
        (_hours(7), _hours(10), 8)]
