"""Real SSH hosts for the emulator's instances, so SkyPilot can provision onto them.

`NamespaceHosts` (root): every instance is a small "VM" made of this machine's
own parts. It gets a network namespace whose `eth0` is one end of a veth pair;
the other end is a port of a bridge the backend creates, so the instances of
one backend reach each other (one L2 segment, no forwarding) and the root
namespace reaches them at their VM address; nothing is routed anywhere else.
In the namespace, sshd runs as PID 1 of its own PID, UTS (hostname) and mount
namespaces with private mounts: the instance's disk as `~ubuntu`, a fresh
`/tmp` (Ray's `/tmp/ray_skypilot` lives there), `/opt/mithril`, `/dev/shm`,
`/run`, and an overlay over `/etc` (SkyPilot's setup edits
`/etc/ssh/sshd_config`, `/etc/security/limits.conf` and friends; those edits
stay on the instance's disk). Killing the namespace's processes stops the "VM"
without leaving anything behind; the disk (home and `/etc` changes, under
`/var/lib/sky-mithril/hosts/<prefix>/host-<n>/disk`) stays until `destroy`.
Everything else is this machine's file system, and `ubuntu`'s passwordless
sudo is root here: SkyPilot's own setup stays inside the private mounts, a
task that uses sudo may not.

`LocalPortHosts` (no root): one user-owned sshd per instance on 127.0.0.1 and a
free high port. Limits: the hosts share this machine's home directory, `/tmp`
and ports, so only one single-node cluster can run at a time (Ray's fixed ports
and `/tmp/ray_skypilot` collide); the SSH user is the current user (`ubuntu`
when run as root), so the provisioner must report that user instead of
Mithril's `ubuntu`; SkyPilot's node setup needs network access to PyPI (no
offline image) and passwordless sudo for that user; the preemption signal file
is written to `signal_file(fid)`, not to `/opt/mithril`.

Both backends tag what they create with a per-backend prefix and record their
owner process, so `cleanup_stale()` can remove what a crashed run left behind
without touching a backend that is still alive.
"""

import atexit
import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import pwd
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, TextIO

import yaml

from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.vm_image import CommandError
from sky_mithril.emulator.vm_image import VmImage
from sky_mithril.emulator.vm_image import ensure_vm_image
from sky_mithril.emulator.vm_image import run_command

STATE_ROOT = Path('/var/lib/sky-mithril/hosts')
SUBNET_BASE = '10.203'
PREFIX_PATTERN = re.compile(r'smh[0-9a-f]{5}')
LOCAL_PREFIX_PATTERN = re.compile(r'slh[0-9a-f]{5}')
SIGNAL_DIR = Path('/opt/mithril')
SIGNAL_FILE = 'MITHRIL_SIGNAL.yml'
SSHD = '/usr/sbin/sshd'
HOST_ENV_MARKER = 'SKY_MITHRIL_HOST'
_OWNER_FILE = 'owner.json'
_SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


class HostError(RuntimeError):
    """A host could not be created, started or stopped; the message says why."""


@dataclasses.dataclass
class _Host:
    fid: str
    index: int
    address: str
    directory: Path
    process: Optional[subprocess.Popen] = None
    port: int = 22
    user: str = 'ubuntu'

    @property
    def disk(self) -> Path:
        return self.directory / 'disk'

    def record(self) -> HostAddress:
        return HostAddress(ssh_destination=self.address, private_ip=self.address,
                           ssh_port=self.port, ssh_user=self.user)


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks, to tell a reused PID apart."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return stat.rsplit(')', 1)[1].split()[19]


def _write_owner(directory: Path, extra: Dict[str, object]) -> None:
    record = dict(extra, pid=os.getpid(), start=_start_time(os.getpid()))
    (directory / _OWNER_FILE).write_text(json.dumps(record) + '\n')


def _read_owner(directory: Path) -> Dict[str, object]:
    try:
        return json.loads((directory / _OWNER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _owner_alive(directory: Path) -> bool:
    owner = _read_owner(directory)
    pid = owner.get('pid')
    return isinstance(pid, int) and _start_time(pid) == owner.get('start')


def _wait_for_sshd(host: _Host, log: Path, timeout: float) -> None:
    """Waits until sshd at the host's address answers with its banner."""
    deadline = time.monotonic() + timeout
    while True:
        if host.process is not None and host.process.poll() is not None:
            raise HostError(f'sshd for {host.fid} exited with code '
                            f'{host.process.returncode}: {_tail(log)}')
        try:
            with socket.create_connection((host.address, host.port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b'SSH-'):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise HostError(f'sshd for {host.fid} did not answer on '
                            f'{host.address}:{host.port} within {timeout:.0f}s: '
                            f'{_tail(log)}')
        time.sleep(0.1)


def _tail(log: Path, limit: int = 2000) -> str:
    try:
        return log.read_text(errors='replace')[-limit:].strip() or '(no output)'
    except OSError:
        return '(no log)'


def _signal_text(bid_status: str, end_time: datetime.datetime) -> str:
    if end_time.tzinfo is None:
        end_time = end_time.replace(tzinfo=datetime.timezone.utc)
    return yaml.safe_dump({'instance_status': 'STATUS_PREEMPTING',
                           'bid_status': bid_status,
                           'end_time': end_time.isoformat()}, sort_keys=False)


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    staged = path.with_name(f'.{path.name}.tmp')
    staged.write_text(text)
    staged.chmod(mode)
    staged.rename(path)


def _authorized_keys(ssh_public_keys: List[str]) -> str:
    keys = [k.strip() for k in ssh_public_keys if k.strip()]
    for key in keys:
        if '\n' in key:
            raise HostError('An SSH public key must be a single line')
    return ''.join(f'{k}\n' for k in keys)


def _make_host_key(path: Path, comment: str) -> None:
    run_command(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment,
                 '-f', str(path)])


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
    deadline = time.monotonic() + timeout
    while True:
        pids = _netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostError(f'Processes {pids} in network namespace {netns} '
                            f'survived SIGKILL for {timeout:.0f}s')
        time.sleep(0.05)


def _reap(process: Optional[subprocess.Popen], timeout: float = 10.0) -> None:
    if process is None:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise HostError(f'Process {process.pid} did not exit after SIGKILL') from e


def _used_octets(base: str) -> Set[int]:
    """Third octets of `base`.N.x already in use on this machine."""
    text = (run_command(['ip', '-o', '-4', 'addr', 'show']).stdout +
            run_command(['ip', '-4', 'route', 'show', 'table', 'all']).stdout)
    return {int(m) for m in re.findall(rf'\b{re.escape(base)}\.(\d+)\.', text)}


def _prefix_of(name: str, pattern: re.Pattern) -> Optional[str]:
    match = pattern.match(name)
    return match.group(0) if match else None


def _remove_all(remove: Callable[[_Host], None], hosts: List[_Host]) -> List[str]:
    """Removes every host, going on past failures; returns their messages."""
    errors = []
    for host in hosts:
        try:
            remove(host)
        except (HostError, CommandError) as e:
            errors.append(f'{host.fid}: {e}')
    return errors


def _require_root_tools() -> None:
    if os.geteuid() != 0:
        raise HostError('NamespaceHosts needs root (network namespaces, mounts); '
                        'use LocalPortHosts otherwise.')
    for tool in ('ip', 'unshare', 'mount', 'ssh-keygen', SSHD):
        if shutil.which(tool) is None:
            raise HostError(f'NamespaceHosts needs `{tool}`; run ensure_vm_image() '
                            'to install what is missing.')


class _FileLock:
    """An exclusive flock held for a `with` block."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: Optional[TextIO] = None

    def __enter__(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self._path, 'w', encoding='utf-8')
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        self._file = lock_file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class NamespaceHosts:
    """Instances as network namespaces with their own sshd (needs root)."""

    def __init__(self, image: Optional[VmImage] = None, *,
                 progress: Optional[Callable[[str], None]] = None,
                 subnet_base: str = SUBNET_BASE, start_timeout: float = 20.0) -> None:
        _require_root_tools()
        self.image = image or ensure_vm_image(progress)
        self._user = pwd.getpwnam(self.image.ssh_user)
        self._start_timeout = start_timeout
        self._hosts: Dict[str, _Host] = {}
        self._lock = threading.RLock()
        self._next = 1
        self._closed = False
        self.cleanup_stale()
        SIGNAL_DIR.mkdir(parents=True, exist_ok=True)
        self.prefix = 'smh' + secrets.token_hex(3)[:5]
        self.bridge = f'{self.prefix}br'
        self._directory = STATE_ROOT / self.prefix
        with _FileLock(STATE_ROOT / '.lock'):
            used = _used_octets(subnet_base)
            free = [n for n in range(1, 255) if n not in used]
            if not free:
                raise HostError(f'No free /24 left in {subnet_base}.0.0/16')
            self.subnet = f'{subnet_base}.{free[0]}'
            self._directory.mkdir(parents=True)
            _write_owner(self._directory, {'subnet': self.subnet})
            atexit.register(self.close)
            run_command(['ip', 'link', 'add', self.bridge, 'type', 'bridge'])
            run_command(['ip', 'addr', 'add', f'{self.subnet}.1/24', 'dev',
                         self.bridge])
            run_command(['ip', 'link', 'set', self.bridge, 'up'])

    def __enter__(self) -> 'NamespaceHosts':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gateway(self) -> str:
        """This machine's address as the hosts see it (the bridge)."""
        return f'{self.subnet}.1'

    def netns(self, instance_fid: str) -> str:
        """The network namespace of an instance (for tests and debugging)."""
        return self._netns(self._get(instance_fid))

    def _netns(self, host: _Host) -> str:
        return f'{self.prefix}-{host.index}'

    def _veth(self, host: _Host) -> str:
        return f'{self.prefix}h{host.index}'

    def _get(self, instance_fid: str) -> _Host:
        try:
            return self._hosts[instance_fid]
        except KeyError:
            raise HostError(f'No host for instance {instance_fid}') from None

    def _allocate_index(self) -> int:
        used = {h.index for h in self._hosts.values()}
        for offset in range(253):
            index = (self._next - 1 + offset) % 253 + 1
            if index not in used:
                self._next = index % 253 + 1
                return index
        raise HostError(f'All 253 addresses of {self.subnet}.0/24 are in use')

    def create(self, instance_fid: str, ssh_public_keys: List[str]) -> HostAddress:
        """Makes the instance's disk, network and sshd; returns its address."""
        with self._lock:
            if self._closed:
                raise HostError('This NamespaceHosts is closed')
            if instance_fid in self._hosts:
                raise HostError(f'Instance {instance_fid} already has a host')
            index = self._allocate_index()
            host = _Host(fid=instance_fid, index=index,
                         address=f'{self.subnet}.{index + 1}',
                         directory=self._directory / f'host-{index}')
            self._hosts[instance_fid] = host
            try:
                self._make_disk(host, _authorized_keys(ssh_public_keys))
                self._make_network(host)
                self._start(host)
            except BaseException:
                # The original error matters more; close() retries what is left.
                with contextlib.suppress(HostError, CommandError):
                    self._remove(host)
                raise
            return host.record()

    def _make_disk(self, host: _Host, authorized_keys: str) -> None:
        disk = host.disk
        (disk / 'opt-mithril').mkdir(parents=True)
        (disk / 'etc-work').mkdir()
        (host.directory / 'fid').write_text(host.fid + '\n')
        home = disk / 'home'
        shutil.copytree(self.image.home_template, home, symlinks=True)
        ssh_dir = home / '.ssh'
        ssh_dir.mkdir(mode=0o700)
        _write_atomically(ssh_dir / 'authorized_keys', authorized_keys, 0o600)
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
        _make_host_key(etc_ssh / 'ssh_host_ed25519_key', host.fid)
        (etc_ssh / 'sshd_config').write_text(self._sshd_config(host))

    def _hostname(self, host: _Host) -> str:
        name = re.sub(r'[^a-z0-9-]+', '-', host.fid.lower()).strip('-')[:40]
        return f'{name or "host"}-{self.prefix}'

    def _sshd_config(self, host: _Host) -> str:
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
                'AcceptEnv LANG LC_*\n'
                'MaxSessions 200\n'
                'MaxStartups 150:30:200\n'
                'Subsystem sftp /usr/lib/openssh/sftp-server\n')

    def _make_network(self, host: _Host) -> None:
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

    def _boot_script(self, host: _Host) -> str:
        disk, q = host.disk, shlex.quote
        return '\n'.join([
            'set -e',
            f'mount --bind {q(str(disk / "home"))} {q(self._user.pw_dir)}',
            f'mount --bind {q(str(host.directory / "tmp"))} /tmp',
            f'mount --bind {q(str(disk / "opt-mithril"))} {q(str(SIGNAL_DIR))}',
            'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm',
            # Other hosts' namespace handles are none of this host's business.
            'umount -R -l /run/netns 2>/dev/null || true',
            'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run',
            'mount -t overlay overlay -o '
            f'lowerdir=/etc,upperdir={q(str(disk / "etc-upper"))},'
            f'workdir={q(str(disk / "etc-work"))} /etc',
            'mkdir -m 0755 /run/sshd',
            f'hostname {q(self._hostname(host))}',
            f'exec {SSHD} -D -e',
        ])

    def _start(self, host: _Host) -> None:
        """Boots the host: a fresh /tmp, then sshd as PID 1 of new namespaces."""
        tmp = host.directory / 'tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tmp.chmod(0o1777)
        (host.disk / 'opt-mithril' / SIGNAL_FILE).unlink(missing_ok=True)
        log = host.directory / 'sshd.log'
        command = ['ip', 'netns', 'exec', self._netns(host),
                   'unshare', '--mount', '--uts', '--pid', '--fork', '--mount-proc',
                   '--propagation', 'private', '--',
                   '/bin/sh', '-c', self._boot_script(host)]
        with open(log, 'ab') as out:
            host.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={'PATH': _SYSTEM_PATH, 'LANG': 'C.UTF-8'})
        _wait_for_sshd(host, log, self._start_timeout)

    def _stop(self, host: _Host) -> None:
        netns = self._netns(host)
        _kill_netns_processes(netns)
        _reap(host.process)
        host.process = None
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

    def resume(self, instance_fid: str) -> HostAddress:
        """Boots a paused or preempted host again: same disk, keys and address."""
        with self._lock:
            host = self._get(instance_fid)
            self._stop(host)
            run_command(['ip', 'link', 'set', self._veth(host), 'up'])
            self._start(host)
            return host.record()

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        """Writes /opt/mithril/MITHRIL_SIGNAL.yml as the host sees it."""
        with self._lock:
            host = self._get(instance_fid)
            _write_atomically(host.disk / 'opt-mithril' / SIGNAL_FILE,
                              _signal_text(bid_status, end_time))

    def destroy(self, instance_fid: str) -> None:
        """Kills the host's processes, removes its namespace, link and disk."""
        with self._lock:
            host = self._hosts.get(instance_fid)
            if host is not None:
                self._remove(host)

    def _remove(self, host: _Host) -> None:
        netns = self._netns(host)
        if netns in _netns_names():
            _kill_netns_processes(netns)
            _reap(host.process)
            _delete_netns(netns)
        if self._veth(host) in _link_names():
            _delete_link(self._veth(host))
        shutil.rmtree(host.directory, ignore_errors=True)
        self._hosts.pop(host.fid, None)

    def close(self) -> None:
        """Destroys every host of this backend, its bridge and its state."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self.close)
            errors = _remove_all(self._remove, list(self._hosts.values()))
            if self.bridge in _link_names():
                _delete_link(self.bridge)
            if errors:
                raise HostError('Some hosts could not be removed (cleanup_stale() '
                                'retries once this process is gone): ' +
                                '; '.join(errors))
            shutil.rmtree(self._directory, ignore_errors=True)

    @staticmethod
    def cleanup_stale() -> List[str]:
        """Removes hosts, links and state of backends whose process is gone.

        Returns the prefixes removed. Backends still running are left alone.
        """
        if os.geteuid() != 0:
            raise HostError('Cleaning up namespace hosts needs root')
        with _FileLock(STATE_ROOT / '.lock'):
            return NamespaceHosts._cleanup_stale_locked(STATE_ROOT)

    @staticmethod
    def _cleanup_stale_locked(state_root: Path) -> List[str]:
        netns = _netns_names()
        links = _link_names()
        dirs = ([d for d in state_root.iterdir() if d.is_dir()]
                if state_root.is_dir() else [])
        prefixes = {p for p in (_prefix_of(n, PREFIX_PATTERN)
                                for n in [*netns, *links, *(d.name for d in dirs)])
                    if p is not None}
        stale = sorted(p for p in prefixes if not _owner_alive(state_root / p))
        for prefix in stale:
            for name in netns:
                if name.startswith(prefix):
                    _delete_netns(name)
            for name in links:
                if name.startswith(prefix):
                    _delete_link(name)
            shutil.rmtree(state_root / prefix, ignore_errors=True)
        return stale


def _local_state_root() -> Path:
    """Root's sshd reads authorized keys as `ubuntu`, so root keeps them outside
    its own home; other users keep them in theirs."""
    if os.geteuid() == 0:
        return STATE_ROOT.parent / 'local-hosts'
    base = os.environ.get('XDG_STATE_HOME') or str(Path.home() / '.local' / 'state')
    return Path(base) / 'sky-mithril' / 'local-hosts'


def _marked_processes(marker: str, directory: Path, *,
                      prefix: bool = False) -> List[int]:
    """PIDs of a local host: its environment has `SKY_MITHRIL_HOST=<marker>`
    (or one starting with it when `prefix`), or its command line names
    `directory` (sshd overwrites its environment with its process title, which
    shows the config path). Only processes we may inspect."""
    needle = f'{HOST_ENV_MARKER}={marker}'.encode()
    path = f'{directory}{os.sep}'.encode()
    pids = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / 'environ').read_bytes().split(b'\0')
            cmdline = (entry / 'cmdline').read_bytes()
        except OSError:
            continue
        if path in cmdline or any(v.startswith(needle) if prefix else v == needle
                                  for v in environ):
            pids.append(int(entry.name))
    return pids


def _kill_marked(marker: str, directory: Path, *, prefix: bool = False,
                 timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in _marked_processes(marker, directory, prefix=prefix)
                if not _is_zombie(p)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostError(f'Processes {pids} of host {marker} survived SIGKILL')
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return True
    return stat.rsplit(')', 1)[1].split()[0] in ('Z', 'X')


def _free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port
    raise HostError('No free TCP port found on 127.0.0.1')


class LocalPortHosts:
    """Instances as user-owned sshds on 127.0.0.1 (no root needed).

    See the module docstring for the limits: one single-node cluster at a time,
    SSH user = `ssh_user`, shared home and /tmp, no /opt/mithril.
    """

    def __init__(self, *, state_root: Optional[Path] = None,
                 start_timeout: float = 20.0) -> None:
        if shutil.which(SSHD) is None or shutil.which('ssh-keygen') is None:
            raise HostError(f'LocalPortHosts needs {SSHD} and ssh-keygen '
                            '(Debian/Ubuntu package openssh-server).')
        self.ssh_user = 'ubuntu' if os.geteuid() == 0 else pwd.getpwuid(
            os.getuid()).pw_name
        pwd.getpwnam(self.ssh_user)
        self._state_root = state_root or _local_state_root()
        self._start_timeout = start_timeout
        self._hosts: Dict[str, _Host] = {}
        self._lock = threading.RLock()
        self._next = 1
        self._closed = False
        self.cleanup_stale(self._state_root)
        self.prefix = 'slh' + secrets.token_hex(3)[:5]
        self._directory = self._state_root / self.prefix
        with _FileLock(self._state_root / '.lock'):
            self._directory.mkdir(parents=True, mode=0o755)
            _write_owner(self._directory, {})
        atexit.register(self.close)

    def __enter__(self) -> 'LocalPortHosts':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _marker(self, host: _Host) -> str:
        return f'{self.prefix}-{host.index}'

    def _get(self, instance_fid: str) -> _Host:
        try:
            return self._hosts[instance_fid]
        except KeyError:
            raise HostError(f'No host for instance {instance_fid}') from None

    def signal_file(self, instance_fid: str) -> Path:
        """Where this backend writes the instance's preemption signal."""
        return self._get(instance_fid).directory / SIGNAL_FILE

    def create(self, instance_fid: str, ssh_public_keys: List[str]) -> HostAddress:
        """Starts an sshd on a free port that accepts `ssh_public_keys`."""
        with self._lock:
            if self._closed:
                raise HostError('This LocalPortHosts is closed')
            if instance_fid in self._hosts:
                raise HostError(f'Instance {instance_fid} already has a host')
            index = self._next
            self._next += 1
            host = _Host(fid=instance_fid, index=index, address='127.0.0.1',
                         directory=self._directory / f'host-{index}',
                         port=_free_port(), user=self.ssh_user)
            self._hosts[instance_fid] = host
            try:
                host.directory.mkdir(mode=0o755)
                (host.directory / 'fid').write_text(host.fid + '\n')
                _write_atomically(host.directory / 'authorized_keys',
                                  _authorized_keys(ssh_public_keys), 0o644)
                _make_host_key(host.directory / 'ssh_host_ed25519_key', host.fid)
                self._start(host)
            except BaseException:
                # The original error matters more; close() retries what is left.
                with contextlib.suppress(HostError, CommandError):
                    self._remove(host)
                raise
            return host.record()

    def _sshd_config(self, host: _Host) -> str:
        d = host.directory
        return (f'# sky-mithril local host for instance {host.fid}\n'
                f'ListenAddress 127.0.0.1:{host.port}\n'
                f'HostKey {d / "ssh_host_ed25519_key"}\n'
                f'PidFile {d / "sshd.pid"}\n'
                f'AuthorizedKeysFile {d / "authorized_keys"}\n'
                f'AllowUsers {self.ssh_user}\n'
                f'SetEnv {HOST_ENV_MARKER}={self._marker(host)}\n'
                'StrictModes no\n'
                'UsePAM no\n'
                'PasswordAuthentication no\n'
                'KbdInteractiveAuthentication no\n'
                'PermitRootLogin no\n'
                'UseDNS no\n'
                'PrintMotd no\n'
                'MaxSessions 200\n'
                'MaxStartups 150:30:200\n'
                'Subsystem sftp /usr/lib/openssh/sftp-server\n')

    def _start(self, host: _Host) -> None:
        (host.directory / SIGNAL_FILE).unlink(missing_ok=True)
        config = host.directory / 'sshd_config'
        config.write_text(self._sshd_config(host))
        if os.geteuid() == 0:
            Path('/run/sshd').mkdir(mode=0o755, exist_ok=True)
        log = host.directory / 'sshd.log'
        env = dict(os.environ, **{HOST_ENV_MARKER: self._marker(host)})
        with open(log, 'ab') as out:
            host.process = subprocess.Popen(
                [SSHD, '-D', '-e', '-f', str(config)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=env)
        _wait_for_sshd(host, log, self._start_timeout)

    def _stop(self, host: _Host) -> None:
        if host.process is not None and host.process.poll() is None:
            host.process.kill()
        _reap(host.process)
        host.process = None
        _kill_marked(self._marker(host), host.directory)

    def pause(self, instance_fid: str) -> None:
        """Kills the host's sshd and everything started through it."""
        with self._lock:
            self._stop(self._get(instance_fid))

    def preempt(self, instance_fid: str) -> None:
        """Same as pause: nothing answers on the port any more."""
        self.pause(instance_fid)

    def resume(self, instance_fid: str) -> HostAddress:
        """Starts the host's sshd again on the same port."""
        with self._lock:
            host = self._get(instance_fid)
            self._stop(host)
            self._start(host)
            return host.record()

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        """Writes the signal file to `signal_file(instance_fid)`."""
        with self._lock:
            _write_atomically(self.signal_file(instance_fid),
                              _signal_text(bid_status, end_time))

    def destroy(self, instance_fid: str) -> None:
        """Kills the host's processes and removes its state. Idempotent."""
        with self._lock:
            host = self._hosts.get(instance_fid)
            if host is not None:
                self._remove(host)

    def _remove(self, host: _Host) -> None:
        self._stop(host)
        shutil.rmtree(host.directory, ignore_errors=True)
        self._hosts.pop(host.fid, None)

    def close(self) -> None:
        """Destroys every host of this backend."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self.close)
            errors = _remove_all(self._remove, list(self._hosts.values()))
            if errors:
                raise HostError('Some hosts could not be removed: ' +
                                '; '.join(errors))
            shutil.rmtree(self._directory, ignore_errors=True)

    @staticmethod
    def cleanup_stale(state_root: Optional[Path] = None) -> List[str]:
        """Kills processes and removes state of local hosts whose owner is gone."""
        root = state_root or _local_state_root()
        if not root.is_dir():
            return []
        with _FileLock(root / '.lock'):
            stale = sorted(d.name for d in root.iterdir()
                           if d.is_dir() and _prefix_of(d.name, LOCAL_PREFIX_PATTERN)
                           and not _owner_alive(d))
            for prefix in stale:
                _kill_marked(prefix + '-', root / prefix, prefix=True)
                shutil.rmtree(root / prefix, ignore_errors=True)
        return stale
