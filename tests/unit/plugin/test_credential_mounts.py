"""SkyPilot uploads the credential files of every cloud to every cluster it
launches, on any cloud, controllers included (`sky.check`'s collection, which
`backend_utils.write_cluster_config` calls for each launch): with the plugin
installed, that set carries no Mithril key, wherever the key comes from. A
Mithril cluster's nodes get their own key from the cluster template instead
(tests/integration/plugin/test_node_keys.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import yaml

KEY = 'sk-mithril-SECRET-credential-mounts'

COLLECT = '''
import json
from sky_mithril.plugin import takeover
takeover.install()
from sky import check
print(json.dumps(check.get_cloud_credential_file_mounts(None)))
'''


def holds_key(path: Path) -> bool:
    files = [path] if path.is_file() else [p for p in path.rglob('*')
                                           if p.is_file()]
    return any(KEY.encode() in f.read_bytes() for f in files)


def credential_mounts(home: Path, env: Dict[str, str]) -> Dict[str, str]:
    """What SkyPilot would upload to any cluster, from a process with the
    plugin installed, `home` as its home and `env` added."""
    result = subprocess.run(
        [sys.executable, '-c', COLLECT], capture_output=True, text=True,
        timeout=300, env={**os.environ, 'HOME': str(home), **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('where', ['profile', 'environment'])
def test_no_cluster_gets_a_mithril_key_from_skypilots_credential_collection(
        tmp_path, where):
    env = {}
    if where == 'profile':
        config = tmp_path / '.config' / 'mithril' / 'config.yaml'
        config.parent.mkdir(parents=True)
        config.write_text(yaml.safe_dump({
            'current_profile': 'default',
            'profiles': {'default': {'api_key': KEY,
                                     'project_id': 'proj_1'}}}))
        config.chmod(0o600)
    else:
        env = {'MITHRIL_API_KEY': KEY, 'MITHRIL_PROJECT': 'proj_1'}
    mounts = credential_mounts(tmp_path, env)
    assert not any('mithril' in remote for remote in mounts), mounts
    assert [local for local in mounts.values()
            if holds_key(Path(local))] == []
