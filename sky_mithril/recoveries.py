"""Managed-job recoveries after a Mithril preemption, as the jobs controller
started them: which clusters are being relaunched (so the relaunch bids at
the task's `recovery_limit_price`), and how many of a bid's preemptions have
already been recovered from (so a bid that a relaunch keeps is not recovered
again for the same preemption).

The jobs controller records here just before it recovers a cluster
(`plugin.jobs_runtime`); the cloud reads the record when it renders that
cluster's next launch. Both run on the API server's host (jobs controller
consolidation mode). A job's cluster name is unique to the job, and records
older than a day are dropped.
"""

import json
import time
from pathlib import Path
from typing import Any, Dict

from sky_mithril import files

KEEP_SECONDS = 24 * 3600.0


def _path() -> Path:
    return Path.home() / '.sky' / 'mithril' / 'recoveries.json'


def _read() -> Dict[str, Dict[str, Any]]:
    """{'clusters': {name: marked at}, 'bids': {fid: [preemptions, at]}},
    without records older than KEEP_SECONDS."""
    try:
        data = json.loads(_path().read_text())
        now = time.time()
        return {
            'clusters': {k: float(v) for k, v in data['clusters'].items()
                         if now - float(v) < KEEP_SECONDS},
            'bids': {k: [int(v[0]), float(v[1])] for k, v in
                     data['bids'].items() if now - float(v[1]) < KEEP_SECONDS},
        }
    except (OSError, ValueError, KeyError, TypeError, IndexError,
            AttributeError):
        return {'clusters': {}, 'bids': {}}


def mark(cluster_name: str, bid_fid: str, preemptions: int) -> None:
    """Records that `cluster_name` is about to be relaunched, having seen
    `preemptions` preemptions of its bid `bid_fid`."""
    records = _read()
    now = time.time()
    records['clusters'][cluster_name] = now
    records['bids'][bid_fid] = [preemptions, now]
    files.write_atomically(_path(), json.dumps(records))


def is_recovering(cluster_name: str) -> bool:
    """Whether `cluster_name` was preempted and is being relaunched."""
    return cluster_name in _read()['clusters']


def preemptions_recovered(bid_fid: str) -> int:
    """How many of the bid's preemptions a recovery already handled."""
    return _read()['bids'].get(bid_fid, [0])[0]
