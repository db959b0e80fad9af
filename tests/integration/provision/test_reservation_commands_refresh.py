"""`sky-mithril reservations pause|resume|extend|return` change the market
as the provisioner does, so they mark the project snapshot stale: a status
refresh right after `reservations pause` reads the cluster on the
reservation paused, not as the snapshot taken before had it."""

import datetime

from sky.utils import status_lib

from sky_mithril import cli
from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims

from tests.helpers.provisioning import PUBLIC_KEY, query

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED


def test_a_refresh_right_after_reservations_pause_reads_it_paused(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    conn = connection.connect()
    start = datetime.datetime.fromisoformat(server.control('GET', 'state')['now'])
    key_fid = ssh_key_fid_for(conn, PUBLIC_KEY)
    reservation = conn.client.create_reservation(
        models.CreateReservationRequest(
            project=conn.project_id,
            instance_type=cluster_bid.instance_type_fid(conn, TYPE, REGION),
            region=REGION, start_time=start,
            end_time=start + datetime.timedelta(hours=3),
            instance_quantity=1, name='paused-res',
            launch_specification=models.LaunchSpecification(
                volumes=[], ssh_keys=[key_fid])))
    server.control('POST', 'advance', seconds=120)
    provisioner.run_instances(REGION, 'held', 'held',
                              devtools_provisioning.provision_config(
                                  {'profile': '', 'project_id': 'proj_emulator',
                                   'api_url': '', 'region': REGION,
                                   'limit_price_per_hour': '32.00',
                                   'provision_timeout': '', 'boot_timeout': '',
                                   'reservation': reservation.name},
                                  key_fid, TYPE))
    try:
        assert {s for s, _ in query('held').values()} == {UP}
        assert cli.main(['reservations', 'pause', 'paused-res']) == 0
        assert {s for s, _ in query('held').values()} == {STOPPED}
        assert cli.main(['reservations', 'resume', 'paused-res']) == 0
        assert {s for s, _ in query('held').values()} != {STOPPED}
    finally:
        reservation_claims.release(reservation_claims.of_cluster('held'))
