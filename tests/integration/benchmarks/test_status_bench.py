"""benchmarks/status_bench.py on 1 and 4 clusters, run as a user runs it:
the printed table keeps what a reader checks (the snapshot's refresh costs
the same for any number of clusters, a second viewer nothing, the
per-cluster design two requests a cluster) and states the goal's verdict."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parents[3] / 'benchmarks' / 'status_bench.py'
COLUMNS = ('snapshot', 'second viewer', 'per-cluster')


def _rows(printed: str) -> Dict[int, Dict[str, int]]:
    """Requests per design, by number of clusters."""
    rows = {}
    for line in printed.splitlines():
        cells: List[str] = line.split()
        if cells and cells[0].isdigit() and len(cells) == 1 + 2 * len(COLUMNS):
            rows[int(cells[0])] = {column: int(cells[1 + 2 * n])
                                   for n, column in enumerate(COLUMNS)}
    return rows


def test_the_bench_prints_a_flat_refresh_cost_and_the_goal():
    printed = subprocess.run([sys.executable, str(BENCH), '1', '4'],
                             capture_output=True, text=True, check=True,
                             timeout=300).stdout
    rows = _rows(printed)
    assert sorted(rows) == [1, 4]
    assert rows[1]['snapshot'] == rows[4]['snapshot'] <= 6
    assert rows[4]['second viewer'] == 0
    assert [rows[n]['per-cluster'] for n in (1, 4)] == [2, 8]
    assert re.search(r'^Goal: at most 6 requests per refresh at 4 clusters: '
                     r'\d+ vs 8 per-cluster; the goal (holds|does not hold)\.$',
                     printed, re.MULTILINE)
