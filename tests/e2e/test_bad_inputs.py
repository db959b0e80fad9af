"""Bad inputs through the REAL `sky launch -y` (not a dry run): each one must
fail before any Mithril bid exists, with one error that names the fix.

One real launch per error family: a bad limit price, both limit keys, a bad
provision timeout, an unknown setting (the schema), an unknown region, a
region without the GPU, an unknown volume, an invalid cluster name, no API
key, and Mithril disabled. The other cases of each family are refused by the
same functions in-process, with the same message text
(tests/unit/test_bad_inputs.py, tests/integration/test_bad_inputs.py).

Every launch goes through the tier's shared API server (`sky_sandbox`) to
this module's emulator, so a case that is not caught early would reach
provisioning and place a bid. As a safety net the emulator has no capacity
anywhere and every task sets `provision_timeout: 5`: a bid placed by mistake
is cancelled within seconds instead of hanging on a placeholder host, the
test sees the new bid in `GET /_emulator/state` and fails, and the cluster
is torn down.

The credential case runs after Mithril was enabled once (a dry run primes
SkyPilot's enabled-cloud cache, as for any user who launched before), so it
reaches the cloud's own credential check just before the bid. When Mithril
is not enabled at all (credentials never worked, or `sky check` or an API
server restart ran with broken ones) SkyPilot refuses earlier with its
generic "Cloud access is not set up" (`test_launch_while_mithril_is_disabled_*`).

Known gaps are `xfail(strict=True)` with the reason, so the suite stays green
and a fix turns them into failures that ask for the marker to be removed.
"""

import contextlib
import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import yaml

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

from tests.helpers.sandbox import SANDBOX_KEY, profile_changed, profile_path

pytestmark = pytest.mark.e2e

# Safety net: a bid placed by mistake gives up (and is cancelled) after 5 s.
SAFETY = {'provision_timeout': 5}
LAUNCH_TIMEOUT = 300
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


@pytest.fixture(scope='module')
def no_capacity_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key=SANDBOX_KEY, capacity=0) as server:
        yield server


def write_task(box: SkySandbox, name: str, resources: Dict[str, Any],
               mithril: Optional[Dict[str, Any]] = None) -> Path:
    """A task without `infra` (the launch passes `--infra`)."""
    task: Dict[str, Any] = {'resources': resources, 'run': 'echo hi'}
    if mithril is not None:
        task['config'] = {'mithril': mithril}
    path = box.root / f'{name}.yaml'
    path.write_text(yaml.safe_dump(task))
    return path


@pytest.fixture(scope='module', autouse=True)
def at_no_capacity_emulator(no_capacity_emulator, sky_sandbox) -> Iterator[None]:
    """The tier's sandbox pointed at `no_capacity_emulator` for the module,
    Mithril enabled by a dry run."""
    with profile_changed(sky_sandbox, api_url=no_capacity_emulator.url):
        primed = sky_sandbox.sky([
            'launch', '--dryrun', '-y', '--infra', 'mithril',
            str(write_task(sky_sandbox, 'prime', {'accelerators': 'A100:1'},
                           SAFETY))
        ])
        assert primed.returncode == 0, primed.stdout + primed.stderr
        yield


def _bids(emulator: EmulatorServer) -> List[Dict[str, Any]]:
    return emulator.control('GET', 'state')['bids']


@dataclasses.dataclass
class Outcome:
    returncode: int
    output: str
    new_bids: List[Dict[str, Any]]


def launch(box: SkySandbox, emulator: EmulatorServer, cluster: str,
           task: Path, infra: str = 'mithril') -> Outcome:
    """`sky launch -y -c CLUSTER --infra INFRA TASK`; tears the cluster down
    if the launch got as far as a bid (or, wrongly, succeeded)."""
    before = {b['fid'] for b in _bids(emulator)}
    try:
        result = box.sky(['launch', '-y', '-c', cluster, '--infra', infra,
                          str(task)], timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        box.sky(['down', '-y', cluster], timeout=LAUNCH_TIMEOUT)
        raise
    new = [b for b in _bids(emulator) if b['fid'] not in before]
    if result.returncode == 0 or new:
        box.sky(['down', '-y', cluster], timeout=LAUNCH_TIMEOUT)
    return Outcome(result.returncode,
                   _ANSI.sub('', result.stdout + result.stderr), new)


def assert_refused(outcome: Outcome, *fragments: str) -> None:
    """Non-zero exit, every fragment shown, no traceback, no bid."""
    out = outcome.output
    assert outcome.returncode != 0, out
    for fragment in fragments:
        assert fragment in out, f'{fragment!r} not in:\n{out}'
    assert 'Traceback (most recent call last)' not in out, out
    assert 'During handling of the above exception' not in out, out
    assert outcome.new_bids == [], (outcome.new_bids, out)


# --- limit price and other settings in the task's `config.mithril` ---------

PRICE = 'config.mithril.limit_price'


@pytest.mark.parametrize('case,mithril,fragments', [
    ('abc', {'limit_price': 'abc'}, [PRICE, "'abc'", 'not a dollar amount',
                                     'limit_price: "$32.00"']),
    ('both-keys', {'limit_price': 3, 'limit_price_per_gpu': 2},
     ['config.mithril sets both limit_price and limit_price_per_gpu', 'keep one']),
    ('timeout-words', {'provision_timeout': 'soon'},
     ['provision_timeout in config.mithril', "'soon'", 'e.g. 1800', '"forever"']),
])
def test_bad_task_setting_is_refused_before_any_bid(sky_sandbox, no_capacity_emulator,
                                                    case, mithril, fragments):
    task = write_task(sky_sandbox, f'price-{case}', {'accelerators': 'A100:1'},
                      {**SAFETY, **mithril})
    assert_refused(launch(sky_sandbox, no_capacity_emulator, f'bad-{case}', task),
                   *fragments)


def test_unknown_task_setting_is_refused_by_the_schema(sky_sandbox, no_capacity_emulator):
    task = write_task(sky_sandbox, 'typo', {'accelerators': 'A100:1'},
                      {**SAFETY, 'limit_prize': 3})
    assert_refused(launch(sky_sandbox, no_capacity_emulator, 'bad-typo', task),
                   'limit_prize')


# --- resources: instance type, region ----------------------------------------

def test_a_valid_instance_type_gets_past_the_client(sky_sandbox):
    """A type from our catalog passes the plugin-less client's check."""
    task = write_task(sky_sandbox, 'itype-ok', {'instance_type': 'a100-80gb.sxm.1x'},
                      SAFETY)
    result = sky_sandbox.sky(['launch', '--dryrun', '-y', '--infra', 'mithril',
                              str(task)])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert 'Failed to fetch Mithril catalog' not in out


def test_unknown_region_lists_the_real_ones(sky_sandbox, no_capacity_emulator):
    task = write_task(sky_sandbox, 'region', {'accelerators': 'A100:1'}, SAFETY)
    assert_refused(launch(sky_sandbox, no_capacity_emulator, 'bad-region', task,
                          infra='mithril/nowhere'),
                   "Invalid region 'nowhere'", 'us-central3-a', 'us-central5-a')


def test_region_without_the_gpu_is_refused(sky_sandbox, no_capacity_emulator):
    task = write_task(sky_sandbox, 'region-gpu', {'accelerators': 'A100:2'}, SAFETY)
    assert_refused(launch(sky_sandbox, no_capacity_emulator, 'bad-region-gpu', task,
                          infra='mithril/us-central2-a'),
                   "Mithril({'A100': 2}, region=us-central2-a)",
                   'To fix: relax or change the resource requirements')


def test_an_unknown_volume_is_refused_naming_how_to_create_it(
        sky_sandbox, no_capacity_emulator):
    task = write_task(sky_sandbox, 'volume-unknown', {'accelerators': 'A100:1'},
                      {**SAFETY, 'volumes': {'/ckpt': 'no-such-volume'}})
    assert_refused(launch(sky_sandbox, no_capacity_emulator, 'bad-volume', task),
                   "'no-such-volume'", 'sky-mithril volumes create no-such-volume')


# --- cluster names -----------------------------------------------------------

def test_invalid_cluster_name_is_refused(sky_sandbox, no_capacity_emulator):
    name = 'Bad_Name!'
    task = write_task(sky_sandbox, 'name', {'accelerators': 'A100:1'}, SAFETY)
    assert_refused(launch(sky_sandbox, no_capacity_emulator, name, task),
                   f'Cluster name "{name}" is invalid',
                   'only contains letters, numbers and dash')


OVERLONG_NAME = 'long-' + 'x' * 80


@pytest.fixture(scope='module')
def overlong_launch(sky_sandbox, no_capacity_emulator) -> Outcome:
    """A launch with an overlong cluster name, which reaches a bid; no
    capacity makes it time out after 5 s. Shared by the two tests that read
    what such a launch says."""
    task = write_task(sky_sandbox, 'long', {'accelerators': 'A100:1'}, SAFETY)
    return launch(sky_sandbox, no_capacity_emulator, OVERLONG_NAME, task)


def test_overlong_cluster_name_is_shortened_not_refused(overlong_launch):
    """Not a bad input: SkyPilot maps the name onto the cloud's limit
    (Mithril: max_cluster_name_length() == 60) with a hash, so the bid name
    fits. The launch reaches a bid; no capacity makes it time out, and the bid
    must be cancelled."""
    from sky.clouds import mithril as builtin_mithril
    limit = builtin_mithril.Mithril.max_cluster_name_length()
    assert limit == 60
    outcome = overlong_launch
    assert outcome.returncode != 0, outcome.output
    assert 'was not allocated within 5s' in outcome.output, outcome.output
    [bid] = outcome.new_bids
    assert len(bid['name']) <= limit and bid['name'].startswith('long-xxx')
    assert bid['status'] == 'Terminated'


@pytest.mark.xfail(strict=True, reason=(
    'GAP (minor): when a bid is not allocated within provision_timeout, the '
    'reason ("not allocated within 5s: no capacity: 0 instance(s) free, 1 '
    'needed ... raise config.mithril.limit_price ...") appears only in the '
    'streamed log ("Cancelled bid ... after: ...", provision/instance.py '
    '_undo); the '
    'final "Reasons for provision failures" summary says only "Failed to '
    'acquire resources in all zones in us-central3-a". SkyPilot\'s '
    'cloud_vm_ray_backend._retry_zones keeps the reason (last_error_reason) '
    'only for InvalidCloudCredentials, KubernetesError and '
    'ProvisionUnsupportedError; a plugin-side fix needs an exception type '
    'whose message SkyPilot carries into the summary.'))
def test_allocation_timeout_summary_names_the_reason(overlong_launch):
    outcome = overlong_launch
    assert outcome.returncode != 0
    assert [b['status'] for b in outcome.new_bids] == ['Terminated']
    summary = outcome.output.split('Reasons for provision failures', 1)[-1]
    assert 'not allocated within 5s' in summary, summary


# --- credentials (Mithril already enabled once) ------------------------------

CONFIG = '~/.config/mithril/config.yaml'


@contextlib.contextmanager
def no_credentials_file(box: SkySandbox) -> Iterator[None]:
    """~/.config/mithril/config.yaml gone while the block runs."""
    path = profile_path(box)
    good = path.read_text()
    path.unlink()
    try:
        yield
    finally:
        path.write_text(good)
        path.chmod(0o600)


def test_credential_problem_is_named_before_any_bid(sky_sandbox, no_capacity_emulator):
    task = write_task(sky_sandbox, 'creds-missing', {'accelerators': 'A100:1'}, SAFETY)
    with no_credentials_file(sky_sandbox):
        outcome = launch(sky_sandbox, no_capacity_emulator, 'creds-missing', task)
    assert_refused(outcome, 'No Mithril API key found', 'MITHRIL_API_KEY',
                   'ml setup')
    assert 'invalid cloud credentials' in outcome.output
    assert SANDBOX_KEY not in outcome.output


# --- Mithril disabled: credentials never worked, or `sky check` (or the API ---
# --- server's on-boot check) ran with broken ones --------------------------------

@dataclasses.dataclass
class Disabled:
    check: str
    launch: Outcome


@pytest.fixture(scope='module')
def disabled(sky_sandbox, no_capacity_emulator) -> Iterator[Disabled]:
    """`sky check mithril` and then a launch with no API key anywhere: the
    check disables Mithril, as an API server's on-boot check does. Mithril
    is enabled again after (and must be)."""
    task = write_task(sky_sandbox, 'disabled', {'accelerators': 'A100:1'}, SAFETY)
    with no_credentials_file(sky_sandbox):
        check = sky_sandbox.sky(['check', 'mithril'])
        outcome = launch(sky_sandbox, no_capacity_emulator, 'disabled', task)
    try:
        yield Disabled(_ANSI.sub('', check.stdout + check.stderr), outcome)
    finally:
        enabled = sky_sandbox.sky(['check', 'mithril'])
        assert 'Mithril: enabled' in enabled.stdout, enabled.stdout


# What `sky check mithril` and ideally the launch should say.
DISABLED_FRAGMENTS = ['No Mithril API key found', 'MITHRIL_API_KEY', 'ml setup']


def test_launch_while_mithril_is_disabled_points_to_sky_check(disabled):
    """What users get today: a refusal without a bid that says to run
    `sky check`, and `sky check mithril` names the actual fix."""
    assert_refused(disabled.launch, 'Cloud access is not set up', 'sky check')
    assert 'Mithril: disabled' in disabled.check, disabled.check
    for fragment in DISABLED_FRAGMENTS:
        assert fragment in disabled.check, f'{fragment!r} not in:\n{disabled.check}'


@pytest.mark.xfail(strict=True, reason=(
    'GAP: when Mithril is not enabled (credentials never worked, or the API '
    'server restarted with broken ones: its on-boot `sky check` disables the '
    'cloud, and an env change such as MITHRIL_PROFILE needs that restart), '
    '`sky launch --infra mithril` fails in SkyPilot\'s '
    'check.get_cached_enabled_clouds_or_refresh with the generic '
    'NoCloudAccessError "Cloud access is not set up. Run: sky check"; the '
    'reason and fix (no key / unknown profile) appear only in a second command, '
    '`sky check mithril`. SkyPilot code path (sky/check.py), not ours; a '
    'plugin-side fix would wrap that error with the failed credential '
    'check\'s reason when the cloud was requested explicitly.'))
def test_launch_while_mithril_is_disabled_names_the_fix(disabled):
    assert_refused(disabled.launch, *DISABLED_FRAGMENTS)
