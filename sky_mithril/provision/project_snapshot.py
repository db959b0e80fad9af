"""One snapshot of the project, shared: its live bids, its live instances (its
bids', its reservations' and its CPU VMs') and, while any cluster holds
reserved instances, its reservations, taken with a few list requests and
answering every cluster's status refresh, and the dashboard's routes, for
TTL_SECONDS.

`sky status --refresh` queries the provisioner once per cluster; each query
reads this snapshot, so a refresh costs the same few requests for 1 or 100
clusters, and so does a second viewer refreshing at the same time. The
snapshot lives in SkyPilot's own database (`shared_state.shared`: SQLite for
one user, the team's Postgres when the API server's `db:` points there), so
every API-server process and replica reads the same one; one of them takes
it per TTL, under SkyPilot's lock for the project's snapshot, while the
others wait for it and read it.

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
import time
from typing import Any, Dict, Iterator, List, Optional

from sky import sky_logging

from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.provision import reservation_claims

logger = sky_logging.init_logger('sky.sky_mithril.provision')

# How long a snapshot answers status queries. A few seconds: one `sky status
# --refresh` (SkyPilot queries its clusters in parallel) and the viewers
# refreshing with it share one, and a preemption shows within this.
TTL_SECONDS = 5.0

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

    def to_json(self) -> Dict[str, Any]:
        """The snapshot as JSON-ready values (`from_json` reads them)."""
        return {
            'taken_at': self.taken_at,
            'generation': self.generation,
            'bids': [b.model_dump(mode='json') for b in self.bids],
            'instances': [i.model_dump(mode='json') for i in self.instances],
            'reservations': (None if self.reservations is None else
                             [r.model_dump(mode='json')
                              for r in self.reservations]),
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> 'Snapshot':
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
    """The project's name in keys and locks (`shared_state.project_scope`):
    one snapshot per API endpoint and project."""
    return shared_state.project_scope(conn.credentials.api_url,
                                      conn.project_id)


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


def current(conn: connection.Connection,
            with_reservations: bool = False) -> Snapshot:
    """A fresh snapshot of the project (with its reservations if asked):
    the stored one, else one taken now and stored for every process. One
    thread per process and one process across the API server's processes
    and replicas takes it (`shared_state.shared`); the others wait and read
    it. API errors raise."""
    scope = scope_of(conn)
    # Not under `snapshot`: earlier versions keep theirs there in a format
    # of their own, which a replica not yet upgraded may still be reading.
    return shared_state.shared(
        shared_state.project_key(scope, 'stamped-snapshot'), TTL_SECONDS,
        lambda generation: take(conn, generation), clock=now, scope=scope,
        encode=Snapshot.to_json, decode=Snapshot.from_json,
        usable=lambda snapshot: (not with_reservations or
                                 snapshot.reservations is not None))


def invalidate(conn: connection.Connection) -> None:
    """Bumps the project's generation: no snapshot taken before is read
    again. A failure is reported, not raised: the change it follows is
    made; its refresh then may read the market as it was for up to
    TTL_SECONDS."""
    try:
        shared_state.bump_generation(scope_of(conn))
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
