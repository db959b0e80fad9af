"""What the real SSH host backends (`namespace`, `local`) share: one sshd per
instance, and the bookkeeping around it.

`SshdHostBackend` holds a backend's hosts and runs create, destroy and close
for both: a half-made host is removed again, and close goes on past one host's
failure. Each backend tags what it creates with a per-backend prefix and
records its owner process (`write_owner`), so `cleanup_stale()` can remove what
a crashed run left behind without touching a backend that is still alive
(`owner_alive`). Both keep their volumes' data in `<backend state>/volumes/`,
so closing the backend (or `cleanup_stale()`) removes it with the rest.
"""

import atexit
import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import (Callable, Dict, List, Optional, Sequence, TextIO, Tuple,
                    Type, TypeVar)

import yaml

from sky_mithril.emulator.hosts import HostAddress, VolumeAttachment
from sky_mithril.emulator.hosts.vm_image import CommandError, run_command

# Root keeps the backends' state here, one directory per backend kind.
SYSTEM_STATE_DIR = Path('/var/lib/sky-mithril')
SIGNAL_FILE = 'MITHRIL_SIGNAL.yml'
SSHD = '/usr/sbin/sshd'
# The end of every host's sshd_config: SkyPilot opens many sessions at once.
SSHD_CONFIG_LIMITS = ('MaxSessions 200\n'
                      'MaxStartups 150:30:200\n'
                      'Subsystem sftp /usr/lib/openssh/sftp-server\n')
_OWNER_FILE = 'owner.json'
_Backend = TypeVar('_Backend', bound='SshdHostBackend')


class HostError(RuntimeError):
    """A host could not be created, started or stopped; the message says why."""


@dataclasses.dataclass
class Host:
    """One instance's host: its sshd process, address, state directory and
    the volumes it gets at its (next) start."""

    fid: str
    index: int
    address: str
    directory: Path
    process: Optional[subprocess.Popen] = None
    port: int = 22
    user: str = 'ubuntu'
    volumes: Tuple[VolumeAttachment, ...] = ()

    @property
    def disk(self) -> Path:
        return self.directory / 'disk'

    def record(self) -> HostAddress:
        return HostAddress(ssh_destination=self.address, private_ip=self.address,
                           ssh_port=self.port, ssh_user=self.user)


class SshdHostBackend:
    """A backend's hosts, by instance fid; every hook holds one lock.

    Subclasses make a host (`_new_host`), bring it up (`_set_up`), take it
    down for good (`_remove`), and may clean up more after their hosts on
    `close` (`_close_backend`).
    """

    api_address = '127.0.0.1'

    # What `close` says before the hosts' errors.
    _close_failed_message = 'Some hosts could not be removed: '
    # The backend's own state, removed by `close`; set by the subclass.
    _directory: Path

    def __init__(self, start_timeout: float) -> None:
        self._start_timeout = start_timeout
        self._hosts: Dict[str, Host] = {}
        self._lock = threading.RLock()
        self._next = 1
        self._closed = False

    def __enter__(self: _Backend) -> _Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, instance_fid: str) -> Host:
        try:
            return self._hosts[instance_fid]
        except KeyError:
            raise HostError(f'No host for instance {instance_fid}') from None

    def _new_host(self, instance_fid: str) -> Host:
        raise NotImplementedError

    def _set_up(self, host: Host, ssh_public_keys: List[str]) -> None:
        raise NotImplementedError

    def _remove(self, host: Host) -> None:
        raise NotImplementedError

    def _close_backend(self) -> None:
        """Removes what the backend made besides its hosts (called by close)."""

    @property
    def _volumes_directory(self) -> Path:
        """Where the backend keeps its volumes' data, one entry per volume fid."""
        return self._directory / 'volumes'

    def create(self, instance_fid: str, ssh_public_keys: List[str],
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        """Brings up a host that accepts `ssh_public_keys`, with `volumes`
        attached; returns its address."""
        with self._lock:
            if self._closed:
                raise HostError(f'This {type(self).__name__} is closed')
            if instance_fid in self._hosts:
                raise HostError(f'Instance {instance_fid} already has a host')
            host = self._new_host(instance_fid)
            host.volumes = tuple(volumes)
            self._hosts[instance_fid] = host
            try:
                self._set_up(host, ssh_public_keys)
            except BaseException:
                # The original error matters more; close() retries what is left.
                with contextlib.suppress(HostError, CommandError):
                    self._remove(host)
                raise
            return host.record()

    def destroy(self, instance_fid: str) -> None:
        """Kills the host's processes and removes its state. Idempotent."""
        with self._lock:
            host = self._hosts.get(instance_fid)
            if host is not None:
                self._remove(host)

    def close(self) -> None:
        """Destroys every host of this backend, then the backend's own state."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self.close)
            errors = []
            for host in list(self._hosts.values()):
                try:
                    self._remove(host)
                except (HostError, CommandError) as e:
                    errors.append(f'{host.fid}: {e}')
            self._close_backend()
            if errors:
                raise HostError(self._close_failed_message + '; '.join(errors))
            shutil.rmtree(self._directory, ignore_errors=True)


class FileLock:
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


def proc_stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/<pid>/stat after the command name (state first);
    None if there is no such process."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return stat.rsplit(')', 1)[1].split()


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks, to tell a reused PID apart."""
    fields = proc_stat(pid)
    return fields[19] if fields is not None else None


def write_owner(directory: Path, extra: Dict[str, object]) -> None:
    """Records this process as the owner of a backend's state `directory`."""
    record = dict(extra, pid=os.getpid(), start=_start_time(os.getpid()))
    (directory / _OWNER_FILE).write_text(json.dumps(record) + '\n')


def _read_owner(directory: Path) -> Dict[str, object]:
    try:
        return json.loads((directory / _OWNER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def owner_alive(directory: Path) -> bool:
    """Whether the process that wrote `directory`'s owner record still runs."""
    owner = _read_owner(directory)
    pid = owner.get('pid')
    return isinstance(pid, int) and _start_time(pid) == owner.get('start')


def prefix_of(name: str, pattern: re.Pattern) -> Optional[str]:
    match = pattern.match(name)
    return match.group(0) if match else None


def kill_until_gone(find_pids: Callable[[], List[int]], *, timeout: float,
                    survivors: Callable[[List[int]], str],
                    ignore: Tuple[Type[OSError], ...] = (ProcessLookupError,)
                    ) -> None:
    """SIGKILLs what `find_pids` finds until it finds nothing; after `timeout`
    seconds fails with `survivors(pids)` as the message."""
    deadline = time.monotonic() + timeout
    while True:
        pids = find_pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(*ignore):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostError(survivors(pids))
        time.sleep(0.05)


def reap(process: Optional[subprocess.Popen], timeout: float = 10.0) -> None:
    """Waits for a killed host process to exit."""
    if process is None:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise HostError(f'Process {process.pid} did not exit after SIGKILL') from e


def wait_for_sshd(host: Host, log: Path, timeout: float) -> None:
    """Waits until sshd at the host's address answers with its banner."""
    deadline = time.monotonic() + timeout
    while True:
        if host.process is not None and host.process.poll() is not None:
            raise HostError(f'sshd for {host.fid} exited with code '
                            f'{host.process.returncode}: {log_tail(log)}')
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
                            f'{log_tail(log)}')
        time.sleep(0.1)


def log_tail(log: Path, limit: int = 2000) -> str:
    """The end of a host process's log, for error messages."""
    try:
        return log.read_text(errors='replace')[-limit:].strip() or '(no output)'
    except OSError:
        return '(no log)'


def signal_text(bid_status: str, end_time: datetime.datetime) -> str:
    """The contents of Mithril's preemption signal file."""
    if end_time.tzinfo is None:
        end_time = end_time.replace(tzinfo=datetime.timezone.utc)
    return yaml.safe_dump({'instance_status': 'STATUS_PREEMPTING',
                           'bid_status': bid_status,
                           'end_time': end_time.isoformat()}, sort_keys=False)


def authorized_keys(ssh_public_keys: List[str]) -> str:
    """An authorized_keys file of `ssh_public_keys`, one key a line."""
    keys = [k.strip() for k in ssh_public_keys if k.strip()]
    for key in keys:
        if '\n' in key:
            raise HostError('An SSH public key must be a single line')
    return ''.join(f'{k}\n' for k in keys)


def make_host_key(path: Path, comment: str) -> None:
    run_command(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment,
                 '-f', str(path)])
