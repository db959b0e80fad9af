"""CPU VMs: fixed-price machines without accelerators, of the types in the
emulator's own CPU catalog (`CPU_CATALOG`, listed apart from the auctioned
types, as Mithril does), in every region. Creating one launches its one
instance at once, with no bid and no auction, named as the VM; Mithril backs
each with a hidden reservation, whose fid the instance carries. Terminating
one terminates its instance and destroys its host; terminating a terminated
one does nothing.
"""

from decimal import Decimal
from typing import List, Optional, Sequence

from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                NotFound)
from sky_mithril.emulator.market.images import MCC_IMAGE_VERSION_FID
from sky_mithril.emulator.market.instances import Instances
from sky_mithril.emulator.market.records import (CpuVm, Instance, InstanceType,
                                                 LaunchSpecification)
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.state import MarketState, stable_fid
from sky_mithril.emulator.market.storage import Volumes

# name, vCPUs, RAM (GB), dollars per hour.
CPU_CATALOG = (
    ('c2-standard', 4, 16, '0.20'),
    ('c2-highmem', 8, 64, '0.60'),
)


class CpuVms:
    """The CPU catalog; creates and terminates CPU VMs."""

    def __init__(self, state: MarketState, accounts: Accounts,
                 ssh_keys: SshKeys, volumes: Volumes,
                 instances: Instances) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts
        self._ssh_keys = ssh_keys
        self._volumes = volumes
        self._instances = instances
        for name, cpus, ram_gb, price in CPU_CATALOG:
            instance_type = _cpu_instance_type(name, cpus, ram_gb, price)
            self._store.cpu_instance_types[instance_type.fid] = instance_type

    def instance_types(self) -> List[InstanceType]:
        return list(self._store.cpu_instance_types.values())

    def regions(self) -> List[str]:
        """Where CPU VMs run: every region of the market."""
        return self._store.regions()

    def create(self,
               *,
               project: str,
               name: str,
               instance_type: str,
               region: str,
               volumes: Sequence[str] = (),
               ssh_keys: Optional[Sequence[str]] = None,
               image_version: Optional[str] = None) -> Instance:
        """Launches a CPU VM; its instance, booting. Raises InvalidRequest."""
        errors = self._accounts.order_errors(project, name)
        found_type = self._store.cpu_instance_types.get(instance_type)
        if found_type is None:
            errors.append(
                FieldError('instance_type',
                           f'CPU instance type {instance_type} not found'))
        if region not in self.regions():
            errors.append(
                FieldError('region', f'CPU VMs are not available in region '
                           f'{region}'))
        else:
            errors.extend(
                self._volumes.attachable_errors(project, region, volumes))
        errors.extend(
            self._ssh_keys.unknown_key_errors(project, ssh_keys or ()))
        if image_version not in (None, MCC_IMAGE_VERSION_FID):
            errors.append(
                FieldError('image_version',
                           f'Image version {image_version} not found'))
        if errors:
            raise InvalidRequest(errors)
        assert found_type is not None
        vm = CpuVm(fid=self._state.new_fid('res'),
                   name=name,
                   project=project,
                   created_by=self._accounts.user.fid,
                   created_at=self._state.now,
                   instance_type=found_type,
                   region=region,
                   launch_specification=LaunchSpecification(
                       ssh_keys=list(ssh_keys or ()),
                       volumes=list(volumes),
                       image_version=image_version))
        self._store.cpu_vms[vm.fid] = vm
        return self._instances.launch(vm, vm.name,
                                      found_type.hourly_price)

    def terminate(self, instance_fid: str) -> Instance:
        """Terminates the CPU VM whose instance is `instance_fid`; a no-op if
        it is terminated already. NotFound for any other instance."""
        instance = self._store.instances.get(instance_fid)
        vm = (self._store.cpu_vms.get(instance.reservation_fid or '')
              if instance is not None else None)
        if instance is None or vm is None:
            raise NotFound('CPU instance', instance_fid)
        if vm.deactivated_at is None:
            vm.deactivated_at = self._state.now
            self._instances.terminate(vm.instances)
        return instance


def _cpu_instance_type(name: str, cpus: int, ram_gb: int,
                       price: str) -> InstanceType:
    return InstanceType(fid=stable_fid('it', name),
                        name=name,
                        num_cpus=cpus,
                        cpu_type='Emulated Xeon',
                        ram_gb=ram_gb,
                        num_gpus=0,
                        gpu_type='',
                        gpu_memory_gb=0,
                        gpu_socket='',
                        local_storage_gb=100,
                        ib_count=0,
                        bridge_count=0,
                        network_type='Ethernet',
                        hourly_price=Decimal(price))
