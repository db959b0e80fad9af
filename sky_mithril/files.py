"""Writing files that other processes read while we write them.

Several processes of one SkyPilot API server (and the CLI beside them) write
the same files: the live catalog overlay, its state, the published catalog,
plugins.yaml. Each writer fills its own temporary file in the target's
directory and renames it over the target, so a reader sees the old file or the
new one, never half of one, and no two writers share a temporary name.
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Union

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
