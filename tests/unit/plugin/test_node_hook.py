"""The node side: registering sky-mithril's provisioner in a plugin-less
SkyPilot, and reading Mithril's preemption notice."""

import datetime
import os
import subprocess
import sys

from sky_mithril.recovery import notice


def test_a_running_notice_gives_its_deadline_and_a_stale_one_none(tmp_path,
                                                                 monkeypatch):
    signal_file = tmp_path / 'MITHRIL_SIGNAL.yml'
    monkeypatch.setattr(notice, 'SIGNAL_FILE', signal_file)
    assert notice._notice_deadline() is None
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        minutes=5)
    signal_file.write_text(f"instance_status: STATUS_PREEMPTING\n"
                           f"bid_status: Preempting\nend_time: '{soon.isoformat()}'\n")
    assert notice._notice_deadline() == soon.isoformat()
    signal_file.write_text("end_time: '2020-01-01T00:00:00+00:00'\n")
    assert notice._notice_deadline() is None


def test_a_plugin_less_skylet_gets_our_provisioner_and_the_notice_watcher(
        tmp_path):
    """`python -m sky.skylet.skylet` with the hook loaded at start-up, as the
    .pth file the cluster template writes loads it on the nodes. (The skylet
    then stops here for want of the gRPC stubs' protobuf, which the nodes'
    SkyPilot runtime has; registration happens before that.)"""
    (tmp_path / 'sitecustomize.py').write_text('''
import sys
import sky_mithril.node_hook as hook
import sky_mithril.recovery.notice as notice
notice.watch_for_notice = lambda: sys.stderr.write('watching for notices\\n')
original = hook.register
def register(provision):
    original(provision)
    found = provision.get_registered_provisioner('mithril')
    sys.stderr.write(f'registered {found.module.__name__}\\n')
hook.register = register
''')
    result = subprocess.run(
        [sys.executable, '-m', 'sky.skylet.skylet', '--help'],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert 'registered sky_mithril.provision' in result.stderr, result.stderr
    assert 'watching for notices' in result.stderr
    other = subprocess.run(
        [sys.executable, '-c', 'import sky.provision'], capture_output=True,
        text=True, timeout=120, cwd=str(tmp_path),
        env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert 'registered sky_mithril.provision' in other.stderr
    assert 'watching for notices' not in other.stderr
