"""`sky-mithril setup` merges into plugins.yaml without clobbering, says what
is wrong with a file it will not touch, and points remote controllers at
our wheel."""

import subprocess
import sys

import yaml

from sky_mithril import __version__
from sky_mithril.plugin import setup as setup_lib

from tests.helpers import REPO


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


def test_setup_names_a_malformed_plugins_yaml_without_a_traceback(tmp_path):
    path = tmp_path / '.sky' / 'plugins.yaml'
    path.parent.mkdir()
    path.write_text('plugins:\n  - class: other.Plugin\n    parameters: {x: [1,\n')
    result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'setup'],
                            env={'HOME': str(tmp_path), 'PATH': '/usr/bin:/bin'},
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f'sky-mithril setup: {path} is not valid YAML (line ')
    assert 'will not overwrite it' in result.stderr
    assert 'Traceback' not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_setup_remote_points_controllers_at_our_wheel(tmp_path):
    wheels = tmp_path / '.sky' / 'mithril-wheels'
    first = run_setup(tmp_path, '--remote')
    command = setup_lib.wheel_build_command(setup_lib.DEFAULT_WHEEL_DIR)
    assert (f'Not done yet: remote controllers install sky-mithril from a wheel, and '
            f'{setup_lib.DEFAULT_WHEEL_DIR} has none of version {__version__}. Put one '
            f'there with `{command}`, then run `sky-mithril setup --remote` again') in first.stdout
    plugins = tmp_path / '.sky' / 'plugins.yaml'
    assert 'controller_wheel_path' not in yaml.safe_load(plugins.read_text())
    wheels.mkdir()
    (wheels / f'sky_mithril-{__version__}-py3-none-any.whl').write_bytes(b'wheel')
    second = run_setup(tmp_path, '--remote')
    assert f'Set controller_wheel_path: {setup_lib.DEFAULT_WHEEL_DIR}' in second.stdout
    data = yaml.safe_load(plugins.read_text())
    assert data['controller_wheel_path'] == setup_lib.DEFAULT_WHEEL_DIR
    assert data['plugins'] == [{'class': setup_lib.PLUGIN_CLASS}]
    assert 'controller_wheel_path in' in run_setup(tmp_path, '--remote').stdout


def test_setup_remote_keeps_a_wheel_folder_already_named(tmp_path):
    mine = tmp_path / 'my-wheels'
    mine.mkdir()
    plugins = tmp_path / '.sky' / 'plugins.yaml'
    plugins.parent.mkdir()
    plugins.write_text(yaml.safe_dump({'controller_wheel_path': str(mine)}))
    result = run_setup(tmp_path, '--remote')
    assert f'{mine} has none of version {__version__}' in result.stdout
    assert yaml.safe_load(plugins.read_text())['controller_wheel_path'] == str(mine)


def test_the_wheel_is_built_from_this_checkout():
    command = setup_lib.wheel_build_command('~/w')
    assert command == f'pip wheel --no-deps {REPO} -w ~/w'
