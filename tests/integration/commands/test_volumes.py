"""`sky-mithril volumes ...` against the emulator (real HTTP): create, list
with the clusters using each volume, refuse to delete one a live bid uses,
delete it once the bid is cancelled, rename."""

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Callable, List

import pytest

from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.commands import sky_clusters
from sky_mithril.commands import volumes as volumes_command

from tests.helpers.commands import REGION, TYPE, Api, Result, add_sky_cluster


def _create(run: Callable[..., Result], name: str, *extra: str) -> str:
    result = run('volumes', 'create', name, '--region', REGION, *extra)
    assert result.code == 0, result.err
    return result.out.strip()


def _rows(run: Callable[..., Result]) -> List[List[str]]:
    """`volumes ls` as cells, header first."""
    result = run('volumes', 'ls')
    assert result.code == 0, result.err
    return [re.split(r'\s{2,}', line) for line in result.out.splitlines()]


@pytest.fixture
def key(home: Path, api: Api) -> str:
    """The fid of the local public key, registered with the project."""
    return api.add_key(home / '.ssh' / 'id_ed25519.pub')


def _place_bid(key: str, name: str, volume_fid: str) -> str:
    """A bid in REGION using the volume, placed through the plugin's client."""
    conn = connection.connect()
    try:
        [type_fid] = {a.instance_type
                      for a in conn.client.list_spot_availability()
                      if a.region == REGION and a.instance_type in {
                          t.fid for t in conn.client.list_instance_types()
                          if t.name == TYPE}}
        return conn.client.create_bid(models.CreateBidRequest(
            project=conn.project_id, region=REGION, instance_type=type_fid,
            limit_price=Decimal('8'), instance_quantity=1, name=name,
            launch_specification=models.LaunchSpecification(
                ssh_keys=[key], volumes=[volume_fid]))).fid
    finally:
        conn.client.close()


def test_create_prints_the_fid_and_ls_shows_both_types(fast_emulator, home, run,
                                                       api):
    share = _create(run, 'data', '--size', '100')
    block = _create(run, 'scratch', '--size', '20', '--type', 'mithril-block')
    by_fid = {v['fid']: v for v in api.get('/v2/volumes',
                                           project='proj_emulator')}
    assert by_fid[share]['interface'] == 'File'
    assert by_fid[block]['interface'] == 'Block'
    assert by_fid[block]['capacity_gb'] == 20

    assert _rows(run) == [
        ['NAME', 'TYPE', 'REGION', 'SIZE (GB)', 'FID', 'USED BY'],
        ['data', 'mithril-file-share', REGION, '100', share, '-'],
        ['scratch', 'mithril-block', REGION, '20', block, '-'],
    ]
    listed = json.loads(run('volumes', 'ls', '-r', REGION, '--json').out)
    assert [(v['name'], v['type'], v['size_gb'], v['used_by'])
            for v in listed] == [('data', 'mithril-file-share', 100, []),
                                 ('scratch', 'mithril-block', 20, [])]
    elsewhere = run('volumes', 'ls', '--region', 'us-central5-a')
    assert elsewhere.code == 0 and 'No volumes in us-central5-a' in elsewhere.out


@pytest.mark.parametrize('args, code, message', [
    (('--region', 'mars-1', '--size', '10'), 1,
     "No region 'mars-1' on Mithril; pass one of"),
    (('--region', REGION, '--size', 'ten'), 2, "'ten' is not a size in GB"),
    (('--region', REGION, '--size', '0'), 2, "'0' is not a size in GB"),
    (('--region', REGION, '--size', '-5'), 2, "'-5' is not a size in GB"),
    (('--region', REGION, '--size', '1.5'), 2, "'1.5' is not a size in GB"),
    (('--region', REGION, '--size', '16385'), 1,
     "Mithril refused to create volume 'v': body.size_gb"),
    (('--region', REGION, '--size', '10', '--type', 'nfs'), 2,
     "invalid choice: 'nfs'"),
])
def test_create_refuses_bad_input_naming_the_fix(fast_emulator, home, run, api,
                                                 args, code, message):
    result = run('volumes', 'create', 'v', *args)
    assert result.code == code and message in result.err, result.err
    assert api.get('/v2/volumes', project='proj_emulator') == []


def test_unknown_region_lists_the_regions_there_are(fast_emulator, home, run, api):
    result = run('volumes', 'create', 'v', '--region', 'mars-1', '--size', '1')
    assert result.code == 1
    regions = {a['region'] for a in api.get('/v2/spot/availability')}
    assert REGION in regions
    listed = result.err.split('pass one of ')[1].split(' with --region')[0]
    assert set(listed.split(', ')) == regions


def test_names_and_the_storage_quota_are_checked(fast_emulator, home, run, api):
    _create(run, 'big', '--size', '16384')
    again = run('volumes', 'create', 'big', '--region', REGION, '--size', '1')
    assert again.code == 1
    assert "A volume is already named 'big'" in again.err
    over = run('volumes', 'create', 'more', '--region', REGION, '--size', '4000')
    assert over.code == 1
    assert "Mithril refused to create volume 'more'" in over.err
    assert [v['name'] for v in api.get('/v2/volumes',
                                       project='proj_emulator')] == ['big']


def test_a_volume_in_use_is_listed_by_cluster_and_not_deleted(
        fast_emulator, home, run, api, key, monkeypatch):
    monkeypatch.setattr(sky_clusters, 'cluster_names_by_bid',
                        lambda: {'dev-2ea4': 'dev'})
    fid = _create(run, 'data', '--size', '50')
    bid_fid = _place_bid(key, 'dev-2ea4', fid)
    manual_fid = _place_bid(key, 'manual', fid)

    assert _rows(run)[1] == ['data', 'mithril-file-share', REGION, '50', fid,
                             'dev, manual']
    [listed] = json.loads(run('volumes', 'ls', '--json').out)
    assert sorted(listed['used_by'], key=lambda u: u['bid_name']) == [
        {'bid_fid': bid_fid, 'bid_name': 'dev-2ea4', 'cluster': 'dev'},
        {'bid_fid': manual_fid, 'bid_name': 'manual', 'cluster': None}]

    refused = run('volumes', 'delete', 'data', '--yes')
    assert refused.code == 1
    assert (f'Volume data ({fid}) is attached to bid dev-2ea4 ({bid_fid}), '
            'which backs SkyPilot cluster dev: run `sky down dev` first'
            in refused.err)
    assert (f'bid manual ({manual_fid}): cancel it first with '
            '`sky-mithril instance delete manual`' in refused.err)
    assert [v['fid'] for v in api.get('/v2/volumes',
                                      project='proj_emulator')] == [fid]

    # Cancelled, the bid lets go of the volume.
    assert run('instance', 'delete', 'manual', '-y').code == 0
    assert run('instance', 'delete', 'dev-2ea4', '-y').code == 0
    assert _rows(run)[1][-1] == '-'
    asked = run('volumes', 'delete', 'data')
    assert asked.code == 1 and 'Pass -y' in asked.err
    deleted = run('volumes', 'delete', fid, '-y')
    assert deleted.code == 0, deleted.err
    assert f'Deleted volume data ({fid})' in deleted.out
    assert api.get('/v2/volumes', project='proj_emulator') == []


def test_the_servers_409_gets_the_same_message(fast_emulator, home, run, api,
                                               key, monkeypatch):
    # The bid is placed after the command looked (it saw no user): the
    # emulator's 409 is what stops the delete.
    monkeypatch.setattr(sky_clusters, 'cluster_names_by_bid',
                        lambda: {'dev-2ea4': 'dev'})
    fid = _create(run, 'data', '--size', '50')
    bid_fid = _place_bid(key, 'dev-2ea4', fid)
    real_users = volumes_command.volume_users
    looks = []

    def unaware_at_first(conn, volumes):
        looks.append(len(looks))
        if len(looks) == 1:
            return {v.fid: [] for v in volumes}
        return real_users(conn, volumes)

    monkeypatch.setattr(volumes_command, 'volume_users', unaware_at_first)
    result = run('volumes', 'delete', 'data', '-y')
    assert result.code == 1
    assert (f'Volume data ({fid}) is attached to bid dev-2ea4 ({bid_fid}), '
            'which backs SkyPilot cluster dev: run `sky down dev` first'
            in result.err)
    assert len(looks) == 2


def test_unknown_names_list_the_volumes_there_are(fast_emulator, home, run):
    for argv in (('delete', 'nope', '-y'), ('rename', 'nope', 'x')):
        result = run('volumes', *argv)
        assert result.code == 1
        assert ("No volume 'nope' in project proj_emulator; it has no volumes."
                in result.err)
    _create(run, 'beta', '--size', '1')
    _create(run, 'alpha', '--size', '1')
    result = run('volumes', 'delete', 'nope', '-y')
    assert result.code == 1 and 'its volumes: alpha, beta.' in result.err


def test_rename(fast_emulator, home, run, api):
    fid = _create(run, 'data', '--size', '10')
    _create(run, 'other', '--size', '10')
    result = run('volumes', 'rename', 'data', 'archive')
    assert result.code == 0, result.err
    assert f'Renamed volume data ({fid}) to archive.' in result.out
    assert {v['name'] for v in api.get('/v2/volumes',
                                       project='proj_emulator')} == {
                                           'archive', 'other'}
    taken = run('volumes', 'rename', fid, 'other')
    assert taken.code == 1 and "already named 'other'" in taken.err


def test_used_by_reads_skypilots_own_state(fast_emulator, home, run, key):
    env = add_sky_cluster(home, 'dev', 'dev-2ea4')
    fid = _create(run, 'data', '--size', '10')
    _place_bid(key, 'dev-2ea4', fid)
    result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli',
                             'volumes', 'delete', 'data', '-y'],
                            env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1
    assert 'backs SkyPilot cluster dev: run `sky down dev` first' in result.stderr
