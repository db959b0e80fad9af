"""Writing files that other processes read while we write them.

Several processes of one SkyPilot API server (and the CLI beside them) write
the same files: the live catalog overlay, its state, the published catalog,
plugins.yaml. Each writer fills its own temporary file in the target's
directory and renames it over the target, so a reader sees the old file or the
new one, never half of one, and no two writers share a temporary name.
A read-modify-write of a shared file holds `locked`, an fcntl lock that
excludes other processes and other threads alike.

The plugin's own per-host files (`state_dir()`: market timing, this host's
live-price overlay) name API URLs, clusters and bids, so they are private to
their user: `write_private` and `locked` keep them as 0600 files in a 0700
directory, tightening a directory an older version left looser. What every
process of an API server must agree on is in SkyPilot's database instead
(`shared_state`).
"""

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Union

DEFAULT_MODE = 0o644
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def state_dir() -> Path:
    """`~/.sky/mithril/`, the plugin's own state (a path only; the writers
    make it, private)."""
    return Path.home() / '.sky' / 'mithril'


def make_private_dir(directory: Path) -> None:
    """Creates `directory` as 0700, or makes it 0700 when group or other
    users have any access to it."""
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) & 0o077:
        os.chmod(directory, PRIVATE_DIR_MODE)


def write_atomically(path: Path,
                     data: Union[str, bytes],
                     mode: int = DEFAULT_MODE) -> None:
    """Replaces `path` with `data` (str is written as UTF-8) in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent,
                               prefix=f'.{path.name}.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_private(path: Path, data: Union[str, bytes]) -> None:
    """`write_atomically` as a 0600 file in a 0700 directory."""
    make_private_dir(path.parent)
    write_atomically(path, data, mode=PRIVATE_FILE_MODE)


@contextlib.contextmanager
def locked(lock_path: Path, blocking: bool = True) -> Iterator[bool]:
    """Holds an exclusive lock on `lock_path` (created 0600 in a 0700
    directory if missing: locks guard the plugin's private state) and yields
    whether it is held: False only when not `blocking` and another holder has
    it. Each call opens the file anew, so threads of one process exclude each
    other as processes do."""
    make_private_dir(lock_path.parent)
    descriptor = os.open(lock_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                         PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, 'a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
