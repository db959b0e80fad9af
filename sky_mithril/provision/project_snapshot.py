"""One snapshot of the project, shared: its live bids, its live instances (its
bids', its reservations' and its CPU VMs') and, while any cluster holds
reserved instances, its reservations, taken with a few list requests and
answering every cluster's status refresh, and the dashboard's routes, for
TTL_SECONDS.

`sky status --refresh` queries the provisioner once per cluster; each query
reads this snapshot, so a refresh costs the same few requests for 1 or 100
clusters, and so does a second viewer refreshing at the same time. The
snapshot lives in SkyPilot's own database (`kv_cache`: SQLite for one user,
the team's Postgres when the API server's `db:` points there), so every
API-server process and replica reads the same one; one of them takes it per
TTL, under SkyPilot's lock for the project (a file lock, or a Postgres
advisory lock), while the others wait for it and read it. What is per
process is only the parsed copy of the stored snapshot (`_parsed`).

Every change the plugin makes to the project (a bid placed, paused, resumed,
re-priced or cancelled; reserved instances paused or resumed; a volume or a
reservation created or changed) runs under `changing`, which, once the
change is made or failed, bumps the project's generation: a snapshot taken
before it is never read again, not even one a refresher still writing it
took before the change (it is stamped with the generation it started
under), and neither is a dashboard answer (`shared_answers`). So a refresh
right after a launch, `sky stop` or `sky down` reads what Mithril says after
it. A change made outside the plugin (a preemption, the console) shows
within TTL_SECONDS.
"""

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

from sky import sky_logging

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.provision import reservation_claims

logger = sky_logging.init_logger('sky.sky_mithril.provision')

# How long a snapshot answers status queries. A few seconds: one `sky status
# --refresh` (SkyPilot queries its clusters in parallel) and the viewers
# refreshing with it share one, and a preemption shows within this.
TTL_SECONDS = 5.0
# How long a process waits for another to finish taking the snapshot before
# taking it itself (without storing it).
LOCK_SECONDS = 60.0
KEY_PREFIX = 'sky-mithril/project-snapshot/'
# Stored entries outlive their use by far; kv_cache drops them after this.
KEEP_SECONDS = 86400.0

_B = models.BidState
_I = models.InstanceState
# Bid states a bid lists under (Relocating is reported only by the status
# endpoint); each is one list request, as the API filters bids by one status.
LIVE_BID_STATES = (_B.OPEN, _B.ALLOCATED, _B.PREEMPTING, _B.PAUSED)
# The live instance states of Mithril's spec (it refuses a filter naming
# others); an instance in a state outside it reads as a node without one yet
# (booting, or gone and then read live).
LIVE_INSTANCE_STATES = (_I.NEW, _I.CONFIRMED, _I.INITIALIZING, _I.STARTING,
                        _I.RUNNING, _I.RELOCATING, _I.PREEMPTING,
                        _I.PREEMPTED, _I.PAUSED, _I.STOPPING, _I.ERROR)


def now() -> float:
    """The wall clock snapshots are stamped and aged by."""
    return time.time()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The project as Mithril listed it at `taken_at` (`now()`), under the
    project's `generation` then."""

    taken_at: float
    generation: str
    bids: List[models.Bid]
    instances: List[models.Instance]
    # None when no cluster held reserved instances as it was taken.
    reservations: Optional[List[models.Reservation]]

    def live_bids(self, name: str) -> List[models.Bid]:
        """Non-terminated bids named exactly `name`, newest first (as
        `cluster_bid.live_bids` reads them live)."""
        live = [b for b in self.bids
                if b.name == name and b.status != _B.TERMINATED]
        return sorted(live, key=lambda b: b.created_at, reverse=True)

    def instances_of_bid(self, bid_fid: str) -> List[models.Instance]:
        """The bid's live (not replaced, not terminated) instances."""
        return [i for i in self.instances if i.bid == bid_fid]

    def unbid_instances(self, name: str) -> List[models.Instance]:
        """Live instances named exactly `name` without a bid: the CPU VM of
        the cluster of that name (a reserved instance is named after its
        reservation)."""
        return [i for i in self.instances if i.name == name and i.bid is None]

    def reservation(self, reservation_fid: str) -> Optional[models.Reservation]:
        return next((r for r in self.reservations or ()
                     if r.fid == reservation_fid), None)

    def reserved_instances(self, reservation_fid: str) -> List[models.Instance]:
        """The reservation's live (not replaced, not terminated) instances."""
        return [i for i in self.instances if i.reservation == reservation_fid]

    def to_json(self) -> str:
        return json.dumps({
            'taken_at': self.taken_at,
            'generation': self.generation,
            'bids': [b.model_dump(mode='json') for b in self.bids],
            'instances': [i.model_dump(mode='json') for i in self.instances],
            'reservations': (None if self.reservations is None else
                             [r.model_dump(mode='json')
                              for r in self.reservations]),
        })

    @classmethod
    def from_json(cls, text: str) -> 'Snapshot':
        data: Dict[str, Any] = json.loads(text)
        reservations = data['reservations']
        return cls(
            taken_at=float(data['taken_at']),
            generation=str(data['generation']),
            bids=[models.Bid.model_validate(b) for b in data['bids']],
            instances=[models.Instance.model_validate(i)
                       for i in data['instances']],
            reservations=(None if reservations is None else
                          [models.Reservation.model_validate(r)
                           for r in reservations]))


def scope_of(conn: connection.Connection) -> str:
    """The project's name in keys and locks: one snapshot per API endpoint
    and project."""
    return hashlib.sha256(f'{conn.credentials.api_url}\n{conn.project_id}'
                          .encode()).hexdigest()[:24]


def _prefix(scope: str) -> str:
    return f'{KEY_PREFIX}{scope}/'


def _generation_key(scope: str) -> str:
    return f'{_prefix(scope)}generation'


def _snapshot_key(scope: str) -> str:
    return f'{_prefix(scope)}snapshot'


# Per process: the last stored snapshot parsed, by scope, with its stored
# text (parsing it again for each of a refresh's clusters would cost more
# than reading it); and one refresher thread per scope.
_parsed: Dict[str, Tuple[str, Snapshot]] = {}
_refreshers: Dict[str, threading.Lock] = {}
_refreshers_lock = threading.Lock()


def _stored(scope: str, with_reservations: bool) -> Optional[Snapshot]:
    """The stored snapshot, if it is fresh: taken within TTL_SECONDS, under
    the project's current generation, and holding reservations if asked."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    entries = kv_cache.get_cache_entries_by_prefix(_prefix(scope))
    text = entries.get(_snapshot_key(scope))
    if not text:
        return None
    memo = _parsed.get(scope)
    if memo is not None and memo[0] == text:
        snapshot = memo[1]
    else:
        snapshot = Snapshot.from_json(text)
        _parsed[scope] = (text, snapshot)
    if snapshot.generation != entries.get(_generation_key(scope), ''):
        return None
    # Replicas' clocks differ a little: a snapshot from slightly ahead is fresh.
    if abs(now() - snapshot.taken_at) > TTL_SECONDS:
        return None
    if with_reservations and snapshot.reservations is None:
        return None
    return snapshot


def current_generation(scope: str) -> str:
    """The project's generation now ('' before any change): what every
    value read from the project is stamped with, to be stale once a change
    bumps it."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    return kv_cache.get_cache_entry(_generation_key(scope)) or ''


def take(conn: connection.Connection, generation: str) -> Snapshot:
    """Lists the project's live bids (one request per live state), their
    live instances (one), and its reservations (one) while any cluster holds
    reserved instances; a list of more than a page costs a request per
    page."""
    taken_at = now()
    bids: Dict[str, models.Bid] = {}
    for state in LIVE_BID_STATES:
        for bid in conn.client.list_bids(conn.project_id, status=state):
            # A bid that changed state between two lists appears twice; it
            # can also be missed, which reads its cluster gone, and gone is
            # always confirmed live (`instance.query_instances`).
            bids[bid.fid] = bid
    instances = conn.client.list_instances(
        conn.project_id, status_in=list(LIVE_INSTANCE_STATES))
    reservations = (conn.client.list_reservations(conn.project_id)
                    if reservation_claims.any_claim() else None)
    return Snapshot(taken_at, generation, list(bids.values()), instances,
                    reservations)


def _refresher(scope: str) -> threading.Lock:
    with _refreshers_lock:
        return _refreshers.setdefault(scope, threading.Lock())


def current(conn: connection.Connection,
            with_reservations: bool = False) -> Snapshot:
    """A fresh snapshot of the project (with its reservations if asked):
    the stored one, else one taken now and stored for every process. One
    thread per process and one process across the API server's processes
    and replicas (SkyPilot's lock for the project) takes it; the others
    wait and read it. API errors raise."""
    scope = scope_of(conn)
    snapshot = _stored(scope, with_reservations)
    if snapshot is not None:
        return snapshot
    from sky.utils import locks  # pylint: disable=import-outside-toplevel
    with _refresher(scope):
        snapshot = _stored(scope, with_reservations)
        if snapshot is not None:
            return snapshot
        lock = locks.get_lock(f'sky-mithril-snapshot-{scope}',
                              timeout=LOCK_SECONDS)
        try:
            with lock:
                snapshot = _stored(scope, with_reservations)
                if snapshot is not None:
                    return snapshot
                return _take_and_store(conn, scope)
        except locks.LockTimeout:
            logger.debug('Another process has been taking the project '
                         'snapshot too long; taking one for this query.')
            return take(conn, current_generation(scope))


def _take_and_store(conn: connection.Connection, scope: str) -> Snapshot:
    """Takes the snapshot and stores it, unless a change bumped the
    generation meanwhile (then it is this query's answer only)."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    generation = current_generation(scope)
    snapshot = take(conn, generation)
    if current_generation(scope) == generation:
        # A change between this check and the write bumps the generation,
        # and the stored snapshot, stamped with the old one, is not read.
        kv_cache.add_or_update_cache_entry(_snapshot_key(scope),
                                           snapshot.to_json(),
                                           time.time() + KEEP_SECONDS)
    return snapshot


def invalidate(conn: connection.Connection) -> None:
    """Bumps the project's generation: no snapshot taken before is read
    again. A failure is reported, not raised: the change it follows is
    made; its refresh then may read the market as it was for up to
    TTL_SECONDS."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    try:
        kv_cache.add_or_update_cache_entry(
            _generation_key(scope_of(conn)), uuid.uuid4().hex,
            time.time() + KEEP_SECONDS)
    except Exception as e:  # pylint: disable=broad-except
        logger.warning(f'Could not mark the project snapshot stale: {e} '
                       'Status may show the market as it was before this '
                       f'change for up to {TTL_SECONDS:.0f}s.')


@contextlib.contextmanager
def changing(conn: connection.Connection) -> Iterator[None]:
    """Around a change to the project: once it is made, failed or
    interrupted (a request that failed may still have been applied), the
    snapshot is marked stale (`invalidate`)."""
    try:
        yield
    finally:
        invalidate(conn)
