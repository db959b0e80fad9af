"""The plugin's wiring: loud failure on a SkyPilot without our hook points,
idempotent install, and pickles a plugin-less client can load."""

import os
import shlex
import subprocess
import sys

import pytest
import sky

from sky_mithril import skypilot_names
from sky_mithril.plugin import takeover


def test_missing_hook_point_fails_loudly_naming_the_version(monkeypatch):
    from sky import authentication
    monkeypatch.delattr(authentication, 'setup_mithril_authentication')
    monkeypatch.setattr(takeover, '_STEPS', ())
    with pytest.raises(skypilot_names.PluginCompatibilityError) as info:
        takeover.install()
    message = str(info.value)
    assert f'SkyPilot {sky.__version__}' in message
    assert 'sky.authentication.setup_mithril_authentication' in message
    assert 'skypilot==0.14.1' in message


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120)


def test_install_twice_then_a_plugin_less_process_unpickles_the_cloud(tmp_path):
    pickled = tmp_path / 'cloud.pkl'
    installed = run_python(f'''
import pickle
from sky_mithril.plugin import takeover
takeover.install()
takeover.install()
import sky
from sky.clouds import mithril
from sky.utils import registry
from sky_mithril import cloud
assert sky.Mithril is sky.clouds.Mithril is mithril.Mithril is cloud.Mithril
assert type(registry.CLOUD_REGISTRY.from_str('mithril')) is cloud.Mithril
open({str(pickled)!r}, 'wb').write(pickle.dumps(registry.CLOUD_REGISTRY.from_str('mithril')))
print('installed')
''')
    assert installed.returncode == 0, installed.stderr
    loaded = run_python(f'''
import pickle
obj = pickle.loads(open({str(pickled)!r}, 'rb').read())
import sys
print(type(obj).__module__, type(obj).__name__, 'sky_mithril' in sys.modules)
''')
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ['sky.clouds.mithril', 'Mithril', 'False']


def test_install_after_a_failed_step_finishes_without_repeating_steps(tmp_path):
    result = run_python('''
from sky_mithril.plugin import takeover
original = takeover._take_over_provisioner
attempts = []
def _take_over_provisioner():
    attempts.append(1)
    if len(attempts) == 1:
        raise RuntimeError('first attempt fails')
    original()
takeover._STEPS = tuple(_take_over_provisioner if step is original else step
                        for step in takeover._STEPS)
try:
    takeover.install()
except RuntimeError as e:
    print('failed once:', e)
takeover.install()
takeover.install()
from sky import provision
from sky_mithril import provision as ours
assert provision._registered_provisioners['mithril'].module is ours
print('attempts', len(attempts))
''')
    assert result.returncode == 0, result.stderr
    assert 'failed once: first attempt fails' in result.stdout
    assert 'attempts 2' in result.stdout


def test_a_read_only_catalog_folder_does_not_stop_the_plugin(tmp_path):
    home = tmp_path / 'home'
    (home / '.sky').mkdir(parents=True)
    (home / '.sky' / 'catalogs').write_text('not a folder')
    result = subprocess.run([sys.executable, '-c', '''
from sky_mithril.plugin import takeover
takeover.install()
from sky.utils import registry
from sky_mithril import cloud
assert type(registry.CLOUD_REGISTRY.from_str('mithril')) is cloud.Mithril
print('installed')
'''], capture_output=True, text=True, timeout=120,
                            env={**os.environ, 'HOME': str(home)})
    assert result.returncode == 0, result.stderr
    assert 'installed' in result.stdout
    assert 'Could not publish the Mithril catalog' in result.stdout + result.stderr


def test_a_serve_controller_with_sky_mithril_starts_with_the_plugins(tmp_path):
    """SkyPilot's serve controller task, as `sky serve up` renders it: on the
    API server's host (consolidation mode) and on a remote controller our
    wheel goes up to (`controller_wheel_path`), the controller starts
    through sky-mithril's entry point, with `sky.serve.service` still on its
    command line (SkyPilot finds the controller's process by it); a remote
    controller without our wheel starts as SkyPilot starts it."""
    result = run_python(f'''
import os
import shlex
import jinja2
import jinja2.meta
from sky_mithril.plugin import takeover
takeover.install()
import sky
from sky.serve import constants
from sky.utils import common_utils
template = os.path.join(os.path.dirname(sky.__file__), 'templates',
                        constants.CONTROLLER_TEMPLATE)
# Every variable the template names, empty unless set below.
names = jinja2.meta.find_undeclared_variables(
    jinja2.Environment().parse(open(template).read()))
ours = {{'~/.sky/plugins/wheels/sky_mithril-0.1.0-py3-none-any.whl':
        '/home/u/.sky/mithril-wheels/sky_mithril-0.1.0-py3-none-any.whl'}}
other = {{'~/.sky/plugins/wheels/other-1.0-py3-none-any.whl':
         '/home/u/wheels/other-1.0-py3-none-any.whl'}}
for name, job_id, wheels in (('local', 7, {{}}), ('remote-ours', None, ours),
                             ('remote', None, other)):
    variables = {{**{{n: {{}} for n in names}}, 'service_name': 'tiny',
                  'consolidation_mode_job_id': job_id,
                  'plugin_wheel_file_mounts': wheels,
                  'sky_python_cmd': 'python3'}}
    common_utils.fill_template(constants.CONTROLLER_TEMPLATE, variables,
                               output_path={str(tmp_path)!r} + '/' + name + '.yaml')
''')
    assert result.returncode == 0, result.stderr
    for name in ('local', 'remote-ours'):
        rendered = (tmp_path / f'{name}.yaml').read_text()
        assert ('-m sky_mithril.plugin.serve_controller sky.serve.service '
                '\\\n    --service-name tiny') in rendered, rendered
    remote = (tmp_path / 'remote.yaml').read_text()
    assert ' -u -m sky.serve.service \\\n' in remote, remote
    assert 'sky_mithril' not in remote


def test_code_run_on_a_serve_controller_host_with_sky_mithril_loads_the_plugins(
        tmp_path):
    """`sky serve status`, `update`, `logs` and `down` run SkyPilot's code
    (`ServeCodeGen`) in a new Python process on the controller's host: where
    sky-mithril is installed (the API server's host in consolidation mode, a
    remote controller that got our wheel) it sees the plugin's Mithril
    cloud, which answers a replica's endpoint (the built-in one refuses it).
    There, `sky serve up`'s wait for the new controller (which loads the
    plugins first) to register is raised from SkyPilot's 60 s."""
    plugins = tmp_path / 'plugins.yaml'
    plugins.write_text('plugins:\n- class: sky_mithril.plugin.MithrilPlugin\n')
    built = run_python('''
from sky_mithril.plugin import takeover
takeover.install()
from sky.serve import serve_utils
print(serve_utils.ServeCodeGen._build([
    'from sky import clouds',
    'from sky.serve import constants',
    'print(constants.SERVICE_REGISTER_TIMEOUT_SECONDS, sorted({f.__module__'
    ' for f in vars(clouds.Mithril).values() if callable(f)}))']))
''')
    assert built.returncode == 0, built.stderr
    # The command runs `python -u -c CODE`; run CODE with this Python.
    code = shlex.split(built.stdout.strip().split(' -u -c ', 1)[1])[0]
    env = {**os.environ, 'HOME': str(tmp_path),
           'SKYPILOT_SERVER_PLUGINS_CONFIG': str(plugins)}
    env.pop('IS_SKYPILOT_SERVER', None)

    def cloud_modules(**server: str) -> str:
        result = subprocess.run([sys.executable, '-c', code],
                                capture_output=True, text=True, timeout=120,
                                env={**env, **server})
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    for host in (cloud_modules(IS_SKYPILOT_SERVER='true'),  # consolidated
                 cloud_modules()):  # a remote controller with our wheel
        assert "'sky_mithril.cloud'" in host
        assert host.startswith(f'{takeover.SERVICE_REGISTER_SECONDS} ')
