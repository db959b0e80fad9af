"""Each Mithril cluster's nodes hold an API key of their own (node_keys):
SkyPilot writes the cluster's config in-process (tests.helpers.cluster_config)
against the emulator, the nodes' side runs the provisioner with nothing but
the file the nodes get, and the emulator says which keys still work."""

import datetime
import logging
import shutil
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
import yaml
import sky
from sky import global_user_state
from sky import provision as sky_provision
from sky.backends import backend_utils
from sky.backends import cloud_vm_ray_backend
from sky.utils import status_lib

from sky_mithril import cloud
from sky_mithril import provision as ours
from sky_mithril.account import connection
from sky_mithril.account import credentials as credentials_lib
from sky_mithril.account import node_keys
from sky_mithril.api import AmbiguousResponseError
from sky_mithril.api import client as client_lib
from sky_mithril.devtools import provisioning as devtools_provisioning
from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import node_key_renewal

from tests.helpers.cluster_config import (INSTANCE_TYPE, REGION, WrittenConfig,
                                          write_cluster_config)
from tests.helpers.provisioning import snapshot_requests

ACCOUNT_KEY = 'emulator-test-key'  # the fast emulator's (point_plugin_at)
DAY = 24 * 3600


def works(server: EmulatorServer, key: str) -> bool:
    """Whether `server` takes `key` (401 says it does not)."""
    answer = requests.get(f'{server.url}/v2/me', timeout=10,
                          headers={'Authorization': f'Bearer {key}'})
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def keys_of(server: EmulatorServer, account_key: str = ACCOUNT_KEY
            ) -> List[Dict[str, Any]]:
    answer = requests.get(f'{server.url}/v2/api-keys', timeout=10,
                          headers={'Authorization': f'Bearer {account_key}'})
    assert answer.status_code == 200, answer.text
    return answer.json()


def live_keys_of(server: EmulatorServer, account_key: str = ACCOUNT_KEY
                 ) -> List[Dict[str, Any]]:
    return [k for k in keys_of(server, account_key)
            if k['deactivated_at'] is None]


def staged_node_file(written: WrittenConfig) -> Path:
    """The file the cluster's nodes get, as staged for upload: the one
    staged file holding the key of the cluster's credentials file."""
    local = yaml.safe_load(node_keys.credentials_path(
        written.cluster_name_on_cloud).read_text())
    [staged] = written.staged_holding(
        local['profiles'][local['current_profile']]['api_key'])
    return staged


def node_credentials(written: WrittenConfig) -> Dict[str, Any]:
    """The profile the cluster's nodes get (`staged_node_file`)."""
    config = yaml.safe_load(staged_node_file(written).read_text())
    return config['profiles'][config['current_profile']]


def key_in(path: Path) -> str:
    """The API key a credentials file holds."""
    config = yaml.safe_load(path.read_text())
    return config['profiles'][config['current_profile']]['api_key']


def place_bid(written: WrittenConfig) -> None:
    """The launch's provisioning step for the written cluster."""
    provisioner.run_instances(
        REGION, written.cluster_name_on_cloud, written.cluster_name_on_cloud,
        devtools_provisioning.provision_config(
            written.provider, written.config['auth']['ssh_key_id'],
            INSTANCE_TYPE))


def bid_status(server: EmulatorServer, name: str) -> List[str]:
    return [b['status'] for b in server.control('GET', 'state')['bids']
            if b['name'] == name]


def on_the_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                written: WrittenConfig) -> None:
    """This process as the cluster's head node: a home of its own whose
    `~/.config/mithril/config.yaml` is the staged node file, and no
    credentials in the environment."""
    home = tmp_path / 'node-home'
    mounted = home / '.config' / 'mithril' / 'config.yaml'
    mounted.parent.mkdir(parents=True)
    shutil.copy(staged_node_file(written), mounted)
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.delenv('XDG_CONFIG_HOME', raising=False)
    for variable in ('MITHRIL_API_KEY', 'MITHRIL_API_URL', 'MITHRIL_PROJECT',
                     'MITHRIL_PROFILE'):
        monkeypatch.delenv(variable, raising=False)


def test_a_launch_stages_a_key_of_the_clusters_own_never_the_accounts(
        fast_emulator, monkeypatch):
    written = write_cluster_config(monkeypatch, 'nodekey')
    name = written.cluster_name_on_cloud
    assert written.staged_holding(ACCOUNT_KEY) == []
    node = node_credentials(written)
    assert node['api_key'] != ACCOUNT_KEY and works(fast_emulator, node['api_key'])
    assert (node['api_url'], node['project_id']) == (fast_emulator.url, PROJECT_FID)
    [key] = keys_of(fast_emulator)
    assert key['name'] == node_keys.key_name(PROJECT_FID, name)
    assert len(key['name']) < 60
    # The runtime setup copies it to where the nodes' sky-mithril and `ml` look.
    assert '~/.config/mithril/config.yaml' in written.config['setup_commands'][0]
    local = node_keys.credentials_path(name)
    assert local.read_bytes() == staged_node_file(written).read_bytes()
    assert local.stat().st_mode & 0o777 == 0o600
    for folder in (local.parent, local.parent.parent):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_a_relaunch_within_a_day_keeps_the_key_and_a_later_one_renews_it(
        fast_emulator, monkeypatch):
    first = node_credentials(write_cluster_config(monkeypatch, 'renew'))
    assert node_credentials(write_cluster_config(monkeypatch, 'renew')) == first
    assert len(keys_of(fast_emulator)) == 1
    fast_emulator.control('POST', 'advance', seconds=DAY)
    renewed = node_credentials(write_cluster_config(monkeypatch, 'renew'))
    assert renewed['api_key'] != first['api_key']
    assert works(fast_emulator, renewed['api_key'])
    [old, new] = sorted(live_keys_of(fast_emulator), key=lambda k: k['created_at'])
    assert old['fid'] != new['fid']
    # Set from the server's clock, which this emulator runs 600 times faster.
    lifetime = datetime.datetime.fromisoformat(new['expires_at']) - (
        datetime.datetime.fromisoformat(new['created_at']))
    assert abs(lifetime - node_keys.LIFETIME) < datetime.timedelta(hours=1)
    # The old key is on the same nodes until they get the new one.
    assert works(fast_emulator, first['api_key'])


@pytest.fixture(name='two_profiles')
def fixture_two_profiles(monkeypatch, tmp_path) -> Iterator[Dict[str, EmulatorServer]]:
    """Profiles `a` and `b` of the user's config file, each at an emulator
    of its own that takes only its own account key; `a` is current."""
    with EmulatorServer(speed=600, api_key='key-a') as a, \
            EmulatorServer(speed=600, api_key='key-b') as b:
        config = tmp_path / 'config-home'
        (config / 'mithril').mkdir(parents=True)
        (config / 'mithril' / 'config.yaml').write_text(yaml.safe_dump({
            'current_profile': 'a',
            'profiles': {
                name: {'api_key': f'key-{name}', 'api_url': server.url,
                       'project_id': PROJECT_FID}
                for name, server in (('a', a), ('b', b))}}))
        monkeypatch.setenv('XDG_CONFIG_HOME', str(config))
        for variable in ('MITHRIL_API_KEY', 'MITHRIL_API_URL',
                         'MITHRIL_PROJECT', 'MITHRIL_PROFILE'):
            monkeypatch.delenv(variable, raising=False)
        yield {'a': a, 'b': b}


def switch_profile(profile: str) -> None:
    path = Path(connection.credentials_lib.credentials_path())
    config = yaml.safe_load(path.read_text())
    config['current_profile'] = profile
    path.write_text(yaml.safe_dump(config))


def test_the_nodes_key_outlives_a_profile_switch_and_a_start_renews_it_in_the_clusters_account(
        two_profiles, monkeypatch, tmp_path):
    a, b = two_profiles['a'], two_profiles['b']
    written = write_cluster_config(monkeypatch, 'switch')
    name = written.cluster_name_on_cloud
    launched = node_credentials(written)
    assert launched['api_url'] == a.url and works(a, launched['api_key'])
    place_bid(written)
    switch_profile('b')

    # `sky start` after the switch: SkyPilot has the cluster's record, and
    # the cluster keeps its account.
    monkeypatch.setattr(
        global_user_state, 'get_handle_from_cluster_name',
        lambda cluster: types.SimpleNamespace(
            launched_resources=types.SimpleNamespace(cloud=cloud.Mithril()),
            cluster_yaml=written.yaml_path) if cluster == 'switch' else None)
    a.control('POST', 'advance', seconds=DAY)
    started = write_cluster_config(monkeypatch, 'switch')
    assert started.provider['api_url'] == a.url
    node = node_credentials(started)
    assert node['api_url'] == a.url and node['api_key'] != launched['api_key']
    assert works(a, node['api_key']) and not works(b, node['api_key'])
    assert len(live_keys_of(a, 'key-a')) == 2 and keys_of(b, 'key-b') == []

    # The node's autostop, with nothing but the file the nodes get.
    with monkeypatch.context() as node_side:
        on_the_node(node_side, tmp_path, started)
        provisioner.stop_instances(name, started.provider)
    assert bid_status(a, name) == ['Paused']


def test_down_revokes_the_nodes_key(fast_emulator, monkeypatch):
    written = write_cluster_config(monkeypatch, 'down')
    name = written.cluster_name_on_cloud
    place_bid(written)
    key = node_credentials(written)['api_key']
    provisioner.terminate_instances(name, written.provider)
    assert bid_status(fast_emulator, name) == ['Terminated']
    assert not works(fast_emulator, key)
    assert live_keys_of(fast_emulator) == []
    assert not node_keys.cluster_dir(name).exists()
    provisioner.terminate_instances(name, written.provider)


def test_autodown_on_the_node_revokes_every_key_of_the_cluster_its_own_last(
        fast_emulator, monkeypatch, tmp_path):
    older = node_credentials(write_cluster_config(monkeypatch, 'autodown'))
    fast_emulator.control('POST', 'advance', seconds=DAY)
    written = write_cluster_config(monkeypatch, 'autodown')
    name = written.cluster_name_on_cloud
    newer = node_credentials(written)
    place_bid(written)
    assert len(live_keys_of(fast_emulator)) == 2
    with monkeypatch.context() as node_side:
        on_the_node(node_side, tmp_path, written)
        provisioner.terminate_instances(name, written.provider)
    assert bid_status(fast_emulator, name) == ['Terminated']
    assert live_keys_of(fast_emulator) == []
    for node in (older, newer):
        assert not works(fast_emulator, node['api_key'])


def test_a_failed_revocation_does_not_stop_down(fast_emulator, monkeypatch,
                                                caplog):
    written = write_cluster_config(monkeypatch, 'revokefail')
    name = written.cluster_name_on_cloud
    place_bid(written)
    key = node_credentials(written)['api_key']
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'DELETE', 'path': '/v2/api-keys/{key_fid}',
        'server_error': 1.0, 'server_error_statuses': [501]}])
    caplog.set_level(logging.WARNING)
    provisioner.terminate_instances(name, written.provider)
    assert bid_status(fast_emulator, name) == ['Terminated']
    [fid] = [k['fid'] for k in live_keys_of(fast_emulator)]
    assert f'Could not revoke Mithril API key {fid}' in caplog.text
    assert key not in caplog.text
    # Bounded by its expiry.
    fast_emulator.control('PUT', 'faults', rules=[])
    fast_emulator.control('POST', 'advance', seconds=node_keys.LIFETIME.total_seconds())
    assert not works(fast_emulator, key)


def test_a_key_minted_but_not_written_is_revoked(fast_emulator, monkeypatch):
    def fail(*args: Any) -> None:
        raise OSError('disk full')

    monkeypatch.setattr(node_keys, '_write', fail)
    conn = connection.connect()
    with pytest.raises(OSError):
        node_keys.issue(conn, 'unwritten', None)
    [key] = keys_of(fast_emulator)
    assert key['deactivated_at'] is not None


def test_a_mint_whose_answer_was_lost_leaves_no_key_live(fast_emulator):
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/api-keys', 'lost_response': 1.0,
        'max_faults': 1}])
    conn = connection.connect()
    with pytest.raises(AmbiguousResponseError):
        node_keys.issue(conn, 'lost', None)
    [key] = keys_of(fast_emulator)
    assert key['deactivated_at'] is not None
    assert node_keys.issue(conn, 'lost', None) == node_keys.credentials_path('lost')
    assert len(live_keys_of(fast_emulator)) == 1


# A cluster whose node's autodown cancelled its bid: SkyPilot's status
# refresh finds it gone, and its keys are revoked.

@pytest.mark.parametrize('found_by', ['status refresh', 'sky down'])
def test_a_cluster_found_gone_has_its_nodes_keys_revoked(
        fast_emulator, monkeypatch, found_by):
    cluster = f'gone-{found_by.split()[-1]}'
    written = write_cluster_config(monkeypatch, cluster)
    name = written.cluster_name_on_cloud
    place_bid(written)
    key = node_credentials(written)['api_key']
    # SkyPilot's record of the cluster, and our provisioner for `mithril`,
    # as on the API server.
    monkeypatch.setitem(sky_provision._registered_provisioners, 'mithril',
                        sky_provision.Provisioner(module=ours))
    handle = cloud_vm_ray_backend.CloudVmRayResourceHandle(
        cluster_name=cluster, cluster_name_on_cloud=name,
        cluster_yaml=written.yaml_path, launched_nodes=1,
        launched_resources=sky.Resources(cloud=cloud.Mithril(),
                                         instance_type=INSTANCE_TYPE,
                                         region=REGION))
    global_user_state.add_or_update_cluster(
        cluster, handle, requested_resources=None, ready=True,
        is_launch=True)
    # The node's autodown: the bid cancelled with the node's key, the node
    # taken before it revokes that key.
    [bid] = [b['fid'] for b in fast_emulator.control('GET', 'state')['bids']
             if b['name'] == name]
    answer = requests.delete(f'{fast_emulator.url}/v2/spot/bids/{bid}',
                             timeout=10,
                             headers={'Authorization': f'Bearer {key}'})
    assert answer.status_code < 300, answer.text
    assert works(fast_emulator, key)
    if found_by == 'status refresh':
        backend_utils.refresh_cluster_status_handle(
            cluster, force_refresh_statuses=set(status_lib.ClusterStatus))
    else:
        cloud_vm_ray_backend.CloudVmRayBackend().teardown(handle,
                                                          terminate=True)
    assert global_user_state.get_cluster_from_name(cluster) is None
    assert not works(fast_emulator, key)
    assert live_keys_of(fast_emulator) == []
    assert not node_keys.cluster_dir(name).exists()


def test_a_key_minted_after_the_bid_ended_is_a_launch_under_way_and_kept(
        fast_emulator, monkeypatch):
    written = write_cluster_config(monkeypatch, 'again')
    name = written.cluster_name_on_cloud
    place_bid(written)
    old = node_credentials(written)['api_key']
    conn = connection.connect()
    cluster_bid.cancel_all(conn, name)
    fast_emulator.control('POST', 'advance', seconds=DAY)
    new = node_credentials(write_cluster_config(monkeypatch, 'again'))
    provisioner.cleanup_cluster_resources(name, written.provider)
    assert not works(fast_emulator, old)
    assert works(fast_emulator, new['api_key'])
    assert key_in(node_keys.credentials_path(name)) == new['api_key']
    # With a bid of the name live, nothing is revoked.
    place_bid(written)
    provisioner.cleanup_cluster_resources(name, written.provider)
    assert works(fast_emulator, new['api_key'])


# A cluster that stays up: its key is renewed at a status refresh.

def refresh(cluster: str, written: WrittenConfig) -> None:
    """SkyPilot's status refresh of `cluster` (its written config), as far
    as the provisioner sees it (`sky status -r`, the status daemon)."""
    statuses = provisioner.query_instances(
        cluster, written.cluster_name_on_cloud, written.provider)
    assert [s for s, _ in statuses.values()] == [status_lib.ClusterStatus.UP]


def requests_made(server: EmulatorServer) -> int:
    return server.control('GET', 'stats')['total']


@pytest.fixture(name='node_file')
def fixture_node_file(tmp_path) -> Path:
    """The credentials file on the cluster's one node: what a renewal
    delivers lands here (through `skypilot`'s runners)."""
    node_file = tmp_path / 'node' / 'config.yaml'
    node_file.parent.mkdir()
    return node_file


Address = Tuple[Optional[str], int]


class NodeRunner:
    """SkyPilot's command runner for a node at `node` (address, port), as
    far as a renewal uses it: its copies land in `node_file`, and are
    recorded in `copies` with the address they went to."""

    def __init__(self, node: Address, node_file: Path,
                 copies: List[Address]) -> None:
        self.node, self.node_file, self.copies = node, node_file, copies

    def rsync(self, source: str, target: str, *, up: bool,
              stream_logs: bool = True) -> None:
        assert (target, up, stream_logs) == (node_keys.NODE_PATH, True, False)
        self.copies.append(self.node)
        shutil.copy(source, self.node_file)


class SkyPilotRecord:
    """SkyPilot's record of the test's clusters, as a status refresh reads
    it (`global_user_state.get_handle_from_cluster_name`): each cluster's
    node addresses as its launch cached them, and runners that copy into
    the one node's credentials file `node_file`."""

    def __init__(self, node_file: Path) -> None:
        self.node_file = node_file
        self.addresses: Dict[str, List[Address]] = {}
        self.copies: List[Address] = []

    def launch(self, cluster: str, written: WrittenConfig) -> None:
        """`sky launch` of `cluster`: its bid placed, its addresses cached."""
        place_bid(written)
        self.cache(cluster, written)

    def cache(self, cluster: str, written: WrittenConfig) -> None:
        """Caches the addresses of `cluster`'s nodes as they are now, as a
        launch does."""
        conn = connection.connect()
        bid = cluster_bid.live_bid(conn, written.cluster_name_on_cloud)
        assert bid is not None
        self.addresses[cluster] = [
            (i.ssh_destination, cluster_bid.ssh_port(i))
            for i in cluster_bid.current_instances(conn, bid)]

    def handle(self, cluster: str) -> Optional[Any]:
        if cluster not in self.addresses:
            return None
        runners = [NodeRunner(node, self.node_file, self.copies)
                   for node in self.addresses[cluster]]
        return types.SimpleNamespace(launched_nodes=len(runners),
                                     get_command_runners=lambda: runners)


@pytest.fixture(name='skypilot')
def fixture_skypilot(monkeypatch, node_file) -> SkyPilotRecord:
    record = SkyPilotRecord(node_file)
    monkeypatch.setattr(global_user_state, 'get_handle_from_cluster_name',
                        record.handle)
    return record


def test_a_refresh_near_the_expiry_puts_a_new_key_on_the_nodes_then_revokes_the_old(
        fast_emulator, monkeypatch, node_file, skypilot):
    written = write_cluster_config(monkeypatch, 'longrun')
    name = written.cluster_name_on_cloud
    skypilot.launch('longrun', written)
    first = node_credentials(written)['api_key']
    shutil.copy(staged_node_file(written), node_file)
    # Far from the expiry a refresh costs the project snapshot's requests,
    # no more.
    before = requests_made(fast_emulator)
    refresh('longrun', written)
    assert requests_made(fast_emulator) - before == snapshot_requests()
    assert key_in(node_file) == first

    delivered: List[bool] = []
    push = node_key_renewal.push_to_nodes

    def push_while_the_old_key_works(cluster_name: str, path: Path) -> None:
        delivered.append(works(fast_emulator, first))
        push(cluster_name, path)

    monkeypatch.setattr(node_key_renewal, 'push_to_nodes',
                        push_while_the_old_key_works)
    fast_emulator.control('POST', 'advance', seconds=29 * DAY)
    refresh('longrun', written)
    assert delivered == [True]
    renewed = key_in(node_file)
    assert renewed != first and works(fast_emulator, renewed)
    assert not works(fast_emulator, first)
    assert key_in(node_keys.credentials_path(name)) == renewed
    assert node_keys.credentials_path(name).stat().st_mode & 0o777 == 0o600
    [live] = live_keys_of(fast_emulator)
    assert live['name'] == node_keys.key_name(PROJECT_FID, name)
    lifetime = datetime.datetime.fromisoformat(live['expires_at']) - (
        datetime.datetime.fromisoformat(live['created_at']))
    assert abs(lifetime - node_keys.LIFETIME) < datetime.timedelta(hours=1)
    # Renewed, the key is far from its expiry again.
    refresh('longrun', written)
    assert delivered == [True] and len(keys_of(fast_emulator)) == 2
    # A relaunch within a day keeps the renewed key.
    assert node_credentials(write_cluster_config(
        monkeypatch, 'longrun'))['api_key'] == renewed


def test_a_renewal_that_cannot_reach_the_nodes_revokes_nothing_and_is_tried_again(
        fast_emulator, monkeypatch, node_file, skypilot, caplog):
    written = write_cluster_config(monkeypatch, 'unreachable')
    name = written.cluster_name_on_cloud
    skypilot.launch('unreachable', written)
    first = node_credentials(written)['api_key']
    push = node_key_renewal.push_to_nodes

    def unreachable(cluster_name: str, path: Path) -> None:
        raise RuntimeError('ssh: connect to host 10.0.0.2 port 22: timed out')

    monkeypatch.setattr(node_key_renewal, 'push_to_nodes', unreachable)
    fast_emulator.control('POST', 'advance', seconds=29 * DAY)
    caplog.set_level(logging.WARNING)
    refresh('unreachable', written)  # never fails the refresh
    assert 'Could not renew the Mithril API key' in caplog.text
    assert 'timed out' in caplog.text
    assert first not in caplog.text
    # The nodes keep a working key; the one that did not get there is live
    # too (a node may have it), and nothing else is minted until the retry.
    assert works(fast_emulator, first)
    assert key_in(node_keys.credentials_path(name)) == first
    assert len(live_keys_of(fast_emulator)) == 2
    refresh('unreachable', written)
    assert len(keys_of(fast_emulator)) == 2
    monkeypatch.setattr(node_key_renewal, 'push_to_nodes', push)
    fast_emulator.control('POST', 'advance',
                          seconds=node_keys.RENEW_RETRY_AFTER.total_seconds())
    refresh('unreachable', written)
    [live] = live_keys_of(fast_emulator)
    assert key_in(node_file) == key_in(node_keys.credentials_path(name))
    assert works(fast_emulator, key_in(node_file))
    assert not works(fast_emulator, first)


def test_a_renewal_after_mithril_replaced_a_node_waits_for_skypilots_record(
        fast_emulator, monkeypatch, node_file, skypilot, caplog):
    """Mithril replaces the cluster's node (the same bid, a new instance at
    a new address); SkyPilot's record still has the old address, perhaps a
    stranger's host by now. A renewal then sends the key nowhere, mints and
    revokes nothing, and warns; the next refresh after SkyPilot's record
    followed the nodes renews it there."""
    written = write_cluster_config(monkeypatch, 'replaced')
    name = written.cluster_name_on_cloud
    skypilot.launch('replaced', written)
    shutil.copy(staged_node_file(written), node_file)
    first = key_in(node_file)
    conn = connection.connect()
    [old] = cluster_bid.current_instances(conn, cluster_bid.live_bid(conn, name))
    fast_emulator.control('POST', f'instances/{old.fid}/replace')
    fast_emulator.control('POST', 'advance', seconds=29 * DAY)
    [new] = cluster_bid.current_instances(conn, cluster_bid.live_bid(conn, name))
    assert new.ssh_destination not in (None, old.ssh_destination)
    caplog.set_level(logging.WARNING)

    refresh('replaced', written)

    assert skypilot.copies == []
    assert [k['fid'] for k in keys_of(fast_emulator)] == [
        k['fid'] for k in live_keys_of(fast_emulator)]
    assert len(keys_of(fast_emulator)) == 1 and works(fast_emulator, first)
    assert key_in(node_keys.credentials_path(name)) == first
    [warning] = [r.getMessage() for r in caplog.records
                 if r.levelno >= logging.WARNING]
    assert "cluster 'replaced'" in warning and '`sky status -r`' in warning
    assert old.ssh_destination in warning and new.ssh_destination in warning
    assert first not in caplog.text

    # SkyPilot's record follows the nodes (`sky launch -c` caches their
    # addresses): the very next refresh renews the key, on the new node.
    skypilot.cache('replaced', written)
    refresh('replaced', written)
    assert [host for host, _ in skypilot.copies] == [new.ssh_destination]
    renewed = key_in(node_file)
    assert renewed != first and works(fast_emulator, renewed)
    assert not works(fast_emulator, first)


def test_the_node_warns_in_its_log_as_its_key_nears_its_expiry(
        fast_emulator, monkeypatch, tmp_path, caplog):
    written = write_cluster_config(monkeypatch, 'warns')
    checks: List[float] = []

    def one_check_then_stop(seconds: float) -> None:
        checks.append(seconds)
        if len(checks) > 1:
            raise StopIteration

    def warnings_of_one_check() -> List[str]:
        checks.clear()
        caplog.clear()
        with pytest.raises(StopIteration):
            node_keys.watch_expiry()
        assert checks == [node_keys.WARN_CHECK_SECONDS] * 2
        return [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING]

    with monkeypatch.context() as node_side:
        on_the_node(node_side, tmp_path, written)
        node_side.setattr(node_keys.time, 'sleep', one_check_then_stop)
        node = credentials_lib.load_credentials()
        assert warnings_of_one_check() == []
        fast_emulator.control('POST', 'advance', seconds=27 * DAY)
        [warning] = warnings_of_one_check()
        assert warning.startswith("This node's Mithril API key")
        assert 'expires at' in warning and node.api_key not in warning
        with client_lib.MithrilClient.from_credentials(node) as client:
            [own] = client.list_api_keys()
            client.revoke_api_key(own.fid)
        [warning] = warnings_of_one_check()
        assert 'no longer works' in warning and node.api_key not in warning


def test_a_relaunch_that_never_reached_the_nodes_does_not_postpone_their_renewal(
        fast_emulator, monkeypatch, node_file, skypilot):
    """Day 20: `sky launch -c` onto the running cluster mints a new key for
    its file mounts, then fails before they reach the nodes. The nodes still
    hold the day-0 key: it is renewed before its own expiry, not the one of
    the key they never got."""
    written = write_cluster_config(monkeypatch, 'drift')
    skypilot.launch('drift', written)
    shutil.copy(staged_node_file(written), node_file)
    first = key_in(node_file)
    fast_emulator.control('POST', 'advance', seconds=20 * DAY)
    write_cluster_config(monkeypatch, 'drift')  # its file mounts never copied
    assert works(fast_emulator, first)
    for _ in range(11):
        fast_emulator.control('POST', 'advance', seconds=DAY)
        refresh('drift', written)
        assert works(fast_emulator, key_in(node_file))
    assert key_in(node_file) != first and not works(fast_emulator, first)
    # One renewal, which revoked the key the nodes never got too; having
    # reached the nodes, it renews by its own expiry again.
    assert len(keys_of(fast_emulator)) == 3
    assert len(live_keys_of(fast_emulator)) == 1
    assert key_in(node_file) == key_in(
        node_keys.credentials_path(written.cluster_name_on_cloud))
