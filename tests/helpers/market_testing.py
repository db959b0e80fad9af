"""What the market's unit tests share: a two-region catalog of one instance
type, host backend hooks recorded in order, and a bid placed (or a CPU VM
launched, or a reservation made) in one line."""

import datetime
from typing import Dict, List, Optional, Sequence, Tuple, Union

from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import (PROJECT_FID, Bid, BidEventType,
                                         Instance, InstanceStatus, Market,
                                         Reservation)

TYPE = 'gpu.sxm.1x'
REGION = 'region-a'
OTHER_REGION = 'region-b'
CLEARING_S = 120.0
NOTICE_S = 300.0
BOOT_S = 60.0
PUBLIC_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorTestKey test'


def _row(name: str, region: str, spot: str, floor: str) -> Dict[str, str]:
    return {
        'InstanceType': name, 'AcceleratorName': 'H100',
        'AcceleratorCount': '1', 'vCPUs': '20', 'MemoryGiB': '200',
        'Price': floor, 'SpotPrice': spot, 'Region': region,
        'GpuInfo': "{'Gpus': [{'Name': 'H100', 'Count': 1, "
                   "'MemoryInfo': {'SizeInMiB': 81920}}]}",
    }


CATALOG = [_row(TYPE, REGION, '1.00', '0.50'),
           _row(TYPE, OTHER_REGION, '2.00', '0.50')]


class RecordingHosts(PlaceholderHosts):
    """Placeholder hosts that remember every hook call, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[str, str]] = []
        self.created_keys: Dict[str, List[str]] = {}
        self.preemption_end_times: Dict[str, datetime.datetime] = {}
        self.fail_create = False

    def create(self, instance_fid: str, ssh_public_keys: List[str]) -> HostAddress:
        self.calls.append(('create', instance_fid))
        if self.fail_create:
            raise RuntimeError('no host for you')
        self.created_keys[instance_fid] = list(ssh_public_keys)
        return super().create(instance_fid, ssh_public_keys)

    def pause(self, instance_fid: str) -> None:
        self.calls.append(('pause', instance_fid))

    def resume(self, instance_fid: str) -> HostAddress:
        self.calls.append(('resume', instance_fid))
        return super().resume(instance_fid)

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        assert bid_status == 'Preempting'
        self.calls.append(('notify_preemption', instance_fid))
        self.preemption_end_times[instance_fid] = end_time

    def preempt(self, instance_fid: str) -> None:
        self.calls.append(('preempt', instance_fid))

    def destroy(self, instance_fid: str) -> None:
        self.calls.append(('destroy', instance_fid))
        super().destroy(instance_fid)

    def hooks_for(self, instance_fid: str) -> List[str]:
        return [hook for hook, fid in self.calls if fid == instance_fid]


def type_fid(market: Market) -> str:
    return market.auctions.get(TYPE, REGION).instance_type.fid


def place_bid(market: Market, limit: str = '$5.00', quantity: int = 1,
              name: str = 'job', region: str = REGION,
              ssh_keys: Optional[List[str]] = None) -> Bid:
    return market.bids.create(project=PROJECT_FID,
                              region=region,
                              instance_type=type_fid(market),
                              limit_price=limit,
                              instance_quantity=quantity,
                              name=name,
                              ssh_keys=ssh_keys or [])


def launch_cpu_vm(market: Market, name: str = 'vm', region: str = REGION,
                  ssh_keys: Optional[List[str]] = None,
                  volumes: Sequence[str] = ()) -> Instance:
    """A CPU VM of the catalog's first CPU type; its instance."""
    return market.cpu_vms.create(
        project=PROJECT_FID, name=name,
        instance_type=market.cpu_vms.instance_types()[0].fid, region=region,
        ssh_keys=ssh_keys, volumes=volumes)


def reserve(market: Market, *, hours: int = 3, start_in_s: float = 0.0,
            quantity: int = 1, name: str = 'reserved',
            ssh_keys: Sequence[str] = (),
            max_unit_price: Optional[int] = None) -> Reservation:
    """A reservation of the catalog's type in REGION, starting `start_in_s`
    from now, for `hours`."""
    start = market.now + datetime.timedelta(seconds=start_in_s)
    return market.reservations.create(
        project=PROJECT_FID, instance_type=type_fid(market), region=REGION,
        start_time=start, end_time=start + datetime.timedelta(hours=hours),
        instance_quantity=quantity, name=name, ssh_keys=ssh_keys,
        max_unit_price=max_unit_price)


def instance_statuses(order: Union[Bid, Reservation]) -> List[InstanceStatus]:
    return [instance.status for instance in order.instances]


def event_types(bid: Bid) -> List[BidEventType]:
    return [event.event_type for event in bid.events]
