"""Managed-job clusters being relaunched after a Mithril preemption, so that
the relaunch bids at the task's `recovery_limit_price`.

The jobs controller records a cluster here just before it recovers it
(`plugin.jobs_runtime`); the cloud reads the record when it renders that
cluster's next launch. Both run on the API server's host (jobs controller
consolidation mode). A job's cluster name is unique to the job, and records
older than a day are dropped.
"""

import json
import time
from pathlib import Path
from typing import Dict

from sky_mithril import files

KEEP_SECONDS = 24 * 3600.0


def _path() -> Path:
    return Path.home() / '.sky' / 'mithril' / 'recoveries.json'


def _read() -> Dict[str, float]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    now = time.time()
    return {k: float(v) for k, v in data.items()
            if isinstance(v, (int, float)) and now - v < KEEP_SECONDS}


def mark(cluster_name: str) -> None:
    """Records that `cluster_name` is about to be relaunched after a
    preemption."""
    records = _read()
    records[cluster_name] = time.time()
    files.write_atomically(_path(), json.dumps(records))


def is_recovering(cluster_name: str) -> bool:
    """Whether `cluster_name` was preempted and is being relaunched."""
    return cluster_name in _read()
