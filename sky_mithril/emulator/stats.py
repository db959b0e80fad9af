"""Request counting for the emulator's API, so tests and benchmarks can see the
calls a client made (`GET /_emulator/stats`).

`CountingMiddleware` counts each API request under its route template
("GET /v2/spot/bids/{bid_fid}") before any fault is injected; control
endpoints (`/_emulator/...`) are not counted.
"""

import collections
import threading
from typing import Any, Dict

import fastapi
from fastapi.routing import APIRoute

from sky_mithril.emulator.faults import CONTROL_PREFIX, ASGIApp, Receive, Scope, Send


class RequestStats:
    """Requests received per "METHOD /route/{template}", thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_route: Dict[str, int] = collections.Counter()

    def record(self, method: str, route: str) -> None:
        with self._lock:
            self._by_route[f'{method} {route}'] += 1

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                'total': sum(self._by_route.values()),
                'by_route': dict(self._by_route),
            }

    def reset(self) -> None:
        with self._lock:
            self._by_route.clear()


class CountingMiddleware:
    """Counts each API request under its route template (before any fault)."""

    def __init__(self, app: ASGIApp, router: fastapi.APIRouter,
                 stats: RequestStats) -> None:
        self.app = app
        self.router = router
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] == 'http' and not scope['path'].startswith(
                CONTROL_PREFIX):
            self.stats.record(scope['method'], self._route_template(scope['path']))
        await self.app(scope, receive, send)

    def _route_template(self, path: str) -> str:
        for route in self.router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(path):
                return route.path
        return path
