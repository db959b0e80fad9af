"""The recovery records under concurrent writers: many threads of one jobs
controller, and several processes, each writing its own records at once,
lose none of them. (The records are in SkyPilot's database: a process keeps
the one of the home it started in.)"""

import os
import subprocess
import sys
import threading
from pathlib import Path

from sky_mithril.recovery import records

from tests.helpers.recovery_records import forget_recovery_records

THREADS = 16
WRITES_PER_THREAD = 4


def write_at_once(prefix: str) -> None:
    """THREADS threads, released together, each marking its own clusters and
    recording its own standbys."""
    start = threading.Barrier(THREADS)

    def write(n: int) -> None:
        start.wait()
        for k in range(WRITES_PER_THREAD):
            records.mark(f'{prefix}-{n}-{k}', f'bid-{prefix}-{n}-{k}', k)
            records.set_standby(f'{prefix}-{n}-{k}', f'standby-{n}-{k}')

    threads = [threading.Thread(target=write, args=(n,))
               for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def assert_all_recorded(prefix: str) -> None:
    for n in range(THREADS):
        for k in range(WRITES_PER_THREAD):
            name = f'{prefix}-{n}-{k}'
            assert records.is_recovering(name), name
            assert records.preemptions_recovered(f'bid-{name}') == k, name
            assert records.standby_of(name) == f'standby-{n}-{k}', name


def test_threads_writing_at_once_lose_no_record():
    forget_recovery_records()
    write_at_once('threads')
    assert_all_recorded('threads')


def test_processes_writing_at_once_lose_no_record(tmp_path):
    """Two processes (each with THREADS threads) share one home's records,
    as a third process of that home reads them."""
    # This file's folder and the checkout (for `tests.helpers`) on the path.
    script = ('import pathlib, sys\n'
              'here = pathlib.Path(sys.argv[1])\n'
              'sys.path[:0] = [str(here), str(here.parents[2])]\n'
              'import test_recovery_records as t\n'
              'for prefix in sys.argv[3:]:\n'
              '    getattr(t, sys.argv[2])(prefix)\n')
    here = str(Path(__file__).parent)
    env = {**os.environ, 'HOME': str(tmp_path)}
    writers = [subprocess.Popen([sys.executable, '-c', script, here,
                                 'write_at_once', f'process{n}'], env=env)
               for n in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    subprocess.run([sys.executable, '-c', script, here, 'assert_all_recorded',
                    'process0', 'process1'], env=env, check=True, timeout=120)
