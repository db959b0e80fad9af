"""`sky-mithril reservations ...` against the emulator (real HTTP, a clock
the test moves): a quote buys nothing, a purchase shows the price and needs
a yes, the money charged and earned back is what `info` says, and a bad
length, region or name is refused naming what would work. A reservation
boots with SkyPilot's key and the user's registered ones, and may join a
Kubernetes cluster of its region."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.commands import REGION, TYPE

WINDOW = (TYPE, '-r', REGION, '--hours', '24', '-N', '2')
USER_HASH = 'ab12cd34'


@pytest.fixture
def sky_key(home, monkeypatch) -> Path:
    """SkyPilot's key pair for user USER_HASH under `home` (where
    `get_or_generate_keys` finds it); its public half's path."""
    monkeypatch.setenv('SKYPILOT_USER_ID', USER_HASH)
    private = home / '.sky' / 'clients' / USER_HASH / 'ssh' / 'sky-key'
    private.parent.mkdir(parents=True)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C',
                    'sky@local', '-f', str(private)], check=True)
    return private.with_name('sky-key.pub')


def _body(public_key: str):
    return public_key.split()[:2]


def _reservations(api):
    return api.get('/v2/reservation', project='proj_emulator')['data']


@pytest.fixture
def api(manual_clock_emulator):
    from tests.helpers.commands import Api
    return Api(manual_clock_emulator)


def test_quote_then_buy_use_pause_and_return(manual_clock_emulator, home, sky_key,
                                             run, api):
    quoted = run('reservations', 'quote', *WINDOW, '--json')
    assert quoted.code == 0, quoted.err
    [offer] = json.loads(quoted.out)
    assert _reservations(api) == []

    text = run('reservations', 'quote', *WINDOW)
    assert f'2 × {TYPE} in {REGION}' in text.out and '(24 h)' in text.out
    assert f'charged now    {offer["total_price"]}, in full' in text.out

    unconfirmed = run('reservations', 'create', 'train', *WINDOW)
    assert unconfirmed.code == 1 and 'Pass -y' in unconfirmed.err
    assert f'unit price     {offer["unit_price"]}/h' in unconfirmed.err
    too_dear = run('reservations', 'create', 'train', *WINDOW, '-y',
                   '--max-unit-price', '0.01')
    assert too_dear.code == 1 and 'above your --max-unit-price $0.01/h' in too_dear.err
    assert _reservations(api) == []

    bought = run('reservations', 'create', 'train', *WINDOW, '-y')
    assert bought.code == 0, bought.err
    assert bought.out.strip() == 'train'
    [reservation] = _reservations(api)
    assert reservation['total_price'] == offer['total_price']
    # SkyPilot's key was registered and goes in; the unregistered
    # ~/.ssh/id_ed25519 is not registered by a reservation.
    [key] = api.get('/v2/ssh-keys', project='proj_emulator')
    assert _body(key['public_key']) == _body(sky_key.read_text())
    assert key['name'] == f'sky-{USER_HASH}'
    assert reservation['launch_specification']['ssh_keys'] == [key['fid']]
    assert f'SSH keys       sky-{USER_HASH} (SkyPilot' in bought.err

    manual_clock_emulator.control('POST', 'advance', seconds=600)
    listed = run('reservations', 'list')
    assert re.search(rf'train\s+Active\s+{re.escape(TYPE)}\s+{REGION}\s+2', listed.out), listed.out
    info = json.loads(run('reservations', 'info', 'train', '--json').out)
    assert info['charged'] == offer['total_price'] and len(info['nodes']) == 2

    assert 'train: Paused' in run('reservations', 'pause', 'train').out
    assert 'train: Active' in run('reservations', 'resume', 'train').out

    first, second = info['instances']
    unconfirmed = run('reservations', 'return', 'train', first)
    assert unconfirmed.code == 1 and 'for good' in unconfirmed.err
    returned = run('reservations', 'return', 'train', first, '-y')
    assert returned.code == 0, returned.err
    assert f'Returned: {first}' in returned.out
    after = json.loads(run('reservations', 'info', 'train', '--json').out)
    assert after['instances'] == [second]
    assert after['return_credit'] not in ('$0.00', None)


@pytest.mark.parametrize('args, message', [
    (('--hours', '2'), 'whole hours from 3 to 336'),
    (('-r', 'us-central3a'), "No region 'us-central3a'; regions:"),
])
def test_a_bad_window_is_refused_naming_what_works(manual_clock_emulator, home, run,
                                                   api, args, message):
    base = {'-r': REGION, '--hours': '24'}
    base.update(dict(zip(args[::2], args[1::2])))
    result = run('reservations', 'quote', TYPE, *[x for kv in base.items() for x in kv])
    assert result.code != 0 and message in result.err, result.err
    assert _reservations(api) == []


def test_an_unknown_reservation_is_named(manual_clock_emulator, home, run):
    result = run('reservations', 'info', 'nope')
    assert result.code == 1
    assert "No reservation 'nope'" in result.err and 'reservations list' in result.err


def test_skypilot_key_goes_in_beside_the_users_registered_one(
        manual_clock_emulator, home, sky_key, run, api):
    """A user whose ~/.ssh/id_ed25519 is registered but whose SkyPilot key
    is not still gets a reservation SkyPilot can reach."""
    laptop = api.add_key(home / '.ssh' / 'id_ed25519.pub', 'laptop')
    unconfirmed = run('reservations', 'create', 'train', *WINDOW)
    assert unconfirmed.code == 1
    assert f'SSH keys       sky-{USER_HASH}, laptop' in unconfirmed.err
    assert _reservations(api) == []

    bought = run('reservations', 'create', 'train', *WINDOW, '-y')
    assert bought.code == 0, bought.err
    keys = {k['name']: k['fid'] for k in api.get('/v2/ssh-keys', project='proj_emulator')}
    assert set(keys) == {'laptop', f'sky-{USER_HASH}'}
    [reservation] = _reservations(api)
    assert reservation['launch_specification']['ssh_keys'] == [
        keys[f'sky-{USER_HASH}'], laptop]


def test_k8s_joins_the_reserved_instances_to_the_cluster(
        manual_clock_emulator, home, sky_key, run, api):
    cluster = api.create_cluster('pool', [])
    bought = run('reservations', 'create', 'train', *WINDOW, '--k8s', 'pool', '-y')
    assert bought.code == 0, bought.err
    assert f'the instances join cluster pool ({cluster["fid"]})' in bought.err
    [reservation] = _reservations(api)
    assert reservation['launch_specification']['kubernetes_cluster'] == cluster['fid']

    manual_clock_emulator.control('POST', 'advance', seconds=600)
    instances = json.loads(run('reservations', 'info', 'train', '--json').out)['instances']
    assert len(instances) == 2
    joined = api.get(f'/v2/kubernetes/clusters/{cluster["fid"]}')
    assert sorted(joined['instances']) == sorted(instances)
    shown = json.loads(run('k8s', 'info', 'pool', '--json').out)
    assert sorted(node['fid'] for node in shown['nodes']) == sorted(instances)
    # The cluster's kube API (what kubectl and SkyPilot see) lists them Ready.
    nodes = api.get(f'/_kube/{cluster["fid"]}/api/v1/nodes')['items']
    ready = {n['metadata']['name']: n['status']['conditions'][0]['status']
             for n in nodes}
    assert ready == {'pool-control': 'True',
                     **{node['name']: 'True' for node in shown['nodes']}}


def test_k8s_refuses_an_unknown_or_other_region_cluster(
        manual_clock_emulator, home, sky_key, run, api):
    unknown = run('reservations', 'create', 'train', *WINDOW, '--k8s', 'nope', '-y')
    assert unknown.code == 1
    assert "No live Kubernetes cluster 'nope'" in unknown.err
    assert '`sky-mithril k8s list`' in unknown.err

    other_region = next(a['region'] for a in api.get('/v2/spot/availability')
                        if a['region'] != REGION)
    api.post('/v2/kubernetes/clusters', {
        'project': 'proj_emulator', 'name': 'far', 'region': other_region,
        'instance_type': TYPE, 'ssh_keys': []})
    far = run('reservations', 'create', 'train', *WINDOW, '--k8s', 'far', '-y')
    assert far.code == 1
    assert f"'far' is in {other_region}, not {REGION}" in far.err
    assert '`sky-mithril k8s list`' in far.err
    assert _reservations(api) == []
