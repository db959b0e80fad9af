"""Real signals (SIGTERM, as SkyPilot's `sky api cancel` sends to its worker)
landing while a request that changes the market is in flight. The emulator
slows that request so the signal arrives before the server has committed it;
whatever the timing, no bid the user did not ask for is left live."""

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

from sky_mithril.emulator.server import EmulatorServer

from tests.helpers import REPO
from tests.helpers.provisioning import bids_named, launch, provision_config

SLOW_SECONDS = 3.0


def _config_json(**kwargs: Any) -> Dict[str, Any]:
    config = provision_config(**kwargs)
    return {
        'provider_config': config.provider_config,
        'authentication_config': config.authentication_config,
        'docker_config': config.docker_config,
        'node_config': config.node_config,
        'count': config.count,
        'tags': config.tags,
        'resume_stopped_nodes': config.resume_stopped_nodes,
        'ports_to_open_on_launch': config.ports_to_open_on_launch,
    }


def _slow(server: EmulatorServer, method: str, path: str) -> None:
    server.control('PUT', 'faults', rules=[{
        'method': method, 'path': path, 'latency': 1.0,
        'latency_s': SLOW_SECONDS}])


def _requests(server: EmulatorServer, method: str, route: str) -> int:
    stats = server.control('GET', 'stats')
    return int(stats['by_route'].get(f'{method} {route}', 0))


def _signal_mid_request(server: EmulatorServer, call: str, name: str,
                        config: Dict[str, Any], method: str,
                        route: str) -> Tuple[List[str], List[str]]:
    """Starts the call in a child and sends SIGTERM once the slowed request
    has reached the server. Returns the bid statuses the market had when the
    signal was sent, and the child's output lines."""
    before = _requests(server, method, route)
    child = subprocess.Popen(
        [sys.executable, '-m', 'tests.helpers.provision_child',
         json.dumps({'call': call, 'name': name, 'config': config})],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        cwd=str(REPO))
    try:
        deadline = time.monotonic() + 60
        while _requests(server, method, route) == before:
            assert time.monotonic() < deadline, 'the request never came'
            assert child.poll() is None, child.stdout.read()
            time.sleep(0.05)
        time.sleep(SLOW_SECONDS / 3)
        at_signal = [b['status'] for b in bids_named(server, name)]
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
    return at_signal, out.splitlines()


def test_sigterm_while_the_bid_post_is_in_flight_leaves_no_bid(fast_emulator):
    config = _config_json()
    _slow(fast_emulator, 'POST', '/v2/spot/bids')
    at_signal, lines = _signal_mid_request(fast_emulator, 'run', 'posting', config,
                                           'POST', '/v2/spot/bids')
    assert 'INTERRUPTED' in lines
    # The signal landed before the server had committed the bid ...
    assert at_signal == []
    # ... which the server did a moment later; the launch cancelled it.
    assert [b['status'] for b in bids_named(fast_emulator, 'posting')] == ['Terminated']


def test_sigterm_while_resuming_leaves_the_bid_paused(fast_emulator):
    launch('resuming', provision_config())
    from sky_mithril.provision import instance as provisioner
    provisioner.stop_instances('resuming', {'project_id': 'proj_emulator'})
    _slow(fast_emulator, 'PATCH', '/v2/spot/bids/{bid_fid}')
    at_signal, lines = _signal_mid_request(fast_emulator, 'run', 'resuming',
                                _config_json(resume=True), 'PATCH',
                                '/v2/spot/bids/{bid_fid}')
    assert 'INTERRUPTED' in lines
    assert [b['status'] for b in bids_named(fast_emulator, 'resuming')] == ['Paused']


def test_sigterm_while_pausing_still_pauses(fast_emulator):
    launch('pausing', provision_config())
    _slow(fast_emulator, 'PATCH', '/v2/spot/bids/{bid_fid}')
    at_signal, lines = _signal_mid_request(fast_emulator, 'stop', 'pausing', _config_json(),
                                'PATCH', '/v2/spot/bids/{bid_fid}')
    assert 'INTERRUPTED' in lines
    assert [b['status'] for b in bids_named(fast_emulator, 'pausing')] == ['Paused']


def test_sigterm_while_cancelling_still_cancels(fast_emulator):
    launch('cancelling', provision_config())
    _slow(fast_emulator, 'DELETE', '/v2/spot/bids/{bid_fid}')
    at_signal, lines = _signal_mid_request(fast_emulator, 'down', 'cancelling', _config_json(),
                                'DELETE', '/v2/spot/bids/{bid_fid}')
    assert 'INTERRUPTED' in lines
    assert [b['status'] for b in bids_named(fast_emulator, 'cancelling')] == ['Terminated']


def test_sigterm_while_the_bid_waits_for_the_auction_cancels_it(fast_emulator):
    fast_emulator.control('POST', 'price', instance_type='a100-80gb.sxm.1x',
                          region='us-central3-a', price='$50.00')
    at_signal, lines = _signal_mid_request(fast_emulator, 'run', 'waiting',
                                _config_json(limit='10.00'), 'GET',
                                '/v2/spot/bids/{bid_fid}')
    assert 'INTERRUPTED' in lines
    assert [b['status'] for b in bids_named(fast_emulator, 'waiting')] == ['Terminated']

