"""Headless Chromium for the tests that look at SkyPilot's dashboard:
Debian's `chromium`, installed when missing (as root: apt-get update first),
driven over its DevTools protocol: a page is loaded, read once the test's
condition holds in it (its scripts rendered what the test reads), and
screenshotted. Only loopback URLs are loaded, and every other address the
page asks for meets a dead proxy."""

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlsplit

from websockets.sync import client as websocket_client

from sky_mithril.emulator.hosts import vm_image

PACKAGE = 'chromium'
WINDOW = (1400, 2300)
POLL_SECONDS = 0.5


def chromium() -> str:
    """The chromium binary, installing Debian's package when it is missing."""
    found = shutil.which(PACKAGE)
    if found is None:
        vm_image.ensure_packages([PACKAGE], lambda line: print(line, flush=True))
        found = shutil.which(PACKAGE)
    if found is None:
        raise RuntimeError(f'Installing Debian\'s {PACKAGE} left no '
                           f'{PACKAGE} on PATH')
    return found


def _command(profile: Path) -> List[str]:
    return [chromium(), '--headless', '--no-sandbox', '--disable-gpu',
            '--no-first-run', '--disable-extensions', '--disable-sync',
            '--disable-background-networking', '--disable-component-update',
            '--disable-default-apps', '--hide-scrollbars', '--no-pings',
            '--disable-domain-reliability',
            '--disable-client-side-phishing-detection',
            # Anything not on loopback (the dashboard's analytics, the
            # browser's own services) goes to a dead proxy on loopback;
            # loopback itself is never proxied.
            '--proxy-server=http://127.0.0.1:9',
            '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
            f'--user-data-dir={profile}',
            f'--window-size={WINDOW[0]},{WINDOW[1]}', 'about:blank']


def _page_socket(profile: Path, deadline: float) -> str:
    """The DevTools WebSocket of the browser's page, once it listens
    (Chromium writes its port to DevToolsActivePort in the profile)."""
    port_file = profile / 'DevToolsActivePort'
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list',
                                        timeout=10) as answer:
                pages = [t for t in json.load(answer) if t['type'] == 'page']
            if pages:
                return pages[0]['webSocketDebuggerUrl']
        time.sleep(POLL_SECONDS)
    raise TimeoutError('chromium never opened its DevTools port')


def load(url: str, profile: Path, screenshot: Path, ready: str,
         timeout: float = 180) -> str:
    """The page's DOM once the JavaScript expression `ready` is true in it;
    a PNG of it at `screenshot`. TimeoutError with the page's text when
    `ready` stays false for `timeout` seconds."""
    if urlsplit(url).hostname not in ('127.0.0.1', 'localhost'):
        raise ValueError(f'{url}: the tests load only loopback pages')
    deadline = time.monotonic() + timeout
    profile.mkdir(parents=True, exist_ok=True)
    (profile / 'DevToolsActivePort').unlink(missing_ok=True)  # a last run's
    browser = subprocess.Popen(_command(profile), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        with websocket_client.connect(_page_socket(profile, deadline),
                                      max_size=None) as page:
            ids = itertools.count(1)

            def call(method: str, **params: Any) -> Dict[str, Any]:
                sent = next(ids)
                page.send(json.dumps({'id': sent, 'method': method,
                                      'params': params}))
                while True:
                    answer = json.loads(page.recv(timeout=max(
                        1.0, deadline - time.monotonic())))
                    if answer.get('id') == sent:
                        if 'error' in answer:
                            raise RuntimeError(f'{method}: {answer["error"]}')
                        return answer['result']

            def evaluate(expression: str) -> Any:
                return call('Runtime.evaluate', expression=expression,
                            returnByValue=True)['result'].get('value')

            call('Page.navigate', url=url)
            while not evaluate(f'Boolean({ready})'):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f'{url} never showed what the test waits for '
                        f'({ready}); it shows: '
                        f'{evaluate("document.body && document.body.innerText")!r}')
                time.sleep(POLL_SECONDS)
            dom = evaluate('document.documentElement.outerHTML')
            screenshot.write_bytes(base64.b64decode(
                call('Page.captureScreenshot', format='png')['data']))
            return dom
    finally:
        browser.kill()
        browser.wait()
