"""Fault injection for the emulator's API, so clients are tested against a flaky server.

A `FaultRule` selects requests by method and path, and gives a probability per
fault kind:
  - `rate_limit`: 429 with a `Retry-After` header; the request is not applied.
  - `server_error`: one of `server_error_statuses` (500/502/503); not applied.
  - `latency`: `latency_s` seconds of delay before processing (combines with
    any other kind).
  - `reset`: the connection is dropped before processing; not applied.
  - `lost_response`: the request IS applied, then the connection is dropped
    before any byte of the response is sent ("committed but response lost"),
    so the client sees a connection error and cannot tell it succeeded.
  - `late_commit`: the request is answered at once as failed, by the way
    `late_commit_answer` names (`server_error`: one of
    `server_error_statuses`; `reset`: the connection dropped), and it is
    committed `late_commit_s` seconds later on the market's clock (a
    manual-clock test commits it by advancing the clock that far), as a
    server whose gateway gave up while its backend went on. Only the create
    routes (POST bids, SSH keys, volumes, Kubernetes clusters, API keys)
    defer their commit (`late_commit_delay`); a request they would refuse
    then is dropped. Any other route applies the request at once, as
    `lost_response` does.
`path` is a prefix on segment boundaries (`/v2/spot/bids` matches
`/v2/spot/bids/bid_1/status`) or, if it contains `{`, a route template
(`/v2/spot/bids/{bid_fid}` matches that one route only). The first matching
rule that still has budget (`max_faults`: how many requests it may still fault,
None = unlimited) decides. Draws come from one seeded RNG, so a given sequence
of requests gets the same faults on every run. Paths under `/_emulator/` are
never faulted.

The connection is dropped by aborting uvicorn's transport for the request (the
`send` callable uvicorn hands the app is a method of its per-request cycle,
which holds the transport); under another server `reset` and `lost_response`
raise instead.
"""

import asyncio
import dataclasses
import json
import math
import random
import re
import threading
from typing import (Any, Awaitable, Callable, Dict, List, Mapping, MutableMapping,
                    Optional, Sequence, Tuple)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RATE_LIMIT = 'rate_limit'
SERVER_ERROR = 'server_error'
LATENCY = 'latency'
RESET = 'reset'
LOST_RESPONSE = 'lost_response'
LATE_COMMIT = 'late_commit'
FAULT_KINDS = (RATE_LIMIT, SERVER_ERROR, LATENCY, RESET, LOST_RESPONSE,
               LATE_COMMIT)
# Kinds that replace the normal response; at most one applies per request.
_EXCLUSIVE_KINDS = (RESET, RATE_LIMIT, SERVER_ERROR, LOST_RESPONSE,
                    LATE_COMMIT)
# How a late commit's request is answered.
LATE_COMMIT_ANSWERS = (SERVER_ERROR, RESET)
CONTROL_PREFIX = '/_emulator/'
# Where a late commit's delay rides in the ASGI scope, for the routes.
_LATE_COMMIT_SCOPE_KEY = 'mithril_emulator.late_commit_s'


@dataclasses.dataclass
class FaultRule:
    """Fault probabilities for requests matching `method` ('*' = any) and `path`."""

    method: str = '*'
    path: str = '/'
    rate_limit: float = 0.0
    retry_after_s: int = 1
    server_error: float = 0.0
    server_error_statuses: Tuple[int, ...] = (500, 502, 503)
    latency: float = 0.0
    latency_s: float = 0.5
    reset: float = 0.0
    lost_response: float = 0.0
    late_commit: float = 0.0
    late_commit_s: float = 10.0
    late_commit_answer: str = SERVER_ERROR
    max_faults: Optional[int] = None

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        self.server_error_statuses = tuple(self.server_error_statuses)
        for kind in FAULT_KINDS:
            probability = getattr(self, kind)
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f'{kind} must be a probability in [0, 1]; '
                                 f'got {probability}')
        if sum(getattr(self, kind) for kind in _EXCLUSIVE_KINDS) > 1.0:
            raise ValueError('reset + rate_limit + server_error + '
                             'lost_response + late_commit must not exceed 1')
        if not self.server_error_statuses or any(
                not 500 <= status <= 599
                for status in self.server_error_statuses):
            raise ValueError('server_error_statuses must be 5xx codes')
        if self.retry_after_s < 0 or self.latency_s < 0 or (
                self.late_commit_s < 0):
            raise ValueError('retry_after_s, latency_s and late_commit_s '
                             'must be >= 0')
        if self.late_commit_answer not in LATE_COMMIT_ANSWERS:
            raise ValueError('late_commit_answer must be one of '
                             f'{list(LATE_COMMIT_ANSWERS)}; got '
                             f'{self.late_commit_answer!r}')
        if not self.path.startswith('/'):
            raise ValueError(f'path must start with "/"; got {self.path!r}')
        self._template = (re.compile(
            re.sub(r'\\\{[^/]*?\\\}', '[^/]+', re.escape(self.path)))
                          if '{' in self.path else None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'FaultRule':
        """Reads the control API's JSON form; unknown keys are an error."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f'unknown fault rule keys: {sorted(unknown)}')
        return cls(**data)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data['server_error_statuses'] = list(self.server_error_statuses)
        return data

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ('*', method.upper()):
            return False
        if self._template is not None:
            return self._template.fullmatch(path) is not None
        prefix = self.path.rstrip('/')
        return path == prefix or path.startswith(prefix + '/')


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """What to do to one request: a delay, and at most one failure kind.
    A late commit is answered with `status` (None: the connection dropped)
    and committed `late_commit_s` later."""

    latency_s: float = 0.0
    failure: Optional[str] = None
    status: Optional[int] = None
    retry_after_s: int = 0
    late_commit_s: float = 0.0


class FaultInjector:
    """Seeded, thread-safe decisions over a list of rules, with counts per kind."""

    def __init__(self, rules: Sequence[FaultRule] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules = list(rules)
        self._rng = random.Random(seed)
        self._counts = {kind: 0 for kind in FAULT_KINDS}

    @property
    def rules(self) -> List[FaultRule]:
        with self._lock:
            return list(self._rules)

    def set_rules(self, rules: Sequence[FaultRule], *, seed: Optional[int] = None) -> None:
        """Replaces every rule; with `seed`, also restarts the random sequence."""
        with self._lock:
            self._rules = list(rules)
            if seed is not None:
                self._rng = random.Random(seed)

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = {kind: 0 for kind in FAULT_KINDS}

    def plan(self, method: str, path: str) -> FaultPlan:
        """Decides (and counts) the faults for one request."""
        if path.startswith(CONTROL_PREFIX):
            return FaultPlan()
        with self._lock:
            rule = next((r for r in self._rules
                         if r.matches(method, path) and
                         (r.max_faults is None or r.max_faults > 0)), None)
            if rule is None:
                return FaultPlan()
            latency_s = rule.latency_s if self._rng.random() < rule.latency else 0.0
            failure = None
            draw = self._rng.random()
            for kind in _EXCLUSIVE_KINDS:
                draw -= getattr(rule, kind)
                if draw < 0:
                    failure = kind
                    break
            if not latency_s and failure is None:
                return FaultPlan()
            if rule.max_faults is not None:
                rule.max_faults -= 1
            if latency_s:
                self._counts[LATENCY] += 1
            if failure is not None:
                self._counts[failure] += 1
            status = None
            if failure == RATE_LIMIT:
                status = 429
            elif failure == SERVER_ERROR or (
                    failure == LATE_COMMIT and
                    rule.late_commit_answer == SERVER_ERROR):
                status = self._rng.choice(rule.server_error_statuses)
            return FaultPlan(latency_s=latency_s,
                             failure=failure,
                             status=status,
                             retry_after_s=rule.retry_after_s,
                             late_commit_s=rule.late_commit_s)


def late_commit_delay(scope: Scope) -> Optional[float]:
    """For a create route: None to commit the request now, else the seconds
    of market time after which to commit it (a `late_commit` fault)."""
    return scope.get(_LATE_COMMIT_SCOPE_KEY)


class FaultMiddleware:
    """ASGI middleware applying a FaultInjector's plans; must wrap the app
    directly under uvicorn so that `send` is uvicorn's own."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        plan = self.injector.plan(scope['method'], scope['path'])
        if plan.latency_s:
            await asyncio.sleep(plan.latency_s)
        if plan.failure == RESET:
            await _drop_connection(send)
        elif plan.failure in (RATE_LIMIT, SERVER_ERROR):
            await _send_error(send, plan)
        elif plan.failure == LOST_RESPONSE:
            await self.app(scope, receive, _discard)
            await _drop_connection(send)
        elif plan.failure == LATE_COMMIT:
            scope[_LATE_COMMIT_SCOPE_KEY] = plan.late_commit_s
            await self.app(scope, receive, _discard)
            if plan.status is None:
                await _drop_connection(send)
            else:
                await _send_error(send, plan)
        else:
            await self.app(scope, receive, send)


async def _discard(message: Message) -> None:
    del message


async def _send_error(send: Send, plan: FaultPlan) -> None:
    assert plan.status is not None
    if plan.status == 429:
        detail = 'Rate limit exceeded (emulated fault)'
    else:
        detail = 'Server error (emulated fault)'
    body = json.dumps({'detail': detail}).encode()
    headers = [(b'content-type', b'application/json'),
               (b'content-length', str(len(body)).encode())]
    if plan.status == 429:
        headers.append(
            (b'retry-after', str(math.ceil(plan.retry_after_s)).encode()))
    await send({'type': 'http.response.start', 'status': plan.status,
                'headers': headers})
    await send({'type': 'http.response.body', 'body': body})


async def _drop_connection(send: Send) -> None:
    """Closes the client's connection at once, without a response."""
    cycle = getattr(send, '__self__', None)
    transport = getattr(cycle, 'transport', None)
    if transport is None:
        raise RuntimeError('dropping a connection needs uvicorn as the server '
                           'and FaultMiddleware as the outermost app')
    transport.abort()
    # Let uvicorn see the connection is gone before the app returns, so it
    # does not try to answer with a 500.
    await asyncio.sleep(0)
