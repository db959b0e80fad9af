"""What the managed-job runtime tells SkyPilot's jobs controller about a
Mithril cluster, on a manual-clock emulator: nothing while the bid is fine,
"recover now" from the notice on (or only once the node is gone, if the task
says so), also when Mithril brought the preempted node back by itself, and
never twice for one preemption."""

import types
from typing import Any, Dict

import pytest

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.recovery import records
from sky_mithril.recovery import runtime

from tests.helpers.provisioning import bids_named, launch_on_manual_clock, provision_config
from tests.helpers.recovery_records import forget_recovery_records

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
BOOT_S = 60.0
NOTICE_S = 300.0
RECOVER_NOW = (None, None)


def handle(name: str, mithril: Dict[str, Any]) -> Any:
    """The parts of SkyPilot's cluster handle the runtime reads."""
    return types.SimpleNamespace(
        cluster_name=name, cluster_name_on_cloud=name, cluster_yaml=None,
        launched_resources=types.SimpleNamespace(
            cloud=types.SimpleNamespace(canonical_name=lambda: 'mithril'),
            cluster_config_overrides={'mithril': mithril}))


def advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


@pytest.fixture
def running(manual_clock_emulator: EmulatorServer, monkeypatch) -> EmulatorServer:
    """A 1-node cluster `job` with a $10/h limit, up; its provider config is
    what the cluster YAML would hold; no recoveries recorded yet."""
    monkeypatch.setattr(runtime, 'provider_config',
                        lambda h: {'project_id': 'proj_emulator'})
    monkeypatch.setattr(runtime, '_finished_status', lambda h: None)
    forget_recovery_records()
    launch_on_manual_clock(manual_clock_emulator, 'job',
                           provision_config(limit='10.00'), CLEARING_S)
    return manual_clock_emulator


def set_price(server: EmulatorServer, price: str) -> None:
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price=price)


def status(mithril: Dict[str, Any]) -> Any:
    return runtime.MithrilJobRuntime().get_job_status(
        handle('job', mithril), 'job')


def test_a_healthy_bid_defers_to_skypilot(running):
    assert status({}) is None


def test_recovery_starts_at_the_notice_or_once_the_node_is_gone(running):
    set_price(running, '$50.00')
    advance(running, CLEARING_S)
    assert bids_named(running, 'job')[0]['status'] == 'Preempting'
    assert status({}) == RECOVER_NOW
    assert status({'recovery_starts': 'node_lost'}) is None
    advance(running, NOTICE_S + 1)
    assert bids_named(running, 'job')[0]['status'] == 'Open'
    assert status({'recovery_starts': 'node_lost'}) == RECOVER_NOW


def test_a_node_mithril_brought_back_is_recovered_once(running):
    set_price(running, '$50.00')
    advance(running, CLEARING_S + NOTICE_S + 1)
    set_price(running, '$5.00')
    advance(running, CLEARING_S + BOOT_S)
    # The same node again, its job's processes gone with the preemption.
    assert bids_named(running, 'job')[0]['status'] == 'Allocated'
    assert status({'recovery_starts': 'node_lost'}) == RECOVER_NOW
    runtime.MithrilJobRuntime().on_before_recovery(
        handle('job', {}), None, 1, None)
    assert records.is_recovering('job')
    # A relaunch that keeps this bid is not recovered again for it.
    assert status({}) is None
