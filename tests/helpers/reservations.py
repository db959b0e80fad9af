"""Reservations bought on the emulator for tests, a cluster launched on
one through the provisioner, and the launch's deploy step that picks the
reservation."""

import contextlib
import datetime
from typing import Any, Dict, Iterator, Sequence

import pytest
import sky
from sky.clouds import cloud as sky_cloud
from sky.provision import common
from sky.utils import resources_utils

from sky_mithril import cloud
from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import models
from sky_mithril.catalog import live_prices
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner

from tests.helpers.commands import REGION, TYPE
from tests.helpers.live_market import forget_this_process_market
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


@contextlib.contextmanager
def market_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The emulator's market read as the API server reads it (the deploy
    step finds the instance type's fid there), no reservation counted and no
    note printed by an earlier test, and the market forgotten afterwards."""
    monkeypatch.setattr(cloud, '_reservation_listings', {})
    monkeypatch.setattr(cloud, '_notes_printed', {})
    live_prices.refresh()
    try:
        yield
    finally:
        forget_this_process_market()


def deploy(cluster: str, mithril: Dict[str, Any],
           num_nodes: int = 1) -> Dict[str, Any]:
    """The launch's deploy step for `num_nodes`× TYPE in REGION with
    `config.mithril` set to `mithril` (a dry run's: no account or node
    files); `mithril_reservation` is the reservation the provisioner claims
    on."""
    resources = sky.Resources(cloud=cloud.Mithril(), instance_type=TYPE,
                              region=REGION,
                              _cluster_config_overrides={'mithril': mithril})
    return cloud.Mithril().make_deploy_resources_variables(
        resources, resources_utils.ClusterName(cluster, cluster),
        sky_cloud.Region(REGION), None, num_nodes, dryrun=True)


def launch_as_deployed(cluster: str, variables: Dict[str, Any],
                       count: int = 1) -> common.ProvisionRecord:
    """Runs the provisioner for `cluster` with the config SkyPilot renders
    from the deploy step's `variables` (`deploy`)."""
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return provisioner.run_instances(
        REGION, cluster, cluster, devtools_provisioning.provision_config(
            {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
             'region': REGION,
             'limit_price_per_hour': variables['limit_price_per_hour'],
             'provision_timeout': '', 'boot_timeout': '',
             'reservation': variables['mithril_reservation'],
             'reservation_end_lead_seconds':
                 variables['reservation_end_lead_seconds']},
            key_fid, TYPE, count=count))
