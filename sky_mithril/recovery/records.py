"""Managed-job recoveries after a Mithril preemption, as the jobs controller
started them: which clusters are being relaunched (so the relaunch bids at
the task's `recovery_limit_price`), how many of a bid's preemptions have
already been recovered from (so a bid that a relaunch keeps is not recovered
again for the same preemption), and which live bid of a cluster is the
standby placed during a notice (so the cluster's bid stays the old one until
the standby is promoted).

The jobs controller records here just before it recovers a cluster
(`runtime`) and while it readies a standby (`standby`); the cloud reads the
record when it renders that cluster's next launch, and the provisioner when a
cluster has two live bids. All run on the API server (jobs controller
consolidation mode), many threads of one controller at once, and on a team
server in several processes or replicas: the records live in SkyPilot's
database (`shared_state`), one entry per cluster, bid and standby, and every
read-modify-write holds SkyPilot's lock, which excludes other threads,
processes and replicas alike. A job's cluster name is unique to the job, and
records older than a day expire.
"""

import contextlib
import json
import time
from typing import Iterator, List, Optional

from sky_mithril import shared_state

KEEP_SECONDS = 24 * 3600.0
# A recorded standby is being prepared while its heartbeat (the record's
# time, set when it is placed and refreshed by `StandbyWatch` every few
# seconds) is younger than this: longer than its placement, where the watch
# does not run yet (up to three POSTs, each with a 60 s window for a lost
# answer's late commit), and as long as one preemption notice.
STANDBY_STALE_SECONDS = 300.0

KEY_PREFIX = 'recovery/'
# Held by every read-modify-write of the records.
RECORDS_LOCK = 'recoveries'
# Held while a cluster's standby is promoted or dropped (`choosing_bids`).
STANDBYS_LOCK = 'standbys'


def _cluster_key(cluster_name: str) -> str:
    return f'{KEY_PREFIX}cluster/{cluster_name}'


def _bid_key(bid_fid: str) -> str:
    return f'{KEY_PREFIX}bid/{bid_fid}'


def _standby_key(name_on_cloud: str) -> str:
    return f'{KEY_PREFIX}standby/{name_on_cloud}'


@contextlib.contextmanager
def choosing_bids() -> Iterator[None]:
    """Held while which of a cluster's two bids stays is decided and the
    other cancelled (a standby promoted or dropped), by the jobs controller
    and by the standby's guard alike: the two never cancel one bid each.
    One lock for every cluster: these are rare, and short."""
    with shared_state.held(STANDBYS_LOCK):
        yield


def _read_pair(key: str) -> Optional[List]:
    """The [value, recorded at] stored under `key`, None when there is none
    (or it cannot be read)."""
    try:
        value = shared_state.get(key)
        if not value:
            return None
        pair = json.loads(value)
        return [pair[0], float(pair[1])]
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def _write_pair(key: str, value: object, at: float) -> None:
    shared_state.put(key, json.dumps([value, at]), at + KEEP_SECONDS)


def mark(cluster_name: str, bid_fid: str, preemptions: int) -> None:
    """Records that `cluster_name` is about to be relaunched, having seen
    `preemptions` preemptions of its bid `bid_fid` ('' for a cluster on
    reserved instances, which has no bid)."""
    with shared_state.held(RECORDS_LOCK):
        now = time.time()
        _write_pair(_cluster_key(cluster_name), None, now)
        if bid_fid:
            _write_pair(_bid_key(bid_fid), preemptions, now)


def is_recovering(cluster_name: str) -> bool:
    """Whether `cluster_name` was preempted and is being relaunched."""
    return _read_pair(_cluster_key(cluster_name)) is not None


def preemptions_recovered(bid_fid: str) -> int:
    """How many of the bid's preemptions a recovery already handled."""
    entry = _read_pair(_bid_key(bid_fid))
    try:
        return 0 if entry is None else int(entry[0])
    except (ValueError, TypeError):
        return 0


def _standby_entry(name_on_cloud: str) -> Optional[List]:
    entry = _read_pair(_standby_key(name_on_cloud))
    return None if entry is None else [str(entry[0]), entry[1]]


def set_standby(name_on_cloud: str, bid_fid: str) -> None:
    """Records `bid_fid` as the standby of the cluster's bid; '' while it is
    being placed (its fid not known yet), and after a placement that failed
    while a bid of it may still be committed (`standby.place_standby`)."""
    with shared_state.held(RECORDS_LOCK):
        _write_pair(_standby_key(name_on_cloud), bid_fid, time.time())


def settle_standby(name_on_cloud: str, bid_fid: str) -> bool:
    """Records `bid_fid` as the standby whose placement the cluster's record
    says is under way (`set_standby(name, '')`); '' keeps it recorded as
    being placed, from now. Only while that record is there: False, and
    nothing written, once it is gone, the cluster torn down meanwhile (`sky
    down`, or SkyPilot's teardown after `sky jobs cancel`) or its standby
    dropped, so a placement that outlived it never writes it back."""
    with shared_state.held(RECORDS_LOCK):
        entry = _standby_entry(name_on_cloud)
        if entry is None or entry[0] != '':
            return False
        _write_pair(_standby_key(name_on_cloud), bid_fid, time.time())
        return True


def standby_of(name_on_cloud: str) -> Optional[str]:
    """The fid of the cluster's standby bid ('' while it is being placed), or
    None when it has none."""
    entry = _standby_entry(name_on_cloud)
    return None if entry is None else entry[0]


def touch_standby(name_on_cloud: str, bid_fid: str) -> None:
    """Refreshes the heartbeat of the cluster's standby `bid_fid`: it is
    still being prepared. Nothing if the record names another or none."""
    with shared_state.held(RECORDS_LOCK):
        entry = _standby_entry(name_on_cloud)
        if entry is not None and entry[0] == bid_fid:
            _write_pair(_standby_key(name_on_cloud), bid_fid, time.time())


def standby_being_prepared(name_on_cloud: str) -> bool:
    """Whether the cluster's recorded standby has a heartbeat younger than
    STANDBY_STALE_SECONDS."""
    entry = _standby_entry(name_on_cloud)
    return (entry is not None and
            time.time() - entry[1] < STANDBY_STALE_SECONDS)


def forget_standby(name_on_cloud: str) -> None:
    """The cluster has no standby any more (promoted or cancelled)."""
    with shared_state.held(RECORDS_LOCK):
        if _standby_entry(name_on_cloud) is not None:
            shared_state.forget(_standby_key(name_on_cloud))
