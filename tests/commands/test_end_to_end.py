"""The user's path, as separate `sky-mithril` processes, on namespace "VMs"
(real SSH hosts with their own hostname): create and wait, ssh a command,
delete. Needs root, `ip` and `unshare`; the VM image is built once and cached."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.hosts.vm_image import ensure_vm_image
from sky_mithril.emulator.server import EmulatorServer

from conftest import REGION, TYPE


def _can_run() -> bool:
    return (os.geteuid() == 0 and shutil.which('ip') is not None and
            shutil.which('unshare') is not None)


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not _can_run(), reason='needs root, ip and unshare'),
]


@pytest.fixture
def namespace_emulator(home: Path) -> Iterator[EmulatorServer]:
    hosts = NamespaceHosts(ensure_vm_image(lambda m: print(f'[vm image] {m}')))
    with EmulatorServer(speed=600, hosts=hosts) as server:
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
