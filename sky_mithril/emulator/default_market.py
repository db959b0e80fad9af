"""The emulator's own default market: auctions, prices and a week of history.

`data/default-market.csv` (the emulator's, not the client's catalog) lists
every auction with its shape, floor (`Price`) and today's spot price
(`SpotPrice`), at levels a user of the real market sees (per GPU-hour about
$1.05-1.10 for A100, $1.90-2.30 for H100, $2.70 for H200, $3.40-3.80 for
B200), and it differs from the shipped catalog on purpose: more regions
(`us-central1-a` exists only here) and other prices, so tests of the
client's catalog refresh and live overlay see a real difference.

`seed_history` gives every auction (almost) HISTORY_DAYS of spot-price
samples, one per SAMPLE_INTERVAL_S, before the market's start: a daily cycle (dearer in
the US afternoon) plus a mean-reverting random walk around today's price,
never below the floor. Seeded, so the same seed gives the same history.
"""

import datetime
import math
import random
from decimal import Decimal
from pathlib import Path

from sky_mithril import money
from sky_mithril.emulator.market import Market

DATA_PATH = Path(__file__).parent / 'data' / 'default-market.csv'
HISTORY_DAYS = 7
SAMPLE_INTERVAL_S = 1800
_DAILY_SWING = 0.12   # ± share of the price over a day
_WALK_SIGMA = 0.04    # per-sample noise of the walk
_REVERSION = 0.15     # pull back towards today's price per sample


def seed_history(market: Market, seed: int) -> None:
    """Adds HISTORY_DAYS of samples to every auction, ending before `market.now`."""
    rng = random.Random(f'{seed}:history')
    count = HISTORY_DAYS * 86400 // SAMPLE_INTERVAL_S
    for auction in market.auctions.list():
        walk = 0.0
        points = []
        # The oldest sample is one interval inside the week, so a client's
        # "last 7 days" window still holds it after a few minutes.
        for i in range(count - 1, 0, -1):
            at = market.now - datetime.timedelta(seconds=i * SAMPLE_INTERVAL_S)
            walk = walk * (1 - _REVERSION) + rng.gauss(0.0, _WALK_SIGMA)
            hour = at.hour + at.minute / 60
            cycle = _DAILY_SWING * math.sin(2 * math.pi * (hour - 14) / 24 +
                                            math.pi / 2)
            price = Decimal(float(auction.spot_price) * math.exp(cycle + walk))
            points.append((at, max(price.quantize(money.CENT),
                                   auction.minimum_price)))
        market.auctions.script_history(auction.instance_type.name,
                                       auction.region, points)
