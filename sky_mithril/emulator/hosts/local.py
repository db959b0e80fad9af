"""SSH hosts without root: `LocalPortHosts` runs one user-owned sshd per
instance on 127.0.0.1 and a free high port.

Limits: the hosts share this machine's home directory, `/tmp`
and ports, so only one single-node cluster can run at a time (Ray's fixed ports
and `/tmp/ray_skypilot` collide); the SSH user is the current user (`ubuntu`
when run as root), so the provisioner must report that user instead of
Mithril's `ubuntu`; SkyPilot's node setup needs network access to PyPI (no
offline image) and passwordless sudo for that user; the preemption signal file
is written to `signal_file(fid)`, not to `/opt/mithril`. Volumes: a file share
is a directory on this machine, `volume_path(fid)`, which every host sees as
it is (no mount at `/mnt/<name>` without a mount namespace); a block volume
cannot be attached (no root, no loop devices), so a host that should get one
fails to start and its instance goes to STATUS_ERROR.
"""

import atexit
import datetime
import os
import pwd
import random
import re
import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

from sky_mithril.emulator.hosts import (HostAddress, VolumeAttachment,
                                        VolumeInterface)
from sky_mithril.emulator.hosts import sshd
from sky_mithril.emulator.hosts.sshd import SIGNAL_FILE, SSHD, FileLock, Host, HostError
from sky_mithril.files import write_atomically

LOCAL_PREFIX_PATTERN = re.compile(r'slh[0-9a-f]{5}')
HOST_ENV_MARKER = 'SKY_MITHRIL_HOST'


def _local_state_root() -> Path:
    """Root's sshd reads authorized keys as `ubuntu`, so root keeps them outside
    its own home; other users keep them in theirs."""
    if os.geteuid() == 0:
        return sshd.SYSTEM_STATE_DIR / 'local-hosts'
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
    sshd.kill_until_gone(
        lambda: [p for p in _marked_processes(marker, directory, prefix=prefix)
                 if not _is_zombie(p)],
        timeout=timeout,
        survivors=lambda pids: f'Processes {pids} of host {marker} survived SIGKILL',
        ignore=(ProcessLookupError, PermissionError))


def _is_zombie(pid: int) -> bool:
    fields = sshd.proc_stat(pid)
    return fields is None or fields[0] in ('Z', 'X')


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


class LocalPortHosts(sshd.SshdHostBackend):
    """Instances as user-owned sshds on 127.0.0.1 (no root needed).

    See the module docstring for the limits: one single-node cluster at a time,
    SSH user = `ssh_user`, shared home and /tmp, no /opt/mithril, file shares
    only as plain directories.
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
        super().__init__(start_timeout)
        self.cleanup_stale(self._state_root)
        self.prefix = 'slh' + secrets.token_hex(3)[:5]
        self._directory = self._state_root / self.prefix
        with FileLock(self._state_root / '.lock'):
            self._directory.mkdir(parents=True, mode=0o755)
            self._volumes_directory.mkdir(mode=0o755)
            sshd.write_owner(self._directory, {})
        atexit.register(self.close)

    def _marker(self, host: Host) -> str:
        return f'{self.prefix}-{host.index}'

    def signal_file(self, instance_fid: str) -> Path:
        """Where this backend writes the instance's preemption signal."""
        return self._get(instance_fid).directory / SIGNAL_FILE

    def volume_path(self, volume_fid: str) -> Path:
        """The directory holding a file share's data, as hosts see it."""
        return self._volumes_directory / volume_fid

    def _new_host(self, instance_fid: str) -> Host:
        index = self._next
        self._next += 1
        return Host(fid=instance_fid, index=index, address='127.0.0.1',
                    directory=self._directory / f'host-{index}',
                    port=_free_port(), user=self.ssh_user)

    def _set_up(self, host: Host, ssh_public_keys: List[str]) -> None:
        """Starts an sshd on the host's port that accepts `ssh_public_keys`."""
        host.directory.mkdir(mode=0o755)
        (host.directory / 'fid').write_text(host.fid + '\n')
        write_atomically(host.directory / 'authorized_keys',
                         sshd.authorized_keys(ssh_public_keys), mode=0o644)
        sshd.make_host_key(host.directory / 'ssh_host_ed25519_key', host.fid)
        self._start(host)

    def _sshd_config(self, host: Host) -> str:
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
                'PrintMotd no\n' + sshd.SSHD_CONFIG_LIMITS)

    def _prepare_volumes(self, host: Host) -> None:
        """Makes the host's file shares' directories; refuses block volumes."""
        for volume in host.volumes:
            if volume.interface == VolumeInterface.BLOCK:
                raise HostError(
                    f'LocalPortHosts cannot attach block volume {volume.fid} '
                    f'({volume.name}) to {host.fid}: block volumes need '
                    'NamespaceHosts (root)')
            share = self.volume_path(volume.fid)
            if not share.is_dir():
                share.mkdir(mode=0o755)
                user = pwd.getpwnam(self.ssh_user)
                os.chown(share, user.pw_uid, user.pw_gid)

    def _start(self, host: Host) -> None:
        self._prepare_volumes(host)
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
        sshd.wait_for_sshd(host, log, self._start_timeout)

    def _stop(self, host: Host) -> None:
        if host.process is not None and host.process.poll() is None:
            host.process.kill()
        sshd.reap(host.process)
        host.process = None
        _kill_marked(self._marker(host), host.directory)

    def pause(self, instance_fid: str) -> None:
        """Kills the host's sshd and everything started through it."""
        with self._lock:
            self._stop(self._get(instance_fid))

    def preempt(self, instance_fid: str) -> None:
        """Same as pause: nothing answers on the port any more."""
        self.pause(instance_fid)

    def resume(self, instance_fid: str,
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        """Starts the host's sshd again on the same port, with `volumes`."""
        with self._lock:
            host = self._get(instance_fid)
            self._stop(host)
            host.volumes = tuple(volumes)
            self._start(host)
            return host.record()

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        """Writes the signal file to `signal_file(instance_fid)`."""
        with self._lock:
            write_atomically(self.signal_file(instance_fid),
                             sshd.signal_text(bid_status, end_time))

    def reach_api_on_loopback(self, api_port: int) -> None:
        """Nothing to forward: the hosts share this machine's 127.0.0.1."""
        del api_port

    def forward_kube_api(self, instance_fid: str, port: int, api_port: int) -> bool:
        """Nothing to forward: the hosts share this machine's 127.0.0.1, where
        the emulator's own URL answers (and a fixed port would collide)."""
        del instance_fid, port, api_port
        return False

    def _remove(self, host: Host) -> None:
        """Kills the host's processes and removes its state."""
        self._stop(host)
        shutil.rmtree(host.directory, ignore_errors=True)
        self._hosts.pop(host.fid, None)

    def delete_volume(self, volume_fid: str) -> None:
        """Removes a file share's directory and everything in it."""
        with self._lock:
            shutil.rmtree(self.volume_path(volume_fid), ignore_errors=True)

    @staticmethod
    def cleanup_stale(state_root: Optional[Path] = None) -> List[str]:
        """Kills processes and removes state of local hosts whose owner is gone."""
        root = state_root or _local_state_root()
        if not root.is_dir():
            return []
        with FileLock(root / '.lock'):
            stale = sorted(d.name for d in root.iterdir()
                           if d.is_dir() and sshd.prefix_of(d.name, LOCAL_PREFIX_PATTERN)
                           and not sshd.owner_alive(d))
            for prefix in stale:
                _kill_marked(prefix + '-', root / prefix, prefix=True)
                shutil.rmtree(root / prefix, ignore_errors=True)
        return stale
