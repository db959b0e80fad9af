"""Real SSH hosts for the emulator's instances, so SkyPilot can provision onto them.

`NamespaceHosts` (root): every instance is a small "VM" made of this machine's
own parts. It gets a network namespace whose `eth0` is one end of a veth pair;
the other end is a port of a bridge the backend creates, so the instances of
one backend reach each other (one L2 segment, no forwarding) and the root
namespace reaches them at their VM address; nothing is routed anywhere else.
In the namespace, sshd runs as PID 1 of its own PID, UTS (hostname) and mount
namespaces with private mounts: the instance's disk as `~ubuntu` and `/mnt`,
a fresh `/tmp` (Ray's `/tmp/ray_skypilot` lives there), `/opt/mithril`,
`/dev/shm`, `/run`, and an overlay over `/etc` (SkyPilot's setup edits
`/etc/ssh/sshd_config`, `/etc/security/limits.conf` and friends; those edits
stay on the instance's disk). Killing the namespace's processes stops the "VM"
without leaving anything behind; the disk (home, `/mnt` and `/etc` changes,
under `/var/lib/sky-mithril/hosts/<prefix>/host-<n>/disk`) stays until
`destroy`. Everything else is this machine's file system, and `ubuntu`'s
passwordless sudo is root here: SkyPilot's own setup stays inside the private
mounts, a task that uses sudo may not.

Volumes live under `/var/lib/sky-mithril/hosts/<prefix>/volumes/` until they
are deleted or the backend closes. A file share is a directory `<fid>/`
(owned by `ubuntu`) that every host attaching it bind-mounts: the first start
with it adds `<directory> /mnt/<name> none bind,nofail 0 0` to the host's
`/etc/fstab`. A block volume is a sparse image `<fid>.img` of its capacity
(GiB, never formatted here), on a loop device while a running host uses it;
such a host gets a private `/dev` (a tmpfs holding copies of this machine's
device nodes, so nothing is added to the real `/dev`) with
`/dev/disk/by-id/virtio-<fid[:36]>` leading to the loop device. Like a VM's
boot, every start mounts what the host's `/etc/fstab` adds to this machine's
(creating mount points; failures only logged, in `sshd.log`), so a share moved
elsewhere by editing fstab, or a formatted block volume given an fstab line,
comes back where the user put it; detached file shares are skipped. A change
to a host's volumes takes effect at its next start.

Every boot also gives the host Mithril's network edge, the nftables table
`inet mithril_edge` in its namespace (`EDGE_TABLE`): from outside (this
machine, at the bridge's address) only SSH, the emulator's own services (a
control node's kube API, `forward_kube_api`) and the ports `foundrypf` opens
get in; the hosts of the bridge reach each other freely, as a cluster's nodes
do. `foundrypf PORT`, the stand-in the VM image puts in every host's
`/usr/local/bin`, adds PORT to the table's `forwarded` set, whose packets are
led to the host's own 127.0.0.1:PORT (a service bound to 127.0.0.1 or to every
address answers), until `foundrypf -d PORT` or a reboot.

What a host needs from this machine (sshd, the user `ubuntu`, nftables, an
offline Python and uv cache, the `foundrypf` stand-in) is the VM image,
`vm_image.ensure_vm_image()`.
"""

import atexit
import datetime
import os
import pwd
import re
import secrets
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set

from sky_mithril.emulator.hosts import (FILE_SHARE_MOUNT_ROOT, HostAddress,
                                        VolumeAttachment, VolumeInterface)
from sky_mithril.emulator.hosts import network_probe, sshd
from sky_mithril.emulator.hosts.sshd import SIGNAL_FILE, SSHD, FileLock, Host, HostError
from sky_mithril.emulator.hosts.vm_image import VmImage, ensure_vm_image, run_command
from sky_mithril.files import write_atomically

STATE_ROOT = sshd.SYSTEM_STATE_DIR / 'hosts'
SUBNET_BASE = '10.203'
PREFIX_PATTERN = re.compile(r'smh[0-9a-f]{5}')
SIGNAL_DIR = Path('/opt/mithril')
FORWARDER = Path(__file__).with_name('tcp_forward.py')
LOOPBACK = '127.0.0.1'
_SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
GIB = 1 << 30
EDGE_TABLE = 'inet mithril_edge'
MACHINE_FSTAB = Path('/etc/fstab')
# Run in a host's mount namespace once `/run` is private: replaces `/dev` with
# a tmpfs holding copies of this machine's device nodes and links and binds of
# its directories (`pts`, `shm`, ...), so the host can get `/dev/disk/by-id`
# without anything being added to the machine's own `/dev`.
_PRIVATE_DEV_SCRIPT = '''
mkdir /run/machine-dev
mount --rbind /dev /run/machine-dev
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
for entry in /run/machine-dev/* /run/machine-dev/.[!.]*; do
  [ -e "$entry" ] || [ -L "$entry" ] || continue
  name=${entry##*/}
  if [ -L "$entry" ] || [ -b "$entry" ] || [ -c "$entry" ]; then
    cp -a "$entry" "/dev/$name"
  elif [ -d "$entry" ]; then
    mkdir "/dev/$name" && mount --rbind "$entry" "/dev/$name"
  else
    touch "/dev/$name" && mount --bind "$entry" "/dev/$name"
  fi
done
umount -R -l /run/machine-dev
rmdir /run/machine-dev
mkdir -p /dev/disk/by-id'''


def _edge_ruleset(outside: str) -> str:
    """The host's network edge, replaced whole (`nft -f`) at every boot:
    traffic from `outside` reaches the ports in `services` (sshd's, the
    emulator's) and those in `forwarded` (`foundrypf`'s, led to 127.0.0.1;
    the host's eth0 has `route_localnet` for it), nothing else."""
    return f'''table {EDGE_TABLE}
delete table {EDGE_TABLE}
table {EDGE_TABLE} {{
  set services {{ type inet_service; elements = {{ 22 }}; }}
  set forwarded {{ type inet_service; }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip saddr {outside} tcp dport @forwarded dnat ip to 127.0.0.1
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "eth0" ip saddr {outside} jump from_outside
  }}
  chain from_outside {{
    ct state established,related accept
    tcp dport @services accept
    ct status dnat accept
    meta l4proto {{ tcp, udp }} drop
  }}
}}
'''


def _netns_names() -> List[str]:
    result = run_command(['ip', 'netns', 'list'])
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _link_names() -> List[str]:
    result = run_command(['ip', '-o', 'link', 'show'])
    return [line.split(':')[1].strip().split('@')[0]
            for line in result.stdout.splitlines() if ':' in line]


def _delete_link(name: str) -> None:
    """Deletes a link; one that vanished meanwhile (a veth goes with its
    namespace, asynchronously) is fine."""
    result = run_command(['ip', 'link', 'delete', name], check=False)
    deadline = time.monotonic() + 10
    while result.returncode != 0 and name in _link_names():
        if time.monotonic() > deadline:
            raise HostError(f'`ip link delete {name}` failed: {result.stderr.strip()}')
        time.sleep(0.05)


def _delete_netns(name: str) -> None:
    _kill_netns_processes(name)
    result = run_command(['ip', 'netns', 'delete', name], check=False)
    if result.returncode != 0 and name in _netns_names():
        raise HostError(f'`ip netns delete {name}` failed: {result.stderr.strip()}')


def _netns_pids(netns: str) -> List[int]:
    result = run_command(['ip', 'netns', 'pids', netns], check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _kill_netns_processes(netns: str, timeout: float = 15.0) -> None:
    """SIGKILLs every process in `netns` (the PID 1 of each host goes too, which
    takes its whole PID namespace with it) until none is left."""
    sshd.kill_until_gone(
        lambda: _netns_pids(netns), timeout=timeout,
        survivors=lambda pids: (f'Processes {pids} in network namespace {netns} '
                                f'survived SIGKILL for {timeout:.0f}s'))


def _loop_devices_under(directory: Path) -> List[str]:
    """Loop devices whose backing file is (or was, if deleted) under `directory`."""
    result = run_command(['losetup', '--list', '--noheadings', '--raw',
                          '--output', 'NAME,BACK-FILE'])
    prefix = f'{directory}{os.sep}'
    return [name for name, _, back_file in
            (line.partition(' ') for line in result.stdout.splitlines())
            if back_file.startswith(prefix)]


def _detach_loop(device: str) -> None:
    """Detaches a loop device. One still busy (a mount of a host that just
    died, not yet released) is let go by the kernel as soon as it is free."""
    result = run_command(['losetup', '--detach', device], check=False)
    if result.returncode != 0 and Path(
            f'/sys/block/{Path(device).name}/loop').exists():
        raise HostError(f'`losetup --detach {device}` failed: '
                        f'{result.stderr.strip()}')


def _fstab_lines(path: Path) -> List[str]:
    """The lines of an fstab; none when it is missing or unreadable (an
    overlay whiteout, say)."""
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _fstab_entry(line: str) -> List[str]:
    """An fstab line's fields; none for a comment or an empty line."""
    fields = line.split()
    return [] if not fields or fields[0].startswith('#') else fields


def _used_octets(base: str) -> Set[int]:
    """Third octets of `base`.N.x already in use on this machine."""
    text = (run_command(['ip', '-o', '-4', 'addr', 'show']).stdout +
            run_command(['ip', '-4', 'route', 'show', 'table', 'all']).stdout)
    return {int(m) for m in re.findall(rf'\b{re.escape(base)}\.(\d+)\.', text)}


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HostError('NamespaceHosts needs root (network namespaces, mounts); '
                        'use LocalPortHosts otherwise.')


def _require_tools() -> None:
    """Checks, once the image (and its packages) is in place, for every tool
    the hosts run."""
    for tool in ('ip', 'unshare', 'mount', 'losetup', 'ssh-keygen', 'nft',
                 'sysctl', SSHD):
        if shutil.which(tool) is None:
            raise HostError(f'NamespaceHosts needs `{tool}`, which preparing '
                            'the VM image did not install.')


class NamespaceHosts(sshd.SshdHostBackend):
    """Instances as network namespaces with their own sshd (needs root)."""

    _close_failed_message = ('Some hosts could not be removed (cleanup_stale() '
                             'retries once this process is gone): ')

    def __init__(self, image: Optional[VmImage] = None, *,
                 progress: Optional[Callable[[str], None]] = None,
                 subnet_base: str = SUBNET_BASE, start_timeout: float = 20.0) -> None:
        _require_root()
        self.image = image or ensure_vm_image(progress)
        _require_tools()
        self._user = pwd.getpwnam(self.image.ssh_user)
        super().__init__(start_timeout)
        # Forwarders (`forward_kube_api`, the API on loopback) by instance
        # fid, to reap when killed.
        self._forwarders: Dict[str, List[subprocess.Popen]] = {}
        # The emulator's port, which each host's 127.0.0.1 leads to once set.
        self._api_port: Optional[int] = None
        # Block volumes' loop devices, by volume fid, while running hosts use them.
        self._loops: Dict[str, str] = {}
        self.cleanup_stale()
        SIGNAL_DIR.mkdir(parents=True, exist_ok=True)
        self.prefix = 'smh' + secrets.token_hex(3)[:5]
        self.bridge = f'{self.prefix}br'
        self._directory = STATE_ROOT / self.prefix
        with FileLock(STATE_ROOT / '.lock'):
            used = _used_octets(subnet_base)
            free = [n for n in range(1, 255) if n not in used]
            if not free:
                raise HostError(f'No free /24 left in {subnet_base}.0.0/16')
            self.subnet = f'{subnet_base}.{free[0]}'
            self._directory.mkdir(parents=True)
            self._volumes_directory.mkdir()
            sshd.write_owner(self._directory, {'subnet': self.subnet})
            atexit.register(self.close)
            run_command(['ip', 'link', 'add', self.bridge, 'type', 'bridge'])
            run_command(['ip', 'addr', 'add', f'{self.subnet}.1/24', 'dev',
                         self.bridge])
            run_command(['ip', 'link', 'set', self.bridge, 'up'])

    @property
    def api_address(self) -> str:
        """This machine's address on the hosts' bridge: the emulator listens
        there so that the hosts' autostop reaches the API too (at their own
        127.0.0.1, `reach_api_on_loopback`)."""
        return f'{self.subnet}.1'

    def reach_api_on_loopback(self, api_port: int) -> None:
        """From now on every host starts with a forwarder from its own
        `127.0.0.1:api_port` to `api_address:api_port`, so the hosts reach the
        API at the loopback URL this machine uses."""
        with self._lock:
            self._api_port = api_port

    def netns(self, instance_fid: str) -> str:
        """The network namespace of an instance (for tests and debugging)."""
        return self._netns(self._get(instance_fid))

    def home(self, instance_fid: str) -> Path:
        """The instance's home directory as this machine sees it (for tests
        and debugging); it outlives preemption, like a boot disk."""
        return self._get(instance_fid).disk / 'home'

    def volume_path(self, volume_fid: str,
                    interface: VolumeInterface) -> Path:
        """Where a volume's data is on this machine: a file share's directory,
        a block volume's disk image (for tests and debugging)."""
        if interface == VolumeInterface.FILE:
            return self._volumes_directory / volume_fid
        return self._volumes_directory / f'{volume_fid}.img'

    def _netns(self, host: Host) -> str:
        return f'{self.prefix}-{host.index}'

    def _veth(self, host: Host) -> str:
        return f'{self.prefix}h{host.index}'

    def _allocate_index(self) -> int:
        used = {h.index for h in self._hosts.values()}
        for offset in range(253):
            index = (self._next - 1 + offset) % 253 + 1
            if index not in used:
                self._next = index % 253 + 1
                return index
        raise HostError(f'All 253 addresses of {self.subnet}.0/24 are in use')

    def _new_host(self, instance_fid: str) -> Host:
        index = self._allocate_index()
        return Host(fid=instance_fid, index=index,
                    address=f'{self.subnet}.{index + 1}',
                    directory=self._directory / f'host-{index}')

    def _set_up(self, host: Host, ssh_public_keys: List[str]) -> None:
        """Makes the instance's disk, network and sshd."""
        self._make_disk(host, sshd.authorized_keys(ssh_public_keys))
        self._make_network(host)
        self._start(host)

    def _make_disk(self, host: Host, authorized_keys: str) -> None:
        disk = host.disk
        (disk / 'opt-mithril').mkdir(parents=True)
        (disk / 'mnt').mkdir(mode=0o755)
        (disk / 'etc-work').mkdir()
        (host.directory / 'fid').write_text(host.fid + '\n')
        home = disk / 'home'
        shutil.copytree(self.image.home_template, home, symlinks=True)
        ssh_dir = home / '.ssh'
        ssh_dir.mkdir(mode=0o700)
        write_atomically(ssh_dir / 'authorized_keys', authorized_keys, mode=0o600)
        uid, gid = self._user.pw_uid, self._user.pw_gid
        for path in [home, *home.rglob('*')]:
            os.lchown(path, uid, gid)
        home.chmod(0o750)
        etc = disk / 'etc-upper'
        etc_ssh = etc / 'ssh'
        etc_ssh.mkdir(parents=True)
        hostname = self._hostname(host)
        (etc / 'hostname').write_text(hostname + '\n')
        (etc / 'hosts').write_text(Path('/etc/hosts').read_text().rstrip('\n') +
                                   f'\n127.0.1.1 {hostname}\n')
        sshd.make_host_key(etc_ssh / 'ssh_host_ed25519_key', host.fid)
        (etc_ssh / 'sshd_config').write_text(self._sshd_config(host))
        if self._api_port is not None:
            probe = etc / network_probe.PROBE_FILE.relative_to('/etc')
            probe.parent.mkdir(parents=True)
            probe.write_text(f'http://{LOOPBACK}:{self._api_port}'
                             f'{network_probe.PROBE_PATH}\n')

    def _hostname(self, host: Host) -> str:
        name = re.sub(r'[^a-z0-9-]+', '-', host.fid.lower()).strip('-')[:40]
        return f'{name or "host"}-{self.prefix}'

    def _sshd_config(self, host: Host) -> str:
        return (f'# sky-mithril emulated instance {host.fid}\n'
                f'ListenAddress {host.address}:22\n'
                'HostKey /etc/ssh/ssh_host_ed25519_key\n'
                'PidFile /run/sshd.pid\n'
                f'AllowUsers {self._user.pw_name}\n'
                'PermitRootLogin no\n'
                'PubkeyAuthentication yes\n'
                'AuthorizedKeysFile .ssh/authorized_keys\n'
                'PasswordAuthentication no\n'
                'KbdInteractiveAuthentication no\n'
                'UsePAM yes\n'
                'UseDNS no\n'
                'PrintMotd no\n'
                'X11Forwarding no\n'
                'AcceptEnv LANG LC_*\n' + sshd.SSHD_CONFIG_LIMITS)

    def _make_network(self, host: Host) -> None:
        netns, veth = self._netns(host), self._veth(host)
        run_command(['ip', 'netns', 'add', netns])
        run_command(['ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name',
                     'eth0', 'netns', netns])
        run_command(['ip', 'link', 'set', veth, 'master', self.bridge])
        run_command(['ip', 'link', 'set', veth, 'up'])
        run_command(['ip', '-n', netns, 'addr', 'add', f'{host.address}/24', 'dev',
                     'eth0'])
        run_command(['ip', '-n', netns, 'link', 'set', 'lo', 'up'])
        run_command(['ip', '-n', netns, 'link', 'set', 'eth0', 'up'])
        # What `foundrypf` forwards is led to 127.0.0.1 (`_edge_ruleset`).
        run_command(['ip', 'netns', 'exec', netns, 'sysctl', '-q', '-w',
                     'net.ipv4.conf.eth0.route_localnet=1'])

    def _boot_script(self, host: Host, devices: Mapping[str, str],
                     boot_fstab: Optional[Path]) -> str:
        """The host's boot: its private mounts, `devices` (a block volume's
        path in the VM -> its loop device), what `boot_fstab` lists, sshd."""
        disk, q = host.disk, shlex.quote
        lines = [
            'set -e',
            f'mount --bind {q(str(disk / "home"))} {q(self._user.pw_dir)}',
            f'mount --bind {q(str(host.directory / "tmp"))} /tmp',
            f'mount --bind {q(str(disk / "opt-mithril"))} {q(str(SIGNAL_DIR))}',
            f'mount --bind {q(str(disk / "mnt"))} {FILE_SHARE_MOUNT_ROOT}',
            # Other hosts' namespace handles are none of this host's business.
            'umount -R -l /run/netns 2>/dev/null || true',
            'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run',
        ]
        if devices:
            lines.append(_PRIVATE_DEV_SCRIPT)
            lines.extend(f'ln -s ../../{q(Path(device).name)} {q(vm_path)}'
                         for vm_path, device in devices.items())
        lines += [
            'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm',
            'mount -t overlay overlay -o '
            f'lowerdir=/etc,upperdir={q(str(disk / "etc-upper"))},'
            f'workdir={q(str(disk / "etc-work"))} /etc',
            # Mithril's own commands (`foundrypf`), read-only, over this
            # machine's /usr/local/bin.
            'mount -t overlay overlay -o '
            f'lowerdir={q(str(self.image.mithril_commands))}:/usr/local/bin '
            '/usr/local/bin',
        ]
        if boot_fstab is not None:
            lines.append(f'mount --all --mkdir --fstab {q(str(boot_fstab))} || '
                         f'echo "Not every line of {boot_fstab} was mounted" >&2')
        lines += [
            'mkdir -m 0755 /run/sshd',
            f'hostname {q(self._hostname(host))}',
            f'exec {SSHD} -D -e',
        ]
        return '\n'.join(lines)

    def _attach_volumes(self, host: Host) -> Dict[str, str]:
        """Readies the host's volumes for its start (file shares' directories
        and fstab lines, block volumes' loop devices); returns each block
        volume's loop device by its path in the VM."""
        devices = {}
        for volume in host.volumes:
            if volume.interface == VolumeInterface.FILE:
                self._make_file_share(volume)
            else:
                devices[volume.vm_path] = self._loop_device(volume)
        self._add_fstab_lines(host)
        return devices

    def _make_file_share(self, volume: VolumeAttachment) -> None:
        """Makes the share's directory on first use, writable by `ubuntu`."""
        share = self.volume_path(volume.fid, VolumeInterface.FILE)
        if not share.is_dir():
            share.mkdir(mode=0o755)
            os.chown(share, self._user.pw_uid, self._user.pw_gid)

    def _loop_device(self, volume: VolumeAttachment) -> str:
        """The block volume's loop device; attaches its disk image (made,
        sparse, on first use) unless a running host already did."""
        if volume.fid in self._loops:
            return self._loops[volume.fid]
        image = self.volume_path(volume.fid, VolumeInterface.BLOCK)
        if not image.exists():
            try:
                with open(image, 'xb') as f:
                    f.truncate(volume.capacity_gb * GIB)
            except OSError as e:
                image.unlink(missing_ok=True)
                raise HostError(f'Cannot make the {volume.capacity_gb} GiB '
                                f'disk image of block volume {volume.fid}: '
                                f'{e}') from e
        device = run_command(['losetup', '--find', '--show',
                              str(image)]).stdout.strip()
        self._loops[volume.fid] = device
        return device

    def _detach_unused_loops(self) -> None:
        """Detaches the loop devices of block volumes no running host has."""
        in_use = {volume.fid
                  for host in self._hosts.values() if host.process is not None
                  for volume in host.volumes
                  if volume.interface == VolumeInterface.BLOCK}
        for fid in [fid for fid in self._loops if fid not in in_use]:
            _detach_loop(self._loops.pop(fid))

    def _add_fstab_lines(self, host: Host) -> None:
        """Gives each file share of the host its fstab line at `/mnt/<name>`:
        appended if the fstab does not mention the share, renamed in a line of
        the emulator's own form; a line the user changed stays as it is."""
        fstab = host.disk / 'etc-upper' / 'fstab'
        lines = _fstab_lines(fstab if fstab.exists() else MACHINE_FSTAB)
        updated = list(lines)
        for volume in host.volumes:
            if volume.interface != VolumeInterface.FILE:
                continue
            source = str(self.volume_path(volume.fid, VolumeInterface.FILE))
            entry = f'{source} {volume.vm_path} none bind,nofail 0 0'
            ours = re.compile(rf'{re.escape(source)} '
                              rf'{FILE_SHARE_MOUNT_ROOT}/[^/\s]+ none '
                              r'bind,nofail 0 0')
            if any(_fstab_entry(line)[:1] == [source] for line in updated):
                updated = [entry if ours.fullmatch(line.strip()) else line
                           for line in updated]
            else:
                updated.append(entry)
        if updated != lines:
            write_atomically(fstab, ''.join(f'{line}\n' for line in updated))

    def _boot_fstab(self, host: Host) -> Optional[Path]:
        """Writes the fstab lines the host's start mounts to a file: those its
        fstab adds to this machine's, less file shares it no longer has. None
        when there are none."""
        machine = {line.strip() for line in _fstab_lines(MACHINE_FSTAB)}
        shares = f'{self._volumes_directory}{os.sep}'
        attached = {str(self.volume_path(v.fid, VolumeInterface.FILE))
                    for v in host.volumes if v.interface == VolumeInterface.FILE}
        lines = []
        for line in _fstab_lines(host.disk / 'etc-upper' / 'fstab'):
            fields = _fstab_entry(line)
            if (fields and line.strip() not in machine and
                    (not fields[0].startswith(shares) or fields[0] in attached)):
                lines.append(line)
        if not lines:
            return None
        path = host.directory / 'boot.fstab'
        path.write_text(''.join(f'{line}\n' for line in lines))
        return path

    def _start(self, host: Host) -> None:
        """Boots the host: its volumes ready, a fresh /tmp and network edge
        (no port forwarded), then sshd as PID 1 of new namespaces."""
        self._reset_edge(host)
        devices = self._attach_volumes(host)
        boot_fstab = self._boot_fstab(host)
        tmp = host.directory / 'tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tmp.chmod(0o1777)
        (host.disk / 'opt-mithril' / SIGNAL_FILE).unlink(missing_ok=True)
        log = host.directory / 'sshd.log'
        command = ['ip', 'netns', 'exec', self._netns(host),
                   'unshare', '--mount', '--uts', '--pid', '--fork', '--mount-proc',
                   '--propagation', 'private', '--',
                   '/bin/sh', '-c', self._boot_script(host, devices, boot_fstab)]
        with open(log, 'ab') as out:
            host.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={'PATH': _SYSTEM_PATH, 'LANG': 'C.UTF-8'})
        sshd.wait_for_sshd(host, log, self._start_timeout)
        if self._api_port is not None:
            self._forward(host, LOOPBACK, self._api_port, self._api_port)

    def _reset_edge(self, host: Host) -> None:
        """Loads the host's network edge afresh (`_edge_ruleset`)."""
        ruleset = host.directory / 'edge.nft'
        ruleset.write_text(_edge_ruleset(self.api_address))
        run_command(['ip', 'netns', 'exec', self._netns(host), 'nft', '-f',
                     str(ruleset)])

    def _reap(self, host: Host) -> None:
        """Waits for the host's killed sshd and forwarders to exit."""
        sshd.reap(host.process)
        host.process = None
        for process in self._forwarders.pop(host.fid, []):
            sshd.reap(process)

    def _stop(self, host: Host) -> None:
        netns = self._netns(host)
        _kill_netns_processes(netns)
        self._reap(host)
        self._detach_unused_loops()
        # A killed process leaves its namespace before its sockets are closed:
        # wait for the listener to go, or a quick resume cannot bind port 22.
        deadline = time.monotonic() + 10
        while run_command(['ss', '-N', netns, '-Htln', 'sport = :22']).stdout.strip():
            if time.monotonic() > deadline:
                raise HostError(f'Port 22 in {netns} is still in use after sshd died')
            time.sleep(0.02)

    def pause(self, instance_fid: str) -> None:
        """Stops everything the host runs and takes its link down; disk kept."""
        with self._lock:
            host = self._get(instance_fid)
            self._stop(host)
            run_command(['ip', 'link', 'set', self._veth(host), 'down'])

    def preempt(self, instance_fid: str) -> None:
        """Takes the host's link down and kills its processes; disk kept."""
        with self._lock:
            host = self._get(instance_fid)
            run_command(['ip', 'link', 'set', self._veth(host), 'down'])
            self._stop(host)

    def resume(self, instance_fid: str,
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        """Boots a paused or preempted host again: same disk, keys and
        address, with `volumes`."""
        with self._lock:
            host = self._get(instance_fid)
            self._stop(host)
            host.volumes = tuple(volumes)
            run_command(['ip', 'link', 'set', self._veth(host), 'up'])
            self._start(host)
            return host.record()

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        """Writes /opt/mithril/MITHRIL_SIGNAL.yml as the host sees it."""
        with self._lock:
            host = self._get(instance_fid)
            write_atomically(host.disk / 'opt-mithril' / SIGNAL_FILE,
                             sshd.signal_text(bid_status, end_time))

    def forward_kube_api(self, instance_fid: str, port: int, api_port: int) -> bool:
        """Runs `tcp_forward` in the host's network namespace, from
        `<host address>:port` to `api_address:api_port` on the bridge, and
        lets `port` through the host's network edge (a kube API is public on
        Mithril); the forwarder is one of the namespace's processes, so it
        stops with the host, and the edge forgets the port at the next boot."""
        with self._lock:
            host = self._get(instance_fid)
            self._forward(host, host.address, port, api_port)
            run_command(['ip', 'netns', 'exec', self._netns(host), 'nft', 'add',
                         'element', *EDGE_TABLE.split(), 'services',
                         f'{{ {port} }}'])
            return True

    def _forward(self, host: Host, listen: str, port: int,
                 api_port: int) -> None:
        """Runs `tcp_forward` in the host's network namespace from
        `listen:port` to `api_address:api_port`, and waits until it listens."""
        netns = self._netns(host)
        log = host.directory / f'forward-{port}.log'
        with open(log, 'ab') as err:
            process = subprocess.Popen(
                ['ip', 'netns', 'exec', netns, sys.executable, '-I',
                 str(FORWARDER), listen, str(port), self.api_address,
                 str(api_port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True,
                env={'PATH': _SYSTEM_PATH, 'LANG': 'C.UTF-8'})
        self._forwarders.setdefault(host.fid, []).append(process)
        assert process.stdout is not None
        with process.stdout:
            ready, _, _ = select.select([process.stdout], [], [],
                                        self._start_timeout)
            line = process.stdout.readline() if ready else b''
        if line.strip() != b'listening':
            process.kill()
            sshd.reap(process)
            why = (f'exited with code {process.returncode}' if ready else
                   f'did not listen within {self._start_timeout:.0f}s')
            raise HostError(f'The forwarder from {listen}:{port} in {netns} '
                            f'{why}: {sshd.log_tail(log)}')

    def _remove(self, host: Host) -> None:
        """Kills the host's processes, removes its namespace, link and disk."""
        netns = self._netns(host)
        if netns in _netns_names():
            _kill_netns_processes(netns)
            self._reap(host)
            _delete_netns(netns)
        if self._veth(host) in _link_names():
            _delete_link(self._veth(host))
        shutil.rmtree(host.directory, ignore_errors=True)
        self._hosts.pop(host.fid, None)
        self._detach_unused_loops()

    def delete_volume(self, volume_fid: str) -> None:
        """Removes a volume's directory or disk image; a loop device a running
        host still has goes when that host stops."""
        with self._lock:
            shutil.rmtree(self.volume_path(volume_fid, VolumeInterface.FILE),
                          ignore_errors=True)
            self.volume_path(volume_fid,
                             VolumeInterface.BLOCK).unlink(missing_ok=True)

    def _close_backend(self) -> None:
        """Detaches the volumes' loop devices and deletes the bridge."""
        for device in _loop_devices_under(self._directory):
            _detach_loop(device)
        self._loops.clear()
        if self.bridge in _link_names():
            _delete_link(self.bridge)

    @staticmethod
    def cleanup_stale() -> List[str]:
        """Removes hosts, links, loop devices and state (volumes included)
        of backends whose process is gone.

        Returns the prefixes removed. Backends still running are left alone.
        """
        if os.geteuid() != 0:
            raise HostError('Cleaning up namespace hosts needs root')
        with FileLock(STATE_ROOT / '.lock'):
            return NamespaceHosts._cleanup_stale_locked(STATE_ROOT)

    @staticmethod
    def _cleanup_stale_locked(state_root: Path) -> List[str]:
        netns = _netns_names()
        links = _link_names()
        dirs = ([d for d in state_root.iterdir() if d.is_dir()]
                if state_root.is_dir() else [])
        prefixes = {p for p in (sshd.prefix_of(n, PREFIX_PATTERN)
                                for n in [*netns, *links, *(d.name for d in dirs)])
                    if p is not None}
        stale = sorted(p for p in prefixes if not sshd.owner_alive(state_root / p))
        for prefix in stale:
            for name in netns:
                if name.startswith(prefix):
                    _delete_netns(name)
            for name in links:
                if name.startswith(prefix):
                    _delete_link(name)
            for device in _loop_devices_under(state_root / prefix):
                _detach_loop(device)
            shutil.rmtree(state_root / prefix, ignore_errors=True)
        return stale
