"""SSH keys: registered and generated keys, and the keys a bid's hosts accept."""

from sky_mithril.emulator.market import PROJECT_FID, Market

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, PUBLIC_KEY, RecordingHosts,
                                          place_bid)


def test_required_project_keys_reach_every_host(market: Market,
                                                hosts: RecordingHosts) -> None:
    own, _ = market.ssh_keys.create(PROJECT_FID, 'own', PUBLIC_KEY)
    required, _ = market.ssh_keys.create(PROJECT_FID,
                                         'ops',
                                         'ssh-ed25519 AAAArequired ops',
                                         required=True)
    bid = place_bid(market, ssh_keys=[own.fid])
    market.advance(CLEARING_S + BOOT_S)
    assert hosts.created_keys[bid.instances[0].fid] == [PUBLIC_KEY,
                                                        required.public_key]


def test_generated_ssh_key_returns_private_key(market: Market) -> None:
    key, private_key = market.ssh_keys.create(PROJECT_FID, 'generated')
    assert key.public_key.startswith('ssh-ed25519 ')
    assert private_key is not None and 'PRIVATE KEY' in private_key
    assert market.ssh_keys.list(PROJECT_FID) == [key]
