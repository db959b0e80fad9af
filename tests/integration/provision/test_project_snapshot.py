"""The project snapshot behind status refreshes (`project_snapshot`), against
the emulator on a manual clock: a refresh of N clusters costs one snapshot's
few requests, two processes share one per TTL, a change the plugin makes is
read right after it, and one made elsewhere (a preemption) within the TTL;
CPU VM clusters are read from the same snapshot."""

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Dict, List

import pytest

from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import cpu_vm
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import project_snapshot

from tests.helpers.provisioning import (launch_on_manual_clock,
                                        provision_config, query)

UP = status_lib.ClusterStatus.UP
TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
BOOT_S = 60.0
REPO = Path(__file__).resolve().parents[3]
SNAPSHOT_ROUTES = ('GET /v2/spot/bids', 'GET /v2/instances',
                   'GET /v2/reservation')
CPU_VM_PROVIDER = {'project_id': 'proj_emulator', cpu_vm.PROVIDER_KEY: 'true'}


def place(name: str, limit: str = '32.00') -> models.Bid:
    """A 1-node bid placed straight on the API (not through the plugin)."""
    conn = connection.connect()
    return conn.client.create_bid(models.CreateBidRequest(
        project=conn.project_id, region=REGION,
        instance_type=cluster_bid.instance_type_fid(conn, TYPE, REGION),
        limit_price=Decimal(limit), instance_quantity=1, name=name,
        launch_specification=models.LaunchSpecification(ssh_keys=[],
                                                        volumes=[])))


def advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


def requests_by_route(server: EmulatorServer) -> Dict[str, int]:
    return server.control('GET', 'stats')['by_route']


def up_clusters(server: EmulatorServer, count: int) -> List[str]:
    names = [f'c{n}' for n in range(count)]
    for name in names:
        place(name)
    advance(server, CLEARING_S + BOOT_S)
    return names


@pytest.fixture
def snapshot_clock(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """The snapshot's clock, apart from the market's: `clock[0]` is now."""
    clock = [1_000_000.0]
    monkeypatch.setattr(project_snapshot, 'now', lambda: clock[0])
    return clock


def test_a_refresh_costs_one_snapshot_whatever_the_number_of_clusters(
        manual_clock_emulator, snapshot_clock):
    names = up_clusters(manual_clock_emulator, 12)
    cost = {}
    for count in (1, 12):
        snapshot_clock[0] += project_snapshot.TTL_SECONDS + 1
        manual_clock_emulator.control('DELETE', 'stats')
        for name in names[:count]:
            assert len(query(name)) == 1
        cost[count] = requests_by_route(manual_clock_emulator)
    assert cost[1] == cost[12]
    # One list per live bid state, one of the live instances, and the
    # reservations only while some cluster (of any test) holds reserved
    # instances; nothing else.
    assert cost[12]['GET /v2/spot/bids'] == len(
        project_snapshot.LIVE_BID_STATES)
    assert cost[12]['GET /v2/instances'] == 1
    assert set(cost[12]) <= set(SNAPSHOT_ROUTES)
    assert sum(cost[12].values()) <= 6


def test_two_processes_share_one_snapshot_per_ttl(manual_clock_emulator):
    names = up_clusters(manual_clock_emulator, 3)
    start = manual_clock_emulator.market.clock.now().timestamp()
    manual_clock_emulator.control('DELETE', 'stats')

    def two_refreshes(now: float) -> None:
        spec = json.dumps({'names': names, 'now': now})
        children = [subprocess.Popen(
            [sys.executable, '-m', 'tests.helpers.status_child', spec],
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
            cwd=str(REPO)) for _ in range(2)]
        for child in children:
            out, _ = child.communicate(timeout=120)
            assert child.returncode == 0 and out.strip() == str(len(names))

    two_refreshes(start)
    two_refreshes(start + project_snapshot.TTL_SECONDS / 2)
    one_snapshot = requests_by_route(manual_clock_emulator)
    assert one_snapshot['GET /v2/spot/bids'] == len(
        project_snapshot.LIVE_BID_STATES)
    assert one_snapshot['GET /v2/instances'] == 1
    two_refreshes(start + project_snapshot.TTL_SECONDS + 1)
    two_snapshots = requests_by_route(manual_clock_emulator)
    assert two_snapshots == {route: 2 * n
                             for route, n in one_snapshot.items()}


def test_a_refresh_after_down_never_reads_the_cluster_up(manual_clock_emulator,
                                                         snapshot_clock):
    [name] = up_clusters(manual_clock_emulator, 1)
    assert [s for s, _ in query(name).values()] == [UP]
    provisioner.terminate_instances(name, {'project_id': 'proj_emulator'})
    assert query(name) == {}


def test_a_snapshot_taken_before_a_down_and_stored_after_it_is_not_read(
        manual_clock_emulator, snapshot_clock, monkeypatch):
    """A refresh in another process lists the project, `sky down` cancels the
    bid, then that refresh stores what it listed: its answer is its own, the
    next refresh reads the cluster gone."""
    [name] = up_clusters(manual_clock_emulator, 1)
    take = project_snapshot.take

    def take_then_down(conn, generation):
        snapshot = take(conn, generation)
        provisioner.terminate_instances(name, {'project_id': 'proj_emulator'})
        return snapshot

    with monkeypatch.context() as patch:
        patch.setattr(project_snapshot, 'take', take_then_down)
        assert [s for s, _ in query(name).values()] == [UP]
    assert query(name) == {}


def test_a_refresh_after_a_launch_reads_the_cluster(manual_clock_emulator,
                                                    snapshot_clock):
    [other] = up_clusters(manual_clock_emulator, 1)
    assert query(other)
    assert query('new') == {}
    launch_on_manual_clock(manual_clock_emulator, 'new', provision_config())
    assert [s for s, _ in query('new').values()] == [UP]


def test_a_cluster_missing_from_the_snapshot_is_read_live(
        manual_clock_emulator, snapshot_clock):
    """A bid placed where the plugin cannot mark the snapshot stale (by a
    node, or in the console) is never read gone from a snapshot that
    predates it: gone is always confirmed by Mithril."""
    [other] = up_clusters(manual_clock_emulator, 1)
    assert query(other)
    place('elsewhere')
    assert len(query('elsewhere')) == 1


def test_a_preemption_shows_within_the_ttl(manual_clock_emulator,
                                           snapshot_clock):
    [name] = up_clusters(manual_clock_emulator, 1)
    assert list(query(name).values()) == [(UP, None)]
    manual_clock_emulator.control('POST', 'price', instance_type=TYPE,
                                  region=REGION, price='$50.00')
    advance(manual_clock_emulator, CLEARING_S)
    # The snapshot is younger than the TTL: the market as it was.
    assert [r for _, r in query(name).values()] == [None]
    snapshot_clock[0] += project_snapshot.TTL_SECONDS + 0.001
    [(status, reason)] = query(name).values()
    assert status == UP and 'preemption notice' in reason


def test_the_snapshot_costs_a_request_per_page_of_the_project(
        manual_clock_emulator, snapshot_clock):
    """The price of one list for all clusters: a project with 1,000 other
    live instances (not SkyPilot's) costs a request per page of 100 of its
    live bids and instances, once for every query within the TTL."""
    [name] = up_clusters(manual_clock_emulator, 1)
    manual_clock_emulator.control('POST', 'filler', count=1000)
    manual_clock_emulator.control('DELETE', 'stats')
    assert query(name) == query(name)
    cost = requests_by_route(manual_clock_emulator)
    pages = -(-1001 // 100)
    assert cost['GET /v2/spot/bids'] == (
        len(project_snapshot.LIVE_BID_STATES) - 1 + pages)
    assert cost['GET /v2/instances'] == pages


def create_cpu_vm(name: str) -> models.Instance:
    """A CPU VM created straight on the API (not through the plugin)."""
    conn = connection.connect()
    [cpu_type] = [t for t in conn.client.list_cpu_instance_types()
                  if t.name == 'c2-standard']
    return conn.client.create_cpu_instance(models.CreateCpuInstanceRequest(
        project=conn.project_id, name=name, instance_type=cpu_type.fid,
        region=REGION))


def query_cpu_vm(name: str):
    return provisioner.query_instances(name, name, CPU_VM_PROVIDER)


def test_cpu_vm_clusters_cost_no_request_beyond_the_snapshot(
        manual_clock_emulator, snapshot_clock):
    """CPU VMs list among the project's instances (order type Reservation,
    with their hidden reservation's fid): a refresh of bid and CPU VM
    clusters together costs the one snapshot's requests."""
    bid_names = up_clusters(manual_clock_emulator, 2)
    vm_names = ['vm0', 'vm1', 'vm2']
    for name in vm_names:
        create_cpu_vm(name)
    advance(manual_clock_emulator, BOOT_S)
    snapshot_clock[0] += project_snapshot.TTL_SECONDS + 1
    manual_clock_emulator.control('DELETE', 'stats')
    for name in bid_names:
        assert [s for s, _ in query(name).values()] == [UP]
    for name in vm_names:
        assert [s for s, _ in query_cpu_vm(name).values()] == [UP]
    cost = requests_by_route(manual_clock_emulator)
    assert cost['GET /v2/spot/bids'] == len(project_snapshot.LIVE_BID_STATES)
    assert cost['GET /v2/instances'] == 1
    assert set(cost) <= set(SNAPSHOT_ROUTES)


def test_a_cpu_vm_is_read_gone_only_by_mithril(manual_clock_emulator,
                                               snapshot_clock):
    """A VM created where the plugin cannot mark the snapshot stale is read
    live when the snapshot predates it; one deleted outside the plugin reads
    as the snapshot shows it until the TTL, then gone."""
    [other] = up_clusters(manual_clock_emulator, 1)
    assert query(other)
    vm = create_cpu_vm('late')
    assert list(query_cpu_vm('late')) == [vm.fid]
    snapshot_clock[0] += project_snapshot.TTL_SECONDS + 1
    assert list(query_cpu_vm('late')) == [vm.fid]
    connection.connect().client.terminate_cpu_instance(vm.fid)
    assert list(query_cpu_vm('late')) == [vm.fid]
    snapshot_clock[0] += project_snapshot.TTL_SECONDS + 1
    assert query_cpu_vm('late') == {}
