"""Kubernetes clusters: a created cluster is `Pending` for `k8s_boot_s`, then
its control node's host comes up (with the cluster's SSH keys and the market's
own control-node key) and it is `Available` with `kube_host` = the host's
address; `control_node_ready` (if set) is then called, e.g. to install the
kubeconfig. A bid or a reservation whose `launch_specification.kubernetes_cluster`
names a cluster joins it: its instances are listed in the cluster's
`instances` while the bid lives (the reservation has not ended). Deleting a cluster makes it `Terminated` and removes the control
node's host.
"""

import logging
from typing import Callable, List, Optional, Sequence, Tuple

from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.auctions import Auctions
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                NotFound)
from sky_mithril.emulator.market.records import (BidStatus, Instance,
                                                 KubernetesCluster,
                                                 KubernetesClusterStatus)
from sky_mithril.emulator.market.ssh_keys import SshKeys, generate_key_pair
from sky_mithril.emulator.market.state import MarketState

logger = logging.getLogger('sky.sky_mithril.emulator')

K8S_VERSIONS = ('1.34', '1.29')
DEFAULT_K8S_VERSION = '1.34'


class KubernetesClusters:
    """Creates, lists and deletes clusters; brings their control nodes up."""

    def __init__(self, state: MarketState, accounts: Accounts,
                 ssh_keys: SshKeys, auctions: Auctions, *,
                 k8s_boot_s: float) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts
        self._ssh_keys = ssh_keys
        self._auctions = auctions
        self.k8s_boot_s = k8s_boot_s
        self.control_node_ready: Optional[Callable[[KubernetesCluster],
                                                   None]] = None
        self._control_key: Optional[Tuple[str, str]] = None

    def create(self,
               *,
               project: str,
               name: str,
               region: str,
               instance_type: str,
               ssh_keys: Sequence[str] = (),
               k8s_version: str = DEFAULT_K8S_VERSION,
               image_version: Optional[str] = None) -> KubernetesCluster:
        """A Pending cluster whose control node comes up after `k8s_boot_s`;
        raises InvalidRequest."""
        errors = self._accounts.order_errors(project, name)
        if not self._store.has_region(region):
            errors.append(FieldError('region', f'Region {region} not found'))
        found_type = None
        try:
            found_type = self._auctions.instance_type(instance_type)
        except NotFound:
            errors.append(
                FieldError('instance_type',
                           f'Instance type {instance_type} not found'))
        if k8s_version not in K8S_VERSIONS:
            errors.append(
                FieldError('k8s_version',
                           f'k8s_version must be one of {list(K8S_VERSIONS)}'))
        errors.extend(self._ssh_keys.unknown_key_errors(project, ssh_keys))
        if errors:
            raise InvalidRequest(errors)
        assert found_type is not None
        cluster = KubernetesCluster(
            fid=self._state.new_fid('k8s'),
            name=name,
            project=project,
            region=region,
            created_at=self._state.now,
            k8s_version=k8s_version,
            ssh_keys=list(ssh_keys),
            instance_type=found_type,
            control_node_fid=self._state.new_fid('inst'),
            token=self._state.random_token(22),
            image_version=image_version)
        self._store.k8s_clusters[cluster.fid] = cluster
        self._state.timer(cluster, self.k8s_boot_s,
                          lambda: self._bring_up_control_node(cluster))
        return cluster

    def get(self, fid: str) -> KubernetesCluster:
        cluster = self._store.k8s_clusters.get(fid)
        if cluster is None:
            raise NotFound('Kubernetes cluster', fid)
        return cluster

    def list(self, project: str) -> List[KubernetesCluster]:
        """A project's clusters (terminated ones too), in creation order."""
        self._accounts.require_project(project)
        return [
            c for c in self._store.k8s_clusters.values()
            if c.project == project
        ]

    def can_join(self, project: str, fid: str) -> bool:
        """Whether a bid or reservation of `project` may join cluster `fid`:
        the project's, not terminated."""
        cluster = self._store.k8s_clusters.get(fid)
        return (cluster is not None and cluster.project == project and
                cluster.status != KubernetesClusterStatus.TERMINATED)

    def instances(self, cluster: KubernetesCluster) -> List[Instance]:
        """Instances of the live bids, then of the live reservations, that
        joined `cluster`, each in creation order."""
        return [
            instance for bid in self._store.bids.values()
            if bid.launch_specification.kubernetes_cluster == cluster.fid and
            bid.status != BidStatus.TERMINATED for instance in bid.instances
        ] + [
            instance for reservation in self._store.reservations.values()
            if reservation.launch_specification.kubernetes_cluster ==
            cluster.fid and reservation.live
            for instance in reservation.instances
        ]

    def delete(self, fid: str) -> KubernetesCluster:
        """Terminates the cluster and removes its control node; idempotent."""
        cluster = self.get(fid)
        if cluster.status == KubernetesClusterStatus.TERMINATED:
            return cluster
        cluster.status = KubernetesClusterStatus.TERMINATED
        cluster.epoch += 1
        cluster.deleted_at = self._state.now
        if cluster.address is not None:
            try:
                self._state.hosts.destroy(cluster.control_node_fid)
            except Exception:  # pylint: disable=broad-except
                logger.exception('Host backend failed to remove control node '
                                 '%s', cluster.control_node_fid)
        return cluster

    @property
    def control_node_private_key(self) -> str:
        """The private half of the key every control node also accepts, so the
        emulator can set the node up (OpenSSH PEM)."""
        return self._control_key_pair()[1]

    def _control_key_pair(self) -> Tuple[str, str]:
        if self._control_key is None:
            self._control_key = generate_key_pair()
        return self._control_key

    def _bring_up_control_node(self, cluster: KubernetesCluster) -> None:
        """Creates the control node's host; the cluster stays Pending if the
        backend fails (logged)."""
        keys = self._ssh_keys.public_keys(
            cluster.ssh_keys) + [self._control_key_pair()[0]]
        try:
            cluster.address = self._state.hosts.create(
                cluster.control_node_fid, list(dict.fromkeys(keys)))
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend failed to start the control node '
                             'of %s', cluster.fid)
            return
        cluster.status = KubernetesClusterStatus.AVAILABLE
        if self.control_node_ready is not None:
            try:
                self.control_node_ready(cluster)
            except Exception:  # pylint: disable=broad-except
                logger.exception('Setting up the control node of %s failed',
                                 cluster.fid)
