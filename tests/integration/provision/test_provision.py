"""The provisioner's lifecycle against the running emulator (real HTTP)."""

import threading
import time
from decimal import Decimal
from typing import Any, Dict

import pytest

from sky.provision import common
from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import instance as provisioner

from tests.helpers.provisioning import bids_named, launch, provision_config, query

UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED


def test_one_node_launch_query_info_and_down(fast_emulator):
    record = launch('one', provision_config())
    info = provisioner.get_cluster_info('us-central3-a', 'one',
                                        {'project_id': 'proj_emulator'})
    assert record.created_instance_ids == [record.head_instance_id]
    assert info.head_instance_id == record.head_instance_id
    node = info.instances[record.head_instance_id][0]
    assert node.external_ip and node.internal_ip and node.ssh_port == 22
    assert info.ssh_user == 'ubuntu'
    assert query('one') == {record.head_instance_id: (UP, None)}
    [bid] = bids_named(fast_emulator, 'one')
    assert bid['limit_price'] == '$32.00' and bid['status'] == 'Allocated'

    provisioner.terminate_instances('one', {'project_id': 'proj_emulator'})
    assert query('one') == {}
    assert bids_named(fast_emulator, 'one')[0]['status'] == 'Terminated'
    provisioner.terminate_instances('one', {'project_id': 'proj_emulator'})


def test_four_nodes_all_or_nothing_with_stable_head(fast_emulator):
    record = launch('four', provision_config(count=4, instance_type='a100-80gb.sxm.2x'))
    [bid] = bids_named(fast_emulator, 'four')
    order = [i['fid'] for i in bid['instances']]
    assert record.head_instance_id == order[0]
    assert sorted(record.created_instance_ids) == sorted(order)
    info = provisioner.get_cluster_info('us-central3-a', 'four',
                                        {'project_id': 'proj_emulator'})
    assert list(info.instances) == order
    assert len({n[0].internal_ip for n in info.instances.values()}) == 4
    assert set(query('four').values()) == {(UP, None)}


def test_open_bid_waits_then_allocates_when_price_falls(fast_emulator):
    fast_emulator.control('POST', 'price', instance_type='a100-80gb.sxm.1x',
            region='us-central3-a', price='$50.00')
    config = provision_config(limit='40.00')
    result: Dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(record=launch('waits', config)))
    worker.start()
    time.sleep(2)
    [bid] = bids_named(fast_emulator, 'waits')
    assert bid['status'] == 'Open' and worker.is_alive()
    fast_emulator.control('POST', 'price', instance_type='a100-80gb.sxm.1x',
            region='us-central3-a', price='$20.00')
    worker.join(30)
    assert 'record' in result
    [bid] = bids_named(fast_emulator, 'waits')
    assert bid['status'] == 'Allocated' and bid['price_paid'] == '$20.00'


def test_timeout_cancels_the_bid_and_raises_a_failover_error(fast_emulator):
    fast_emulator.control('POST', 'price', instance_type='a100-80gb.sxm.1x',
            region='us-central3-a', price='$50.00')
    with pytest.raises(cluster_bid.AllocationTimeoutError) as info:
        launch('late', provision_config(limit='10.00', timeout='3'))
    message = str(info.value)
    assert 'spot price $50.00/h is above your limit $10.00/h' in message
    assert 'cancelled' in message and 'limit_price' in message
    assert [b['status'] for b in bids_named(fast_emulator, 'late')] == ['Terminated']


def test_timeout_without_capacity_says_so(fast_emulator):
    fast_emulator.control('POST', 'capacity', instance_type='a100-80gb.sxm.1x',
            region='us-central3-a', capacity=1)
    with pytest.raises(cluster_bid.AllocationTimeoutError, match='no capacity: 1 instance'):
        launch('crowded', provision_config(count=2, timeout='3'))
    assert [b['status'] for b in bids_named(fast_emulator, 'crowded')] == ['Terminated']


def test_stop_pauses_and_start_resumes_the_same_bid(fast_emulator):
    record = launch('pausable', provision_config())
    provisioner.stop_instances('pausable', {'project_id': 'proj_emulator'})
    provisioner.stop_instances('pausable', {'project_id': 'proj_emulator'})
    [bid] = bids_named(fast_emulator, 'pausable')
    assert bid['status'] == 'Paused'
    time.sleep(0.5)
    [(status, reason)] = query('pausable').values()
    assert status == STOPPED
    assert reason == f'bid {bid["fid"]} is paused (STATUS_PAUSED); `sky start` resumes it'

    resumed = launch('pausable', provision_config(resume=True))
    assert resumed.resumed_instance_ids == [record.head_instance_id]
    assert resumed.created_instance_ids == []
    [bid_again] = bids_named(fast_emulator, 'pausable')
    assert bid_again['fid'] == bid['fid'] and bid_again['status'] == 'Allocated'
    assert 'Resumed' in bid_again['events'] or 'Allocated' in bid_again['events']


def test_lost_create_response_never_makes_two_bids(fast_emulator):
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/spot/bids', 'lost_response': 1.0,
        'max_faults': 1}])
    launch('once', provision_config())
    assert len(bids_named(fast_emulator, 'once')) == 1
    assert fast_emulator.control('GET', 'faults')['counts']['lost_response'] == 1


def test_failed_cleanup_stops_failover(fast_emulator):
    fast_emulator.control('POST', 'price', instance_type='a100-80gb.sxm.1x',
            region='us-central3-a', price='$50.00')
    config = provision_config(limit='10.00', timeout='1')
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'DELETE', 'path': '/v2/spot/bids', 'server_error': 1.0}])
    conn_options = {'max_retry_seconds': 1.0}
    original = connection.connect
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(connection, 'connect',
                   lambda **kw: original(**kw, **conn_options))
        with pytest.raises(common.StopFailoverError, match='sky down'):
            launch('stuck', config)
    fast_emulator.control('PUT', 'faults', rules=[])
    provisioner.terminate_instances('stuck', {'project_id': 'proj_emulator'})
    assert bids_named(fast_emulator, 'stuck')[0]['status'] == 'Terminated'


def test_query_raises_on_api_errors_instead_of_forgetting_the_cluster(fast_emulator):
    launch('kept', provision_config())
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'GET', 'path': '/v2/spot/bids', 'server_error': 1.0}])
    original = connection.connect
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(connection, 'connect',
                   lambda **kw: original(**kw, max_retry_seconds=1.0))
        with pytest.raises(Exception, match='50[023]'):
            query('kept')


def test_old_terminated_bid_with_the_same_name_does_not_block(fast_emulator):
    launch('reused', provision_config())
    provisioner.terminate_instances('reused', {'project_id': 'proj_emulator'})
    record = launch('reused', provision_config())
    statuses = [b['status'] for b in bids_named(fast_emulator, 'reused')]
    assert sorted(statuses) == ['Allocated', 'Terminated']
    assert query('reused') == {record.head_instance_id: (UP, None)}


def test_cluster_name_with_limit_rendered_by_the_cloud_reaches_the_bid(fast_emulator):
    launch('priced', provision_config(limit='7.25'))
    [bid] = bids_named(fast_emulator, 'priced')
    assert Decimal(bid['limit_price'].lstrip('$')) == Decimal('7.25')


def test_cluster_info_reports_a_hosts_own_ssh_port_and_user(monkeypatch, tmp_path):
    """The emulator's local SSH hosts listen on a high port as the current user."""
    from sky_mithril.emulator.hosts import HostAddress
    from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts

    class LocalLikeHosts(PlaceholderHosts):
        def create(self, instance_fid, ssh_public_keys):
            super().create(instance_fid, ssh_public_keys)
            return HostAddress('127.0.0.1', '127.0.0.1', ssh_port=2222, ssh_user='alice')

    with EmulatorServer(speed=600, hosts=LocalLikeHosts()) as server:
        monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
        monkeypatch.setenv('MITHRIL_API_KEY', 'k')
        monkeypatch.setenv('MITHRIL_API_URL', server.url)
        monkeypatch.setenv('MITHRIL_PROJECT', 'proj_emulator')
        record = launch('local', provision_config())
        info = provisioner.get_cluster_info('us-central3-a', 'local',
                                            {'project_id': 'proj_emulator'})
    node = info.instances[record.head_instance_id][0]
    assert (node.external_ip, node.ssh_port, info.ssh_user) == ('127.0.0.1', 2222, 'alice')
