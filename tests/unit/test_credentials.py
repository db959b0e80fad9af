"""Credentials from the environment and Mithril's own config file."""

import pytest
import yaml

from sky_mithril.account import credentials
from sky_mithril.api import client


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ('MITHRIL_API_KEY', 'MITHRIL_PROJECT', 'MITHRIL_API_URL',
                'MITHRIL_PROFILE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
    return tmp_path


def write_config(root, data):
    path = root / 'mithril' / 'config.yaml'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


PROFILES = {
    'current_profile': 'work',
    'profiles': {
        'work': {'api_key': 'key-work', 'project_id': 'proj_w',
                 'api_url': 'http://127.0.0.1:1/'},
        'home': {'api_key': 'key-home', 'project_id': 'proj_h'},
    },
}


def test_current_profile_is_used(clean_env):
    write_config(clean_env, PROFILES)
    creds = credentials.load_credentials()
    assert (creds.api_key, creds.project_id, creds.profile) == ('key-work',
                                                                 'proj_w',
                                                                 'work')
    assert creds.api_url == 'http://127.0.0.1:1'


def test_env_wins_over_profile_and_picks_profile(clean_env, monkeypatch):
    write_config(clean_env, PROFILES)
    monkeypatch.setenv('MITHRIL_PROFILE', 'home')
    monkeypatch.setenv('MITHRIL_PROJECT', 'proj_env')
    creds = credentials.load_credentials()
    assert (creds.api_key, creds.project_id) == ('key-home', 'proj_env')
    assert creds.api_url == credentials.DEFAULT_API_URL


def test_env_only_needs_no_file(monkeypatch):
    monkeypatch.setenv('MITHRIL_API_KEY', 'key-env')
    creds = credentials.load_credentials()
    assert creds.api_key == 'key-env' and creds.profile is None
    assert 'MITHRIL_API_KEY' in creds.source


def test_key_is_not_in_repr(clean_env):
    write_config(clean_env, PROFILES)
    assert 'key-work' not in repr(credentials.load_credentials())


def test_unknown_profile_lists_the_available_ones(clean_env, monkeypatch):
    write_config(clean_env, PROFILES)
    monkeypatch.setenv('MITHRIL_PROFILE', 'nope')
    with pytest.raises(credentials.CredentialsError,
                       match=r"'nope'.*profiles: home, work"):
        credentials.load_credentials()


def test_malformed_yaml_names_the_file_and_fix(clean_env):
    write_config(clean_env, 'profiles: [unclosed')
    with pytest.raises(credentials.CredentialsError,
                       match=r'not valid YAML.*ml setup'):
        credentials.load_credentials()


def test_binary_garbage_file_names_the_fix(clean_env):
    path = write_config(clean_env, PROFILES)
    path.write_bytes(b'\xff\xfe\x00bad')
    with pytest.raises(credentials.CredentialsError, match='not UTF-8.*ml setup'):
        credentials.load_credentials()


def test_missing_key_says_how_to_set_it():
    with pytest.raises(credentials.CredentialsError,
                       match='ml setup.*MITHRIL_API_KEY'):
        credentials.load_credentials()


def test_redact_replaces_every_occurrence():
    assert client.redact('a key-1 b key-1', 'key-1') == 'a <redacted> b <redacted>'


def test_world_readable_file_is_detected(clean_env):
    path = write_config(clean_env, PROFILES)
    path.chmod(0o644)
    assert credentials.is_readable_by_others(path)
    path.chmod(0o600)
    assert not credentials.is_readable_by_others(path)


@pytest.mark.parametrize('url', ['127.0.0.1:8765', 'localhost:8765', 'api.mithril.ai'])
def test_an_api_url_without_a_scheme_from_the_environment_is_named(monkeypatch, url):
    monkeypatch.setenv('MITHRIL_API_KEY', 'key-env')
    monkeypatch.setenv('MITHRIL_API_URL', url)
    with pytest.raises(credentials.CredentialsError) as missing:
        credentials.load_credentials()
    assert str(missing.value) == (
        f'MITHRIL_API_URL is {url!r}, which lacks a scheme: write http://{url} for '
        f'a server on this machine (the emulator), or https://{url}.')


def test_an_api_url_without_a_scheme_in_a_profile_names_the_profile(clean_env):
    write_config(clean_env, {'current_profile': 'emu', 'profiles': {
        'emu': {'api_key': 'k', 'api_url': 'localhost:8765'}}})
    with pytest.raises(credentials.CredentialsError,
                       match=r"The api_url of profile 'emu' in .*config.yaml is "
                             r"'localhost:8765', which lacks a scheme"):
        credentials.load_credentials()


def test_the_projects_source_is_its_own(clean_env, monkeypatch):
    write_config(clean_env, PROFILES)
    assert credentials.load_credentials().project_source == (
        f"profile 'work' in {clean_env}/mithril/config.yaml")
    monkeypatch.setenv('MITHRIL_PROJECT', 'proj_nope')
    creds = credentials.load_credentials()
    assert creds.project_source == 'environment variable MITHRIL_PROJECT'
    assert creds.source.startswith("profile 'work'")
    monkeypatch.delenv('MITHRIL_PROJECT')
    monkeypatch.setenv('MITHRIL_PROFILE', 'home')
    monkeypatch.setenv('MITHRIL_API_KEY', 'key-env')
    creds = credentials.load_credentials()
    assert creds.source == 'environment variable MITHRIL_API_KEY'
    assert creds.project_source.startswith("profile 'home'")
