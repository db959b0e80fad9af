"""The chaos soak (sky_mithril.devtools.chaos): under every API fault kind and random
Ctrl-C, no bid is leaked or created twice. The 50-cycle run needs `-m chaos`.

Also pins two interrupt windows the soak found, where run_instances leaves a
bid behind; they are expected failures until the provisioner covers them.
"""

import _thread
import threading
from typing import Any, Dict, List

import pytest
from sky.provision import common

from sky_mithril.devtools import chaos
from sky_mithril.devtools.provisioning import provision_config
from sky_mithril import connection
from sky_mithril.auth import ssh_key_fid_for
from sky_mithril.emulator.faults import FAULT_KINDS
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as provisioner

PROVIDER_CONFIG = {'project_id': chaos.PROJECT, 'region': chaos.REGION,
                   'limit_price_per_hour': chaos.LIMIT_PRICE}


def assert_nothing_lost(report: chaos.SoakReport, min_faults: int) -> None:
    assert report.problems == [], report.format()
    assert not report.leaked and report.duplicates == 0, report.format()
    assert not report.double_live and not report.orphaned, report.format()
    assert all(report.faults[kind] >= min_faults
               for kind in FAULT_KINDS), report.format()
    assert report.client_retries > 0 and report.ok


def test_short_soak_leaks_and_doubles_nothing():
    report = chaos.run_soak(cycles=8, seed=3)
    assert report.cycles == 8
    assert report.bids_created >= 8
    assert_nothing_lost(report, min_faults=1)


@pytest.mark.chaos
def test_fifty_cycle_soak_leaks_and_doubles_nothing(request):
    if 'chaos' not in (request.config.getoption('markexpr') or ''):
        pytest.skip('the 50-cycle soak takes minutes; run it with -m chaos')
    report = chaos.run_soak(cycles=50, seed=0)
    assert report.cycles == 50
    assert_nothing_lost(report, min_faults=20)


def test_main_prints_the_totals(capsys):
    assert chaos.main(['--cycles', '1', '--seed', '4']) == 0
    out = capsys.readouterr().out
    assert 'cycles:             1 (seed 4,' in out
    assert 'bids leaked:        0' in out and 'RESULT: PASS' in out






def bid_statuses(server: EmulatorServer, name: str) -> List[str]:
    return [b['status'] for b in server.control('GET', 'state')['bids']
            if b['name'] == name]


def start(name: str) -> common.ProvisionRecord:
    """run_instances as `sky launch`/`sky start` call it."""
    key_fid = ssh_key_fid_for(connection.connect(), chaos.PUBLIC_KEY)
    config = provision_config(dict(PROVIDER_CONFIG), key_fid,
                              chaos.INSTANCE_TYPE, resume_stopped_nodes=True)
    return provisioner.run_instances(chaos.REGION, name, name, config)


def ctrl_c_while_in_flight(server: EmulatorServer, method: str,
                           name: str) -> None:
    """Presses Ctrl-C while the server holds the first `method` to a bid for
    1 s before applying it; run_instances must raise KeyboardInterrupt."""
    rule: Dict[str, Any] = {'method': method, 'path': '/v2/spot/bids',
                            'latency': 1.0, 'latency_s': 1.0, 'max_faults': 1}
    server.control('PUT', 'faults', rules=[rule])
    threading.Timer(0.3, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        start(name)
    server.control('PUT', 'faults', rules=[])


def test_ctrl_c_while_the_bid_is_being_placed_leaves_no_bid(emulator):
    ctrl_c_while_in_flight(emulator, 'POST', 'placing')
    assert bid_statuses(emulator, 'placing') == ['Terminated']


def test_ctrl_c_while_resuming_leaves_the_bid_paused(emulator):
    start('resuming')
    provisioner.stop_instances('resuming', PROVIDER_CONFIG)
    ctrl_c_while_in_flight(emulator, 'PATCH', 'resuming')
    assert bid_statuses(emulator, 'resuming') == ['Paused']
