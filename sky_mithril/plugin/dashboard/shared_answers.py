"""What the dashboard's routes read from Mithril, shared by every viewer and
every process of the API server (its workers, its replicas), so any number
of viewers loading a page within a TTL cost Mithril what one does.

Each value is JSON kept in SkyPilot's database by `shared_state.shared`,
aged by `project_snapshot.now` (the clock the project snapshot ages by):
one thread per process and one process across them builds a stale value,
the others wait and read it. A value read from the project (its bids,
volumes, reservations) is stamped with the project's generation, so a change
the plugin makes (`project_snapshot.changing`) makes it stale at once.
Values are what Mithril answered, never the API key."""

from typing import Callable, Optional, TypeVar

from sky_mithril import shared_state
from sky_mithril.provision import project_snapshot

T = TypeVar('T')

TTL_SECONDS = project_snapshot.TTL_SECONDS
"""How long a route's answer is shared: as long as the snapshot it reads."""
SLOW_TTL_SECONDS = 300.0
"""How long what moves slowly is shared: the instance types, and the 7-day
price history (a sample per ~50 minutes)."""
KEY_PREFIX = 'dashboard/'


def shared(key: str, ttl: float, build: Callable[[], T],
           project: Optional[str] = None) -> T:
    """`build()`'s JSON-ready value, built at most once per `ttl` seconds
    for every viewer and process; for a `project`'s value (its
    `project_snapshot.scope_of`), built again after any change the plugin
    makes to it. What `build` raises is raised, and nothing is stored."""
    return shared_state.shared(f'{KEY_PREFIX}{key}', ttl,
                               lambda _generation: build(),
                               clock=project_snapshot.now, scope=project)
