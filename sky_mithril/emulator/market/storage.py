"""The project's persistent volumes: file shares (`File`, any number of bids
and hosts at once) and block volumes (`Block`, listed by at most one live
bid, CPU VM or reservation), each in one region, at most `VOLUME_QUOTA_GB`
per project in all.

A bid, a CPU VM or a reservation lists volumes of its own region in
`launch_specification.volumes`; PATCHing a live bid's or reservation's
`volumes` replaces the list. The host backend gets the order's volumes
whenever one of its hosts is created or resumed, so a change reaches hosts
that are up at their next start. A volume listed by a live (not Terminated,
not Ended) bid, CPU VM or reservation cannot be deleted; deleting one also
removes its data from the host backend.
"""

import logging
import re
from typing import Dict, List, Optional, Sequence, Union

from sky_mithril.emulator.hosts import VolumeAttachment, VolumeInterface
from sky_mithril.emulator.market.accounts import VOLUME_QUOTA_GB, Accounts
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                InvalidState, NotFound)
from sky_mithril.emulator.market.records import (Bid, BidStatus, CpuVm,
                                                 InstanceStatus, Order,
                                                 Reservation, Volume)
from sky_mithril.emulator.market.state import MarketState

logger = logging.getLogger('sky.sky_mithril.emulator')

MAX_VOLUME_GB = 16_384
# A volume's name becomes a directory, `/mnt/<name>`, on every VM it reaches.
_BAD_VOLUME_NAME = re.compile(r'[/\s\x00-\x1f\x7f]')


class Volumes:
    """Creates, renames and deletes volumes; says which bids and VMs have one."""

    def __init__(self, state: MarketState, accounts: Accounts) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts

    def list(self, project: str, region: Optional[str] = None) -> List[Volume]:
        """A project's volumes (only `region`'s when given), in creation order."""
        self._accounts.require_project(project)
        return [
            volume for volume in self._store.volumes.values()
            if volume.project == project and
            (region is None or volume.region == region)
        ]

    def get(self, fid: str) -> Volume:
        volume = self._store.volumes.get(fid)
        if volume is None:
            raise NotFound('Volume', fid)
        return volume

    def create(self, *, project: str, name: str, interface: str, region: str,
               size_gb: int) -> Volume:
        """A new, empty volume; raises InvalidRequest (the quota included)."""
        errors: List[FieldError] = []
        project_error = self._accounts.project_error(project)
        if project_error is not None:
            errors.append(project_error)
        if not self._store.has_region(region):
            errors.append(FieldError('region', f'Region {region} not found'))
        kind = None
        try:
            kind = VolumeInterface(interface)
        except ValueError:
            errors.append(
                FieldError('interface',
                           "disk_interface must be 'Block' or 'File'", 'enum'))
        if (not isinstance(size_gb, int) or isinstance(size_gb, bool) or
                not 1 <= size_gb <= MAX_VOLUME_GB):
            errors.append(
                FieldError('size_gb',
                           f'size_gb must be an integer from 1 to '
                           f'{MAX_VOLUME_GB}'))
        else:
            used = self._accounts.storage_used(project)
            if used + size_gb > VOLUME_QUOTA_GB:
                errors.append(
                    FieldError('size_gb',
                               f'Storage quota of {VOLUME_QUOTA_GB} GB '
                               f'exceeded: {used} GB used, {size_gb} GB '
                               'requested'))
        errors.extend(self._name_errors(project, name))
        if errors:
            raise InvalidRequest(errors)
        assert kind is not None
        volume = Volume(fid=self._state.new_fid('vol'),
                        name=name,
                        project=project,
                        region=region,
                        interface=kind,
                        capacity_gb=size_gb,
                        created_at=self._state.now)
        self._store.volumes[volume.fid] = volume
        return volume

    def _name_errors(self,
                     project: str,
                     name: str,
                     renamed: Optional[Volume] = None) -> List[FieldError]:
        """Why `name` cannot name a volume of `project` (`renamed` may keep its own)."""
        if not name.strip():
            return [
                FieldError('name', 'name must not be empty', 'string_too_short')
            ]
        if _BAD_VOLUME_NAME.search(name) or name in ('.', '..'):
            return [
                FieldError('name', f'Volume name {name!r} is not a directory '
                           'name (no "/", spaces or control characters)')
            ]
        if any(v.name == name and v.project == project and v is not renamed
               for v in self._store.volumes.values()):
            return [
                FieldError('name', f'A volume named {name} already exists in '
                           'the project')
            ]
        return []

    def rename(self, fid: str, name: str) -> Volume:
        """A new name; hosts see it at `/mnt/<name>` from their next start."""
        volume = self.get(fid)
        errors = self._name_errors(volume.project, name, volume)
        if errors:
            raise InvalidRequest(errors)
        volume.name = name
        return volume

    def delete(self, fid: str) -> None:
        """Deletes a volume no live bid lists (InvalidState otherwise) and its data."""
        volume = self.get(fid)
        attached = self.bids_listing(volume)
        if attached:
            raise InvalidState(
                f'Volume {fid} ({volume.name}) is attached to bid '
                f'{attached[0].fid} ({attached[0].name}); cancel the bid first.')
        vms = self.cpu_vms_listing(volume)
        if vms:
            raise InvalidState(
                f'Volume {fid} ({volume.name}) is attached to CPU VM '
                f'{vms[0].instances[0].fid} ({vms[0].name}); terminate it '
                'first.')
        reservations = self.reservations_listing(volume)
        if reservations:
            raise InvalidState(
                f'Volume {fid} ({volume.name}) is attached to reservation '
                f'{reservations[0].fid} ({reservations[0].name}); detach it '
                'first.')
        del self._store.volumes[fid]
        try:
            self._state.hosts.delete_volume(fid)
        except Exception:  # pylint: disable=broad-except
            logger.exception('Host backend failed to delete volume %s', fid)

    def bids_listing(self, volume: Volume) -> List[Bid]:
        """The live (not Terminated) bids that list `volume`, in submission order."""
        return [
            bid for bid in self._store.bids.values()
            if bid.status != BidStatus.TERMINATED and
            volume.fid in bid.launch_specification.volumes
        ]

    def cpu_vms_listing(self, volume: Volume) -> List[CpuVm]:
        """The live (not terminated) CPU VMs that list `volume`."""
        return [
            vm for vm in self._store.cpu_vms.values()
            if vm.deactivated_at is None and
            volume.fid in vm.launch_specification.volumes
        ]

    def reservations_listing(self, volume: Volume) -> List[Reservation]:
        """The live (not ended) reservations that list `volume`."""
        return [
            reservation for reservation in self._store.reservations.values()
            if reservation.live and
            volume.fid in reservation.launch_specification.volumes
        ]

    def attachments(self, volume: Volume) -> Dict[str, str]:
        """Instance fid -> where that VM sees `volume`, for the instances of
        the live bids, CPU VMs and reservations that list it."""
        orders: List[Union[Bid, CpuVm, Reservation]] = [
            *self.bids_listing(volume), *self.cpu_vms_listing(volume),
            *self.reservations_listing(volume)
        ]
        return {
            instance.fid: volume.vm_path
            for order in orders
            for instance in order.instances
            if instance.status != InstanceStatus.TERMINATED
        }

    def for_order(self, order: Order) -> List[VolumeAttachment]:
        """What a host backend needs to attach the order's volumes."""
        return [
            self._store.volumes[fid].attachment()
            for fid in order.launch_specification.volumes
        ]

    def attachable_errors(
            self,
            project: str,
            region: str,
            volumes: Sequence[str],
            order: Optional[Union[Bid, Reservation]] = None
    ) -> List[FieldError]:
        """Why `order` (a bid or reservation; a new bid, CPU VM or
        reservation when None) of `project` in `region` cannot list
        `volumes`, one error per refused entry."""
        errors = []
        for index, fid in enumerate(volumes):
            if fid in volumes[:index]:
                message: Optional[str] = f'Volume {fid} is listed more than once'
            else:
                message = self._why_not_attachable(project, region, fid,
                                                   order)
            if message is not None:
                errors.append(FieldError('volumes', message, index=index))
        return errors

    def _why_not_attachable(
            self, project: str, region: str, fid: str,
            order: Optional[Union[Bid, Reservation]]) -> Optional[str]:
        """Why volume `fid` cannot go with `order`: unknown in `project`, in
        another region, or a block volume another live bid or reservation, or
        a CPU VM, lists."""
        volume = self._store.volumes.get(fid)
        if volume is None or volume.project != project:
            return f'Volume {fid} not found in project'
        if volume.region != region:
            return (f'Volume {fid} is in region {volume.region}, not in the '
                    f'bid\'s region {region}')
        if volume.interface == VolumeInterface.BLOCK:
            for other in self.bids_listing(volume):
                if other is not order:
                    return (f'Block volume {fid} is already attached to bid '
                            f'{other.fid} ({other.name}); a block volume '
                            'attaches to one bid at a time')
            vms = self.cpu_vms_listing(volume)
            if vms:
                return (f'Block volume {fid} is already attached to CPU VM '
                        f'{vms[0].instances[0].fid} ({vms[0].name}); a block '
                        'volume attaches to one VM at a time')
            for reservation in self.reservations_listing(volume):
                if reservation is not order:
                    return (f'Block volume {fid} is already attached to '
                            f'reservation {reservation.fid} '
                            f'({reservation.name}); a block volume attaches '
                            'to one order at a time')
        return None
