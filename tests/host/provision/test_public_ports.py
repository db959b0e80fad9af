"""A task's ports on a namespace "VM", through the provisioner as SkyPilot
calls it: the head opens them as it launches (a server on the head answers at
query_ports' endpoint from this machine) and again as it starts after a stop;
and Mithril's forwarder on the head itself: a port stays closed until
`foundrypf PORT`, closes again with `foundrypf -d PORT`, and one Mithril does
not forward is refused. Needs root, `ip`, `unshare` and nftables; the VM
image is built once and cached."""

import dataclasses
import os
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.devtools import provisioning
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.hosts.vm_image import ensure_vm_image
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as provisioner

from tests.helpers.provisioning import point_plugin_at

# Root only: the hosts install what else they need themselves, so a fresh
# machine runs this test instead of skipping it.
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason='network namespaces need root'),
]

REGION = 'us-central3-a'
TYPE = 'a100-80gb.sxm.1x'
PROVIDER = {'project_id': 'proj_emulator', 'region': REGION,
            'limit_price_per_hour': '32.00', 'profile': '', 'api_url': '',
            'provision_timeout': '', 'boot_timeout': ''}
NAME = 'web'


def _ssh(address: str, key: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ['ssh', '-i', str(key), '-o', 'StrictHostKeyChecking=no',
         '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
         '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
         f'ubuntu@{address}', command],
        capture_output=True, text=True, timeout=60, check=False)


def _ssh_ok(address: str, key: Path, command: str) -> str:
    result = _ssh(address, key, command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout + result.stderr


def _serve(address: str, key: Path, port: int, bind: str) -> None:
    """An HTTP server on the head at `bind`:`port`, answering `head <port>`."""
    _ssh_ok(address, key,
            f'mkdir -p /tmp/www-{port} && echo head {port} > /tmp/www-{port}/index.html && '
            f'setsid -f python3 -m http.server {port} --bind {bind} '
            f'--directory /tmp/www-{port} >/dev/null 2>&1 </dev/null && '
            f'for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null '
            '&& exit 0; sleep 0.1; done; exit 1')


def _reachable(address: str, port: int) -> bool:
    """Whether this machine connects to `address:port` (the edge drops what
    it does not let in, so a closed port times out)."""
    try:
        socket.create_connection((address, port), timeout=1.5).close()
        return True
    except OSError:
        return False


def test_ports_open_at_launch_and_start_and_close_with_foundrypf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / 'id_ed25519'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(key)],
                   check=True)
    hosts = NamespaceHosts(ensure_vm_image(lambda m: print(f'[vm image] {m}')))
    with EmulatorServer(speed=600, hosts=hosts, host=hosts.api_address) as server:
        server.control('POST', 'price', instance_type=TYPE, region=REGION,
                       price='$2.00')
        point_plugin_at(server, monkeypatch, tmp_path)
        key_fid = ssh_key_fid_for(connection.connect(),
                                  key.with_suffix('.pub').read_text())

        def config(resume: bool):
            launch = provisioning.provision_config(
                PROVIDER, key_fid, TYPE, resume_stopped_nodes=resume)
            return dataclasses.replace(
                launch, ports_to_open_on_launch=[8080],
                authentication_config={**launch.authentication_config,
                                       'ssh_private_key': str(key)})

        provisioner.run_instances(REGION, NAME, NAME, config(resume=False))
        [[endpoint]] = provisioner.query_ports(NAME, ['8080'],
                                               provider_config=PROVIDER).values()
        head = endpoint.host
        # Bound to the head's loopback only: foundrypf leads the public port there.
        _serve(head, key, 8080, '127.0.0.1')
        assert requests.get(f'http://{endpoint.url()}/', timeout=5).text == 'head 8080\n'

        # A port nobody opened is closed from outside, though it serves
        # on every address; `foundrypf` opens it, `-d` closes it again.
        _serve(head, key, 9090, '0.0.0.0')
        assert not _reachable(head, 9090)
        _ssh_ok(head, key, 'sudo -n setsid -f foundrypf 9090 >/tmp/pf.log 2>&1 </dev/null; '
                'sleep 1; pgrep -f "foundrypf 9090$"')
        assert requests.get(f'http://{head}:9090/', timeout=5).text == 'head 9090\n'
        assert 'port 9090 closed' in _ssh_ok(head, key, 'sudo -n foundrypf -d 9090')
        assert not _reachable(head, 9090)
        assert _ssh(head, key, 'pgrep -f "foundrypf 9090$"').returncode == 1
        for refused in ('22', '1023', '65536'):
            result = _ssh(head, key, f'sudo -n foundrypf {refused}')
            assert result.returncode == 1 and (
                'Mithril forwards ports 80, 443 and 1024-65535 only'
                in result.stderr), result

        # A stop kills the head's forwarders; the start opens the port again.
        provisioner.stop_instances(NAME, PROVIDER)
        provisioner.run_instances(REGION, NAME, NAME, config(resume=True))
        [[endpoint]] = provisioner.query_ports(NAME, ['8080'],
                                               provider_config=PROVIDER).values()
        _serve(endpoint.host, key, 8080, '127.0.0.1')
        assert requests.get(f'http://{endpoint.url()}/', timeout=5).text == 'head 8080\n'
        provisioner.terminate_instances(NAME, PROVIDER)
