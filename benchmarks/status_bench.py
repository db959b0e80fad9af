"""One `sky status --refresh` of 1, 10, 30 and 100 Mithril clusters: API
requests and wall time, sky-mithril's project snapshot vs the per-cluster
design it replaced.

A refresh is what SkyPilot does: the provisioner's `query_instances` for
every cluster, in parallel (`subprocess_utils.run_in_parallel`, SkyPilot's
own thread pool). The clusters are 1-node bids, Allocated and RUNNING, in
the emulator's project. "snapshot" is `query_instances` as shipped, each
refresh starting after the last snapshot went stale (as one refresh every
TTL or more does); "second viewer" is another refresh within the TTL, in
any process of the API server. "per-cluster" is the design before it: each
query looks the cluster's bid up by name and lists its instances (two
requests), kept here only to compare. Requests are counted by the emulator
(`/_emulator/stats`); wall time is the median of REPEATS refreshes.

Run: python benchmarks/status_bench.py [N ...]  (about a minute; only
127.0.0.1); N: the numbers of clusters, 1 10 30 100 by default.
"""

import os
import shutil
import sys
import tempfile

if __name__ == '__main__':
    # SkyPilot fixes where its locks live as it is imported: the bench's
    # SkyPilot state (its database, its locks) goes to a home of its own.
    os.environ['HOME'] = tempfile.mkdtemp(prefix='status-bench-home-')

# pylint: disable=wrong-import-position
import logging
import statistics
import time
from typing import Callable, List, NamedTuple, Sequence

from sky.utils import status_lib
from sky.utils import subprocess_utils

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as ours
from sky_mithril.provision import node_key_renewal
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import reserved_nodes
from sky_mithril.provision import status_table

CLUSTERS = (1, 10, 30, 100)
REPEATS = 3
GOAL_REQUESTS = 6
API_KEY = 'bench-key'
PROVIDER_CONFIG = {'project_id': PROJECT_FID}

Query = Callable[[str], status_table.NodeStatuses]


def per_cluster_query(name: str) -> status_table.NodeStatuses:
    """The per-cluster design's `query_instances` for a cluster on a spot
    bid: its claims looked at, its bid by name, then its instances."""
    conn = cluster_bid.connect(PROVIDER_CONFIG)
    assert reserved_nodes.ReservedNodes.held_by(conn, name) is None
    bid = cluster_bid.refreshed_bid(conn, name)
    if bid is None:
        return {}
    instances = cluster_bid.current_instances(conn, bid)
    statuses = status_table.node_statuses(bid, instances, True)
    if (bid.status == models.BidState.ALLOCATED and
            len(statuses) == bid.instance_quantity and
            all(status == status_lib.ClusterStatus.UP
                for status, _ in statuses.values())):
        node_key_renewal.renew_if_due(conn, name, name, instances)
    return statuses


def snapshot_query(name: str) -> status_table.NodeStatuses:
    return ours.query_instances(name, name, PROVIDER_CONFIG)


class Refresh(NamedTuple):
    """One design's refresh of one number of clusters."""

    requests: int
    wall_s: float


class Row(NamedTuple):
    clusters: int
    snapshot: Refresh
    second_viewer: Refresh
    per_cluster: Refresh


def refresh(server: EmulatorServer, query: Query, names: List[str],
            before: Callable[[], None]) -> Refresh:
    """REPEATS refreshes of `names`, each after `before`: the requests of
    the last (all are alike), the median wall time."""
    walls, made = [], 0
    for _ in range(REPEATS):
        before()
        server.control('DELETE', 'stats')
        started = time.perf_counter()
        statuses = subprocess_utils.run_in_parallel(query, names)
        walls.append(time.perf_counter() - started)
        made = server.control('GET', 'stats')['total']
        assert all(len(s) == 1 for s in statuses), statuses
    return Refresh(made, statistics.median(walls))


def cluster_names(server: EmulatorServer) -> List[str]:
    return [b['name'] for b in server.control('GET', 'state')['bids']
            if b['filler']]


def measure(server: EmulatorServer, sizes: Sequence[int]) -> List[Row]:
    """A row per number of clusters, the clusters added as it grows."""
    conn = connection.connect()
    rows = []
    for size in sizes:
        missing = size - len(cluster_names(server))
        if missing > 0:
            server.control('POST', 'filler', count=missing)
        names = cluster_names(server)
        assert len(names) == size

        def stale() -> None:
            project_snapshot.invalidate(conn)

        def as_is() -> None:
            pass

        snapshot = refresh(server, snapshot_query, names, stale)
        second = refresh(server, snapshot_query, names, as_is)
        per_cluster = refresh(server, per_cluster_query, names, as_is)
        rows.append(Row(size, snapshot, second, per_cluster))
    return rows


def report(rows: List[Row]) -> List[str]:
    """The table, side by side, and the goal's verdict."""
    columns = ('snapshot', 'second viewer', 'per-cluster')
    lines = [f'{"clusters":>8}  ' + '  '.join(
        f'{c + " requests":>24}  {c + " wall (s)":>24}' for c in columns)]
    for row in rows:
        cells = (row.snapshot, row.second_viewer, row.per_cluster)
        lines.append(f'{row.clusters:>8}  ' + '  '.join(
            f'{r.requests:>24}  {r.wall_s:>24.3f}' for r in cells))
    biggest = max(rows, key=lambda r: r.clusters)
    holds = biggest.snapshot.requests <= GOAL_REQUESTS
    lines.append(
        f'Goal: at most {GOAL_REQUESTS} requests per refresh at '
        f'{biggest.clusters} clusters: {biggest.snapshot.requests} vs '
        f'{biggest.per_cluster.requests} per-cluster; the goal '
        f'{"holds" if holds else "does not hold"}.')
    return lines


def main(sizes: Sequence[int]) -> None:
    logging.getLogger('sky').setLevel(logging.WARNING)
    started = time.monotonic()
    home = os.environ['HOME']
    try:
        with EmulatorServer(api_key=API_KEY) as server:
            os.environ.update({'XDG_CONFIG_HOME': home,
                               'MITHRIL_API_KEY': API_KEY,
                               'MITHRIL_API_URL': server.url,
                               'MITHRIL_PROJECT': PROJECT_FID})
            os.environ.pop('MITHRIL_PROFILE', None)
            rows = measure(server, sizes)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f'One `sky status --refresh` of N 1-node Mithril clusters '
          f'(SkyPilot\'s parallel query), median of {REPEATS}; snapshot TTL '
          f'{project_snapshot.TTL_SECONDS:g} s.')
    for line in report(rows):
        print(line)
    print(f'({time.monotonic() - started:.0f} s run)')


if __name__ == '__main__':
    main([int(n) for n in sys.argv[1:]] or CLUSTERS)
