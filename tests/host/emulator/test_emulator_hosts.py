"""Real SSH hosts for end-to-end runs: namespace "VMs", the VM image, offline installs.

Needs root, `ip` and `unshare`. The first run builds the VM image (about half a
minute with a warm network); later runs reuse it.
"""

import datetime
import hashlib
import http.server
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import jinja2
import pytest
import requests
import yaml

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts import (HostAddress, VolumeAttachment,
                                        VolumeInterface)
from sky_mithril.emulator.hosts.local import LocalPortHosts
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.hosts.sshd import HostError
from sky_mithril.emulator.hosts.vm_image import VmImage
from sky_mithril.emulator.hosts.vm_image import ensure_vm_image
from sky_mithril.emulator.market import PROJECT_FID, Bid, InstanceStatus, Market
from sky_mithril.emulator.server import load_catalog


# Root only: the hosts install what else they need (iproute2, sshd) themselves,
# so a fresh machine runs these tests instead of skipping them.
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason='network namespaces need root'),
]


@pytest.fixture(scope='module')
def image() -> VmImage:
    return ensure_vm_image(lambda message: print(f'[vm image] {message}'))


@pytest.fixture(scope='module')
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('ssh') / 'id_ed25519'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(path)],
                   check=True)
    return path


@pytest.fixture
def namespace_hosts(image: VmImage) -> Iterator[NamespaceHosts]:
    backend = NamespaceHosts(image)
    try:
        yield backend
    finally:
        backend.close()


def _public(key: Path) -> List[str]:
    return [key.with_suffix('.pub').read_text()]


def ssh(address: HostAddress, key: Path, command: str, *, user: str = 'ubuntu',
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `command` on the host with the system ssh client."""
    return subprocess.run(
        ['ssh', '-i', str(key), '-p', str(address.ssh_port),
         '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
         '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
         f'{user}@{address.ssh_destination}', command],
        capture_output=True, text=True, timeout=timeout, check=False)


def ssh_ok(address: HostAddress, key: Path, command: str, *, user: str = 'ubuntu',
           timeout: float = 120) -> str:
    result = ssh(address, key, command, user=user, timeout=timeout)
    assert result.returncode == 0, (
        f'`{command}` on {address} failed ({result.returncode}): '
        f'{result.stdout[-3000:]}{result.stderr[-3000:]}')
    return result.stdout


def login(command: str) -> str:
    """`command` in a login shell, as SkyPilot runs it (PATH gets ~/.local/bin)."""
    return f'bash --login -c {shlex.quote(command)}'


def _loops_of(path: Path) -> List[str]:
    """The loop devices this machine has on `path`."""
    listed = subprocess.run(['losetup', '--noheadings', '--output', 'NAME',
                             '--associated', str(path)],
                            capture_output=True, text=True, check=True).stdout
    return listed.split()


def _all_loops() -> str:
    return subprocess.run(['losetup', '--list', '--noheadings'], capture_output=True,
                          text=True, check=True).stdout


SHARE = VolumeAttachment('vol_share0000000001', 'shared', VolumeInterface.FILE,
                         'region-a', 10)
# Longer than the 36 characters of a virtio disk id, to see the cut.
DISK = VolumeAttachment('vol_block' + '0123456789' * 4, 'disk', VolumeInterface.BLOCK,
                        'region-a', 1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state not in ('Z', 'X')


def test_hosts_are_separate_machines(namespace_hosts: NamespaceHosts, key: Path) -> None:
    a = namespace_hosts.create('inst_a', _public(key))
    b = namespace_hosts.create('inst_b', _public(key))
    assert a.ssh_destination == a.private_ip != b.private_ip
    assert a.ssh_port == 22

    sudo = ssh(a, key, 'sudo -n true')
    assert (sudo.returncode, sudo.stderr) == (0, '')  # no "unable to resolve host"
    assert ssh_ok(a, key, 'hostname') != ssh_ok(b, key, 'hostname')
    ssh_ok(a, key, login("python3.10 -c 'import ssl, sqlite3'"))
    assert ssh_ok(a, key, login('uv --version')).startswith('uv ')

    ssh_ok(a, key, 'echo a > ~/only-a && mkdir -p /tmp/ray_skypilot && '
           'echo a > /tmp/ray_skypilot/only-a && sudo touch /etc/only-a')
    ssh_ok(b, key, 'test ! -e ~/only-a && test ! -e /tmp/ray_skypilot/only-a && '
           'test ! -e /etc/only-a')
    assert not Path('/etc/only-a').exists()
    assert not Path('/home/ubuntu/only-a').exists()

    banner = ssh_ok(a, key, f'timeout 5 bash -c "exec 3<>/dev/tcp/{b.private_ip}/22 '
                    '&& head -c 4 <&3"')
    assert banner == 'SSH-'
    routes = ssh_ok(a, key, 'ip -4 route').strip().splitlines()
    assert routes == [f'{namespace_hosts.subnet}.0/24 dev eth0 proto kernel scope link '
                      f'src {a.private_ip}']


def test_pause_and_resume_keep_the_disk(namespace_hosts: NamespaceHosts, key: Path) -> None:
    a = namespace_hosts.create('inst_a', _public(key))
    ssh_ok(a, key, 'echo kept > ~/disk-file && touch /tmp/scratch')
    namespace_hosts.pause('inst_a')
    assert ssh(a, key, 'true').returncode != 0
    assert namespace_hosts.resume('inst_a') == a
    assert ssh_ok(a, key, 'cat ~/disk-file') == 'kept\n'
    ssh_ok(a, key, 'test ! -e /tmp/scratch')


def test_notify_preemption_writes_the_signal_file(namespace_hosts: NamespaceHosts,
                                                   key: Path) -> None:
    a = namespace_hosts.create('inst_a', _public(key))
    end = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    namespace_hosts.notify_preemption('inst_a', bid_status='Preempting', end_time=end)
    signal_file = yaml.safe_load(ssh_ok(a, key, 'cat /opt/mithril/MITHRIL_SIGNAL.yml'))
    assert signal_file == {'instance_status': 'STATUS_PREEMPTING',
                           'bid_status': 'Preempting',
                           'end_time': '2030-01-02T03:04:05+00:00'}
    assert not (Path('/opt/mithril') / 'MITHRIL_SIGNAL.yml').exists()


def test_preempt_makes_the_host_unreachable(namespace_hosts: NamespaceHosts, key: Path) -> None:
    a = namespace_hosts.create('inst_a', _public(key))
    ssh_ok(a, key, 'echo kept > ~/disk-file')
    namespace_hosts.preempt('inst_a')
    assert ssh(a, key, 'true', timeout=30).returncode != 0
    assert namespace_hosts.resume('inst_a') == a
    assert ssh_ok(a, key, 'cat ~/disk-file') == 'kept\n'


def test_destroy_removes_everything(namespace_hosts: NamespaceHosts, key: Path) -> None:
    a = namespace_hosts.create('inst_a', _public(key))
    netns = namespace_hosts.netns('inst_a')
    ssh_ok(a, key, 'nohup sleep 1000 > /dev/null 2>&1 &')
    pids = [int(p) for p in subprocess.run(['ip', 'netns', 'pids', netns],
                                           capture_output=True, text=True,
                                           check=True).stdout.split()]
    assert len(pids) >= 3  # unshare, sshd as the namespace's PID 1, sleep
    namespace_hosts.destroy('inst_a')
    namespace_hosts.destroy('inst_a')
    listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True,
                            check=True).stdout
    assert netns not in listed
    links = subprocess.run(['ip', 'link'], capture_output=True, text=True,
                           check=True).stdout
    assert f'{namespace_hosts.prefix}h' not in links
    assert not [p for p in pids if _alive(p)]
    ps = subprocess.run(['ps', '-eo', 'pid,args'], capture_output=True, text=True,
                        check=True).stdout
    assert 'sleep 1000' not in ps
    assert namespace_hosts.prefix not in Path('/proc/mounts').read_text()
    assert not list((Path('/var/lib/sky-mithril/hosts') / namespace_hosts.prefix).glob('host-*'))


def test_a_file_share_is_shared_by_hosts_and_follows_fstab(
        namespace_hosts: NamespaceHosts, key: Path) -> None:
    machine_fstab = Path('/etc/fstab').read_bytes()
    a = namespace_hosts.create('inst_a', _public(key), [SHARE])
    b = namespace_hosts.create('inst_b', _public(key), [SHARE])
    ssh_ok(a, key, 'echo from-a > /mnt/shared/note')
    assert ssh_ok(b, key, 'cat /mnt/shared/note') == 'from-a\n'
    share = namespace_hosts.volume_path(SHARE.fid, VolumeInterface.FILE)
    assert (share / 'note').read_text() == 'from-a\n'
    fstab = ssh_ok(a, key, 'cat /etc/fstab').splitlines()
    assert f'{share} /mnt/shared none bind,nofail 0 0' in fstab
    ssh_ok(a, key, 'sudo mount -a && test "$(findmnt -n -o TARGET /mnt/shared)" = /mnt/shared')
    assert not Path('/mnt/shared').exists()

    # What SkyPilot does to put a share where the user wants it.
    ssh_ok(a, key, "sudo sed -i 's| /mnt/shared | /home/ubuntu/moved |' /etc/fstab && "
           'sudo umount /mnt/shared && mkdir ~/moved && sudo mount -a')
    assert ssh_ok(a, key, 'cat ~/moved/note') == 'from-a\n'
    namespace_hosts.pause('inst_a')
    a = namespace_hosts.resume('inst_a', [SHARE])
    assert ssh_ok(a, key, 'cat ~/moved/note') == 'from-a\n'  # mounted by fstab
    ssh_ok(a, key, '! mountpoint -q /mnt/shared')
    assert Path('/etc/fstab').read_bytes() == machine_fstab

    namespace_hosts.pause('inst_b')
    b = namespace_hosts.resume('inst_b', [])
    ssh_ok(b, key, 'test ! -e /mnt/shared/note')
    namespace_hosts.destroy('inst_a')
    namespace_hosts.delete_volume(SHARE.fid)
    assert not share.exists()


def test_a_block_volume_keeps_its_file_system_across_hosts(
        namespace_hosts: NamespaceHosts, key: Path) -> None:
    device = DISK.vm_path
    assert device == f'/dev/disk/by-id/virtio-{DISK.fid[:36]}'
    image = namespace_hosts.volume_path(DISK.fid, VolumeInterface.BLOCK)
    a = namespace_hosts.create('inst_a', _public(key), [DISK])
    assert image.stat().st_size == 1 << 30
    assert len(_loops_of(image)) == 1
    assert not Path('/dev/disk').exists()
    ssh_ok(a, key, f'test -b {device} && sudo mkfs.ext4 -q {device} && '
           f'sudo mkdir /mnt/blk && sudo mount {device} /mnt/blk && '
           'sudo chown ubuntu /mnt/blk && echo kept > /mnt/blk/file && '
           f'echo "UUID=$(sudo blkid -s UUID -o value {device}) /mnt/blk ext4 '
           'defaults,nofail 0 2" | sudo tee -a /etc/fstab')

    namespace_hosts.pause('inst_a')
    assert _loops_of(image) == []
    a = namespace_hosts.resume('inst_a', [DISK])
    assert ssh_ok(a, key, 'cat /mnt/blk/file') == 'kept\n'  # mounted by fstab
    namespace_hosts.destroy('inst_a')
    assert _loops_of(image) == []

    c = namespace_hosts.create('inst_c', _public(key), [DISK])
    assert ssh_ok(c, key, f'sudo blkid -s TYPE -o value {device}') == 'ext4\n'
    ssh_ok(c, key, f'sudo mkdir -p /mnt/blk && sudo mount {device} /mnt/blk')
    assert ssh_ok(c, key, 'cat /mnt/blk/file') == 'kept\n'
    namespace_hosts.destroy('inst_c')
    namespace_hosts.delete_volume(DISK.fid)
    assert not image.exists()
    assert str(namespace_hosts.volume_path(DISK.fid, VolumeInterface.FILE).parent) not in _all_loops()


def test_bids_volumes_reach_their_instances(namespace_hosts: NamespaceHosts, key: Path) -> None:
    """Through the market: a share two instances of a bid use at once, and a
    block volume that a later bid's instance finds as the first one left it."""
    market = Market(ManualClock(), namespace_hosts, load_catalog(), clearing_interval_s=60)
    auction = market.auctions.list()[0]
    ssh_key, _ = market.ssh_keys.create(PROJECT_FID, 'test', _public(key)[0])

    def volume(name: str, interface: str) -> str:
        return market.volumes.create(project=PROJECT_FID,
                                     name=name,
                                     interface=interface,
                                     region=auction.region,
                                     size_gb=1).fid

    def running_bid(name: str, volumes: List[str], quantity: int = 1) -> Bid:
        bid = market.bids.create(project=PROJECT_FID,
                                 region=auction.region,
                                 instance_type=auction.instance_type.fid,
                                 limit_price='$100.00',
                                 instance_quantity=quantity,
                                 name=name,
                                 ssh_keys=[ssh_key.fid],
                                 volumes=volumes)
        market.advance(60 + sum(market.boot_durations_s.values()))
        assert [i.status for i in bid.instances] == [InstanceStatus.RUNNING] * quantity
        return bid

    share, disk = volume('team', 'File'), volume('scratch', 'Block')
    device = f'/dev/disk/by-id/virtio-{disk[:36]}'
    first = running_bid('first', [share, disk], quantity=2)
    a, b = (i.address for i in first.instances)
    assert a is not None and b is not None
    ssh_ok(a, key, 'echo from-a > /mnt/team/note')
    assert ssh_ok(b, key, 'cat /mnt/team/note') == 'from-a\n'
    ssh_ok(a, key, f'sudo mkfs.ext4 -q {device} && sudo mkdir /mnt/disk && '
           f'sudo mount {device} /mnt/disk && echo kept | sudo tee /mnt/disk/file')
    market.bids.cancel(first.fid)

    second = running_bid('second', [disk])
    c = second.instances[0].address
    assert c is not None
    assert ssh_ok(c, key, f'sudo blkid -s TYPE -o value {device}') == 'ext4\n'
    ssh_ok(c, key, f'sudo mkdir /mnt/disk && sudo mount {device} /mnt/disk')
    assert ssh_ok(c, key, 'cat /mnt/disk/file') == 'kept\n'
    ssh_ok(c, key, 'test ! -e /mnt/team')


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers every GET with `upstream <path>`."""

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        body = f'upstream {self.path}'.encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        del args


def test_forward_kube_api_reaches_the_bridge_until_the_host_goes(
        namespace_hosts: NamespaceHosts, key: Path) -> None:
    a = namespace_hosts.create('inst_a', _public(key))
    upstream = http.server.ThreadingHTTPServer((namespace_hosts.api_address, 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        assert namespace_hosts.forward_kube_api('inst_a', 6443, upstream.server_address[1])
        url = f'http://{a.private_ip}:6443/version'
        assert requests.get(url, timeout=10).text == 'upstream /version'
        fetch = f'import urllib.request; print(urllib.request.urlopen("{url}").read().decode())'
        assert ssh_ok(a, key, f'python3 -c {shlex.quote(fetch)}') == 'upstream /version\n'
        pids = [int(p) for p in subprocess.run(
            ['ip', 'netns', 'pids', namespace_hosts.netns('inst_a')], capture_output=True,
            text=True, check=True).stdout.split()]
        namespace_hosts.destroy('inst_a')
        assert not [p for p in pids if _alive(p)]
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_close_removes_the_bridge_and_state(image: VmImage, key: Path) -> None:
    backend = NamespaceHosts(image)
    try:
        backend.create('inst_a', _public(key), [SHARE, DISK])
        backend.create('inst_b', _public(key))
        backend.pause('inst_b')
    finally:
        backend.close()
    assert backend.prefix not in _all_loops()
    listed = subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True,
                            check=True).stdout
    assert backend.prefix not in listed
    assert backend.prefix not in subprocess.run(
        ['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
    assert not (Path('/var/lib/sky-mithril/hosts') / backend.prefix).exists()


def _crash_owner(script: str, key: Path) -> List[str]:
    """Runs `script` (a host owner that creates one host for `key` and prints
    what names it), SIGKILLs it once it printed, and returns the printed words:
    what a crashed run leaves for cleanup_stale."""
    owner = subprocess.Popen([sys.executable, '-c', script, _public(key)[0]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout is not None
        return owner.stdout.readline().split()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()


_CRASHING_OWNER = '''
import sys
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.hosts.vm_image import ensure_vm_image
from sky_mithril.emulator.hosts import VolumeAttachment, VolumeInterface
hosts = NamespaceHosts(ensure_vm_image())
hosts.create('inst_crash', [sys.argv[1]],
             [VolumeAttachment('vol_crash', 'crash', VolumeInterface.BLOCK, 'r', 1)])
print(hosts.prefix, hosts.netns('inst_crash'), flush=True)
sys.stdin.read()
'''


def test_cleanup_stale_removes_what_a_crashed_run_left(namespace_hosts: NamespaceHosts,
                                                       key: Path) -> None:
    live = namespace_hosts.create('inst_live', _public(key))
    prefix, netns = _crash_owner(_CRASHING_OWNER, key)
    stale_pids = subprocess.run(['ip', 'netns', 'pids', netns], capture_output=True,
                                text=True, check=True).stdout.split()
    assert stale_pids
    try:
        removed = NamespaceHosts.cleanup_stale()
    finally:
        if netns in subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                                   text=True, check=True).stdout:
            NamespaceHosts.cleanup_stale()
    assert prefix in removed and namespace_hosts.prefix not in removed
    assert not [p for p in stale_pids if _alive(int(p))]
    assert prefix not in _all_loops()
    assert prefix not in subprocess.run(['ip', '-o', 'link'], capture_output=True,
                                        text=True, check=True).stdout
    assert not (Path('/var/lib/sky-mithril/hosts') / prefix).exists()
    ssh_ok(live, key, 'true')


def test_local_port_hosts(image: VmImage, key: Path) -> None:
    del image  # provides sshd and the user `ubuntu` that root logs in as
    backend = LocalPortHosts()
    try:
        a = backend.create('inst_a', _public(key))
        assert a.ssh_destination == a.private_ip == '127.0.0.1'
        assert a.ssh_port > 1024
        marker = ssh_ok(a, key, 'echo $SKY_MITHRIL_HOST', user=backend.ssh_user)
        assert marker.startswith(backend.prefix)
        backend.pause('inst_a')
        assert ssh(a, key, 'true', user=backend.ssh_user).returncode != 0
        assert backend.resume('inst_a') == a
        ssh_ok(a, key, 'true', user=backend.ssh_user)
        end = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        backend.notify_preemption('inst_a', bid_status='Preempting', end_time=end)
        signal_file = yaml.safe_load(backend.signal_file('inst_a').read_text())
        assert signal_file['instance_status'] == 'STATUS_PREEMPTING'
        backend.destroy('inst_a')
        assert ssh(a, key, 'true', user=backend.ssh_user).returncode != 0
    finally:
        backend.close()


def test_local_port_hosts_volumes(image: VmImage, key: Path) -> None:
    del image  # provides sshd and the user `ubuntu` that root logs in as
    backend = LocalPortHosts()
    try:
        a = backend.create('inst_a', _public(key), [SHARE])
        share = backend.volume_path(SHARE.fid)
        ssh_ok(a, key, f'echo local > {share}/note', user=backend.ssh_user)
        assert (share / 'note').read_text() == 'local\n'
        with pytest.raises(HostError, match='block volume'):
            backend.create('inst_b', _public(key), [DISK])
        backend.destroy('inst_a')
        backend.delete_volume(SHARE.fid)
        assert not share.exists()
    finally:
        backend.close()


_CRASHING_LOCAL_OWNER = '''
import sys
from sky_mithril.emulator.hosts.local import LocalPortHosts
hosts = LocalPortHosts()
address = hosts.create('inst_crash', [sys.argv[1]])
print(hosts.prefix, address.ssh_port, flush=True)
sys.stdin.read()
'''


def test_local_port_hosts_cleanup_stale(image: VmImage, key: Path) -> None:
    del image  # provides sshd and the user `ubuntu` that root logs in as
    prefix, port = _crash_owner(_CRASHING_LOCAL_OWNER, key)
    address = HostAddress('127.0.0.1', '127.0.0.1', int(port))
    ssh_ok(address, key, 'nohup sleep 1001 > /dev/null 2>&1 &')
    assert prefix in LocalPortHosts.cleanup_stale()
    assert ssh(address, key, 'true').returncode != 0
    ps = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True,
                        check=True).stdout
    assert prefix not in ps and 'sleep 1001' not in ps


@pytest.mark.slow
def test_offline_install_of_ray(namespace_hosts: NamespaceHosts, key: Path) -> None:
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    ray = constants.SKY_REMOTE_RAY_VERSION
    a = namespace_hosts.create('inst_a', _public(key))
    out = ssh_ok(a, key, login(
        'uv venv --python 3.10 /tmp/v && VIRTUAL_ENV=/tmp/v uv pip install '
        f'--offline "ray[default]=={ray}" "pydantic-core==2.41.1" "click<8.3.0" && '
        '/tmp/v/bin/python -c "import ray; print(ray.__version__)"'))
    assert out.strip().splitlines()[-1] == ray


def _skypilot_setup_command(wheel_hash: str) -> str:
    """SkyPilot 0.14.1's own Mithril node setup (its built-in template)."""
    from sky.backends import backend_utils  # pylint: disable=import-outside-toplevel
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    template = (Path(backend_utils.__file__).parent.parent / 'templates' /
                'mithril-ray.yml.j2').read_text()
    rendered = jinja2.Template(template).render(
        num_nodes=1, docker_image=None, credentials={}, initial_setup_commands=[],
        conda_installation_commands='',
        uv_installation_commands=(constants.UV_INSTALLATION_COMMANDS +
                                  constants.SKY_USER_ENV_CREATION_COMMANDS),
        ray_skypilot_installation_commands=(
            constants.RAY_SKYPILOT_INSTALLATION_COMMANDS.replace(
                '{sky_wheel_hash}', wheel_hash).replace('{cloud}', 'mithril')),
        copy_skypilot_templates_commands=constants.COPY_SKYPILOT_TEMPLATES_COMMANDS,
        ssh_max_sessions_config=constants.SET_SSH_MAX_SESSIONS_CONFIG_CMD)
    return yaml.safe_load(rendered)['setup_commands'][0]


@pytest.mark.slow
def test_skypilot_node_setup_runs_offline(namespace_hosts: NamespaceHosts, key: Path,
                                          image: VmImage) -> None:
    """The whole setup command SkyPilot sends to a Mithril node, offline."""
    watched = [Path(p) for p in ('/etc/ssh/sshd_config', '/etc/security/limits.conf',
                                 '/etc/fuse.conf', '/etc/systemd/system.conf')]
    before = {p: p.read_bytes() if p.exists() else None for p in watched}
    a = namespace_hosts.create('inst_a', _public(key))
    wheel = image.skypilot_wheel.read_bytes()
    wheel_hash = hashlib.md5(wheel, usedforsecurity=False).hexdigest()
    upload = subprocess.run(
        ['ssh', '-i', str(key), '-o', 'StrictHostKeyChecking=no', '-o',
         'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
         f'ubuntu@{a.ssh_destination}',
         f'mkdir -p ~/.sky/wheels/{wheel_hash} && '
         f'cat > ~/.sky/wheels/{wheel_hash}/{image.skypilot_wheel.name}'],
        input=wheel, capture_output=True, check=False)
    assert upload.returncode == 0, upload.stderr
    command = _skypilot_setup_command(wheel_hash)
    started = time.monotonic()
    ssh_ok(a, key, login('true && export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && '
                         f'({command})'), timeout=900)
    print(f'SkyPilot node setup took {time.monotonic() - started:.1f}s')
    # The setup ends by reloading sshd, which re-executes itself: wait for it.
    deadline = time.monotonic() + 10
    while ssh(a, key, 'true').returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    versions = ssh_ok(a, key, '~/skypilot-runtime/bin/python -c "import sky, ray; '
                      'print(sky.__version__, ray.__version__)"')
    assert versions.split() == ['0.14.1', '2.9.3']
    ssh_ok(a, key, 'test -s ~/.sky/ray_path && test -x ~/sky-user-env/bin/pip')
    assert 'MaxSessions 200' in ssh_ok(a, key, 'cat /etc/ssh/sshd_config')
    assert {p: p.read_bytes() if p.exists() else None for p in watched} == before
