"""What the infrastructure commands share: a connection to the right project,
a region checked against the market's, finding a bid or cluster by name or
fid (or a picker on a terminal), and waiting for a bid's instances to run."""

import dataclasses
import time
from typing import Dict, List, Optional, Sequence

from sky_mithril.account import connection
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.api.models import BidState, InstanceState
from sky_mithril.commands.output import CommandError, pick, progress, short_status

POLL_INTERVAL_S = 1.0
RUNNING_TIMEOUT_S = 600.0


def connect(project: Optional[str] = None) -> connection.Connection:
    """A connection to the configured project, or to `project` (a name or fid
    the key can see). Nothing listening at the API URL fails at once: a
    person is waiting."""
    conn = connection.connect(retry_refused=False)
    if not project or project == conn.project_id:
        return conn
    projects = conn.client.list_projects()
    for candidate in projects:
        if project in (candidate.fid, candidate.name):
            return dataclasses.replace(conn, project_id=candidate.fid)
    conn.client.close()
    names = ', '.join(f'{p.name} ({p.fid})' for p in projects) or 'none'
    raise CommandError(f'No project {project!r} is visible to this API key; '
                       f'its projects: {names}.')


def check_region(region: str, auctions: Sequence[models.Auction]) -> None:
    """Fails naming the regions there are (those with spot auctions) when
    `region` is not one of them: a typo must not read as "nothing there"."""
    regions = sorted({a.region for a in auctions})
    if region not in regions:
        raise CommandError(f'No region {region!r} on Mithril; pass one of '
                           f'{", ".join(regions)} with --region.')


def type_names(conn: connection.Connection) -> Dict[str, str]:
    """Instance type names by fid, for output that shows names."""
    return {t.fid: t.name for t in conn.client.list_instance_types()}


def is_live(bid: models.Bid) -> bool:
    return bid.status != BidState.TERMINATED


def find_bid(conn: connection.Connection, name_or_fid: str) -> models.Bid:
    """The bid with that fid, else the live bid with that name (a name can be
    reused once its bid is terminated: then the newest)."""
    if name_or_fid.startswith('bid_'):
        try:
            return conn.client.get_bid(name_or_fid)
        except errors.NotFoundError:
            pass
    bids = conn.client.list_bids(conn.project_id, name=name_or_fid)
    if not bids:
        raise CommandError(
            f'No bid named {name_or_fid!r} in project {conn.project_id}. '
            '`sky-mithril instance list --all` lists its bids.')
    live = [bid for bid in bids if is_live(bid)]
    if len(live) > 1:
        fids = ', '.join(bid.fid for bid in live)
        raise CommandError(f'{len(live)} live bids are named {name_or_fid!r} '
                           f'({fids}); name one by its fid.')
    return live[0] if live else max(bids, key=lambda bid: bid.created_at)


def choose_bid(conn: connection.Connection, name_or_fid: Optional[str],
               argument: str) -> models.Bid:
    """`find_bid`, or on a terminal a picker over the live bids."""
    if name_or_fid:
        return find_bid(conn, name_or_fid)
    live = [b for b in conn.client.list_bids(conn.project_id) if is_live(b)]
    fid = pick('bid', [(b.fid, f'{b.name} ({b.status}, {b.fid})')
                       for b in live], argument)
    return conn.client.get_bid(fid)


def find_cluster(conn: connection.Connection,
                 name_or_fid: Optional[str]) -> models.KubernetesCluster:
    """The Kubernetes cluster with that fid or name (preferring a live one),
    or on a terminal a picker over the live clusters."""
    clusters = conn.client.list_kubernetes_clusters(conn.project_id)
    live = [c for c in clusters
            if c.status != models.KubernetesClusterState.TERMINATED]
    if not name_or_fid:
        fid = pick('Kubernetes cluster',
                   [(c.fid, f'{c.name} ({c.status}, {c.fid})') for c in live],
                   'CLUSTER')
        return conn.client.get_kubernetes_cluster(fid)
    matches = [c for c in clusters if name_or_fid in (c.fid, c.name)]
    if not matches:
        raise CommandError(
            f'No Kubernetes cluster {name_or_fid!r} in project '
            f'{conn.project_id}. `sky-mithril k8s list --all` lists them.')
    live_matches = [c for c in matches if c in live]
    return (live_matches or matches)[-1]


def bid_instances(conn: connection.Connection,
                  bid: models.Bid) -> List[models.Instance]:
    """The bid's instances sorted by name: the order `--node N` indexes."""
    if not bid.instances:
        return []
    return sorted(conn.client.list_instances(conn.project_id,
                                             bid_fids=[bid.fid]),
                  key=lambda instance: instance.name)


def all_running(bid: models.Bid, instances: List[models.Instance]) -> bool:
    return (bid.status == BidState.ALLOCATED and
            len(instances) == bid.instance_quantity and
            all(i.status == InstanceState.RUNNING and i.ssh_destination
                for i in instances))


def wait_until_running(conn: connection.Connection,
                       bid: models.Bid) -> List[models.Instance]:
    """Polls until every instance of the bid runs, printing each change;
    fails if the bid ends or `RUNNING_TIMEOUT_S` passes."""
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    last = ''
    while True:
        bid = conn.client.get_bid(bid.fid)
        instances = bid_instances(conn, bid)
        nodes = ', '.join(f'{i.name} {short_status(i.status)}'
                          for i in instances) or 'no instances yet'
        line = f'Bid {bid.name}: {bid.status}; {nodes}'
        if line != last:
            progress(line)
            last = line
        if all_running(bid, instances):
            return instances
        if bid.status == BidState.TERMINATED:
            raise CommandError(f'Bid {bid.name} ({bid.fid}) is Terminated.')
        if time.monotonic() > deadline:
            raise CommandError(
                f'Bid {bid.name} is not running after {RUNNING_TIMEOUT_S:.0f}s '
                f'({bid.status}). `sky-mithril instance info {bid.name}` shows '
                'why; the bid stays in the market.')
        time.sleep(POLL_INTERVAL_S)

