"""The composed market: reproducible per seed, and its state as plain data."""

from typing import Any, Dict, Tuple

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market

from tests.helpers.market_testing import CATALOG, CLEARING_S, OTHER_REGION, REGION, place_bid


def test_fids_are_deterministic_per_seed() -> None:

    def fids(seed: int) -> Tuple[str, ...]:
        market = Market(ManualClock(), PlaceholderHosts(), CATALOG, seed=seed)
        bid = place_bid(market)
        market.advance(CLEARING_S)
        return (bid.fid, bid.instances[0].fid)

    assert fids(7) == fids(7)
    assert fids(7) != fids(8)


def test_dump_state_is_plain_data(market: Market) -> None:
    bid = place_bid(market, quantity=2)
    market.advance(CLEARING_S)
    state: Dict[str, Any] = market.dump_state()
    dumped, = state['bids']
    assert dumped['fid'] == bid.fid
    assert dumped['status'] == 'Allocated'
    assert dumped['price_paid'] == '$1.00'
    assert [i['status'] for i in dumped['instances']] == ['STATUS_NEW'] * 2
    assert {a['region'] for a in state['auctions']} == {REGION, OTHER_REGION}
