"""The emulator as a running server: Mithril's v2 HTTP API over a `Market`,
plus `/_emulator/` control endpoints.

`build_app` makes the FastAPI app from the routers of `api_routes` (the v2
API, wire format in `wire`) and `control_routes` (the control endpoints, listed
there), behind the request counter (`stats`) and the fault injector (`faults`),
its answers dated by the market's clock.
`EmulatorServer` runs it with uvicorn in a background thread on loopback, with
a ticker thread that brings the market up to `clock.now()` every
`tick_interval_s` of wall time. All market access, from requests and from the
ticker, holds one lock. Each Kubernetes cluster's minimal kube API is served
under `/_kube/` (`kube`); with real SSH hosts, its control node gets a
kubeconfig pointing there.
"""

import csv
import datetime
import email.utils
import ipaddress
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Optional, Union

import fastapi
import uvicorn
from fastapi import Request
from fastapi.responses import JSONResponse

from sky_mithril.emulator import default_market
from sky_mithril.emulator import kube
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator import wire
from sky_mithril.emulator.api_routes import api_router
from sky_mithril.emulator.clock import Clock, ScaledClock
from sky_mithril.emulator.control_routes import control_router
from sky_mithril.emulator.faults import (ASGIApp, FaultInjector,
                                         FaultMiddleware, Message, Receive,
                                         Scope, Send)
from sky_mithril.emulator.hosts import HostBackend
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market
from sky_mithril.emulator.stats import CountingMiddleware, RequestStats

logger = logging.getLogger('sky.sky_mithril.emulator')

LOOPBACK = '127.0.0.1'
WILDCARDS = ('0.0.0.0', '::')


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == 'localhost'


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _http_url(host: str, port: int) -> str:
    return f'http://[{host}]:{port}' if ':' in host else f'http://{host}:{port}'


def load_catalog(path: Optional[Union[str, Path]] = None) -> List[Dict[str, str]]:
    """Rows of a catalog CSV (`InstanceType, ..., Price, SpotPrice, Region,
    GpuInfo`; Price is the auction floor): `path`, else the emulator's own
    default market (`default_market`)."""
    with open(path or default_market.DATA_PATH, newline='',
              encoding='utf-8') as f:
        return list(csv.DictReader(f))


class _EmulatorAPI(fastapi.FastAPI):
    """FastAPI with the request counter and the fault injector outermost, outside
    Starlette's error handling, so faults act on uvicorn's own connection."""

    def __init__(self, *, faults: FaultInjector, stats: RequestStats,
                 counted_router: fastapi.APIRouter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = faults
        self.stats = stats
        self.counted_router = counted_router

    def build_middleware_stack(self) -> ASGIApp:
        return CountingMiddleware(
            FaultMiddleware(super().build_middleware_stack(), self.faults),
            self.counted_router, self.stats)


class _MarketDate:
    """Dates every answer by the market's clock, as a server's `Date`
    header follows its own clock: clients set the times the market checks
    (an API key's expiry) from it. Inside the fault injector, which needs
    uvicorn's own `send`."""

    def __init__(self, app: ASGIApp, clock: Clock) -> None:
        self._app = app
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http':
            await self._app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message['type'] == 'http.response.start':
                date = email.utils.format_datetime(
                    self._clock.now().astimezone(datetime.timezone.utc),
                    usegmt=True)
                message = {**message, 'headers': [
                    *(h for h in message.get('headers', [])
                      if h[0].lower() != b'date'),
                    (b'date', date.encode())]}
            await send(message)

        await self._app(scope, receive, dated)


# Refusals as HTTP errors, in the shapes `wire` describes.


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    del request
    return JSONResponse({'detail': str(exc)}, status_code=404)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    del request
    assert isinstance(exc, wire.UnprocessableRequest)
    return JSONResponse(
        {
            'detail': [{
                'loc': list(e.loc),
                'msg': e.msg,
                'type': e.type
            } for e in exc.errors]
        },
        status_code=422)


async def _invalid_state(request: Request, exc: Exception) -> JSONResponse:
    del request
    return JSONResponse({'detail': str(exc)}, status_code=409)


async def _declined(request: Request, exc: Exception) -> JSONResponse:
    del request
    assert isinstance(exc, market_lib.Declined)
    return JSONResponse({'detail': str(exc), 'reason': exc.reason},
                        status_code=422)


async def _not_supported(request: Request, exc: Exception) -> JSONResponse:
    del request
    return JSONResponse({'detail': str(exc)}, status_code=501)


def build_app(market: Market,
              *,
              api_key: Optional[str] = None,
              faults: Optional[FaultInjector] = None,
              lock: Optional[ContextManager[Any]] = None) -> fastapi.FastAPI:
    """The emulator's ASGI app over `market`.

    Any non-empty bearer token is accepted unless `api_key` is given, then only
    that one; a key minted through `/v2/api-keys` only while it is live. `lock` (made if not given) guards every market access; share it
    with whatever else touches the market (the server's ticker). Both are also
    on `app.state.market` and `app.state.lock`.
    """
    market_lock = lock or threading.RLock()
    injector = faults or FaultInjector()
    stats = RequestStats()
    v2 = api_router(market, market_lock, api_key)
    app = _EmulatorAPI(faults=injector,
                       stats=stats,
                       counted_router=v2,
                       title='Mithril API emulator',
                       openapi_url=None,
                       docs_url=None,
                       redoc_url=None)
    app.state.market = market
    app.state.lock = market_lock
    app.add_middleware(_MarketDate, clock=market.clock)

    app.add_exception_handler(market_lib.NotFound, _not_found)
    app.add_exception_handler(wire.UnprocessableRequest, _invalid_request)
    app.add_exception_handler(market_lib.InvalidState, _invalid_state)
    app.add_exception_handler(market_lib.Declined, _declined)
    app.add_exception_handler(market_lib.NotSupported, _not_supported)
    app.include_router(v2)
    app.include_router(kube.kube_router(market, market_lock))
    app.include_router(
        control_router(market, market_lock, injector, stats))
    return app


class EmulatorServer:
    """The emulator on a loopback port, in background threads; a context manager.
    With `host` another address (the hosts' bridge) it listens there too, at
    the same port, and each host reaches it at its own loopback
    (`HostBackend.reach_api_on_loopback`): clients everywhere use `url`.

    Without `market`, builds one from the catalog (`catalog_path`, default the
    emulator's default market with a week of price history) on a
    `ScaledClock(speed)` with `hosts` (default placeholder
    hosts), `capacity`, `clearing_interval_s` and `seed`; those arguments are
    ignored when a market is given. `seed` also seeds the default fault
    injector. Construct, adjust `.market` if needed (holding `.lock` once
    started), then `start()` (or `with`). `stop()` shuts the server down and
    closes the market's host backend.
    """

    def __init__(self,
                 market: Optional[Market] = None,
                 *,
                 host: str = '127.0.0.1',
                 port: int = 0,
                 speed: float = 60.0,
                 api_key: Optional[str] = None,
                 hosts: Optional[HostBackend] = None,
                 catalog_path: Optional[Union[str, Path]] = None,
                 seed: int = 0,
                 capacity: int = market_lib.DEFAULT_CAPACITY,
                 clearing_interval_s: float = 120.0,
                 faults: Optional[FaultInjector] = None,
                 tick_interval_s: float = 0.2) -> None:
        if market is None:
            market = Market(ScaledClock(speed),
                            hosts or PlaceholderHosts(),
                            load_catalog(catalog_path),
                            capacity=capacity,
                            clearing_interval_s=clearing_interval_s,
                            seed=seed)
            if catalog_path is None:
                default_market.seed_history(market, seed)
        self.market = market
        self.faults = faults or FaultInjector(seed=seed)
        self.lock = threading.RLock()
        self.app = build_app(self.market,
                             api_key=api_key,
                             faults=self.faults,
                             lock=self.lock)
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None
        self._tick_interval_s = tick_interval_s
        self._stopping = threading.Event()
        self._server: Optional[uvicorn.Server] = None
        self._threads: List[threading.Thread] = []

    @property
    def url(self) -> str:
        """Base URL to give API clients (`MITHRIL_API_URL`): always on
        loopback, the only plain-http URL the plugin sends a key to."""
        if self.port is None:
            raise RuntimeError('the emulator server is not started')
        return _http_url(self.host if _is_loopback(self.host) else LOOPBACK,
                         self.port)

    def _bind(self) -> List[socket.socket]:
        """A listening socket on `host`, and when that is one address off
        loopback (the hosts' bridge) one on loopback at the same port first,
        so `url` answers on this machine as well."""
        if _is_loopback(self.host) or self.host in WILDCARDS:
            return [_listening_socket(self.host, self._requested_port)]
        loopback = _listening_socket(LOOPBACK, self._requested_port)
        try:
            return [loopback, _listening_socket(self.host,
                                                loopback.getsockname()[1])]
        except OSError:
            loopback.close()
            raise

    def start(self, timeout_s: float = 10.0) -> 'EmulatorServer':
        """Binds the port, starts serving and ticking; returns once it accepts requests."""
        if self._server is not None:
            return self
        if self._stopping.is_set():
            raise RuntimeError('a stopped emulator server cannot be restarted')
        sockets = self._bind()
        self.port = sockets[0].getsockname()[1]
        config = uvicorn.Config(self.app,
                                log_config=None,
                                log_level='warning',
                                access_log=False,
                                lifespan='off',
                                date_header=False,
                                ws='none',
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        serve = threading.Thread(target=self._server.run,
                                 kwargs={'sockets': sockets},
                                 name=f'mithril-emulator-{self.port}',
                                 daemon=True)
        tick = threading.Thread(target=self._tick_forever,
                                name=f'mithril-emulator-tick-{self.port}',
                                daemon=True)
        self._threads = [serve, tick]
        with self.lock:
            self.market.hosts.reach_api_on_loopback(self.port)
            if not isinstance(self.market.hosts, PlaceholderHosts):
                clusters = self.market.kubernetes_clusters
                clusters.control_node_ready = kube.KubeconfigInstaller(
                    _http_url(self.host, self.port),
                    clusters.control_node_private_key, self.market.hosts)
        serve.start()
        tick.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not serve.is_alive() or time.monotonic() > deadline:
                self.stop()
                for sock in sockets:
                    sock.close()
                raise RuntimeError('the emulator server did not start')
            time.sleep(0.01)
        return self

    def control(self, method: str, path: str, **body: Any) -> Any:
        """Calls a `/_emulator/` control endpoint over HTTP; returns its JSON."""
        import requests  # pylint: disable=import-outside-toplevel
        response = requests.request(method, f'{self.url}/_emulator/{path}',
                                    json=body or None, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None

    def _tick_forever(self) -> None:
        while not self._stopping.wait(self._tick_interval_s):
            try:
                with self.lock:
                    self.market.tick()
            except Exception:  # pylint: disable=broad-except
                logger.exception('Emulator market tick failed')

    def stop(self) -> None:
        """Stops serving and ticking (if started), then closes the host backend.
        Idempotent."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        self._server = None
        self._threads = []
        with self.lock:
            self.market.hosts.close()

    def __enter__(self) -> 'EmulatorServer':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
