"""benchmarks/reservation_bench.py on a tiny demand curve: the printed table
keeps what a user reading it would check (no policy runs more jobs than it
has nodes, spot pays no more than its limit, every job is counted, the
reservation costs its quote)."""

import importlib.util
import re
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Dict, List

import pytest

BENCH = Path(__file__).resolve().parents[3] / 'benchmarks' / 'reservation_bench.py'


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location('reservation_bench', BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
# Four hours of a Monday morning: the reservation's shortest window is three.
TINY = bench.Scenario(hours=4, base_gap_h=0.5, base_work_h=(0.5, 1.5),
                      sweep_gap_h=1.0, sweep_jobs=(2, 4),
                      sweep_work_h=(0.25, 1.0))
POLICIES = ('spot only', 'reservation only', 'reservation first')


@pytest.fixture(scope='module')
def printed() -> str:
    """What `main` prints for the tiny curve, less its run time."""
    lines = bench.report(bench.compare(TINY))
    return '\n'.join(lines)


def _table(printed: str) -> Dict[str, Dict[str, str]]:
    """The table's rows by title, each its cells by policy."""
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines)
                  if re.split(r'\s{2,}', line.strip()) == list(POLICIES))
    rows = {}
    for line in lines[header + 1:]:
        if line.startswith('Goal:'):
            break
        title, *cells = re.split(r'\s{2,}', line.strip())
        assert len(cells) == len(POLICIES), line
        rows[title] = dict(zip(POLICIES, cells))
    return rows


def _row(table: Dict[str, Dict[str, str]], starts: str) -> Dict[str, str]:
    [title] = [title for title in table if title.startswith(starts)]
    return table[title]


def _dollars(text: str) -> Decimal:
    return Decimal(text.lstrip('$'))


def test_no_policy_runs_more_jobs_than_it_has_nodes(printed: str) -> None:
    table = _table(printed)
    on_reserved = _row(table, 'most jobs running at once on reserved nodes')
    on_spot = _row(table, 'most jobs running at once on spot nodes')
    capacity = bench.DEFAULT_CAPACITY
    assert int(on_reserved['spot only']) == 0
    assert int(on_spot['spot only']) <= capacity
    assert int(on_reserved['reservation only']) <= bench.RESERVED_NODES
    assert int(on_spot['reservation only']) == 0
    assert int(on_reserved['reservation first']) <= bench.RESERVED_NODES
    # The reserved nodes leave the spot pool.
    assert int(on_spot['reservation first']) <= capacity - bench.RESERVED_NODES
    assert int(on_spot['spot only']) > 0, 'the curve should use spot'


def test_spot_pays_at_most_its_limit(printed: str) -> None:
    table = _table(printed)
    [title] = [t for t in table if t.startswith('highest spot price paid')]
    limit = _dollars(re.fullmatch(r'.*\(limit (\$[\d.]+)\)', title).group(1))
    paid = table[title]
    assert paid['reservation only'] == '-'
    for policy in ('spot only', 'reservation first'):
        assert _dollars(paid[policy]) <= limit
    assert Decimal(table['spot, charged ($)']['reservation only']) == 0


def test_every_job_completes_or_is_reported_incomplete(printed: str) -> None:
    table = _table(printed)
    [title] = [t for t in table if t.startswith('jobs completed (of ')]
    submitted = int(re.search(r'\(of (\d+)\)', title).group(1))
    assert submitted > 0
    work = float(re.search(r'([\d.]+) job-hours of work', printed).group(1))
    for policy in POLICIES:
        incomplete = table['jobs incomplete at the end'][policy]
        count, left_h = re.fullmatch(r'(\d+) \(([\d.]+) h left\)',
                                     incomplete).groups()
        assert int(table[title][policy]) + int(count) == submitted
        done = float(table['work done (job-hours)'][policy])
        assert done + float(left_h) == pytest.approx(work, abs=0.11)


def test_the_reservation_costs_its_quote_up_front(printed: str) -> None:
    table = _table(printed)
    unit_price = _dollars(re.search(r'Reservation: \d+ nodes x \d+ h at '
                                    r'(\$[\d.]+)/h', printed).group(1))
    up_front = table['reservation, up front ($)']
    expected = unit_price * TINY.hours * bench.RESERVED_NODES
    assert Decimal(up_front['spot only']) == 0
    assert Decimal(up_front['reservation only']) == expected
    assert Decimal(up_front['reservation first']) == expected
    for policy in POLICIES:
        assert Decimal(table['total ($)'][policy]) == (
            Decimal(up_front[policy]) +
            Decimal(table['spot, charged ($)'][policy]))


def test_the_goal_is_stated_with_its_verdict(printed: str) -> None:
    lines: List[str] = printed.splitlines()
    assert any(line.startswith('Goal: reservation first costs no more')
               for line in lines)
    verdicts = [line for line in lines if line.startswith(('  cost:', '  wait:'))]
    assert len(verdicts) == 2
    assert all(line.endswith((': holds', ': does not hold')) for line in verdicts)
    assert re.search(r'^The goal (holds|does not hold) on this demand curve\.$',
                     printed, re.MULTILINE)
