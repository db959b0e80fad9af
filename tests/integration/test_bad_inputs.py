"""Bad inputs that need an API to be found, in-process against the emulator:
a rejected key, a project the key cannot see, a volume in another region.
The launch's own functions refuse them before any bid (the deploy step, the
optimizer's feasibility check), with the same message text as through the
real CLI. (The in-process cases that need no API are in
tests/unit/test_bad_inputs.py; one real launch per error family is in
tests/e2e/test_bad_inputs.py.)"""

from pathlib import Path
from typing import Iterator

import pytest
import sky
import yaml

from sky_mithril import cloud
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.deploy import deploy_refusal

RIGHT_KEY = 'bad-inputs-right-key'
WRONG_KEY = 'bad-inputs-WRONG-key-4711'


@pytest.fixture
def keyed_emulator(monkeypatch: pytest.MonkeyPatch,
                   tmp_path: Path) -> Iterator[EmulatorServer]:
    """An emulator that takes only RIGHT_KEY, no Mithril settings in the
    environment, and the config folder at `tmp_path`."""
    for variable in ('MITHRIL_API_KEY', 'MITHRIL_PROJECT', 'MITHRIL_API_URL',
                     'MITHRIL_PROFILE'):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
    with EmulatorServer(api_key=RIGHT_KEY) as server:
        yield server


def write_profile(config_home: Path, **profile: str) -> None:
    path = config_home / 'mithril' / 'config.yaml'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({'current_profile': 'default',
                                    'profiles': {'default': profile}}))
    path.chmod(0o600)


@pytest.mark.parametrize('profile,fragments', [
    ({'api_key': WRONG_KEY}, ['Mithril rejected the API key (401)',
                              'MITHRIL_API_KEY', 'ml setup']),
    ({'api_key': RIGHT_KEY, 'project_id': 'proj_nope'},
     ["Project 'proj_nope'", 'not visible to this API key', 'proj_emulator',
      'MITHRIL_PROJECT']),
], ids=['wrong-key', 'unknown-project'])
def test_credential_problem_is_named_before_any_bid(keyed_emulator, tmp_path,
                                                    profile, fragments):
    write_profile(tmp_path, api_url=keyed_emulator.url, **profile)
    message = deploy_refusal()
    for fragment in fragments:
        assert fragment in message, f'{fragment!r} not in:\n{message}'
    assert WRONG_KEY not in message and RIGHT_KEY not in message
    assert keyed_emulator.control('GET', 'state')['bids'] == []


def test_a_volume_of_another_region_is_refused_before_any_bid(fast_emulator):
    conn = connection.connect()
    conn.client.create_volume(conn.project_id, 'far-share', 'us-central5-a',
                              10, models.VolumeInterface.FILE)
    resources = sky.Resources(
        cloud=cloud.Mithril(), accelerators='A100:1', region='us-central3-a',
        _cluster_config_overrides={'mithril': {
            'provision_timeout': 5, 'volumes': {'/ckpt': 'far-share'}}})
    feasible = cloud.Mithril().get_feasible_launchable_resources(resources)
    assert feasible.resources_list == []
    for fragment in ('volumes live in us-central5-a',
                     '--infra mithril/us-central5-a'):
        assert fragment in feasible.hint, feasible.hint
    assert fast_emulator.control('GET', 'state')['bids'] == []
