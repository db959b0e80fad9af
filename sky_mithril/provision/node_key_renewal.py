"""A running cluster's node key renewed at status refresh: when the key the
API server minted for the cluster's nodes nears its expiry, a new one is put
on every node over SkyPilot's SSH before the old one is revoked
(`node_keys.renew_if_due`). A renewal that fails is reported, never raised:
it must not fail a status refresh."""

from pathlib import Path

from sky import sky_logging

from sky_mithril.account import connection
from sky_mithril.account import node_keys

logger = sky_logging.init_logger('sky.sky_mithril.provision')


def renew_if_due(conn: connection.Connection, cluster_name: str,
                 cluster_name_on_cloud: str) -> None:
    """Renews the key of SkyPilot cluster `cluster_name`'s nodes when it is
    due; a failure is reported and tried again later
    (`node_keys.RENEW_RETRY_AFTER`)."""
    try:
        node_keys.renew_if_due(
            conn, cluster_name_on_cloud,
            lambda path: push_to_nodes(cluster_name, path))
    except Exception as e:  # pylint: disable=broad-except
        logger.warning(
            f'Could not renew the Mithril API key of cluster '
            f'{cluster_name!r}\'s nodes ({e}); trying again in '
            f'{node_keys.RENEW_RETRY_AFTER.total_seconds() / 3600:.0f} h. '
            'Their key stays valid until its expiry; `sky launch -c '
            f'{cluster_name}` renews it too.')


def push_to_nodes(cluster_name: str, path: Path) -> None:
    """Copies `path` over every node's credentials file
    (`node_keys.NODE_PATH`) with SkyPilot's command runners: rsync over
    SSH, as SkyPilot copies a file mount, the mode kept and the old file
    replaced in one rename. Raises if SkyPilot has no record of the cluster
    or a copy fails."""
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    handle = global_user_state.get_handle_from_cluster_name(cluster_name)
    if handle is None:
        raise RuntimeError(f'SkyPilot has no record of cluster '
                           f'{cluster_name!r}')
    runners = handle.get_command_runners()
    if len(runners) != handle.launched_nodes:
        raise RuntimeError(f'SkyPilot reaches {len(runners)} of the '
                           f'{handle.launched_nodes} nodes')
    for runner in runners:
        runner.rsync(str(path), node_keys.NODE_PATH, up=True,
                     stream_logs=False)
