"""The task's ports through the provisioner against the emulator: the head
(its address as Mithril reports it) opens them at launch and again when a
stopped cluster starts, a launch without ports opens none, a head that cannot
open them undoes the launch, and query_ports points at the head.

The emulator's placeholder hosts have no SSH, so what the head is asked to
open is recorded here; tests/host/provision shows a namespace host opening it.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import pytest

from sky.provision import common

from sky_mithril.provision import instance as provisioner
from sky_mithril.provision import public_ports

from tests.helpers.provisioning import bids_named, launch, provision_config

PROVIDER = {'project_id': 'proj_emulator'}
KEY = '/home/me/.sky/clients/abc/ssh/sky-key'

Opened = Tuple[str, str, List[int], str]


def with_ports(ports: Optional[List[int]], resume: bool = False
               ) -> common.ProvisionConfig:
    """A launch's config as SkyPilot renders it for a task with `ports`."""
    config = provision_config(resume=resume)
    return dataclasses.replace(
        config, ports_to_open_on_launch=ports,
        authentication_config={**config.authentication_config,
                               'ssh_private_key': KEY})


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> List[Opened]:
    """Each time a head is asked to open ports: its address, the cluster,
    the ports and the SSH key it is reached with."""
    calls: List[Opened] = []

    def open_on_head(info: common.ClusterInfo, auth: Dict[str, Any],
                     cluster_name_on_cloud: str, ports: List[int]) -> None:
        head = info.get_head_instance()
        assert head is not None
        calls.append((head.external_ip, cluster_name_on_cloud, sorted(ports),
                      auth['ssh_private_key']))

    monkeypatch.setattr(public_ports, 'open_on_head', open_on_head)
    return calls


def head_address(name: str) -> str:
    head = provisioner.get_cluster_info('', name, PROVIDER).get_head_instance()
    assert head is not None and head.external_ip
    return head.external_ip


def test_the_head_opens_the_ports_at_launch_and_again_at_start(
        fast_emulator, opened):
    launch('web', with_ports([9000, 8080]))
    head = head_address('web')
    assert opened == [(head, 'web', [8080, 9000], KEY)]

    provisioner.stop_instances('web', PROVIDER)
    launch('web', with_ports([8080, 9000], resume=True))
    assert opened[1:] == [(head_address('web'), 'web', [8080, 9000], KEY)]

    endpoints = provisioner.query_ports('web', ['8080', '9000-9001'],
                                        provider_config=PROVIDER)
    assert {port: [e.url() for e in listed]
            for port, listed in endpoints.items()} == {
                port: [f'{head_address("web")}:{port}']
                for port in (8080, 9000, 9001)}
    assert provisioner.query_ports('web', ['8080'], head_ip='203.0.113.7',
                                   provider_config=PROVIDER)[8080][0].url() == (
                                       '203.0.113.7:8080')

    provisioner.terminate_instances('web', PROVIDER)
    assert provisioner.query_ports('web', ['8080'],
                                   provider_config=PROVIDER) == {}


def test_a_launch_without_ports_opens_none(fast_emulator, opened):
    launch('portless', with_ports(None))
    launch('portless', with_ports([]))
    assert opened == []


def test_ports_that_cannot_open_undo_a_new_bid_and_a_resumed_one(
        fast_emulator, monkeypatch):
    def refuse(*args: Any) -> None:
        del args
        raise public_ports.PortsNotOpenedError('port 8080: no forwarder')

    monkeypatch.setattr(public_ports, 'open_on_head', refuse)
    with pytest.raises(public_ports.PortsNotOpenedError, match='port 8080'):
        launch('closed', with_ports([8080]))
    assert [b['status'] for b in bids_named(fast_emulator, 'closed')] == [
        'Terminated']

    launch('stopped', with_ports(None))
    provisioner.stop_instances('stopped', PROVIDER)
    with pytest.raises(public_ports.PortsNotOpenedError):
        launch('stopped', with_ports([8080], resume=True))
    assert [b['status'] for b in bids_named(fast_emulator, 'stopped')] == [
        'Paused']
