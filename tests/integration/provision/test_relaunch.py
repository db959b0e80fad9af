"""Relaunching an existing cluster applies the launch's current settings:
the limit price reaches the live bid, a shape the bid cannot take is refused,
and a won bid whose nodes never boot is cancelled with a clear reason."""

import threading
from typing import Any, Dict

import pytest

from sky_mithril.provision import instance as provisioner

from tests.helpers.provisioning import bids_named, launch, provision_config

PROVIDER = {'project_id': 'proj_emulator'}


def limit_changes(bid: Dict[str, Any]) -> int:
    return sum(1 for event in bid['events'] if event == 'Limit Price Changed')


def test_relaunch_of_a_running_cluster_raises_its_limit(fast_emulator):
    launch('raised', provision_config(limit='10.00'))
    fast_emulator.control('DELETE', 'stats')
    record = launch('raised', provision_config(limit='20.00'))
    [bid] = bids_named(fast_emulator, 'raised')
    assert bid['status'] == 'Allocated' and bid['limit_price'] == '$20.00'
    assert limit_changes(bid) == 1
    assert record.created_instance_ids == [] == record.resumed_instance_ids
    patches = fast_emulator.control('GET', 'stats')['by_route'].get(
        'PATCH /v2/spot/bids/{bid_fid}')
    assert patches == 1


def test_start_resumes_at_the_new_limit_in_one_request(fast_emulator, caplog):
    launch('restarted', provision_config(limit='10.00'))
    provisioner.stop_instances('restarted', PROVIDER)
    fast_emulator.control('DELETE', 'stats')
    caplog.set_level('INFO')
    record = launch('restarted', provision_config(limit='25.00', resume=True))
    [bid] = bids_named(fast_emulator, 'restarted')
    assert bid['limit_price'] == '$25.00' and bid['status'] == 'Allocated'
    assert record.resumed_instance_ids
    by_route = fast_emulator.control('GET', 'stats')['by_route']
    assert by_route.get('PATCH /v2/spot/bids/{bid_fid}') == 1
    assert 'from $10.00/h to $25.00/h' in caplog.text


def test_same_limit_sends_no_update(fast_emulator):
    launch('same', provision_config(limit='10.00'))
    fast_emulator.control('DELETE', 'stats')
    launch('same', provision_config(limit='10.00'))
    assert 'PATCH /v2/spot/bids/{bid_fid}' not in fast_emulator.control(
        'GET', 'stats')['by_route']


@pytest.mark.parametrize('change,needle', [
    ({'instance_type': 'a100-80gb.sxm.2x'}, 'cannot change its instance type'),
    ({'count': 2}, 'cannot be resized'),
])
def test_a_shape_the_bid_cannot_take_is_refused_naming_sky_down(
        fast_emulator, change, needle):
    launch('shaped', provision_config())
    with pytest.raises(RuntimeError, match=needle) as info:
        launch('shaped', provision_config(**change))
    assert '`sky down`' in str(info.value)
    [bid] = bids_named(fast_emulator, 'shaped')
    assert bid['status'] == 'Allocated'


def test_nodes_that_never_boot_are_cancelled_after_boot_timeout(
        manual_clock_emulator):
    server = manual_clock_emulator
    config = provision_config(boot_timeout='2')
    outcome: Dict[str, BaseException] = {}

    def run() -> None:
        try:
            launch('stuck-boot', config)
        except BaseException as e:  # pylint: disable=broad-except
            outcome['error'] = e

    worker = threading.Thread(target=run)
    worker.start()
    while not bids_named(server, 'stuck-boot'):
        worker.join(0.1)
    # The auction is won; the clock then stops, so the node stays booting.
    server.control('POST', 'advance', seconds=120)
    worker.join(60)
    assert not worker.is_alive()
    message = str(outcome['error'])
    assert 'won the auction' in message and 'STATUS_NEW' in message
    assert 'boot_timeout' in message and 'cancelled' in message
    assert [b['status'] for b in bids_named(server, 'stuck-boot')] == ['Terminated']
