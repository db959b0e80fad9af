"""The user's path, as separate `sky-mithril` processes, on namespace "VMs"
(real SSH hosts with their own hostname and address): create and wait, ssh a
command, delete; a Kubernetes node pool whose kube API `kubectl` reaches at the
control node's address. Needs root, `ip` and `unshare`; the VM image is built
once and cached."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import requests
import yaml

from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.hosts.vm_image import ensure_vm_image
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.commands import REGION, TYPE, Api, write_two_context_kubeconfig


# Root only: the hosts install what else they need (iproute2, sshd) themselves,
# so a fresh machine runs these tests instead of skipping them.
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason='network namespaces need root'),
]


@pytest.fixture
def namespace_emulator(home: Path) -> Iterator[EmulatorServer]:
    hosts = NamespaceHosts(ensure_vm_image(lambda m: print(f'[vm image] {m}')))
    with EmulatorServer(speed=600, hosts=hosts, host=hosts.api_address) as server:
        server.control('POST', 'price', instance_type=TYPE, region=REGION,
                       price='$2.00')
        yield server


def _sky_mithril(server: EmulatorServer, home: Path,
                 *argv: str) -> subprocess.CompletedProcess:
    env: Dict[str, str] = {
        'HOME': str(home), 'PATH': os.environ['PATH'],
        'XDG_CONFIG_HOME': str(home / '.config'),
        'MITHRIL_API_KEY': 'emulator-test-key', 'MITHRIL_API_URL': server.url,
        'MITHRIL_PROJECT': 'proj_emulator'}
    return subprocess.run([sys.executable, '-m', 'sky_mithril.cli', *argv],
                          env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_create_wait_ssh_hostname_delete(namespace_emulator: EmulatorServer,
                                         home: Path) -> None:
    created = _sky_mithril(namespace_emulator, home, 'instance', 'create',
                           '-i', TYPE, '-r', REGION, '-m', '8', '-n', 'e2e',
                           '--wait', '--json')
    assert created.returncode == 0, created.stderr
    [node] = json.loads(created.stdout)['nodes']
    assert node['status'] == 'STATUS_RUNNING'

    hostname = _sky_mithril(namespace_emulator, home, 'ssh', 'e2e', '--',
                            'hostname')
    assert hostname.returncode == 0, hostname.stderr
    printed = hostname.stdout.strip()
    hosts = namespace_emulator.market.hosts
    assert isinstance(hosts, NamespaceHosts)
    assert printed == f'{node["fid"].lower().replace("_", "-")}-{hosts.prefix}'
    assert printed != socket.gethostname()

    deleted = _sky_mithril(namespace_emulator, home, 'instance', 'delete',
                           'e2e', '-y')
    assert deleted.returncode == 0, deleted.stderr
    info = _sky_mithril(namespace_emulator, home, 'instance', 'info', 'e2e',
                        '--json')
    detail = json.loads(info.stdout)
    assert detail['status'] == 'Terminated'
    assert [n['status'] for n in detail['nodes']] == ['STATUS_TERMINATED']


def _until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Polls `check` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f'{what} did not happen within {timeout:.0f}s')
        time.sleep(0.1)
    return value


def _node_rows(kubectl_output: str) -> List[List[str]]:
    """NAME, STATUS and ROLES of `kubectl get nodes --no-headers`, sorted."""
    return sorted(line.split()[:3] for line in kubectl_output.splitlines() if line)


def test_k8s_pool_validates_with_kubectl_at_the_control_node(
        namespace_emulator: EmulatorServer, home: Path, kubectl: str) -> None:
    api = Api(namespace_emulator)
    hosts = namespace_emulator.market.hosts
    assert isinstance(hosts, NamespaceHosts)
    key = api.add_key(home / '.ssh' / 'id_ed25519.pub')
    fid = api.create_cluster('pool', [key])['fid']
    cluster = _until('cluster pool Available', lambda: next(
        (c for c in [api.get(f'/v2/kubernetes/clusters/{fid}')]
         if c['status'] == 'Available'), None))
    kube_host = cluster['kube_host']
    assert kube_host.startswith(hosts.subnet + '.') and kube_host != hosts.api_address

    created = _sky_mithril(namespace_emulator, home, 'instance', 'create', '-i',
                           TYPE, '-r', REGION, '-m', '8', '-n', 'workers',
                           '--k8s', 'pool', '--wait')
    assert created.returncode == 0, created.stderr
    before = write_two_context_kubeconfig(home)
    updated = _sky_mithril(namespace_emulator, home, 'k8s', 'update-kubeconfig',
                           'pool', '-y')
    assert updated.returncode == 0, updated.stderr
    # The command's own check (`kubectl version`, `get nodes`) passed.
    assert 'Server Version: v1.34.0' in updated.stdout

    config_path = home / '.kube' / 'config'
    merged = yaml.safe_load(config_path.read_text())
    assert [c['name'] for c in merged['contexts']] == ['mithril:pool', 'dev', 'prod']
    assert merged['contexts'][1:] == before['contexts']
    assert merged['current-context'] == 'dev'
    assert (merged['clusters'][0]['cluster']['server'] ==
            f'http://{kube_host}:6443/_kube/{fid}')
    [backup] = config_path.parent.glob('config.backup.*')
    assert yaml.safe_load(backup.read_text()) == before

    expected = [['pool-control', 'Ready', 'control-plane'],
                ['workers-0', 'Ready', '<none>']]
    here = subprocess.run([kubectl, '--context', 'mithril:pool', 'get', 'nodes',
                           '--no-headers'], capture_output=True, text=True,
                          env={'HOME': str(home), 'PATH': '/usr/bin:/bin'},
                          timeout=60, check=False)
    assert here.returncode == 0, here.stderr
    assert _node_rows(here.stdout) == expected
    # The control node's own kubeconfig works on the control node.
    there = _sky_mithril(namespace_emulator, home, 'k8s', 'ssh', 'pool', '--',
                         'kubectl', 'get', 'nodes', '--no-headers')
    assert there.returncode == 0, there.stderr
    assert _node_rows(there.stdout) == expected

    deleted = _sky_mithril(namespace_emulator, home, 'instance', 'delete',
                           'workers', '-y')
    assert deleted.returncode == 0, deleted.stderr
    gone = requests.delete(f'{api.url}/v2/kubernetes/clusters/{fid}',
                           headers=api.headers, timeout=10)
    assert gone.status_code == 204
    assert api.get(f'/v2/kubernetes/clusters/{fid}')['status'] == 'Terminated'
    [bid] = api.bids_named('workers')
    assert bid['status'] == 'Terminated'
    # Nothing of the pool is left: no host namespace, no kube API at kube_host.
    _until('every host removed', lambda: not [
        n for n in subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                                  text=True, check=True).stdout.split()
        if n.startswith(hosts.prefix)])
    with pytest.raises(requests.ConnectionError):
        requests.get(f'http://{kube_host}:6443/_kube/{fid}/version', timeout=5)
