"""For the infrastructure commands' tests (integration and host tiers): a
private HOME with an SSH key pair, kubectl, and `sky-mithril ...` run
in-process (fixtures, which each tier's conftest imports); SkyPilot's own
cluster state, a two-context kubeconfig, and plain HTTP to the emulator."""

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import requests
import yaml

from sky_mithril import cli
from sky_mithril.commands import common
from sky_mithril.commands import ssh as ssh_command
from sky_mithril.emulator.hosts import vm_image
from sky_mithril.emulator.server import EmulatorServer

TYPE = 'a100-80gb.sxm.1x'
REGION = 'us-central3-a'


def add_sky_cluster(home: Path, name: str, name_on_cloud: str) -> Dict[str, str]:
    """Writes cluster `name` (backed by bid `name_on_cloud`) into SkyPilot's
    own state under `home`, and returns the environment that sees it.
    SkyPilot keeps one database engine per process, so the cluster is
    written, and the command under test run, in processes of their own."""
    env = {**os.environ, 'HOME': str(home)}
    subprocess.run([sys.executable, '-c', textwrap.dedent(f'''
        import sky
        from sky import global_user_state
        from sky.backends import cloud_vm_ray_backend
        handle = cloud_vm_ray_backend.CloudVmRayResourceHandle(
            cluster_name={name!r}, cluster_name_on_cloud={name_on_cloud!r},
            cluster_yaml=None, launched_nodes=1,
            launched_resources=sky.Resources(infra='kubernetes'))
        global_user_state.add_or_update_cluster(
            {name!r}, handle, requested_resources=None, ready=True)
        ''')], env=env, check=True, capture_output=True, timeout=120)
    return env


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with `~/.ssh/id_ed25519`; fast polling."""
    home = tmp_path / 'home'
    (home / '.ssh').mkdir(parents=True)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C',
                    'test@local', '-f', str(home / '.ssh' / 'id_ed25519')],
                   check=True)
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.setattr(common, 'POLL_INTERVAL_S', 0.05)
    monkeypatch.setattr(common, 'RUNNING_TIMEOUT_S', 30.0)
    monkeypatch.setattr(ssh_command, 'SSH_READY_TIMEOUT_S', 20.0)
    return home


@pytest.fixture(scope='session')
def kubectl() -> str:
    """kubectl, installed from Debian's kubernetes-client when missing (root)."""
    if shutil.which('kubectl') is None:
        vm_image.ensure_packages(['kubernetes-client'],
                                 lambda line: print(line, flush=True))
    path = shutil.which('kubectl')
    assert path, 'kubectl is needed: apt-get install -y kubernetes-client'
    return path


def write_two_context_kubeconfig(home: Path) -> Dict[str, Any]:
    """Writes `~/.kube/config` with contexts `dev` (current) and `prod`;
    returns what it wrote."""
    config = {
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'dev',
        'clusters': [{'name': 'dev', 'cluster': {'server': 'https://dev.example:6443'}},
                     {'name': 'prod', 'cluster': {'server': 'https://prod.example:443'}}],
        'users': [{'name': 'dev', 'user': {'token': 'dev-token'}},
                  {'name': 'prod', 'user': {'token': 'prod-token'}}],
        'contexts': [{'name': 'dev', 'context': {'cluster': 'dev', 'user': 'dev'}},
                     {'name': 'prod', 'context': {'cluster': 'prod', 'user': 'prod'}}],
    }
    path = home / '.kube' / 'config'
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    return config


@pytest.fixture
def run(capsys: pytest.CaptureFixture) -> Callable[..., Result]:
    """`run('instance', 'list')` runs `sky-mithril instance list` in-process."""

    def run_cli(*argv: str) -> Result:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run_cli


class Api:
    """Plain HTTP to the emulator, independent of the client under test."""

    def __init__(self, server: EmulatorServer) -> None:
        self.url = server.url
        self.headers = {'Authorization': 'Bearer emulator-test-key'}

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + path, params=params,
                                headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Dict[str, Any]) -> Any:
        response = requests.post(self.url + path, json=body,
                                 headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def bids_named(self, name: str) -> List[Dict[str, Any]]:
        return self.get('/v2/spot/bids', project='proj_emulator',
                        name=name)['data']

    def add_key(self, public_key_path: Path, name: str = 'k') -> str:
        return self.post('/v2/ssh-keys', {
            'project': 'proj_emulator', 'name': name,
            'public_key': public_key_path.read_text()})['fid']

    def create_cluster(self, name: str, key_fids: List[str]) -> Dict[str, Any]:
        return self.post('/v2/kubernetes/clusters', {
            'project': 'proj_emulator', 'name': name, 'region': REGION,
            'instance_type': TYPE, 'ssh_keys': key_fids})
