"""`sky-mithril setup --api-key`: a user's key stored without Mithril's `ml`,
against a `responses`-mocked API: checked with GET /v2/me, the project chosen
from the key's own, written in `ml setup`'s format at mode 600 beside the
other profiles, and never printed; and every credentials error names this
command first."""

import io
import stat
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import click
import pytest
import responses
import yaml

from sky_mithril.account import connection
from sky_mithril.account import credentials
from sky_mithril.api import errors
from sky_mithril.commands import output

API_URL = 'https://api.mithril.test'
KEY = 'fkey_setup_secret_4711'
ME = {'id': 'u1', 'fid': 'user_1', 'email': 'ada@example.com',
      'organization_id': 'org_1'}


def project(fid: str, name: str) -> Dict[str, Any]:
    return {'fid': fid, 'name': name, 'created_at': '2025-01-01T00:00:00Z'}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME and config folder, and no Mithril variables."""
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path / '.config'))
    for variable in ('MITHRIL_API_KEY', 'MITHRIL_PROJECT', 'MITHRIL_API_URL',
                     'MITHRIL_PROFILE'):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def typed(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """What stdin holds (not a terminal)."""
    monkeypatch.setattr(sys, 'stdin', io.StringIO(text))


def config(home: Path) -> Dict[str, Any]:
    return yaml.safe_load((home / '.config' / 'mithril' / 'config.yaml').read_text())


def setup(run, *argv: str):
    return run('setup', '--api-key', '--api-url', API_URL, *argv)


def test_the_key_is_checked_then_saved_at_mode_600_beside_other_profiles(
        home, api, monkeypatch, run):
    path = home / '.config' / 'mithril' / 'config.yaml'
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({'current_profile': 'work', 'profiles': {
        'work': {'api_key': 'other-key', 'project_id': 'proj_w'}}}))
    api.get(f'{API_URL}/v2/me', json=ME)
    api.get(f'{API_URL}/v2/projects', json=[project('proj_1', 'team')])
    typed(monkeypatch, KEY + '\n')
    result = run('setup', '--api-key', '--api-url', API_URL, '--profile', 'mine')
    assert result.code == 0, result.err
    assert KEY not in result.out + result.err
    assert "Saved profile 'mine' (project team, proj_1" in result.out
    assert api.calls[0].request.headers['Authorization'] == f'Bearer {KEY}'
    assert config(home) == {'current_profile': 'mine', 'profiles': {
        'work': {'api_key': 'other-key', 'project_id': 'proj_w'},
        'mine': {'api_key': KEY, 'project_id': 'proj_1', 'api_url': API_URL}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert 'Added sky_mithril.plugin.MithrilPlugin' in result.out
    assert 'No Mithril API key is set up yet' not in result.out
    creds = credentials.load_credentials()
    assert (creds.api_key, creds.project_id, creds.api_url) == (KEY, 'proj_1', API_URL)


def test_the_current_profile_is_rewritten_by_default(home, api, monkeypatch, run):
    path = home / '.config' / 'mithril' / 'config.yaml'
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({'current_profile': 'work', 'profiles': {
        'work': {'api_key': 'old-key', 'project_id': 'proj_w'}}}))
    api.get(f'{API_URL}/v2/me', json=ME)
    api.get(f'{API_URL}/v2/projects', json=[project('proj_1', 'team')])
    typed(monkeypatch, KEY)
    assert setup(run).code == 0
    assert list(config(home)['profiles']) == ['work']
    assert config(home)['profiles']['work']['api_key'] == KEY


@pytest.mark.parametrize('argv,chosen', [(('--project', 'beta'), 'proj_b'),
                                         (('--project', 'proj_a'), 'proj_a')])
def test_project_is_chosen_by_name_or_fid(home, api, monkeypatch, run, argv, chosen):
    api.get(f'{API_URL}/v2/me', json=ME)
    api.get(f'{API_URL}/v2/projects', json=[project('proj_a', 'alpha'),
                                            project('proj_b', 'beta')])
    typed(monkeypatch, KEY)
    assert setup(run, *argv).code == 0
    assert config(home)['profiles']['default']['project_id'] == chosen


def test_several_projects_without_a_terminal_name_the_option(home, api,
                                                             monkeypatch, run):
    api.get(f'{API_URL}/v2/me', json=ME)
    api.get(f'{API_URL}/v2/projects', json=[project('proj_a', 'alpha'),
                                            project('proj_b', 'beta')])
    typed(monkeypatch, KEY)
    result = setup(run)
    assert result.code == 1
    assert ('--project (one of alpha (proj_a), beta (proj_b)) is required when '
            'not running in a terminal') in result.err
    assert not (home / '.config' / 'mithril').exists()
    typed(monkeypatch, KEY)
    unknown = setup(run, '--project', 'gamma')
    assert unknown.code == 1 and "No project 'gamma'" in unknown.err


def test_at_a_terminal_the_key_is_asked_without_echo_and_a_project_picked(
        home, api, monkeypatch, run):
    api.get(f'{API_URL}/v2/me', json=ME)
    api.get(f'{API_URL}/v2/projects', json=[project('proj_a', 'alpha'),
                                            project('proj_b', 'beta')])
    monkeypatch.setattr(output, 'interactive', lambda: True)
    from sky_mithril.commands import setup as setup_command  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(setup_command, 'interactive', lambda: True)
    prompts: List[Dict[str, Any]] = []

    def prompt(text: str, **kwargs: Any) -> str:
        prompts.append({'text': text, **kwargs})
        return KEY

    monkeypatch.setattr(click, 'prompt', prompt)
    monkeypatch.setattr('builtins.input', lambda question: '2')
    result = setup(run)
    assert result.code == 0, result.err
    [asked] = prompts
    assert asked['hide_input'] is True and 'console' in asked['text']
    assert config(home)['profiles']['default']['project_id'] == 'proj_b'
    assert KEY not in result.out + result.err


def test_a_rejected_key_writes_nothing_and_is_not_echoed(home, api, monkeypatch, run):
    api.get(f'{API_URL}/v2/me', status=401, json={'detail': f'bad key {KEY}'})
    typed(monkeypatch, KEY)
    result = setup(run)
    assert result.code == 1
    assert 'rejected this API key (401); nothing was written' in result.err
    assert "Mithril's web console" in result.err
    assert KEY not in result.out + result.err
    assert not (home / '.config' / 'mithril').exists()
    assert not (home / '.sky').exists()


def test_an_empty_key_says_where_keys_come_from(home, monkeypatch, run):
    typed(monkeypatch, '\n')
    result = setup(run)
    assert result.code == 1 and 'No API key was given' in result.err
    assert "Mithril's web console" in result.err


def test_an_api_url_without_a_scheme_is_refused_before_the_key_is_read(
        home, monkeypatch, run):
    typed(monkeypatch, KEY)
    result = run('setup', '--api-key', '--api-url', '127.0.0.1:8765')
    assert result.code == 1
    assert 'write http://127.0.0.1:8765 for a server on this machine' in result.err
    assert sys.stdin.read() == KEY


def test_setup_without_a_key_says_how_to_get_one(home, run):
    result = run('setup')
    assert result.code == 0, result.err
    assert ("No Mithril API key is set up yet. An API key comes from Mithril's "
            'web console') in result.out
    assert '`sky-mithril setup --api-key`' in result.out
    assert 'pipx install mithril-client' in result.out
    assert run('setup', '--project', 'x').code == 1


def test_every_credentials_error_names_this_command_before_ml(home, monkeypatch):
    messages = []
    with pytest.raises(credentials.CredentialsError) as missing:
        credentials.load_credentials()
    messages.append(str(missing.value))
    path = home / '.config' / 'mithril' / 'config.yaml'
    path.parent.mkdir(parents=True)
    for text in ('key: [unclosed', '- a list', "profiles: {p: 'text'}\ncurrent_profile: p"):
        path.write_text(text)
        with pytest.raises(credentials.CredentialsError) as broken:
            credentials.load_credentials()
        messages.append(str(broken.value))
    path.write_text(yaml.safe_dump({'current_profile': 'p', 'profiles': {'p': {}}}))
    monkeypatch.setenv('MITHRIL_PROFILE', 'nope')
    with pytest.raises(credentials.CredentialsError) as no_profile:
        credentials.load_credentials()
    messages.append(str(no_profile.value))
    messages.append(str(errors.error_for_status(401, 'GET', '/v2/me', '', secret=None)))
    for message in messages:
        assert 'sky-mithril setup --api-key' in message, message
        assert message.index('sky-mithril setup') < message.index('ml setup'), message


def test_a_project_error_names_this_command_first():
    creds = credentials.Credentials(api_key=KEY, api_url=API_URL,
                                    project_id=None, profile=None, source='x')
    projects = [connection.models.Project.model_validate(project(f, n))
                for f, n in (('proj_a', 'alpha'), ('proj_b', 'beta'))]
    with pytest.raises(credentials.CredentialsError) as several:
        connection._pick_project(projects, creds)
    assert '`sky-mithril setup --api-key --project NAME`' in str(several.value)
    assert str(several.value).index('sky-mithril') < str(several.value).index('ml setup')
