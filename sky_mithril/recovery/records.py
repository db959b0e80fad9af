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
cluster has two live bids. All run on the API server's host (jobs controller
consolidation mode), many threads of one controller at once: every
read-modify-write holds a file lock (`files.locked`), which excludes other
threads and processes alike. A job's cluster name is unique to the job, and
records older than a day are dropped.
"""

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from sky_mithril import files

KEEP_SECONDS = 24 * 3600.0
# A recorded standby is being prepared while its heartbeat (the record's
# time, set when it is placed and refreshed by `StandbyWatch` every few
# seconds) is younger than this: longer than its placement, where the watch
# does not run yet (up to three POSTs, each with a 60 s window for a lost
# answer's late commit), and as long as one preemption notice.
STANDBY_STALE_SECONDS = 300.0


def _path() -> Path:
    return files.state_dir() / 'recoveries.json'


def _lock_path() -> Path:
    return _path().with_name('recoveries.lock')


@contextlib.contextmanager
def choosing_bids() -> Iterator[None]:
    """Held while which of a cluster's two bids stays is decided and the
    other cancelled (a standby promoted or dropped), by the jobs controller
    and by the standby's guard alike: the two never cancel one bid each.
    One lock for every cluster: these are rare, and short."""
    with files.locked(_path().with_name('standbys.lock')):
        yield


def _read() -> Dict[str, Dict[str, Any]]:
    """{'clusters': {name: marked at}, 'bids': {fid: [preemptions, at]},
    'standbys': {name on cloud: [standby fid, at]}}, without records older
    than KEEP_SECONDS."""
    try:
        data = json.loads(_path().read_text())
        now = time.time()
        return {
            'clusters': {k: float(v) for k, v in data['clusters'].items()
                         if now - float(v) < KEEP_SECONDS},
            'bids': {k: [int(v[0]), float(v[1])] for k, v in
                     data['bids'].items() if now - float(v[1]) < KEEP_SECONDS},
            'standbys': {k: [str(v[0]), float(v[1])] for k, v in
                         data.get('standbys', {}).items()
                         if now - float(v[1]) < KEEP_SECONDS},
        }
    except (OSError, ValueError, KeyError, TypeError, IndexError,
            AttributeError):
        return {'clusters': {}, 'bids': {}, 'standbys': {}}


def mark(cluster_name: str, bid_fid: str, preemptions: int) -> None:
    """Records that `cluster_name` is about to be relaunched, having seen
    `preemptions` preemptions of its bid `bid_fid` ('' for a cluster on
    reserved instances, which has no bid)."""
    with files.locked(_lock_path()):
        records = _read()
        now = time.time()
        records['clusters'][cluster_name] = now
        if bid_fid:
            records['bids'][bid_fid] = [preemptions, now]
        files.write_private(_path(), json.dumps(records))


def is_recovering(cluster_name: str) -> bool:
    """Whether `cluster_name` was preempted and is being relaunched."""
    return cluster_name in _read()['clusters']


def preemptions_recovered(bid_fid: str) -> int:
    """How many of the bid's preemptions a recovery already handled."""
    return _read()['bids'].get(bid_fid, [0])[0]


def set_standby(name_on_cloud: str, bid_fid: str) -> None:
    """Records `bid_fid` as the standby of the cluster's bid; '' while it is
    being placed (its fid not known yet), and after a placement that failed
    while a bid of it may still be committed (`standby.place_standby`)."""
    with files.locked(_lock_path()):
        records = _read()
        records['standbys'][name_on_cloud] = [bid_fid, time.time()]
        files.write_private(_path(), json.dumps(records))


def settle_standby(name_on_cloud: str, bid_fid: str) -> bool:
    """Records `bid_fid` as the standby whose placement the cluster's record
    says is under way (`set_standby(name, '')`); '' keeps it recorded as
    being placed, from now. Only while that record is there: False, and
    nothing written, once it is gone, the cluster torn down meanwhile (`sky
    down`, or SkyPilot's teardown after `sky jobs cancel`) or its standby
    dropped, so a placement that outlived it never writes it back."""
    with files.locked(_lock_path()):
        records = _read()
        entry = records['standbys'].get(name_on_cloud)
        if entry is None or entry[0] != '':
            return False
        records['standbys'][name_on_cloud] = [bid_fid, time.time()]
        files.write_private(_path(), json.dumps(records))
        return True


def standby_of(name_on_cloud: str) -> Optional[str]:
    """The fid of the cluster's standby bid ('' while it is being placed), or
    None when it has none."""
    entry = _read()['standbys'].get(name_on_cloud)
    return None if entry is None else entry[0]


def touch_standby(name_on_cloud: str, bid_fid: str) -> None:
    """Refreshes the heartbeat of the cluster's standby `bid_fid`: it is
    still being prepared. Nothing if the record names another or none."""
    with files.locked(_lock_path()):
        records = _read()
        entry = records['standbys'].get(name_on_cloud)
        if entry is not None and entry[0] == bid_fid:
            entry[1] = time.time()
            files.write_private(_path(), json.dumps(records))


def standby_being_prepared(name_on_cloud: str) -> bool:
    """Whether the cluster's recorded standby has a heartbeat younger than
    STANDBY_STALE_SECONDS."""
    entry = _read()['standbys'].get(name_on_cloud)
    return (entry is not None and
            time.time() - entry[1] < STANDBY_STALE_SECONDS)


def forget_standby(name_on_cloud: str) -> None:
    """The cluster has no standby any more (promoted or cancelled)."""
    with files.locked(_lock_path()):
        records = _read()
        if records['standbys'].pop(name_on_cloud, None) is not None:
            files.write_private(_path(), json.dumps(records))
