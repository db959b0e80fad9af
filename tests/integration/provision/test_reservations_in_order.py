"""A task naming several reservations (`config.mithril.reservation: [a, b]`),
through the launch's deploy step and then the provisioner, against the
emulator: the cluster goes on the first reservation it fits on whole now
(Active, room for every node, not ending within the lead), stays on one it
already holds, is never split across two, and bursts to one spot bid,
saying why for each, when none fits."""

import datetime
from typing import Iterator, List

import pytest
import sky

from sky_mithril import cloud
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims

from tests.helpers.provisioning import bids_named, forget_earlier_jobs
from tests.helpers.reservations import (deploy, launch_as_deployed,
                                        launch_on_reservation, market_read,
                                        reserve)
from tests.integration.plugin.test_jobs_reservation_end import (
    while_the_clock_moves)

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
PROVIDER = {'project_id': 'proj_emulator'}
BOTH = {'reservation': ['res-a', 'res-b']}


@pytest.fixture
def market(fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[EmulatorServer]:
    """The fast emulator, its market read as the API server reads it, no
    lead or move kept from an earlier test's job of the same name; the
    test's clusters dropped after it."""
    forget_earlier_jobs()
    with market_read(monkeypatch):
        try:
            yield fast_emulator
        finally:
            drop_clusters('job', 'other')


def drop_clusters(*clusters: str) -> None:
    """Releases the clusters' claims and cancels their bids."""
    for cluster in clusters:
        reservation_claims.release(reservation_claims.of_cluster(cluster))
        cluster_bid.cancel_all(connection.connect(), cluster)


def running(reservation: models.Reservation) -> models.Reservation:
    """The reservation, once its instances run."""
    conn = connection.connect()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    while datetime.datetime.now() < deadline:
        instances = conn.client.list_instances(
            conn.project_id, reservation_fids=[reservation.fid])
        if instances and all(i.status == models.InstanceState.RUNNING
                             for i in instances):
            return reservation
    raise AssertionError(f'{reservation.name}\'s instances never ran')


def claimed(cluster: str) -> List[str]:
    """The reservations of the instances the cluster holds, one per node."""
    return [c.reservation_fid for c in reservation_claims.of_cluster(cluster)]


def counted_free(mithril: dict) -> dict:
    """The reservation and free instances the optimizer counts for one node
    of TYPE in REGION (`get_reservations_available_resources`)."""
    [ranked] = cloud.Mithril().get_feasible_launchable_resources(
        sky.Resources(cloud=cloud.Mithril(), instance_type=TYPE, region=REGION,
                      _cluster_config_overrides={'mithril': mithril}),
        1).resources_list
    return ranked.cloud.get_reservations_available_resources(
        TYPE, REGION, None, set())


def test_a_full_first_reservation_sends_the_cluster_onto_the_second(
        market, caplog):
    first = running(reserve(market, 'res-a', hours=48))
    second = running(reserve(market, 'res-b', hours=48))
    launch_on_reservation('other', first.name)
    caplog.set_level('INFO')

    assert counted_free(BOTH) == {'res-b': 1}
    variables = deploy('job', BOTH)
    record = launch_as_deployed('job', variables)

    assert variables['mithril_reservation'] == second.fid
    assert f'Mithril reservation res-b ({second.fid}): 1× {TYPE}' in caplog.text
    assert record.head_instance_id in second.instances
    assert claimed('job') == [second.fid]
    assert bids_named(market, 'job') == []

    # The first has room again: the cluster, on the second, stays there.
    provisioner.terminate_instances('other', PROVIDER)
    cloud._reservation_listings.clear()  # pylint: disable=protected-access
    assert counted_free(BOTH) == {'res-a': 1}
    assert deploy('job', BOTH)['mithril_reservation'] == second.fid
    assert launch_as_deployed('job', variables).head_instance_id == (
        record.head_instance_id)
    assert claimed('job') == [second.fid]


def test_the_deploy_step_lists_the_reservations_and_their_instances_once(
        market):
    running(reserve(market, 'res-a', hours=48))
    running(reserve(market, 'res-b', hours=48))
    cloud._account_for_launch()  # pylint: disable=protected-access
    market.control('DELETE', 'stats')

    assert deploy('job', BOTH)['mithril_reservation']

    by_route = market.control('GET', 'stats')['by_route']
    assert (by_route.get('GET /v2/projects', 0),
            by_route['GET /v2/reservation'],
            by_route['GET /v2/instances']) == (0, 1, 1)


def test_a_deploy_reads_a_listing_without_room_again_before_it_bids(market):
    """A listing taken before the reservation starts leaves no room; a
    launch within the listing's 10 s, once it has started, goes on the
    reservation instead of bidding on spot beside its instances."""
    one = {'reservation': 'res-a'}
    starting = reserve(market, 'res-a', hours=48, start_in_hours=1)
    assert deploy('job', one)['mithril_reservation'] == ''
    market.control('POST', 'advance', seconds=3600)
    running(starting)
    assert deploy('job', one)['mithril_reservation'] == starting.fid


def test_a_first_reservation_ending_within_the_lead_is_passed_over(market):
    # Hours apart: at 600x an emulated hour passes in 6 s of a loaded run.
    first = running(reserve(market, 'res-a', hours=10))
    second = running(reserve(market, 'res-b', hours=40))

    variables = deploy('job', {**BOTH, 'reservation_end_lead_minutes': 900})
    launch_as_deployed('job', variables)

    assert variables['mithril_reservation'] == second.fid
    assert claimed('job') == [second.fid]
    assert bids_named(market, 'job') == []
    # With a shorter lead the first one takes the launch.
    cloud._reservation_listings.clear()  # pylint: disable=protected-access
    assert deploy('later', {**BOTH, 'reservation_end_lead_minutes': 60})[
        'mithril_reservation'] == first.fid


def test_with_no_reservation_fitting_the_cluster_bids_on_spot_saying_why(
        market, caplog):
    first = reserve(market, 'res-a', hours=48, start_in_hours=24)
    second = running(reserve(market, 'res-b', hours=48))
    launch_on_reservation('other', second.name)
    caplog.set_level('INFO')

    variables = deploy('job', BOTH)
    record = launch_as_deployed('job', variables)

    assert (f'Mithril reservation res-a ({first.fid}) starts at '
            f'{first.start_time.isoformat()}; reservation res-b '
            f'({second.fid}) has 0 of its 1 instances free; the cluster '
            'needs 1; the cluster bids on spot at your limit instead.'
            ) in caplog.text
    assert claimed('job') == []
    assert [b['status'] for b in bids_named(market, 'job')] == ['Allocated']
    assert record.head_instance_id not in first.instances + second.instances


def test_a_cluster_is_never_split_across_two_reservations(market, caplog):
    """Two nodes, one free instance on each reservation: one spot bid for
    both nodes, no claim."""
    first = running(reserve(market, 'res-a', quantity=2, hours=48))
    second = running(reserve(market, 'res-b', hours=48))
    launch_on_reservation('other', first.name)
    caplog.set_level('INFO')

    variables = deploy('job', BOTH, num_nodes=2)
    launch_as_deployed('job', variables, count=2)

    assert f'reservation res-a ({first.fid}) has 1 of its 2 instances free; ' \
        'the cluster needs 2' in caplog.text
    assert f'reservation res-b ({second.fid}) has 1 of its 1 instances free; ' \
        'the cluster needs 2' in caplog.text
    assert claimed('job') == []
    [bid] = bids_named(market, 'job')
    assert (bid['status'], bid['instance_quantity']) == ('Allocated', 2)


def test_a_cluster_whose_reservation_ended_goes_on_the_next_listed_one(
        manual_clock_emulator: EmulatorServer, monkeypatch):
    """`sky launch -c job` again (or FAILOVER's relaunch onto the cluster as
    it is) once the reservation it held ended: its claims on the ended
    reservation's instances are still there, but those instances are gone.
    It goes on the next reservation it lists that has room, not on a spot
    bid billed beside a paid-for free instance."""
    server = manual_clock_emulator
    forget_earlier_jobs()
    with market_read(monkeypatch):
        first = reserve(server, 'res-a', hours=3)
        second = reserve(server, 'res-b', hours=48)
        server.control('POST', 'advance', seconds=120)
        launch_as_deployed('job', deploy('job', BOTH))
        try:
            assert claimed('job') == [first.fid]
            server.control('POST', 'advance', seconds=3 * 3600)
            cloud._reservation_listings.clear()  # pylint: disable=protected-access

            variables = deploy('job', BOTH)
            record = while_the_clock_moves(
                server, lambda: launch_as_deployed('job', variables))

            assert bids_named(server, 'job') == []
            assert claimed('job') == [second.fid]
            assert record.head_instance_id in second.instances
        finally:
            drop_clusters('job')


def test_a_cluster_whose_instances_were_returned_goes_on_the_next_listed_one(
        market, caplog):
    """`sky launch -c job` again once the instance it held on `res-a` was
    returned (`sky-mithril reservations return`), `res-a`'s other instance
    held by `other`: the deploy step puts the cluster on `res-b`, and the
    provisioner drops the claim on the deleted instance and claims there,
    not on `res-a` (where it would find no room and bid beside a free paid
    instance)."""
    first = running(reserve(market, 'res-a', quantity=2, hours=48))
    second = running(reserve(market, 'res-b', hours=48))
    launch_as_deployed('job', deploy('job', BOTH))
    launch_on_reservation('other', first.name)
    [held] = reservation_claims.of_cluster('job')
    conn = connection.connect()
    conn.client.return_reservation_instances(first.fid, [held.instance_fid])
    cloud._reservation_listings.clear()  # pylint: disable=protected-access
    caplog.set_level('INFO')

    variables = deploy('job', BOTH)
    record = launch_as_deployed('job', variables)

    assert variables['mithril_reservation'] == second.fid
    assert f'Mithril reservation res-b ({second.fid})' in caplog.text
    assert claimed('job') == [second.fid]
    assert record.head_instance_id in second.instances
    assert bids_named(market, 'job') == []


def test_a_dry_run_reading_a_stale_listing_leaves_the_cluster_its_instance(
        manual_clock_emulator: EmulatorServer, monkeypatch):
    """The API server listed `res-a` while Pending (a launch that bid on
    spot); `res-a` starts and `job` claims its instance (in another worker).
    A `sky launch --dryrun -c job` within the listing's life leaves `job`'s
    claim, and `other` does not get `job`'s instance: two clusters on one
    node, the second's `sky down` wiping the first's boot disk."""
    server = manual_clock_emulator
    forget_earlier_jobs()
    # The listing kept as long as the test takes (the 10 s window, stretched
    # over the emulated boots).
    monkeypatch.setattr(cloud, 'RESERVATION_LISTING_SECONDS', 3600.0)
    with market_read(monkeypatch):
        try:
            reserve(server, 'res-a', hours=6, start_in_hours=1)
            assert deploy('early', {'reservation': 'res-a'}
                          )['mithril_reservation'] == ''
            server.control('POST', 'advance', seconds=62 * 60)
            record = while_the_clock_moves(
                server, lambda: launch_on_reservation('job', 'res-a'))
            [held] = reservation_claims.of_cluster('job')
            assert held.instance_fid == record.head_instance_id

            deploy('job', {'reservation': 'res-a'})
            elsewhere = while_the_clock_moves(
                server, lambda: launch_on_reservation('other', 'res-a'))

            assert reservation_claims.of_cluster('job') == [held]
            assert elsewhere.head_instance_id != record.head_instance_id
        finally:
            drop_clusters('job', 'other')
