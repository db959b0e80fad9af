"""SkyPilot's provisioner interface for Mithril, one function per lifecycle step.

A cluster is one spot bid for all of its nodes (all-or-nothing). `sky launch`
places it and waits for the auction; `sky stop` pauses it; `sky start` resumes
the same bid in the same region; `sky down` cancels it. Any failure or
interrupt after a new bid exists cancels that bid before the error leaves.
"""

import time
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from sky import sky_logging
from sky.provision import common
from sky.utils import status_lib

from sky_mithril import connection
from sky_mithril import money
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import bids

logger = sky_logging.init_logger('sky.sky_mithril.provision')

PROVIDER_NAME = 'mithril'
SSH_USER = 'ubuntu'
READY_TIMEOUT_SECONDS = 600.0
HALF_PLACED_RECHECK_SECONDS = 1.0
LIMIT_KEY_HINT = ('raise config.mithril.limit_price (or limit_price_per_gpu) '
                  'to win sooner, or set config.mithril.provision_timeout.')

_Status = status_lib.ClusterStatus
_Instance = models.InstanceState
# Mithril instance status → SkyPilot cluster status; None means gone.
STATUS_TABLE: Dict[str, Optional[status_lib.ClusterStatus]] = {
    _Instance.NEW: _Status.INIT,
    _Instance.CONFIRMED: _Status.INIT,
    _Instance.SCHEDULED: _Status.INIT,
    _Instance.INITIALIZING: _Status.INIT,
    _Instance.STARTING: _Status.INIT,
    _Instance.RUNNING: _Status.UP,
    _Instance.PREEMPTING: _Status.UP,
    _Instance.RELOCATING: _Status.INIT,
    _Instance.ERROR: _Status.INIT,
    _Instance.STOPPING: _Status.STOPPED,
    _Instance.STOPPED: _Status.STOPPED,
    _Instance.PREEMPTED: _Status.STOPPED,
    _Instance.PAUSED: _Status.STOPPED,
    _Instance.TERMINATED: None,
    _Instance.REPLACED: None,
}
_REACHABLE = (_Instance.STARTING, _Instance.RUNNING)


def _connect(provider_config: Optional[Dict[str, Any]]) -> connection.Connection:
    """A connection pinned to the profile, project and API the cluster was
    launched with, so switching profiles later does not lose the cluster."""
    provider_config = provider_config or {}
    return connection.connect(
        profile=provider_config.get('profile') or None,
        project_id=provider_config.get('project_id') or None,
        api_url=provider_config.get('api_url') or None)


def _provision_timeout(provider_config: Dict[str, Any]) -> Optional[float]:
    value = provider_config.get('provision_timeout')
    return float(value) if value not in (None, '') else None


def _ssh_port(instance: models.Instance) -> int:
    """22 on Mithril; the emulator's local SSH hosts add `ssh_port`."""
    return int((instance.model_extra or {}).get('ssh_port') or 22)


def _ssh_user(instance: models.Instance) -> str:
    """`ubuntu` on Mithril; the emulator's local SSH hosts add `ssh_user`."""
    return str((instance.model_extra or {}).get('ssh_user') or SSH_USER)


def _bid_instances(conn: connection.Connection,
                   bid: models.Bid) -> List[models.Instance]:
    """The bid's instances in the bid's own (stable) order; head first."""
    found = {
        i.fid: i for i in conn.client.list_instances(conn.project_id,
                                                     bid_fids=[bid.fid])
    }
    return [found[fid] for fid in bid.instances if fid in found]


def bootstrap_instances(
        region: str, cluster_name: str,
        config: common.ProvisionConfig) -> common.ProvisionConfig:
    """Checks the launch settings the cloud rendered; nothing to create."""
    del region, cluster_name
    limit = config.provider_config.get('limit_price_per_hour')
    if not limit or Decimal(limit) <= 0:
        raise ValueError('The cluster config has no Mithril limit price; '
                         'relaunch with sky-mithril enabled.')
    return config


def _resume_or_adopt(conn: connection.Connection, bid: models.Bid, region: str,
                     config: common.ProvisionConfig) -> Tuple[models.Bid, bool]:
    """Uses the cluster's existing bid; True when it was paused and resumed."""
    if bid.region and bid.region != region:
        raise RuntimeError(
            f'The cluster\'s bid {bid.fid} lives in {bid.region}, not {region}; '
            'a Mithril cluster never moves. `sky down` it to launch elsewhere.')
    if bid.instance_quantity != config.count:
        raise RuntimeError(
            f'The cluster\'s bid {bid.fid} has {bid.instance_quantity} nodes, '
            f'not {config.count}; Mithril bids cannot be resized. `sky down` '
            'and launch again.')
    if bid.status != models.BidState.PAUSED:
        return bid, False
    if not config.resume_stopped_nodes:
        raise RuntimeError(f'The cluster\'s bid {bid.fid} is paused; use '
                           '`sky start` to resume it.')
    logger.info(f'Resuming paused bid {bid.fid} in {bid.region}.')
    try:
        return conn.client.update_bid(bid.fid, paused=False), True
    except BaseException as e:
        _undo(conn, bid, created=False, resumed=True, cause=e)
        raise


def _place_bid(conn: connection.Connection, region: str,
               cluster_name_on_cloud: str,
               config: common.ProvisionConfig) -> models.Bid:
    provider_config = config.provider_config
    limit = Decimal(provider_config['limit_price_per_hour'])
    request = models.CreateBidRequest(
        project=conn.project_id,
        region=region,
        instance_type=bids.instance_type_fid(
            conn, config.node_config['InstanceType'], region),
        limit_price=limit,
        instance_quantity=config.count,
        name=cluster_name_on_cloud,
        launch_specification=models.LaunchSpecification(
            ssh_keys=[config.authentication_config['ssh_key_id']], volumes=[]))
    bid = bids.bid_for_cluster(conn, request)
    logger.info(f'Placed Mithril bid {bid.fid}: {config.count}× '
                f'{config.node_config["InstanceType"]} in {region} at a limit '
                f'of {money.format_dollars(limit)}/h per instance.')
    return bid


def _wait_until_reachable(conn: connection.Connection,
                          bid: models.Bid) -> List[models.Instance]:
    """Polls the bid's instances (one request per poll) until every one has
    an SSH destination; the bid is re-read only while it lists no instances."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    interval = 0.5
    while True:
        if not bid.instances:
            bid = conn.client.get_bid(bid.fid)
        instances = _bid_instances(conn, bid)
        ready = [i for i in instances
                 if i.status in _REACHABLE and i.ssh_destination]
        if len(ready) == bid.instance_quantity:
            return instances
        if time.monotonic() > deadline:
            states = ', '.join(f'{i.fid}={i.status}' for i in instances)
            raise RuntimeError(f'Instances of bid {bid.fid} did not become '
                               f'reachable in {READY_TIMEOUT_SECONDS:.0f}s '
                               f'({states}).')
        time.sleep(interval)
        interval = min(interval * 2, 3.0)


def run_instances(region: str, cluster_name: str, cluster_name_on_cloud: str,
                  config: common.ProvisionConfig) -> common.ProvisionRecord:
    """Places (or resumes) the cluster's bid and returns once every node is
    reachable. A bid placed or resumed here is cancelled (placed) or paused
    again (resumed) if anything fails or the user interrupts."""
    del cluster_name
    conn = _connect(config.provider_config)
    existing = bids.live_bid(conn, cluster_name_on_cloud)
    resumed = False
    if existing is not None:
        bid, resumed = _resume_or_adopt(conn, existing, region, config)
    else:
        try:
            bid = _place_bid(conn, region, cluster_name_on_cloud, config)
        except BaseException as e:
            _cancel_half_placed(conn, cluster_name_on_cloud, e)
            raise
    created = existing is None
    try:
        bid = bids.wait_for_allocation(
            conn, bid, _provision_timeout(config.provider_config),
            LIMIT_KEY_HINT)
        instances = _wait_until_reachable(conn, bid)
    except BaseException as e:
        _undo(conn, bid, created=created, resumed=resumed, cause=e)
        raise
    instance_fids = [i.fid for i in instances]
    return common.ProvisionRecord(
        provider_name=PROVIDER_NAME,
        region=region,
        zone=None,
        cluster_name=cluster_name_on_cloud,
        head_instance_id=instance_fids[0],
        resumed_instance_ids=instance_fids if resumed else [],
        created_instance_ids=instance_fids if created else [])


def _describe(error: BaseException) -> str:
    """An error's message, or its kind when it has none (e.g. Ctrl-C)."""
    return str(error) or type(error).__name__


def _cancel_half_placed(conn: connection.Connection, name: str,
                        cause: BaseException) -> None:
    """After placing the bid failed or was interrupted, cancels a bid that
    may have been created anyway. The request may still be on its way to
    the server, so a look-up that finds nothing is repeated once."""
    try:
        found = bids.live_bids(conn, name)
        if not found:
            time.sleep(HALF_PLACED_RECHECK_SECONDS)
            found = bids.live_bids(conn, name)
    except Exception as lookup_error:  # pylint: disable=broad-except
        raise common.StopFailoverError(
            f'Placing the Mithril bid {name!r} failed ({cause}) and '
            f'sky-mithril could not check whether it exists: {lookup_error}. '
            'Run `sky down` for this cluster to cancel it if it does.'
        ) from lookup_error
    for bid in found:
        _undo(conn, bid, created=True, resumed=False, cause=cause)


def _undo(conn: connection.Connection, bid: models.Bid, *, created: bool,
          resumed: bool, cause: BaseException) -> None:
    """Leaves nothing behind after a failed launch; if that is impossible,
    stops SkyPilot's failover so the user learns about the bid."""
    try:
        if created:
            bids.cancel_and_confirm(conn, bid.fid)
            logger.info(f'Cancelled bid {bid.fid} after: {_describe(cause)}')
        elif resumed:
            conn.client.update_bid(bid.fid, paused=True)
            logger.info(f'Paused bid {bid.fid} again after: {_describe(cause)}')
    except Exception as cleanup_error:  # pylint: disable=broad-except
        raise common.StopFailoverError(
            f'Launch failed ({cause}) and sky-mithril could not clean up bid '
            f'{bid.fid}: {cleanup_error}. It may still allocate and bill: run '
            f'`sky down` for this cluster or cancel the bid in Mithril\'s '
            'console.') from cleanup_error


def wait_instances(region: str, cluster_name_on_cloud: str,
                   state: Optional[status_lib.ClusterStatus]) -> None:
    """run_instances already returns only when every node is reachable."""
    del region, cluster_name_on_cloud, state


def query_instances(
    cluster_name: str,
    cluster_name_on_cloud: str,
    provider_config: Optional[Dict[str, Any]] = None,
    non_terminated_only: bool = True,
    retry_if_missing: bool = False,
) -> Dict[str, Tuple[Optional[status_lib.ClusterStatus], Optional[str]]]:
    """Statuses of the cluster's nodes in two requests, whatever the project size.

    API errors raise: an empty answer would make SkyPilot forget a live cluster.
    """
    del cluster_name, retry_if_missing
    conn = _connect(provider_config)
    bid = bids.live_bid(conn, cluster_name_on_cloud)
    if bid is None:
        return {}
    instances = _bid_instances(conn, bid)
    if not instances:
        return {bid.fid: (_Status.INIT, f'bid {bid.fid} is {bid.status}, '
                                        'waiting for allocation')}
    statuses: Dict[str, Tuple[Optional[status_lib.ClusterStatus],
                              Optional[str]]] = {}
    for instance in instances[:bid.instance_quantity]:
        status = STATUS_TABLE.get(instance.status, _Status.INIT)
        if status is None and non_terminated_only:
            continue
        reason = None if status == _Status.UP else (
            f'{instance.status} (bid {bid.status})')
        statuses[instance.fid] = (status, reason)
    return statuses


def stop_instances(cluster_name_on_cloud: str,
                   provider_config: Optional[Dict[str, Any]] = None,
                   worker_only: bool = False) -> None:
    """Pauses the bid: instances spin down, disks are kept, billing stops."""
    if worker_only:
        logger.info('Mithril bids are all-or-nothing: workers cannot be '
                    'stopped without the head; nothing was stopped.')
        return
    conn = _connect(provider_config)
    bid = bids.live_bid(conn, cluster_name_on_cloud)
    if bid is None or bid.status == models.BidState.PAUSED:
        return
    try:
        conn.client.update_bid(bid.fid, paused=True)
    except errors.NotFoundError:
        return
    logger.info(f'Paused bid {bid.fid}.')


def terminate_instances(cluster_name_on_cloud: str,
                        provider_config: Optional[Dict[str, Any]] = None,
                        worker_only: bool = False) -> None:
    """Cancels every live bid of the cluster and confirms each is Terminated."""
    if worker_only:
        logger.info('Mithril bids are all-or-nothing: workers cannot be '
                    'terminated without the head; nothing was terminated.')
        return
    conn = _connect(provider_config)
    for bid in bids.live_bids(conn, cluster_name_on_cloud):
        bids.cancel_and_confirm(conn, bid.fid)
        logger.info(f'Cancelled bid {bid.fid}.')


def get_cluster_info(region: str, cluster_name_on_cloud: str,
                     provider_config: Optional[Dict[str, Any]] = None
                     ) -> common.ClusterInfo:
    """Nodes with an SSH destination, head first (the bid's first instance)."""
    del region
    conn = _connect(provider_config)
    bid = bids.live_bid(conn, cluster_name_on_cloud)
    nodes: Dict[str, List[common.InstanceInfo]] = {}
    ssh_user = SSH_USER
    for instance in (_bid_instances(conn, bid) if bid else []):
        if not instance.ssh_destination:
            continue
        ssh_user = _ssh_user(instance)
        nodes[instance.fid] = [
            common.InstanceInfo(instance_id=instance.fid,
                                internal_ip=instance.private_ip or
                                instance.ssh_destination,
                                external_ip=instance.ssh_destination,
                                ssh_port=_ssh_port(instance),
                                tags={})
        ]
    return common.ClusterInfo(instances=nodes,
                              head_instance_id=next(iter(nodes), None),
                              provider_name=PROVIDER_NAME,
                              provider_config=provider_config,
                              ssh_user=ssh_user)


def open_ports(cluster_name_on_cloud: str,
               ports: List[str],
               provider_config: Optional[Dict[str, Any]] = None) -> None:
    """Mithril has no firewall API; the cloud declares OPEN_PORTS unsupported."""
    del cluster_name_on_cloud, provider_config
    raise NotImplementedError(
        f'Mithril cannot open ports {ports}; remove `ports:` from the task.')


def cleanup_ports(cluster_name_on_cloud: str,
                  ports: List[str],
                  provider_config: Optional[Dict[str, Any]] = None) -> None:
    """No ports were opened, so there is nothing to clean up."""
    del cluster_name_on_cloud, ports, provider_config


def cleanup_custom_multi_network(cluster_name_on_cloud: str,
                                 provider_config: Dict[str, Any],
                                 failover: bool = False) -> None:
    """Mithril clusters use no custom networks; nothing to clean up."""
    del cluster_name_on_cloud, provider_config, failover
