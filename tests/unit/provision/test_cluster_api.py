"""The key in use goes only to its own API: a cluster recorded against
another one (a stopped emulator's loopback port any local user may bind now,
an old endpoint) is refused before any request, naming what to set."""

import re
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import responses
import yaml

from sky_mithril.account import credentials
from sky_mithril.provision import instance as provisioner

CURRENT_API = 'https://api.mithril.test'
RECORDED_API = 'http://127.0.0.1:8765'
NAME = 'sky-train-1'

OPERATIONS: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    'query': lambda provider: provisioner.query_instances(NAME, NAME, provider),
    'terminate': lambda provider: provisioner.terminate_instances(NAME, provider),
    'stop': lambda provider: provisioner.stop_instances(NAME, provider),
    'cluster-info': lambda provider: provisioner.get_cluster_info(
        'us-central2-a', NAME, provider),
}


@pytest.fixture(name='recorded_api')
def fixture_recorded_api() -> responses.RequestsMock:
    """Answers for the recorded API, which nothing may ask."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        everything = re.compile(re.escape(RECORDED_API) + '/.*')
        mock.get(everything, json={'data': [], 'next_cursor': None})
        mock.delete(everything, status=204)
        mock.patch(everything, json={})
        yield mock


@pytest.mark.parametrize('operation', OPERATIONS)
def test_a_cluster_of_another_api_is_refused_naming_the_variables(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        recorded_api: responses.RequestsMock, operation: str) -> None:
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
    monkeypatch.setenv('MITHRIL_API_KEY', 'production-key')
    monkeypatch.setenv('MITHRIL_API_URL', CURRENT_API)
    provider = {'profile': '', 'project_id': 'proj_x',
                'api_url': RECORDED_API}

    with pytest.raises(credentials.CredentialsError) as caught:
        OPERATIONS[operation](provider)

    message = str(caught.value)
    assert RECORDED_API in message and CURRENT_API in message
    assert f'MITHRIL_API_URL={RECORDED_API}' in message
    assert 'MITHRIL_PROFILE' in message
    assert 'production-key' not in message
    assert not recorded_api.calls


def test_a_cluster_of_a_profile_now_naming_another_api_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        recorded_api: responses.RequestsMock) -> None:
    config = tmp_path / 'mithril' / 'config.yaml'
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({'current_profile': 'emulator', 'profiles': {
        'emulator': {'api_key': 'production-key', 'project_id': 'proj_x',
                     'api_url': CURRENT_API}}}))
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
    provider = {'profile': 'emulator', 'project_id': 'proj_x',
                'api_url': RECORDED_API}

    with pytest.raises(credentials.CredentialsError) as caught:
        provisioner.terminate_instances(NAME, provider)

    message = str(caught.value)
    assert "profile 'emulator'" in message
    assert f'MITHRIL_API_URL={RECORDED_API}' in message
    assert not recorded_api.calls
