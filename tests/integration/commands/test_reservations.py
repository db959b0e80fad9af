"""`sky-mithril reservations ...` against the emulator (real HTTP, a clock
the test moves): a quote buys nothing, a purchase shows the price and needs
a yes, the money charged and earned back is what `info` says, and a bad
length, region or name is refused naming what would work."""

import json
import re

import pytest

from tests.helpers.commands import REGION, TYPE

WINDOW = (TYPE, '-r', REGION, '--hours', '24', '-N', '2')


def _reservations(api):
    return api.get('/v2/reservation', project='proj_emulator')['data']


@pytest.fixture
def api(manual_clock_emulator):
    from tests.helpers.commands import Api
    return Api(manual_clock_emulator)


def test_quote_then_buy_use_pause_and_return(manual_clock_emulator, home, run, api):
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
    local_key = (home / '.ssh' / 'id_ed25519.pub').read_text().split()[:2]
    [key] = api.get('/v2/ssh-keys', project='proj_emulator')
    assert key['public_key'].split()[:2] == local_key
    assert reservation['launch_specification']['ssh_keys'] == [key['fid']]

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
