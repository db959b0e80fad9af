"""The market under test: `market` over `hosts` (recording every hook) on a
ManualClock (`clock`), with `market_testing`'s catalog."""

import pytest

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.market import Market

from tests.helpers.market_testing import CATALOG, CLEARING_S, NOTICE_S, RecordingHosts


@pytest.fixture(name='clock')
def fixture_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(name='hosts')
def fixture_hosts() -> RecordingHosts:
    return RecordingHosts()


@pytest.fixture(name='market')
def fixture_market(clock: ManualClock, hosts: RecordingHosts) -> Market:
    return Market(clock, hosts, CATALOG, capacity=8,
                  clearing_interval_s=CLEARING_S,
                  preemption_notice_s=NOTICE_S)
