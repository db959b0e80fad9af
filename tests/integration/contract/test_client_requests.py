"""What our client (`sky_mithril.api`) sends, against Mithril's published
OpenAPI spec.

Every public method of `MithrilClient` is called against the emulator, with
its optional arguments; a hook on the client's HTTP session records each
request as sent, and each is checked against its operation's parameters and
request schema: an unknown operation, query parameter or body field, a
required one not sent, or a value the spec does not allow fails the test.
What is sent does not depend on the endpoint, so this runs against the
emulator whatever MITHRIL_CONTRACT_URL says.
"""

import dataclasses
import datetime
import inspect
from decimal import Decimal
from typing import Any, Iterator, List, Set

import pytest
import requests

from sky_mithril.api.client import MithrilClient
from sky_mithril.api.models import (CreateBidRequest, CreateCpuInstanceRequest,
                                    CreateReservationRequest,
                                    LaunchSpecification, PriceSpecification,
                                    VolumeInterface)
from sky_mithril.emulator import market as market_lib

from tests.helpers import openapi_contract
from tests.helpers.contract_target import EMULATOR_API_KEY, contract_emulator
from tests.helpers.provisioning import PUBLIC_KEY

# Public methods that send no request (`server_now` reads the last answer's
# Date header; `drive` still uses it, to date an API key's expiry).
NO_REQUEST = frozenset({'close', 'from_credentials', 'server_now'})
# More than a page may hold (the spec's `limit` is at most 100).
MORE_THAN_A_PAGE = 150


class CallLog:
    """The client, noting which of its methods the scenario calls."""

    def __init__(self, client: MithrilClient) -> None:
        self._client = client
        self.called: Set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self._client, name)


def public_methods() -> Set[str]:
    """The client's public methods that send requests."""
    return {
        name for name, member in inspect.getmembers(MithrilClient)
        if not name.startswith('_') and callable(member)
    } - NO_REQUEST


def drive(client: Any, server: Any) -> None:
    """Calls every public method of the client, optional arguments too."""
    client.me()
    project = client.list_projects()[0].fid
    types = client.list_instance_types()
    auction = client.list_spot_availability()[0]
    client.get_current_price(auction.instance_type, region=auction.region,
                             instance_quantity=2)
    now = datetime.datetime.now(datetime.timezone.utc)
    client.get_price_history([auction.instance_type, types[-1].fid],
                             region=auction.region, num_samples=10,
                             start_time=now - datetime.timedelta(days=1),
                             end_time=now)
    api_key = client.create_api_key(
        'contract-api-key', client.server_now() + datetime.timedelta(days=1))
    client.list_api_keys()
    client.revoke_api_key(api_key.fid)
    key = client.create_ssh_key(project, 'contract-key', PUBLIC_KEY)
    client.list_ssh_keys(project)
    volume = client.create_volume(project, 'contract-volume', auction.region,
                                  100, VolumeInterface.FILE)
    client.rename_volume(volume.fid, 'contract-volume-renamed')
    client.list_volumes(project)
    client.list_volumes(project, region=auction.region)
    bid = client.create_bid(CreateBidRequest(
        project=project, region=auction.region,
        instance_type=auction.instance_type, limit_price=Decimal('90.00'),
        instance_quantity=1, name='contract-bid',
        launch_specification=LaunchSpecification(
            ssh_keys=[key.fid], volumes=[volume.fid],
            startup_script='#!/bin/bash\ntrue\n',
            image_version=market_lib.IMAGE_VERSION_FID)))
    server.control('POST', 'advance', seconds=600)
    client.list_bids(project, name='contract-bid', status='Allocated',
                     region=auction.region,
                     instance_type=auction.instance_type,
                     sort_by='created_at', sort_dir='desc', page_size=1)
    client.list_bids(project, max_items=MORE_THAN_A_PAGE)
    client.get_bid(bid.fid)
    client.get_bid_status(bid.fid)
    client.get_bid_history(bid.fid)
    [instance] = client.list_instances(
        project, bid_fids=[bid.fid],
        status_in=['STATUS_RUNNING', 'STATUS_STARTING'],
        region=auction.region, instance_type=auction.instance_type,
        page_size=1)
    client.get_instance_status(instance.fid)
    client.get_instance_pricing_history(project, bid_fid=bid.fid)
    client.get_instance_status_history(
        project, instance_fid=instance.fid,
        start_time=client.server_now() - datetime.timedelta(hours=1),
        end_time=client.server_now())
    client.update_bid(bid.fid, limit_price=Decimal('95.00'))
    client.update_bid(bid.fid, paused=True)
    client.update_bid(bid.fid, limit_price=Decimal('96.00'), paused=False)
    client.cancel_bid(bid.fid)
    drive_reservations(client, server, project, auction, key.fid)
    drive_cpu_vms(client, project, auction.region, key.fid, volume.fid)
    client.delete_volume(volume.fid)
    # The client does not create clusters; the emulator's HTTP API does.
    cluster = requests.post(
        f'{server.url}/v2/kubernetes/clusters',
        headers={'Authorization': f'Bearer {EMULATOR_API_KEY}'},
        json={'name': 'contract-cluster', 'project': project,
              'region': auction.region, 'ssh_keys': [key.fid],
              'instance_type': auction.instance_type},
        timeout=30).json()
    client.list_kubernetes_clusters(project)
    client.get_kubernetes_cluster(cluster['fid'])


def drive_cpu_vms(client: Any, project: str, region: str, key_fid: str,
                  volume_fid: str) -> None:
    """List the CPU catalog, create a CPU VM with every field, delete it."""
    [cpu_type, *_] = client.list_cpu_instance_types()
    assert region in {r.name for r in client.list_cpu_regions()}
    vm = client.create_cpu_instance(CreateCpuInstanceRequest(
        project=project, name='contract-cpu-vm', instance_type=cpu_type.fid,
        region=region, volumes=[volume_fid], ssh_keys=[key_fid],
        image_version=market_lib.MCC_IMAGE_VERSION_FID))
    client.terminate_cpu_instance(vm.fid)


def drive_reservations(client: Any, server: Any, project: str, auction: Any,
                       key_fid: str) -> None:
    """Quote, buy, read, pause and resume, extend and shrink a reservation."""
    client.list_reservation_instance_types()
    start = client.server_now().replace(microsecond=0)
    end = start + datetime.timedelta(hours=24)
    client.reservation_slots(project, auction.instance_type, auction.region,
                             start, end + datetime.timedelta(days=2), quantity=1)
    [offer] = client.quote_reservation(project, auction.instance_type,
                                       auction.region, start, end, 2).offers
    reservation = client.create_reservation(CreateReservationRequest(
        project=project, instance_type=auction.instance_type,
        region=auction.region, start_time=start, end_time=end,
        instance_quantity=2, name='contract-reservation',
        launch_specification=LaunchSpecification(ssh_keys=[key_fid]),
        price_specification=PriceSpecification(
            offer_key=offer.key, max_unit_price=100 * 100)))
    server.control('POST', 'advance', seconds=600)
    client.list_reservations(project, status='Active', region=auction.region,
                             instance_type=auction.instance_type)
    first, second = client.list_instances(project,
                                          reservation_fids=[reservation.fid])
    client.set_instances_paused([first.fid], True)
    server.control('POST', 'advance', seconds=600)
    client.refresh_boot_disk(first.fid)
    client.set_instances_paused([first.fid], False)
    client.update_reservation(reservation.fid, paused=True)
    client.update_reservation(reservation.fid, paused=False)
    if client.get_extension_availability(reservation.fid).available:
        client.extend_reservation(reservation.fid,
                                  end + datetime.timedelta(hours=1))
    server.control('POST', 'advance', seconds=900)
    client.return_reservation_instances(reservation.fid, [second.fid])
    client.get_reservation_history(reservation.fid)
    client.get_reservation_usage(reservation.fid)


@dataclasses.dataclass
class Drive:
    """What `drive` did: the client methods it called, the requests sent."""

    called: Set[str]
    sent: List[openapi_contract.Request]


@pytest.fixture(scope='module')
def drive_run() -> Iterator[Drive]:
    sent: List[openapi_contract.Request] = []
    with contract_emulator() as server, requests.Session() as session:
        session.hooks['response'].append(
            lambda response, **_: sent.append(
                openapi_contract.request_of(response.request)))
        log = CallLog(MithrilClient(EMULATOR_API_KEY, server.url,
                                    session=session))
        drive(log, server)
        yield Drive(called=log.called, sent=sent)


def test_drive_calls_every_client_method(drive_run: Drive) -> None:
    missing = public_methods() - drive_run.called
    assert not missing, f'add to drive(): {sorted(missing)}'


def test_every_request_keeps_the_contract(
        contract: openapi_contract.Contract, drive_run: Drive) -> None:
    problems = [problem for request in drive_run.sent
                for problem in contract.request_problems(request)]
    assert not problems, '\n'.join(problems)
