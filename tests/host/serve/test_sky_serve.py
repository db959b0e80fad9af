"""End to end: `sky serve` with replicas on Mithril spot bids, on SSH hosts
the emulator creates in network namespaces (needs root; slow: run alone).
The serve controller and its load balancer run on the API server's host
(consolidation mode). One stack, one service (examples/serve.yaml): up with
2 replicas, traffic through the load balancer, one replica preempted while
the traffic runs, `sky serve down`: no live bid is left."""

import dataclasses
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Set

import pytest
import requests
import yaml

from sky_mithril.catalog import catalog_files
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.sky_stack import SkyStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'),
                       reason='needs root and unshare for namespace hosts'),
]

SERVICE = 'tiny'
# Mithril's notice is 5 minutes; at the emulator's 60x that would be 5 s of
# wall time, less than one probe round of the serve controller, while the
# replacement's launch runs at the machine's own speed. Two minutes of wall
# time (still less than the real notice).
NOTICE_SECONDS = 7200.0
# Requests through the load balancer: one every PERIOD seconds, below the
# example's target QPS for 2 replicas, so the autoscaler keeps 2.
PERIOD = 0.25


@pytest.fixture(scope='module')
def serve_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkyStack]:
    with NamespaceHosts() as hosts:
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            box = SkySandbox(tmp_path_factory.mktemp('serve'),
                             api_url=emulator.url, api_key='serve-key',
                             sky_config={'serve': {'controller': {
                                 'consolidation_mode': True}}})
            try:
                yield SkyStack(emulator, box, hosts)
            finally:
                box.stop_api_server()


@dataclasses.dataclass
class Answer:
    at: float
    replica: Optional[str]  # None: the request failed
    error: str = ''


class Traffic:
    """GET /predict through the load balancer every `period` seconds in the
    background, each answer recorded with the replica that gave it."""

    def __init__(self, endpoint: str, period: float = PERIOD) -> None:
        self.endpoint = endpoint
        self.period = period
        self.answers: List[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        x = 0
        while not self._stop.is_set():
            x += 1
            at = time.monotonic()
            try:
                answer = requests.get(f'{self.endpoint}/predict',
                                      params={'x': x}, timeout=10)
                answer.raise_for_status()
                body = answer.json()
                assert body['y'] == 2 * x + 1, body
                self.answers.append(Answer(at, body['replica']))
            except Exception as e:  # pylint: disable=broad-except
                self.answers.append(Answer(at, None, repr(e)))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - at)))

    def replicas(self, since: float = 0.0) -> Set[str]:
        return {a.replica for a in list(self.answers)
                if a.replica is not None and a.at >= since}

    def since(self, at: float) -> List[Answer]:
        return [a for a in list(self.answers) if a.at >= at]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_for(predicate, what: str, seconds: float, describe=lambda: '') -> float:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}: {describe()}'
        time.sleep(0.5)
    return time.monotonic()


def test_replicas_serve_through_a_preemption_and_leave_no_bid(
        serve_stack: SkyStack, tmp_path: Path) -> None:
    """examples/serve.yaml up with 2 replicas, each a bid at the task's
    limit; the load balancer spreads requests over both; one replica's bid
    gets Mithril's notice while requests flow: a replacement is bid for and
    serves, the preempted bid is cancelled within the notice, no request
    fails; `sky serve down` leaves no live bid."""
    started = time.monotonic()
    task = yaml.safe_load(catalog_files.example_path('serve.yaml').read_text())
    task['service']['readiness_probe']['initial_delay_seconds'] = 30
    service_yaml = tmp_path / 'serve.yaml'
    service_yaml.write_text(yaml.safe_dump(task))
    market = serve_stack.emulator.market
    notice_s, market.preemption_notice_s = market.preemption_notice_s, NOTICE_SECONDS
    traffic: Optional[Traffic] = None
    try:
        out = serve_stack.sky('serve', 'up', '-y', '-n', SERVICE, str(service_yaml))
        endpoint = re.search(r'Endpoint URL: \S*?(http://[\w.:]+)', out)
        assert endpoint, out
        traffic = Traffic(endpoint.group(1))
        ready_at = wait_for(lambda: len(traffic.replicas()) == 2,
                            'both replicas to answer through the load balancer',
                            600, serve_stack.bids)
        up_seconds = ready_at - started
        bids = serve_stack.live_bids()
        assert sorted((b['name'].rsplit('-', 1)[0], b['limit_price'], b['status'])
                      for b in bids) == [('tiny-1', '$4.00', 'Allocated'),
                                         ('tiny-2', '$4.00', 'Allocated')], bids
        first = traffic.replicas()
        time.sleep(5)  # requests flow over both replicas for a while

        [preempted] = [b for b in bids if b['name'].startswith('tiny-1-')]
        serve_stack.control('POST', f'bids/{preempted["fid"]}/preempt')
        notice_at = time.monotonic()
        gone: List[float] = []

        def replaced() -> bool:
            if not gone and any(b['fid'] == preempted['fid'] and
                                b['status'] == 'Terminated'
                                for b in serve_stack.bids()):
                gone.append(time.monotonic())
            return bool(traffic.replicas(notice_at) - first)

        replaced_at = wait_for(replaced, 'a replacement replica to answer',
                               420, serve_stack.bids)
        wait_for(lambda: replaced() and bool(gone),
                 'the preempted bid to be cancelled', NOTICE_SECONDS / 60,
                 serve_stack.bids)
        time.sleep(5)  # requests flow over the replacement too
        traffic.stop()
        # Every request from the moment both replicas answered.
        answers = traffic.since(ready_at)
        failed = [a for a in answers if a.replica is None]
        print(f'\nserve: 2 replicas ready {up_seconds:.0f}s after `sky serve up`; '
              f'preempted bid cancelled {gone[0] - notice_at:.0f}s and a '
              f'replacement replica serving {replaced_at - notice_at:.0f}s '
              f'after the notice; failed requests {len(failed)}/{len(answers)}')
        assert failed == [], [(f'{a.at - notice_at:+.1f}s after the notice', a.error)
                               for a in failed[:5]]
        # The preempted bid never went back to Open (it could have won
        # another node); the replacement bid is at the task's limit.
        events = next(b['events'] for b in serve_stack.bids()
                      if b['fid'] == preempted['fid'])
        assert events[-2:] == ['Preempted', 'Terminated'], events
        live = serve_stack.live_bids()
        assert sorted((b['limit_price'], b['status']) for b in live) == [
            ('$4.00', 'Allocated'), ('$4.00', 'Allocated')], live
        assert preempted['fid'] not in {b['fid'] for b in live}
    finally:
        if traffic is not None:
            traffic.stop()
        market.preemption_notice_s = notice_s
        serve_stack.sky('serve', 'down', '-y', SERVICE)
    wait_for(lambda: serve_stack.live_bids() == [], 'no live bid after serve down',
             120, serve_stack.bids)
    # The controller (a process beside the API server) is gone too: one left
    # running would start a new API server when the fixture stops this one.
    wait_for(lambda: 'No existing services' in serve_stack.sky('serve', 'status'),
             'the service to be gone', 180)
    print(f'serve test took {time.monotonic() - started:.0f}s')
