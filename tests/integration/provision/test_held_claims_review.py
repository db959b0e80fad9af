"""Holes found reviewing the reservation placement (merge 9a27095): the
deploy step decides a cluster's reserved instances are gone from the task's
reservations as listed up to RESERVATION_LISTING_SECONDS ago, and releases
its claims. A listing taken while the reservation was Pending (before its
instances existed) must not free the instances a cluster claimed since,
least of all in a dry run: the next launch would claim the instance the
cluster runs on (two clusters on one node; the second's `sky down` wipes the
first's boot disk)."""

import datetime
from typing import Iterator, List

import pytest

from sky_mithril import cloud
from sky_mithril.account import connection
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import reservation_claims

from tests.helpers.reservations import (deploy, launch_on_reservation,
                                        market_read, reserve)
from tests.integration.plugin.test_jobs_reservation_end import (
    while_the_clock_moves)
from tests.integration.provision.test_reservations_in_order import (
    forget_earlier_jobs)

RES = {'reservation': 'res-a'}


@pytest.fixture
def market(manual_clock_emulator: EmulatorServer,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The manual-clock emulator, its market read as the API server reads
    it; the listing kept as long as this test takes (the 10 s window,
    stretched over the emulated boots)."""
    forget_earlier_jobs()
    monkeypatch.setattr(cloud, 'RESERVATION_LISTING_SECONDS', 3600.0)
    with market_read(monkeypatch):
        try:
            yield manual_clock_emulator
        finally:
            for cluster in ('job', 'other'):
                reservation_claims.release(
                    reservation_claims.of_cluster(cluster))
                cluster_bid.cancel_all(connection.connect(), cluster)


def claimed(cluster: str) -> List[str]:
    return [c.instance_fid for c in reservation_claims.of_cluster(cluster)]


def test_a_listing_from_before_the_reservation_started_keeps_a_live_claim(
        market):
    """The API server listed `res-a` while Pending (a launch that bid on
    spot); `res-a` starts and `job` claims its instance (in another worker).
    A `sky launch --dryrun -c job` within the listing's life leaves `job`'s
    claim, and `other` does not get `job`'s instance."""
    reserve(market, 'res-a', hours=6, start_in_hours=1)
    assert deploy('early', RES)['mithril_reservation'] == ''

    market.control('POST', 'advance',
                   seconds=datetime.timedelta(minutes=62).total_seconds())
    record = while_the_clock_moves(
        market, lambda: launch_on_reservation('job', 'res-a'))
    assert claimed('job') == [record.head_instance_id]

    deploy('job', RES)  # the dry run's deploy step
    elsewhere = while_the_clock_moves(
        market, lambda: launch_on_reservation('other', 'res-a'))

    assert claimed('job') == [record.head_instance_id]
    assert elsewhere.head_instance_id != record.head_instance_id
