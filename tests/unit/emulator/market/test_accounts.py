"""Accounts: the one project and user every request acts as, and the quotas
(spot instances per instance type, volume storage)."""

import pytest

from sky_mithril.emulator.market import PROJECT_FID, BidStatus, Market, NotFound

from tests.helpers.market_testing import CLEARING_S, TYPE, place_bid, type_fid


def test_quotas_count_spot_capacity_per_type_and_what_the_project_holds(
        market: Market) -> None:
    held = place_bid(market, quantity=3, name='held')
    waiting = place_bid(market, limit='$0.60', quantity=2, name='waiting')
    market.advance(CLEARING_S)
    assert (held.status, waiting.status) == (BidStatus.ALLOCATED,
                                             BidStatus.OPEN)
    spot, storage = market.accounts.quotas(PROJECT_FID)
    assert (spot.product_type, spot.name, spot.units) == ('spot', TYPE,
                                                          'instances')
    assert spot.instance_type is not None
    assert spot.instance_type.fid == type_fid(market)
    # 8 in each of the two regions; only allocated instances count as used.
    assert (spot.total_quantity, spot.used_quantity) == (16, 3)
    assert (storage.product_type, storage.units, storage.total_quantity,
            storage.used_quantity) == ('storage', 'GB', 20000, 0)
    market.bids.cancel(held.fid)
    assert market.accounts.quotas(PROJECT_FID)[0].used_quantity == 0
    with pytest.raises(NotFound):
        market.accounts.quotas('proj_other')


def test_requests_act_as_the_one_project_and_user(market: Market) -> None:
    bid = place_bid(market)
    assert bid.project == market.accounts.project.fid == PROJECT_FID
    assert bid.created_by == market.accounts.user.fid
    assert bid.events[0].user_id == market.accounts.user.fid
