"""A cluster on a CPU VM type, driven through the provisioner against the
emulator: created with `POST /v2/cpu/instances`, never a bid; status reads
it through the truth table's CPU VM rows, from the project snapshot; it is
never stopped (it bills until deleted): paused in the console it reads
INIT, and start resumes it; down deletes it; a failure, an ambiguous
create or an interrupt after the VM exists leaves no VM behind, and a
create whose answer was lost is used, never made twice."""

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest

from sky.provision import common
from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.account import node_keys
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cpu_vm
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import project_snapshot

from tests.helpers import REPO
from tests.helpers.provisioning import PUBLIC_KEY, bids_named

TYPE = 'c2-standard'
REGION = 'us-central3-a'
UP = status_lib.ClusterStatus.UP
INIT = status_lib.ClusterStatus.INIT
PROVIDER = {'project_id': 'proj_emulator', cpu_vm.PROVIDER_KEY: 'true'}


def _config(count: int = 1) -> common.ProvisionConfig:
    """What SkyPilot passes run_instances for a CPU VM launch, as the
    cluster template renders it (no limit price)."""
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    return devtools_provisioning.provision_config(
        {'profile': '', 'project_id': 'proj_emulator', 'api_url': '',
         'region': REGION, 'limit_price_per_hour': '',
         'provision_timeout': '', 'boot_timeout': '',
         cpu_vm.PROVIDER_KEY: 'true'}, key_fid, TYPE, count=count)


def _launch(name: str, config: common.ProvisionConfig) -> common.ProvisionRecord:
    config = provisioner.bootstrap_instances(REGION, name, config)
    return provisioner.run_instances(REGION, name, name, config)


def _query(name: str) -> Dict[str, Any]:
    return provisioner.query_instances(name, name, PROVIDER)


def _vms(name: str) -> List[models.Instance]:
    """The project's CPU VMs of that name, terminated ones too."""
    conn = connection.connect()
    cpu_types = {t.fid for t in conn.client.list_cpu_instance_types()}
    return [i for i in conn.client.list_instances(conn.project_id)
            if i.name == name and i.instance_type in cpu_types]


def _live(name: str) -> List[models.Instance]:
    return [i for i in _vms(name)
            if i.status != models.InstanceState.TERMINATED]


def _pause_in_console(name: str) -> None:
    """Pauses the cluster's VM as Mithril's console does, outside the
    plugin; the project snapshot is then marked stale, which spares the
    test the snapshot's TTL."""
    conn = connection.connect()
    [vm] = _live(name)
    conn.client.set_instances_paused([vm.fid], paused=True)
    project_snapshot.invalidate(conn)


def test_a_cpu_vm_launches_without_a_bid_is_never_stopped_and_goes_down(
        fast_emulator: EmulatorServer) -> None:
    record = _launch('ctl', _config())
    [vm] = _live('ctl')
    assert record.head_instance_id == vm.fid
    assert record.created_instance_ids == [vm.fid]
    assert bids_named(fast_emulator, 'ctl') == []
    assert _query('ctl') == {vm.fid: (UP, None)}
    info = provisioner.get_cluster_info(REGION, 'ctl', PROVIDER)
    assert info.head_instance_id == vm.fid
    assert info.instances[vm.fid][0].external_ip

    with pytest.raises(NotImplementedError, match='never stopped'):
        provisioner.stop_instances('ctl', PROVIDER)
    assert _query('ctl') == {vm.fid: (UP, None)}

    _pause_in_console('ctl')
    [(status, reason)] = _query('ctl').values()
    assert status == INIT
    assert 'still bills' in reason
    assert '`sky start`' in reason and '`sky down`' in reason

    restarted = _launch('ctl', _config())
    assert restarted.resumed_instance_ids == [vm.fid]
    assert restarted.created_instance_ids == []
    assert _query('ctl') == {vm.fid: (UP, None)}

    provisioner.terminate_instances('ctl', PROVIDER)
    assert _query('ctl') == {}
    assert _live('ctl') == []
    assert provisioner.get_cluster_info(REGION, 'ctl',
                                        PROVIDER).head_instance_id is None
    provisioner.terminate_instances('ctl', PROVIDER)


def test_a_vm_gone_outside_sky_down_has_its_node_keys_revoked_at_cleanup(
        fast_emulator: EmulatorServer) -> None:
    """A node's autodown deletes its own VM before it can revoke its own
    key: SkyPilot's cleanup of the gone cluster revokes it; nothing while
    the VM is live."""
    conn = connection.connect()
    node_keys.issue(conn, 'autodown', None)
    record = _launch('autodown', _config())
    provisioner.cleanup_cluster_resources('autodown', PROVIDER)
    assert not node_keys.revoked_by_teardown(conn, 'autodown')
    conn.client.terminate_cpu_instance(record.head_instance_id)
    assert _query('autodown') == {}
    provisioner.cleanup_cluster_resources('autodown', PROVIDER)
    assert node_keys.revoked_by_teardown(conn, 'autodown')


def test_a_launch_onto_a_running_vm_adopts_it(fast_emulator: EmulatorServer) -> None:
    first = _launch('again', _config())
    second = _launch('again', _config())
    assert second.head_instance_id == first.head_instance_id
    assert second.created_instance_ids == second.resumed_instance_ids == []
    assert len(_live('again')) == 1


def test_a_cpu_vm_is_one_node(fast_emulator: EmulatorServer) -> None:
    with pytest.raises(cpu_vm.CpuVmError, match='one node'):
        _launch('pair', _config(count=2))
    assert _vms('pair') == []


def test_a_failure_after_the_vm_exists_deletes_it(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def boot_fails(self: cpu_vm.ClusterVm, boot_timeout: float) -> models.Instance:
        raise cpu_vm.CpuVmError('the VM never became reachable')

    monkeypatch.setattr(cpu_vm.ClusterVm, '_wait', boot_fails)
    with pytest.raises(cpu_vm.CpuVmError, match='never became reachable'):
        _launch('broken', _config())
    [vm] = _vms('broken')
    assert vm.status == models.InstanceState.TERMINATED


def test_an_interrupt_while_the_vm_boots_deletes_it(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: cpu_vm.ClusterVm, boot_timeout: float) -> models.Instance:
        raise KeyboardInterrupt

    monkeypatch.setattr(cpu_vm.ClusterVm, '_wait', interrupted)
    with pytest.raises(KeyboardInterrupt):
        _launch('ctrl-c', _config())
    assert _live('ctrl-c') == []


def test_an_interrupted_start_pauses_the_vm_again(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `sky start` of a VM paused in the console leaves it paused, as it
    found it, when it is interrupted."""
    _launch('restart', _config())
    _pause_in_console('restart')

    def interrupted(self: cpu_vm.ClusterVm, boot_timeout: float) -> models.Instance:
        raise KeyboardInterrupt

    monkeypatch.setattr(cpu_vm.ClusterVm, '_wait', interrupted)
    with pytest.raises(KeyboardInterrupt):
        _launch('restart', _config())
    [vm] = _live('restart')
    assert vm.status in (models.InstanceState.PAUSED,
                         models.InstanceState.STOPPING)


def test_a_create_whose_answer_was_lost_is_used_not_made_twice(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    connect = connection.connect
    monkeypatch.setattr(connection, 'connect',
                        lambda **kw: connect(**kw, max_retry_seconds=0.0))
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/cpu/instances',
        'lost_response': 1.0, 'max_faults': 1}])
    record = _launch('lost', _config())
    assert fast_emulator.control('GET', 'faults')['counts']['lost_response'] == 1
    [vm] = _live('lost')
    assert record.head_instance_id == vm.fid
    assert record.created_instance_ids == [vm.fid]


def test_a_refused_create_leaves_no_vm(
        fast_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    connect = connection.connect
    monkeypatch.setattr(connection, 'connect',
                        lambda **kw: connect(**kw, max_retry_seconds=0.0))
    monkeypatch.setattr(cpu_vm, 'LATE_COMMIT_WINDOW_SECONDS', 1.0)
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/cpu/instances',
        'server_error': 1.0, 'server_error_statuses': [503]}])
    with pytest.raises(errors.AmbiguousResponseError):
        _launch('refused', _config())
    assert _vms('refused') == []


def _config_json() -> Dict[str, Any]:
    config = _config()
    return {
        'provider_config': config.provider_config,
        'authentication_config': config.authentication_config,
        'docker_config': config.docker_config,
        'node_config': config.node_config,
        'count': config.count,
        'tags': config.tags,
        'resume_stopped_nodes': config.resume_stopped_nodes,
        'ports_to_open_on_launch': config.ports_to_open_on_launch,
    }


def _posts(server: EmulatorServer) -> int:
    return int(server.control('GET', 'stats')['by_route'].get(
        'POST /v2/cpu/instances', 0))


def test_sigterm_while_the_create_is_in_flight_leaves_no_vm(
        fast_emulator: EmulatorServer) -> None:
    """SkyPilot cancels a request with SIGTERM; one landing while the
    create is in flight waits for its answer, then deletes the VM."""
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/cpu/instances', 'latency': 1.0,
        'latency_s': 3.0}])
    before = _posts(fast_emulator)
    child = subprocess.Popen(
        [sys.executable, '-m', 'tests.helpers.provision_child',
         json.dumps({'call': 'run', 'name': 'sigterm',
                     'config': _config_json()})],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        cwd=str(REPO))
    try:
        deadline = time.monotonic() + 60
        while _posts(fast_emulator) == before:
            assert time.monotonic() < deadline, 'the create never came'
            assert child.poll() is None, child.stdout.read()
            time.sleep(0.05)
        time.sleep(1.0)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
    assert 'INTERRUPTED' in out.splitlines()
    assert [vm.status for vm in _vms('sigterm')] == [
        models.InstanceState.TERMINATED]
