"""What `sky-mithril prices` (commands/prices.py) reports: recent spot prices
per (instance type, region), the limit price that would have kept a bid
allocated a chosen share of the time, and what each of a few limits would
have run and cost.

Rule: every share is a share of time. Mithril samples a series unevenly (a
burst of samples, then a gap), so each sample weighs the time nearest to it:
half the gap to the sample before plus half the gap to the one after (the
first and last get only their inner half). Samples all at one instant weigh
one each. Percentiles are weighted nearest-rank: the q-th percentile is the
smallest sample price at or above the spot price for at least a share q of
the time the samples cover (with weights of one each, the plain nearest-rank
percentile: the median of an even count is the lower middle sample). The
suggested limit for a likelihood q is the q-th percentile
rounded up to the whole cent (a bid is allocated when spot <= limit);
likelihood 1.0 gives the maximum. A limit's cost per day is what a bid at
it would have paid on average per day of the covered time, at the spot
(clearing) price while the spot was at or below the limit, per instance.
Series of the same instance type name in the same region (several fids) are
merged.
"""

import dataclasses
import math
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sky_mithril.api import client as client_lib
from sky_mithril.money import CENT, format_dollars

NUM_SAMPLES = 200
"""Samples asked per series: about one every 50 minutes over 7 days."""
SPARK_WIDTH = 60
BARS = '▁▂▃▄▅▆▇█'
PLOT_HINT = ('--plot needs matplotlib, which is not installed. Install it with '
             '`pip install matplotlib`, or leave out --plot.')

Sample = Tuple[datetime, Decimal]


class PricesError(Exception):
    """A request the command cannot answer; the message says why."""


@dataclasses.dataclass(frozen=True)
class PriceStats:
    """Summary of a non-empty series of spot prices."""

    count: int
    minimum: Decimal
    median: Decimal
    p90: Decimal
    maximum: Decimal


@dataclasses.dataclass
class MarketHistory:
    """The spot-price samples of one instance type in one region, oldest first."""

    instance_type: str
    region: str
    accelerator: str
    gpus: int
    samples: List[Sample] = dataclasses.field(default_factory=list)

    @property
    def prices(self) -> List[Decimal]:
        """The spot prices alone, oldest first."""
        return [price for _, price in self.samples]

    @property
    def label(self) -> str:
        """"h100-80gb.sxm.8x (8x H100)"."""
        return f'{self.instance_type} ({self.gpus}x {self.accelerator})'


# Statistics (pure). `weights` default to one per sample.

Weights = Optional[Sequence[Fraction]]


def time_weights(samples: Sequence[Sample]) -> List[Fraction]:
    """Each sample's weight, in microseconds: the time nearer to it than to
    any other sample (half of each gap to a neighbour). One each when the
    samples span no time."""
    if not samples or samples[-1][0] == samples[0][0]:
        return [Fraction(1)] * len(samples)
    at = [Fraction((when - samples[0][0]) // timedelta(microseconds=1))
          for when, _ in samples]
    return [((at[i] - at[i - 1] if i > 0 else 0) +
             (at[i + 1] - at[i] if i + 1 < len(at) else 0)) / 2
            for i in range(len(at))]


def _weighted(prices: Sequence[Decimal],
              weights: Weights) -> List[Tuple[Decimal, Fraction]]:
    if weights is not None and len(weights) != len(prices):
        raise ValueError('one weight per price')
    return list(zip(prices, weights if weights is not None else
                    [Fraction(1)] * len(prices)))


def percentile(prices: Sequence[Decimal], share: Decimal,
               weights: Weights = None) -> Decimal:
    """The weighted nearest-rank percentile: the smallest price at or above
    the others for at least a share `share` of the total weight."""
    if not prices:
        raise ValueError('no prices')
    if not 0 < share <= 1:
        raise ValueError(f'share must be in (0, 1], got {share}')
    weighted = sorted(_weighted(prices, weights), key=lambda pw: pw[0])
    target = Fraction(share) * sum(w for _, w in weighted)
    reached = Fraction(0)
    for price, weight in weighted:
        reached += weight
        if reached >= target:
            return price
    return weighted[-1][0]


def summarize(prices: Sequence[Decimal], weights: Weights = None) -> PriceStats:
    """Count, min, median, p90 and max (weighted nearest-rank) of a
    non-empty series."""
    return PriceStats(count=len(prices),
                      minimum=min(prices),
                      median=percentile(prices, Decimal('0.5'), weights),
                      p90=percentile(prices, Decimal('0.9'), weights),
                      maximum=max(prices))


def suggest_limit(prices: Sequence[Decimal], likelihood: Decimal,
                  weights: Weights = None) -> Decimal:
    """The smallest whole-cent limit at or above the spot price for at least
    a share `likelihood` of the weight (the time)."""
    return percentile(prices, likelihood, weights).quantize(
        CENT, rounding=ROUND_CEILING)


def coverage(prices: Sequence[Decimal], limit: Decimal,
             weights: Weights = None) -> Fraction:
    """The share of the weight (the time) when the spot price was at or
    below `limit`."""
    weighted = _weighted(prices, weights)
    return (sum((w for price, w in weighted if price <= limit), Fraction(0)) /
            sum(w for _, w in weighted))


@dataclasses.dataclass(frozen=True)
class LimitOutcome:
    """What a bid at `limit` would have done over the covered time."""

    limit: Decimal
    held: Fraction  # share of the time allocated
    hours_run: float  # instance-hours allocated, per instance
    cost_per_day: Decimal  # paid at the clearing price, per instance


def outcome(prices: Sequence[Decimal], weights: Sequence[Fraction],
            span_s: float, limit: Decimal) -> LimitOutcome:
    """A bid at `limit` over the samples' time: allocated while the spot was
    at or below it, paying the spot price then."""
    weighted = _weighted(prices, weights)
    total = sum(w for _, w in weighted)
    paid = sum((Fraction(price) * w for price, w in weighted if price <= limit),
               Fraction(0)) * 24 / total
    held = coverage(prices, limit, weights)
    return LimitOutcome(limit, held, float(held) * span_s / 3600,
                        (Decimal(paid.numerator) / Decimal(paid.denominator)
                         ).quantize(CENT, rounding=ROUND_HALF_UP))


def outcomes(prices: Sequence[Decimal], weights: Sequence[Fraction],
             span_s: float, suggested: Decimal) -> List[LimitOutcome]:
    """The outcomes of the limits worth comparing: the time-weighted median,
    p75, p90 and maximum (to the cent, rounded up) and the suggested one."""
    limits = {suggest_limit(prices, Decimal(share), weights)
              for share in ('0.5', '0.75', '0.9', '1')} | {suggested}
    return [outcome(prices, weights, span_s, limit) for limit in sorted(limits)]


def per_gpu(limit: Decimal, gpus: int) -> str:
    """The per-GPU-hour price, prefixed with "≈ " when rounded to the cent."""
    exact = limit / gpus
    shown = exact.quantize(CENT, rounding=ROUND_HALF_UP)
    return f'{"" if shown == exact else "≈ "}{format_dollars(shown)}'


def sparkline(prices: Sequence[Decimal], width: int = SPARK_WIDTH) -> str:
    """One bar per sample, or per bucket (its highest price) beyond `width`
    samples; the lowest price is ▁, the highest █, a flat series all ▄."""
    values = list(prices)
    if len(values) > width:
        n = len(values)
        values = [max(values[i * n // width:(i + 1) * n // width])
                  for i in range(width)]
    if not values:
        return ''
    low, high = min(values), max(values)
    if low == high:
        return BARS[3] * len(values)
    top = len(BARS) - 1
    return ''.join(BARS[int(((value - low) * top / (high - low)).to_integral_value(
        rounding=ROUND_HALF_UP))] for value in values)


# Catalog resolution (pure).


def parse_gpu_spec(spec: str) -> Tuple[str, Optional[int]]:
    """"H100:8" -> ("H100", 8); "a100" -> ("A100", None)."""
    name, _, count = spec.strip().partition(':')
    if not name:
        raise PricesError(f'{spec!r} is not a GPU; write it as NAME or NAME:COUNT, '
                          'e.g. H100:8.')
    if not count:
        return name.upper(), None
    if not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise PricesError(f'The GPU count in {spec!r} must be a whole number '
                          'above 0, e.g. H100:8.')
    return name.upper(), int(count)


def gpus(count: int) -> str:
    """"1 GPU", "8 GPUs"."""
    return f'{count} GPU{"" if count == 1 else "s"}'


def _gpu_count(row: Dict[str, str]) -> int:
    return int(float(row['AcceleratorCount']))


def _gpu_specs(rows: Sequence[Dict[str, str]]) -> str:
    specs = sorted({(r['AcceleratorName'].upper(), _gpu_count(r)) for r in rows})
    return ', '.join(f'{name}:{count}' for name, count in specs)


def select_rows(rows: Sequence[Dict[str, str]], gpu: Optional[str],
                count: Optional[int],
                region: Optional[str]) -> List[Dict[str, str]]:
    """Catalog rows for a GPU name (any case; messages echo it as given),
    GPU count and region; None = any.

    Raises PricesError naming what the rows have when nothing matches.
    """
    selected = list(rows)
    if gpu is not None:
        selected = [r for r in selected
                    if r['AcceleratorName'].upper() == gpu.upper()]
        if not selected:
            raise PricesError(f'Unknown GPU {gpu!r}. The catalog has: '
                              f'{_gpu_specs(rows)}; or name an instance type '
                              '(`sky-mithril instance list-types`).')
    if count is not None:
        of_gpu = selected
        selected = [r for r in selected if _gpu_count(r) == count]
        if not selected:
            raise PricesError(f'No {gpu} instance type with {gpus(count)} in '
                              f'the catalog; {gpu} comes as '
                              f'{_gpu_specs(of_gpu)}.')
    if region is not None:
        in_any_region = selected
        selected = [r for r in selected if r['Region'] == region]
        if not selected:
            regions = ', '.join(sorted({r['Region'] for r in in_any_region}))
            raise PricesError(f'Mithril has no {gpu or "GPU"} instance type '
                              f'in region {region!r}; it has them in: '
                              f'{regions}.')
    return selected


def rows_for(rows: Sequence[Dict[str, str]],
             spec: Optional[str]) -> List[Dict[str, str]]:
    """The catalog rows for what a person typed: an instance type's name as
    `sky-mithril instance list-types` prints it (any case), or a GPU as
    NAME[:COUNT]; None = every row."""
    if spec is None:
        return list(rows)
    by_type = [r for r in rows
               if r['InstanceType'].lower() == spec.strip().lower()]
    if by_type:
        return by_type
    _, count = parse_gpu_spec(spec)
    return select_rows(rows, spec.strip().partition(':')[0], count, None)


def with_live_auctions(client: client_lib.MithrilClient,
                       rows: Sequence[Dict[str, str]]) -> List[Dict[str, str]]:
    """`rows` plus a row for every auction the API lists of the same
    instance types in a region the rows lack: the regions `prices` knows are
    the market's, not only the shipped catalog's."""
    by_name = {r['InstanceType']: r for r in rows}
    have = {(r['InstanceType'], r['Region']) for r in rows}
    names = {t.fid: t.name for t in client.list_instance_types()
             if t.name in by_name}
    extra = []
    for auction in client.list_spot_availability():
        name = names.get(auction.instance_type)
        if name is not None and (name, auction.region) not in have:
            have.add((name, auction.region))
            extra.append(dict(by_name[name], Region=auction.region))
    return [*rows, *extra]


# Fetching.


def fetch_histories(client: client_lib.MithrilClient,
                    rows: Sequence[Dict[str, str]], region: Optional[str],
                    start: datetime) -> Tuple[List[MarketHistory], bool]:
    """Histories since `start` for every (instance type, region) of `rows`
    (empty when the API has none) plus any other region the API reports for
    those types; and whether the API says the series are complete."""
    specs = {r['InstanceType']: (r['AcceleratorName'], _gpu_count(r))
             for r in rows}
    names_by_fid = {t.fid: t.name for t in client.list_instance_types()
                    if t.name in specs}
    if not names_by_fid:
        raise PricesError(
            f'The Mithril API at {client.api_url} offers none of '
            f'{", ".join(sorted(specs))}. Run `sky-mithril catalog refresh` '
            'to update the catalog.')
    histories: Dict[Tuple[str, str], MarketHistory] = {}

    def history(name: str, where: str) -> MarketHistory:
        if (name, where) not in histories:
            accelerator, gpus = specs[name]
            histories[name, where] = MarketHistory(name, where, accelerator,
                                                   gpus)
        return histories[name, where]

    for row in rows:
        history(row['InstanceType'], row['Region'])
    answer = client.get_price_history(instance_types=sorted(names_by_fid),
                                      region=region,
                                      num_samples=NUM_SAMPLES,
                                      start_time=start)
    for series in answer.series:
        name = names_by_fid.get(series.instance_type)
        if name is None or (region is not None and series.region != region):
            continue
        history(name, series.region).samples.extend(
            zip(series.timestamps, series.spot_prices))
    for item in histories.values():
        item.samples.sort()
    return sorted(histories.values(),
                  key=lambda h: (h.instance_type, h.region)), answer.complete


# Report (pure).


def _period(days: float) -> str:
    return f'the last {days:g} day{"" if days == 1 else "s"}'


def _percent(share: Decimal) -> str:
    return f'{format((share * 100).normalize(), "f")}%'


def _span(samples: Sequence[Sample]) -> str:
    first, last = (t.astimezone(timezone.utc) for t in (samples[0][0],
                                                          samples[-1][0]))
    return f'{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC'


def duration(seconds: float) -> str:
    """"2 min", "5 h 30 min", "6 days 23 h": a span, to the minute."""
    minutes = int(seconds // 60)
    day_count, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if day_count:
        text = f'{day_count} day{"" if day_count == 1 else "s"}'
        return f'{text} {hours} h' if hours else text
    if hours:
        return f'{hours} h {mins} min' if mins else f'{hours} h'
    return f'{mins} min'


def _outcome_table(rows: Sequence[LimitOutcome],
                   suggested: Decimal) -> List[str]:
    """The limits side by side: held, hours run, cost per day."""
    cells = [('LIMIT', 'HELD', 'RAN', 'COST/DAY')] + [
        (f'{format_dollars(o.limit)}/h', f'{math.floor(o.held * 100)}%',
         duration(o.hours_run * 3600), format_dollars(o.cost_per_day))
        for o in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = []
    for row, o in zip(cells, [None, *rows]):
        text = '    ' + '  '.join(cell.rjust(width) if i else cell.ljust(width)
                                  for i, (cell, width) in enumerate(zip(row, widths)))
        lines.append(text + ('  (suggested)' if o and o.limit == suggested
                             else ''))
    return lines


def describe(item: MarketHistory, likelihood: Decimal, days: float) -> List[str]:
    """The report lines of one (instance type, region).

    Shares are of the time the samples cover, each sample weighing the time
    nearest to it; the samples only stand for the window they span: the
    lines say what they cover, and a span shorter than half the window gets
    a caution."""
    head = f'{item.label} in {item.region}'
    if not item.samples:
        return [f'{head}: no price history in {_period(days)}.']
    prices = item.prices
    weights = time_weights(item.samples)
    stats = summarize(prices, weights)
    limit = suggest_limit(prices, likelihood, weights)
    covered = math.floor(coverage(prices, limit, weights) * 100)
    plural = '' if stats.count == 1 else 's'
    span_s = (item.samples[-1][0] - item.samples[0][0]).total_seconds()
    lines = [
        f'{head}: {stats.count} sample{plural}, {_span(item.samples)}',
        f'  min {format_dollars(stats.minimum)}  '
        f'median {format_dollars(stats.median)}  '
        f'p90 {format_dollars(stats.p90)}  max {format_dollars(stats.maximum)}',
        f'  {sparkline(prices)}',
        f'  A limit of {format_dollars(limit)}/h was at or above the spot '
        f'price {covered}% of the time these samples cover: '
        f'{duration(span_s)} of {_period(days)}.',
        f'  Suggested limit: {format_dollars(limit)} per instance-hour' +
        (f' ({per_gpu(limit, item.gpus)} per GPU-hour for {gpus(item.gpus)}).'
         if item.gpus > 0 else '.'),
        f'  A bid at each limit over those {duration(span_s)}, per instance '
        '(allocated while the spot price was at or below it, paying the spot '
        'price):',
        *_outcome_table(outcomes(prices, weights, span_s, limit), limit),
    ]
    if stats.count == 1:
        lines.append('  Only 1 sample: too little history to rely on.')
    elif span_s < days * 86400 / 2:
        lines.append(f'  The samples cover only {duration(span_s)} of '
                     f'{_period(days)}: too little history to rely on.')
    return lines


def report(histories: Sequence[MarketHistory], likelihood: Decimal,
           days: float, complete: bool = True) -> List[str]:
    """The whole printed report."""
    lines = [
        f'Mithril spot prices over {_period(days)}, in dollars per '
        'instance-hour.',
        f'Suggested limits are for a {_percent(likelihood)} allocation '
        'likelihood: the smallest whole-cent limit at or above the spot '
        f'price at least {_percent(likelihood)} of the time (each sample '
        'stands for the time nearest to it, so uneven sampling does not '
        'tilt it).',
    ]
    if not complete:
        lines.append('Note: Mithril cut the history short; the figures cover '
                     'only the samples it returned.')
    for item in histories:
        lines.append('')
        lines.extend(describe(item, likelihood, days))
    return lines


# Chart.


def require_matplotlib() -> None:
    """Fails naming the install when --plot cannot draw."""
    try:
        import matplotlib.figure  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        raise PricesError(PLOT_HINT) from None


def write_plot(histories: Sequence[MarketHistory], likelihood: Decimal,
               days: float, path: Path) -> None:
    """A PNG chart: per instance type, one step line per region and its
    suggested limit as a dashed horizontal line of the same colour."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    by_type: Dict[str, List[MarketHistory]] = {}
    for item in histories:
        if item.samples:
            by_type.setdefault(item.label, []).append(item)
    if not by_type:
        raise PricesError(f'No price history to plot; {path} was not written.')
    figure = Figure(figsize=(10, 3.5 * len(by_type)), layout='constrained')
    axes = figure.subplots(len(by_type), 1, squeeze=False)[:, 0]
    for ax, (label, group) in zip(axes, by_type.items()):
        for item in group:
            times = [t for t, _ in item.samples]
            line, = ax.step(times, [float(p) for p in item.prices],
                            where='post', label=item.region)
            limit = suggest_limit(item.prices, likelihood,
                                  time_weights(item.samples))
            ax.axhline(float(limit), color=line.get_color(), linestyle='--',
                       label=f'{item.region}: limit {format_dollars(limit)} '
                       f'({_percent(likelihood)})')
        ax.set_title(f'{label}: spot price over {_period(days)}')
        ax.set_ylabel('$ per instance-hour')
        ax.legend(loc='best', fontsize='small')
        ax.grid(alpha=0.3)
    figure.savefig(path)
