"""The typos and slips of a first hour, against the emulator: each refused
(or warned about) with the fix named, before anything is placed."""

import socket
import time
from pathlib import Path

import pytest

from tests.helpers.commands import REGION, TYPE

CREATE = ('instance', 'create', '-i', TYPE, '-r', REGION)


def _no_bids(api) -> bool:
    return api.get('/v2/spot/bids', project='proj_emulator')['data'] == []


@pytest.mark.parametrize('dry_run', [('--dry-run',), ()], ids=['dry-run', 'create'])
def test_create_without_an_ssh_key_is_refused(fast_emulator, home, run, api, dry_run):
    for key in (home / '.ssh').glob('id_*'):
        key.unlink()
    result = run(*CREATE, '-m', '8', *dry_run)
    assert result.code == 1
    assert 'No SSH key pair found' in result.err and 'ssh-keygen -t ed25519' in result.err
    assert _no_bids(api)


@pytest.mark.parametrize('dry_run', [('--dry-run',), ()], ids=['dry-run', 'create'])
def test_more_instances_than_the_auction_has_is_refused(fast_emulator, home, run, api,
                                                        dry_run):
    capacity = next(a['capacity'] for a in fast_emulator.control('GET', 'state')['auctions']
                    if a['instance_type'] == TYPE and a['region'] == REGION)
    result = run(*CREATE, '-m', '8', '-N', str(capacity + 12), *dry_run)
    assert result.code == 1
    assert (f'-N {capacity + 12}: the {TYPE} auction in {REGION} has {capacity} '
            'instance(s) in all') in result.err
    assert f'Ask for at most {capacity}' in result.err
    assert _no_bids(api)


def test_dry_run_says_the_bid_would_wait_like_a_launch(fast_emulator, home, run, api):
    waits = run(*CREATE, '-m', '1.50', '--dry-run')
    assert waits.code == 0, waits.err
    assert (f'Spot price in {REGION} now: $2.00/h, above your limit $1.50/h: the bid '
            'will wait for the price to fall. To be allocated now, use -m 2.00 or '
            'more.') in waits.err
    wins = run(*CREATE, '-m', '8', '--dry-run')
    assert f'Spot price in {REGION} now: $2.00/h (' in wins.err
    assert 'within your limit.' in wins.err
    assert _no_bids(api)


@pytest.mark.parametrize('price,fragments', [
    ('0.00', ["'0.00' must be above $0.00", "quote the price ('$20.00') or drop the $"]),
    ('5000', ['-m gives $5000.00/h per instance, above the sanity ceiling of $1000.00/h']),
])
@pytest.mark.parametrize('dry_run', [('--dry-run',), ()], ids=['dry-run', 'create'])
def test_prices_a_launch_refuses_are_refused(fast_emulator, home, run, api, price,
                                             fragments, dry_run):
    result = run(*CREATE, '-m', price, *dry_run)
    assert result.code == 2
    for fragment in fragments:
        assert fragment in result.err, result.err
    assert _no_bids(api)


def test_a_price_the_shell_may_have_cut_is_placed_with_a_note(fast_emulator, home, run,
                                                              api):
    # `-m $8.50` unquoted arrives as `-m .50`: a valid limit, so only a note.
    result = run(*CREATE, '-m', '.50', '--dry-run')
    assert result.code == 0, result.err
    assert ("Note: -m .50 is what the shell leaves of an unquoted $N.50 (it replaces "
            "$N); if that is what you typed, quote the price ('$8.50') or drop the "
            '$.') in result.err
    assert 'at a limit of $0.50/h' in result.out


def test_an_unquoted_dollar_that_swallowed_the_next_option_is_named(fast_emulator,
                                                                    home, run):
    # `-m $8 -n dev`: the shell leaves `-m -n dev`.
    result = run(*CREATE, '-m', '-n', 'dev')
    assert result.code == 2 and "quote the price ('$20.00')" in result.err


@pytest.mark.parametrize('argv', [('instance', 'list-types', '-r', 'us-central3a'),
                                  ('volumes', 'ls', '-r', 'us-central3a'),
                                  ('volumes', 'ls', '--region', 'us-central3a', '--json')])
def test_a_region_typo_in_a_listing_names_the_regions(fast_emulator, home, run, api, argv):
    result = run(*argv)
    assert result.code == 1 and result.out == ''
    assert "No region 'us-central3a' on Mithril; pass one of " in result.err
    listed = result.err.split('pass one of ')[1].split(' with --region')[0]
    assert set(listed.split(', ')) == {a['region'] for a in api.get('/v2/spot/availability')}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize('argv', [('instance', 'list'), ('volumes', 'ls'),
                                  ('prices', 'H100:8'), ('spend',)])
def test_nothing_listening_fails_at_once(home, run, monkeypatch, argv):
    url = f'http://127.0.0.1:{_closed_port()}'
    monkeypatch.setenv('MITHRIL_API_URL', url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'emulator-test-key')
    monkeypatch.setenv('MITHRIL_PROJECT', 'proj_emulator')
    started = time.monotonic()
    result = run(*argv)
    assert time.monotonic() - started < 10
    assert result.code == 1
    assert (f'Cannot reach the Mithril API at {url}: nothing accepts connections '
            'there') in result.err
    assert '`sky-mithril emulator` is running' in result.err


def test_an_api_url_without_a_scheme_says_what_to_write(home, run, monkeypatch):
    monkeypatch.setenv('MITHRIL_API_URL', '127.0.0.1:8765')
    monkeypatch.setenv('MITHRIL_API_KEY', 'emulator-test-key')
    result = run('instance', 'list')
    assert result.code == 1
    assert ("MITHRIL_API_URL is '127.0.0.1:8765', which lacks a scheme: write "
            'http://127.0.0.1:8765 for a server on this machine') in result.err


def test_an_unknown_project_from_the_environment_is_named_as_such(fast_emulator, home,
                                                                 run, monkeypatch,
                                                                 tmp_path: Path):
    monkeypatch.setenv('MITHRIL_PROJECT', 'proj_nope')
    result = run('instance', 'list')
    assert result.code == 1
    assert ("Project 'proj_nope' (from environment variable MITHRIL_PROJECT) is not "
            'visible to this API key') in result.err


def test_prices_knows_the_markets_regions_and_the_types_list_types_prints(
        fast_emulator, home, run):
    # h100-80gb.sxm.8x is sold in us-central1-a, which the shipped catalog lacks.
    live = run('prices', 'h100-80gb.sxm.8x', '--region', 'us-central1-a')
    assert live.code == 0, live.err
    assert 'h100-80gb.sxm.8x (8x H100) in us-central1-a:' in live.out
    assert 'in us-central2-a' not in live.out
    typo = run('prices', 'H100:8', '--region', 'us-central1')
    assert typo.code == 1
    assert "region 'us-central1'; it has them in: us-central1-a, us-central2-a." in typo.err
