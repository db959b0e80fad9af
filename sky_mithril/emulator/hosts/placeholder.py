"""Hosts that are only addresses: what the market and provisioner tests need."""

import datetime
from typing import Dict, List, Sequence

from sky_mithril.emulator.hosts import HostAddress, VolumeAttachment


class PlaceholderHosts:
    """Loopback addresses nobody listens on, so a stray connection never leaves
    the machine; each host created gets an address no other host had."""

    api_address = '127.0.0.1'

    def __init__(self) -> None:
        self._addresses: Dict[str, HostAddress] = {}
        self._created = 0

    def create(self, instance_fid: str, ssh_public_keys: List[str],
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        del ssh_public_keys, volumes
        self._created += 1
        index = self._created
        address = HostAddress(
            ssh_destination=f'127.77.{index // 254}.{index % 254 + 1}',
            private_ip=f'127.78.{index // 254}.{index % 254 + 1}')
        self._addresses[instance_fid] = address
        return address

    def pause(self, instance_fid: str) -> None:
        del instance_fid

    def resume(self, instance_fid: str,
               volumes: Sequence[VolumeAttachment] = ()) -> HostAddress:
        del volumes
        return self._addresses[instance_fid]

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        del instance_fid, bid_status, end_time

    def preempt(self, instance_fid: str) -> None:
        del instance_fid

    def reach_api_on_loopback(self, api_port: int) -> None:
        """Nothing to forward: a placeholder host calls no API."""
        del api_port

    def forward_kube_api(self, instance_fid: str, port: int, api_port: int) -> bool:
        """Nothing to forward: nobody connects to a placeholder host."""
        del instance_fid, port, api_port
        return False

    def destroy(self, instance_fid: str) -> None:
        self._addresses.pop(instance_fid, None)

    def delete_volume(self, volume_fid: str) -> None:
        """No data to remove: a placeholder host attaches nothing."""
        del volume_fid

    def close(self) -> None:
        self._addresses.clear()
