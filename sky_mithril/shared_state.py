"""The plugin's state that every process of an API server shares (its
workers, its jobs controller, its replicas): entries in SkyPilot's own
database (`kv_cache`: SQLite for one user, the team's Postgres when the API
server's `db:` points there), changed under SkyPilot's locks (a file lock on
SQLite, a Postgres advisory lock on Postgres). Every key starts with
KEY_PREFIX and every lock id with LOCK_PREFIX, so the plugin's never meet
SkyPilot's own."""

import contextlib
import os
import typing
from pathlib import Path
from typing import Dict, Iterator, Optional

if typing.TYPE_CHECKING:
    from sky.utils import locks

KEY_PREFIX = 'sky-mithril/'
LOCK_PREFIX = 'sky-mithril-'
# How often a waiter asks for a held lock again. SkyPilot's Postgres lock
# asks once a second by default, a long wait for a budget check or a record.
LOCK_POLL_SECONDS = 0.05


def apart_from_api_server() -> bool:
    """Whether this process's SkyPilot database may be its own, not the API
    server's, so that the entries here are not every process's: the process
    descends from a SkyPilot controller (SkyPilot exports
    OVERRIDE_CONSOLIDATION_MODE in every jobs and serve controller process,
    and a remote controller's local API server, which that process starts,
    inherits it), on a host where no API server started in jobs
    consolidation mode (its start writes SkyPilot's signal file there), and
    the database is SQLite (no Postgres `db:`, which every process that
    names it shares)."""
    from sky.jobs import constants as jobs_constants  # pylint: disable=import-outside-toplevel
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    if os.environ.get(constants.OVERRIDE_CONSOLIDATION_MODE) is None:
        return False
    if os.environ.get(constants.ENV_VAR_DB_CONNECTION_URI):
        return False
    return not Path(jobs_constants.JOBS_CONSOLIDATION_RELOADED_SIGNAL_FILE
                    ).expanduser().exists()


def lock(name: str, timeout: Optional[float] = None) -> 'locks.DistributedLock':
    """SkyPilot's lock `name` (waits `timeout` seconds at most; None: as
    long as it takes)."""
    from sky.utils import locks as sky_locks  # pylint: disable=import-outside-toplevel
    return sky_locks.get_lock(f'{LOCK_PREFIX}{name}', timeout=timeout,
                              poll_interval=LOCK_POLL_SECONDS)


@contextlib.contextmanager
def held(name: str, blocking: bool = True) -> Iterator[bool]:
    """Holds SkyPilot's lock `name` and yields whether it is held: False
    only when not `blocking` and another process or thread holds it."""
    from sky.utils import locks as sky_locks  # pylint: disable=import-outside-toplevel
    distributed = lock(name)
    try:
        distributed.acquire(blocking=blocking)
    except sky_locks.LockTimeout:
        yield False
        return
    try:
        yield True
    finally:
        distributed.release()


def get(key: str) -> Optional[str]:
    """The unexpired value under `key` (a key without KEY_PREFIX)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    return kv_cache.get_cache_entry(f'{KEY_PREFIX}{key}')


def by_prefix(prefix: str) -> Dict[str, str]:
    """The unexpired values whose keys start with `prefix`, by key (both
    without KEY_PREFIX)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    return {key[len(KEY_PREFIX):]: value for key, value in
            kv_cache.get_cache_entries_by_prefix(f'{KEY_PREFIX}{prefix}').items()}


def put(key: str, value: str, expires_at: float) -> None:
    """Sets `key` to `value` until `expires_at` (epoch seconds)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kv_cache.add_or_update_cache_entry(f'{KEY_PREFIX}{key}', value, expires_at)


def forget(key: str) -> None:
    """Drops `key` (an expired entry is never read again)."""
    put(key, '', 0.0)
