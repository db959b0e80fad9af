"""`sky-mithril spend [--days N] [--json]`: what the project actually paid.

Per bid (and the SkyPilot cluster it backs), the instance-hours and the
clearing prices its instances were charged in the last N days, from Mithril's
pricing history (`account.charges`); the totals; and the project's live worst
case (limit × instances over its billable bids) against the user's
`max_hourly_spend`.
"""

import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional

import click

from sky_mithril.account import charges as charges_lib
from sky_mithril.api import models
from sky_mithril.commands import common
from sky_mithril.commands import options
from sky_mithril.commands import sky_clusters
from sky_mithril.commands.output import dollars, per_hour, print_json, print_table
from sky_mithril.provision import budget as budget_lib
from sky_mithril.task import settings

DEFAULT_DAYS = 30


def _hours(amount: Decimal) -> str:
    return f'{amount.quantize(Decimal("0.01"))}'


def _when(moment: datetime.datetime) -> str:
    return f'{moment:%Y-%m-%d %H:%M} UTC'


def report_json(spent: List[charges_lib.BidSpend], clusters: Dict[str, str],
                type_names: Dict[str, str], since: datetime.datetime,
                until: datetime.datetime, project: str,
                worst_case: Decimal,
                budget: Optional[settings.SpendBudget]) -> Dict[str, Any]:
    """`spend --json` (documented in docs/limit-prices.md)."""
    return {
        'project': project,
        'since': since.isoformat(),
        'until': until.isoformat(),
        'bids': [{
            'fid': s.bid.fid,
            'name': s.bid.name,
            'cluster': clusters.get(s.bid.name),
            'status': s.bid.status,
            'instance_type': type_names.get(s.bid.instance_type,
                                            s.bid.instance_type),
            'region': s.bid.region,
            'limit_price': dollars(s.bid.limit_price),
            'instance_hours': float(round(s.instance_hours, 4)),
            'cost': dollars(s.cost),
            'charges': [{
                'instance_fid': c.instance_fid,
                'price': dollars(c.price),
                'start': c.start.isoformat(),
                'end': c.end.isoformat() if c.end else None,
                'hours': float(round(c.hours, 4)),
                'cost': dollars(c.cost),
            } for c in s.charges],
        } for s in spent],
        'total': {
            'instance_hours': float(round(sum(
                (s.instance_hours for s in spent), Decimal(0)), 4)),
            'cost': dollars(sum((s.cost for s in spent), Decimal(0))),
        },
        'worst_case': {
            'per_hour': dollars(worst_case),
            'max_hourly_spend': dollars(budget.per_hour) if budget else None,
        },
    }


def _print_report(spent: List[charges_lib.BidSpend], clusters: Dict[str, str],
                  type_names: Dict[str, str], days: int,
                  since: datetime.datetime, until: datetime.datetime,
                  project: str) -> None:
    print(f'Spend in project {project}, last {days} day(s) '
          f'({_when(since)} to {_when(until)}):')
    if not spent:
        print('No bids.')
        return
    print_table(
        ('CLUSTER', 'BID', 'STATUS', 'TYPE', 'REGION', 'INSTANCE-HOURS',
         'CHARGED', 'COST'),
        [(clusters.get(s.bid.name, '-'), s.bid.name, s.bid.status,
          type_names.get(s.bid.instance_type, s.bid.instance_type),
          s.bid.region or '-', _hours(s.instance_hours),
          ', '.join(f'{per_hour(price)} × {_hours(hours)} h'
                    for price, hours in s.hours_by_price().items()) or '-',
          dollars(s.cost) or '-') for s in spent])
    total_hours = sum((s.instance_hours for s in spent), Decimal(0))
    total = sum((s.cost for s in spent), Decimal(0))
    print(f'Total: {_hours(total_hours)} instance-hours, {dollars(total)}.')


def _worst_case_line(bids: List[models.Bid], worst_case: Decimal,
                     budget: Optional[settings.SpendBudget],
                     clusters: Dict[str, str]) -> str:
    of_budget = (f' of your {budget.describe()}' if budget else
                 ' (no max_hourly_spend set)')
    using = (f': {budget_lib.describe_bids(bids, clusters)}' if bids else '')
    return f'Worst case now: {per_hour(worst_case)}{of_budget}{using}.'


@click.command('spend', short_help='What the project paid; its worst case now.',
               epilog=options.examples(
    'sky-mithril spend', 'sky-mithril spend --days 7 --json'))
@click.option('--days', type=options.POSITIVE_INT, default=DEFAULT_DAYS,
              metavar='N', help=f'the last N days (default {DEFAULT_DAYS})')
@options.json_option('the report')
def spend_command(days: int, as_json: bool) -> int:
    """What the project paid: instance-hours and clearing prices per bid
    (and the SkyPilot cluster it backs), and the live worst case against
    max_hourly_spend."""
    budget = settings.resolve_spend_budget(
        *settings.sections_from_skypilot(None))
    conn = common.connect()
    try:
        until = datetime.datetime.now(datetime.timezone.utc)
        since = until - datetime.timedelta(days=days)
        spent = charges_lib.project_spend(conn, since, until)
        live = budget_lib.billable_bids(conn)
        type_names = {t.fid: t.name for t in conn.client.list_instance_types()}
    finally:
        conn.client.close()
    worst_case = budget_lib.total_worst_case(live)
    clusters = sky_clusters.cluster_names_by_bid()
    if as_json:
        print_json(report_json(spent, clusters, type_names, since, until,
                               conn.project_id, worst_case, budget))
        return 0
    _print_report(spent, clusters, type_names, days, since, until,
                  conn.project_id)
    print(_worst_case_line(live, worst_case, budget, clusters))
    return 0
