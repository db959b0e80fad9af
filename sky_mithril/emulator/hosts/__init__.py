"""Where the emulator's instances "run": the host backend protocol.

The market model decides *when* an instance exists, pauses, is preempted or
goes away; a host backend makes that real (or pretends to). The placeholder
backend (`placeholder`) hands out addresses nobody listens on, which is all
the market and provisioner tests need; `namespace` (root) and `local` (no root)
provide real SSH hosts for end-to-end runs, with what they share in `sshd` and
what a namespace host needs from this machine in `vm_image`.

Volumes reach a host when it starts (`create`, `resume`), as the bid's
`VolumeAttachment`s; where a VM sees one is `VolumeAttachment.vm_path`, as on
Mithril: a file share mounted at `/mnt/<volume name>`, a block volume as the
raw device `/dev/disk/by-id/virtio-<volume fid[:36]>`.
"""

import dataclasses
import datetime
import enum
from typing import List, Protocol, Sequence

FILE_SHARE_MOUNT_ROOT = '/mnt'
BLOCK_DEVICE_PREFIX = '/dev/disk/by-id/virtio-'


@dataclasses.dataclass(frozen=True)
class HostAddress:
    """How SkyPilot reaches an instance: `ssh_destination`, `ssh_port` and
    `ssh_user` from outside, `private_ip` between the nodes of one cluster."""

    ssh_destination: str
    private_ip: str
    ssh_port: int = 22
    ssh_user: str = 'ubuntu'


class VolumeInterface(str, enum.Enum):
    """How a volume reaches a VM: a shared file system or a raw block device."""
    BLOCK = 'Block'
    FILE = 'File'


def volume_vm_path(interface: VolumeInterface, name: str, fid: str) -> str:
    """Where a VM sees a volume: `/mnt/<name>` for a file share, the virtio
    disk id (the fid's first 36 characters, as virtio serials are cut) for a
    block volume."""
    if interface == VolumeInterface.FILE:
        return f'{FILE_SHARE_MOUNT_ROOT}/{name}'
    return f'{BLOCK_DEVICE_PREFIX}{fid[:36]}'


@dataclasses.dataclass(frozen=True)
class VolumeAttachment:
    """A volume a host gets at start: what the backend needs to make it real."""

    fid: str
    name: str
    interface: VolumeInterface
    region: str
    capacity_gb: int

    @property
    def vm_path(self) -> str:
        return volume_vm_path(self.interface, self.name, self.fid)


class HostBackend(Protocol):
    """Lifecycle hooks the market calls, synchronously, as instances change."""

    @property
    def api_address(self) -> str:
        """The address the emulator's API listens on so that both this
        machine and the hosts reach it (the hosts' autostop calls the API)."""

    def create(self, instance_fid: str, ssh_public_keys: List[str],
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        """Brings up a host whose authorized keys are `ssh_public_keys`, with
        `volumes` attached."""

    def pause(self, instance_fid: str) -> None:
        """Stops the host; its disk (home directory) is kept."""

    def resume(self, instance_fid: str,
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        """Starts a paused or preempted host again with the same disk and
        `volumes` (the bid's list may have changed while it was down)."""

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        """Writes Mithril's preemption signal file inside the host."""

    def preempt(self, instance_fid: str) -> None:
        """Makes the host unreachable (disk kept), as at the end of the notice."""

    def reach_api_on_loopback(self, api_port: int) -> None:
        """Makes `127.0.0.1:api_port` on each host started from now on lead
        to the emulator's API (`api_address`:`api_port`), so the hosts use
        this machine's loopback URL: plain http carries the API key only to
        loopback. Nothing to do when the hosts share this machine's network."""

    def forward_kube_api(self, instance_fid: str, port: int, api_port: int) -> bool:
        """Makes `port` at the host's own address lead to the emulator's API
        (`api_address`:`api_port`) until the host stops, so a control node's
        kube API answers where its kubeconfig says. False when the backend
        does not: its hosts share this machine's network, where the emulator's
        own URL already answers."""

    def destroy(self, instance_fid: str) -> None:
        """Kills everything the host ran and removes it. Idempotent."""

    def delete_volume(self, volume_fid: str) -> None:
        """Removes a deleted volume's data (no live bid lists it; a host that
        booted with it keeps what it has until it stops). Idempotent."""

    def close(self) -> None:
        """Destroys every host this backend created, and its volumes' data."""
