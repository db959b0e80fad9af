"""The suite's tiers and the environment every test runs in.

Each test file lives in one tier folder, and the tier is its marker
(`-m unit`, `-m integration`, `-m e2e`, `-m host`):

- unit/: in-process; the emulator's market on a manual clock at most, HTTP
  only through `responses`; no server socket.
- integration/: the emulator over HTTP on loopback; the provisioner, the
  plugin's runtime and the commands against it.
- e2e/: the real `sky` CLI through one sandboxed SkyPilot API server on
  loopback (`sky_sandbox`, shared by the session).
- host/: root: namespace hosts, the real `sky` CLI onto them, the demo.

The older markers keep their meaning across tiers: `e2e` (real `sky` CLI
runs), `root`, `chaos`, `slow`.

Sandboxed SkyPilot homes are seeded with SkyPilot's public common catalog
(`shared/reference/skypilot-common-accelerators.csv` beside the checkout)
when it is there, as SkyPilot would download it; otherwise the sandbox
derives one from our own catalog.
"""

import os
import tempfile
from pathlib import Path
from typing import List

import pytest

from sky_mithril.devtools.sandbox import ENV_ACCELERATORS_CSV

TIERS = ('unit', 'integration', 'e2e', 'host')
TESTS = Path(__file__).resolve().parent
# Under xdist, the slow tiers travel a folder at a time (e2e's API server is
# shared by its folder), the others a module at a time; the longest groups
# start first: the launches in tests/host itself, then e2e, then the rest of
# the host tier.
_SLOW_TIERS = ('host', 'e2e')
_LAUNCHES = TESTS / 'host'
_DISTRIBUTED_ORDER = ('launches', 'e2e', 'host', 'integration', 'unit')

# Tests never touch the developer's SkyPilot home or real Mithril credentials.
os.environ['HOME'] = tempfile.mkdtemp(prefix='sky-mithril-tests-home-')
for _variable in ('MITHRIL_API_KEY', 'MITHRIL_PROJECT', 'MITHRIL_API_URL',
                  'MITHRIL_PROFILE', 'XDG_CONFIG_HOME', 'SKY_MITHRIL_CATALOG'):
    os.environ.pop(_variable, None)

_PUBLIC_ACCELERATORS = (TESTS.parents[1] / 'shared' / 'reference' /
                        'skypilot-common-accelerators.csv')
if _PUBLIC_ACCELERATORS.is_file():
    os.environ.setdefault(ENV_ACCELERATORS_CSV, str(_PUBLIC_ACCELERATORS))


def tier_of(path: Path) -> str:
    """The tier folder a test file is in; a file outside one is an error."""
    parts = path.resolve().relative_to(TESTS).parts
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(
            f'{path} is in no tier folder: move it under tests/<tier>/, '
            f'tier one of {", ".join(TIERS)}.')
    return parts[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config,
                                  items: List[pytest.Item]) -> None:
    """Marks each test with its folder's tier and orders the run.

    In one process the tiers run from the fastest to the slowest (a stable
    sort: each module's tests stay together, in their order). Under
    pytest-xdist (`-n`, as CI runs) each group (`xdist_group`) stays on one
    worker, so module and package fixtures are made once, and the longest
    groups start first, so the host tier's launches, which mostly wait,
    overlap with everything else.
    """
    for item in items:
        item.add_marker(tier_of(item.path))
    if not _distributed(config):
        items.sort(key=lambda item: TIERS.index(tier_of(item.path)))
        return
    for item in items:
        tier = tier_of(item.path)
        group = (item.path.parent.relative_to(TESTS).as_posix() if tier in _SLOW_TIERS
                 else item.nodeid.split('::')[0])
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: _DISTRIBUTED_ORDER.index(
        'launches' if item.path.parent == _LAUNCHES else tier_of(item.path)))



def _distributed(config: pytest.Config) -> bool:
    """Whether tests are spread over pytest-xdist workers (this process
    being the controller or one of them)."""
    return bool(os.environ.get('PYTEST_XDIST_WORKER') or
                getattr(config.option, 'numprocesses', None))


@pytest.fixture(scope='session', autouse=True)
def skypilot_kv_cache_in_the_sessions_home() -> None:
    """SkyPilot opens its key-value store (reservation claims, the project
    snapshot) once per process, under the HOME of its first use. It is
    opened here, under the session's HOME: a test that moves HOME (a
    command's private home, a node's) and marks the snapshot stale would
    otherwise leave it there for every later test, while their child
    processes read the session's."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kv_cache.get_cache_entry('sky-mithril/tests')
