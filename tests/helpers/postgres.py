"""A throwaway Postgres server for tests: Debian's `postgresql` (installed
when missing, as root), a cluster in a temp dir owned by the `postgres`
user, listening on 127.0.0.1 only, trusting local connections."""

import contextlib
import glob
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from sky_mithril.emulator.hosts import vm_image


def _bin_dir() -> Path:
    """The newest installed Postgres's programs (initdb, pg_ctl)."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
    if not found:
        vm_image.ensure_packages(['postgresql'], lambda line: print(line, flush=True))
        found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _as_postgres(*command: str) -> None:
    subprocess.run(['runuser', '-u', 'postgres', '--', *command], check=True,
                   stdout=subprocess.DEVNULL, timeout=120)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A running server; yields its connection URI (SQLAlchemy's form, as
    SkyPilot's `db:` takes it). Stopped and removed on exit."""
    programs = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix='sky-mithril-pg-'))
    shutil.chown(root, 'postgres', 'postgres')
    data = root / 'data'
    port = _free_port()
    _as_postgres(str(programs / 'initdb'), '-D', str(data), '-U', 'postgres',
                 '--auth=trust', '--no-sync')
    _as_postgres(str(programs / 'pg_ctl'), '-D', str(data), '-w', '-l',
                 str(root / 'server.log'), '-o',
                 f'-h 127.0.0.1 -p {port} -k {root} -c fsync=off', 'start')
    try:
        yield f'postgresql://postgres@127.0.0.1:{port}/postgres'
    finally:
        _as_postgres(str(programs / 'pg_ctl'), '-D', str(data), '-w', '-m',
                     'fast', 'stop')
        shutil.rmtree(root, ignore_errors=True)
