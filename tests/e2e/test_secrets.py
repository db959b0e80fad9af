"""The Mithril API key never lands anywhere but Mithril's own credentials file.

A recognisable random key (`sk-mithril-SECRET-<hex>`, the e2e tier's
SANDBOX_KEY) is in the tier's shared sandbox's
`~/.config/mithril/config.yaml`, and the real `sky` CLI uses it on every path
that touches credentials: `sky check`, a dry run, a real launch that places a
bid and gives up (no capacity), and real launches whose key is rejected with
401 (by an emulator that wants another key, and by a server that echoes the
Authorization header back in its error body and headers).

Then every file in the sandbox (written by this module and by the e2e
modules that ran before it; HOME included: ~/.sky with the generated
cluster YAMLs, the API server's log and request logs and databases, ~/sky_logs
with the provision logs), every file under the temp directory changed
meanwhile, and the captured output of every command are searched for the key:
the only hit allowed is the credentials file itself (mode 600). A cluster's
nodes get a key minted for that cluster instead (`node_keys`); the launch
that gives up revokes the one it minted, and no command prints a minted key.

The nodes' disks are searched by the end-to-end hello test
(tests/host/test_sky_on_namespace_hosts.py), which launches onto namespace SSH
hosts with such a key anyway: there, no file may hold the account's key.
The search itself is in tests/helpers/secret_scan.py.
"""

import http.server
import json
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import requests
import yaml

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

from tests.helpers.sandbox import SANDBOX_KEY, profile_changed, set_profile
from tests.helpers.secret_scan import files_holding_key, files_under

pytestmark = pytest.mark.e2e

KEY = SANDBOX_KEY
OTHER_KEY = 'sk-mithril-OTHER-' + secrets.token_hex(12)
CREDENTIALS = Path('.config') / 'mithril' / 'config.yaml'
PERMISSIONS_WARNING = ('~/.config/mithril/config.yaml is readable by other '
                       'users; run `chmod 600 ~/.config/mithril/config.yaml`.')
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


class RecordingSandbox:
    """The sandbox, and the captured output of every command run in it."""

    def __init__(self, box: SkySandbox, emulator: EmulatorServer) -> None:
        self.box = box
        self.emulator = emulator
        self.transcript: List[Tuple[List[str], str, str]] = []

    def sky(self, *args: str, timeout: float = 600) -> Tuple[int, str]:
        result = self.box.sky(list(args), timeout=timeout)
        self.transcript.append((list(args), result.stdout, result.stderr))
        return result.returncode, _ANSI.sub('', result.stdout + result.stderr)

    @property
    def credentials(self) -> Path:
        return self.box.home / CREDENTIALS

    def set_api_url(self, url: str) -> None:
        set_profile(self.box, api_url=url)

    def api_keys(self) -> List[dict]:
        answer = requests.get(f'{self.emulator.url}/v2/api-keys', timeout=30,
                              headers={'Authorization': f'Bearer {KEY}'})
        answer.raise_for_status()
        return answer.json()

    def bids(self, name_prefix: str) -> List[dict]:
        return [b for b in self.emulator.control('GET', 'state')['bids']
                if b['name'].startswith(name_prefix)]

    def task(self, name: str, resources: dict, mithril: dict,
             run: str = 'echo hi') -> str:
        path = self.box.root / f'{name}.yaml'
        path.write_text(yaml.safe_dump({'resources': resources, 'run': run,
                                        'config': {'mithril': mithril}}))
        return str(path)


class _EchoingHandler(http.server.BaseHTTPRequestHandler):
    """A careless API: 401 to everything, echoing the Authorization header in
    the body and in a header."""

    def _answer(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        auth = self.headers.get('Authorization', '')
        token = auth.split()[-1] if auth else ''
        body = json.dumps({'detail': f'Invalid API key: {auth!r} '
                                     f'(token {token})'}).encode()
        self.send_response(401)
        self.send_header('Content-Type', 'application/json')
        self.send_header('WWW-Authenticate', f'Bearer token="{token}"')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        del format, args


@pytest.fixture(scope='module')
def echoing_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _EchoingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope='module')
def rejecting() -> Iterator[EmulatorServer]:
    """An emulator that wants another key: ours gets 401."""
    with EmulatorServer(api_key=OTHER_KEY) as server:
        yield server


@pytest.fixture(scope='module')
def started() -> float:
    return time.time()


@pytest.fixture(scope='module')
def recording_sandbox(started, sky_sandbox) -> Iterator[RecordingSandbox]:
    """The tier's sandbox pointed at an emulator that takes only KEY."""
    del started
    with EmulatorServer(api_key=KEY, speed=60) as emulator:
        with profile_changed(sky_sandbox, api_url=emulator.url):
            yield RecordingSandbox(sky_sandbox, emulator)


def test_check_and_dry_run(recording_sandbox):
    code, out = recording_sandbox.sky('check', 'mithril')
    assert code == 0 and 'Mithril: enabled' in out, out
    code, out = recording_sandbox.sky('launch', '--dryrun', '-y', '--infra', 'mithril',
                                      recording_sandbox.task('dry', {'accelerators': 'A100:1'},
                                                 {'limit_price': 4}))
    assert code == 0, out
    assert 'Mithril limit price: $4.00/h' in out


def test_launch_that_gives_up_after_placing_the_bid(recording_sandbox):
    """Credentials used for real (SSH key registered, bid placed, polled,
    cancelled), the cluster YAML rendered and the provision log written."""
    recording_sandbox.emulator.control('POST', 'capacity', instance_type='h100-80gb.sxm.1x',
                                       region='us-central2-a', capacity=0)
    code, out = recording_sandbox.sky('launch', '-y', '-c', 'sec-timeout', '--infra',
                                      'mithril/us-central2-a',
                                      recording_sandbox.task('timeout', {'accelerators': 'H100:1'},
                                                 {'limit_price': 4, 'provision_timeout': 5}))
    assert code != 0, out
    assert 'was not allocated within 5s' in out, out
    assert [b['status'] for b in recording_sandbox.bids('sec-timeout')] == ['Terminated']
    recording_sandbox.sky('logs', '--provision', 'sec-timeout')
    recording_sandbox.sky('down', '-y', 'sec-timeout')
    generated = list((recording_sandbox.box.home / '.sky' / 'generated').rglob('*sec-timeout*'))
    assert generated, 'the launch should have rendered a cluster YAML'
    # The key it minted for the cluster's nodes was revoked with the bid.
    minted = [k for k in recording_sandbox.api_keys()
              if k['name'].startswith('sky-sec-timeout-')]
    assert minted and all(k['deactivated_at'] for k in minted), minted
    clusters = recording_sandbox.box.home / '.sky' / 'mithril' / 'clusters'
    assert not list(clusters.glob('sec-timeout*')), list(clusters.iterdir())


def test_rejected_key(recording_sandbox, rejecting, echoing_url):
    """401 from an emulator that wants another key, and from a server that
    echoes the key back: the launches (Mithril still enabled) and `sky check`
    show the rejection, never the key."""
    task = recording_sandbox.task('rejected', {'accelerators': 'A100:1'},
                                  {'limit_price': 4, 'provision_timeout': 5})
    good_url = recording_sandbox.emulator.url
    try:
        for name, url in (('sec-rejected', rejecting.url),
                          ('sec-echoed', echoing_url)):
            recording_sandbox.set_api_url(url)
            code, out = recording_sandbox.sky('launch', '-y', '-c', name, '--infra',
                                              'mithril', task)
            assert code != 0, out
            assert 'Mithril rejected the API key (401)' in out, out
            if url == echoing_url:
                assert '<redacted>' in out, out
        for url in (rejecting.url, echoing_url):
            recording_sandbox.set_api_url(url)
            code, out = recording_sandbox.sky('check', 'mithril')
            assert 'Mithril: disabled' in out and '401' in out, out
    finally:
        recording_sandbox.set_api_url(good_url)
    code, out = recording_sandbox.sky('check', 'mithril')
    assert 'Mithril: enabled' in out, out
    assert rejecting.control('GET', 'state')['bids'] == []


@pytest.mark.parametrize('mode', [0o644, 0o640], ids=['644', '640'])
def test_check_warns_when_others_can_read_the_credentials(recording_sandbox, mode):
    """`_check_compute_credentials` logs a warning on the API server; it is
    streamed into the `sky check` output the user reads."""
    try:
        recording_sandbox.credentials.chmod(mode)
        code, out = recording_sandbox.sky('check', 'mithril')
    finally:
        recording_sandbox.credentials.chmod(0o600)
    assert code == 0 and 'Mithril: enabled' in out, out
    assert PERMISSIONS_WARNING in out, out
    code, out = recording_sandbox.sky('check', 'mithril')
    assert 'Mithril: enabled' in out and 'readable by other' not in out, out


def test_nothing_written_holds_the_key(recording_sandbox, started):
    """Runs last in the module: searches everything the module's commands
    (and the e2e modules' before it) wrote."""
    home = recording_sandbox.box.home
    credentials = home / CREDENTIALS
    assert KEY in credentials.read_text()
    assert credentials.stat().st_mode & 0o777 == 0o600

    assert recording_sandbox.transcript, 'no command ran'
    for args, stdout, stderr in recording_sandbox.transcript:
        assert KEY not in stdout and KEY not in stderr, args
        # The emulator's minted keys start so; none is ever printed.
        assert 'fkey_' not in stdout and 'fkey_' not in stderr, args

    # Only the user's own file holds it: the nodes get keys of their own.
    hits, searched = files_holding_key(recording_sandbox.box.root, KEY)
    assert hits == [credentials], hits
    written = {p.relative_to(home).parts[:2] for p in files_under(home)}
    for where in (('.sky', 'generated'), ('.sky', 'api_server'),
                  ('sky_logs',)):
        assert any(parts[:len(where)] == where for parts in written), (
            f'nothing under ~/{"/".join(where)}: the search missed the '
            'files it is meant to cover')
    assert searched > 50, searched

    temp = Path(tempfile.gettempdir())
    harness = tuple(p for p in temp.glob('bash_jobs*'))
    hits, _ = files_holding_key(temp, KEY, changed_since=started - 1,
                                skip=(recording_sandbox.box.root, *harness))
    assert hits == [], hits
