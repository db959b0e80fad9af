"""Auctions and their clearing: priority, all-or-nothing, second price,
capacity, spot prices (fixed, scripted, random walk) and their history, and the
quotes /v2/pricing/current reports. Manual clock, no sleeping."""

import datetime
from decimal import Decimal
from typing import List

from sky_mithril.emulator.clock import DEFAULT_START, ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import BidStatus, Market

from tests.helpers.market_testing import (CATALOG, CLEARING_S, OTHER_REGION,
                                          REGION, TYPE, place_bid, type_fid)


def test_new_bid_waits_for_next_clearing_then_pays_spot_not_limit(
        market: Market) -> None:
    market.advance(CLEARING_S / 2)
    bid = place_bid(market, limit='$5.00')
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S / 2 - 1)
    assert bid.status == BidStatus.OPEN
    market.advance(1)
    assert bid.status == BidStatus.ALLOCATED
    assert bid.price_paid == Decimal('1.00')
    assert [i.price_paid for i in bid.instances] == [Decimal('1.00')]
    assert market.auctions.free_capacity(bid.auction) == 7


def test_bid_below_spot_price_stays_open(market: Market) -> None:
    bid = place_bid(market, limit='$0.99')
    market.advance(3 * CLEARING_S)
    assert bid.status == BidStatus.OPEN
    assert bid.instances == []


def test_bid_waits_while_capacity_is_taken(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 1)
    first = place_bid(market, name='first')
    second = place_bid(market, name='second')
    market.advance(CLEARING_S)
    assert (first.status, second.status) == (BidStatus.ALLOCATED,
                                             BidStatus.OPEN)
    market.bids.cancel(first.fid)
    market.advance(CLEARING_S)
    assert second.status == BidStatus.ALLOCATED


def test_higher_limit_is_served_first(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 1)
    low = place_bid(market, limit='$2.00', name='low')
    high = place_bid(market, limit='$3.00', name='high')
    market.advance(CLEARING_S)
    assert (low.status, high.status) == (BidStatus.OPEN, BidStatus.ALLOCATED)


def test_equal_limits_are_served_in_submission_order(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 1)
    earlier = place_bid(market, limit='$2.00', name='earlier')
    market.advance(1)
    later = place_bid(market, limit='$2.00', name='later')
    market.advance(CLEARING_S)
    assert (earlier.status, later.status) == (BidStatus.ALLOCATED,
                                              BidStatus.OPEN)


def test_all_or_nothing_lets_a_smaller_lower_bid_fit(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 4)
    big = place_bid(market, limit='$9.00', quantity=6, name='big')
    small = place_bid(market, limit='$2.00', quantity=3, name='small')
    market.advance(CLEARING_S)
    assert big.status == BidStatus.OPEN and big.instances == []
    assert small.status == BidStatus.ALLOCATED
    assert len(small.instances) == 3
    assert market.auctions.free_capacity(small.auction) == 1


def test_second_price_is_highest_losing_limit(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 2)
    winner = place_bid(market, limit='$9.00', quantity=2, name='winner')
    loser = place_bid(market, limit='$4.00', quantity=1, name='loser')
    market.advance(CLEARING_S)
    assert (winner.status, loser.status) == (BidStatus.ALLOCATED,
                                             BidStatus.OPEN)
    assert winner.price_paid == Decimal('4.00')
    assert winner.auction.last_instance_price == Decimal('4.00')


def test_second_price_never_exceeds_the_winners_limit(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 2)
    too_big = place_bid(market, limit='$9.00', quantity=3, name='too-big')
    fits = place_bid(market, limit='$3.00', quantity=2, name='fits')
    market.advance(CLEARING_S)
    assert too_big.status == BidStatus.OPEN
    assert fits.price_paid == Decimal('3.00')


def test_capacity_never_goes_negative(market: Market) -> None:
    bid = place_bid(market, quantity=4)
    market.advance(CLEARING_S)
    market.auctions.set_capacity(TYPE, REGION, 2)
    assert market.auctions.free_capacity(bid.auction) == 0
    small = place_bid(market, name='small')
    market.advance(CLEARING_S)
    assert small.status == BidStatus.OPEN
    market.bids.cancel(bid.fid)
    assert market.auctions.free_capacity(bid.auction) == 2


def test_price_history_samples_each_clearing(market: Market) -> None:
    market.auctions.set_price(TYPE, REGION, '$1.50')
    market.advance(3 * CLEARING_S)
    (auction, points), = market.auctions.price_history([TYPE], REGION)
    assert auction.region == REGION
    assert [t for t, _ in points] == [
        DEFAULT_START + datetime.timedelta(seconds=CLEARING_S * k)
        for k in (1, 2, 3)
    ]
    assert {p for _, p in points} == {Decimal('1.50')}
    assert len(
        market.auctions.price_history([TYPE], REGION, num_samples=2)[0][1]) == 2


def test_price_history_complete_and_of_unknown_types(market: Market) -> None:
    for price in ('$1.10', '$1.20', '$1.30'):
        market.auctions.set_price(TYPE, REGION, price)
        market.advance(CLEARING_S)
    (_, points), = market.auctions.price_history([TYPE], REGION,
                                                 num_samples=None)
    assert [p for _, p in points] == [Decimal('1.10'), Decimal('1.20'),
                                      Decimal('1.30')]
    # Mithril's SDK asks for every type it has a fid for; one the market does
    # not know has no series, and refuses nothing.
    (auction, _), = market.auctions.price_history(
        ['it_NotInThisMarket00', type_fid(market)], REGION)
    assert auction.instance_type.name == TYPE
    assert market.auctions.price_history(['it_NotInThisMarket00']) == []


def test_script_history_preloads_samples(market: Market) -> None:
    past = [(DEFAULT_START - datetime.timedelta(hours=h), f'${h}.25')
            for h in (3, 2, 1)]
    market.auctions.script_history(TYPE, REGION, past)
    market.advance(CLEARING_S)
    (_, points), = market.auctions.price_history([TYPE],
                                                 REGION,
                                                 end=DEFAULT_START -
                                                 datetime.timedelta(minutes=30))
    assert [price for _, price in points] == [Decimal('3.25'), Decimal('2.25'),
                                              Decimal('1.25')]


def test_scripted_prices_apply_at_clearings(market: Market) -> None:
    bid = place_bid(market, limit='$3.00')
    start = market.now
    market.auctions.script_prices(TYPE, REGION, [
        (start + datetime.timedelta(seconds=130), '$5.00'),
        (start + datetime.timedelta(seconds=250), '$2.00'),
    ])
    market.advance(CLEARING_S)
    assert market.auctions.get(TYPE, REGION).spot_price == Decimal('1.00')
    assert bid.status == BidStatus.ALLOCATED
    market.advance(CLEARING_S)
    assert market.auctions.get(TYPE, REGION).spot_price == Decimal('5.00')
    assert bid.status == BidStatus.PREEMPTING
    market.advance(CLEARING_S)
    assert market.auctions.get(TYPE, REGION).spot_price == Decimal('2.00')


def test_random_walk_is_seeded_and_floored() -> None:

    def walk(seed: int) -> List[Decimal]:
        market = Market(ManualClock(), PlaceholderHosts(), CATALOG, seed=seed)
        market.auctions.start_random_walk(TYPE, REGION, volatility=0.5)
        market.advance(20 * CLEARING_S)
        return [
            p for _, p in market.auctions.price_history([TYPE], REGION)[0][1]
        ]

    assert walk(1) == walk(1)
    assert walk(1) != walk(2)
    assert min(walk(1)) >= Decimal('0.50')
    assert len(set(walk(1))) > 1


def test_current_prices_and_win_price(market: Market) -> None:
    market.auctions.set_capacity(TYPE, REGION, 2)
    place_bid(market, limit='$4.00', quantity=1, name='holder')
    market.advance(CLEARING_S)
    place_bid(market, limit='$3.00', quantity=1, name='waiting-a')
    place_bid(market, limit='$2.00', quantity=1, name='waiting-b')
    quote = market.auctions.current_prices(type_fid(market), REGION)
    assert quote.spot_price == Decimal('1.00')
    assert quote.minimum_price == Decimal('0.50')
    assert quote.lowest_allocated_limit == Decimal('4.00')
    assert (quote.free_capacity, quote.capacity) == (1, 2)
    assert quote.win_price == Decimal('3.01')
    assert market.auctions.current_prices(type_fid(market), REGION,
                                          2).win_price is None
    cheapest = market.auctions.current_prices(type_fid(market))
    assert cheapest.spot_price == Decimal('1.00')  # region-a beats region-b


def test_regions_are_listed_once_in_catalog_order(market: Market) -> None:
    assert market.auctions.regions() == [REGION, OTHER_REGION]
