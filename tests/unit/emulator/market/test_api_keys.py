"""API keys: minted keys authenticate until revoked or expired on the
market's clock; the account's key authenticates throughout."""

import datetime

import pytest

from sky_mithril.emulator.market import InvalidRequest, Market, NotFound

HOUR = datetime.timedelta(hours=1)


def test_a_minted_key_authenticates_until_it_expires(market: Market) -> None:
    key = market.api_keys.create('node-key', market.now + HOUR)
    assert key.fid.startswith('apikey_') and key.secret.startswith('fkey_')
    assert market.api_keys.authenticates(key.secret, 'account-key')
    market.advance(HOUR.total_seconds() - 1)
    assert market.api_keys.authenticates(key.secret, 'account-key')
    market.advance(1)
    assert not market.api_keys.authenticates(key.secret, 'account-key')
    assert not market.api_keys.authenticates(key.secret, None)
    assert market.api_keys.authenticates('account-key', 'account-key')


def test_a_revoked_key_is_refused_and_listed_as_deactivated(market: Market) -> None:
    key = market.api_keys.create('node-key', market.now + HOUR)
    other = market.api_keys.create('other', market.now + HOUR)
    market.advance(60)
    revoked = market.api_keys.revoke(key.fid)
    assert revoked.deactivated_at == market.now
    assert not market.api_keys.authenticates(key.secret, None)
    assert market.api_keys.authenticates(other.secret, None)
    market.advance(60)
    assert market.api_keys.revoke(key.fid).deactivated_at == revoked.deactivated_at
    assert [(k.fid, k.deactivated_at is not None)
            for k in market.api_keys.list()] == [(key.fid, True),
                                                  (other.fid, False)]


def test_other_tokens_are_the_accounts_key(market: Market) -> None:
    assert market.api_keys.authenticates('anything', None)
    assert not market.api_keys.authenticates('anything', 'account-key')


def test_a_name_of_60_characters_is_refused(market: Market) -> None:
    assert market.api_keys.create('n' * 59, market.now + HOUR).name == 'n' * 59
    with pytest.raises(InvalidRequest) as info:
        market.api_keys.create('n' * 60, market.now + HOUR)
    assert [e.msg for e in info.value.errors] == [
        'API key name must be less than 60 characters']
    with pytest.raises(InvalidRequest):
        market.api_keys.create(' ', market.now + HOUR)


@pytest.mark.parametrize('lifetime', [datetime.timedelta(0),
                                      datetime.timedelta(days=365, seconds=1)],
                         ids=['now', 'over-a-year'])
def test_an_expiry_outside_the_next_year_is_refused(market: Market,
                                                    lifetime) -> None:
    with pytest.raises(InvalidRequest) as info:
        market.api_keys.create('node-key', market.now + lifetime)
    assert [e.field for e in info.value.errors] == ['expires_at']
    assert market.api_keys.list() == []


def test_a_naive_expiry_is_utc(market: Market) -> None:
    naive = (market.now + HOUR).replace(tzinfo=None)
    assert market.api_keys.create('node-key', naive).expires_at == market.now + HOUR


def test_revoking_an_unknown_key_is_not_found(market: Market) -> None:
    with pytest.raises(NotFound):
        market.api_keys.revoke('apikey_unknown')
