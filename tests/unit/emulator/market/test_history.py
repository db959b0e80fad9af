"""Instances' history (`market.history`): the statuses they went through and
what they were charged, when, through allocation, preemption, pause, resume
and cancellation; the queries' filters and window. Manual clock."""

import datetime
from decimal import Decimal
from typing import Any, List, Optional, Tuple

import pytest

from sky_mithril.emulator.clock import DEFAULT_START
from sky_mithril.emulator.market import (PROJECT_FID, InstanceStatus, Market,
                                         NotFound)

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, NOTICE_S, REGION,
                                          TYPE, place_bid)


def _at(seconds: float) -> datetime.datetime:
    """`seconds` after the market's clock started."""
    return DEFAULT_START + datetime.timedelta(seconds=seconds)


def _charges(market: Market, **kwargs: Any
             ) -> List[Tuple[str, List[Tuple[Decimal, datetime.datetime,
                                            Optional[datetime.datetime]]]]]:
    """(instance fid, [(price, start, end)]) per instance `charges` answers."""
    return [(instance.fid, [(c.price, c.start, c.end) for c in charges])
            for instance, charges in market.history.charges(PROJECT_FID,
                                                            **kwargs)]


def test_an_allocation_is_one_charge_until_the_notice_ends(
        market: Market) -> None:
    bid = place_bid(market, limit='$3.00')
    market.advance(CLEARING_S + BOOT_S)
    fid = bid.instances[0].fid
    allocated = _at(CLEARING_S)
    assert _charges(market) == [(fid, [(Decimal('1.00'), allocated, None)])]

    market.auctions.set_price(TYPE, REGION, '$4.00')
    market.advance(CLEARING_S - BOOT_S)  # the next clearing: the notice
    preempted = market.now
    market.advance(NOTICE_S)
    # Billed through the notice, at the price the allocation cleared at.
    assert _charges(market) == [
        (fid, [(Decimal('1.00'), allocated,
                preempted + datetime.timedelta(seconds=NOTICE_S))])]

    market.auctions.set_price(TYPE, REGION, '$2.00')
    market.advance(CLEARING_S)  # the notice ended after 4 clearings: the 5th
    (_, charges), = _charges(market)
    assert charges[1:] == [(Decimal('2.00'), _at(5 * CLEARING_S), None)]


def test_pause_ends_the_charge_and_a_resume_starts_another(
        market: Market) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S)
    market.bids.update(bid.fid, paused=True)
    paused = market.now
    market.advance(CLEARING_S)
    market.bids.update(bid.fid, paused=False)
    market.advance(CLEARING_S)  # won again at the third clearing
    market.bids.cancel(bid.fid)
    (_, charges), = _charges(market)
    assert [(c[1], c[2]) for c in charges] == [
        (_at(CLEARING_S), paused), (_at(3 * CLEARING_S), market.now)]


def test_statuses_are_each_change_once_in_order(market: Market) -> None:
    bid = place_bid(market)
    market.advance(CLEARING_S + BOOT_S + 1)
    market.bids.cancel(bid.fid)
    (instance, changes), = market.history.statuses(PROJECT_FID)
    assert instance is bid.instances[0]
    assert [c.status for c in changes] == [
        InstanceStatus.NEW, InstanceStatus.CONFIRMED,
        InstanceStatus.INITIALIZING, InstanceStatus.STARTING,
        InstanceStatus.RUNNING, InstanceStatus.TERMINATED]
    assert changes[0].timestamp == _at(CLEARING_S)
    assert changes[-1].timestamp == market.now


def test_queries_by_bid_instance_and_window(market: Market) -> None:
    first = place_bid(market, name='first')
    market.advance(CLEARING_S + BOOT_S + 1)
    market.bids.cancel(first.fid)
    first_ended = market.now
    second = place_bid(market, name='second', quantity=2)
    market.advance(CLEARING_S + BOOT_S)

    assert [fid for fid, _ in _charges(market, bid_fid=second.fid)] == [
        i.fid for i in second.instances]
    one = second.instances[1].fid
    assert [fid for fid, _ in _charges(market, instance_fid=one)] == [one]
    # A window after the first bid ended leaves it out; one that ends at
    # its end still overlaps it.
    later = first_ended + datetime.timedelta(seconds=1)
    assert [fid for fid, _ in _charges(market, start=later)] == [
        i.fid for i in second.instances]
    assert [fid for fid, _ in _charges(market, end=first_ended)] == [
        first.instances[0].fid]
    statuses = market.history.statuses(PROJECT_FID, bid_fid=first.fid,
                                       start=first_ended)
    assert [[c.status for c in changes] for _, changes in statuses] == [
        [InstanceStatus.TERMINATED]]


def test_unknown_fids_and_projects_are_not_found(market: Market) -> None:
    with pytest.raises(NotFound):
        market.history.charges(PROJECT_FID, bid_fid='bid_nope')
    with pytest.raises(NotFound):
        market.history.statuses(PROJECT_FID, instance_fid='inst_nope')
    with pytest.raises(NotFound):
        market.history.charges('proj_other')


def test_filler_instances_run_and_bill_from_their_placement(
        market: Market) -> None:
    filler, = market.bids.add_fillers(1)
    (fid, charges), = _charges(market, bid_fid=filler.fid)
    assert charges == [(filler.price_paid, market.now, None)]
    (_, changes), = market.history.statuses(PROJECT_FID, instance_fid=fid)
    assert [c.status for c in changes] == [InstanceStatus.NEW,
                                           InstanceStatus.RUNNING]
