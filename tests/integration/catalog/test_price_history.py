"""`sky-mithril prices` end to end against the emulator: scripted price
histories in two regions. (The statistics and the suggestion are in
tests/unit/catalog/test_price_history.py.)"""

import csv
import importlib.util
import re
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import requests

from sky_mithril import cli
from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import price_history
from sky_mithril.emulator.server import EmulatorServer

HAS_MATPLOTLIB = importlib.util.find_spec('matplotlib') is not None
H100_8 = 'h100-80gb.sxm.8x'
REGION_A, REGION_B, REGION_EMPTY = 'us-central2-a', 'us-central2-b', 'us-central2-c'
API_KEY = 'prices-test-key-5f3a'


def run(argv: List[str]) -> int:
    """`sky-mithril ARGV` through the real command-line entry point."""
    return cli.main(argv)


@pytest.fixture
def two_region_catalog(tmp_path: Path, monkeypatch) -> Path:
    """The shipped catalog plus h100-80gb.sxm.8x in two more regions."""
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    h100 = next(r for r in rows if r['InstanceType'] == H100_8)
    assert h100['Region'] == REGION_A
    rows += [dict(h100, Region=REGION_B), dict(h100, Region=REGION_EMPTY)]
    path = tmp_path / 'vms.csv'
    with path.open('w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=catalog_files.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setenv(catalog_files.ENV_CATALOG, str(path))
    return path


@pytest.fixture
def history_emulator(two_region_catalog: Path, tmp_path: Path,
                     monkeypatch) -> Iterator[EmulatorServer]:
    """An emulator on that catalog that never clears (so no live samples),
    with scripted histories in two regions; credentials point at it."""
    with EmulatorServer(catalog_path=two_region_catalog,
                        clearing_interval_s=1e9) as server:
        history = {
            # Ten hourly samples, plus one outside a 1-day window.
            REGION_A: [('$99.00', -3 * 86400)] + [
                (f'${price}.00', -3600 * (11 - i))
                for i, price in enumerate([13, 9, 11, 18, 10, 12, 14, 16, 17, 15], 1)],
            REGION_B: [('$4.00', -7200), ('$5.50', -5400), ('$4.00', -1800)],
        }
        for region, points in history.items():
            requests.post(f'{server.url}/_emulator/price-history', timeout=10, json={
                'instance_type': H100_8, 'region': region,
                'points': [{'price': p, 'offset_s': s} for p, s in points],
            }).raise_for_status()
        for name, value in {'MITHRIL_API_URL': server.url, 'MITHRIL_API_KEY': API_KEY,
                            'MITHRIL_PROJECT': 'proj_emulator',
                            'HOME': str(tmp_path), 'XDG_CONFIG_HOME': str(tmp_path)}.items():
            monkeypatch.setenv(name, value)
        yield server


def blocks(out: str) -> Dict[str, List[str]]:
    """Report lines per "TYPE (...) in REGION" heading."""
    found: Dict[str, List[str]] = {}
    current: List[str] = []
    for line in out.splitlines():
        match = re.match(r'\S+ \(\d+x \w+\) in (\S+?):', line)
        if match:
            current = found.setdefault(match.group(1), [])
        current.append(line)
    return found


def test_report_for_two_regions_of_one_type(history_emulator, capsys):
    assert run(['prices', 'h100:8', '--days', '1']) == 0
    captured = capsys.readouterr()
    assert API_KEY not in captured.out + captured.err
    by_region = blocks(captured.out)
    assert set(by_region) == {REGION_A, REGION_B, REGION_EMPTY}

    a = by_region[REGION_A]
    assert a[0].startswith(f'{H100_8} (8x H100) in {REGION_A}: 10 samples, ')
    # By time: the first and last hourly samples weigh half an hour each.
    assert a[1].split() == ['min', '$9.00', 'median', '$13.00', 'p90', '$18.00',
                            'max', '$18.00']
    spark = a[2].strip()
    assert len(spark) == 10 and set(spark) <= set(price_history.BARS)
    assert spark[0] == '▄' and spark[1] == '▁' and spark[3] == '█'
    assert a[3] == ('  A limit of $18.00/h was at or above the spot price 100% of '
                    'the time these samples cover: 9 h of the last 1 day.')
    assert a[4] == ('  Suggested limit: $18.00 per instance-hour ($2.25 per '
                    'GPU-hour for 8 GPUs).')
    assert a[6:10] == ['    LIMIT     HELD         RAN  COST/DAY',
                       '    $13.00/h   50%  4 h 30 min   $129.33',
                       '    $16.00/h   77%         7 h   $229.33',
                       '    $18.00/h  100%         9 h   $322.67  (suggested)']

    b = by_region[REGION_B]
    assert ': 3 samples, ' in b[0]
    assert b[1].split() == ['min', '$4.00', 'median', '$4.00', 'p90', '$5.50',
                            'max', '$5.50']
    assert b[2].strip() == '▁█▁'
    assert b[3].endswith('A limit of $5.50/h was at or above the spot price 100% of '
                         'the time these samples cover: 1 h 30 min of the last 1 day.')
    assert b[6:] == ['    LIMIT    HELD         RAN  COST/DAY',
                     '    $4.00/h   50%      45 min    $48.00',
                     '    $5.50/h  100%  1 h 30 min   $114.00  (suggested)',
                     '  The samples cover only 1 h 30 min of the last 1 day: too '
                     'little history to rely on.', '']

    assert by_region[REGION_EMPTY] == [
        f'{H100_8} (8x H100) in {REGION_EMPTY}: no price history in the last 1 day.']


def test_region_and_likelihood_options(history_emulator, capsys):
    assert run(['prices', 'H100:8', '--days', '1', '--region', REGION_A,
                '--likelihood', '50%']) == 0
    out = capsys.readouterr().out
    assert set(blocks(out)) == {REGION_A}
    assert 'A limit of $13.00/h was at or above the spot price 50% of the time ' in out
    assert 'a 50% allocation likelihood' in out


def test_a_longer_window_takes_in_older_samples(history_emulator, capsys):
    assert run(['prices', 'H100:8', '--region', REGION_A]) == 0
    a = blocks(capsys.readouterr().out)[REGION_A]
    assert ': 11 samples, ' in a[0] and a[1].split()[-1] == '$99.00'
    # The lone $99 sample stands for half the 62 h gap after it.
    assert a[3] == ('  A limit of $99.00/h was at or above the spot price 100% of '
                    'the time these samples cover: 2 days 23 h of the last 7 days.')


def test_a_rejected_key_is_an_error_without_the_key(tmp_path, capsys, monkeypatch):
    with EmulatorServer(api_key='right') as server:
        monkeypatch.setenv('MITHRIL_API_URL', server.url)
        monkeypatch.setenv('MITHRIL_API_KEY', API_KEY)
        monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
        assert run(['prices', 'H100:8']) == 1
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err.startswith('sky-mithril prices: ') and '401' in captured.err
    assert API_KEY not in captured.err


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason='matplotlib is not installed')
def test_plot_writes_a_png(history_emulator, tmp_path, capsys):
    chart = tmp_path / 'chart.png'
    assert run(['prices', 'H100:8', '--days', '1', '--plot', str(chart)]) == 0
    assert f'Wrote the chart to {chart}' in capsys.readouterr().out
    assert chart.read_bytes().startswith(b'\x89PNG')
