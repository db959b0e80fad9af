"""Reservations bought on the emulator for tests, and a cluster launched on
one through the provisioner."""

import datetime
from typing import Sequence

from sky.provision import common

from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner

from tests.helpers.commands import REGION, TYPE
from tests.helpers.provisioning import PUBLIC_KEY


def reserve(server: EmulatorServer, name: str, *, quantity: int = 1,
            hours: int = 3, start_in_hours: int = 0,
            public_key: str = PUBLIC_KEY,
            volumes: Sequence[str] = ()) -> models.Reservation:
    """A reservation of `hours` bought as `sky-mithril reservations create`
    buys one, starting at the emulator's now (plus `start_in_hours`), its
    instances booting with `public_key` and `volumes`."""
    conn = connection.connect()
    start = datetime.datetime.fromisoformat(server.control('GET', 'state')['now'])
    return conn.client.create_reservation(models.CreateReservationRequest(
        project=conn.project_id,
        instance_type=cluster_bid.instance_type_fid(conn, TYPE, REGION),
        region=REGION,
        start_time=start + datetime.timedelta(hours=start_in_hours),
        end_time=start + datetime.timedelta(hours=start_in_hours + hours),
        instance_quantity=quantity, name=name,
        launch_specification=models.LaunchSpecification(
            volumes=list(volumes),
            ssh_keys=[ssh_key_fid_for(conn, public_key)])))


def launch_on_reservation(cluster: str,
                          reservation_name: str) -> common.ProvisionRecord:
    """Launches `cluster` on the reservation named, as SkyPilot runs the
    provisioner for a task with `config.mithril.reservation` set."""
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return provisioner.run_instances(
        REGION, cluster, cluster, devtools_provisioning.provision_config(
            {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
             'region': REGION, 'limit_price_per_hour': '32.00',
             'provision_timeout': '', 'boot_timeout': '',
             'reservation': reservation_name}, key_fid, TYPE))
