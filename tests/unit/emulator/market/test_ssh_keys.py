"""SSH keys: registered and generated keys, marking one required, deleting
one, and the keys a bid's hosts accept."""

import pytest

from sky_mithril.emulator.market import (PROJECT_FID, InvalidState, Market,
                                         NotFound)

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, PUBLIC_KEY,
                                          REGION, RecordingHosts, place_bid,
                                          type_fid)


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


def test_a_key_marked_required_reaches_hosts_created_after(
        market: Market, hosts: RecordingHosts) -> None:
    own, _ = market.ssh_keys.create(PROJECT_FID, 'own', PUBLIC_KEY)
    ops, _ = market.ssh_keys.create(PROJECT_FID, 'ops',
                                    'ssh-ed25519 AAAAlater ops')
    before = place_bid(market, ssh_keys=[own.fid], name='before')
    market.advance(CLEARING_S + BOOT_S)
    assert market.ssh_keys.update(ops.fid, required=True) is ops
    assert ops.required
    after = place_bid(market, ssh_keys=[own.fid], name='after')
    market.advance(CLEARING_S + BOOT_S)
    assert hosts.created_keys[before.instances[0].fid] == [PUBLIC_KEY]
    assert hosts.created_keys[after.instances[0].fid] == [PUBLIC_KEY,
                                                          ops.public_key]
    market.ssh_keys.update(ops.fid, required=False)
    assert not market.ssh_keys.get(ops.fid).required
    with pytest.raises(NotFound):
        market.ssh_keys.update('sshkey_unknown', required=True)


def test_a_key_a_live_bid_or_cluster_lists_cannot_be_deleted(
        market: Market) -> None:
    key, _ = market.ssh_keys.create(PROJECT_FID, 'own', PUBLIC_KEY)
    bid = place_bid(market, ssh_keys=[key.fid])
    with pytest.raises(InvalidState, match=bid.fid):
        market.ssh_keys.delete(key.fid)
    market.bids.cancel(bid.fid)
    cluster = market.kubernetes_clusters.create(
        project=PROJECT_FID, name='pool', region=REGION,
        instance_type=type_fid(market), ssh_keys=[key.fid])
    with pytest.raises(InvalidState, match=cluster.fid):
        market.ssh_keys.delete(key.fid)
    market.kubernetes_clusters.delete(cluster.fid)
    market.ssh_keys.delete(key.fid)
    assert market.ssh_keys.list(PROJECT_FID) == []
    with pytest.raises(NotFound):
        market.ssh_keys.delete(key.fid)
