"""`sky-mithril instance ...` against the emulator (real HTTP, placeholder hosts)."""

import json
import re
import subprocess
import sys

import pytest

from sky_mithril.commands import sky_clusters
from sky_mithril.provision import cluster_bid

from tests.helpers.commands import REGION, TYPE, add_sky_cluster

CREATE = ('instance', 'create', '-i', TYPE, '-r', REGION, '-m', '8')


def _create(run, name, *extra):
    result = run(*CREATE, '-n', name, *extra)
    assert result.code == 0, result.err
    return result


def test_create_registers_the_local_key_once_and_waits(fast_emulator, home, run, api):
    result = _create(run, 'first', '--wait', '--json')
    detail = json.loads(result.out)
    assert detail['name'] == 'first' and detail['status'] == 'Allocated'
    assert detail['limit_price'] == '$8.00' and detail['instance_type'] == TYPE
    assert [n['status'] for n in detail['nodes']] == ['STATUS_RUNNING']
    assert 'Registering your public key' in result.err
    assert 'All 1 instance(s) are running' in result.err
    keys = api.get('/v2/ssh-keys', project='proj_emulator')
    local = (home / '.ssh' / 'id_ed25519.pub').read_text().split()[:2]
    assert [k['public_key'].split()[:2] for k in keys] == [local]

    second = _create(run, 'second', '-N', '2')
    assert second.out.strip() == 'second'
    assert 'Registering' not in second.err
    assert len(api.get('/v2/ssh-keys', project='proj_emulator')) == 1
    [bid] = api.bids_named('second')
    assert bid['instance_quantity'] == 2
    assert bid['launch_specification']['ssh_keys'] == [keys[0]['fid']]


def test_create_uses_every_project_key_matching_a_local_pair(fast_emulator, home,
                                                             run, api):
    sky_key = home / '.sky' / 'clients' / 'abc' / 'ssh' / 'sky-key'
    sky_key.parent.mkdir(parents=True)
    sky_key.write_text('private')
    sky_key.with_name('sky-key.pub').write_text(
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VmYWtlZmFrZWZha2VmYWtlZmFrZWZha2VmYWtl sky\n')
    ours = [api.add_key(home / '.ssh' / 'id_ed25519.pub', 'mine'),
            api.add_key(sky_key.with_name('sky-key.pub'), 'sky')]
    api.post('/v2/ssh-keys', {'project': 'proj_emulator', 'name': 'other',
                              'public_key': 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG90aGVyb3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcm90aGVy x'})
    _create(run, 'keyed')
    [bid] = api.bids_named('keyed')
    assert sorted(bid['launch_specification']['ssh_keys']) == sorted(ours)


def test_dry_run_checks_and_places_nothing(fast_emulator, home, run, api):
    result = run(*CREATE, '-n', 'dry', '-N', '3', '-d')
    assert result.code == 0, result.err
    assert result.out.count('$8.00/h') == 1 and '$$' not in result.out
    assert 'Dry run' in result.out and '3 × ' in result.out
    as_json = json.loads(run(*CREATE, '-n', 'dry', '--dry-run', '--json').out)
    assert as_json == {'dry_run': True, 'name': 'dry', 'instance_type': TYPE,
                       'instance_type_fid': as_json['instance_type_fid'],
                       'region': REGION, 'limit_price': '$8.00',
                       'instance_quantity': 1, 'kubernetes_cluster': None}
    assert api.bids_named('dry') == []
    assert api.get('/v2/ssh-keys', project='proj_emulator') == []


@pytest.mark.parametrize('args, message', [
    (('-i', 'no-such-type', '-r', REGION, '-m', '8'), "'no-such-type' is not an instance type"),
    (('-i', TYPE, '-r', 'mars-1', '-m', '8'), "No spot auctions in region 'mars-1'"),
    (('-i', TYPE, '-r', REGION, '-m', '8', '-p', 'nope'), "No project 'nope'"),
    (('-i', TYPE, '-r', REGION, '-m', '8', '--k8s', 'nope'), "No Kubernetes cluster 'nope'"),
])
def test_create_refuses_what_cannot_work(fast_emulator, home, run, api, args, message):
    result = run('instance', 'create', *args)
    assert result.code == 1 and message in result.err
    assert api.get('/v2/spot/bids', project='proj_emulator')['data'] == []


def test_bad_price_is_a_usage_error(fast_emulator, home, run):
    for price in ('abc', '0', '8.001'):
        result = run('instance', 'create', '-i', TYPE, '-r', REGION, '-m', price)
        assert result.code == 2 and '-m/--max-price-per-hour' in result.err


def test_project_by_name_and_dollar_price(fast_emulator, home, run, api):
    _create(run, 'named-project', '-p', 'emulator')
    result = run('instance', 'create', '-i', TYPE, '-r', REGION, '-m', '$9.50',
                 '-n', 'dollars')
    assert result.code == 0, result.err
    assert api.bids_named('dollars')[0]['limit_price'] == '$9.50'
    assert api.bids_named('named-project')[0]['project'] == 'proj_emulator'


def test_a_live_name_is_not_reused(fast_emulator, home, run, api):
    _create(run, 'twice')
    result = run(*CREATE, '-n', 'twice')
    assert result.code == 1 and 'already named' in result.err
    assert len(api.bids_named('twice')) == 1


def test_k8s_flag_joins_the_cluster(fast_emulator, home, run, api):
    cluster = api.create_cluster('pool', [])
    result = run(*CREATE, '-n', 'worker', '-N', '2', '--k8s', 'pool', '--wait',
                 '--json')
    assert result.code == 0, result.err
    detail = json.loads(result.out)
    assert detail['kubernetes_cluster'] == cluster['fid']
    joined = api.get(f'/v2/kubernetes/clusters/{cluster["fid"]}')['instances']
    assert sorted(joined) == sorted(n['fid'] for n in detail['nodes'])


def test_list_filters_by_state_in_any_case(fast_emulator, home, run, api):
    fast_emulator.control('POST', 'price', instance_type=TYPE, region=REGION,
                          price='$50.00')
    _create(run, 'waiting')
    _create(run, 'gone')
    assert run('instance', 'delete', 'gone', '-y').code == 0
    _create(run, 'up', '-m', '60', '--wait')

    def names(*args):
        result = run('instance', 'list', '--json', *args)
        assert result.code == 0, result.err
        return [bid['name'] for bid in json.loads(result.out)]

    assert names() == ['up', 'waiting']
    assert names('--all') == ['up', 'gone', 'waiting']
    for word in ('open', 'OPEN', 'Open', 'pending'):
        assert names('--state', word) == ['waiting']
    for word in ('running', 'RUNNING', 'allocated'):
        assert names('-s', word) == ['up']
    for word in ('terminated', 'Cancelled'):
        assert names('-s', word) == ['gone']
    assert names('--state', 'paused') == []
    assert names('--all', '--limit', '2') == ['up', 'gone']
    bad = run('instance', 'list', '--state', 'sleepy')
    assert bad.code == 2 and "unknown state 'sleepy'" in bad.err


def test_list_table_shows_each_price_once(fast_emulator, home, run):
    _create(run, 'tabled', '--wait')
    result = run('instance', 'list')
    assert result.code == 0
    header, row = result.out.splitlines()
    assert header.split()[:4] == ['NAME', 'STATUS', 'TYPE', 'REGION']
    assert row.split()[:6] == ['tabled', 'Allocated', TYPE, REGION, '1/1',
                               '$8.00/h']
    [bid] = json.loads(run('instance', 'list', '--json').out)
    assert set(bid) == {'fid', 'name', 'project', 'status', 'instance_type',
                        'instance_type_fid', 'region', 'limit_price',
                        'instance_quantity', 'instances', 'kubernetes_cluster',
                        'created_at', 'deactivated_at'}


def test_info_by_name_or_fid(fast_emulator, home, run, api):
    _create(run, 'shown', '-N', '2', '--wait')
    fid = api.bids_named('shown')[0]['fid']
    text = run('instance', 'info', 'shown')
    assert text.code == 0, text.err
    assert re.search(r'Limit price:\s+\$8\.00/h$', text.out, re.M)
    assert re.search(r'Spot price now:\s+\$\d+\.\d\d/h$', text.out, re.M)
    assert '$$' not in text.out and text.out.count('$8.00/h') == 1
    assert 'shown-0' in text.out and 'shown-1' in text.out
    detail = json.loads(run('instance', 'info', fid, '--json').out)
    assert detail['fid'] == fid and detail['spot_price'].startswith('$')
    assert [n['name'] for n in detail['nodes']] == ['shown-0', 'shown-1']
    node = detail['nodes'][0]
    assert set(node) == {'fid', 'name', 'status', 'ssh_destination',
                         'ssh_port', 'ssh_user', 'private_ip'}
    assert node['ssh_destination'] and node['private_ip']


def test_without_a_terminal_nothing_waits_for_a_picker(fast_emulator, home, run):
    _create(run, 'someone')
    for argv, argument in ((('instance', 'info'), 'BID'),
                           (('instance', 'delete'), 'BID (or --all, or -n PATTERN)'),
                           (('ssh',), 'BID'),
                           (('k8s', 'info'), 'CLUSTER')):
        result = run(*argv)
        assert result.code == 1
        assert f'{argument} is required when not running in a terminal' in result.err


def test_delete_one_asks_then_cancels(fast_emulator, home, run, api):
    _create(run, 'doomed', '--wait')
    refused = run('instance', 'delete', 'doomed')
    assert refused.code == 1 and 'Pass -y' in refused.err
    assert api.bids_named('doomed')[0]['status'] == 'Allocated'
    result = run('instance', 'delete', 'doomed', '-y')
    assert result.code == 0, result.err
    assert 'Cancelled doomed' in result.out and 'Terminated' in result.out
    assert api.bids_named('doomed')[0]['status'] == 'Terminated'
    again = run('instance', 'delete', 'doomed', '-y')
    assert again.code == 0 and 'already Terminated' in again.out
    missing = run('instance', 'delete', 'never-was', '-y')
    assert missing.code == 1 and "No bid named 'never-was'" in missing.err


def test_pattern_delete_spares_skypilot_clusters(fast_emulator, home, run, api,
                                                 monkeypatch):
    # SkyPilot's state needs a full cluster handle to write; the one small
    # function that reads it stands in for it here.
    monkeypatch.setattr(sky_clusters, 'skypilot_cluster_names',
                        lambda: {'dev-sky'})
    for name in ('dev-a', 'dev-b', 'dev-sky', 'prod'):
        _create(run, name)
    result = run('instance', 'delete', '-n', 'dev-*', '-y')
    assert result.code == 0, result.err
    assert 'Will cancel 2 bid(s):' in result.out
    assert 'Leaving 1 bid(s) that back SkyPilot clusters' in result.out
    terminated = {n: api.bids_named(n)[0]['status'] == 'Terminated'
                  for n in ('dev-a', 'dev-b', 'dev-sky', 'prod')}
    assert terminated == {'dev-a': True, 'dev-b': True, 'dev-sky': False,
                          'prod': False}

    one = run('instance', 'delete', 'dev-sky', '-y')
    assert one.code == 1 and '`sky down dev-sky`' in one.err
    everything = run('instance', 'delete', '--all', '-y')
    assert everything.code == 0 and 'Will cancel 1 bid(s):' in everything.out
    assert api.bids_named('prod')[0]['status'] == 'Terminated'
    assert api.bids_named('dev-sky')[0]['status'] != 'Terminated'
    forced = run('instance', 'delete', '--all', '-y', '--include-sky-clusters')
    assert forced.code == 0, forced.err
    assert api.bids_named('dev-sky')[0]['status'] == 'Terminated'
    assert 'No live bid to cancel' in run('instance', 'delete', '--all',
                                          '-y').out


def test_a_cluster_in_skypilots_own_state_is_spared(fast_emulator, home, run, api):
    env = add_sky_cluster(home, 'dev-sky', 'dev-sky-2ea4')
    for name in ('dev-a', 'dev-sky-2ea4'):
        _create(run, name)
    result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli',
                             'instance', 'delete', '-n', 'dev-*', '-y'],
                            env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert 'dev-sky-2ea4 (' in result.stdout.split('Will cancel')[0]
    assert api.bids_named('dev-a')[0]['status'] == 'Terminated'
    assert api.bids_named('dev-sky-2ea4')[0]['status'] != 'Terminated'


def test_bulk_delete_without_yes_lists_but_cancels_nothing(fast_emulator, home, run,
                                                           api, monkeypatch):
    monkeypatch.setattr(sky_clusters, 'skypilot_cluster_names', set)
    _create(run, 'kept')
    result = run('instance', 'delete', '--all')
    assert result.code == 1 and 'kept' in result.out and 'Pass -y' in result.err
    assert api.bids_named('kept')[0]['status'] != 'Terminated'
    both = run('instance', 'delete', 'kept', '--all')
    assert both.code == 1 and 'one of them' in both.err


def test_skypilot_state_is_read_when_it_exists(home):
    assert sky_clusters.skypilot_cluster_names() == set()  # no ~/.sky
    (home / '.sky').mkdir()
    assert sky_clusters.skypilot_cluster_names() == set()  # SkyPilot, no clusters


def test_list_types_shows_live_spot_prices(fast_emulator, home, run):
    fast_emulator.control('POST', 'price', instance_type=TYPE, region=REGION,
                          price='$3.21')
    result = run('instance', 'list-types', '-r', REGION)
    assert result.code == 0, result.err
    [row] = [line for line in result.out.splitlines() if line.startswith(TYPE + ' ')]
    assert row.split()[3:5] == [REGION, '$3.21/h']
    verbose = run('instance', 'list-types', '-r', REGION, '-v')
    assert 'GPU MEM' in verbose.out and 'NETWORK' in verbose.out
    types = json.loads(run('instance', 'list-types', '--json').out)
    [entry] = [t for t in types if t['name'] == TYPE]
    assert {'region': REGION, 'spot_price': '$3.21', 'capacity': 8} in entry['regions']
    assert all(r['region'] == REGION for t in json.loads(
        run('instance', 'list-types', '-r', REGION, '--json').out)
               for r in t['regions'])


@pytest.mark.parametrize('fault', [
    {'rate_limit': 1.0, 'retry_after_s': 0},
    {'server_error': 1.0, 'server_error_statuses': [503]},
])
def test_rate_limits_and_503s_are_retried(fast_emulator, home, run, fault):
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'GET', 'path': '/v2/spot/bids', 'max_faults': 2, **fault}])
    result = run('instance', 'list', '--all', '--json')
    assert result.code == 0, result.err
    assert json.loads(result.out) == []
    counts = fast_emulator.control('GET', 'faults')['counts']
    assert sum(counts.values()) == 2


def test_a_create_whose_answer_was_lost_places_one_bid_and_names_it(
        fast_emulator, home, run, api, monkeypatch):
    """The POST is answered with a 503 but committed a little later: the
    command waits it out instead of failing (and leaving that bid billing
    unseen) or placing a second one."""
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_POLL_SECONDS', 0.05)
    monkeypatch.setattr(cluster_bid, 'LATE_COMMIT_WINDOW_SECONDS', 20.0)
    fast_emulator.control('PUT', 'faults', rules=[{
        'method': 'POST', 'path': '/v2/spot/bids', 'late_commit': 1.0,
        'late_commit_s': 600, 'late_commit_answer': 'server_error',
        'server_error_statuses': [503], 'max_faults': 1}])
    result = _create(run, 'late')
    assert result.code == 0, result.err
    assert result.out.strip() == 'late'
    assert len([b for b in api.bids_named('late')
                if b['status'] != 'Terminated']) == 1
    assert fast_emulator.control('GET', 'stats')['by_route'][
        'POST /v2/spot/bids'] == 1


def test_create_stays_within_the_users_spend_budget(fast_emulator, home, run,
                                                    api):
    from sky import skypilot_config  # pylint: disable=import-outside-toplevel
    from sky.utils import config_utils  # pylint: disable=import-outside-toplevel
    user_wide = config_utils.Config(
        {'plugins': {'mithril': {'max_hourly_spend': 12}}})
    with skypilot_config.replace_skypilot_config_in_process(user_wide):
        first = _create(run, 'first')
        over = run(*CREATE, '-n', 'second')
        dry = run(*CREATE, '-n', 'second', '--dry-run')
    assert ('worst case now $0.00/h of your $12.00/h (max_hourly_spend in '
            "plugins.mithril in ~/.sky/config.yaml); $8.00/h with the new bid "
            "'first' (1× $8.00/h)") in first.err
    for refused in (over, dry):
        assert refused.code == 1
        assert 'from $8.00/h to $16.00/h, $4.00/h above $12.00/h' in refused.err
        assert 'bid first (' in refused.err
    assert api.bids_named('second') == []
