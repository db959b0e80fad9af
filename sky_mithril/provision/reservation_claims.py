"""Which SkyPilot cluster holds which reserved instance: one claim per
instance, in SkyPilot's own state database (`shared_state`: SQLite for one
user, the team's Postgres when the API server's `db:` points there), taken
under SkyPilot's lock for the reservation (a file lock, or a Postgres advisory
lock). Two launches, in two API-server workers or replicas, never claim one
instance, and claims outlive an API-server restart. A process whose SkyPilot
database is its own (a remote jobs or serve controller) sees none of them,
so it never claims (`refuse_apart_from_api_server`)."""

import dataclasses
import json
import time
import typing
from typing import Dict, List, Optional

from sky_mithril import shared_state
from sky_mithril.api import models

if typing.TYPE_CHECKING:
    from sky.utils import locks

KEY_PREFIX = 'reservation-claim/'
LOCK_SECONDS = 60.0
# A claim whose SkyPilot cluster no longer exists is stale, but a launch
# writes its claim before SkyPilot's cluster record can be read everywhere:
# a claim this young is never taken for stale.
FRESH_CLAIM_SECONDS = 900.0
# A claim is kept until it is released (`sky down`, a failed launch's undo)
# or taken for stale, however long its cluster sits unrefreshed and wherever
# its reservation's end moves: an entry's expiry in SkyPilot's database is
# this far future (9999-12-31). Claims of ended reservations whose cluster
# is gone are pruned (`prune_ended`).
KEPT_UNTIL_RELEASED = 253402300799.0


class SeparateDatabaseError(RuntimeError):
    """A launch names a reservation in a process that cannot see the API
    server's claims; the message names the fix."""


def refuse_apart_from_api_server(reservation: str) -> None:
    """SeparateDatabaseError, before any bid or claim, when this process's
    SkyPilot database is its own (`shared_state.apart_from_api_server`): it
    would take for free an instance a user's cluster holds, and its
    teardown would pause that instance and wipe its disk."""
    if not shared_state.apart_from_api_server():
        return
    raise SeparateDatabaseError(
        f'config.mithril.reservation names {reservation!r}, but this launch runs '
        'on a remote SkyPilot controller, whose SkyPilot database is its own: '
        'it cannot see which reserved instances the API server\'s clusters '
        'hold, and could take one of them. Run the controllers in '
        'consolidation mode (jobs.controller.consolidation_mode: true, and '
        'serve.controller.consolidation_mode: true for services, in the API '
        'server\'s config; then `sky api stop`), or give the API server and '
        'its controllers one shared Postgres database (`db:` in the API '
        'server\'s config); or drop config.mithril.reservation to run on '
        'spot.')


@dataclasses.dataclass(frozen=True)
class Claim:
    """A reserved instance held by one SkyPilot cluster."""

    instance_fid: str
    reservation_fid: str
    cluster_name: str
    cluster_name_on_cloud: str
    claimed_at: float
    # The reservation's end (epoch seconds) when the instance was claimed:
    # past it, a claim whose cluster is gone is pruned (`prune_ended`); 0
    # for a claim written before it was recorded.
    reservation_end: float = 0.0


def _key(reservation_fid: str, instance_fid: str) -> str:
    return f'{KEY_PREFIX}{reservation_fid}/{instance_fid}'


def _parse(value: str) -> Optional[Claim]:
    try:
        return Claim(**json.loads(value))
    except (TypeError, ValueError):
        return None


def lock(reservation_fid: str) -> 'locks.DistributedLock':
    """SkyPilot's lock for changing the claims on one reservation."""
    return shared_state.lock(f'reservation-{reservation_fid}',
                             timeout=LOCK_SECONDS)


def on(reservation_fid: str) -> Dict[str, Claim]:
    """The claims on a reservation, by instance fid."""
    claims = {}
    for value in shared_state.by_prefix(
            f'{KEY_PREFIX}{reservation_fid}/').values():
        claim = _parse(value)
        if claim is not None:
            claims[claim.instance_fid] = claim
    return claims


def of_cluster(cluster_name_on_cloud: str) -> List[Claim]:
    """The instances a cluster holds, in the order they were claimed (the
    head first)."""
    claims = [c for c in (_parse(v) for v in
                          shared_state.by_prefix(KEY_PREFIX).values())
              if c is not None and c.cluster_name_on_cloud == cluster_name_on_cloud]
    return sorted(claims, key=lambda c: (c.claimed_at, c.instance_fid))


def any_claim() -> bool:
    """Whether any cluster holds reserved instances."""
    return any(_parse(v) is not None for v in
               shared_state.by_prefix(KEY_PREFIX).values())


def _put(claim: Claim) -> None:
    """Stores the claim until it is released."""
    shared_state.put(_key(claim.reservation_fid, claim.instance_fid),
                     json.dumps(dataclasses.asdict(claim)),
                     KEPT_UNTIL_RELEASED)


def write(reservation: models.Reservation, instance_fids: List[str],
          cluster_name: str, cluster_name_on_cloud: str) -> List[Claim]:
    """Records the cluster's claim on each instance (call under `lock`)."""
    now = time.time()
    claims = []
    for index, fid in enumerate(instance_fids):
        # Microseconds apart, so the head (first) sorts first.
        claim = Claim(fid, reservation.fid, cluster_name,
                      cluster_name_on_cloud, now + index * 1e-6,
                      reservation.end_time.timestamp())
        _put(claim)
        claims.append(claim)
    return claims


def release(claims: List[Claim]) -> None:
    """Forgets the claims (an expired entry is never read again)."""
    for claim in claims:
        shared_state.forget(_key(claim.reservation_fid, claim.instance_fid))


def is_stale(claim: Claim) -> bool:
    """A claim older than FRESH_CLAIM_SECONDS whose SkyPilot cluster is gone
    (`sky down` or a failed launch that could not release it)."""
    if time.time() - claim.claimed_at < FRESH_CLAIM_SECONDS:
        return False
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    return global_user_state.get_cluster_from_name(claim.cluster_name) is None


def prune_ended() -> None:
    """Releases the claims whose reservation's recorded end has passed and
    whose cluster is gone (`is_stale`), so SkyPilot's database does not
    keep them for ever. An extended reservation's claim may read ended
    here, but one whose cluster is gone is free for any launch already.
    Each is released under its reservation's lock, only while it is still
    the one stored (a launch may have claimed the instance meanwhile)."""
    now = time.time()
    ended = [c for c in (_parse(v) for v in
                         shared_state.by_prefix(KEY_PREFIX).values())
             if c is not None and c.reservation_end < now and is_stale(c)]
    for reservation_fid in sorted({c.reservation_fid for c in ended}):
        with lock(reservation_fid):
            stored = on(reservation_fid)
            release([c for c in ended if c.reservation_fid == reservation_fid
                     and stored.get(c.instance_fid) == c])
