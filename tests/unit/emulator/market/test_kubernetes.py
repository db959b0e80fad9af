"""Kubernetes clusters: the control node coming up, bids joining and leaving,
deletion, and the requests refused."""

from typing import List

import pytest

from sky_mithril.emulator.market import (PROJECT_FID, InvalidRequest, Market,
                                         NotFound)

from tests.helpers.market_testing import (BOOT_S, CLEARING_S, PUBLIC_KEY, REGION, TYPE,
                                          RecordingHosts, place_bid, type_fid)


def test_kubernetes_cluster_comes_up_and_bids_join_it(market: Market,
                                                      hosts: RecordingHosts) -> None:
    key, _ = market.ssh_keys.create(PROJECT_FID, 'k', PUBLIC_KEY)
    ready: List[str] = []
    market.kubernetes_clusters.control_node_ready = (
        lambda cluster: ready.append(cluster.fid))
    cluster = market.kubernetes_clusters.create(project=PROJECT_FID,
                                                name='pool',
                                                region=REGION,
                                                instance_type=TYPE,
                                                ssh_keys=[key.fid])
    assert cluster.status.value == 'Pending' and cluster.kube_host is None
    assert cluster.join_command is None and hosts.calls == []

    market.advance(BOOT_S)
    assert cluster.status.value == 'Available' and ready == [cluster.fid]
    assert cluster.kube_host == cluster.address.ssh_destination
    assert f'{cluster.address.private_ip}:6443' in cluster.join_command
    control_keys = hosts.created_keys[cluster.control_node_fid]
    assert control_keys[0] == PUBLIC_KEY and len(control_keys) == 2
    private_key = market.kubernetes_clusters.control_node_private_key
    assert 'OPENSSH PRIVATE KEY' in private_key

    worker = market.bids.create(project=PROJECT_FID,
                                region=REGION,
                                instance_type=type_fid(market),
                                limit_price='$5.00',
                                instance_quantity=2,
                                name='workers',
                                kubernetes_cluster=cluster.fid)
    loner = place_bid(market, name='loner')
    market.advance(CLEARING_S)
    assert worker.launch_specification.kubernetes_cluster == cluster.fid
    assert market.kubernetes_clusters.instances(cluster) == worker.instances
    assert loner.instances[0] not in market.kubernetes_clusters.instances(
        cluster)
    market.bids.cancel(worker.fid)
    assert market.kubernetes_clusters.instances(cluster) == []

    market.kubernetes_clusters.delete(cluster.fid)
    market.kubernetes_clusters.delete(cluster.fid)
    assert cluster.status.value == 'Terminated' and cluster.deleted_at == market.now
    assert hosts.hooks_for(cluster.control_node_fid) == ['create', 'destroy']
    assert market.kubernetes_clusters.list(PROJECT_FID) == [cluster]
    with pytest.raises(InvalidRequest, match='kubernetes_cluster'):
        market.bids.create(project=PROJECT_FID,
                           region=REGION,
                           instance_type=type_fid(market),
                           limit_price='$5.00',
                           instance_quantity=1,
                           name='late',
                           kubernetes_cluster=cluster.fid)


def test_kubernetes_cluster_requests_are_checked(market: Market,
                                                 hosts: RecordingHosts) -> None:
    with pytest.raises(InvalidRequest) as info:
        market.kubernetes_clusters.create(project=PROJECT_FID,
                                          name=' ',
                                          region='nowhere',
                                          instance_type='no-type',
                                          ssh_keys=['sshkey_x'],
                                          k8s_version='1.0')
    assert {(e.field, e.index) for e in info.value.errors} == {
        ('name', None), ('region', None), ('instance_type', None),
        ('k8s_version', None), ('ssh_keys', 0)}
    with pytest.raises(NotFound):
        market.kubernetes_clusters.get('k8s_missing')
    with pytest.raises(InvalidRequest, match='k8s_missing'):
        market.bids.create(project=PROJECT_FID,
                           region=REGION,
                           instance_type=type_fid(market),
                           limit_price='$5.00',
                           instance_quantity=1,
                           name='orphan',
                           kubernetes_cluster='k8s_missing')
    hosts.fail_create = True
    cluster = market.kubernetes_clusters.create(project=PROJECT_FID,
                                                name='broken',
                                                region=REGION,
                                                instance_type=TYPE)
    market.advance(BOOT_S)
    assert cluster.status.value == 'Pending' and cluster.address is None
