"""Mithril in SkyPilot's dashboard, in a real browser: headless Chromium
(Debian's, installed when missing) loads the sandboxed API server's
dashboard, pointed at an emulator of this module's own with one bid placed
by hand, and the test reads the DOM: the Infra page has a Mithril row per
region, with its instance types and live bids; the Mithril page has the
market with its price charts, the bid (not SkyPilot's) with the status and
reason the truth table gives it and its clearing price, and the worst-case
spend. Screenshots of both pages are saved in the test's temp dir. No page
carries the API key."""

import re
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers import browser
from tests.helpers.commands import REGION, TYPE
from tests.helpers.sandbox import SANDBOX_KEY, profile_changed

pytestmark = pytest.mark.e2e


@pytest.fixture(name='emulator')
def fixture_emulator(sky_sandbox: SkySandbox) -> Iterator[EmulatorServer]:
    """The default market with a bid by hand on TYPE in REGION, and the
    sandbox's profile pointed at it for the test."""
    with EmulatorServer() as server:
        auction = server.market.auctions.get(TYPE, REGION)
        server.market.bids.create(project=PROJECT_FID, region=REGION,
                                  instance_type=auction.instance_type.fid,
                                  limit_price='$8.00', instance_quantity=1,
                                  name='by-hand')
        with profile_changed(sky_sandbox, api_url=server.url):
            yield server


def _text(dom: str) -> str:
    """What the page shows: the DOM without scripts, styles and tags."""
    dom = re.sub(r'<(script|style)\b.*?</\1>', ' ', dom, flags=re.S)
    return re.sub(r'\s+', ' ', re.sub(r'<[^>]+>', ' ', dom))


def _cells(row: str) -> List[str]:
    """What each cell of a table row (its DOM) shows."""
    return [_text(cell).strip()
            for cell in re.findall(r'<td\b[^>]*>(.*?)</td>', row, flags=re.S)]


def test_infra_rows_and_the_mithril_page(sky_sandbox: SkySandbox,
                                         emulator: EmulatorServer,
                                         tmp_path: Path) -> None:
    del emulator
    browser.chromium()  # Installed before the clock starts.
    sky_sandbox.sky(['api', 'start'], timeout=300, check=True)
    base = f'http://127.0.0.1:{sky_sandbox.api_port}/dashboard'
    profile = tmp_path / 'chromium'
    started = time.monotonic()

    infra = browser.load(
        f'{base}/infra', profile, tmp_path / 'infra.png',
        ready='document.querySelectorAll(\'[data-mithril="infra-detail"]\')'
              '.length >= 2')
    shown = _text(infra)
    assert 'No Infrastructure Enabled' not in shown
    assert f'Mithril {REGION}' in shown
    assert re.search(r'4 instance types · 1 live bid · 1 node', shown), shown
    assert infra.count('data-mithril="infra-detail"') >= 2
    assert SANDBOX_KEY not in infra

    page = browser.load(
        f'{base}/plugins/mithril', profile, tmp_path / 'mithril.png',
        ready='document.querySelector(\'[data-mithril="error"]\') || '
              '(document.querySelector(\'[data-mithril="bid-row"]\') && '
              'document.querySelectorAll(\'[data-mithril="price-chart"]\')'
              '.length >= 2 && '
              'document.body.innerText.includes("Worst case now"))')
    shown = _text(page)
    assert 'id="mithril-page"' in page
    assert 'data-mithril="error"' not in page, shown
    assert f'{TYPE} (1x A100)' in shown
    assert page.count('data-mithril="price-chart"') >= 2
    assert 'your limit $8.00' in shown and 'suggested $' in shown
    bid_row = re.search(r'data-mithril="bid-row".*?</tr>', page, flags=re.S)
    assert bid_row is not None
    assert 'not SkyPilot' in bid_row.group(0)
    assert 'by-hand' in bid_row.group(0)
    # Allocated, its node running: the truth table reads UP, with no reason;
    # the clearing price now is the auction's spot price on the same page.
    status, reason, limit, clearing = _cells(bid_row.group(0))[4:]
    assert (status, reason, limit) == ('UP (Allocated)', '', '$8.00/h')
    spot = [_cells(row)[2] for row in re.findall(
        r'data-mithril="market-row".*?</tr>', page, flags=re.S)
            if _cells(row)[:2] == [f'{TYPE} (1x A100)', REGION]]
    assert re.fullmatch(r'\$\d+\.\d\d/h', clearing), clearing
    assert [clearing] == spot
    assert 'Worst case now: $8.00/h over 1 billable bid' in shown
    assert SANDBOX_KEY not in page
    print(f'dashboard pages and screenshots: '
          f'{time.monotonic() - started:.0f} s; screenshots in {tmp_path}')
