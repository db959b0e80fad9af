"""Searching files for a secret (an API key): which files below a directory
hold it, gzip-compressed files (rotated logs) included. Shared by the secrets
tests and the end-to-end hello test, which scans the node disks."""

import gzip
import os
from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

_CHUNK = 1 << 20


def file_holds(path: Path, needle: bytes) -> bool:
    """True when the file (gunzipped if it is gzip) contains `needle`."""
    try:
        with open(path, 'rb') as f:
            gzipped = f.read(2) == b'\x1f\x8b'
        opener = gzip.open if gzipped else open
        tail = b''
        with opener(path, 'rb') as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return False
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle):]
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def _open_here() -> Set[Tuple[int, int]]:
    """(device, inode) of every file this process holds open."""
    opened = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            stat = os.stat(f'/proc/self/fd/{fd}')
        except OSError:
            continue
        opened.add((stat.st_dev, stat.st_ino))
    return opened


def files_under(root: Path, changed_since: Optional[float] = None,
                skip: Tuple[Path, ...] = ()) -> Iterator[Path]:
    """Regular files below `root` (symlinks not followed), but those this
    process holds open: closing a file drops every POSIX lock the process
    holds on it, so reading this process's own SQLite databases (SkyPilot's
    kv_cache under the session's HOME) would release SQLite's locks under
    it, and another process could then delete its WAL ("disk I/O error")."""
    open_here = _open_here()
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(directory)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in filenames:
            path = here / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            if (not path.is_file() or path.is_symlink() or
                    (stat.st_dev, stat.st_ino) in open_here):
                continue
            if changed_since is not None and max(stat.st_mtime,
                                                 stat.st_ctime) < changed_since:
                continue
            yield path


def files_holding_key(root: Path, key: str,
                      **kwargs) -> Tuple[List[Path], int]:
    """(files below `root` that contain `key`, how many files were searched);
    `kwargs` go to `files_under`."""
    hits, searched = [], 0
    for path in files_under(root, **kwargs):
        searched += 1
        if file_holds(path, key.encode()):
            hits.append(path)
    return hits, searched
