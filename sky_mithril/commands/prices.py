"""`sky-mithril prices [GPU[:N]]`: recent spot prices and the limit that would
have kept a bid allocated, from Mithril's price history (the statistics and
the report are in catalog/price_history.py)."""

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Optional

import click

from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import client as client_lib
from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import price_history
from sky_mithril.commands import options

DEFAULT_DAYS = 7.0
DEFAULT_LIKELIHOOD = Decimal('0.9')


def _likelihood(text: str) -> Decimal:
    """`--likelihood`: "0.9" or "90%" -> Decimal('0.9'), in (0, 1]."""
    raw = text.strip()
    try:
        value = (Decimal(raw[:-1]) / 100 if raw.endswith('%') else Decimal(raw))
    except InvalidOperation:
        value = Decimal('NaN')
    if not value.is_finite() or not 0 < value <= 1:
        raise click.BadParameter(
            f'{text!r} is not a likelihood in (0, 1], e.g. 0.9 or 90%')
    return value


def _days(text: str) -> float:
    """`--days`: a positive number of days."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise click.BadParameter(f'{text!r} is not a positive number of days')
    return value


@click.command('prices', short_help='Spot price history and the limits that held.',
               epilog=options.examples(
    'sky-mithril prices H100:8',
    'sky-mithril prices h100-80gb.sxm.8x --region us-central1-a',
    'sky-mithril prices a100 --region us-central3-a --days 3',
    'sky-mithril prices H100:8 --likelihood 95% --plot h100.png'))
@click.argument('gpu', required=False, metavar='[GPU[:N] | TYPE]')
@click.option('--region', help='only this region')
@click.option('--days', type=options.Parsed('DAYS', _days),
              default=DEFAULT_DAYS,
              help=f'history to look at, in days (default: {DEFAULT_DAYS:g})')
@click.option('--likelihood', type=options.Parsed('SHARE', _likelihood),
              default=DEFAULT_LIKELIHOOD,
              help='wanted share of time allocated, for the suggested limit '
              '(default: 0.9; "90%" works too)')
@click.option('--plot', type=click.Path(dir_okay=False, path_type=Path),
              metavar='FILE.png',
              help='also draw the series and suggested limits (needs '
              'matplotlib)')
def prices_command(gpu: Optional[str], region: Optional[str], days: float,
                   likelihood: Decimal, plot: Optional[Path]) -> int:
    """Recent spot prices per instance type and region, and the limit price
    that would have kept a bid allocated. GPU is a GPU name, optionally with
    a count (H100:8), or an instance type as `instance list-types` prints it
    (h100-80gb.sxm.8x); without it, every GPU in the catalog."""
    rows = price_history.rows_for(
        catalog_files.read_rows(catalog_files.catalog_path()), gpu)
    if plot:
        price_history.require_matplotlib()
    start = datetime.now(timezone.utc) - timedelta(days=days)
    creds = credentials_lib.load_credentials()
    with client_lib.MithrilClient.from_credentials(
            creds, retry_refused=False) as client:
        rows = price_history.with_live_auctions(client, rows)
        if region:
            rows = price_history.select_rows(rows, None, None, region)
        histories, complete = price_history.fetch_histories(client, rows,
                                                            region, start)
    print('\n'.join(price_history.report(histories, likelihood, days,
                                         complete)))
    if plot:
        price_history.write_plot(histories, likelihood, days, plot)
        print(f'\nWrote the chart to {plot}')
    return 0
