"""A cluster whose reservation ended launches again under its name on spot:
its claims on the ended reservation's instances stay until released,
and the launch stages NODE_FILE from them before it finds them gone. What
its nodes get names no reserved instance, so its autostop on the node
pauses its own bid (the disk kept) rather than cancel it as a bid beside
reserved instances."""

from pathlib import Path

from sky_mithril.account import connection
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import reservation_claims
from sky_mithril.provision import reserved_nodes

from tests.helpers.provisioning import (bids_named, launch_on_manual_clock,
                                        provision_config, query)
from tests.helpers.reservations import launch_on_reservation, reserve

PROVIDER = {'project_id': 'proj_emulator'}


def test_a_spot_relaunch_after_the_reservation_ended_stages_no_instance(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    reservation = reserve(server, 'ending-res')
    server.control('POST', 'advance', seconds=120)
    launch_on_reservation('dev', reservation.name)
    # The reservation ends; a refresh reads the cluster gone, and SkyPilot
    # forgets it. Its claims stay until they are released.
    server.control('POST', 'advance', seconds=3 * 3600)
    assert query('dev') == {}
    assert reservation_claims.of_cluster('dev') != []

    # `sky launch -c dev -i 10` on spot: the cloud stages NODE_FILE as it
    # renders the config, then the provisioner runs.
    reserved_nodes.stage_node_file('dev')
    launch_on_manual_clock(server, 'dev', provision_config())
    [bid] = bids_named(server, 'dev')
    assert bid['status'] == 'Allocated'

    # SkyPilot syncs the staged file to the node after provisioning; the
    # node's autostop runs there, with none of the API server's claims.
    node_file = Path(reserved_nodes.NODE_FILE).expanduser()
    node_file.parent.mkdir(parents=True, exist_ok=True)
    node_file.write_text(reserved_nodes.node_file_path('dev').read_text(
        encoding='utf-8'), encoding='utf-8')
    claims = reservation_claims.of_cluster('dev')
    reservation_claims.release(claims)
    try:
        provisioner.stop_instances('dev', PROVIDER)
        [bid] = bids_named(server, 'dev')
        assert bid['status'] == 'Paused'
    finally:
        node_file.unlink()
        cluster_bid.cancel_all(connection.connect(), 'dev')
