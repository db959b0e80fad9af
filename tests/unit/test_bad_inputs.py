"""Bad inputs in-process: what `sky launch` refuses before any bid, through
the functions the launch itself calls — the `Mithril` cloud's feasibility
check (its hint is the refusal the user reads), its deploy variables (where
credentials are loaded), its credential check (`sky check`), and SkyPilot's
own `Resources` validation (ports Mithril cannot open too) and cluster-name
check — with the same message text as through the real CLI.

tests/e2e/test_bad_inputs.py keeps one real `sky launch` per error family;
the cases that need an API (a rejected key, an unknown project, volumes) are
in tests/integration/test_bad_inputs.py.
"""

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import sky
import yaml
from sky import exceptions
from sky import skypilot_config
from sky.clouds import cloud as sky_cloud
from sky.utils import common_utils
from sky.utils import config_utils

from sky_mithril import cloud

from tests.helpers.deploy import deploy_refusal

PRICE = 'config.mithril.limit_price'
CONFIG = '~/.config/mithril/config.yaml'
GOOD_PROFILES = {'current_profile': 'default', 'profiles': {'default': {
    'api_key': 'bad-inputs-right-key', 'api_url': 'http://127.0.0.1:9',
    'project_id': 'proj_emulator'}}}


@pytest.fixture(autouse=True)
def no_mithril_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Mithril settings in the environment: the config file is looked up
    in the (test session's) HOME, so messages name
    `~/.config/mithril/config.yaml` as they do for a user."""
    for variable in ('XDG_CONFIG_HOME', 'MITHRIL_API_KEY', 'MITHRIL_PROJECT',
                     'MITHRIL_API_URL', 'MITHRIL_PROFILE'):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def credentials_file() -> Iterator[Path]:
    """~/.config/mithril/config.yaml, written by the test, removed after."""
    path = Path.home() / '.config' / 'mithril' / 'config.yaml'
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.unlink()


def refusal(mithril: Dict[str, Any]) -> str:
    """The hint with which the optimizer leaves Mithril out of a task asking
    for A100:1 with `config: {mithril: MITHRIL}`."""
    resources = sky.Resources(cloud=cloud.Mithril(), accelerators='A100:1',
                              _cluster_config_overrides={'mithril': mithril})
    feasible = cloud.Mithril().get_feasible_launchable_resources(resources)
    assert feasible.resources_list == [], feasible
    assert feasible.hint
    return feasible.hint


def assert_names(message: str, fragments: List[str]) -> None:
    for fragment in fragments:
        assert fragment in message, f'{fragment!r} not in:\n{message}'


# --- limit price and other settings in the task's `config.mithril` ---------

@pytest.mark.parametrize('mithril,fragments', [
    ({'limit_price': -3}, [PRICE, 'must be positive', 'limit_price: 32.00']),
    ({'limit_price': 0}, [PRICE, 'must be positive', 'limit_price: 32.00']),
    ({'limit_price': '$'}, [PRICE, "'$'", 'not a dollar amount']),
    ({'limit_price': '12.345'}, [PRICE, 'at most 2 decimals', '12.34 or 12.35']),
    ({'limit_price': 1e9}, [PRICE, 'sanity ceiling of $1000.00/h',
                            'per instance-hour']),
    ({'limit_price_per_gpu': -1}, ['config.mithril.limit_price_per_gpu',
                                   'must be positive']),
    ({'provision_timeout': -5}, ['provision_timeout in config.mithril',
                                 'number of seconds']),
    ({'reservation_end_lead_minutes': 0}, [
        'config.mithril.reservation_end_lead_minutes is 0',
        'positive number of minutes']),
    ({'reservation_end_lead_minutes': 'soon'}, [
        "config.mithril.reservation_end_lead_minutes is 'soon'",
        'positive number of minutes']),
    ({'back_to_reservation': 'yes'}, [
        "config.mithril.back_to_reservation is 'yes'", 'use true']),
    ({'reservation': ['week-1', 'week-1']}, [
        "config.mithril.reservation names 'week-1' twice",
        'reservation: [train-week-1, train-week-2]']),
], ids=['negative', 'zero', 'dollar-sign', 'three-decimals', 'huge',
        'per-gpu-negative', 'timeout-negative', 'lead-zero', 'lead-word',
        'back-to-reservation-word', 'reservation-twice'])
def test_bad_task_setting_is_refused_naming_the_fix(mithril, fragments):
    assert_names(refusal({'provision_timeout': 5, **mithril}), fragments)


def test_bad_user_wide_limit_is_refused_naming_the_file():
    user_wide = config_utils.Config({'allowed_clouds': ['mithril'],
                                     'plugins': {'mithril': {'limit_price': 'abc'}}})
    with skypilot_config.replace_skypilot_config_in_process(user_wide):
        hint = refusal({'provision_timeout': 5})
    assert_names(hint, ['limit_price (plugins.mithril in ~/.sky/config.yaml)',
                        'not a dollar amount'])


# --- resources: instance type and zone --------------------------------------

def validation_error(**resources: Any) -> str:
    with pytest.raises(ValueError) as info:
        sky.Resources(cloud=cloud.Mithril(), **resources).validate()
    return str(info.value)


def test_unknown_instance_type_is_refused():
    assert_names(validation_error(instance_type='nope'),
                 ["Invalid instance type 'nope'"])


def test_zone_is_refused_with_the_fix():
    assert_names(validation_error(region='us-central3-a', zone='us-central3-a1'),
                 ['Mithril has no zones', 'infra: mithril/us-central3-a'])


# --- ports Mithril cannot open -----------------------------------------------

TYPE = 'a100-80gb.sxm.1x'


@pytest.mark.parametrize('ports,refused', [
    (['22'], '22'),
    (['80', '1000-1030'], '1000-1023'),
    (['444', '8080', '65535'], '444'),
], ids=['ssh', 'range-below-1024', 'one-of-several'])
def test_a_port_mithril_cannot_open_is_refused_naming_the_range(ports, refused):
    with pytest.raises(exceptions.NotSupportedError) as info:
        sky.Resources(cloud=cloud.Mithril(), instance_type=TYPE,
                      ports=ports).validate()
    assert_names(str(info.value), [
        'Mithril opens public ports 80, 443 and 1024-65535 only',
        f'not {refused}.'])


def test_ports_mithril_opens_are_launchable():
    resources = sky.Resources(cloud=cloud.Mithril(), instance_type=TYPE,
                              ports=['80', '443', '1024', '8000-8100', '65535'])
    resources.validate()
    feasible = cloud.Mithril().get_feasible_launchable_resources(resources)
    assert feasible.resources_list, feasible.hint


# --- cluster names (SkyPilot's own check) ------------------------------------

@pytest.mark.parametrize('name', ['12345', '-dash-first'])
def test_invalid_cluster_name_is_refused(name):
    with pytest.raises(exceptions.InvalidClusterNameError) as info:
        common_utils.check_cluster_name_is_valid(name)
    assert_names(str(info.value), [f'Cluster name "{name}" is invalid',
                                   'only contains letters, numbers and dash'])


# --- credentials (Mithril already enabled once) ------------------------------

def write_credentials(path: Path, how: str) -> None:
    """The Mithril config file at `path`, broken one way."""
    data: Dict[str, Any] = yaml.safe_load(yaml.safe_dump(GOOD_PROFILES))
    if how == 'empty-key':
        data['profiles']['default']['api_key'] = ''
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
            return
        path.write_text(yaml.safe_dump(data))
    else:
        raise AssertionError(how)
    path.chmod(0o000 if how == 'unreadable' else 0o600)


@pytest.mark.parametrize('how,fragments', [
    ('empty-key', ['No Mithril API key found', "profile 'default' of " + CONFIG,
                   'MITHRIL_API_KEY']),
    ('unknown-current-profile', ["Mithril profile 'nope' is not in " + CONFIG,
                                 'profiles: default', 'MITHRIL_PROFILE']),
    ('bad-yaml', [CONFIG, 'is not valid YAML', 'ml setup']),
    ('not-a-mapping', [CONFIG, 'must be a mapping', 'ml setup']),
    ('not-utf8', [CONFIG, 'is not UTF-8', 'ml setup']),
    ('unreadable', ['Cannot read Mithril config ' + CONFIG, 'ml setup']),
])
def test_credential_problem_is_named_before_any_bid(credentials_file, how,
                                                    fragments):
    write_credentials(credentials_file, how)
    message = deploy_refusal()
    assert_names(message, fragments)
    assert 'bad-inputs-right-key' not in message


# --- Mithril disabled: the API server started with broken credentials --------

def test_check_names_an_unknown_mithril_profile(credentials_file, monkeypatch):
    """What `sky check mithril` says on an API server that started with
    MITHRIL_PROFILE=nope while the config file has only `default`."""
    credentials_file.write_text(yaml.safe_dump(GOOD_PROFILES))
    credentials_file.chmod(0o600)
    monkeypatch.setenv('MITHRIL_PROFILE', 'nope')
    enabled, reason = cloud.Mithril.check_credentials(
        sky_cloud.CloudCapability.COMPUTE)
    assert not enabled
    assert_names(str(reason), ["Mithril profile 'nope' is not in " + CONFIG,
                               'profiles: default',
                               'Set MITHRIL_PROFILE to one of them'])
