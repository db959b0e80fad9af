"""The status truth table, row by row, against the emulator's manual_emulator with a
manual clock: each test drives the manual_emulator to a (bid, instance) state and reads
what `sky status` would read through `query_instances`."""

from decimal import Decimal
from typing import List, Optional, Tuple


from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import status_table

from tests.helpers.provisioning import query

INIT = status_lib.ClusterStatus.INIT
UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED
TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
BOOT_S = 60.0  # the default boot sequence takes 60 emulated seconds


def place(name: str, count: int = 1, limit: str = '32.00') -> models.Bid:
    conn = connection.connect()
    return conn.client.create_bid(models.CreateBidRequest(
        project=conn.project_id, region=REGION,
        instance_type=cluster_bid.instance_type_fid(conn, TYPE, REGION),
        limit_price=Decimal(limit), instance_quantity=count, name=name,
        launch_specification=models.LaunchSpecification(ssh_keys=[],
                                                        volumes=[])))


def advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


def set_price(server: EmulatorServer, price: str) -> None:
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price=price)


def readings(name: str) -> List[Tuple[Optional[status_lib.ClusterStatus], str]]:
    return [(status, reason or '') for status, reason in query(name).values()]


def test_the_table_covers_every_documented_pair_and_bills_honestly():
    for bid_status in status_table.BID_STATES:
        for instance_status in status_table.INSTANCE_STATES:
            reading = status_table.TRUTH_TABLE[(bid_status, instance_status)]
            if reading.status == STOPPED:
                assert bid_status == models.BidState.PAUSED
            if reading.status is None:
                assert bid_status == models.BidState.TERMINATED
    preempted = status_table.TRUTH_TABLE[(models.BidState.OPEN,
                                          models.InstanceState.PREEMPTED)]
    assert preempted.status == INIT
    assert 'sky stop' in preempted.reason and 'sky down' in preempted.reason


def test_open_bid_without_instances_reads_init_once_per_node(manual_clock_emulator):
    set_price(manual_clock_emulator, '$50.00')
    bid = place('waiting', count=2, limit='10.00')
    advance(manual_clock_emulator, CLEARING_S)
    got = query('waiting')
    assert list(got) == [f'{bid.fid}-node-0', f'{bid.fid}-node-1']
    for status, reason in got.values():
        assert status == INIT
        assert 'waiting for the auction' in reason and '$10.00/h' in reason


def test_allocated_bid_reads_init_while_booting_then_up(manual_clock_emulator):
    place('booting')
    advance(manual_clock_emulator, CLEARING_S)
    [(status, reason)] = readings('booting')
    assert status == INIT and 'booting (STATUS_' in reason
    advance(manual_clock_emulator, BOOT_S)
    assert readings('booting') == [(UP, '')]


def test_preemption_notice_keeps_up_then_open_bid_reads_init_not_stopped(manual_clock_emulator):
    place('preempted', limit='10.00')
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    set_price(manual_clock_emulator, '$50.00')
    advance(manual_clock_emulator, CLEARING_S)
    [(status, reason)] = readings('preempted')
    assert status == UP and 'preemption notice' in reason
    advance(manual_clock_emulator, 301)
    [(status, reason)] = readings('preempted')
    assert status == INIT
    assert 'Open again' in reason and 'at or below your limit $10.00/h' in reason
    assert '`sky stop` pauses the bid' in reason
    # Mithril brings it back by itself once the price falls: it was never gone.
    set_price(manual_clock_emulator, '$5.00')
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    assert readings('preempted') == [(UP, '')]


def test_stop_on_a_preempted_open_bid_pauses_it(manual_clock_emulator):
    place('stoppable', limit='10.00')
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    set_price(manual_clock_emulator, '$50.00')
    advance(manual_clock_emulator, CLEARING_S + 301)
    provisioner.stop_instances('stoppable', {'project_id': 'proj_emulator'})
    [(status, reason)] = readings('stoppable')
    assert status == STOPPED and 'is paused' in reason
    set_price(manual_clock_emulator, '$5.00')
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    assert [s for s, _ in readings('stoppable')] == [STOPPED]


def test_paused_bid_that_never_won_reads_stopped_for_every_node(manual_clock_emulator):
    set_price(manual_clock_emulator, '$50.00')
    place('never-won', count=2, limit='10.00')
    provisioner.stop_instances('never-won', {'project_id': 'proj_emulator'})
    got = readings('never-won')
    assert [s for s, _ in got] == [STOPPED, STOPPED]


def test_pausing_reads_stopped_only_once_the_bid_is_paused(manual_clock_emulator):
    place('pausing')
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    provisioner.stop_instances('pausing', {'project_id': 'proj_emulator'})
    [(status, reason)] = readings('pausing')
    assert status == STOPPED and 'STATUS_STOPPING' in reason
    advance(manual_clock_emulator, 10)
    [(status, reason)] = readings('pausing')
    assert status == STOPPED and 'STATUS_PAUSED' in reason


def test_terminated_bid_reads_gone(manual_clock_emulator):
    place('cancelled')
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    provisioner.terminate_instances('cancelled', {'project_id': 'proj_emulator'})
    assert query('cancelled') == {}
    assert query('cancelled', non_terminated_only=False) == {}
