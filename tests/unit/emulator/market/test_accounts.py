"""Accounts: the one project and user every request acts as, the user's
teammates, and the quotas (spot instances per instance type, volume storage,
the organization's storage per region)."""

import pytest

from sky_mithril.emulator.market import (ORGANIZATION_ID, PROJECT_FID, BidStatus,
                                         Market, NotFound)

from tests.helpers.market_testing import (CLEARING_S, OTHER_REGION, REGION, TYPE,
                                          place_bid, type_fid)


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


def test_the_user_is_its_own_only_teammate(market: Market) -> None:
    assert market.accounts.teammates() == [market.accounts.user]
    assert market.accounts.user.organization_id == ORGANIZATION_ID


def test_organization_storage_quota_per_region_spans_regions(
        market: Market) -> None:
    market.volumes.create(project=PROJECT_FID, name='a', interface='File',
                          region=REGION, size_gb=300)
    market.volumes.create(project=PROJECT_FID, name='b', interface='Block',
                          region=OTHER_REGION, size_gb=200)
    here, there = market.accounts.organization_storage_quotas(ORGANIZATION_ID)
    assert (here.region, there.region) == (REGION, OTHER_REGION)
    assert (here.granted, here.used, here.remaining) == (20000, 300, 19500)
    assert (there.granted, there.used, there.remaining) == (20000, 200, 19500)
    assert here.used_by_project == {market.accounts.project.id: 300}
    assert here.region_id != there.region_id
    again, _ = market.accounts.organization_storage_quotas(ORGANIZATION_ID)
    assert again.region_id == here.region_id
    with pytest.raises(NotFound):
        market.accounts.organization_storage_quotas(
            '00000000-0000-4000-8000-00000000ffff')
