"""What the dashboard's routes read from Mithril, shared by every viewer and
every process of the API server (its workers, its replicas), so any number
of viewers loading a page within a TTL cost Mithril what one does.

Each value is JSON kept in SkyPilot's database (`shared_state`) with the
time it was built (`project_snapshot.now`, the clock the project snapshot
ages by). One thread per process and one process across them builds a
stale value, under SkyPilot's lock for it; the others wait and read it. A
value read from the project (its bids, volumes, reservations) is stamped
with the project's generation, so a change the plugin makes
(`project_snapshot.changing`) makes it stale at once. Values are what
Mithril answered, never the API key."""

import json
import threading
import time
from typing import Any, Callable, Dict, Optional, TypeVar

from sky_mithril import shared_state
from sky_mithril.provision import project_snapshot

T = TypeVar('T')

TTL_SECONDS = project_snapshot.TTL_SECONDS
"""How long a route's answer is shared: as long as the snapshot it reads."""
SLOW_TTL_SECONDS = 300.0
"""How long what moves slowly is shared: the instance types, and the 7-day
price history (a sample per ~50 minutes)."""
LOCK_SECONDS = 60.0
"""How long a process waits for another building a value before building
one for itself (not shared)."""
KEY_PREFIX = 'dashboard/'

_builders: Dict[str, threading.Lock] = {}
_builders_lock = threading.Lock()


def _builder(key: str) -> threading.Lock:
    with _builders_lock:
        return _builders.setdefault(key, threading.Lock())


def _fresh(key: str, ttl: float,
           project: Optional[str]) -> Optional[Dict[str, Any]]:
    """The entry stored under `key` if built within `ttl` seconds and, for
    a `project`'s value, under its current generation."""
    text = shared_state.get(key)
    if not text:
        return None
    entry: Dict[str, Any] = json.loads(text)
    if abs(project_snapshot.now() - entry['at']) > ttl:
        return None
    if project is None:
        return entry
    fresh = entry['generation'] == project_snapshot.current_generation(project)
    return entry if fresh else None


def _build_and_store(key: str, build: Callable[[], T],
                     project: Optional[str]) -> T:
    """Builds the value and stores it, unless a change to `project` bumped
    its generation meanwhile (then it is this caller's alone)."""
    started = project_snapshot.now()
    generation = (project_snapshot.current_generation(project)
                  if project is not None else None)
    value = build()
    if (project is None or
            project_snapshot.current_generation(project) == generation):
        shared_state.put(key, json.dumps({'at': started,
                                          'generation': generation,
                                          'value': value}),
                         time.time() + project_snapshot.KEEP_SECONDS)
    return value


def shared(key: str, ttl: float, build: Callable[[], T],
           project: Optional[str] = None) -> T:
    """`build()`'s JSON-ready value, built at most once per `ttl` seconds
    for every viewer and process; for a `project`'s value (its
    `project_snapshot.scope_of`), built again after any change the plugin
    makes to it. What `build` raises is raised, and nothing is stored."""
    from sky.utils import locks  # pylint: disable=import-outside-toplevel
    key = f'{KEY_PREFIX}{key}'
    found = _fresh(key, ttl, project)
    if found is not None:
        return found['value']
    with _builder(key):
        found = _fresh(key, ttl, project)
        if found is not None:
            return found['value']
        try:
            with shared_state.lock(key.replace('/', '-'), timeout=LOCK_SECONDS):
                found = _fresh(key, ttl, project)
                if found is not None:
                    return found['value']
                return _build_and_store(key, build, project)
        except locks.LockTimeout:
            return build()
