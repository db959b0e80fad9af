"""A cluster's standby bid, placed during a managed job's preemption notice
(manual-clock emulator): the cluster's bid stays the preempted one until the
standby is promoted; the relaunch after the promotion adopts the standby
without placing a bid; `sky down` cancels both, `sky stop` pauses the old
one and cancels the standby, and a dropped standby leaves the cluster as it
was. A status refresh cancels a standby no recovery prepares any more, and
nothing else, and a launch does the same before it adopts the cluster's
bid. A stopped cluster ends the standby's watch: nothing is promoted over
its paused bid, and the standby is cancelled; a stop racing the standby's
guard pauses whichever bid is the cluster's once the standby is settled."""

import threading
import time
import types
from decimal import Decimal
from typing import Any, Iterator, List, Tuple

import pytest

from sky_mithril.account import connection
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.recovery import records
from sky_mithril.recovery import standby as standby_lib

from tests.helpers.provisioning import (bids_named, launch_on_manual_clock,
                                        provision_config, query)
from tests.helpers.recovery_records import forget_recovery_records

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
BOOT_S = 60.0
PROVIDER = {'project_id': 'proj_emulator'}
# How long, in wall time, a test lets a standby's watch see the cluster
# stopped and end.
WATCH_ENDS_S = 10.0


def advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


def set_price(server: EmulatorServer, price: str) -> None:
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price=price)


def status_of(server: EmulatorServer, fid: str) -> str:
    return next(b['status'] for b in bids_named(server, 'job')
                if b['fid'] == fid)


@pytest.fixture
def notice(manual_clock_emulator: EmulatorServer
           ) -> Iterator[Tuple[EmulatorServer, str, str]]:
    """Cluster `job` ($10/h) in its preemption notice, with a standby at
    $30/h that has won and booted: (emulator, old fid, standby fid)."""
    forget_recovery_records()
    launch_on_manual_clock(manual_clock_emulator, 'job',
                           provision_config(limit='10.00'), CLEARING_S)
    set_price(manual_clock_emulator, '$50.00')
    advance(manual_clock_emulator, CLEARING_S)
    conn = connection.connect()
    old = cluster_bid.live_bid(conn, 'job')
    assert old is not None and old.status == 'Preempting'
    set_price(manual_clock_emulator, '$20.00')
    standby = standby_lib.place_standby(conn, old, Decimal('30.00'), None)
    advance(manual_clock_emulator, CLEARING_S + BOOT_S)
    assert status_of(manual_clock_emulator, standby.bid.fid) == 'Allocated'
    yield manual_clock_emulator, old.fid, standby.bid.fid


def test_the_clusters_bid_is_the_old_one_until_the_standby_is_promoted(
        notice):
    server, old, standby = notice
    conn = connection.connect()
    [old_instance] = next(b for b in bids_named(server, 'job')
                          if b['fid'] == old)['instances']
    assert cluster_bid.live_bid(conn, 'job').fid == old
    assert list(query('job')) == [old_instance['fid']]

    standby_lib.promote_standby(conn, 'job', standby)
    assert status_of(server, old) == 'Terminated'
    assert cluster_bid.live_bid(conn, 'job').fid == standby
    assert records.standby_of('job') is None

    server.control('DELETE', 'stats')
    record = provisioner.run_instances(REGION, 'job', 'job',
                                       provision_config(limit='30.00'))
    [standby_instance] = next(b for b in bids_named(server, 'job')
                              if b['fid'] == standby)['instances']
    assert record.head_instance_id == standby_instance['fid']
    assert record.created_instance_ids == [] == record.resumed_instance_ids
    routes = server.control('GET', 'stats')['by_route']
    assert 'POST /v2/spot/bids' not in routes
    assert 'PATCH /v2/spot/bids/{bid_fid}' not in routes
    assert [b['fid'] for b in bids_named(server, 'job')
            if b['status'] != 'Terminated'] == [standby]


def test_sky_down_in_the_notice_cancels_the_standby_too(notice):
    server, _, _ = notice
    provisioner.terminate_instances('job', PROVIDER)
    assert {b['status'] for b in bids_named(server, 'job')} == {'Terminated'}
    assert records.standby_of('job') is None


def test_sky_stop_in_the_notice_cancels_the_standby(notice):
    server, old, standby = notice
    provisioner.stop_instances('job', PROVIDER)
    assert status_of(server, old) == 'Paused'
    assert status_of(server, standby) == 'Terminated'


def test_a_dropped_standby_leaves_the_cluster_as_it_was(notice):
    server, old, standby = notice
    conn = connection.connect()
    standby_lib.drop_standby(conn, 'job', standby)
    assert status_of(server, standby) == 'Terminated'
    assert status_of(server, old) == 'Preempting'
    assert cluster_bid.live_bid(conn, 'job').fid == old


def test_a_promotion_and_a_drop_never_leave_the_cluster_without_a_bid(
        notice):
    """The standby's guard promotes the standby while the controller's
    recovery drops it: whichever comes second leaves the one live bid."""
    server, old, standby = notice
    conn = connection.connect()
    standby_lib.promote_standby(conn, 'job', standby)
    records.set_standby('job', standby)  # the controller's view
    standby_lib.drop_standby(conn, 'job', standby)
    assert status_of(server, old) == 'Terminated'
    assert status_of(server, standby) == 'Allocated'
    assert records.standby_of('job') is None
    assert cluster_bid.live_bid(conn, 'job').fid == standby


def test_a_dropped_standby_is_never_promoted_over_the_clusters_bid(notice):
    server, old, standby = notice
    conn = connection.connect()
    standby_lib.drop_standby(conn, 'job', standby)
    with pytest.raises(RuntimeError, match='is gone'):
        standby_lib.promote_standby(conn, 'job', standby)
    assert status_of(server, old) == 'Preempting'
    assert cluster_bid.live_bid(conn, 'job').fid == old


def age_the_standby_record(name: str) -> None:
    """Makes the standby's heartbeat older than the bound: no recovery
    prepares it any more (its watch ended, its cancel failed)."""
    standby = records.standby_of(name)
    aged = time.time() - records.STANDBY_STALE_SECONDS - 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, 'time', types.SimpleNamespace(time=lambda: aged))
        records.set_standby(name, standby)


def test_a_status_refresh_cancels_a_standby_no_longer_prepared(notice):
    server, old, standby = notice
    [old_instance] = next(b for b in bids_named(server, 'job')
                          if b['fid'] == old)['instances']
    age_the_standby_record('job')

    assert list(query('job')) == [old_instance['fid']]

    assert status_of(server, standby) == 'Terminated'
    assert status_of(server, old) == 'Preempting'
    assert records.standby_of('job') is None


def test_a_status_refresh_leaves_a_standby_being_prepared(notice):
    server, old, standby = notice
    assert len(query('job')) == 1
    assert status_of(server, standby) == 'Allocated'
    assert status_of(server, old) == 'Preempting'
    assert records.standby_of('job') == standby


def test_a_status_refresh_never_cancels_the_clusters_only_bid(notice):
    server, old, standby = notice
    cluster_bid.cancel_and_confirm(connection.connect(), old)
    age_the_standby_record('job')

    assert len(query('job')) == 1
    assert status_of(server, standby) == 'Allocated'


def billing(server: EmulatorServer) -> List[str]:
    """The bids of `job` that bill or can win a node: live and not paused."""
    return [b['fid'] for b in bids_named(server, 'job')
            if b['status'] in ('Open', 'Allocated', 'Preempting')]


def test_a_relaunch_does_not_adopt_the_clusters_bid_beside_a_stale_standby(
        notice, caplog):
    """A relaunch onto the cluster (SkyPilot's FAILOVER recovery) while a
    standby no recovery prepares any more is still live: the standby is
    cancelled, named, before the cluster's bid is adopted."""
    server, old, standby = notice
    age_the_standby_record('job')
    caplog.set_level('WARNING')

    held = cluster_bid.ClusterBid.acquire(connection.connect(), REGION, 'job',
                                          provision_config(limit='10.00'))

    assert (held.outcome, held.bid.fid) == (cluster_bid.Outcome.ADOPTED, old)
    assert status_of(server, standby) == 'Terminated'
    assert billing(server) == [old]
    assert f'Cancelled bid {standby}: a standby of \'job\'' in caplog.text
    assert records.standby_of('job') is None


@pytest.mark.parametrize('stop', ['sky stop', 'paused elsewhere'])
def test_a_stopped_cluster_ends_the_watch_with_nothing_promoted(
        notice, monkeypatch, stop):
    """`sky stop` in the notice while the jobs controller watches the
    standby (or the old bid paused by other means, the standby left live):
    the watch ends, the paused bid stays the cluster's and the standby is
    cancelled, so nothing bills."""
    server, old, standby = notice
    monkeypatch.setattr(standby_lib.StandbyWatch, 'POLL_SECONDS', 0.05)
    conn = connection.connect()
    with standby_lib.StandbyWatch(conn, 'job', old, standby,
                                  threading.Event()) as watch:
        if stop == 'sky stop':
            provisioner.stop_instances('job', PROVIDER)
        else:
            conn.client.update_bid(old, paused=True)
        watch.join(WATCH_ENDS_S)
        ended = not watch.is_alive()

    assert status_of(server, old) == 'Paused'
    assert ended, 'the watch went on after the cluster was stopped'
    assert status_of(server, standby) == 'Terminated'
    assert billing(server) == []
    assert records.standby_of('job') is None


def test_sky_stop_racing_the_guards_promotion_pauses_the_standby(
        notice, monkeypatch):
    """The notice is over (the old bid Open again). `sky stop` has found the
    old bid to be the cluster's and is about to drop the standby when the
    standby's guard promotes it (the old bid cancelled): the stop pauses
    the standby, now the cluster's bid, and nothing bills."""
    server, old, standby = notice
    advance(server, server.market.preemption_notice_s)
    assert status_of(server, old) == 'Open'
    drop = standby_lib.drop_standby
    guard: List[bool] = []

    def the_guard_then_the_drop(conn: Any, name: str, fid: str) -> None:
        guard.append(standby_lib.promote_standby(
            connection.connect(), name, standby, replacing=old))
        drop(conn, name, fid)

    monkeypatch.setattr(standby_lib, 'drop_standby', the_guard_then_the_drop)
    provisioner.stop_instances('job', PROVIDER)

    assert guard == [True]
    assert status_of(server, old) == 'Terminated'
    assert status_of(server, standby) == 'Paused'
    assert billing(server) == []
    assert records.standby_of('job') is None


def test_the_guard_does_not_promote_over_a_bid_whose_state_changed(notice):
    """The guard saw the old bid's notice over, but under the lock the old
    bid is in a notice again (or paused, or gone): nothing is done."""
    server, old, standby = notice
    conn = connection.connect()
    assert not standby_lib.promote_standby(conn, 'job', standby,
                                           replacing=old)  # still Preempting
    assert status_of(server, old) == 'Preempting'
    assert status_of(server, standby) == 'Allocated'
    assert records.standby_of('job') == standby


def test_a_standby_never_replaces_a_stopped_clusters_bid(notice):
    server, old, standby = notice
    conn = connection.connect()
    conn.client.update_bid(old, paused=True)

    with pytest.raises(RuntimeError, match=f'{old}.* paused'):
        standby_lib.promote_standby(conn, 'job', standby)

    assert status_of(server, old) == 'Paused'
    assert records.standby_of('job') == standby
