"""`sky-mithril reservations pause|resume|extend|return` change the market
as the provisioner does, so they mark the project snapshot stale: a status
refresh right after `reservations pause` reads the cluster on the
reservation paused, not as the snapshot taken before had it."""

from sky.utils import status_lib

from sky_mithril import cli
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import reservation_claims

from tests.helpers.provisioning import query
from tests.helpers.reservations import launch_on_reservation, reserve

UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED


def test_a_refresh_right_after_reservations_pause_reads_it_paused(
        manual_clock_emulator: EmulatorServer) -> None:
    server = manual_clock_emulator
    reservation = reserve(server, 'paused-res')
    server.control('POST', 'advance', seconds=120)
    launch_on_reservation('held', reservation.name)
    try:
        assert {s for s, _ in query('held').values()} == {UP}
        assert cli.main(['reservations', 'pause', 'paused-res']) == 0
        assert {s for s, _ in query('held').values()} == {STOPPED}
        assert cli.main(['reservations', 'resume', 'paused-res']) == 0
        assert {s for s, _ in query('held').values()} != {STOPPED}
    finally:
        reservation_claims.release(reservation_claims.of_cluster('held'))
