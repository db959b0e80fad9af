"""The suite's own schedule under pytest-xdist, as CI runs it: a module's
tests share one worker, or its fixtures are built once per worker and CI
pays for every launch twice."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_modules_tests_run_on_one_worker() -> None:
    module = 'tests/unit/test_files.py'
    run = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-n', '2', '-v',
         module], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    workers = re.findall(rf'\[(gw\d)\] .*PASSED {re.escape(module)}::', run.stdout)
    assert len(workers) == 3, run.stdout[-3000:]
    assert len(set(workers)) == 1, (
        f'one module\'s tests ran on {sorted(set(workers))}:\n{run.stdout[-3000:]}')
