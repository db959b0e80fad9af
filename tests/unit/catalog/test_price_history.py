"""`sky-mithril prices`: statistics and suggested limits, and the command's
refusals that need no API. (The command against the emulator is in
tests/integration/catalog/test_price_history.py.)"""

import importlib.util
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import List

import click
import pytest

from sky_mithril.catalog import catalog_files
from sky_mithril import cli
from sky_mithril.catalog import price_history
from sky_mithril.commands import prices

HAS_MATPLOTLIB = importlib.util.find_spec('matplotlib') is not None
H100_8 = 'h100-80gb.sxm.8x'
REGION_A = 'us-central2-a'


def d(*values: str) -> List[Decimal]:
    return [Decimal(v) for v in values]


# Statistics and the suggestion.


def test_stats_use_nearest_rank_percentiles():
    stats = price_history.summarize(d('5', '1', '3', '2', '4'))
    assert stats == price_history.PriceStats(count=5, minimum=Decimal('1'),
                                      median=Decimal('3'), p90=Decimal('5'),
                                      maximum=Decimal('5'))


def test_even_count_median_is_the_lower_middle_sample():
    stats = price_history.summarize(d(*map(str, range(10, 0, -1))))
    assert (stats.minimum, stats.median, stats.p90, stats.maximum) == (1, 5, 9, 10)


def test_suggestion_for_ten_samples_at_ninety_percent_is_the_ninth():
    # 0.9 * 10 in floats is 9.000000000000002; the rank must still be 9.
    series = d(*map(str, range(1, 11)))
    assert price_history.suggest_limit(series, Decimal('0.9')) == Decimal('9.00')
    assert price_history.coverage(series, Decimal('9.00')) == price_history.Fraction(9, 10)


def test_likelihood_one_is_the_maximum_and_one_half_the_lower_median():
    series = d('3.10', '2.50', '4.75', '2.90')
    assert price_history.suggest_limit(series, Decimal('1')) == Decimal('4.75')
    assert price_history.suggest_limit(series, Decimal('0.5')) == Decimal('2.90')
    assert price_history.suggest_limit(series, Decimal('0.51')) == Decimal('3.10')


def test_suggestion_rounds_sub_cent_prices_up_to_the_cent():
    assert price_history.suggest_limit(d('10.001'), Decimal('0.9')) == Decimal('10.01')
    assert price_history.suggest_limit(d('10.009', '1'), Decimal('1')) == Decimal('10.01')
    assert price_history.suggest_limit(d('10.00'), Decimal('0.9')) == Decimal('10.00')


def test_suggested_limit_covers_at_least_the_wanted_share():
    series = d('1.00', '1.00', '2.00', '7.00', '3.00', '3.00', '9.99')
    for wanted in d('0.01', '0.3', '0.5', '0.7', '0.9', '0.95', '1'):
        limit = price_history.suggest_limit(series, wanted)
        assert price_history.coverage(series, limit) >= wanted
        below = limit - price_history.CENT
        assert price_history.coverage(series, below) < wanted


def test_flat_and_single_sample_series():
    flat = price_history.summarize(d('4.20', '4.20', '4.20'))
    assert flat.minimum == flat.median == flat.p90 == flat.maximum == Decimal('4.20')
    assert price_history.sparkline(d('4.20', '4.20', '4.20')) == '▄▄▄'
    assert price_history.summarize(d('7.00')).count == 1
    assert price_history.suggest_limit(d('7.00'), Decimal('0.9')) == Decimal('7.00')
    assert price_history.sparkline(d('7.00')) == '▄'


def test_sparkline_spans_the_bars_and_buckets_long_series_by_their_highest():
    assert price_history.sparkline(d('0', '1', '2', '3', '4', '5', '6', '7')) == '▁▂▃▄▅▆▇█'
    assert price_history.sparkline(d('1', '1', '1', '9', '1', '1'), width=3) == '▁█▁'
    assert len(price_history.sparkline([Decimal(i % 7) for i in range(500)])) == 60
    assert price_history.sparkline([]) == ''


def test_per_gpu_marks_rounded_amounts():
    assert price_history.per_gpu(Decimal('12.00'), 8) == '$1.50'
    assert price_history.per_gpu(Decimal('17.00'), 8) == '≈ $2.13'


@pytest.mark.parametrize('bad', [[], d('1')])
def test_percentile_rejects_empty_series_and_shares_outside_the_unit_interval(bad):
    with pytest.raises(ValueError):
        price_history.percentile(bad, Decimal('0') if bad else Decimal('0.5'))


# Catalog resolution and arguments.


def test_gpu_spec_parsing():
    assert price_history.parse_gpu_spec('H100:8') == ('H100', 8)
    assert price_history.parse_gpu_spec('a100') == ('A100', None)
    for bad in ('H100:x', 'H100:0', ':8', 'H100:-1'):
        with pytest.raises(price_history.PricesError):
            price_history.parse_gpu_spec(bad)


def test_selection_by_gpu_count_and_region_explains_misses():
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    assert {r['InstanceType'] for r in price_history.select_rows(rows, 'A100', None, None)} == {
        'a100-80gb.sxm.1x', 'a100-80gb.sxm.2x', 'a100-80gb.sxm.4x', 'a100-80gb.sxm.8x'}
    assert [r['InstanceType'] for r in price_history.select_rows(rows, 'H100', 8, None)] == [H100_8]
    with pytest.raises(price_history.PricesError, match=r'H100 comes as H100:1, H100:8'):
        price_history.select_rows(rows, 'H100', 3, None)
    with pytest.raises(price_history.PricesError, match=r"region 'mars-1'; .*us-central2-a"):
        price_history.select_rows(rows, 'H100', 8, 'mars-1')


def test_likelihood_and_days_arguments():
    assert prices._likelihood('0.9') == Decimal('0.9')
    assert prices._likelihood('95%') == Decimal('0.95')
    for bad in ('0', '1.01', '-0.5', 'most', 'nan'):
        with pytest.raises(click.BadParameter):
            prices._likelihood(bad)
    assert prices._days('0.5') == 0.5
    for bad in ('0', '-1', 'week', 'inf'):
        with pytest.raises(click.BadParameter):
            prices._days(bad)


# The command, refusing before it needs the API.


def test_unknown_gpu_lists_the_catalog(capsys):
    assert cli.main(['prices', 'X100']) == 1
    err = capsys.readouterr().err
    assert err.startswith("sky-mithril prices: Unknown GPU 'X100'. The catalog has: ")
    assert 'A100:1' in err and 'H100:8' in err and 'B200:8' in err


@pytest.mark.skipif(HAS_MATPLOTLIB, reason='matplotlib is installed')
def test_plot_without_matplotlib_names_the_install(tmp_path, capsys):
    chart = tmp_path / 'chart.png'
    assert cli.main(['prices', 'H100:8', '--plot', str(chart)]) == 1
    assert 'pip install matplotlib' in capsys.readouterr().err
    assert not chart.exists()


def test_a_single_sample_is_reported_with_a_caution():
    at = datetime(2025, 1, 1, 6, 30, tzinfo=timezone.utc)
    item = price_history.MarketHistory(H100_8, REGION_A, 'H100', 8, [(at, Decimal('12.00'))])
    lines = price_history.describe(item, Decimal('0.9'), 7)
    assert lines[0].endswith('1 sample, 2025-01-01 06:30 to 2025-01-01 06:30 UTC')
    assert lines[1].split() == ['min', '$12.00', 'median', '$12.00', 'p90', '$12.00',
                                'max', '$12.00']
    assert lines[3].endswith('$12.00/h was at or above the spot price 100% of the '
                             'time these samples cover: 0 min of the last 7 days.')
    assert lines[4].endswith('($1.50 per GPU-hour for 8 GPUs).')
    assert lines[-1] == '  Only 1 sample: too little history to rely on.'


def test_two_samples_minutes_apart_say_what_they_cover():
    at = datetime(2025, 1, 1, 6, 30, tzinfo=timezone.utc)
    item = price_history.MarketHistory(H100_8, REGION_A, 'H100', 8, [
        (at, Decimal('12.00')), (at + timedelta(minutes=2), Decimal('12.50'))])
    lines = price_history.describe(item, Decimal('0.9'), 2)
    assert lines[3].endswith('100% of the time these samples cover: 2 min of the '
                             'last 2 days.')
    assert lines[-1] == ('  The samples cover only 2 min of the last 2 days: too '
                         'little history to rely on.')


def test_durations_read_naturally():
    assert [price_history.duration(s) for s in (59, 120, 5 * 3600 + 1800, 86400,
                                                6 * 86400 + 23 * 3600)] == [
        '0 min', '2 min', '5 h 30 min', '1 day', '6 days 23 h']


# What a person types: instance type names, any case, echoed as typed.


def test_an_instance_type_name_selects_its_rows():
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    for spec in (H100_8, H100_8.upper()):
        assert {r['InstanceType'] for r in price_history.rows_for(rows, spec)} == {H100_8}
    assert {r['AcceleratorName'] for r in price_history.rows_for(rows, 'h100')} == {'H100'}


def test_misses_echo_the_input_as_typed_and_count_gpus_right():
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    with pytest.raises(price_history.PricesError) as unknown:
        price_history.rows_for(rows, 'x100')
    assert str(unknown.value).startswith("Unknown GPU 'x100'. The catalog has: ")
    assert 'or name an instance type (`sky-mithril instance list-types`)' in str(unknown.value)
    with pytest.raises(price_history.PricesError) as one:
        price_history.rows_for(rows, 'b200:1')
    assert str(one.value).startswith('No b200 instance type with 1 GPU in the catalog')
    assert [price_history.gpus(n) for n in (1, 8)] == ['1 GPU', '8 GPUs']


def test_a_single_gpu_type_says_gpu():
    at = datetime(2025, 1, 1, 6, 30, tzinfo=timezone.utc)
    item = price_history.MarketHistory('a100-80gb.sxm.1x', REGION_A, 'A100', 1,
                                       [(at, Decimal('2.00'))])
    assert price_history.describe(item, Decimal('0.9'), 7)[4].endswith(
        '($2.00 per GPU-hour for 1 GPU).')


def test_refresh_writes_where_it_says(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(catalog_files.ENV_CATALOG, raising=False)
    assert catalog_files.refresh_target() == catalog_files._SOURCE_TREE
    monkeypatch.setenv(catalog_files.ENV_CATALOG, str(tmp_path / 'mine.csv'))
    assert catalog_files.refresh_target() == tmp_path / 'mine.csv'
    monkeypatch.delenv(catalog_files.ENV_CATALOG)
    monkeypatch.setattr(catalog_files, '_SOURCE_TREE', tmp_path / 'no' / 'vms.csv')
    monkeypatch.chdir(tmp_path)
    assert cli.main(['catalog', 'refresh']) == 1
    assert capsys.readouterr().err.startswith(
        'sky-mithril catalog refresh: Name the file to write with --output PATH')
    assert not (tmp_path / 'catalog').exists()


# Time, not samples: each sample weighs the time nearest to it.

HOUR_US = 3600 * 10**6


def _at(*points):
    """Samples from (hours after a start, price) pairs."""
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [(start + timedelta(hours=h), Decimal(p)) for h, p in points]


def test_each_sample_weighs_the_time_nearest_to_it():
    hourly = _at(*[(h, '1') for h in range(4)])
    assert price_history.time_weights(hourly) == [
        HOUR_US / 2, HOUR_US, HOUR_US, HOUR_US / 2]
    assert price_history.time_weights(_at((0, '1'), (0, '2'))) == [1, 1]
    assert price_history.time_weights(_at((0, '1'))) == [1]


def test_a_burst_of_samples_counts_as_the_time_it_covers():
    # $1, a price spike sampled nine times in eight minutes a day later, $1
    # again a day after: by samples the spike is 9/11 of the market, by time
    # it weighs what one sample there would.
    burst = _at((0, '1'), *[(24 + m / 60, '10') for m in range(9)], (48, '1'))
    single = _at((0, '1'), (24, '10'), (48, '1'))
    prices = [p for _, p in burst]
    weights = price_history.time_weights(burst)
    assert price_history.coverage(prices, Decimal('1')) == price_history.Fraction(2, 11)
    by_time = price_history.coverage(prices, Decimal('1'), weights)
    assert by_time == price_history.Fraction(359, 720)
    assert abs(by_time - price_history.coverage(
        [p for _, p in single], Decimal('1'), price_history.time_weights(single))) < 0.01
    assert price_history.suggest_limit(prices, Decimal('0.45')) == Decimal('10.00')
    assert price_history.suggest_limit(prices, Decimal('0.45'), weights) == Decimal('1.00')


def test_a_limit_says_how_long_it_would_have_run_and_its_cost_per_day():
    # $2 for the first 18 h, $4 for the last 18 h (weights 6, 12, 12, 6 h).
    series = _at((0, '2'), (12, '2'), (24, '4'), (36, '4'))
    prices = [p for _, p in series]
    weights = price_history.time_weights(series)
    span_s = 36 * 3600
    assert price_history.outcome(prices, weights, span_s, Decimal('3')) == (
        price_history.LimitOutcome(Decimal('3'), price_history.Fraction(1, 2), 18.0,
                                   Decimal('24.00')))
    assert price_history.outcome(prices, weights, span_s, Decimal('4')) == (
        price_history.LimitOutcome(Decimal('4'), price_history.Fraction(1), 36.0,
                                   Decimal('72.00')))
    assert price_history.outcome(prices, weights, span_s, Decimal('1.99')).cost_per_day == 0
    assert [o.limit for o in price_history.outcomes(prices, weights, span_s,
                                                    Decimal('3.50'))] == d(
        '2.00', '3.50', '4.00')


def test_the_report_shows_each_limit_side_by_side():
    series = _at((0, '2'), (12, '2'), (24, '4'), (36, '4'))
    item = price_history.MarketHistory(H100_8, REGION_A, 'H100', 8, series)
    lines = price_history.describe(item, Decimal('0.5'), 2)
    assert lines[3] == ('  A limit of $2.00/h was at or above the spot price 50% of the '
                        'time these samples cover: 1 day 12 h of the last 2 days.')
    assert lines[5:] == [
        '  A bid at each limit over those 1 day 12 h, per instance (allocated while '
        'the spot price was at or below it, paying the spot price):',
        '    LIMIT    HELD         RAN  COST/DAY',
        '    $2.00/h   50%        18 h    $24.00  (suggested)',
        '    $4.00/h  100%  1 day 12 h    $72.00',
    ]
