"""`sky-mithril setup` merges into plugins.yaml without clobbering."""

import subprocess
import sys

import yaml

from sky_mithril.plugin import setup as setup_lib


def run_setup(tmp_path, *args):
    env = {'HOME': str(tmp_path), 'PATH': '/usr/bin:/bin'}
    return subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'setup', *args],
                          env=env, capture_output=True, text=True, check=True)


def test_setup_adds_entry_keeps_other_plugins_and_is_idempotent(tmp_path):
    path = tmp_path / '.sky' / 'plugins.yaml'
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({
        'controller_wheel_path': '/wheels',
        'plugins': [{'class': 'other.Plugin', 'parameters': {'x': 1}}],
    }))
    first = run_setup(tmp_path)
    second = run_setup(tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data['controller_wheel_path'] == '/wheels'
    assert data['plugins'] == [
        {'class': 'other.Plugin', 'parameters': {'x': 1}},
        {'class': setup_lib.PLUGIN_CLASS},
    ]
    assert 'Added' in first.stdout and 'sky api stop' in first.stdout
    assert 'Already listed' in second.stdout


def test_setup_remote_writes_remote_plugins_yaml(tmp_path):
    run_setup(tmp_path, '--remote')
    remote = yaml.safe_load((tmp_path / '.sky' / 'remote_plugins.yaml').read_text())
    assert remote['plugins'] == [{'class': setup_lib.PLUGIN_CLASS}]


def test_setup_refuses_to_overwrite_a_foreign_file(tmp_path):
    path = tmp_path / '.sky' / 'plugins.yaml'
    path.parent.mkdir()
    path.write_text('- just a list\n')
    result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'setup'],
                            env={'HOME': str(tmp_path), 'PATH': '/usr/bin:/bin'},
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert 'will not overwrite' in result.stderr
    assert path.read_text() == '- just a list\n'
