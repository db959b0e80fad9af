"""The README's main command, as a user runs it: `sky-mithril demo` (root)
launches examples/hello.yaml with a real `sky launch --infra mithril` on
namespace hosts and leaves nothing behind. On a fresh machine it installs the
OS packages and the VM image first."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('apt-get'),
                       reason='the demo needs root and apt-get'),
]


def test_demo_runs_hello_to_succeeded_and_leaves_nothing():
    sky_mithril = Path(sys.executable).parent / 'sky-mithril'
    result = subprocess.run([str(sky_mithril), 'demo'], capture_output=True,
                            text=True, timeout=1800, stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert 'Job finished (status: SUCCEEDED)' in out, out
    assert 'Hello from' in out and 'on Mithril, node 0 of 1' in out, out
    assert 'No open or allocated bid, no host, no API server left' in out, out
