"""The plugin's state that every process of an API server shares (its
workers, its jobs controller, its replicas): entries in SkyPilot's own
database (`kv_cache`: SQLite for one user, the team's Postgres when the API
server's `db:` points there), changed under SkyPilot's locks (a file lock on
SQLite, a Postgres advisory lock on Postgres). Every key starts with
KEY_PREFIX and every lock id with LOCK_PREFIX, so the plugin's never meet
SkyPilot's own.

What the plugin reads from Mithril for everyone (the project snapshot, the
dashboard's answers) is built once per TTL across processes by `shared`,
and stamped with the project's generation, which every change the plugin
makes to the project bumps; `project_scope` names the project in their
keys and locks."""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
import typing
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

if typing.TYPE_CHECKING:
    from sky.utils import locks

logger = logging.getLogger('sky.sky_mithril.shared_state')
T = TypeVar('T')

KEY_PREFIX = 'sky-mithril/'
LOCK_PREFIX = 'sky-mithril-'
# How often a waiter asks for a held lock again. SkyPilot's Postgres lock
# asks once a second by default, a long wait for a budget check or a record.
LOCK_POLL_SECONDS = 0.05
# A project's folder of keys: its generation, and its snapshot beside it.
# (Named for the snapshot, the first value stamped with the generation.)
PROJECT_PREFIX = 'project-snapshot/'
BUILD_WAIT_SECONDS = 60.0
"""How long `shared` waits for another process building a value before
building one for its caller alone (not stored)."""
KEEP_SECONDS = 86400.0
"""How long `shared` keeps a value it built: far past any TTL, then
kv_cache drops it."""


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


def project_scope(api_url: str, project: Optional[str]) -> str:
    """The name in keys and locks of one project on one API endpoint, so
    processes pointed elsewhere (another profile, an emulator) never share
    its values."""
    return hashlib.sha256(f'{api_url}\n{project or ""}'.encode()
                          ).hexdigest()[:24]


def _project_folder(scope: str) -> str:
    return f'{PROJECT_PREFIX}{scope}/'


def project_key(scope: str, name: str) -> str:
    """The key `name` in the project's folder, beside its generation: a
    value `shared` keeps there is read with the generation in one query."""
    return f'{_project_folder(scope)}{name}'


def _generation_key(scope: str) -> str:
    return project_key(scope, 'generation')


def project_generation(scope: str) -> str:
    """The project's generation now ('' before any change): what every
    value read from the project is stamped with, to be stale once a change
    bumps it."""
    return get(_generation_key(scope)) or ''


def bump_generation(scope: str) -> None:
    """Makes every value stamped with the project's generation so far
    stale (`shared`), in every process."""
    put(_generation_key(scope), uuid.uuid4().hex, time.time() + KEEP_SECONDS)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A value `shared` stored: built from `at` (by its caller's clock),
    under the project's `generation` then (None for no project's)."""

    at: float
    generation: Optional[str]
    value: Any


# Per process: one builder thread per key, and each key's last stored entry
# decoded, with its text (decoding it again for each of a status refresh's
# clusters would cost more than reading it).
_builders: Dict[str, threading.Lock] = {}
_builders_lock = threading.Lock()
_decoded: Dict[str, Tuple[str, _Entry]] = {}


def _builder(key: str) -> threading.Lock:
    with _builders_lock:
        return _builders.setdefault(key, threading.Lock())


def _same(value: Any) -> Any:
    return value


def _any(_: Any) -> bool:
    return True


def _stored_and_generation(key: str, scope: Optional[str]
                           ) -> Tuple[Optional[str], str]:
    """The text under `key` and the generation of the project `scope`
    names ('' for none): in one query for a key in the project's folder."""
    if scope is None:
        return get(key), ''
    if key.startswith(_project_folder(scope)):
        entries = by_prefix(_project_folder(scope))
        return entries.get(key), entries.get(_generation_key(scope), '')
    return get(key), project_generation(scope)


def _fresh(key: str, ttl: float, clock: Callable[[], float],
           scope: Optional[str], decode: Callable[[Any], Any],
           usable: Callable[[Any], bool]) -> Optional[_Entry]:
    """The entry stored under `key` if built within `ttl` seconds, under
    the project's current generation (for a project's), and `usable`."""
    text, generation = _stored_and_generation(key, scope)
    if not text:
        return None
    memo = _decoded.get(key)
    if memo is not None and memo[0] == text:
        entry = memo[1]
    else:
        data: Dict[str, Any] = json.loads(text)
        entry = _Entry(float(data['at']), data['generation'],
                       decode(data['value']))
        _decoded[key] = (text, entry)
    # Replicas' clocks differ a little: a value from slightly ahead is fresh.
    if abs(clock() - entry.at) > ttl:
        return None
    if scope is not None and entry.generation != generation:
        return None
    return entry if usable(entry.value) else None


def _build_and_store(key: str, build: Callable[[str], T],
                     clock: Callable[[], float], scope: Optional[str],
                     encode: Callable[[T], Any]) -> T:
    """Builds the value and stores it, unless a change to the project bumped
    its generation meanwhile (then it is this caller's alone: a change
    between the check and the write bumps it again, and the value stamped
    with the old one is never read)."""
    started = clock()
    generation = project_generation(scope) if scope is not None else None
    value = build(generation or '')
    if scope is None or project_generation(scope) == generation:
        put(key, json.dumps({'at': started, 'generation': generation,
                             'value': encode(value)}),
            time.time() + KEEP_SECONDS)
    return value


def shared(key: str, ttl: float, build: Callable[[str], T], *,
           clock: Callable[[], float], scope: Optional[str] = None,
           encode: Callable[[T], Any] = _same,
           decode: Callable[[Any], T] = _same,
           usable: Callable[[T], bool] = _any) -> T:
    """The value under `key` built at most once per `ttl` seconds (aged by
    `clock`) for every thread and process: one thread per process and one
    process across them (SkyPilot's lock for `key`) calls `build`, the
    others wait and read what it stored, as `encode` makes it JSON-ready and
    `decode` reads it back. With a project's `scope`, `build` gets the
    project's generation, and a change the plugin makes to the project
    (`bump_generation`) makes the value stale at once. A stored value not
    `usable` is built again. What `build` raises is raised, and nothing is
    stored. The value is shared by this process's callers: read it, never
    change it."""
    from sky.utils import locks as sky_locks  # pylint: disable=import-outside-toplevel
    found = _fresh(key, ttl, clock, scope, decode, usable)
    if found is not None:
        return found.value
    with _builder(key):
        found = _fresh(key, ttl, clock, scope, decode, usable)
        if found is not None:
            return found.value
        try:
            with lock(key.replace('/', '-'), timeout=BUILD_WAIT_SECONDS):
                found = _fresh(key, ttl, clock, scope, decode, usable)
                if found is not None:
                    return found.value
                return _build_and_store(key, build, clock, scope, encode)
        except sky_locks.LockTimeout:
            logger.debug(f'Another process has been building {key} too '
                         'long; building it for this caller alone.')
            return build(project_generation(scope)
                         if scope is not None else '')
