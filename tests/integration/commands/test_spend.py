"""`sky-mithril spend` against the emulator, its market clock driven by the
test (no sleeping): per bid the instance-hours and the clearing prices
charged, from the pricing history; totals; a window of days; the live worst
case against the user's `max_hourly_spend`."""

import datetime
import json
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
from sky import skypilot_config
from sky.utils import config_utils

from sky_mithril.account import charges as charges_lib
from sky_mithril.account import connection
from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import PROJECT_FID, Bid, Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

from tests.helpers.commands import REGION, TYPE
from tests.helpers.provisioning import point_plugin_at

CLEARING_S = 120.0
NOTICE_S = 300.0
HOUR = 3600.0


@pytest.fixture(name='market')
def fixture_market() -> Market:
    """A market whose clock starts two days ago (to the minute), so what it
    bills lies in the past of `spend`'s window."""
    start = (datetime.datetime.now(datetime.timezone.utc) -
             datetime.timedelta(days=2)).replace(second=0, microsecond=0)
    market = Market(ManualClock(start), PlaceholderHosts(), load_catalog(),
                    clearing_interval_s=CLEARING_S,
                    preemption_notice_s=NOTICE_S)
    market.auctions.set_price(TYPE, REGION, '$1.00')
    return market


@pytest.fixture(name='server')
def fixture_server(market: Market, home: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    del home  # A private HOME: no SkyPilot clusters, no user config.
    with EmulatorServer(market) as server:
        point_plugin_at(server, monkeypatch, tmp_path / 'config')
        yield server


def place(market: Market, name: str, limit: str, quantity: int = 1) -> Bid:
    fid = market.auctions.get(TYPE, REGION).instance_type.fid
    return market.bids.create(project=PROJECT_FID, region=REGION,
                             instance_type=fid, limit_price=limit,
                             instance_quantity=quantity, name=name)


def test_spend_per_bid_through_a_preemption_and_a_new_price(
        market, server, run):
    """`train` (2 instances) wins at $1.00 for an hour, is preempted (billed
    through its 5-minute notice), wins again at $2.00 for half an hour and
    is cancelled: 2 × (1 h 5 min at $1.00 + 30 min at $2.00)."""
    del server
    train = place(market, 'train', '$3.00', quantity=2)
    market.advance(CLEARING_S)  # allocated at the first clearing, $1.00
    market.advance(HOUR - CLEARING_S)
    market.auctions.set_price(TYPE, REGION, '$4.00')
    market.advance(CLEARING_S)  # the clearing at 62 min starts the notice
    market.advance(NOTICE_S)  # it ends at 67 min
    market.auctions.set_price(TYPE, REGION, '$2.00')
    market.advance(60)  # the clearing at 68 min: won again, at $2.00
    market.advance(HOUR / 2)
    market.bids.cancel(train.fid)
    waiting = place(market, 'waiting', '$0.50', quantity=3)  # never wins

    result = run('spend', '--json')
    assert result.code == 0, result.err
    report = json.loads(result.out)
    spent = {b['name']: b for b in report['bids']}
    assert set(spent) == {'train', 'waiting'}
    # 65 min at $1.00 (2 to 67 min), then 30 min at $2.00 (68 to 98 min).
    assert spent['train']['instance_hours'] == pytest.approx(2 * 95 / 60, abs=1e-4)
    assert spent['train']['cost'] == '$4.17'  # 2 × (65/60 × 1 + 0.5 × 2)
    assert sorted((c['price'], c['hours']) for c in spent['train']['charges']
                  ) == [('$1.00', pytest.approx(65 / 60, abs=1e-4))] * 2 + [
                      ('$2.00', 0.5)] * 2
    assert spent['train']['cluster'] is None
    assert spent['waiting']['cost'] == '$0.00'
    assert report['total'] == {'instance_hours': pytest.approx(2 * 95 / 60, abs=1e-4),
                               'cost': '$4.17'}
    # Only the waiting bid can bill now: 3 × $0.50.
    assert report['worst_case'] == {'per_hour': '$1.50',
                                    'max_hourly_spend': None}
    assert waiting.fid in {b['fid'] for b in report['bids']}

    table = run('spend')
    assert table.code == 0, table.err
    assert '$1.00/h × 2.17 h, $2.00/h × 1.00 h' in table.out
    assert 'Total: 3.17 instance-hours, $4.17.' in table.out
    assert ('Worst case now: $1.50/h (no max_hourly_spend set): bid waiting '
            in table.out)


def test_days_keep_to_their_window_and_the_budget_is_shown(
        market, server, run):
    del server
    old = place(market, 'old', '$3.00')
    market.advance(CLEARING_S + HOUR)
    market.bids.cancel(old.fid)
    market.advance(HOUR * 30)  # into yesterday
    place(market, 'new', '$3.00')
    market.advance(CLEARING_S + HOUR)
    with skypilot_config.replace_skypilot_config_in_process(
            config_utils.Config({'plugins': {'mithril':
                                             {'max_hourly_spend': 10}}})):
        result = run('spend', '--days', '1', '--json')
        table = run('spend', '--days', '1')
    report = json.loads(result.out)
    assert [b['name'] for b in report['bids']] == ['new']
    assert report['worst_case'] == {'per_hour': '$3.00',
                                    'max_hourly_spend': '$10.00'}
    assert ('Worst case now: $3.00/h of your $10.00/h (max_hourly_spend in '
            'plugins.mithril in ~/.sky/config.yaml): bid new' in table.out)


def test_a_charge_still_running_bills_until_the_windows_end(market, server):
    del server
    place(market, 'live', '$3.00')
    market.advance(CLEARING_S + HOUR)
    conn = connection.connect()
    spent, = charges_lib.project_spend(
        conn, market.now - datetime.timedelta(minutes=30), market.now)
    charge, = spent.charges
    assert charge.end is None
    assert (spent.instance_hours, spent.cost) == (Decimal('0.5'),
                                                  Decimal('0.5'))
