"""A managed job's cluster with a second live bid of its name and no standby
recorded (a bid POST whose answer was lost, committed by Mithril after the
launch ended): the jobs controller's log says so every time it asks, naming
the bids and the way out, instead of dropping it at debug level."""

import logging
import types
from typing import Any

import pytest

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.recovery import records
from sky_mithril.recovery import runtime

from tests.helpers.provisioning import launch_on_manual_clock, provision_config
from tests.helpers.recovery_records import forget_recovery_records


def handle(name: str) -> Any:
    """The parts of SkyPilot's cluster handle the runtime reads."""
    return types.SimpleNamespace(
        cluster_name=name, cluster_name_on_cloud=name, cluster_yaml=None,
        launched_resources=types.SimpleNamespace(
            cloud=types.SimpleNamespace(canonical_name=lambda: 'mithril'),
            cluster_config_overrides={'mithril': {}}))


def second_bid(name: str) -> str:
    """Places another bid like the cluster's, as a late commit would."""
    conn = connection.connect()
    bid = cluster_bid.live_bid(conn, name)
    assert bid is not None
    spec = bid.launch_specification
    return conn.client.create_bid(models.CreateBidRequest(
        project=conn.project_id, region=bid.region or '',
        instance_type=bid.instance_type, limit_price=bid.limit_price,
        instance_quantity=bid.instance_quantity, name=name,
        launch_specification=models.LaunchSpecification(
            ssh_keys=spec.ssh_keys, volumes=spec.volumes))).fid


def test_two_live_bids_of_a_jobs_cluster_are_reported_loudly(
        manual_clock_emulator: EmulatorServer, monkeypatch, caplog):
    monkeypatch.setattr(runtime, 'provider_config',
                        lambda h: {'project_id': 'proj_emulator'})
    forget_recovery_records()
    launch_on_manual_clock(manual_clock_emulator, 'job',
                           provision_config(limit='10.00'))
    first = cluster_bid.live_bid(connection.connect(), 'job').fid
    extra = second_bid('job')
    caplog.set_level(logging.DEBUG)

    assert runtime.MithrilJobRuntime().get_job_status(handle('job'),
                                                      'job') is None
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert first in warning.message and extra in warning.message
    assert 'may bill' in warning.message
    assert '`sky jobs cancel`' in warning.message
    with pytest.raises(cluster_bid.SeveralLiveBidsError, match=extra):
        cluster_bid.live_bid(connection.connect(), 'job')
