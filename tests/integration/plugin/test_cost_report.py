"""SkyPilot's own `cost_report`, with the plugin installed, prices a Mithril
cluster at what its bid was charged on the emulator, not at the catalog
price times SkyPilot's duration. SkyPilot keeps one database engine per
process, so the cluster's record is written, and the report run, in a
process with a HOME of its own."""

import json
import os
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from sky_mithril import money
from sky_mithril.account import connection
from sky_mithril.provision import cluster_bid

from tests.helpers import REPO
from tests.helpers.provisioning import bids_named, launch, provision_config

# Writes cluster NAME (one A100, launched now) into SkyPilot's state and
# prints its name on the cloud; with `report`, prints SkyPilot's cost report
# of it instead.
_CHILD = textwrap.dedent('''
    import json, sys
    from sky_mithril.plugin import takeover
    takeover.install()
    import sky
    from sky import core, global_user_state
    from sky.backends import cloud_vm_ray_backend
    from sky.utils import common_utils
    name, step = sys.argv[1:]
    if step == 'record':
        on_cloud = common_utils.make_cluster_name_on_cloud(
            name, sky.Mithril.max_cluster_name_length())
        handle = cloud_vm_ray_backend.CloudVmRayResourceHandle(
            cluster_name=name, cluster_name_on_cloud=on_cloud,
            cluster_yaml=None, launched_nodes=1,
            launched_resources=sky.Resources(
                cloud=sky.Mithril(), instance_type='a100-80gb.sxm.1x',
                region='us-central3-a'))
        global_user_state.add_or_update_cluster(
            name, handle, requested_resources=None, ready=True,
            is_launch=True)
        print(on_cloud)
    else:
        report, = [r for r in core.cost_report() if r['name'] == name]
        print(json.dumps({'total_cost': report['total_cost'],
                          'duration': report['duration']}))
''')


def _child(home: Path, name: str, step: str) -> str:
    result = subprocess.run([sys.executable, '-c', _CHILD, name, step],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=240, env={**os.environ,
                                              'HOME': str(home)})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_mithril_cluster_costs_what_its_bid_was_charged(fast_emulator,
                                                          tmp_path):
    home = tmp_path / 'home'
    home.mkdir()
    on_cloud = _child(home, 'train', 'record')
    # The cluster's bid: placed after SkyPilot recorded the launch, billed
    # for a while at the emulator's clearing price, then cancelled.
    launch(on_cloud, provision_config(limit='20.00'))
    time.sleep(2)  # about 20 emulated minutes at 600x
    conn = connection.connect()
    cluster_bid.cancel_all(conn, on_cloud)
    bid, = bids_named(fast_emulator, on_cloud)
    charged = Decimal(0)
    for history in conn.client.get_instance_pricing_history(
            conn.project_id, bid_fid=bid['fid']):
        for charge in history.events:
            seconds = (charge.end_time - charge.start_time).total_seconds()
            charged += (money.cents_to_dollars(charge.price_cents) *
                        Decimal(repr(seconds)) / 3600)
    assert charged > 0

    report = json.loads(_child(home, 'train', 'report'))

    # SkyPilot's own estimate: ~$1.10/h of catalog price for the seconds
    # it saw the cluster up, cents at most.
    assert report['total_cost'] == pytest.approx(float(charged))
