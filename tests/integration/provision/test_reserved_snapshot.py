"""Clusters on reserved instances refresh from the project's one snapshot,
as clusters on spot bids do: the snapshot holds the reservations while any
cluster holds reserved instances, so a refresh of 1 or 3 reserved clusters
costs the same few requests, and none reads its reservation live."""

from typing import Dict

from sky.utils import status_lib

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import reservation_claims

from tests.helpers.provisioning import query
from tests.helpers.reservations import launch_on_reservation, reserve

UP = status_lib.ClusterStatus.UP
NAMES = ('r0', 'r1', 'r2')


def _requests(server: EmulatorServer) -> Dict[str, int]:
    return server.control('GET', 'stats')['by_route']


def test_reserved_clusters_refresh_from_one_snapshot(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    reservation = reserve(server, 'shared-res', quantity=len(NAMES))
    server.control('POST', 'advance', seconds=120)
    try:
        for name in NAMES:
            launch_on_reservation(name, reservation.name)
        assert reservation_claims.any_claim()
        cost = {}
        for count in (1, len(NAMES)):
            server.control('POST', 'advance',
                           seconds=project_snapshot.TTL_SECONDS + 1)
            server.control('DELETE', 'stats')
            for name in NAMES[:count]:
                assert {s for s, _ in query(name).values()} == {UP}
            cost[count] = _requests(server)
        assert cost[1] == cost[len(NAMES)]
        assert cost[1]['GET /v2/reservation'] == 1
        assert cost[1]['GET /v2/instances'] == 1
        assert sum(cost[1].values()) <= 6
    finally:
        for name in NAMES:
            reservation_claims.release(reservation_claims.of_cluster(name))
