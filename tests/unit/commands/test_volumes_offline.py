"""`sky-mithril volumes ...` against a `responses`-mocked API, for what the
emulator does not produce on demand: a bid taking the volume between the
check and the DELETE, a lost create answer, bids that are gone or ended."""

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import responses
from responses import matchers

from sky_mithril.commands import sky_clusters

API_URL = 'https://api.mithril.test'
VOLUMES_URL = f'{API_URL}/v2/volumes'
PROJECT = 'proj_1'


@pytest.fixture
def mocked_api(monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Iterator[responses.RequestsMock]:
    """The plugin pointed at a mocked API that knows project proj_1."""
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path))
    monkeypatch.setenv('MITHRIL_API_KEY', 'mk_test_key')
    monkeypatch.setenv('MITHRIL_API_URL', API_URL)
    monkeypatch.setenv('MITHRIL_PROJECT', PROJECT)
    monkeypatch.setattr(sky_clusters, 'cluster_names_by_bid',
                        lambda: {'dev-2ea4': 'dev'})
    with responses.RequestsMock() as mock:
        mock.get(f'{API_URL}/v2/projects', json=[{
            'fid': PROJECT, 'name': 'default',
            'created_at': '2025-01-01T00:00:00Z'}])
        yield mock


def volume(fid: str, name: str, **overrides: Any) -> Dict[str, Any]:
    return {'fid': fid, 'name': name, 'region': 'us-central3-a',
            'created_at': '2025-06-01T12:00:00Z', 'capacity_gb': 100,
            'project': PROJECT, 'interface': 'File', 'bids': [],
            'reservations': [], 'attachments': {}, **overrides}


def bid(fid: str, name: str, status: str = 'Allocated') -> Dict[str, Any]:
    return {'fid': fid, 'name': name, 'project': PROJECT, 'created_by': 'u',
            'created_at': '2025-06-01T12:00:00Z', 'limit_price': '$8.00',
            'instance_quantity': 1, 'instance_type': 'it_1', 'status': status}


def test_ls_names_clusters_then_bids_then_fids(mocked_api, run):
    mocked_api.get(VOLUMES_URL, json=[
        volume('vol_1', 'data', bids=['bid_sky', 'bid_manual']),
        volume('vol_2', 'blocky', interface='Block', capacity_gb=20,
               bids=['bid_gone', 'bid_ended']),
    ])
    mocked_api.get(f'{API_URL}/v2/spot/bids/bid_sky', json=bid('bid_sky', 'dev-2ea4'))
    mocked_api.get(f'{API_URL}/v2/spot/bids/bid_manual', json=bid('bid_manual', 'manual'))
    mocked_api.get(f'{API_URL}/v2/spot/bids/bid_gone', status=404)
    mocked_api.get(f'{API_URL}/v2/spot/bids/bid_ended',
                   json=bid('bid_ended', 'old', status='Terminated'))

    result = run('volumes', 'ls')

    assert result.code == 0, result.err
    header, first, second = result.out.splitlines()
    assert re.split(r'\s{2,}', header) == ['NAME', 'TYPE', 'REGION',
                                           'SIZE (GB)', 'FID', 'USED BY']
    assert first.split()[:5] == ['blocky', 'mithril-block', 'us-central3-a',
                                 '20', 'vol_2']
    assert first.split()[5:] == ['bid_gone']
    assert second.split()[:2] == ['data', 'mithril-file-share']
    assert second.split()[5:] == ['dev,', 'manual']


def test_ls_json_and_region_filter(mocked_api, run):
    mocked_api.get(VOLUMES_URL,
                   match=[matchers.query_param_matcher({'project': PROJECT,
                                                        'region': 'us-central3-a'})],
                   json=[volume('vol_1', 'data', bids=['bid_sky'],
                                attachments={'inst_1': '/mnt/data'})])
    mocked_api.get(f'{API_URL}/v2/spot/bids/bid_sky', json=bid('bid_sky', 'dev-2ea4'))
    # `-r` is checked against the market's regions first.
    mocked_api.get(f'{API_URL}/v2/spot/availability', json=[{
        'fid': 'auc_1', 'instance_type': 'it_1', 'region': 'us-central3-a',
        'capacity': 1, 'last_instance_price': '$1.00'}])

    result = run('volumes', 'ls', '--region', 'us-central3-a', '--json')

    assert result.code == 0, result.err
    assert json.loads(result.out) == [{
        'fid': 'vol_1', 'name': 'data', 'type': 'mithril-file-share',
        'interface': 'File', 'region': 'us-central3-a', 'size_gb': 100,
        'created_at': '2025-06-01T12:00:00+00:00',
        'used_by': [{'bid_fid': 'bid_sky', 'bid_name': 'dev-2ea4',
                     'cluster': 'dev'}],
        'attachments': {'inst_1': '/mnt/data'}}]


def test_a_bid_taking_the_volume_before_the_delete_is_named(mocked_api, run):
    # Free when read; a bid took it before the DELETE arrived.
    mocked_api.get(VOLUMES_URL, json=[volume('vol_1', 'data')])
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=409, json={
        'detail': 'Volume vol_1 is attached to bid bid_sky; cancel the bid first.'})
    mocked_api.get(VOLUMES_URL, json=[volume('vol_1', 'data', bids=['bid_sky'])])
    mocked_api.get(f'{API_URL}/v2/spot/bids/bid_sky', json=bid('bid_sky', 'dev-2ea4'))

    result = run('volumes', 'delete', 'data', '--yes')

    assert result.code == 1
    assert ('Volume data (vol_1) is attached to bid dev-2ea4 (bid_sky), which '
            'backs SkyPilot cluster dev: run `sky down dev` first, then '
            'delete the volume.') in result.err


def test_a_409_without_a_live_bid_keeps_the_servers_words(mocked_api, run):
    mocked_api.get(VOLUMES_URL, json=[volume('vol_1', 'data')])
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=409,
                      json={'detail': 'Volume vol_1 is attached to reservation res_1.'})
    mocked_api.get(VOLUMES_URL, json=[volume('vol_1', 'data')])

    result = run('volumes', 'delete', 'vol_1', '-y')

    assert result.code == 1
    assert 'Volume vol_1 is attached to reservation res_1.' in result.err


def test_a_volume_deleted_meanwhile_counts_as_deleted(mocked_api, run):
    mocked_api.get(VOLUMES_URL, json=[volume('vol_1', 'data')])
    mocked_api.delete(f'{VOLUMES_URL}/vol_1', status=404)

    result = run('volumes', 'delete', 'data', '-y')

    assert result.code == 0 and 'already gone' in result.out


def test_a_lost_create_answer_is_found_by_name(mocked_api, run):
    mocked_api.get(f'{API_URL}/v2/spot/availability', json=[{
        'fid': 'auc_1', 'instance_type': 'it_1', 'region': 'us-central3-a',
        'capacity': 1, 'last_instance_price': '$1.00'}])
    mocked_api.get(VOLUMES_URL, json=[])
    mocked_api.post(VOLUMES_URL, status=502)
    mocked_api.get(VOLUMES_URL, json=[volume('vol_new', 'data')])

    result = run('volumes', 'create', 'data', '-r', 'us-central3-a',
                 '--size', '100')

    assert result.code == 0, result.err
    assert result.out == 'vol_new\n'
    assert len([c for c in mocked_api.calls if c.request.method == 'POST']) == 1


def test_a_422_on_create_is_told_in_the_servers_words(mocked_api, run):
    mocked_api.get(f'{API_URL}/v2/spot/availability', json=[{
        'fid': 'auc_1', 'instance_type': 'it_1', 'region': 'us-central3-a',
        'capacity': 1, 'last_instance_price': '$1.00'}])
    mocked_api.get(VOLUMES_URL, json=[])
    mocked_api.post(VOLUMES_URL, status=422, json={'detail': [{
        'loc': ['body', 'size_gb'],
        'msg': 'Storage quota exceeded: 20000 GB allowed, 19950 GB used',
        'type': 'value_error'}]})

    result = run('volumes', 'create', 'data', '-r', 'us-central3-a',
                 '--size', '100')

    assert result.code == 1
    assert ("Mithril refused to create volume 'data': body.size_gb: Storage "
            'quota exceeded: 20000 GB allowed, 19950 GB used.') in result.err
