"""`sky-mithril k8s ...`: clusters whose control node is a real SSH host on
127.0.0.1 (the emulator's local backend), and a kubeconfig that kubectl uses."""

import json
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from sky_mithril.commands import kubeconfig

from tests.helpers.commands import REGION, TYPE, write_two_context_kubeconfig


def _available(api, name, key_fids):
    cluster = api.create_cluster(name, key_fids)
    assert cluster['status'] == 'Pending' and cluster['kube_host'] is None
    for _ in range(200):
        cluster = api.get(f'/v2/kubernetes/clusters/{cluster["fid"]}')
        if cluster['status'] == 'Available':
            return cluster
        time.sleep(0.05)
    raise AssertionError(f'{name} never became Available: {cluster}')


@pytest.fixture
def pool(local_ssh_emulator, home, api, run):
    """Cluster `pool` with the local key and two worker bids joined to it."""
    key = api.add_key(home / '.ssh' / 'id_ed25519.pub')
    cluster = _available(api, 'pool', [key])
    result = run('instance', 'create', '-i', TYPE, '-r', REGION, '-m', '8',
                 '-n', 'workers', '-N', '2', '--k8s', 'pool', '--wait')
    assert result.code == 0, result.err
    return cluster


def test_update_kubeconfig_merges_backs_up_and_validates(pool, home, run,
                                                         kubectl):
    before = write_two_context_kubeconfig(home)
    result = run('k8s', 'update-kubeconfig', 'pool', '-y')
    assert result.code == 0, result.err
    config_path = home / '.kube' / 'config'
    [backup] = list(config_path.parent.glob('config.backup.*'))
    assert len(backup.name) == len('config.backup.YYYYMMDD_HHMMSS')
    assert yaml.safe_load(backup.read_text()) == before

    merged = yaml.safe_load(config_path.read_text())
    assert [c['name'] for c in merged['contexts']] == ['mithril:pool', 'dev', 'prod']
    assert [c['name'] for c in merged['clusters']] == ['mithril:pool', 'dev', 'prod']
    assert [u['name'] for u in merged['users']] == ['mithril:pool', 'dev', 'prod']
    assert merged['current-context'] == 'dev'
    assert merged['contexts'][1:] == before['contexts']
    server = merged['clusters'][0]['cluster']['server']
    assert server.startswith(f'http://{pool["kube_host"]}:')
    assert config_path.stat().st_mode & 0o777 == 0o600

    # The command's own kubectl check passed; kubectl agrees on its own.
    assert 'Server Version: v1.34.0' in result.out
    assert 'infra: k8s/mithril:pool' in result.out
    assert 'sky check kubernetes' in result.out
    nodes = subprocess.run([kubectl, '--context', 'mithril:pool', 'get', 'nodes',
                            '--no-headers'], capture_output=True, text=True,
                           env={'HOME': str(home), 'PATH': '/usr/bin:/bin'},
                           check=True).stdout.split('\n')
    rows = sorted(line.split()[:3] for line in nodes if line)
    assert rows == [['pool-control', 'Ready', 'control-plane'],
                    ['workers-0', 'Ready', '<none>'],
                    ['workers-1', 'Ready', '<none>']]

    again = run('k8s', 'update-kubeconfig', 'pool', '-y', '--no-backup',
                '--skip-validation')
    assert again.code == 0, again.err
    assert 'Server Version' not in again.out
    assert len(list(config_path.parent.glob('config.backup.*'))) == 1
    assert [c['name'] for c in yaml.safe_load(config_path.read_text())['contexts']] == [
        'mithril:pool', 'dev', 'prod']


def test_update_kubeconfig_into_no_kubeconfig_sets_the_context(pool, home, run,
                                                               kubectl):
    result = run('k8s', 'update-kubeconfig', 'pool', '-y')
    assert result.code == 0, result.err
    merged = yaml.safe_load((home / '.kube' / 'config').read_text())
    assert merged['current-context'] == 'mithril:pool'
    assert not list((home / '.kube').glob('config.backup.*'))


def test_update_kubeconfig_without_kubectl_says_how_to_install_it(
        pool, home, run, monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    result = run('k8s', 'update-kubeconfig', 'pool', '-y')
    assert result.code == 0, result.err
    assert 'apt-get install -y kubernetes-client' in result.err


def test_update_kubeconfig_asks_first(pool, home, run):
    result = run('k8s', 'update-kubeconfig', 'pool')
    assert result.code == 1 and 'Pass -y' in result.err
    assert not (home / '.kube' / 'config').exists()


def test_list_and_info(pool, home, run, api):
    gone = api.create_cluster('gone', [])
    api_delete = requests.delete(
        f'{api.url}/v2/kubernetes/clusters/{gone["fid"]}', headers=api.headers,
        timeout=10)
    assert api_delete.status_code == 204
    listed = json.loads(run('k8s', 'list', '--json').out)
    assert [c['name'] for c in listed] == ['pool']
    assert len(listed[0]['instances']) == 2 and 'join_command' not in listed[0]
    assert listed[0]['context'] == 'mithril:pool'
    every = json.loads(run('k8s', 'list', '--all', '--json').out)
    assert [(c['name'], c['status']) for c in every] == [
        ('pool', 'Available'), ('gone', 'Terminated')]
    assert every[1]['deleted_at']
    table = run('k8s', 'list').out.splitlines()
    assert table[0].split()[:4] == ['NAME', 'STATUS', 'REGION', 'VERSION']
    assert table[1].split()[:5] == ['pool', 'Available', REGION, '1.34', '2']

    info = run('k8s', 'info', 'pool')
    assert info.code == 0, info.err
    assert 'workers-0' in info.out and 'workers-1' in info.out
    assert f'Control plane:  {pool["kube_host"]}' in info.out
    detail = json.loads(run('k8s', 'info', pool['fid'], '--json').out)
    assert [n['name'] for n in detail['nodes']] == ['workers-0', 'workers-1']
    assert all(n['status'] == 'STATUS_RUNNING' for n in detail['nodes'])


def test_ssh_runs_on_the_control_node(pool, home, run, tmp_path):
    assert run('k8s', 'ssh', 'pool', '--', 'test', '-s', '.kube/config').code == 0
    assert run('k8s', 'ssh', 'pool', 'exit 4').code == 4
    shown = run('k8s', 'ssh', 'pool', '--show', '-i', str(home / '.ssh' / 'id_ed25519'))
    assert shown.code == 0 and f'-i {home}/.ssh/id_ed25519' in shown.out
    assert shown.out.strip().endswith(f'@{pool["kube_host"]}')
    missing = run('k8s', 'ssh', 'pool', '-i', str(tmp_path / 'nope'), 'true')
    assert missing.code == 1 and 'no such file' in missing.err


def test_a_pending_cluster_cannot_be_reached_yet(local_ssh_emulator, home, run, api):
    local_ssh_emulator.market.k8s_boot_s = 10_000
    api.create_cluster('slow', [])
    result = run('k8s', 'update-kubeconfig', 'slow', '-y')
    assert result.code == 1 and 'slow is Pending' in result.err


@pytest.mark.parametrize('server, host, expected', [
    ('https://10.0.0.5:6443', '203.0.113.9', 'https://203.0.113.9:6443'),
    ('https://10.0.0.5', 'kube.example', 'https://kube.example'),
    ('http://127.0.0.1:8000/_kube/k8s_x', '127.0.0.2', 'http://127.0.0.2:8000/_kube/k8s_x'),
    ('https://[fd00::1]:6443', 'fd00::2', 'https://[fd00::2]:6443'),
])
def test_with_host_keeps_scheme_port_and_path(server, host, expected):
    assert kubeconfig.with_host(server, host) == expected
