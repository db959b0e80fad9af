"""A running cluster's node key renewed at status refresh: when the key the
API server minted for the cluster's nodes nears its expiry, a new one is put
on every node over SkyPilot's SSH before the old one is revoked
(`node_keys.renew_if_due`). SkyPilot's record of the cluster must point at
the bid's current nodes first: after Mithril replaced a node, its cached
address is the old node's (perhaps a stranger's host by now), so the
renewal waits. A renewal that fails is reported, never raised: it must not
fail a status refresh."""

from pathlib import Path
from typing import Any, List, Optional, Tuple

from sky import sky_logging

from sky_mithril.account import connection
from sky_mithril.account import node_keys
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid

logger = sky_logging.init_logger('sky.sky_mithril.provision')


def renew_if_due(conn: connection.Connection, cluster_name: str,
                 cluster_name_on_cloud: str,
                 instances: List[models.Instance]) -> None:
    """Renews the key of SkyPilot cluster `cluster_name`'s nodes when it is
    due; a failure is reported and tried again later
    (`node_keys.RENEW_RETRY_AFTER`). `instances` are the bid's current
    instances (`cluster_bid.current_instances`): while SkyPilot's record
    reaches other addresses, nothing is minted, pushed or revoked, and the
    next refresh tries again (`records_the_nodes`)."""
    try:
        node_keys.renew_if_due(
            conn, cluster_name_on_cloud,
            lambda path: push_to_nodes(cluster_name, path),
            lambda: records_the_nodes(cluster_name, instances))
    except Exception as e:  # pylint: disable=broad-except
        logger.warning(
            f'Could not renew the Mithril API key of cluster '
            f'{cluster_name!r}\'s nodes ({e}); trying again in '
            f'{node_keys.RENEW_RETRY_AFTER.total_seconds() / 3600:.0f} h. '
            'Their key stays valid until its expiry; `sky launch -c '
            f'{cluster_name}` renews it too.')


def records_the_nodes(cluster_name: str,
                      instances: List[models.Instance]) -> bool:
    """Whether SkyPilot's record of cluster `cluster_name` reaches exactly
    the SSH addresses of `instances`, the bid's current nodes. If not (a
    node replaced by Mithril), warns naming the cluster and both sets of
    addresses. Raises if SkyPilot has no record of the cluster."""
    recorded = sorted(runner.node for runner in
                      _handle(cluster_name).get_command_runners())
    current = sorted(_ssh_address(i) for i in instances)
    if recorded == current:
        return True
    logger.warning(
        f'Not renewing the Mithril API key of cluster {cluster_name!r}\'s '
        f'nodes yet: SkyPilot\'s record reaches {_listed(recorded)}, but the '
        f'cluster\'s bid has its nodes at {_listed(current)} now (Mithril '
        'replaced a node). Nothing was sent to the recorded addresses. The '
        'renewal is tried again at each status refresh (`sky status -r`), '
        'and goes through once SkyPilot\'s record follows the nodes: `sky '
        f'launch -c {cluster_name}` updates it, and renews the key too.')
    return False


def _ssh_address(instance: models.Instance) -> Tuple[Optional[str], int]:
    """Where SkyPilot's runners connect to `instance`."""
    return instance.ssh_destination, cluster_bid.ssh_port(instance)


def _listed(addresses: List[Tuple[Any, Any]]) -> str:
    return ', '.join(f'{host}:{port}' for host, port in addresses) or 'none'


def _handle(cluster_name: str) -> Any:
    """SkyPilot's record of the cluster; raises if it has none."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    handle = global_user_state.get_handle_from_cluster_name(cluster_name)
    if handle is None:
        raise RuntimeError(f'SkyPilot has no record of cluster '
                           f'{cluster_name!r}')
    return handle


def push_to_nodes(cluster_name: str, path: Path) -> None:
    """Copies `path` over every node's credentials file
    (`node_keys.NODE_PATH`) with SkyPilot's command runners: rsync over
    SSH, as SkyPilot copies a file mount, the mode kept and the old file
    replaced in one rename. Raises if SkyPilot has no record of the cluster
    or a copy fails."""
    handle = _handle(cluster_name)
    runners = handle.get_command_runners()
    if len(runners) != handle.launched_nodes:
        raise RuntimeError(f'SkyPilot reaches {len(runners)} of the '
                           f'{handle.launched_nodes} nodes')
    for runner in runners:
        runner.rsync(str(path), node_keys.NODE_PATH, up=True,
                     stream_logs=False)
