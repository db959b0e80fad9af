"""What an endpoint answers, against Mithril's published OpenAPI spec.

A scripted scenario (`PHASES`) drives the operations of the spec through the
endpoint of `contract_target` (the emulator unless MITHRIL_CONTRACT_URL names
another) and checks each answer's status and body against the spec
(`tests.helpers.openapi_contract`). Then one test per operation of the spec:

- exercised by the scenario: its answers keep the contract;
- served by the emulator but not exercised: a failure, so no served
  operation goes unchecked;
- not served by the emulator: an expected failure, "not served yet";
- against another endpoint, not exercised (a read-only run): skipped.

And every refusal the spec documents for a served operation (401 for a
revoked key, 400, 404, 409, 501, a 422 for input left out) is provoked by
some phase, bar the few `UNPROVOKED_REFUSALS` that say why not.

To cover an operation the emulator newly serves, add its calls to a phase
(or a new phase in `PHASES`). Each phase says what it needs of the endpoint:
`READS` run everywhere, `WRITES` only on the emulator (they create and delete
freely and advance its clock), `ONE_BID` on the emulator and, when
MITHRIL_CONTRACT_PLACE_BID=1, on another endpoint.
"""

import dataclasses
import datetime
import email.utils
import enum
import json
import re
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest
import requests

from sky_mithril import money
from sky_mithril.api.client import redact
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers import openapi_contract
from tests.helpers.openapi_contract import Contract, Operation
from tests.helpers.provisioning import PUBLIC_KEY
from tests.helpers.contract_target import (EMULATOR_API_KEY, ContractTarget,
                                           contract_emulator)

REQUEST_TIMEOUT_S = 30.0
# ONE_BID: the bid is cancelled at once after a few reads, well within this.
ONE_BID_MAX_SECONDS = 60.0
# What the scenario waits on the emulator's clock for a bid to be allocated
# and its instances to boot, one step at a time.
BOOT_STEP_S = 10.0
BOOT_STEPS = 30
# How long the API key the scenario mints would live (it is revoked at once).
API_KEY_LIFETIME = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)
# The fields of an answer that hand out a secret once: a minted API key's,
# a generated SSH key pair's private half.
SECRET_FIELDS = ('secret', 'private_key')


class Needs(enum.Enum):
    """What a phase needs of the endpoint."""

    READS = 'reads'
    WRITES = 'writes'
    ONE_BID = 'one bid'


class ScenarioFailed(Exception):
    """A step got an answer the scenario cannot go on from."""


@dataclasses.dataclass
class Facts:
    """What earlier phases learned, for later ones."""

    project: str = ''
    organization_id: str = ''
    instance_type: str = ''
    region: str = ''
    cpu_instance_type: str = ''
    cpu_region: str = ''
    minimum_price_cents: Optional[int] = None
    spot_price_cents: Optional[int] = None
    ssh_keys: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ScenarioRun:
    """Each operation's exchanges (one list of problems per answer) and the
    statuses it answered, and the phases that stopped, with why."""

    exchanges: Dict[Operation, List[List[str]]] = dataclasses.field(
        default_factory=dict)
    statuses: Dict[Operation, Set[int]] = dataclasses.field(
        default_factory=dict)
    stopped: Dict[str, str] = dataclasses.field(default_factory=dict)


class Caller:
    """Sends the scenario's requests and checks each exchange: the request
    against the spec too, so every answer checked is to a valid request.
    Its messages never hold the endpoint's key, nor a secret an answer
    handed out (`SECRET_FIELDS`)."""

    def __init__(self, contract: Contract, target: ContractTarget,
                 run: ScenarioRun, session: requests.Session) -> None:
        self._contract = contract
        self._target = target
        self._run = run
        self._session = session
        self._server_date: Optional[datetime.datetime] = None
        self._secrets: List[str] = [target.api_key]

    def __call__(self,
                 method: str,
                 path: str,
                 *,
                 expect: int,
                 params: Optional[Dict[str, Any]] = None,
                 body: Optional[Dict[str, Any]] = None,
                 invalid: bool = False,
                 api_key: Optional[str] = None) -> Any:
        """The answer's JSON (None for no body); ScenarioFailed unless its
        status is `expect`. `invalid`: the request breaks the spec on
        purpose, so only the answer is checked. `api_key`: another key than
        the endpoint's (one the scenario minted)."""
        response = self._session.request(
            method, f'{self._target.url}{path}', params=params, json=body,
            headers={'Authorization':
                     f'Bearer {api_key or self._target.api_key}'},
            timeout=REQUEST_TIMEOUT_S, allow_redirects=False)
        self._note_secrets(response)
        request = openapi_contract.request_of(response.request)
        found = self._contract.operation_of(method, path.split('?')[0])
        if found is None:
            raise ScenarioFailed(f'{request.label} is no operation of the spec')
        operation = found[0]
        problems = [
            *(f'(the scenario\'s own request) {p}'
              for p in ([] if invalid else
                        self._contract.request_problems(request))),
            *self._contract.response_problems(operation, response.status_code,
                                              response.content),
        ]
        self._run.exchanges.setdefault(operation, []).append(
            [self._redact(problem) for problem in problems])
        self._run.statuses.setdefault(operation, set()).add(
            response.status_code)
        self._note_server_date(response)
        if response.status_code != expect:
            raise ScenarioFailed(self._redact(
                f'{request.label} answered {response.status_code}, expected '
                f'{expect}: {self._redact(response.text)[:300]}'))
        return response.json() if response.content else None

    @property
    def contract(self) -> Contract:
        return self._contract

    def server_date(self) -> datetime.datetime:
        """The endpoint's clock as its last dated answer's `Date` header
        said (an emulator's clock is not this machine's); ScenarioFailed if
        no answer was dated."""
        if self._server_date is None:
            raise ScenarioFailed('no answer carried a Date header')
        return self._server_date

    def _note_server_date(self, response: requests.Response) -> None:
        try:
            when = email.utils.parsedate_to_datetime(
                response.headers.get('Date', ''))
        except (TypeError, ValueError):
            return
        self._server_date = (when if when.tzinfo is not None else
                             when.replace(tzinfo=datetime.timezone.utc))

    def _note_secrets(self, response: requests.Response) -> None:
        """Keeps the secrets an answer hands out out of every message: as
        they are, and as escaped in JSON text or a repr (a private key's
        newlines)."""
        try:
            payload = response.json()
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        for field in SECRET_FIELDS:
            secret = payload.get(field)
            if isinstance(secret, str) and secret:
                self._secrets += [secret, json.dumps(secret)[1:-1]]

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = redact(text, secret)
        return text


def _dollars(cents: int) -> str:
    return money.format_dollars(money.cents_to_dollars(cents))


def _cheapest_auction(auctions: List[Dict[str, Any]]) -> Dict[str, Any]:
    if not auctions:
        raise ScenarioFailed('GET /v2/spot/availability lists no auction')
    return min(auctions,
               key=lambda a: money.parse_dollars(a['last_instance_price']))


# The phases, in the order they run.


def account_and_catalog(call: Caller, target: ContractTarget,
                        facts: Facts) -> None:
    """The account, its teammates and quotas, the catalog (GPU and CPU, and
    their images) and the cheapest auction's prices."""
    facts.organization_id = call('GET', '/v2/me', expect=200)['organization_id']
    call('GET', '/v2/me/teammates', expect=200)
    call('GET', f'/v2/organizations/{facts.organization_id}/quotas',
         expect=200)
    projects = call('GET', '/v2/projects', expect=200)
    if not (target.project or projects):
        raise ScenarioFailed('the key sees no project')
    facts.project = target.project or projects[0]['fid']
    call('GET', '/v2/instance-types', expect=200)
    auction = _cheapest_auction(
        call('GET', '/v2/spot/availability', expect=200))
    facts.instance_type, facts.region = auction['instance_type'], auction['region']
    prices = call('GET', '/v2/pricing/current', expect=200,
                  params={'instance_type': facts.instance_type,
                          'region': facts.region, 'instance_quantity': 1})
    facts.minimum_price_cents = prices.get('minimum_price_cents')
    facts.spot_price_cents = prices.get('spot_price_cents')
    call('GET', '/v2/pricing/history', expect=200,
         params={'instance_types': facts.instance_type,
                 'region': facts.region, 'num_samples': 5})
    call('GET', '/v2/image-versions', expect=200)
    call('GET', '/v2/quotas', params={'project': facts.project}, expect=200)
    cpu_types = call('GET', '/v2/cpu/instance-types', expect=200)
    cpu_regions = call('GET', '/v2/cpu/regions', expect=200)
    facts.cpu_instance_type = cpu_types[0]['fid'] if cpu_types else ''
    facts.cpu_region = cpu_regions[0]['name'] if cpu_regions else ''
    call('GET', '/v2/mcc-image-versions', expect=200,
         params={'region': facts.cpu_region or facts.region})


def existing_resources(call: Caller, target: ContractTarget,
                       facts: Facts) -> None:
    """The project's lists (and the user's API keys), and the first of each
    listed thing by its fid."""
    del target
    project = {'project': facts.project}
    keys = call('GET', '/v2/ssh-keys', params=project, expect=200)
    facts.ssh_keys = [key['fid'] for key in keys[:1]]
    call('GET', '/v2/api-keys', expect=200)
    scripts = call('GET', '/v2/lifecycle-scripts', params=project, expect=200)
    for script in scripts['data'][:1]:
        call('GET', f'/v2/lifecycle-scripts/{script["fid"]}/content',
             expect=200)
    call('GET', '/v2/volumes', params=project, expect=200)
    for cluster in call('GET', '/v2/kubernetes/clusters', params=project,
                        expect=200)[:1]:
        call('GET', f'/v2/kubernetes/clusters/{cluster["fid"]}', expect=200)
    bids = call('GET', '/v2/spot/bids', expect=200,
                params={**project, 'limit': 5, 'sort_dir': 'desc'})
    for bid in bids['data'][:1]:
        call('GET', f'/v2/spot/bids/{bid["fid"]}', expect=200)
        call('GET', f'/v2/spot/bids/{bid["fid"]}/status', expect=200)
        call('GET', f'/v2/spot/bids/{bid["fid"]}/history', expect=200)
    instances = call('GET', '/v2/instances', params={**project, 'limit': 5},
                     expect=200)
    for instance in instances['data'][:1]:
        call('GET', f'/v2/instances/{instance["fid"]}/status', expect=200)
    for what in ('status', 'pricing'):
        call('GET', f'/v2/instances/{what}/history', expect=200,
             params={**project, 'limit': 5})
    reservations = call('GET', '/v2/reservation', expect=200,
                        params={**project, 'limit': 5, 'sort_dir': 'desc'})
    for reservation in reservations['data'][:1]:
        path = f'/v2/reservation/{reservation["fid"]}'
        call('GET', f'{path}/history', expect=200)
        call('GET', f'{path}/usage', expect=200)
        call('GET', f'{path}/extension-availability', expect=200)


def reservation_offers(call: Caller, target: ContractTarget,
                       facts: Facts) -> None:
    """What can be reserved: the types, a quote, and the availability of
    the cheapest auction's type in its three modes, from an hour ahead."""
    del target
    call('GET', '/v2/reservation/instance-types', expect=200)
    start = call.server_date() + HOUR
    where = {'project': facts.project, 'instance_type': facts.instance_type,
             'region': facts.region}
    call('GET', '/v2/reservation/quote', expect=200,
         params={**where, 'start_time': start.isoformat(),
                 'end_time': (start + 3 * HOUR).isoformat(), 'quantity': 1})
    call('GET', '/v2/reservation/availability', expect=200,
         params={**where, 'start_time': start.isoformat(), 'quantity': 1})
    call('GET', '/v2/reservation/availability', expect=200,
         params={**where, 'mode': 'slots',
                 'earliest_start_time': start.isoformat(),
                 'latest_end_time': (start + 24 * HOUR).isoformat(),
                 'quantity': 1})
    call('GET', '/v2/reservation/availability', expect=200,
         params={**where, 'mode': 'check', 'start_time': start.isoformat(),
                 'end_time': (start + 3 * HOUR).isoformat(), 'quantity': 1})


def refusals(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """Answers to requests refused: an unknown fid, an invalid parameter."""
    del target
    call('GET', '/v2/spot/bids/bid_contract0unknown', expect=404)
    call('GET', '/v2/spot/bids', params={'project': facts.project, 'limit': 0},
         expect=422, invalid=True)


def ssh_keys(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """A key registered (kept for later phases); a key pair generated,
    made required and not again, and deleted."""
    del target
    made = call('POST', '/v2/ssh-keys', expect=201,
                body={'project': facts.project, 'name': 'contract-key',
                      'public_key': PUBLIC_KEY})
    facts.ssh_keys = [made['fid']]
    generated = call('POST', '/v2/ssh-keys', expect=201,
                     body={'project': facts.project,
                           'name': 'contract-generated-key'})
    path = f'/v2/ssh-keys/{generated["fid"]}'
    call('PATCH', path, expect=200, body={'required': True})
    call('PATCH', path, expect=200, body={'required': False})
    call('GET', '/v2/ssh-keys', params={'project': facts.project}, expect=200)
    call('DELETE', path, expect=204)


def api_keys(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """An API key minted (expiring a day from the endpoint's clock), used,
    listed and revoked; then refused with it (401). Keys Mithril does not
    mint (400) and an unknown key (404)."""
    del target, facts
    now = call.server_date()
    made = call('POST', '/v2/api-keys', expect=201,
                body={'name': 'contract-api-key',
                      'expires_at': (now + API_KEY_LIFETIME).isoformat()})
    call('GET', '/v2/api-keys', expect=200, api_key=made['secret'])
    call('DELETE', f'/v2/api-keys/{made["fid"]}', expect=204)
    call('GET', '/v2/api-keys', expect=200)
    revoked = {'api_key': made['secret'], 'expect': 401}
    call('GET', '/v2/api-keys', **revoked)
    call('POST', '/v2/api-keys', **revoked,
         body={'name': 'contract-api-key-2',
               'expires_at': (now + API_KEY_LIFETIME).isoformat()})
    call('DELETE', f'/v2/api-keys/{made["fid"]}', **revoked)
    for name, lifetime in (('k' * 60, API_KEY_LIFETIME),
                           ('contract-api-key-3', datetime.timedelta(days=400))):
        call('POST', '/v2/api-keys', expect=400,
             body={'name': name, 'expires_at': (now + lifetime).isoformat()})
    call('DELETE', '/v2/api-keys/apikey_contract0unknown', expect=404)


def lifecycle_scripts(call: Caller, target: ContractTarget,
                      facts: Facts) -> None:
    """Two lifecycle scripts: created, paged, sorted, read, changed,
    deleted."""
    del target
    made = [
        call('POST', '/v2/lifecycle-scripts', expect=201,
             body={'project': facts.project, 'name': f'contract-script-{n}',
                   'content': '#!/bin/bash\ntrue\n',
                   'description': 'made by the contract tests',
                   'scope': scope})
        for n, scope in enumerate(('PROJECT', 'ORGANIZATION'))
    ]
    page = call('GET', '/v2/lifecycle-scripts', expect=200,
                params={'project': facts.project, 'limit': 1})
    if not page['next_cursor']:
        raise ScenarioFailed('a page of one of two lifecycle scripts has no '
                             'next_cursor')
    call('GET', '/v2/lifecycle-scripts', expect=200,
         params={'project': facts.project, 'limit': 1,
                 'next_cursor': page['next_cursor']})
    call('GET', '/v2/lifecycle-scripts', expect=200,
         params={'project': facts.project, 'sort_by': 'last_modified_at',
                 'sort_dir': 'desc'})
    path = f'/v2/lifecycle-scripts/{made[0]["fid"]}'
    call('GET', f'{path}/content', expect=200)
    call('PATCH', path, expect=200,
         body={'name': 'contract-script-renamed',
               'description': 'changed by the contract tests',
               'scope': 'ORGANIZATION'})
    for script in made:
        call('DELETE', f'/v2/lifecycle-scripts/{script["fid"]}', expect=204)


def volumes(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """A volume's life: created, renamed, listed, deleted."""
    del target
    volume = call('POST', '/v2/volumes', expect=201,
                  body={'name': 'contract-volume', 'project': facts.project,
                        'disk_interface': 'Block', 'region': facts.region,
                        'size_gb': 100})
    call('PATCH', f'/v2/volumes/{volume["fid"]}', expect=200,
         body={'name': 'contract-volume-renamed'})
    call('GET', '/v2/volumes', expect=200,
         params={'project': facts.project, 'region': facts.region})
    call('DELETE', f'/v2/volumes/{volume["fid"]}', expect=204)


def kubernetes(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """A Kubernetes cluster's life: created, read, deleted, read again."""
    assert target.emulator is not None
    cluster = call('POST', '/v2/kubernetes/clusters', expect=201,
                   body={'name': 'contract-cluster', 'project': facts.project,
                         'region': facts.region, 'ssh_keys': facts.ssh_keys,
                         'instance_type': facts.instance_type})
    path = f'/v2/kubernetes/clusters/{cluster["fid"]}'
    call('GET', path, expect=200)
    target.emulator.control('POST', 'advance', seconds=600)
    call('GET', path, expect=200)
    call('GET', '/v2/kubernetes/clusters', params={'project': facts.project},
         expect=200)
    call('DELETE', path, expect=204)
    call('GET', path, expect=200)


def _wait_for_status(call: Caller, target: ContractTarget, fid: str,
                     status: str) -> None:
    """Advances the emulator's clock until instance `fid` is `status`."""
    assert target.emulator is not None
    for _ in range(BOOT_STEPS):
        target.emulator.control('POST', 'advance', seconds=BOOT_STEP_S)
        if call('GET', f'/v2/instances/{fid}/status',
                expect=200)['status'] == status:
            return
    raise ScenarioFailed(f'{fid} was not {status} in '
                         f'{BOOT_STEP_S * BOOT_STEPS:g} emulated s')


def cpu_vm(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """A CPU VM's life: launched, paused, its boot disk refreshed, resumed,
    restarted, listed, terminated."""
    if not (facts.cpu_instance_type and facts.cpu_region):
        raise ScenarioFailed('the endpoint lists no CPU instance type or '
                             'region')
    vm = call('POST', '/v2/cpu/instances', expect=201,
              body={'name': 'contract-vm', 'project': facts.project,
                    'instance_type': facts.cpu_instance_type,
                    'region': facts.cpu_region, 'volumes': [],
                    'ssh_keys': facts.ssh_keys})
    fid = vm['fid']
    pause = {'instances': [fid], 'status': 'STATUS_PAUSED'}
    call('PATCH', '/v2/instances', expect=409, body=pause)  # still booting
    _wait_for_status(call, target, fid, 'STATUS_RUNNING')
    call('POST', f'/v2/instances/{fid}/refresh-boot-disk', expect=422)
    call('PATCH', '/v2/instances', expect=200, body=pause)
    _wait_for_status(call, target, fid, 'STATUS_PAUSED')
    call('POST', f'/v2/instances/{fid}/restart', expect=409)  # not running
    call('POST', f'/v2/instances/{fid}/refresh-boot-disk', expect=422,
         body={'image_version': 'imgver_contract0unknown'})
    call('POST', f'/v2/instances/{fid}/refresh-boot-disk', expect=200)
    call('POST', f'/v2/instances/{fid}/refresh-boot-disk', expect=200,
         body={'image_version': None})
    call('PATCH', '/v2/instances', expect=200,
         body={'instances': [fid], 'status': 'STATUS_RUNNING'})
    _wait_for_status(call, target, fid, 'STATUS_RUNNING')
    call('POST', f'/v2/instances/{fid}/restart', expect=202)
    call('GET', '/v2/instances', expect=200,
         params={'project': facts.project, 'order_type_in': 'Reservation'})
    call('DELETE', f'/v2/cpu/instances/{fid}', expect=204)
    call('GET', f'/v2/instances/{fid}/status', expect=200)
    call('POST', f'/v2/instances/{fid}/refresh-boot-disk', expect=409)  # no VM
    unknown = 'inst_contract0unknown'
    call('PATCH', '/v2/instances', expect=404,
         body={'instances': [fid, unknown], 'status': 'STATUS_RUNNING'})
    call('POST', f'/v2/instances/{unknown}/restart', expect=404)
    call('POST', f'/v2/instances/{unknown}/refresh-boot-disk', expect=404)


def _reservation_body(facts: Facts, name: str, start: datetime.datetime,
                      hours: int, quantity: int) -> Dict[str, Any]:
    return {
        'project': facts.project,
        'instance_type': facts.instance_type,
        'region': facts.region,
        'start_time': start.isoformat(),
        'end_time': (start + hours * HOUR).isoformat(),
        'instance_quantity': quantity,
        'name': name,
        'launch_specification': {'volumes': [], 'ssh_keys': facts.ssh_keys},
    }


def reservation_life(call: Caller, target: ContractTarget,
                     facts: Facts) -> None:
    """Two reservations: one from now, whose instances boot, are paused one
    and all, resumed, get a volume, a fresh boot disk and a restart, while
    it is extended and shrunk (200; 502 with its one instance left
    restarting, then 207 with another; 404 for an instance not its own),
    until it ends (400 to shrink it then); one later, listed Pending. Their
    history and usage, and a quote refused for its window."""
    assert target.emulator is not None
    now = call.server_date()
    made = call('POST', '/v2/reservation', expect=201,
                body={**_reservation_body(facts, 'contract-reservation', now,
                                          3, 3),
                      'launch_specification': {
                          'volumes': [], 'ssh_keys': facts.ssh_keys,
                          'startup_script': '#!/bin/bash\ntrue\n'},
                      'price_specification': {'offer_key': 'standard',
                                              'max_unit_price': 100_000}})
    later = call('POST', '/v2/reservation', expect=201,
                 body=_reservation_body(facts, 'contract-reservation-later',
                                        now + 24 * HOUR, 3, 1))
    project = {'project': facts.project}
    page = call('GET', '/v2/reservation', expect=200,
                params={**project, 'limit': 1})
    if not page['next_cursor']:
        raise ScenarioFailed('a page of one of two reservations has no '
                             'next_cursor')
    call('GET', '/v2/reservation', expect=200,
         params={**project, 'limit': 1, 'next_cursor': page['next_cursor']})
    call('GET', '/v2/reservation', expect=200,
         params={**project, 'status': 'Pending', 'region': facts.region,
                 'instance_type': facts.instance_type, 'sort_by': 'status',
                 'sort_dir': 'desc'})
    path = f'/v2/reservation/{made["fid"]}'
    fids = made['instances']
    for fid in fids:
        _wait_for_status(call, target, fid, 'STATUS_RUNNING')
    call('GET', '/v2/instances', expect=200,
         params={**project, 'reservation_fid_in': made['fid'],
                 'order_type_in': 'Reservation'})
    call('PATCH', '/v2/instances', expect=200,
         body={'instances': [fids[0]], 'status': 'STATUS_PAUSED'})
    _wait_for_status(call, target, fids[0], 'STATUS_PAUSED')
    call('POST', f'/v2/instances/{fids[0]}/refresh-boot-disk', expect=200)
    call('PATCH', '/v2/instances', expect=200,
         body={'instances': [fids[0]], 'status': 'STATUS_RUNNING'})
    _wait_for_status(call, target, fids[0], 'STATUS_RUNNING')
    call('PATCH', path, expect=200, body={'paused': True})
    _wait_for_status(call, target, fids[0], 'STATUS_PAUSED')
    call('PATCH', path, expect=200, body={'paused': False})
    _wait_for_status(call, target, fids[0], 'STATUS_RUNNING')
    volume = call('POST', '/v2/volumes', expect=201,
                  body={'name': 'contract-reserved-volume',
                        'project': facts.project, 'disk_interface': 'File',
                        'region': facts.region, 'size_gb': 10})
    call('PATCH', path, expect=200, body={'volumes': [volume['fid']]})
    call('PATCH', path, expect=200, body={'volumes': []})
    call('DELETE', f'/v2/volumes/{volume["fid"]}', expect=204)
    call('GET', f'{path}/extension-availability', expect=200)
    extended = call('POST', f'{path}/extend', expect=200,
                    body={'end_time': (now + 4 * HOUR).isoformat(),
                          'price_specification': {'max_unit_price': 100_000}})
    call('POST', f'{path}/terminate-instances', expect=200,
         body={'instances': [fids[2]], 'reduce_capacity': True})
    call('POST', f'{path}/terminate-instances', expect=404,
         body={'instances': ['inst_contract0unknown'],
               'reduce_capacity': True})
    call('POST', f'/v2/instances/{fids[0]}/restart', expect=202)
    call('POST', f'{path}/terminate-instances', expect=502,
         body={'instances': fids[:1], 'reduce_capacity': True})
    call('POST', f'{path}/terminate-instances', expect=207,
         body={'instances': fids[:2], 'reduce_capacity': True})
    for what in ('status', 'pricing'):
        call('GET', f'/v2/instances/{what}/history', expect=200,
             params={**project, 'reservation_fid': made['fid']})
    call('GET', f'{path}/history', expect=200)
    call('GET', f'{path}/usage', expect=200)
    call('GET', f'/v2/reservation/{later["fid"]}/history', expect=200)
    target.emulator.control('POST', 'advance', seconds=(
        datetime.datetime.fromisoformat(extended['end_time']) -
        now).total_seconds())
    call('GET', '/v2/reservation', expect=200,
         params={**project, 'status': 'Ended'})
    call('POST', f'{path}/terminate-instances', expect=400,
         body={'instances': fids[:1], 'reduce_capacity': True})
    call('GET', f'{path}/usage', expect=200)
    call('GET', '/v2/reservation/quote', expect=422,
         params={'project': facts.project,
                 'instance_type': facts.instance_type, 'region': facts.region,
                 'start_time': (now + 48 * HOUR).isoformat(),
                 'end_time': (now + 50 * HOUR).isoformat(), 'quantity': 1})


def _bid_body(facts: Facts, name: str, limit_price: str) -> Dict[str, Any]:
    return {
        'project': facts.project,
        'region': facts.region,
        'instance_type': facts.instance_type,
        'limit_price': limit_price,
        'instance_quantity': 1,
        'name': name,
        'launch_specification': {'volumes': [], 'ssh_keys': facts.ssh_keys},
    }


def bid_life(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """Two bids placed and allocated; one read through its instances' boot,
    paged, filtered, repriced, paused, resumed; both cancelled."""
    assert target.emulator is not None
    if facts.spot_price_cents is None:
        raise ScenarioFailed('the auction has no spot price to bid over')
    limit = _dollars(facts.spot_price_cents * 3)
    bid = call('POST', '/v2/spot/bids', expect=201,
               body={**_bid_body(facts, 'contract-bid', limit),
                     'launch_specification': {
                         'volumes': [], 'ssh_keys': facts.ssh_keys,
                         'startup_script': '#!/bin/bash\ntrue\n'}})
    other = call('POST', '/v2/spot/bids', expect=201,
                 body=_bid_body(facts, 'contract-bid-2', limit))
    path = f'/v2/spot/bids/{bid["fid"]}'
    instance_fids: List[str] = []
    for _ in range(BOOT_STEPS):
        target.emulator.control('POST', 'advance', seconds=BOOT_STEP_S)
        instance_fids = call('GET', path, expect=200)['instances']
        call('GET', f'{path}/status', expect=200)
        statuses = [call('GET', f'/v2/instances/{fid}/status',
                         expect=200)['status'] for fid in instance_fids]
        if statuses and set(statuses) == {'STATUS_RUNNING'}:
            break
    else:
        raise ScenarioFailed(f'{bid["fid"]} did not boot in '
                             f'{BOOT_STEP_S * BOOT_STEPS:g} emulated s')
    call('GET', f'{path}/history', expect=200)
    for what in ('status', 'pricing'):
        call('GET', f'/v2/instances/{what}/history', expect=200,
             params={'project': facts.project, 'bid_fid': bid['fid']})
        call('GET', f'/v2/instances/{what}/history', expect=200,
             params={'project': facts.project,
                     'instance_fid': instance_fids[0]})
    page = call('GET', '/v2/spot/bids', expect=200,
                params={'project': facts.project, 'limit': 1})
    if not page['next_cursor']:
        raise ScenarioFailed('a page of one of two bids has no next_cursor')
    call('GET', '/v2/spot/bids', expect=200,
         params={'project': facts.project, 'limit': 1,
                 'next_cursor': page['next_cursor']})
    call('GET', '/v2/spot/bids', expect=200,
         params={'project': facts.project, 'name': 'contract-bid',
                 'status': 'Allocated', 'region': facts.region,
                 'instance_type': facts.instance_type, 'sort_by': 'status',
                 'sort_dir': 'desc'})
    call('GET', '/v2/instances', expect=200,
         params={'project': facts.project, 'bid_fid_in': bid['fid'],
                 'status_in': 'STATUS_RUNNING,STATUS_STARTING',
                 'order_type_in': 'Bid', 'region': facts.region,
                 'instance_type': facts.instance_type,
                 'sort_by': 'instance_status', 'limit': 1})
    # Mithril acts on single instances of reservations only.
    spot = instance_fids[0]
    call('PATCH', '/v2/instances', expect=501,
         body={'instances': [spot], 'status': 'STATUS_PAUSED'})
    call('POST', f'/v2/instances/{spot}/restart', expect=501)
    call('POST', f'/v2/instances/{spot}/refresh-boot-disk', expect=501)
    call('PATCH', path, expect=200,
         body={'limit_price': _dollars(facts.spot_price_cents * 4)})
    call('PATCH', path, expect=200, body={'paused': True})
    target.emulator.control('POST', 'advance', seconds=120)
    call('GET', f'/v2/instances/{instance_fids[0]}/status', expect=200)
    call('PATCH', path, expect=200, body={'paused': False})
    for fid in (bid['fid'], other['fid']):
        call('DELETE', f'/v2/spot/bids/{fid}', expect=204)
    # Cancelling a cancelled bid changes nothing; the spec names no refusal.
    call('DELETE', path, expect=204)
    call('GET', path, expect=200)
    call('GET', f'{path}/history', expect=200)
    call('GET', '/v2/instances', expect=200,
         params={'project': facts.project, 'bid_fid_in': bid['fid']})


def invalid_bid(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """A bid refused for its body (no name): 422, nothing placed."""
    del target
    body = _bid_body(facts, 'unused', '$1.00')
    del body['name']
    call('POST', '/v2/spot/bids', expect=422, body=body, invalid=True)


def malformed_requests(call: Caller, target: ContractTarget,
                       facts: Facts) -> None:
    """Every served operation that requires a body or a query parameter,
    sent without it: 422, the spec's HTTPValidationError."""
    del facts
    assert target.emulator is not None
    for operation in sorted(served_operations(target.emulator, call.contract)):
        if not call.contract.requires_input(operation):
            continue
        path = re.sub(r'\{(\w+)\}', r'\1_contract0unknown', operation.path)
        call(operation.method, path, expect=422, invalid=True)


def one_bid(call: Caller, target: ContractTarget, facts: Facts) -> None:
    """One bid at the auction's minimum price, read and cancelled within
    ONE_BID_MAX_SECONDS; cancelled whatever happens, found by name if its
    creation got no readable answer."""
    del target
    if facts.minimum_price_cents is None:
        raise ScenarioFailed('the auction has no minimum price to bid at')
    name = f'sky-mithril-contract-{secrets.token_hex(4)}'
    started = time.monotonic()
    fids: Set[str] = set()
    try:
        bid = call('POST', '/v2/spot/bids', expect=201,
                   body=_bid_body(facts, name,
                                  _dollars(facts.minimum_price_cents)))
        fids.add(bid['fid'])
        path = f'/v2/spot/bids/{bid["fid"]}'
        call('GET', path, expect=200)
        call('GET', f'{path}/status', expect=200)
        call('GET', f'{path}/history', expect=200)
        call('GET', '/v2/spot/bids', expect=200,
             params={'project': facts.project, 'name': name})
    finally:
        if not fids:
            listed = call('GET', '/v2/spot/bids', expect=200,
                          params={'project': facts.project, 'name': name})
            fids.update(b['fid'] for b in listed['data']
                        if b['status'] != 'Terminated')
        for fid in fids:
            call('DELETE', f'/v2/spot/bids/{fid}', expect=204)
    elapsed = time.monotonic() - started
    if elapsed > ONE_BID_MAX_SECONDS:
        raise ScenarioFailed(f'the bid lived {elapsed:.0f} s, over '
                             f'{ONE_BID_MAX_SECONDS:g} s')


Phase = Callable[[Caller, ContractTarget, Facts], None]
PHASES: List[Tuple[Phase, Needs]] = [
    (account_and_catalog, Needs.READS),
    (existing_resources, Needs.READS),
    (reservation_offers, Needs.READS),
    (refusals, Needs.READS),
    (ssh_keys, Needs.WRITES),
    (api_keys, Needs.WRITES),
    (lifecycle_scripts, Needs.WRITES),
    (volumes, Needs.WRITES),
    (kubernetes, Needs.WRITES),
    (bid_life, Needs.WRITES),
    (cpu_vm, Needs.WRITES),
    (reservation_life, Needs.WRITES),
    (invalid_bid, Needs.WRITES),
    (malformed_requests, Needs.WRITES),
    (one_bid, Needs.ONE_BID),
    (existing_resources, Needs.READS),
]


def _runs_on(needs: Needs, target: ContractTarget) -> bool:
    if needs is Needs.READS:
        return True
    if needs is Needs.WRITES:
        return target.writable
    return target.writable or target.place_bid


def run_scenario(contract: Contract, target: ContractTarget) -> ScenarioRun:
    """Every phase the target allows, in order; a phase that stops is
    recorded and the next ones still run."""
    run = ScenarioRun()
    facts = Facts()
    with requests.Session() as session:
        call = Caller(contract, target, run, session)
        for index, (phase, needs) in enumerate(PHASES):
            if not _runs_on(needs, target):
                continue
            try:
                phase(call, target, facts)
            except Exception as e:  # pylint: disable=broad-except
                run.stopped[f'{index}:{phase.__name__}'] = redact(
                    f'{type(e).__name__}: {e}', target.api_key)
    return run


def served_routes(server: EmulatorServer) -> Set[Tuple[str, str]]:
    """(method, path template) of every /v2 route the emulator serves, as its
    own OpenAPI document lists them (FastAPI's `app.routes` may hold included
    routers unexpanded)."""
    return {(method.upper(), path)
            for path, methods in server.app.openapi()['paths'].items()
            if path.startswith('/v2/') for method in methods}


def served_operations(server: EmulatorServer,
                      contract: Contract) -> Set[Operation]:
    """The spec's operations the emulator has a route for."""
    served = set()
    for method, path in served_routes(server):
        found = contract.operation_of(method, path)
        if found is not None:
            served.add(found[0])
    return served


def _spec_operations() -> List[Any]:
    """One parameter per operation of the spec (a skip if it is unavailable)."""
    try:
        operations = openapi_contract.load_contract().operations
    except openapi_contract.SpecUnavailable as e:
        return [pytest.param(None, id='spec-unavailable', marks=pytest.mark.skip(
            reason=f"Mithril's OpenAPI spec is unavailable: {e}"))]
    return [pytest.param(operation, id=str(operation))
            for operation in operations]


@pytest.fixture(scope='module')
def scenario_run(contract: Contract,
                 contract_target: ContractTarget) -> ScenarioRun:
    return run_scenario(contract, contract_target)


def test_scenario_runs_through(scenario_run: ScenarioRun) -> None:
    assert not scenario_run.stopped, '\n'.join(
        f'{phase}: {why}' for phase, why in scenario_run.stopped.items())


@pytest.mark.parametrize('operation', _spec_operations())
def test_operation_answers_as_specified(operation: Operation,
                                        contract: Contract,
                                        contract_target: ContractTarget,
                                        scenario_run: ScenarioRun) -> None:
    exchanges = scenario_run.exchanges.get(operation)
    if exchanges is None:
        if contract_target.emulator is None:
            pytest.skip('not exercised against this endpoint (a read-only '
                        'run, or nothing there to read)')
        if operation in served_operations(contract_target.emulator, contract):
            pytest.fail(f'the emulator serves {operation} but the scenario '
                        'does not exercise it: add it to a phase')
        pytest.xfail('not served yet')
    problems = [problem for exchange in exchanges for problem in exchange]
    assert not problems, '\n'.join(problems)


# The refusals the spec documents for a served operation that the scenario
# does not provoke, and why.
UNPROVOKED_REFUSALS: Dict[Tuple[Operation, int], str] = {
    (Operation('POST', '/v2/instances/{instance_fid}/restart'), 403):
        'restart "not enabled for the organization" is not emulated: every '
        'organization may restart',
    (Operation('DELETE', '/v2/api-keys/{key_fid}'), 400):
        'the spec does not say what revocation it refuses as "Invalid '
        'request"; the emulator refuses none',
}


def test_every_documented_refusal_is_provoked(
        contract: Contract, contract_target: ContractTarget,
        scenario_run: ScenarioRun) -> None:
    """Each refusal the spec documents for an operation the emulator serves,
    that a request can provoke, is answered somewhere in the scenario, and
    so checked against the spec."""
    if contract_target.emulator is None:
        pytest.skip('the refusals are provoked on the emulator only')
    unprovoked = [
        f'{operation} -> {status}'
        for operation in served_operations(contract_target.emulator, contract)
        for status in contract.refusals_to_provoke(operation)
        if (operation, status) not in UNPROVOKED_REFUSALS
        and status not in scenario_run.statuses.get(operation, set())
    ]
    assert not unprovoked, (
        'documented refusals no phase provokes:\n' + '\n'.join(unprovoked))


def test_emulator_serves_only_spec_operations(
        contract: Contract, contract_target: ContractTarget) -> None:
    if contract_target.emulator is None:
        pytest.skip('checks the emulator only')
    routes = served_routes(contract_target.emulator)
    assert len(routes) >= 27, routes  # what the emulator served at the start
    unknown = {f'{method} {path}' for method, path in routes
               if contract.operation_of(method, path) is None}
    assert not unknown, f'served but not in the spec: {sorted(unknown)}'


def _writes(server: EmulatorServer) -> Dict[str, int]:
    """The requests the emulator got that were not GETs, by route."""
    by_route = server.control('GET', 'stats')['by_route']
    return {route: n for route, n in by_route.items()
            if not route.startswith('GET ')}


def test_another_endpoint_gets_only_reads(contract: Contract) -> None:
    """The scenario as it runs against an endpoint not ours: it sends no
    request that could change anything there."""
    with contract_emulator() as server:
        run = run_scenario(contract, ContractTarget(
            url=server.url, api_key=EMULATOR_API_KEY))
        assert not run.stopped
        assert _writes(server) == {}


def test_another_endpoint_opting_in_gets_one_bid_at_the_minimum_cancelled(
        contract: Contract) -> None:
    with contract_emulator() as server:
        run = run_scenario(contract, ContractTarget(
            url=server.url, api_key=EMULATOR_API_KEY, place_bid=True))
        assert not run.stopped
        assert _writes(server) == {'POST /v2/spot/bids': 1,
                                   'DELETE /v2/spot/bids/{bid_fid}': 1}
        [bid] = server.control('GET', 'state')['bids']
        with server.lock:
            [minimum] = [a.minimum_price for a in server.market.auctions.list()
                         if (a.instance_type.name, a.region) ==
                         (bid['instance_type'], bid['region'])]
    assert bid['status'] == 'Terminated'
    assert bid['limit_price'] == money.format_dollars(minimum)
