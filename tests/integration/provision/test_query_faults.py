"""query_instances under API faults: it raises rather than answer {} for a
live cluster (SkyPilot would forget it), reads a cancelled bid as gone, and
reads the right statuses through intermittent 503s and 429s."""

from typing import Any, Dict

import pytest
from sky.provision import common
from sky.utils import status_lib

from sky_mithril.account import connection
from sky_mithril.account.ssh_keys import ssh_key_fid_for
from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.provision import instance as provisioner

UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED
REGION = 'us-central3-a'
PROVIDER_CONFIG = {'project_id': 'proj_emulator'}
PUBLIC_KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIQueryFaultsTestKey0000000'
              '0000000000000 me@test')






def set_faults(server: EmulatorServer, **rule: Any) -> None:
    server.control('PUT', 'faults', rules=[rule] if rule else [], seed=1)


def launch(name: str, count: int = 1) -> common.ProvisionRecord:
    key_fid = ssh_key_fid_for(connection.connect(), PUBLIC_KEY)
    config = common.ProvisionConfig(
        provider_config={**PROVIDER_CONFIG, 'region': REGION,
                         'limit_price_per_hour': '32.00'},
        authentication_config={'ssh_user': 'ubuntu', 'ssh_key_id': key_fid},
        docker_config={},
        node_config={'InstanceType': 'a100-80gb.sxm.1x'},
        count=count,
        tags={},
        resume_stopped_nodes=True,
        ports_to_open_on_launch=None)
    return provisioner.run_instances(REGION, name, name, config)


def query(name: str) -> Dict[str, Any]:
    return provisioner.query_instances(name, name, PROVIDER_CONFIG)


@pytest.fixture
def short_retry_budget(monkeypatch) -> None:
    """Clients give up after 1 s of retrying, as a slow outage would end."""
    original = connection.connect
    monkeypatch.setattr(connection, 'connect',
                        lambda **kw: original(**kw, max_retry_seconds=1.0))


@pytest.mark.parametrize('path', ['/v2/spot/bids', '/v2/instances'])
@pytest.mark.parametrize('kind', ['server_error', 'reset'])
def test_query_raises_when_the_api_keeps_failing(fast_emulator, short_retry_budget,
                                                 path, kind):
    record = launch('kept')
    set_faults(fast_emulator, method='GET', path=path, **{kind: 1.0})
    with pytest.raises(Exception):
        query('kept')
    assert fast_emulator.control('GET', 'faults')['counts'][kind] >= 2
    set_faults(fast_emulator)
    assert query('kept') == {record.head_instance_id: (UP, None)}


def test_cluster_whose_bid_was_cancelled_reads_as_gone(fast_emulator):
    launch('gone', count=2)
    conn = connection.connect()
    [bid] = conn.client.list_bids(conn.project_id, name='gone')
    conn.client.cancel_bid(bid.fid)
    assert query('gone') == {}
    assert provisioner.query_instances('gone', 'gone', PROVIDER_CONFIG,
                                       non_terminated_only=False) == {}


def test_intermittent_503_and_429_still_read_the_right_statuses(fast_emulator):
    up = launch('busy', count=2)
    stopped = launch('idle')
    provisioner.stop_instances('idle', PROVIDER_CONFIG)
    set_faults(fast_emulator, method='GET', path='/v2', server_error=0.2,
               server_error_statuses=[503], rate_limit=0.1, retry_after_s=0)
    for _ in range(8):
        assert query('busy') == {fid: (UP, None)
                                 for fid in up.created_instance_ids}
        idle = query('idle')
        assert set(idle) == set(stopped.created_instance_ids)
        assert {status for status, _ in idle.values()} == {STOPPED}
    counts = fast_emulator.control('GET', 'faults')['counts']
    assert counts['server_error'] > 0 and counts['rate_limit'] > 0
