"""Mithril volumes a task mounts: `config.mithril.volumes` resolved to the
project's volumes, the region they pin the task to, and the node commands
that mount them.

    config:
      mithril:
        volumes:
          /checkpoints: my-share     # a volume's name (or fid)

Why a `config.mithril` key and not SkyPilot's `volumes:`: SkyPilot 0.14.1's
`sky` client validates task volumes against a closed list of volume types
and resolves their names on the API server's own volume table, which has no
Mithril types; a plugin cannot extend either on a client that loads no
plugin. The names are Mithril's own, so a volume created in the console,
with `ml` or `sky-mithril volumes create` is usable as it is.

On the node (idempotent, runs at every launch and `sky start`): a file share
arrives mounted at `/mnt/<name>` with an fstab entry; that entry is moved to
the task's path. A block volume arrives as `/dev/disk/by-id/virtio-<id>`; it
is formatted (ext4) only when it holds no file system yet, then mounted.
Both mount points are owned by the SSH user.
"""

import dataclasses
import posixpath
import shlex
from typing import Any, Dict, List

from sky_mithril.task import settings
from sky_mithril.account import connection
from sky_mithril.api import models

KEY = 'volumes'
# Mithril exposes a block volume under its id truncated to a disk serial.
DISK_SERIAL_CHARS = 36


class VolumeConfigError(settings.MithrilConfigError):
    """A bad `config.mithril.volumes`; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Mount:
    """One volume mounted at `path` on every node."""

    path: str
    volume: models.Volume


def requested(task_section: Dict[str, Any]) -> Dict[str, str]:
    """`config.mithril.volumes` checked: absolute mount path -> volume name."""
    value = task_section.get(KEY) or {}
    if not isinstance(value, dict):
        raise VolumeConfigError(
            f'config.mithril.{KEY} must map mount paths to volume names, '
            f'e.g. {{/checkpoints: my-share}}; got {value!r}.')
    mounts: Dict[str, str] = {}
    for path, name in value.items():
        clean = posixpath.normpath(str(path))
        if not clean.startswith('/') or clean == '/':
            raise VolumeConfigError(
                f'config.mithril.{KEY}: mount path {path!r} must be an '
                'absolute path below / (e.g. /checkpoints).')
        if not isinstance(name, str) or not name.strip():
            raise VolumeConfigError(
                f'config.mithril.{KEY}: {path} needs a volume name; list '
                'yours with `sky-mithril volumes ls`.')
        mounts[clean] = name.strip()
    if len(set(mounts.values())) != len(mounts):
        raise VolumeConfigError(
            f'config.mithril.{KEY} mounts one volume at two paths; mount '
            'each volume once.')
    return mounts


def resolve(conn: connection.Connection,
            wanted: Dict[str, str]) -> List[Mount]:
    """The project's volumes for each mount path, found by name or fid."""
    if not wanted:
        return []
    volumes = conn.client.list_volumes(conn.project_id)
    mounts = []
    for path, name in sorted(wanted.items()):
        found = [v for v in volumes if name in (v.name, v.fid)]
        if not found:
            known = ', '.join(sorted(v.name for v in volumes)) or 'none'
            raise VolumeConfigError(
                f'Mithril volume {name!r} (config.mithril.{KEY}, {path}) does '
                f'not exist in project {conn.project_id}; its volumes: '
                f'{known}. Create it with `sky-mithril volumes create {name} '
                '--region REGION --size GB`.')
        mounts.append(Mount(path, found[0]))
    return mounts


def region_of(mounts: List[Mount]) -> str:
    """The one region all mounted volumes live in (a bid can only attach
    volumes of its own region)."""
    regions = {m.volume.region for m in mounts}
    if len(regions) > 1:
        where = ', '.join(f'{m.volume.name} in {m.volume.region}'
                          for m in mounts)
        raise VolumeConfigError(
            f'The task mounts volumes of several regions ({where}); a Mithril '
            'cluster can only attach volumes of its own region.')
    return regions.pop()


def check_region(mounts: List[Mount], region: str) -> None:
    """Refuses a launch region other than the volumes' own."""
    if not mounts:
        return
    home = region_of(mounts)
    if home != region:
        names = ', '.join(m.volume.name for m in mounts)
        raise VolumeConfigError(
            f'The task\'s Mithril volumes live in {home} ({names}), but it '
            f'asks for mithril/{region}. Launch with --infra mithril/{home}, '
            f'or mount volumes of {region}.')


def check_reservation_takes(mounts: List[Mount], reservation_fid: str) -> None:
    """Refuses, before anything changes, a relaunch or start of a cluster
    on reservation `reservation_fid`'s instances with a block volume another
    bid or reservation holds: Mithril would refuse adding it to the
    reservation, and the cluster cannot move to a spot bid instead."""
    for mount in mounts:
        volume = mount.volume
        if (volume.interface != models.VolumeInterface.BLOCK or
                reservation_fid in volume.reservations):
            continue
        # A CPU VM holding it shows only in its attachments.
        holders = [*volume.bids, *volume.reservations, *volume.attachments]
        if holders:
            raise VolumeConfigError(
                f'Block volume {volume.name} ({volume.fid}) is attached to '
                f'{", ".join(holders)}, and a block volume attaches to one '
                f'order at a time; the cluster runs on reservation '
                f'{reservation_fid}\'s instances, so it cannot take it or go '
                'on a spot bid instead: launch without that volume, or '
                '`sky down` the cluster and launch again.')


def _file_share(mount: Mount) -> str:
    share = shlex.quote(f'/mnt/{mount.volume.name}')
    path = shlex.quote(mount.path)
    missing = shlex.quote(
        f'Mithril file share {mount.volume.name} is not attached (no {share} '
        'in /etc/fstab).')
    return (f'sudo mkdir -p {path}; if ! mountpoint -q {path}; then '
            f'if grep -qs " {share} " /etc/fstab; then '
            f'sudo sed -i "s| {share} | {path} |" /etc/fstab; '
            f'sudo umount {share} 2>/dev/null || true; fi; '
            f'sudo mount {path} || {{ echo {missing} >&2; exit 1; }}; fi; '
            f'sudo chown "$(id -u):$(id -g)" {path};')


def _block(mount: Mount) -> str:
    by_id = '/dev/disk/by-id/virtio-'
    device = shlex.quote(by_id + mount.volume.fid[:DISK_SERIAL_CHARS])
    by_name = shlex.quote(by_id + mount.volume.name[:DISK_SERIAL_CHARS])
    path = shlex.quote(mount.path)
    missing = shlex.quote(
        f'Mithril block volume {mount.volume.name} is not attached (no '
        f'{by_id}... device).')
    return (f'MITHRIL_DISK={device}; [ -e "$MITHRIL_DISK" ] || '
            f'MITHRIL_DISK={by_name}; [ -e "$MITHRIL_DISK" ] || '
            f'{{ echo {missing} >&2; exit 1; }}; '
            'sudo blkid "$MITHRIL_DISK" >/dev/null 2>&1 || '
            'sudo mkfs.ext4 -q -m 0 "$MITHRIL_DISK"; '
            f'sudo mkdir -p {path}; mountpoint -q {path} || '
            f'sudo mount "$MITHRIL_DISK" {path}; '
            f'sudo chown "$(id -u):$(id -g)" {path};')


def setup_commands(mounts: List[Mount]) -> str:
    """One line of shell that mounts every volume (see module docstring)."""
    return ' '.join(_block(m) if m.volume.interface == models.VolumeInterface.BLOCK
                    else _file_share(m) for m in mounts)
