"""Headless Chromium for the tests that look at SkyPilot's dashboard:
Debian's `chromium`, installed when missing (as root: apt-get update first),
driven from its command line: the DOM after the page's scripts ran
(`--dump-dom`) and a screenshot, from one load. Only loopback URLs are
loaded, and every other address the page asks for meets a dead proxy."""

import shutil
import subprocess
from pathlib import Path
from typing import List
from urllib.parse import urlsplit

from sky_mithril.emulator.hosts import vm_image

PACKAGE = 'chromium'
VIRTUAL_TIME_MS = 20000
"""How long the page may run (virtual time: its timers and fetches) before
Chromium dumps it: the dashboard renders after several API calls."""
WINDOW = '1400,2300'


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


def _command(url: str, profile: Path) -> List[str]:
    host = urlsplit(url).hostname
    if host not in ('127.0.0.1', 'localhost'):
        raise ValueError(f'{url}: the tests load only loopback pages')
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
            f'--user-data-dir={profile}', f'--window-size={WINDOW}',
            f'--virtual-time-budget={VIRTUAL_TIME_MS}']


def load(url: str, profile: Path, screenshot: Path,
         timeout: float = 180) -> str:
    """The page's DOM once its scripts have run; a PNG of it at
    `screenshot` (one page load for both)."""
    done = subprocess.run([*_command(url, profile), '--dump-dom',
                           f'--screenshot={screenshot}', url],
                          capture_output=True, text=True, timeout=timeout,
                          check=True, stdin=subprocess.DEVNULL)
    if not screenshot.is_file():
        raise RuntimeError(f'chromium wrote no screenshot to {screenshot}')
    return done.stdout
