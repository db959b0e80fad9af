"""Bad inputs through the REAL `sky launch -y` (not a dry run): each one must
fail before any Mithril bid exists, with one error that names the fix.

Every launch here goes through the sandboxed API server to the emulator, so
a case that is not caught early would reach provisioning and place a bid.
As a safety net the emulator has no capacity anywhere and every task sets
`provision_timeout: 5`: a bid placed by mistake is cancelled within seconds
instead of hanging on a placeholder host, the test sees the new bid in
`GET /_emulator/state` and fails, and the cluster is torn down.

The credential cases run after Mithril was enabled once (a dry run primes
SkyPilot's enabled-cloud cache, as for any user who launched before), so
they reach the cloud's own credential check just before the bid. When
Mithril is not enabled at all (credentials never worked, or the API server
restarted with broken ones, as an environment change like MITHRIL_PROFILE
requires) SkyPilot refuses earlier with its generic "Cloud access is not set
up" (`test_launch_while_mithril_is_disabled_*`).

Known gaps are `xfail(strict=True)` with the reason, so the suite stays green
and a fix turns them into failures that ask for the marker to be removed.
"""

import contextlib
import dataclasses
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
import yaml

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

pytestmark = pytest.mark.e2e

RIGHT_KEY = 'bad-inputs-right-key'
WRONG_KEY = 'bad-inputs-WRONG-key-4711'
# Safety net: a bid placed by mistake gives up (and is cancelled) after 5 s.
SAFETY = {'provision_timeout': 5}
LAUNCH_TIMEOUT = 300
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


@pytest.fixture(scope='module')
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key=RIGHT_KEY, capacity=0) as server:
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


@pytest.fixture(scope='module')
def box(emulator, tmp_path_factory) -> Iterator[SkySandbox]:
    sandbox = SkySandbox(tmp_path_factory.mktemp('bad-inputs'),
                         api_url=emulator.url,
                         api_key=RIGHT_KEY)
    try:
        primed = sandbox.sky([
            'launch', '--dryrun', '-y', '--infra', 'mithril',
            str(write_task(sandbox, 'prime', {'accelerators': 'A100:1'},
                           SAFETY))
        ])
        assert primed.returncode == 0, primed.stdout + primed.stderr
        yield sandbox
    finally:
        sandbox.stop_api_server()


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
    ('negative', {'limit_price': -3}, [PRICE, 'must be positive', 'limit_price: 32.00']),
    ('zero', {'limit_price': 0}, [PRICE, 'must be positive', 'limit_price: 32.00']),
    ('abc', {'limit_price': 'abc'}, [PRICE, "'abc'", 'not a dollar amount',
                                     'limit_price: "$32.00"']),
    ('dollar-sign', {'limit_price': '$'}, [PRICE, "'$'", 'not a dollar amount']),
    ('three-decimals', {'limit_price': '12.345'}, [PRICE, 'at most 2 decimals',
                                                   '12.34 or 12.35']),
    ('huge', {'limit_price': 1e9}, [PRICE, 'sanity ceiling of $1000.00/h',
                                    'per instance-hour']),
    ('both-keys', {'limit_price': 3, 'limit_price_per_gpu': 2},
     ['config.mithril sets both limit_price and limit_price_per_gpu', 'keep one']),
    ('per-gpu-negative', {'limit_price_per_gpu': -1},
     ['config.mithril.limit_price_per_gpu', 'must be positive']),
    ('timeout-words', {'provision_timeout': 'soon'},
     ['provision_timeout in config.mithril', "'soon'", 'e.g. 1800', '"forever"']),
    ('timeout-negative', {'provision_timeout': -5},
     ['provision_timeout in config.mithril', 'number of seconds']),
])
def test_bad_task_setting_is_refused_before_any_bid(box, emulator, case,
                                                    mithril, fragments):
    task = write_task(box, f'price-{case}', {'accelerators': 'A100:1'},
                      {**SAFETY, **mithril})
    assert_refused(launch(box, emulator, f'bad-{case}', task), *fragments)


def test_unknown_task_setting_is_refused_by_the_schema(box, emulator):
    task = write_task(box, 'typo', {'accelerators': 'A100:1'},
                      {**SAFETY, 'limit_prize': 3})
    assert_refused(launch(box, emulator, 'bad-typo', task), 'limit_prize')


@contextlib.contextmanager
def user_wide(box: SkySandbox, mithril: Dict[str, Any]) -> Iterator[None]:
    """`plugins: {mithril: ...}` in the sandbox's ~/.sky/config.yaml."""
    path = box.home / '.sky' / 'config.yaml'
    original = path.read_text()
    config = yaml.safe_load(original)
    config['plugins'] = {'mithril': mithril}
    path.write_text(yaml.safe_dump(config))
    try:
        yield
    finally:
        path.write_text(original)


def test_bad_user_wide_limit_is_refused_naming_the_file(box, emulator):
    task = write_task(box, 'userwide', {'accelerators': 'A100:1'}, SAFETY)
    with user_wide(box, {'limit_price': 'abc'}):
        outcome = launch(box, emulator, 'bad-userwide', task)
    assert_refused(outcome, 'limit_price (plugins.mithril in ~/.sky/config.yaml)',
                   'not a dollar amount')


# --- resources: instance type, region, zone --------------------------------

def test_unknown_instance_type_is_refused(box, emulator):
    task = write_task(box, 'itype', {'instance_type': 'nope'}, SAFETY)
    assert_refused(launch(box, emulator, 'bad-itype', task),
                   "Invalid instance type 'nope'")


def test_a_valid_instance_type_gets_past_the_client(box):
    """A type from our catalog passes the plugin-less client's check."""
    task = write_task(box, 'itype-ok', {'instance_type': 'a100-80gb.sxm.1x'},
                      SAFETY)
    result = box.sky(['launch', '--dryrun', '-y', '--infra', 'mithril',
                      str(task)])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert 'Failed to fetch Mithril catalog' not in out


def test_unknown_region_lists_the_real_ones(box, emulator):
    task = write_task(box, 'region', {'accelerators': 'A100:1'}, SAFETY)
    assert_refused(launch(box, emulator, 'bad-region', task,
                          infra='mithril/nowhere'),
                   "Invalid region 'nowhere'", 'us-central3-a', 'us-central5-a')


def test_region_without_the_gpu_is_refused(box, emulator):
    task = write_task(box, 'region-gpu', {'accelerators': 'A100:2'}, SAFETY)
    assert_refused(launch(box, emulator, 'bad-region-gpu', task,
                          infra='mithril/us-central2-a'),
                   "Mithril({'A100': 2}, region=us-central2-a)",
                   'To fix: relax or change the resource requirements')


def test_a_volume_of_another_region_is_refused_before_any_bid(box, emulator):
    created = requests.post(
        f'{emulator.url}/v2/volumes',
        headers={'Authorization': f'Bearer {RIGHT_KEY}'},
        json={'name': 'far-share', 'project': 'proj_emulator',
              'disk_interface': 'File', 'region': 'us-central5-a',
              'size_gb': 10}, timeout=30)
    assert created.status_code == 201, created.text
    task = write_task(box, 'volume-region', {'accelerators': 'A100:1'},
                      {**SAFETY, 'volumes': {'/ckpt': 'far-share'}})
    assert_refused(launch(box, emulator, 'bad-volume-region', task,
                          infra='mithril/us-central3-a'),
                   'volumes live in us-central5-a',
                   '--infra mithril/us-central5-a')


def test_an_unknown_volume_is_refused_naming_how_to_create_it(box, emulator):
    task = write_task(box, 'volume-unknown', {'accelerators': 'A100:1'},
                      {**SAFETY, 'volumes': {'/ckpt': 'no-such-volume'}})
    assert_refused(launch(box, emulator, 'bad-volume', task),
                   "'no-such-volume'", 'sky-mithril volumes create no-such-volume')


def test_zone_is_refused_with_the_fix(box, emulator):
    task = write_task(box, 'zone', {'accelerators': 'A100:1'}, SAFETY)
    assert_refused(launch(box, emulator, 'bad-zone', task,
                          infra='mithril/us-central3-a/us-central3-a1'),
                   'Mithril has no zones', 'infra: mithril/us-central3-a')


# --- cluster names -----------------------------------------------------------

@pytest.mark.parametrize('name', ['Bad_Name!', '12345', '-dash-first'])
def test_invalid_cluster_name_is_refused(box, emulator, name):
    task = write_task(box, 'name', {'accelerators': 'A100:1'}, SAFETY)
    assert_refused(launch(box, emulator, name, task),
                   f'Cluster name "{name}" is invalid',
                   'only contains letters, numbers and dash')


def test_overlong_cluster_name_is_shortened_not_refused(box, emulator):
    """Not a bad input: SkyPilot maps the name onto the cloud's limit
    (Mithril: max_cluster_name_length() == 60) with a hash, so the bid name
    fits. The launch reaches a bid; no capacity makes it time out, and the bid
    must be cancelled."""
    from sky.clouds import mithril as builtin_mithril
    limit = builtin_mithril.Mithril.max_cluster_name_length()
    assert limit == 60
    name = 'long-' + 'x' * 80
    task = write_task(box, 'long', {'accelerators': 'A100:1'}, SAFETY)
    outcome = launch(box, emulator, name, task)
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
def test_allocation_timeout_summary_names_the_reason(box, emulator):
    task = write_task(box, 'timeout-summary', {'accelerators': 'A100:1'},
                      SAFETY)
    outcome = launch(box, emulator, 'timeout-summary', task)
    assert outcome.returncode != 0
    assert [b['status'] for b in outcome.new_bids] == ['Terminated']
    summary = outcome.output.split('Reasons for provision failures', 1)[-1]
    assert 'not allocated within 5s' in summary, summary


# --- credentials (Mithril already enabled once) ------------------------------

def _credentials_file(box: SkySandbox) -> Path:
    return box.home / '.config' / 'mithril' / 'config.yaml'


@contextlib.contextmanager
def broken_credentials(box: SkySandbox, how: str) -> Iterator[None]:
    """Breaks ~/.config/mithril/config.yaml one way; restores it after."""
    path = _credentials_file(box)
    good = path.read_text()
    data = yaml.safe_load(good)
    path.unlink()
    if how == 'missing':
        pass
    elif how == 'empty-key':
        data['profiles']['default']['api_key'] = ''
        path.write_text(yaml.safe_dump(data))
    elif how == 'wrong-key':
        data['profiles']['default']['api_key'] = WRONG_KEY
        path.write_text(yaml.safe_dump(data))
    elif how == 'unknown-project':
        data['profiles']['default']['project_id'] = 'proj_nope'
        path.write_text(yaml.safe_dump(data))
    elif how == 'unknown-current-profile':
        data['current_profile'] = 'nope'
        path.write_text(yaml.safe_dump(data))
    elif how == 'bad-yaml':
        path.write_text('current_profile: default\nprofiles: [unclosed\n  x: {\n')
    elif how == 'not-a-mapping':
        path.write_text('- api_key\n- project_id\n')
    elif how == 'not-utf8':
        path.write_bytes(b'profiles:\n  default: {api_key: \xff\xfe}\n')
    elif how == 'unreadable':
        if os.geteuid() == 0:  # root reads a mode-000 file, not a directory
            path.mkdir()
        else:
            path.write_text(good)
    else:
        raise AssertionError(how)
    if path.is_file():
        path.chmod(0o000 if how == 'unreadable' else 0o600)
    try:
        yield
    finally:
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.chmod(0o600)
            path.unlink()
        path.write_text(good)
        path.chmod(0o600)


CONFIG = '~/.config/mithril/config.yaml'


@pytest.mark.parametrize('how,fragments', [
    ('missing', ['No Mithril API key found', 'MITHRIL_API_KEY', 'ml setup']),
    ('empty-key', ['No Mithril API key found', "profile 'default' of " + CONFIG,
                   'MITHRIL_API_KEY']),
    ('wrong-key', ['Mithril rejected the API key (401)', 'MITHRIL_API_KEY',
                   'ml setup']),
    ('unknown-project', ["Project 'proj_nope'", 'not visible to this API key',
                         'proj_emulator', 'MITHRIL_PROJECT']),
    ('unknown-current-profile', ["Mithril profile 'nope' is not in " + CONFIG,
                                 'profiles: default', 'MITHRIL_PROFILE']),
    ('bad-yaml', [CONFIG, 'is not valid YAML', 'ml setup']),
    ('not-a-mapping', [CONFIG, 'must be a mapping', 'ml setup']),
    ('not-utf8', [CONFIG, 'is not UTF-8', 'ml setup']),
    ('unreadable', ['Cannot read Mithril config ' + CONFIG, 'ml setup']),
])
def test_credential_problem_is_named_before_any_bid(box, emulator, how,
                                                    fragments):
    task = write_task(box, f'creds-{how}', {'accelerators': 'A100:1'}, SAFETY)
    with broken_credentials(box, how):
        outcome = launch(box, emulator, f'creds-{how}', task)
    assert_refused(outcome, *fragments)
    assert 'invalid cloud credentials' in outcome.output
    assert WRONG_KEY not in outcome.output and RIGHT_KEY not in outcome.output


# --- Mithril disabled: never had working credentials, or the API server --------
# --- (re)started with broken ones (its on-boot `sky check` disables Mithril) ---

DISABLED_CASES = {
    # name: (extra env for the API server, remove the credentials file?,
    #        what `sky check` and ideally the launch should say)
    'no-key-anywhere': ({}, True, ['No Mithril API key found', 'MITHRIL_API_KEY',
                                   'ml setup']),
    'MITHRIL_PROFILE=nope': ({'MITHRIL_PROFILE': 'nope'}, False,
                             ["Mithril profile 'nope' is not in " + CONFIG,
                              'profiles: default',
                              'Set MITHRIL_PROFILE to one of them']),
}


@pytest.fixture(scope='module', params=sorted(DISABLED_CASES))
def disabled_box(request, emulator, tmp_path_factory) -> Iterator[SkySandbox]:
    """A sandbox whose API server starts with broken Mithril credentials
    (an environment variable needs its own server: it is read at start)."""
    extra_env, remove_file, fragments = DISABLED_CASES[request.param]
    sandbox = SkySandbox(tmp_path_factory.mktemp('disabled'),
                         api_url=emulator.url,
                         api_key=RIGHT_KEY,
                         extra_env=extra_env)
    if remove_file:
        _credentials_file(sandbox).unlink()
    sandbox.fragments = fragments  # type: ignore[attr-defined]
    try:
        yield sandbox
    finally:
        sandbox.stop_api_server()


def test_launch_while_mithril_is_disabled_points_to_sky_check(
        disabled_box, emulator):
    """What users get today: a refusal without a bid that says to run
    `sky check`, and `sky check mithril` names the actual fix."""
    task = write_task(disabled_box, 'disabled', {'accelerators': 'A100:1'},
                      SAFETY)
    assert_refused(launch(disabled_box, emulator, 'disabled', task),
                   'Cloud access is not set up', 'sky check')
    check = disabled_box.sky(['check', 'mithril'])
    out = _ANSI.sub('', check.stdout + check.stderr)
    assert 'Mithril: disabled' in out, out
    for fragment in disabled_box.fragments:
        assert fragment in out, f'{fragment!r} not in:\n{out}'


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
def test_launch_while_mithril_is_disabled_names_the_fix(disabled_box, emulator):
    task = write_task(disabled_box, 'disabled2', {'accelerators': 'A100:1'},
                      SAFETY)
    assert_refused(launch(disabled_box, emulator, 'disabled2', task),
                   *disabled_box.fragments)
