"""SkyPilot's built-in Mithril provisioner (a client nobody here wrote) driven
through a whole cluster life cycle against the emulator, over real HTTP.

If the emulator deviated from Mithril's wire format, this unmodified client
would fail; it only passes because the shapes and semantics it relies on match.
The shared `emulator` fixture runs at 600x (a clearing every 0.2 s), so the
built-in's 5 s polls find the bid allocated and its instance reachable on
their first retry.
"""

import time
from typing import Any, Dict, List

import requests

from sky.provision.mithril import instance as builtin
from sky.provision.mithril import utils as builtin_utils
from sky.utils import status_lib

from sky_mithril.devtools.provisioning import provision_config
from sky_mithril.emulator.server import EmulatorServer

UP = status_lib.ClusterStatus.UP
STOPPED = status_lib.ClusterStatus.STOPPED
REGION = 'us-central3-a'
INSTANCE_TYPE = 'a100-80gb.sxm.1x'
CLUSTER = 'builtin-c1'
PUBLIC_KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbuiltinprovisionertestkey'
              '000000000000000 me@test')
PROVIDER_CONFIG = {'profile': '', 'project_id': 'proj_emulator',
                   'region': REGION}


def bids_named(server: EmulatorServer, name: str) -> List[Dict[str, Any]]:
    state = requests.get(f'{server.url}/_emulator/state', timeout=10).json()
    return [b for b in state['bids'] if b['name'] == name]


def query() -> Dict[str, Any]:
    return builtin.query_instances(CLUSTER, CLUSTER, PROVIDER_CONFIG)


def wait_for_query(expected: Dict[str, Any], timeout_s: float = 10.0) -> None:
    """Instance transitions (e.g. STOPPING -> PAUSED) take emulated seconds."""
    deadline = time.monotonic() + timeout_s
    while query() != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert query() == expected


def test_builtin_provisioner_full_lifecycle(fast_emulator):
    key_id = builtin_utils.get_or_add_ssh_key(PUBLIC_KEY)
    assert builtin_utils.get_or_add_ssh_key(PUBLIC_KEY) == key_id

    started = time.monotonic()
    # What the built-in cloud renders: the key fid from its auth setup.
    record = builtin.run_instances(
        REGION, CLUSTER, CLUSTER,
        provision_config(PROVIDER_CONFIG, key_id, INSTANCE_TYPE))
    assert time.monotonic() - started < 30
    [bid] = bids_named(fast_emulator, CLUSTER)
    [node] = bid['instances']
    assert bid['status'] == 'Allocated' and bid['limit_price'] == '$32.00'
    assert record.provider_name == 'mithril'
    assert record.head_instance_id == node['fid']
    assert record.created_instance_ids == [node['fid']]

    assert query() == {node['fid']: (UP, None)}

    info = builtin.get_cluster_info(REGION, CLUSTER, PROVIDER_CONFIG)
    assert info.head_instance_id == node['fid']
    [head] = info.instances[node['fid']]
    assert head.external_ip == node['ssh_destination']
    assert head.internal_ip == node['private_ip']
    assert info.ssh_user == 'ubuntu'

    builtin.stop_instances(CLUSTER, PROVIDER_CONFIG)
    assert bids_named(fast_emulator, CLUSTER)[0]['status'] == 'Paused'
    wait_for_query({node['fid']: (STOPPED, None)})

    builtin.terminate_instances(CLUSTER, PROVIDER_CONFIG)
    [bid] = bids_named(fast_emulator, CLUSTER)
    assert bid['status'] == 'Terminated'
    assert [i['status'] for i in bid['instances']] == ['STATUS_TERMINATED']
    assert query() == {}
