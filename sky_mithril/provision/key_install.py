"""SkyPilot's SSH key on reserved instances that boot without it (a
reservation made in Mithril's console or with another tool carries only the
keys given at its creation): once they run, appended to the login user's
authorized_keys over SSH with a local key the reservation does carry.

The key travels on ssh's stdin, never on a command line or in a log.
"""

import dataclasses
import shlex
import subprocess
import time
from pathlib import Path
from typing import List

from sky_mithril.api import models
from sky_mithril.provision import cluster_bid

# The file sshd reads on Mithril's image, in the shell's words.
AUTHORIZED_KEYS = '$HOME/.ssh/authorized_keys'
SSH_OPTIONS = ('-o', 'StrictHostKeyChecking=no', '-o',
               'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes',
               '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o',
               'ConnectTimeout=10')
# ssh's own exit status when it could not connect or log in.
SSH_FAILED = 255
RETRY_SECONDS = 2.0


class KeyInstallError(RuntimeError):
    """SkyPilot's key could not be installed on a reserved instance."""


@dataclasses.dataclass(frozen=True)
class KeyInstall:
    """SkyPilot's public key, and the local private key that opens the
    reservation's instances, through which it is installed."""

    identity: Path
    public_key: str


def install_script() -> str:
    """Reads one public key on stdin and appends it to AUTHORIZED_KEYS
    unless a line there already holds its type and body (idempotent)."""
    return '\n'.join([
        'set -e',
        f'f="{AUTHORIZED_KEYS}"',
        'IFS= read -r key',
        'body=$(printf "%s\\n" "$key" | cut -d" " -f1-2)',
        'umask 077',
        'mkdir -p "$(dirname "$f")"',
        'touch "$f"',
        'grep -qF -- "$body" "$f" && exit 0',
        '[ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ] && echo >> "$f"',
        'printf "%s\\n" "$key" >> "$f"',
    ])


def _install_on(plan: KeyInstall, instance: models.Instance,
                deadline: float) -> None:
    argv = ['ssh', '-i', str(plan.identity), '-p',
            str(cluster_bid.ssh_port(instance)), *SSH_OPTIONS,
            f'{cluster_bid.ssh_user_of(instance)}@{instance.ssh_destination}',
            f'sh -c {shlex.quote(install_script())}']
    while True:
        done = subprocess.run(argv, input=plan.public_key.strip() + '\n',
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        if done.returncode != SSH_FAILED or time.monotonic() > deadline:
            raise KeyInstallError(
                f'Could not install SkyPilot\'s SSH key on reserved instance '
                f'{instance.fid} ({instance.ssh_destination}) with '
                f'{plan.identity} (exit code {done.returncode}): '
                f'{done.stderr.strip()[-500:]}')
        time.sleep(RETRY_SECONDS)


def install(plan: KeyInstall, instances: List[models.Instance],
            timeout: float) -> None:
    """Installs SkyPilot's key on every instance, waiting up to `timeout`
    seconds for their sshd to let the plan's identity in."""
    deadline = time.monotonic() + timeout
    for instance in instances:
        _install_on(plan, instance, deadline)
