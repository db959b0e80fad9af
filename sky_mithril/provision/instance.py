"""SkyPilot's provisioner interface for Mithril, one function per lifecycle step.

A cluster on a CPU VM type is one fixed-price CPU VM, owned by `cpu_vm`
(created, never bid for; never stopped: it bills until down deletes it).
Otherwise a cluster runs on a reservation's instances (`reserved_nodes`)
when the task names a reservation that has room, else on one spot bid for
all of its nodes (all-or-nothing), owned by `cluster_bid`. `sky launch`
places it and waits for the auction; `sky stop` pauses it; `sky start`
resumes the same bid in the same region; `sky down` cancels it and revokes
the API keys of the cluster's nodes. Any failure or interrupt after a new
bid exists cancels that bid before the error leaves.
The head opens the task's ports at every launch and start (`public_ports`).
A status refresh reads the project's snapshot (`project_snapshot`), shared
by every API-server process, which each change above marks stale; it renews
the nodes' key of a cluster that is up when it nears its expiry, and revokes
the keys of a cluster it finds gone.
"""

import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from sky import sky_logging
from sky.provision import common
from sky.utils import status_lib

from sky_mithril import CLOUD_NAME
from sky_mithril.account import connection
from sky_mithril.account import node_keys
from sky_mithril.api import models
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import cpu_vm
from sky_mithril.provision import node_key_renewal
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import public_ports
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes
from sky_mithril.provision import status_table

logger = sky_logging.init_logger('sky.sky_mithril.provision')


def bootstrap_instances(
        region: str, cluster_name: str,
        config: common.ProvisionConfig) -> common.ProvisionConfig:
    """Checks the launch settings the cloud rendered (a CPU VM has no limit
    price); nothing to create."""
    del region, cluster_name
    if cpu_vm.on_cpu_vm(config.provider_config):
        return config
    limit = config.provider_config.get('limit_price_per_hour')
    if not limit or Decimal(limit) <= 0:
        raise ValueError('The cluster config has no Mithril limit price; '
                         'relaunch with sky-mithril enabled.')
    return config


def _no_bid_beside(conn: connection.Connection, reserved_nodes_of: str) -> None:
    """A cluster on reserved instances never has a bid of its own: a live
    bid of its name (an earlier burst whose POST Mithril committed late) is
    cancelled, so nothing bills beside the reservation unseen."""
    for bid in cluster_bid.live_bids(conn, reserved_nodes_of):
        logger.warning(f'Cancelling bid {bid.fid} ({bid.status}) of '
                       f'{reserved_nodes_of}: the cluster runs on reserved '
                       'instances, and the bid (an earlier launch\'s, '
                       'committed late) would bill beside them.')
        cluster_bid.cancel_and_confirm(conn, bid.fid)


def _on_reservation(conn: connection.Connection,
                    cluster_name: str, cluster_name_on_cloud: str,
                    config: common.ProvisionConfig
                    ) -> Optional[reserved_nodes.ReservedNodes]:
    """The cluster's reserved instances: those it holds, else free ones of
    the reservation its launch names; None to go on a spot bid (a cluster
    already on one stays there; a full, not yet active or ended
    reservation, one that ends within the lead time the cloud rendered, or
    one that cannot take the task's volumes, bursts to spot, saying why).
    A cluster that holds instances gets the task's volumes added to the
    reservation as a first launch does, or a ReservationError naming the
    fix."""
    held = reserved_nodes.ReservedNodes.still_held_by(conn,
                                                      cluster_name_on_cloud)
    if held is not None and not held.on_node:
        held.add_task_volumes(cluster_bid.volume_fids(config.provider_config))
    wanted = config.provider_config.get('reservation')
    if held is not None or not wanted:
        return held
    reservation_claims.refuse_apart_from_api_server(wanted)
    if cluster_bid.live_bid(conn, cluster_name_on_cloud) is not None:
        return None
    reservation = reserved_nodes.find(conn, wanted)
    key_to_install = reserved_nodes.check_ssh_key(
        conn, reservation, config.authentication_config['ssh_key_id'])
    try:
        return reserved_nodes.ReservedNodes.claim(
            conn, reservation, cluster_name, cluster_name_on_cloud,
            config.count, datetime.timedelta(seconds=float(
                config.provider_config.get('reservation_end_lead_seconds') or
                0)), key_to_install,
            cluster_bid.volume_fids(config.provider_config))
    except reserved_nodes.ReservationError as e:
        logger.info(f'Not on the reservation: {e}. Bidding on spot at the '
                    'limit price instead.')
        return None


def run_instances(region: str, cluster_name: str, cluster_name_on_cloud: str,
                  config: common.ProvisionConfig) -> common.ProvisionRecord:
    """Creates, resumes or adopts the cluster's CPU VM, or claims or
    resumes its reserved instances, or places, resumes or adopts its bid,
    and returns once every node is reachable and
    the head has opened the task's ports (SkyPilot passes them at every
    launch and start; a resumed head lost its forwarders); what this launch
    did is undone if it fails."""
    conn = cluster_bid.connect(config.provider_config)
    on_cpu_vm = cpu_vm.on_cpu_vm(config.provider_config)
    reserved = None if on_cpu_vm else _on_reservation(
        conn, cluster_name, cluster_name_on_cloud, config)
    if on_cpu_vm:
        vm = cpu_vm.ClusterVm.acquire(conn, region, cluster_name_on_cloud,
                                      config)
        instance_fids = [i.fid for i in vm.wait_until_ready(
            cluster_bid.boot_timeout(config.provider_config))]
        created = vm.outcome == cpu_vm.Outcome.CREATED
        resumed = vm.outcome == cpu_vm.Outcome.RESUMED
        undo, info = vm.undo, vm.cluster_info
    elif reserved is not None:
        instance_fids = [i.fid for i in reserved.wait_until_ready(
            cluster_bid.boot_timeout(config.provider_config))]
        _no_bid_beside(conn, cluster_name_on_cloud)
        created = reserved.outcome == reserved_nodes.Outcome.CLAIMED
        resumed = reserved.outcome == reserved_nodes.Outcome.RESUMED
        undo, info = reserved.undo, reserved.cluster_info
    else:
        held = cluster_bid.ClusterBid.acquire(conn, region,
                                              cluster_name_on_cloud, config)
        instance_fids = [
            i.fid for i in held.wait_until_ready(config.provider_config)]
        created = held.outcome == cluster_bid.Outcome.PLACED
        resumed = held.outcome == cluster_bid.Outcome.RESUMED
        undo, info = held.undo, held.cluster_info
    if config.ports_to_open_on_launch:
        try:
            public_ports.open_on_head(info(config.provider_config),
                                      config.authentication_config,
                                      cluster_name_on_cloud,
                                      config.ports_to_open_on_launch)
        except BaseException as e:
            undo(e)
            raise
    return common.ProvisionRecord(
        provider_name=CLOUD_NAME,
        region=region,
        zone=None,
        cluster_name=cluster_name_on_cloud,
        head_instance_id=instance_fids[0],
        resumed_instance_ids=instance_fids if resumed else [],
        created_instance_ids=instance_fids if created else [])


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
) -> status_table.NodeStatuses:
    """Statuses of the cluster's nodes, read from the project's snapshot
    (`project_snapshot`): a refresh costs its few requests once per
    TTL_SECONDS, whatever the number of clusters or refreshes. What the
    snapshot cannot settle is read live: a cluster it shows gone (only
    Mithril's answer now makes SkyPilot forget a cluster) or with several
    live bids (a CPU VM's cluster: no VM or several of its name), where a
    standby that no recovery prepares any more is cancelled
    (`cluster_bid.refreshed_bid`); and a bid beside reserved instances is
    cancelled only once it is read live (`_no_bid_beside`).
    When the cluster is up (its bid allocated, or its reserved instances,
    every node UP), the nodes' key is renewed if it nears its expiry
    (`node_key_renewal`; most refreshes decide that without a request).

    API errors raise: an empty answer would make SkyPilot forget a live cluster.
    """
    del retry_if_missing
    conn = cluster_bid.connect(provider_config)
    if cpu_vm.on_cpu_vm(provider_config):
        return _cpu_vm_statuses(conn, cluster_name, cluster_name_on_cloud,
                                non_terminated_only)
    reserved = reserved_nodes.ReservedNodes.held_by(conn, cluster_name_on_cloud)
    snapshot = project_snapshot.current(conn,
                                        with_reservations=reserved is not None)
    if reserved is not None:
        if snapshot.live_bids(cluster_name_on_cloud):
            _no_bid_beside(conn, cluster_name_on_cloud)
        return reserved.statuses(cluster_name, cluster_name_on_cloud,
                                non_terminated_only, snapshot)
    bid, instances = _bid_and_nodes(conn, cluster_name_on_cloud, snapshot)
    if bid is None:
        return {}
    statuses = status_table.node_statuses(bid, instances, non_terminated_only)
    if (bid.status == models.BidState.ALLOCATED and
            len(statuses) == bid.instance_quantity and
            all(status == status_lib.ClusterStatus.UP
                for status, _ in statuses.values())):
        node_key_renewal.renew_if_due(conn, cluster_name,
                                      cluster_name_on_cloud, instances)
    return statuses


def _cpu_vm_statuses(conn: connection.Connection, cluster_name: str,
                     cluster_name_on_cloud: str,
                     non_terminated_only: bool) -> status_table.NodeStatuses:
    """The CPU VM's node, read from the project's snapshot (live when the
    snapshot shows no VM of the name, or several); its nodes' key renewed
    when it is up."""
    vm = cpu_vm.from_snapshot(conn, cluster_name_on_cloud,
                              project_snapshot.current(conn))
    if vm is None:
        return {}
    statuses = status_table.cpu_vm_statuses(vm, non_terminated_only)
    if statuses.get(vm.fid, (None, None))[0] == status_lib.ClusterStatus.UP:
        node_key_renewal.renew_if_due(conn, cluster_name,
                                      cluster_name_on_cloud, [vm])
    return statuses


def _bid_and_nodes(conn: connection.Connection, cluster_name_on_cloud: str,
                   snapshot: project_snapshot.Snapshot
                   ) -> Tuple[Optional[models.Bid], List[models.Instance]]:
    """The cluster's bid and the instances of its nodes, from the snapshot
    when it shows the name's one live bid, else read live."""
    bids = snapshot.live_bids(cluster_name_on_cloud)
    if len(bids) == 1:
        return bids[0], cluster_bid.nodes_of(
            bids[0], snapshot.instances_of_bid(bids[0].fid))
    bid = cluster_bid.refreshed_bid(conn, cluster_name_on_cloud)
    return bid, ([] if bid is None else
                 cluster_bid.current_instances(conn, bid))


def stop_instances(cluster_name_on_cloud: str,
                   provider_config: Optional[Dict[str, Any]] = None,
                   worker_only: bool = False) -> None:
    """Pauses the bid (instances spin down, disks are kept, billing stops),
    or the cluster's reserved instances. A bid of the name beside reserved
    instances is cancelled (`_no_bid_beside`) only while one of those
    instances exists: a node's staged instances that are all gone (an
    ended reservation, a stale NODE_FILE) say nothing of its bid, which
    is paused as a spot cluster's autostop pauses it. A CPU VM is never
    stopped: paused, it bills on (SkyPilot refuses `sky stop` and autostop
    for it first). Its NotImplementedError is SkyPilot's word for that: a
    failed relaunch of a cluster that was up then stops failover instead
    of stopping it."""
    if worker_only:
        logger.info('Mithril clusters stop all nodes or none: workers cannot '
                    'be stopped without the head; nothing was stopped.')
        return
    conn = cluster_bid.connect(provider_config)
    if cpu_vm.on_cpu_vm(provider_config):
        raise NotImplementedError(
            f'{cluster_name_on_cloud} is a Mithril CPU VM, which bills at its '
            'fixed price until deleted, paused or not: it is never stopped. '
            '`sky down` ends the bill.')
    reserved = reserved_nodes.ReservedNodes.held_by(conn, cluster_name_on_cloud)
    if reserved is not None and reserved.instances():
        _no_bid_beside(conn, cluster_name_on_cloud)
        reserved.pause()
        return
    cluster_bid.pause(conn, cluster_name_on_cloud)


def terminate_instances(cluster_name_on_cloud: str,
                        provider_config: Optional[Dict[str, Any]] = None,
                        worker_only: bool = False) -> None:
    """Deletes the cluster's CPU VM, or cancels every live bid of the
    cluster and confirms each is Terminated, or gives its reserved instances
    back to the reservation
    (on a node, where that cannot finish, pauses them: the API server's
    next status refresh gives them back); then revokes the cluster's node
    keys (on a node, its own last); a failure to revoke is reported, not
    raised."""
    if worker_only:
        logger.info('Mithril clusters end all nodes or none: workers cannot '
                    'be terminated without the head; nothing was terminated.')
        return
    conn = cluster_bid.connect(provider_config)
    if cpu_vm.on_cpu_vm(provider_config):
        cpu_vm.delete(conn, cluster_name_on_cloud)
        node_keys.revoke_all(conn, cluster_name_on_cloud)
        return
    reserved = reserved_nodes.ReservedNodes.held_by(conn, cluster_name_on_cloud)
    if reserved is not None and reserved.on_node:
        reserved.pause()
    elif reserved is not None:
        reserved.give_back()
    cluster_bid.cancel_all(conn, cluster_name_on_cloud)
    node_keys.revoke_all(conn, cluster_name_on_cloud)


def cleanup_cluster_resources(
        cluster_name_on_cloud: str,
        provider_config: Optional[Dict[str, Any]] = None) -> None:
    """SkyPilot calls this once it has found the cluster gone and cleans up
    after it: at a status refresh (the status daemon, `sky status -r`) and
    at `sky down`, even of a cluster already gone. Revokes the nodes' keys
    minted before the cluster's last bid ended (a node's autodown cancels
    its bid and is taken before it can revoke its own key); nothing while a
    bid of the name is live. A failure is reported, never raised: it must
    not stop a status refresh or a `sky down`. A CPU VM's cluster: the keys
    minted before now, once no VM of the name is live (a node's autodown
    deletes its own VM before it can revoke its own key)."""
    try:
        conn = cluster_bid.connect(provider_config)
        ended_at = (cpu_vm.ended_at(conn, cluster_name_on_cloud)
                    if cpu_vm.on_cpu_vm(provider_config) else
                    cluster_bid.ended_at(conn, cluster_name_on_cloud))
        if ended_at is not None:
            node_keys.revoke_minted_before(conn, cluster_name_on_cloud,
                                           ended_at)
    except Exception as e:  # pylint: disable=broad-except
        logger.warning(f'Could not revoke the Mithril API keys of '
                       f'{cluster_name_on_cloud}\'s nodes: {e} Each expires '
                       f'at most {node_keys.LIFETIME.days} days after it was '
                       'minted.')


def get_cluster_info(region: str, cluster_name_on_cloud: str,
                     provider_config: Optional[Dict[str, Any]] = None
                     ) -> common.ClusterInfo:
    """Nodes with an SSH destination; the head is the bid's first instance
    (a CPU VM's cluster: the VM)."""
    del region
    conn = cluster_bid.connect(provider_config)
    if cpu_vm.on_cpu_vm(provider_config):
        return cpu_vm.cluster_info(conn, cluster_name_on_cloud, provider_config)
    reserved = reserved_nodes.ReservedNodes.held_by(conn, cluster_name_on_cloud)
    if reserved is not None:
        return reserved.cluster_info(provider_config)
    return cluster_bid.cluster_info(
        conn, cluster_bid.live_bid(conn, cluster_name_on_cloud), provider_config)


def open_ports(cluster_name_on_cloud: str,
               ports: List[str],
               provider_config: Optional[Dict[str, Any]] = None) -> None:
    """Never called: SkyPilot opens a LAUNCH_ONLY cloud's ports through
    run_instances, which opens them on the head at every launch and start;
    ports cannot be added to a cluster that exists (SkyPilot refuses first)."""
    del cluster_name_on_cloud, provider_config
    raise NotImplementedError(
        f'Mithril opens a cluster\'s ports as it launches; to open {ports}, '
        '`sky down` the cluster and launch it with them.')


def cleanup_ports(cluster_name_on_cloud: str,
                  ports: List[str],
                  provider_config: Optional[Dict[str, Any]] = None) -> None:
    """Nothing to clean up: SkyPilot calls this once the cluster's bid is
    cancelled, and the head's forwarders went with its instance."""
    del cluster_name_on_cloud, ports, provider_config


def query_ports(cluster_name_on_cloud: str,
                ports: List[str],
                head_ip: Optional[str] = None,
                provider_config: Optional[Dict[str, Any]] = None
                ) -> Dict[int, List[common.Endpoint]]:
    """Each port at the head's public address, where the head opened it:
    the address SkyPilot passes, else the head's address from Mithril (none
    while the cluster has no head)."""
    if head_ip is None:
        head = get_cluster_info('', cluster_name_on_cloud,
                                provider_config).get_head_instance()
        if head is None:
            return {}
        head_ip = head.external_ip
    return common.query_ports_passthrough(ports, head_ip)


def cleanup_custom_multi_network(cluster_name_on_cloud: str,
                                 provider_config: Dict[str, Any],
                                 failover: bool = False) -> None:
    """Mithril clusters use no custom networks; nothing to clean up."""
    del cluster_name_on_cloud, provider_config, failover
