"""A standby outlives the jobs controller that placed it (manual-clock
emulator): the controller, a real child process, places the standby during
the cluster's preemption notice and watches it; it is killed (SIGKILL) or
stalls mid-notice, the notice ends, and still the old bid does not win a
second node beside the standby (`recovery.standby_guard`); nor is a
stopped cluster's bid cancelled."""

import json
import os
import signal
import subprocess
import sys
import time
from typing import Iterator, List, Tuple

import pytest

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as provisioner
# The plugin plugs recovery's standby records into the provisioner at install
# (`plugin.takeover`); this process is the API server here.
from sky_mithril.recovery import standby  # noqa: F401 pylint: disable=unused-import

from tests.helpers import REPO
from tests.helpers.provisioning import (bids_named, launch_on_manual_clock,
                                        provision_config)

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'
CLEARING_S = 120.0
BOOT_S = 60.0
NOTICE_S = 300.0
PROVIDER = {'project_id': 'proj_emulator'}
# How long, in wall time, the test lets the guard notice the notice's end.
GUARD_WAIT_S = 30.0


def advance(server: EmulatorServer, seconds: float) -> None:
    server.control('POST', 'advance', seconds=seconds)


def set_price(server: EmulatorServer, price: str) -> None:
    server.control('POST', 'price', instance_type=TYPE, region=REGION,
                   price=price)


def live(server: EmulatorServer, name: str) -> List[str]:
    return [b['fid'] for b in bids_named(server, name)
            if b['status'] != 'Terminated']


def status_of(server: EmulatorServer, name: str, fid: str) -> str:
    return next(b['status'] for b in bids_named(server, name)
                if b['fid'] == fid)


@pytest.fixture
def controller(manual_clock_emulator: EmulatorServer
               ) -> Iterator[Tuple[EmulatorServer, subprocess.Popen, str,
                                   str, str]]:
    """A cluster ($10/h) in its preemption notice, with a jobs controller (a
    child process) that placed its standby at $30/h and watches it:
    (emulator, controller, cluster name, old fid, standby fid)."""
    server = manual_clock_emulator
    name = f'guarded-{os.getpid()}-{time.monotonic_ns()}'
    launch_on_manual_clock(server, name, provision_config(limit='10.00'),
                           CLEARING_S)
    set_price(server, '$50.00')
    advance(server, CLEARING_S)
    [old] = live(server, name)
    assert status_of(server, name, old) == 'Preempting'
    set_price(server, '$20.00')
    child = subprocess.Popen(
        [sys.executable, '-m', 'tests.helpers.standby_child',
         json.dumps({'name': name, 'limit': '30.00'})],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        cwd=str(REPO))
    try:
        line = ['']
        while line[0] != 'WATCHING':
            text = child.stdout.readline()
            assert text, 'the controller ended before it watched'
            line = text.split() or ['']
        assert line[1] == old, line
        yield server, child, name, old, line[2]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def end_the_notice_then_let_the_old_bid_win(server: EmulatorServer,
                                            name: str, old: str) -> None:
    """Runs the market to the notice's end (the standby has won by then),
    gives the guard its time to act, then drops the price below the old
    bid's limit for a clearing: an old bid still in the auction wins."""
    advance(server, CLEARING_S + BOOT_S)
    advance(server, NOTICE_S - CLEARING_S - BOOT_S)
    deadline = time.monotonic() + GUARD_WAIT_S
    while (status_of(server, name, old) != 'Terminated' and
           time.monotonic() < deadline):
        time.sleep(0.2)
    set_price(server, '$5.00')
    advance(server, CLEARING_S)


def test_a_killed_controller_leaves_no_second_bill(controller):
    server, child, name, old, standby = controller
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    end_the_notice_then_let_the_old_bid_win(server, name, old)

    assert live(server, name) == [standby]
    assert status_of(server, name, standby) == 'Allocated'


def test_a_stalled_controller_leaves_no_second_bill(controller):
    server, child, name, old, standby = controller
    os.kill(child.pid, signal.SIGSTOP)
    try:
        end_the_notice_then_let_the_old_bid_win(server, name, old)
        assert live(server, name) == [standby]
    finally:
        os.kill(child.pid, signal.SIGCONT)


def test_the_guard_leaves_a_stopped_clusters_bid_alone(controller):
    server, child, name, old, standby = controller
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    provisioner.stop_instances(name, PROVIDER)
    assert status_of(server, name, standby) == 'Terminated'

    end_the_notice_then_let_the_old_bid_win(server, name, old)

    assert live(server, name) == [old]
    assert status_of(server, name, old) == 'Paused'
