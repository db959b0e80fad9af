"""Clusters on reserved instances refresh from the project's one snapshot,
as clusters on spot bids do: the snapshot holds the reservations while any
cluster holds reserved instances, so a refresh of 1 or 3 reserved clusters
costs the same few requests, and none reads its reservation live."""

import datetime
from typing import Any, Dict

from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import reservation_claims

from tests.helpers.provisioning import PUBLIC_KEY, query

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
UP = status_lib.ClusterStatus.UP
NAMES = ('r0', 'r1', 'r2')


def _config(reservation: str) -> Any:
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': REGION, 'limit_price_per_hour': '32.00',
         'provision_timeout': '', 'boot_timeout': '',
         'reservation': reservation}, key_fid, TYPE)


def _requests(server: EmulatorServer) -> Dict[str, int]:
    return server.control('GET', 'stats')['by_route']


def test_reserved_clusters_refresh_from_one_snapshot(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    conn = connection.connect()
    start = datetime.datetime.fromisoformat(server.control('GET', 'state')['now'])
    reservation = conn.client.create_reservation(
        models.CreateReservationRequest(
            project=conn.project_id,
            instance_type=cluster_bid.instance_type_fid(conn, TYPE, REGION),
            region=REGION, start_time=start,
            end_time=start + datetime.timedelta(hours=3),
            instance_quantity=len(NAMES), name='shared-res',
            launch_specification=models.LaunchSpecification(
                volumes=[], ssh_keys=[ssh_key_fid_for(conn, PUBLIC_KEY)])))
    server.control('POST', 'advance', seconds=120)
    try:
        for name in NAMES:
            provisioner.run_instances(REGION, name, name,
                                      _config(reservation.name))
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
