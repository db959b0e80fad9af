"""Chaos soak: no Mithril bid is leaked or doubled under API faults and Ctrl-C.

Runs cycles of a cluster's life (launch 1 or 2 nodes → status → every third
cycle stop, status, start, status → down) through the real provisioner
functions against an in-process `EmulatorServer` whose /v2 API injects every
fault kind (429 with Retry-After 0 or 1 s, 5xx, latency, connection reset,
committed-then-lost responses, and bid POSTs answered with a 5xx or a reset
and committed later). Some launches and starts are interrupted at a
random moment with a real signal sent to this process from a timer thread:
SIGINT (Ctrl-C) or SIGTERM (what `sky api cancel` sends SkyPilot's request
worker, whose handler raises KeyboardInterrupt, as the soak's does). With the
injected latency, many land while a request is in flight.
The provisioner's clients get a 3 s retry budget so failures surface fast,
and its late-commit window shrinks to 2 wall seconds (1,200 emulated at 600x)
as the emulator's clock runs fast: each cycle's late commits land 6 to 300
emulated seconds after the answer, inside the window, where the provisioner
promises never to POST a bid again.

What follows a failed step is what SkyPilot 0.14.1 or its user would do:
  * launch/start raises an Exception (StopFailoverError included): SkyPilot's
    `bulk_provision` tears the cluster down (terminate a new cluster, stop a
    restarted one), up to 3 tries (its 5 s pause between them skipped); if
    that fails too the user repeats `sky down`/`sky stop` until it works.
    Then the user runs `sky launch`/`sky start` again (3 attempts per cycle).
  * launch/start is interrupted: SkyPilot tears nothing down; the provisioner
    promises that it cancelled the bid it placed (or paused again the bid it
    resumed) before the KeyboardInterrupt left. The user then tries again.
  * `sky status -r`, `sky stop` or `sky down` raises: the user repeats it.

The emulator's control API (never faulted) is the ground truth. A bid is
*leaked* when it is live while no cluster of its name is meant to exist: after
an interrupted or torn-down launch, after `sky down` returned, or at the end.
A *duplicate* is a second bid created by one run_instances call. A background
monitor also records any moment when one name has two live bids.

`--seed` fixes the fault draws and the signal plan, but not timing (how many
polls a launch takes), so two runs with one seed can still differ.
"""

import argparse
import collections
import contextlib
import dataclasses
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Set, TypeVar)

import requests
from sky.provision import common
from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.api import client as client_lib
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.devtools.provisioning import provision_config
from sky_mithril.emulator.faults import FAULT_KINDS, FaultRule
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner

PROJECT = 'proj_emulator'
REGION = 'us-central3-a'
INSTANCE_TYPE = 'a100-80gb.sxm.1x'
LIMIT_PRICE = '32.00'
NAME_PREFIX = 'chaos-'
CLUSTER_NAMES = 4  # names are reused, so old Terminated bids share them
PUBLIC_KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIChaosSoakKeyChaosSoakKey'
              'ChaosSoak0000 chaos@soak')
SPEED = 600.0
MAX_RETRY_SECONDS = 3.0
LATE_COMMIT_WINDOW_S = 2.0
LATE_COMMIT_POLL_S = 0.1
LATE_COMMIT_DELAYS_S = (6.0, 60.0, 300.0)  # emulated
PROVISION_TIMEOUT_S = '60'
SKYPILOT_TEARDOWN_TRIES = 3  # sky.provision.provisioner._MAX_RETRY
USER_TRIES = 8
LAUNCH_ATTEMPTS = 3
INTERRUPT_PROBABILITY = 0.4
INTERRUPT_MAX_DELAY_S = 1.5
SETTLE_TIMEOUT_S = 10.0

UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED
TERMINATED = 'Terminated'
_T = TypeVar('_T')


def fault_rules(retry_after_s: int,
                late_commit_s: float = LATE_COMMIT_DELAYS_S[0]
                ) -> List[Dict[str, Any]]:
    """Faults on every /v2 endpoint, heavier on the bid POST (the risky
    call); each cycle draws `retry_after_s` (0 or 1) and `late_commit_s`
    anew."""
    return [
        FaultRule(method='POST', path='/v2/spot/bids', rate_limit=0.1,
                  retry_after_s=retry_after_s, server_error=0.1, reset=0.1,
                  lost_response=0.1, late_commit=0.35,
                  late_commit_s=late_commit_s, latency=0.2,
                  latency_s=0.3).to_dict(),
        FaultRule(path='/v2', rate_limit=0.06, retry_after_s=retry_after_s,
                  server_error=0.05, reset=0.04, lost_response=0.05,
                  latency=0.05, latency_s=0.2).to_dict(),
    ]


@dataclasses.dataclass
class SoakReport:
    """Totals of a soak; `ok` when nothing was leaked, doubled or misread."""

    cycles: int = 0
    seed: int = 0
    seconds: float = 0.0
    faults: Dict[str, int] = dataclasses.field(default_factory=dict)
    client_requests: int = 0
    client_retries: int = 0
    interrupts: Dict[str, int] = dataclasses.field(
        default_factory=collections.Counter)
    held_interrupts: int = 0
    failures: Dict[str, int] = dataclasses.field(
        default_factory=collections.Counter)
    bids_created: int = 0
    leaked: Set[str] = dataclasses.field(default_factory=set)
    duplicates: int = 0
    double_live: Set[str] = dataclasses.field(default_factory=set)
    orphaned: Set[str] = dataclasses.field(default_factory=set)
    wrong_answers: int = 0
    problems: List[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.leaked or self.duplicates or self.double_live or
                    self.orphaned or self.wrong_answers or self.problems)

    def format(self) -> str:
        """The totals, one per line, then any problems and PASS or FAIL."""
        faults = ', '.join(f'{kind} {self.faults.get(kind, 0)}'
                           for kind in FAULT_KINDS)
        failures = ', '.join(f'{step} {n}'
                             for step, n in sorted(self.failures.items()))
        rows = [
            ('cycles', f'{self.cycles} (seed {self.seed}, '
                       f'{self.seconds:.0f} s)'),
            ('faults injected', faults),
            ('client requests', f'{self.client_requests} '
                                f'({self.client_retries} retries)'),
            ('signals in launch', ', '.join(
                f'{name} {self.interrupts.get(name, 0)}'
                for name in ('SIGINT', 'SIGTERM')) +
             f' ({self.held_interrupts} held until a request in flight '
             'finished)'),
            ('steps redone', failures or 'none'),
            ('bids created', str(self.bids_created)),
            ('bids leaked', str(len(self.leaked))),
            ('duplicates', str(self.duplicates)),
            ('two live bids seen', str(len(self.double_live))),
            ('orphaned instances', str(len(self.orphaned))),
            ('wrong answers', str(self.wrong_answers)),
        ]
        lines = [f'{label + ":":<20}{value}' for label, value in rows]
        lines += [f'PROBLEM: {problem}' for problem in self.problems]
        lines.append('RESULT: ' + ('PASS' if self.ok else 'FAIL'))
        return '\n'.join(lines)


class _Clients:
    """Replaces `connection.connect` while installed: every client gets a small
    retry budget, and its request and retry counts are added up."""

    def __init__(self, max_retry_seconds: float) -> None:
        self._max_retry_seconds = max_retry_seconds
        self._original = connection.connect
        self._open: List[client_lib.MithrilClient] = []
        self.requests = 0
        self.retries = 0

    def _connect(self, *args: Any, **kwargs: Any) -> connection.Connection:
        kwargs.setdefault('max_retry_seconds', self._max_retry_seconds)
        conn = self._original(*args, **kwargs)
        self._open.append(conn.client)
        return conn

    def harvest(self) -> None:
        """Counts and closes the clients of provisioner calls that returned."""
        while self._open:
            client = self._open.pop()
            self.requests += client.request_count
            self.retries += client.retry_count
            client.close()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        connection.connect = self._connect  # type: ignore[assignment]
        try:
            yield
        finally:
            connection.connect = self._original
            self.harvest()


class _Interrupt:
    """Sends this process `signum` from a timer thread after `delay_s`, unless
    the `with` block ends first; `_SignalGate` turns it into KeyboardInterrupt
    while the block runs."""

    def __init__(self, delay_s: float, signum: int) -> None:
        self.signum = signum
        self.armed = False
        self.delivered = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(delay_s, self._send)
        self._timer.daemon = True

    def _send(self) -> None:
        with self._lock:
            if self.armed:
                os.kill(os.getpid(), self.signum)

    def __enter__(self) -> '_Interrupt':
        _SignalGate.active = self
        self.armed = True
        self._timer.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self._lock:
            self.armed = False
        self._timer.cancel()
        self._timer.join()
        _SignalGate.active = None


class _SignalGate:
    """SIGINT/SIGTERM handler for the soak: raises KeyboardInterrupt, as
    SkyPilot's request worker does, while an `_Interrupt` is armed; a signal
    that lands after its step ended is dropped."""

    active: Optional[_Interrupt] = None

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        del frame
        interrupt = cls.active
        if interrupt is not None and interrupt.armed and (
                interrupt.signum == signum):
            interrupt.delivered = True
            raise KeyboardInterrupt

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[None]:
        previous = {signum: signal.signal(signum, cls.handle)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class _LiveMonitor:
    """Polls the emulator's state in the background and records every name
    seen with more than one live bid at once."""

    def __init__(self, url: str, report: SoakReport) -> None:
        self._url = url
        self._report = report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='chaos-live-monitor')

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.wait(0.05):
                try:
                    state = session.get(f'{self._url}/_emulator/state',
                                        timeout=10).json()
                except (requests.RequestException, ValueError) as e:
                    self._report.problems.append(f'live monitor stopped: {e}')
                    return
                self._report.double_live.update(_double_live(state['bids']))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


def _double_live(bids: Sequence[Dict[str, Any]]) -> Set[str]:
    """'name: fid, fid' for each soak cluster name with several live bids."""
    live: Dict[str, List[str]] = collections.defaultdict(list)
    for bid in bids:
        if bid['name'].startswith(NAME_PREFIX) and bid['status'] != TERMINATED:
            live[bid['name']].append(bid['fid'])
    return {f'{name}: {", ".join(sorted(fids))}'
            for name, fids in live.items() if len(fids) > 1}


def _plugin_frames(exc: BaseException) -> List[str]:
    """The sky_mithril functions `exc` passed through, outermost first."""
    names = []
    frame = exc.__traceback__
    while frame is not None:
        module = frame.tb_frame.f_globals.get('__name__', '')
        if module.startswith('sky_mithril.') and module != __name__:
            names.append(frame.tb_frame.f_code.co_name)
        frame = frame.tb_next
    return names


@contextlib.contextmanager
def _late_commit_window(seconds: float, poll_s: float) -> Iterator[None]:
    """The provisioner's late-commit window and its polls, shrunk."""
    saved = (cluster_bid.LATE_COMMIT_WINDOW_SECONDS,
             cluster_bid.LATE_COMMIT_POLL_SECONDS)
    cluster_bid.LATE_COMMIT_WINDOW_SECONDS = seconds
    cluster_bid.LATE_COMMIT_POLL_SECONDS = poll_s
    try:
        yield
    finally:
        (cluster_bid.LATE_COMMIT_WINDOW_SECONDS,
         cluster_bid.LATE_COMMIT_POLL_SECONDS) = saved


@contextlib.contextmanager
def _environment(url: str) -> Iterator[None]:
    """Credentials for the emulator, and a config dir with no profiles."""
    with tempfile.TemporaryDirectory(prefix='sky-mithril-chaos-') as home:
        values = {'XDG_CONFIG_HOME': home, 'MITHRIL_API_KEY': 'chaos-soak',
                  'MITHRIL_API_URL': url, 'MITHRIL_PROJECT': PROJECT}
        saved = {key: os.environ.get(key)
                 for key in [*values, 'MITHRIL_PROFILE']}
        os.environ.update(values)
        os.environ.pop('MITHRIL_PROFILE', None)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class _Soak:
    """One soak run against a started emulator."""

    def __init__(self, server: EmulatorServer, seed: int, clients: _Clients,
                 report: SoakReport) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.clients = clients
        self.report = report
        self.provider_config = {'profile': '', 'project_id': PROJECT,
                                'api_url': '', 'region': REGION,
                                'limit_price_per_hour': LIMIT_PRICE,
                                'provision_timeout': PROVISION_TIMEOUT_S}
        self.ssh_key_fid = ''

    # Ground truth from the emulator's control API.

    def control(self, method: str, path: str, **body: Any) -> Any:
        return self.server.control(method, path, **body)

    def bids(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        return [b for b in self.control('GET', 'state')['bids']
                if b['name'].startswith(NAME_PREFIX) and
                (name is None or b['name'] == name)]

    def live(self, name: str) -> List[Dict[str, Any]]:
        return [b for b in self.bids(name) if b['status'] != TERMINATED]

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def expect_none_live(self, name: str, when: str) -> None:
        for bid in self.live(name):
            if bid['fid'] not in self.report.leaked:
                self.report.leaked.add(bid['fid'])
                self.problem(f'{when}: bid {bid["fid"]} of {name} is still '
                             f'{bid["status"]}')

    def settle(self, name: str, statuses: Set[str]) -> None:
        """Waits until every instance of the live bid is in `statuses`."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            live = self.live(name)
            if live and live[0]['instances'] and all(
                    i['status'] in statuses for i in live[0]['instances']):
                return
            time.sleep(0.05)
        self.problem(f'{name} never reached {sorted(statuses)}')

    # Provisioner calls, as SkyPilot and its user make them.

    def call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        finally:
            self.clients.harvest()

    def repeat(self, step: str, fn: Callable[[], _T]) -> Optional[_T]:
        """The user runs a failing command again, up to USER_TRIES times."""
        for _ in range(USER_TRIES):
            try:
                return self.call(fn)
            except Exception:  # pylint: disable=broad-except
                self.report.failures[step] += 1
        self.problem(f'{step} failed {USER_TRIES} times in a row')
        return None

    def config(self, count: int) -> common.ProvisionConfig:
        return provision_config(dict(self.provider_config), self.ssh_key_fid,
                                INSTANCE_TYPE, count=count,
                                # what bulk_provision always passes
                                resume_stopped_nodes=True)

    def run_instances(self, name: str, count: int,
                      interrupt: Optional[_Interrupt]) -> str:
        """'up', 'failed', or where the signal interrupted run_instances
        ('interrupted in run_instances > acquire > ...')."""
        try:
            with interrupt or contextlib.nullcontext():
                self.call(provisioner.run_instances, REGION, name, name,
                          self.config(count))
            return 'up'
        except KeyboardInterrupt as error:
            where = _plugin_frames(error)
            if 'run_instances' not in where:
                return 'up'  # landed after run_instances returned
            assert interrupt is not None
            self.report.interrupts[signal.Signals(interrupt.signum).name] += 1
            if 'deferred' in where:
                self.report.held_interrupts += 1
            return 'interrupted in ' + ' > '.join(where)
        except Exception:  # pylint: disable=broad-except
            return 'failed'

    def teardown(self, name: str, stop: bool) -> None:
        """bulk_provision's teardown of a failed launch, then the user's."""
        fn = provisioner.stop_instances if stop else provisioner.terminate_instances
        for _ in range(SKYPILOT_TEARDOWN_TRIES):
            try:
                self.call(fn, name, self.provider_config)
                return
            except Exception:  # pylint: disable=broad-except
                self.report.failures['teardown'] += 1
        self.repeat('stop' if stop else 'down',
                    lambda: fn(name, self.provider_config))

    def launch(self, name: str, count: int, restart: bool) -> bool:
        """`sky launch` (or `sky start` when `restart`); True once up."""
        step = 'start' if restart else 'launch'
        for _ in range(LAUNCH_ATTEMPTS):
            before = {b['fid'] for b in self.bids(name)}
            interrupt = (_Interrupt(self.rng.uniform(0, INTERRUPT_MAX_DELAY_S),
                                    self.rng.choice((signal.SIGINT,
                                                     signal.SIGTERM)))
                         if self.rng.random() < INTERRUPT_PROBABILITY else None)
            outcome = self.run_instances(name, count, interrupt)
            created = [b for b in self.bids(name) if b['fid'] not in before]
            if len(created) > 1:
                self.report.duplicates += len(created) - 1
                self.problem(f'one {step} of {name} created '
                             f'{len(created)} bids: '
                             f'{", ".join(b["fid"] for b in created)}')
            if outcome == 'up':
                return True
            if outcome.startswith('interrupted'):
                self.check_undone(name, restart, f'{step} {outcome}')
                continue
            self.report.failures[step] += 1
            self.teardown(name, stop=restart)
            self.check_undone(name, restart, f'failed {step} torn down')
        return False

    def check_undone(self, name: str, restart: bool, when: str) -> None:
        """A new cluster has no live bid left; a restarted one is paused."""
        if not restart:
            self.expect_none_live(name, when)
            return
        for bid in self.live(name):
            if bid['status'] != 'Paused':
                self.problem(f'{when}: bid {bid["fid"]} of {name} is '
                             f'{bid["status"]}, not Paused')

    def query(self, name: str, count: int,
              expected: status_lib.ClusterStatus) -> None:
        """`sky status -r` reads every node of the live bid as `expected`."""
        result = self.repeat(
            'status', lambda: provisioner.query_instances(
                name, name, self.provider_config))
        if result is None:
            return
        fids = self.instance_fids(name)
        wrong = (fids is None or len(fids) != count or
                 sorted(result) != sorted(fids) or
                 any(status != expected for status, _ in result.values()))
        if wrong:
            self.report.wrong_answers += 1
            self.problem(f'status of {name} read {result}, expected '
                         f'{expected} for {fids}')

    def cluster_info(self, name: str, count: int) -> None:
        """SkyPilot's post-launch read lists every node, head first."""
        info = self.repeat('info', lambda: provisioner.get_cluster_info(
            REGION, name, self.provider_config))
        if info is None:
            return
        fids = self.instance_fids(name)
        if fids is None or list(info.instances) != fids or len(fids) != count:
            self.report.wrong_answers += 1
            self.problem(f'cluster info of {name} lists {list(info.instances)}'
                         f', expected {fids}')

    def instance_fids(self, name: str) -> Optional[List[str]]:
        """The instances of the cluster's one live bid, in order."""
        live = self.live(name)
        if len(live) != 1:
            self.problem(f'{name} has {len(live)} live bids, expected 1')
            return None
        return [i['fid'] for i in live[0]['instances']]

    def cycle(self, index: int) -> None:
        name = f'{NAME_PREFIX}{index % CLUSTER_NAMES}'
        count = 1 + index % 2
        self.control('PUT', 'faults',
                     rules=fault_rules(self.rng.choice((0, 1)),
                                       self.rng.choice(LATE_COMMIT_DELAYS_S)))
        if self.launch(name, count, restart=False):
            self.settle(name, {'STATUS_RUNNING'})
            self.cluster_info(name, count)
            self.query(name, count, UP)
            if index % 3 == 2:
                self.repeat('stop', lambda: provisioner.stop_instances(
                    name, self.provider_config))
                self.settle(name, {'STATUS_STOPPING', 'STATUS_PAUSED'})
                self.query(name, count, STOPPED)
                if self.launch(name, count, restart=True):
                    self.settle(name, {'STATUS_RUNNING'})
                    self.query(name, count, UP)
        self.repeat('down', lambda: provisioner.terminate_instances(
            name, self.provider_config))
        self.expect_none_live(name, 'after sky down')
        self.report.cycles += 1

    def finish(self) -> None:
        """Faults off; every bid Terminated, with Terminated instances."""
        self.control('PUT', 'faults', rules=[])
        self.report.faults = self.control('GET', 'faults')['counts']
        bids = self.bids()
        self.report.bids_created = len(bids)
        for bid in bids:
            if bid['status'] != TERMINATED:
                self.expect_none_live(bid['name'], 'at the end')
                continue
            for instance in bid['instances']:
                if instance['status'] != 'STATUS_TERMINATED':
                    self.report.orphaned.add(instance['fid'])
                    self.problem(f'instance {instance["fid"]} of Terminated '
                                 f'bid {bid["fid"]} is {instance["status"]}')
        for seen in sorted(self.report.double_live):
            self.problem(f'two live bids at once: {seen}')


def run_soak(cycles: int = 50,
             seed: int = 0,
             progress: Optional[Callable[[str], None]] = None) -> SoakReport:
    """Runs the soak on a fresh emulator; must run in the main thread (signals
    are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError('the chaos soak must run in the main thread')
    report = SoakReport(seed=seed)
    started = time.monotonic()
    with EmulatorServer(speed=SPEED, seed=seed) as server, \
            _environment(server.url), _SignalGate.installed(), \
            _late_commit_window(LATE_COMMIT_WINDOW_S, LATE_COMMIT_POLL_S):
        clients = _Clients(MAX_RETRY_SECONDS)
        soak = _Soak(server, seed, clients, report)
        with clients.installed():
            conn = connection.connect()
            soak.ssh_key_fid = ssh_key_fid_for(conn, PUBLIC_KEY)
            clients.harvest()
            soak.control('DELETE', 'stats')
            soak.control('PUT', 'faults', rules=fault_rules(1), seed=seed)
            with _LiveMonitor(server.url, report).running():
                for index in range(cycles):
                    soak.cycle(index)
                    if progress is not None:
                        progress(f'cycle {index + 1}/{cycles}: '
                                 f'{len(report.problems)} problems')
            soak.finish()
        report.client_requests = clients.requests
        report.client_retries = clients.retries
    report.seconds = time.monotonic() - started
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m sky_mithril.devtools.chaos --cycles 50 --seed 0`; 0 when the soak passes."""
    parser = argparse.ArgumentParser(
        prog='python -m sky_mithril.devtools.chaos',
        description='Launch, query, stop/start and tear down clusters through '
        'the provisioner against a faulty local emulator, with random SIGINT '
        'and SIGTERM, '
        'and check that no bid is leaked or created twice.')
    parser.add_argument('--cycles', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--verbose', action='store_true',
                        help='show the provisioner\'s log lines')
    args = parser.parse_args(argv)
    plugin_logger = logging.getLogger('sky.sky_mithril')
    previous_level = plugin_logger.level
    if not args.verbose:
        plugin_logger.setLevel(logging.WARNING)
    try:
        report = run_soak(args.cycles, args.seed,
                          progress=lambda line: print(line, file=sys.stderr))
    finally:
        plugin_logger.setLevel(previous_level)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
