"""Mithril's own clients, installed from PyPI at test time and run unchanged
against the emulator, kept on loopback.

Neither can live beside stock SkyPilot (mithril-client pins a SkyPilot fork),
so each is installed once, at a pinned version, into a venv of its own in
the tests' cache folder (`openapi_contract.cache_dir()`, beside the spec's
wheel), under a lock so parallel workers install it once. Where PyPI cannot
be reached `client_venv` raises `ClientUnavailable`, which the tests turn
into a skip; any other failure to install is an error.

`LoopbackGuard` keeps them from reaching anything but 127.0.0.0/8 and notes
each try: a loopback proxy named by the proxy variables (which Rust's reqwest,
httpx and urllib honour) refuses every other host, and in Python clients an
audit hook (`loopback_guard/sitecustomize.py`) refuses a connection or a name
lookup elsewhere. A client that ignored both would go unnoticed.
"""

import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from sky_mithril import files

from tests.helpers import openapi_contract

# Mithril's CLI (`ml`) and SDK, with its OpenAPI-generated client.
MITHRIL_CLIENT = 'mithril-client==0.1.0rc3'
# Mithril's older SDK and its `flow` CLI: the wheel the spec comes from.
FLOW_COMPUTE = openapi_contract.SPEC_WHEEL
PIP_DOWNLOAD_TIMEOUT_S = 120
PIP_INSTALL_TIMEOUT_S = 900
CLIENT_TIMEOUT_S = 120
# Where the audit hook notes what it refused (set for the clients).
NOTES_ENV = 'SKY_MITHRIL_LOOPBACK_NOTES'
_GUARD_SITE = Path(__file__).resolve().parent / 'loopback_guard'
_PROXY_VARIABLES = ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY')
_LOOPBACK_NAMES = '127.0.0.1,localhost'


class ClientUnavailable(Exception):
    """The client's package could not be downloaded (no route to PyPI)."""


def _pip(python: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, '-m', 'pip', *args, '--disable-pip-version-check', '--quiet'],
        capture_output=True, text=True, timeout=timeout, check=False)


def _last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stderr.strip().splitlines() or ['no output'])[-1]


def _check_reachable(requirement: str) -> None:
    """ClientUnavailable unless pip can download `requirement` itself."""
    with tempfile.TemporaryDirectory() as download:
        try:
            result = _pip(sys.executable, 'download', '--no-deps', '--retries',
                          '1', '--timeout', '20', '--dest', download,
                          requirement, timeout=PIP_DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise ClientUnavailable(
                f'pip download {requirement} took over '
                f'{PIP_DOWNLOAD_TIMEOUT_S} s (PyPI unreachable?)') from e
    if result.returncode != 0:
        raise ClientUnavailable(f'pip download {requirement} failed (PyPI '
                                f'unreachable?): {_last_line(result)}')


def client_venv(requirement: str) -> Path:
    """The venv that holds `requirement` (and its dependencies), installed
    on first use; ClientUnavailable when PyPI cannot be reached."""
    folder = openapi_contract.cache_dir() / 'venvs' / requirement.replace(
        '==', '-')
    installed = folder / '.installed'
    if installed.exists():
        return folder
    with files.locked(folder.parent / f'{folder.name}.lock'):
        if installed.exists():
            return folder
        _check_reachable(requirement)
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, '-m', 'venv', str(folder)],
                       check=True, capture_output=True, timeout=120)
        result = _pip(str(folder / 'bin' / 'python'), 'install', requirement,
                      timeout=PIP_INSTALL_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f'pip install {requirement} into {folder} '
                               f'failed: {_last_line(result)}')
        installed.write_text(requirement + '\n')
    return folder


class _RefusingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy on 127.0.0.1 that forwards nothing: each request's
    first line (`CONNECT host:443 ...`, `GET http://host/...`) is noted and
    answered 403."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), _RefuseHandler)
        self.attempts: List[str] = []
        self.attempts_lock = threading.Lock()


class _RefuseHandler(socketserver.StreamRequestHandler):

    def handle(self) -> None:
        line = self.rfile.readline(4096).decode('latin-1').strip()
        assert isinstance(self.server, _RefusingProxy)
        with self.server.attempts_lock:
            self.server.attempts.append(f'through the proxy: {line}')
        self.wfile.write(b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n'
                         b'Connection: close\r\n\r\n')


class LoopbackGuard:
    """A context manager: while it is open, `environment` is what a client
    runs with to be kept on loopback, and `attempts` lists every try it
    made to go elsewhere (empty: it stayed on loopback)."""

    def __init__(self, notes: Path) -> None:
        self._notes = notes
        self._proxy: Optional[_RefusingProxy] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> 'LoopbackGuard':
        self._notes.write_text('')
        self._proxy = _RefusingProxy()
        self._thread = threading.Thread(target=self._proxy.serve_forever,
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proxy is not None and self._thread is not None
        self._proxy.shutdown()
        self._proxy.server_close()
        self._thread.join(timeout=10)

    def environment(self) -> Dict[str, str]:
        """The proxy variables, the audit hook and where it notes."""
        assert self._proxy is not None
        proxy = f'http://127.0.0.1:{self._proxy.server_address[1]}'
        env = {NOTES_ENV: str(self._notes), 'PYTHONPATH': str(_GUARD_SITE)}
        for name in _PROXY_VARIABLES:
            env[name] = env[name.lower()] = proxy
        env['NO_PROXY'] = env['no_proxy'] = _LOOPBACK_NAMES
        return env

    def attempts(self) -> List[str]:
        """Each try to reach beyond loopback, as the proxy or the hook saw it."""
        assert self._proxy is not None
        with self._proxy.attempts_lock:
            through_proxy = list(self._proxy.attempts)
        noted = [f'in Python: {line}'
                 for line in self._notes.read_text().splitlines() if line]
        return through_proxy + noted


def client_environment(home: Path, url: str, api_key: str, project: str,
                       guard: LoopbackGuard) -> Dict[str, str]:
    """A client's whole environment: a private HOME, the emulator as its
    endpoint, kept on loopback; nothing else of this process's (no real
    key, no other venv)."""
    return {
        'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
        'HOME': str(home),
        'LANG': 'C.UTF-8',
        'COLUMNS': '200',
        'MITHRIL_API_URL': url,
        'MITHRIL_API_KEY': api_key,
        'MITHRIL_PROJECT': project,
        **guard.environment(),
    }


def run_client(venv: Path, argv: Sequence[str],
               env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """`argv[0]` of `venv`'s bin (a console script or python) with the rest,
    stdin closed, in `env`; its output as text."""
    return subprocess.run([str(venv / 'bin' / argv[0]), *argv[1:]],
                          env=dict(env), cwd=env['HOME'],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=CLIENT_TIMEOUT_S, check=False)
