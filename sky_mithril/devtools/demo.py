"""`sky-mithril demo`: a real `sky launch --infra mithril` on a local market.

Starts the emulator with SSH hosts in network namespaces, an isolated
SkyPilot home with the plugin enabled, launches `examples/hello.yaml`, shows
the task's output, tears everything down and proves nothing was left behind.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

from sky_mithril.catalog import catalog_files
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

CLUSTER = 'mithril-demo'
STEPS = 6


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


def _step(number: int, text: str) -> None:
    print(f'\n[{number}/{STEPS}] {text}', flush=True)


def _sky(box: SkySandbox, args: List[str], what: str) -> None:
    print(f'$ sky {" ".join(args)}', flush=True)
    if box.sky(args, stream=True, timeout=900).returncode != 0:
        raise DemoError(f'`sky {" ".join(args)}` failed ({what}); see above.')


def _live_bids(emulator: EmulatorServer) -> List[str]:
    with emulator.market.caught_up(emulator.lock):
        state = emulator.market.dump_state()
    return [f'{b["fid"]} ({b["status"]})' for b in state['bids']
            if b['status'] != 'Terminated']


def _namespaces(prefix: str) -> List[str]:
    listing = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                             text=True, check=False).stdout
    return [line.split()[0] for line in listing.splitlines()
            if line.startswith(prefix)]


def run_demo(keep_files: bool = False) -> int:
    """Runs the demo; returns a process exit code."""
    if os.geteuid() != 0:
        raise DemoError('The demo turns each Mithril instance into a real SSH '
                        'host in a network namespace, which needs root. Run it '
                        'as root (e.g. `sudo sky-mithril demo`).')
    from sky_mithril.emulator.hosts.namespace import NamespaceHosts  # pylint: disable=import-outside-toplevel
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix='sky-mithril-demo-'))
    _step(1, 'Preparing the VM image: Python 3.10, uv and a warmed package '
          'cache (minutes the first time, seconds after)')
    hosts = NamespaceHosts(progress=lambda line: print(f'      {line}', flush=True))
    try:
        _step(2, 'Starting the Mithril emulator on the hosts\' bridge')
        with EmulatorServer(hosts=hosts, speed=60,
                            host=hosts.api_address) as emulator:
            print(f'      {emulator.url} (auction every 2 s of wall time)')
            box = SkySandbox(root, api_url=emulator.url, api_key='demo-key')
            print(f'      SkyPilot home with the plugin enabled: {box.home}')
            try:
                _step(3, 'Checking Mithril access')
                _sky(box, ['check', 'mithril'], 'Mithril is not enabled')
                _step(4, 'Launching examples/hello.yaml on Mithril')
                _sky(box, ['launch', '-y', '-c', CLUSTER, '--infra', 'mithril',
                           str(catalog_files.example_path('hello.yaml'))],
                     'the launch')
                _step(5, 'Tearing the cluster down')
                _sky(box, ['down', '-y', CLUSTER], 'the teardown')
            finally:
                box.stop_api_server()
            leftover_bids = _live_bids(emulator)
    finally:
        prefix = hosts.prefix
        hosts.close()
        if not keep_files:
            shutil.rmtree(root, ignore_errors=True)
    _step(6, 'Checking that nothing was left behind')
    leftover_hosts = _namespaces(prefix)
    if leftover_bids or leftover_hosts:
        raise DemoError(f'Left behind: bids {leftover_bids}, hosts '
                        f'{leftover_hosts}.')
    print(f'      No open or allocated bid, no host, no API server left. '
          f'Demo finished in {time.monotonic() - started:.0f}s.')
    return 0
