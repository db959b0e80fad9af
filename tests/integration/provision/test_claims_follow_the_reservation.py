"""A cluster's claims on reserved instances last until they are released
or their cluster is gone, wherever the reservation's end moves and however
long nobody refreshes the cluster: a reservation extended after the claim
keeps its cluster on it (UP, its instances never free for another launch)
past the end it had when the instances were claimed. Claims of an ended
reservation whose cluster is gone are pruned."""

import datetime
import time
import types
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market

from sky import global_user_state
from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer, load_catalog
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes

from tests.helpers.provisioning import bids_named
from tests.helpers.provisioning import point_plugin_at
from tests.helpers.reservations import launch_on_reservation, reserve

PROVIDER = {'project_id': 'proj_emulator'}
UP = status_lib.ClusterStatus.UP
DAY = datetime.timedelta(days=1)


@pytest.fixture
def market_on_this_clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                         ) -> Iterator[EmulatorServer]:
    """A manual-clock emulator that starts at this machine's now, as
    Mithril's clock and the API server's agree."""
    start = datetime.datetime.now(datetime.timezone.utc)
    market = Market(ManualClock(start), PlaceholderHosts(), load_catalog())
    with EmulatorServer(market) as server:
        point_plugin_at(server, monkeypatch, tmp_path)
        yield server


def _skypilot_knows(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """SkyPilot's database holds a record of exactly the clusters `names`."""
    monkeypatch.setattr(global_user_state, 'get_cluster_from_name',
                        lambda name: {'name': name} if name in names else None)


@pytest.fixture
def on_reservation(market_on_this_clock: EmulatorServer
                   ) -> Iterator[Tuple[EmulatorServer, models.Reservation]]:
    """Cluster `held` on the only instance of a 3-hour reservation, up."""
    server = market_on_this_clock
    reservation = reserve(server, 'long-res')
    server.control('POST', 'advance', seconds=120)
    record = launch_on_reservation('held', reservation.name)
    assert record.created_instance_ids == reservation.instances
    try:
        yield server, reservation
    finally:
        reservation_claims.release(reservation_claims.of_cluster('held'))


def _later(monkeypatch: pytest.MonkeyPatch, by: datetime.timedelta) -> None:
    """This machine's clock, as SkyPilot's database (whose entries expire
    by it) and the claims read it, reads `by` past now, as the market's
    clock does."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    later = types.SimpleNamespace(time=lambda: time.time() + by.total_seconds())
    monkeypatch.setattr(kv_cache, 'time', later)
    monkeypatch.setattr(reservation_claims, 'time', later)


def test_claims_outlive_the_original_end_of_an_extended_reservation(
        on_reservation, monkeypatch) -> None:
    server, reservation = on_reservation
    conn = connection.connect()
    # The team extends the reservation by three days (the console, or
    # `sky-mithril reservations extend`); the cluster runs on.
    conn.client.extend_reservation(reservation.fid,
                                   reservation.end_time + 3 * DAY)
    # The status daemon refreshes the cluster every few minutes meanwhile.
    for days in (1, 2):
        server.control('POST', 'advance', seconds=DAY.total_seconds())
        _later(monkeypatch, days * DAY)
        assert provisioner.query_instances('held', 'held', PROVIDER) == {
            reservation.instances[0]: (UP, None)}
    # Past the end the instance was claimed under, plus a day: the cluster
    # still runs on it and holds it.
    [instance] = conn.client.list_instances(
        conn.project_id, reservation_fids=[reservation.fid])
    assert instance.status == models.InstanceState.RUNNING
    assert [c.instance_fid for c in reservation_claims.of_cluster('held')
            ] == reservation.instances
    # The instance stays the cluster's: no other launch may claim it.
    assert set(reservation_claims.on(reservation.fid)) == set(
        reservation.instances)
    assert bids_named(server, 'held') == []


def test_a_cluster_nobody_refreshes_keeps_its_instances_past_the_old_end(
        on_reservation, monkeypatch) -> None:
    """A cluster left UP without autostop (or STOPPED), which no status
    refresh reads, on a reservation extended by three days: two days on,
    past the end its instance was claimed under plus a day, the instance is
    still its own, and no other launch may take it with its disk."""
    server, reservation = on_reservation
    _skypilot_knows(monkeypatch, 'held')
    conn = connection.connect()
    conn.client.extend_reservation(reservation.fid,
                                   reservation.end_time + 3 * DAY)
    server.control('POST', 'advance', seconds=2 * DAY.total_seconds())
    _later(monkeypatch, 2 * DAY)
    assert [c.instance_fid for c in reservation_claims.of_cluster('held')
            ] == reservation.instances
    [extended] = [r for r in conn.client.list_reservations(conn.project_id)
                  if r.fid == reservation.fid]
    assert reserved_nodes.free_instances(conn, extended) == []


def test_claims_of_an_ended_reservation_are_pruned_once_their_cluster_is_gone(
        market_on_this_clock, monkeypatch) -> None:
    """Two clusters on a reservation that ends: SkyPilot still knows one
    (nobody refreshed it), the other is gone. A later launch on another
    reservation prunes the gone cluster's claim, and only that one."""
    server = market_on_this_clock
    ended = reserve(server, 'ending-res', quantity=2)
    server.control('POST', 'advance', seconds=120)
    for name in ('kept', 'left'):
        launch_on_reservation(name, ended.name)
    _skypilot_knows(monkeypatch, 'kept')
    server.control('POST', 'advance', seconds=4 * 3600)
    _later(monkeypatch, datetime.timedelta(hours=4))
    fresh = reserve(server, 'next-res')
    server.control('POST', 'advance', seconds=120)
    try:
        launch_on_reservation('next', fresh.name)
        assert reservation_claims.of_cluster('left') == []
        assert len(reservation_claims.of_cluster('kept')) == 1
        assert set(reservation_claims.on(ended.fid)) == {
            c.instance_fid for c in reservation_claims.of_cluster('kept')}
    finally:
        for name in ('kept', 'left', 'next'):
            reservation_claims.release(reservation_claims.of_cluster(name))


def test_a_launch_goes_on_when_pruning_fails(market_on_this_clock,
                                             monkeypatch) -> None:
    """Pruning is housekeeping: its failure (the database's lock busy) is
    reported and the launch claims its instances all the same."""
    server = market_on_this_clock
    reservation = reserve(server, 'busy-res')
    server.control('POST', 'advance', seconds=120)

    def busy() -> None:
        raise TimeoutError('lock busy')

    monkeypatch.setattr(reservation_claims, 'prune_ended', busy)
    try:
        record = launch_on_reservation('busy', reservation.name)
        assert record.created_instance_ids == reservation.instances
    finally:
        reservation_claims.release(reservation_claims.of_cluster('busy'))
