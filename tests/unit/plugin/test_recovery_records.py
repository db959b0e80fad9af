"""The recovery records under concurrent writers: many threads of one jobs
controller, and several processes, each writing its own records at once,
lose none of them."""

import os
import subprocess
import sys
import threading
from pathlib import Path

from sky_mithril.recovery import records

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


def test_threads_writing_at_once_lose_no_record(monkeypatch, tmp_path):
    monkeypatch.setattr(records, '_path', lambda: tmp_path / 'recoveries.json')
    write_at_once('threads')
    assert_all_recorded('threads')


def test_processes_writing_at_once_lose_no_record(monkeypatch, tmp_path):
    """Two processes (each with THREADS threads) share one home's records."""
    script = ('import sys\n'
              'sys.path.insert(0, sys.argv[1])\n'
              'import test_recovery_records as t\n'
              't.write_at_once(sys.argv[2])\n')
    here = str(Path(__file__).parent)
    env = {**os.environ, 'HOME': str(tmp_path)}
    writers = [subprocess.Popen([sys.executable, '-c', script, here,
                                 f'process{n}'], env=env)
               for n in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    monkeypatch.setenv('HOME', str(tmp_path))
    for n in range(2):
        assert_all_recorded(f'process{n}')
