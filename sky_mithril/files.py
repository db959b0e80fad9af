"""Writing files that other processes read while we write them.

Several processes of one SkyPilot API server (and the CLI beside them) write
the same files: the live catalog overlay, its state, the published catalog,
plugins.yaml. Each writer fills its own temporary file in the target's
directory and renames it over the target, so a reader sees the old file or the
new one, never half of one, and no two writers share a temporary name.
A read-modify-write of a shared file holds `locked`, an fcntl lock that
excludes other processes and other threads alike.
"""

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

DEFAULT_MODE = 0o644


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


@contextlib.contextmanager
def locked(lock_path: Path, blocking: bool = True) -> Iterator[bool]:
    """Holds an exclusive lock on `lock_path` (created if missing) and yields
    whether it is held: False only when not `blocking` and another holder has
    it. Each call opens the file anew, so threads of one process exclude each
    other as processes do."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open('a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
