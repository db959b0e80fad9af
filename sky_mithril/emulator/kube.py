"""Just enough of a Kubernetes API for each emulated cluster that `kubectl
version` and `kubectl get nodes` answer, and the control node's kubeconfig
that points at it.

The endpoint of cluster `k8s_x` is `<emulator URL>/_kube/k8s_x`, plain HTTP
and unauthenticated: kubectl never sends a bearer token over plain HTTP, so
the token in the kubeconfig is only there to give its `users` entry kubeadm's
shape. Its nodes are the control node plus the instances of the bids that
joined the cluster, Ready while RUNNING. It is not a Kubernetes: nothing else
is served, nothing can be created, and it answers only while the cluster is
Available.

When a cluster becomes Available, `KubeconfigInstaller` logs into the control
node with the market's control-node key and writes `~/.kube/config` there, as
kubeadm would leave `admin.conf` on a real control node. Where the host
backend forwards the node's own `<address>:6443` to the emulator (namespace
hosts), the kubeconfig names that address, so the API answers at `kube_host`
like a real control node's; otherwise (local hosts, which share this
machine's 127.0.0.1) it names the emulator's URL.
"""

import datetime
import logging
import os
import subprocess
import tempfile
from typing import Any, ContextManager, Dict, List, Optional
from urllib.parse import urlsplit

import fastapi
import yaml
from fastapi import Request
from fastapi.responses import JSONResponse

from sky_mithril.emulator import wire
from sky_mithril.emulator.hosts import HostAddress, HostBackend
from sky_mithril.emulator.market import (KUBE_API_PORT, InstanceStatus,
                                         KubernetesCluster,
                                         KubernetesClusterStatus, Market)

logger = logging.getLogger('sky.sky_mithril.emulator')

KUBE_PREFIX = '/_kube'
SSH_TIMEOUT_S = 30.0
_TABLE_MEDIA_TYPE = 'as=Table'
_NODE_COLUMNS = ('Name', 'Status', 'Roles', 'Age', 'Version')


def endpoint(api_url: str, cluster_fid: str) -> str:
    """The kube API server URL of a cluster, as its kubeconfig names it:
    `api_url` is where the emulator answers (its URL, or a forwarder's)."""
    return f'{api_url.rstrip("/")}{KUBE_PREFIX}/{cluster_fid}'


def kubeconfig_text(api_url: str, cluster: KubernetesCluster) -> str:
    """The control node's `~/.kube/config`, shaped like kubeadm's admin.conf."""
    config = {
        'apiVersion': 'v1',
        'kind': 'Config',
        'clusters': [{'name': 'kubernetes',
                      'cluster': {'server': endpoint(api_url, cluster.fid)}}],
        'users': [{'name': 'kubernetes-admin',
                   'user': {'token': cluster.token}}],
        'contexts': [{'name': 'kubernetes-admin@kubernetes',
                      'context': {'cluster': 'kubernetes',
                                  'user': 'kubernetes-admin'}}],
        'current-context': 'kubernetes-admin@kubernetes',
        'preferences': {},
    }
    return yaml.safe_dump(config, sort_keys=False)


class KubeconfigInstaller:
    """`market.kubernetes_clusters.control_node_ready` for real SSH hosts:
    has `hosts` forward the control node's kube API port if they need to,
    then writes the kubeconfig."""

    def __init__(self, emulator_url: str, private_key: str,
                 hosts: HostBackend) -> None:
        self._emulator_url = emulator_url
        self._private_key = private_key
        self._hosts = hosts

    def _api_url(self, cluster: KubernetesCluster, address: HostAddress) -> str:
        """Where the control node's kubeconfig says its kube API is."""
        url = urlsplit(self._emulator_url)
        if url.port is None:
            raise ValueError(f'The emulator URL {self._emulator_url} names no port')
        if not self._hosts.forward_kube_api(cluster.control_node_fid,
                                            KUBE_API_PORT, url.port):
            return self._emulator_url
        if url.hostname not in (self._hosts.api_address, '0.0.0.0'):
            raise RuntimeError(
                f'The emulator listens on {url.hostname}, which the hosts do '
                f'not reach; start it on the host backend\'s api_address '
                f'({self._hosts.api_address}).')
        return f'http://{address.private_ip}:{KUBE_API_PORT}'

    def __call__(self, cluster: KubernetesCluster) -> None:
        address = cluster.address
        if address is None:
            raise ValueError(f'{cluster.fid} has no control node yet')
        api_url = self._api_url(cluster, address)
        with tempfile.TemporaryDirectory(prefix='sky-mithril-k8s-') as tmp:
            key_path = os.path.join(tmp, 'control-node-key')
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600),
                      'w', encoding='utf-8') as f:
                f.write(self._private_key)
            result = subprocess.run(
                ['ssh', '-i', key_path, '-p', str(address.ssh_port),
                 '-o', 'StrictHostKeyChecking=no',
                 '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
                 '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR',
                 '-o', 'ConnectTimeout=10',
                 f'{address.ssh_user}@{address.ssh_destination}',
                 'mkdir -p ~/.kube && umask 077 && cat > ~/.kube/config'],
                input=kubeconfig_text(api_url, cluster),
                capture_output=True, text=True, timeout=SSH_TIMEOUT_S,
                check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f'writing ~/.kube/config on the control node of {cluster.fid} '
                f'failed ({result.returncode}): {result.stderr.strip()}')


def _status(code: int, reason: str, message: str) -> JSONResponse:
    """A Kubernetes `Status` error body."""
    return JSONResponse({'kind': 'Status', 'apiVersion': 'v1',
                         'metadata': {}, 'status': 'Failure',
                         'message': message, 'reason': reason, 'code': code},
                        status_code=code)


def _age(since: datetime.datetime, now: datetime.datetime) -> str:
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size:
            return f'{seconds // size}{unit}'
    return f'{seconds}s'


class _Node:
    """One node as kubectl sees it."""

    def __init__(self, name: str, ready: bool, control_plane: bool,
                 created_at: datetime.datetime, internal_ip: Optional[str],
                 version: str) -> None:
        self.name = name
        self.ready = ready
        self.control_plane = control_plane
        self.created_at = created_at
        self.internal_ip = internal_ip
        self.version = version

    def metadata(self) -> Dict[str, Any]:
        labels = {'kubernetes.io/hostname': self.name}
        if self.control_plane:
            labels['node-role.kubernetes.io/control-plane'] = ''
        return {'name': self.name, 'uid': self.name,
                'resourceVersion': '1',
                'creationTimestamp': wire.iso(self.created_at),
                'labels': labels}

    def as_object(self) -> Dict[str, Any]:
        addresses = ([{'type': 'InternalIP', 'address': self.internal_ip}]
                     if self.internal_ip else [])
        return {
            'kind': 'Node', 'apiVersion': 'v1', 'metadata': self.metadata(),
            'spec': {},
            'status': {
                'conditions': [{'type': 'Ready',
                                'status': 'True' if self.ready else 'False',
                                'reason': ('KubeletReady' if self.ready
                                           else 'KubeletNotReady')}],
                'addresses': addresses,
                'nodeInfo': {'kubeletVersion': self.version},
            },
        }

    def table_row(self, now: datetime.datetime) -> Dict[str, Any]:
        return {
            'cells': [self.name, 'Ready' if self.ready else 'NotReady',
                      'control-plane' if self.control_plane else '<none>',
                      _age(self.created_at, now), self.version],
            'object': {'kind': 'PartialObjectMetadata',
                       'apiVersion': 'meta.k8s.io/v1',
                       'metadata': self.metadata()},
        }


def _git_version(cluster: KubernetesCluster) -> str:
    return f'v{cluster.k8s_version}.0'


def _nodes(market: Market, cluster: KubernetesCluster) -> List[_Node]:
    version = _git_version(cluster)
    control = _Node(f'{cluster.name}-control', True, True, cluster.created_at,
                    cluster.address.private_ip if cluster.address else None,
                    version)
    workers = [
        _Node(i.name, i.status == InstanceStatus.RUNNING, False, i.created_at,
              i.address.private_ip if i.address else None, version)
        for i in market.kubernetes_clusters.instances(cluster)
    ]
    return [control, *workers]


def kube_router(market: Market, lock: ContextManager[Any]) -> fastapi.APIRouter:
    """`/_kube/{cluster_fid}/...`: version, discovery and nodes of each cluster."""
    router = fastapi.APIRouter(prefix=KUBE_PREFIX + '/{cluster_fid}')

    def available_cluster(cluster_fid: str) -> KubernetesCluster:
        with market.caught_up(lock):
            cluster = market.kubernetes_clusters.get(cluster_fid)
        if cluster.status != KubernetesClusterStatus.AVAILABLE:
            raise fastapi.HTTPException(503, f'cluster {cluster_fid} is '
                                        f'{cluster.status.value}')
        return cluster

    @router.get('/version')
    def version(cluster_fid: str) -> Dict[str, Any]:
        cluster = available_cluster(cluster_fid)
        major, minor = cluster.k8s_version.split('.')
        return {'major': major, 'minor': minor,
                'gitVersion': _git_version(cluster), 'gitCommit': 'emulated',
                'gitTreeState': 'clean', 'buildDate': '2025-01-01T00:00:00Z',
                'goVersion': 'go1.23', 'compiler': 'gc',
                'platform': 'linux/amd64'}

    @router.get('/api')
    def core_versions(cluster_fid: str) -> Dict[str, Any]:
        available_cluster(cluster_fid)
        return {'kind': 'APIVersions', 'versions': ['v1'],
                'serverAddressByClientCIDRs': []}

    @router.get('/apis')
    def groups(cluster_fid: str) -> Dict[str, Any]:
        available_cluster(cluster_fid)
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': []}

    @router.get('/api/v1')
    def core_resources(cluster_fid: str) -> Dict[str, Any]:
        available_cluster(cluster_fid)
        return {'kind': 'APIResourceList', 'groupVersion': 'v1',
                'resources': [{'name': 'nodes', 'singularName': 'node',
                               'namespaced': False, 'kind': 'Node',
                               'verbs': ['get', 'list'],
                               'shortNames': ['no']}]}

    def nodes_answer(request: Request, nodes: List[_Node],
                     now: datetime.datetime) -> Dict[str, Any]:
        """A Table when kubectl asks for one (it prints that), else a NodeList."""
        if _TABLE_MEDIA_TYPE in request.headers.get('accept', ''):
            return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1',
                    'metadata': {'resourceVersion': '1'},
                    'columnDefinitions': [
                        {'name': name, 'type': 'string',
                         'format': 'name' if name == 'Name' else '',
                         'description': '', 'priority': 0}
                        for name in _NODE_COLUMNS],
                    'rows': [node.table_row(now) for node in nodes]}
        return {'kind': 'NodeList', 'apiVersion': 'v1',
                'metadata': {'resourceVersion': '1'},
                'items': [node.as_object() for node in nodes]}

    @router.get('/api/v1/nodes')
    def list_nodes(request: Request, cluster_fid: str) -> Dict[str, Any]:
        cluster = available_cluster(cluster_fid)
        with market.caught_up(lock):
            return nodes_answer(request, _nodes(market, cluster), market.now)

    @router.get('/api/v1/nodes/{node_name}', response_model=None)
    def get_node(request: Request, cluster_fid: str, node_name: str) -> Any:
        cluster = available_cluster(cluster_fid)
        with market.caught_up(lock):
            nodes = [n for n in _nodes(market, cluster) if n.name == node_name]
            now = market.now
        if not nodes:
            return _status(404, 'NotFound', f'nodes "{node_name}" not found')
        answer = nodes_answer(request, nodes, now)
        return answer if answer['kind'] == 'Table' else nodes[0].as_object()

    return router
