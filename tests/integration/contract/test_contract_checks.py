"""The contract checks themselves (`tests.helpers.openapi_contract`): they
catch a deliberately broken answer of the emulator and a broken request,
read the spec's oddities as their named exceptions say, and a spec that
cannot be downloaded is a skip with its reason."""

import json
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest
import requests

from tests.helpers import openapi_contract
from tests.helpers.contract_target import EMULATOR_API_KEY, contract_emulator
from tests.helpers.openapi_contract import Contract, Operation, Request

GET_BID = Operation('GET', '/v2/spot/bids/{bid_fid}')
AUTH = {'Authorization': 'Bearer a-key'}
URL = 'http://127.0.0.1:1'


@pytest.fixture(scope='module')
def bid_answer() -> Iterator[Dict[str, Any]]:
    """A bid as the emulator answers GET /v2/spot/bids/{fid}."""
    with contract_emulator() as server:
        headers = {'Authorization': f'Bearer {EMULATOR_API_KEY}'}
        auction = requests.get(f'{server.url}/v2/spot/availability',
                               headers=headers, timeout=30).json()[0]
        placed = requests.post(
            f'{server.url}/v2/spot/bids', headers=headers, timeout=30,
            json={'project': 'proj_emulator', 'region': auction['region'],
                  'instance_type': auction['instance_type'],
                  'limit_price': '$9.00', 'instance_quantity': 1,
                  'name': 'checked', 'launch_specification': {
                      'volumes': [], 'ssh_keys': []}})
        assert placed.status_code == 201, placed.text
        yield requests.get(f'{server.url}/v2/spot/bids/{placed.json()["fid"]}',
                           headers=headers, timeout=30).json()


def _answer(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_the_emulators_answer_as_it_is_keeps_the_contract(
        contract: Contract, bid_answer: Dict[str, Any]) -> None:
    assert contract.response_problems(GET_BID, 200, _answer(bid_answer)) == []


def _without_fid(bid: Dict[str, Any]) -> None:
    del bid['fid']


def _price_as_number(bid: Dict[str, Any]) -> None:
    bid['limit_price'] = 9.0


def _unknown_status(bid: Dict[str, Any]) -> None:
    bid['status'] = 'Winning'


def _unknown_field(bid: Dict[str, Any]) -> None:
    bid['colour'] = 'blue'


def _naive_time(bid: Dict[str, Any]) -> None:
    bid['created_at'] = '2024-01-01T00:00:00'


def _null_where_not_nullable(bid: Dict[str, Any]) -> None:
    bid['instance_type'] = None


def _nested_unknown_field(bid: Dict[str, Any]) -> None:
    bid['launch_specification']['colour'] = 'blue'


@pytest.mark.parametrize('breakage,expected', [
    (_without_fid, "'fid' is a required property"),
    (_price_as_number, "['limit_price']: 9.0 is not of type 'string'"),
    (_unknown_status, "['status']: 'Winning' is not one of"),
    (_unknown_field, "('colour' was unexpected)"),
    (_naive_time, "['created_at']: '2024-01-01T00:00:00' is not a 'datetime'"),
    (_null_where_not_nullable, "['instance_type']: None is not of type"),
    (_nested_unknown_field,
     "['launch_specification']: Additional properties are not allowed"),
])
def test_a_broken_answer_is_caught(contract: Contract,
                                   bid_answer: Dict[str, Any],
                                   breakage: Callable[[Dict[str, Any]], None],
                                   expected: str) -> None:
    broken = json.loads(json.dumps(bid_answer))
    breakage(broken)
    problems = contract.response_problems(GET_BID, 200, _answer(broken))
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_null_where_the_spec_says_nullable_is_fine(
        contract: Contract, bid_answer: Dict[str, Any]) -> None:
    assert contract.response_problems(
        GET_BID, 200, _answer({**bid_answer, 'region': None,
                               'deactivated_at': None})) == []


def test_an_undocumented_status_or_body_is_caught(contract: Contract) -> None:
    assert contract.response_problems(GET_BID, 500, b'{}') == [
        f'{GET_BID} -> 500: the spec documents only 200, 422']
    cancel = Operation('DELETE', '/v2/spot/bids/{bid_fid}')
    assert contract.response_problems(cancel, 204, b'') == []
    assert 'no body' in contract.response_problems(cancel, 204, b'{}')[0]
    # NOT_FOUND_UNDOCUMENTED, in its shape only.
    assert contract.response_problems(GET_BID, 404, b'{"detail": "no"}') == []
    assert contract.response_problems(GET_BID, 404, b'{"detail": 1}') != []
    assert contract.response_problems(Operation('GET', '/v2/me'), 404,
                                      b'{"detail": "no"}') != []


def test_a_refusal_documented_by_description_is_read_as_its_detail(
        contract: Contract) -> None:
    # ERROR_BODY_DESCRIBED: FastAPI's `{"detail": str}` ...
    revoke = Operation('DELETE', '/v2/api-keys/{key_fid}')
    assert contract.response_problems(revoke, 401, b'{"detail": "no"}') == []
    assert contract.response_problems(revoke, 404, b'') == []
    assert contract.response_problems(revoke, 404, b'{"error": "no"}') != []
    # ... and a boot-disk refresh's 422 with the `reason` it describes.
    refresh = Operation('POST',
                        '/v2/instances/{instance_fid}/refresh-boot-disk')
    assert contract.response_problems(
        refresh, 422, b'{"detail": "no", "reason": "INSTANCE_RUNNING"}') == []
    assert contract.response_problems(refresh, 422, b'{"detail": "no"}') != []
    assert contract.response_problems(
        refresh, 422, b'{"detail": "no", "reason": "TOO_HOT"}') != []
    # A validation error keeps the schema the spec gives it.
    assert contract.response_problems(
        Operation('POST', '/v2/spot/bids'), 422, b'{"detail": "no"}') != []


def test_the_refusals_a_request_can_provoke(contract: Contract) -> None:
    assert contract.refusals(Operation('GET', '/v2/spot/bids/{bid_fid}')) == [
        422]
    # Any bid fid is a well-formed request: only a wrong fid's 404.
    assert contract.refusals_to_provoke(
        Operation('GET', '/v2/spot/bids/{bid_fid}')) == []
    assert contract.refusals_to_provoke(Operation('GET', '/v2/ssh-keys')) == [
        422]
    assert contract.refusals_to_provoke(Operation(
        'POST', '/v2/instances/{instance_fid}/refresh-boot-disk')) == [
            404, 409, 422, 501]


def test_a_broken_request_is_caught(contract: Contract) -> None:
    body = {'project': 'proj_1', 'region': 'r', 'instance_type': 'it_1',
            'limit_price': '$1.00', 'instance_quantity': 1,
            'colour': 'blue', 'launch_specification': {'ssh_keys': []}}
    problems = contract.request_problems(
        Request('POST', f'{URL}/v2/spot/bids', _answer(body), AUTH))
    assert sorted(problems) == sorted([
        "POST /v2/spot/bids body: 'name' is a required property",
        "POST /v2/spot/bids body: Additional properties are not allowed "
        "('colour' was unexpected)",
        "POST /v2/spot/bids body['launch_specification']: 'volumes' is a "
        "required property",
    ])


def test_a_request_breaking_its_parameters_is_caught(
        contract: Contract) -> None:
    def problems(url: str, headers: Dict[str, str] = AUTH) -> list:
        return contract.request_problems(Request('GET', f'{URL}{url}',
                                                 headers=headers))

    assert problems('/v2/ssh-keys') == [
        'GET /v2/ssh-keys: query parameter project is required but not sent']
    assert problems('/v2/ssh-keys?project=p&colour=blue') == [
        'GET /v2/ssh-keys: query parameter colour is not in the spec']
    assert problems('/v2/instances?project=p&status_in=STATUS_RUNNING'
                    '&status_in=STATUS_SCHEDULED,STATUS_NEW&limit=1') == [
        "GET /v2/instances query status_in: 'STATUS_SCHEDULED' is not one of "
        + repr(['STATUS_NEW', 'STATUS_CONFIRMED', 'STATUS_INITIALIZING',
                'STATUS_STARTING', 'STATUS_RUNNING', 'STATUS_STOPPING',
                'STATUS_TERMINATED', 'STATUS_RELOCATING', 'STATUS_PREEMPTING',
                'STATUS_PREEMPTED', 'STATUS_REPLACED', 'STATUS_PAUSED',
                'STATUS_ERROR'])]
    assert problems('/v2/me', headers={}) == [
        "GET /v2/me: no bearer token (the spec's MithrilAPIKey scheme)"]
    assert problems('/v2/teapot') == ['GET /v2/teapot: no such operation in '
                                      'the spec']


def test_literal_paths_win_over_templates(contract: Contract) -> None:
    assert contract.operation_of('GET', '/v2/instances/status/history') == (
        Operation('GET', '/v2/instances/status/history'), {})
    assert contract.operation_of('GET', '/v2/instances/inst_1/status') == (
        Operation('GET', '/v2/instances/{instance_fid}/status'),
        {'instance_fid': 'inst_1'})


def test_every_exception_is_named_and_explained() -> None:
    names = [e.name for e in openapi_contract.SPEC_EXCEPTIONS]
    assert len(set(names)) == len(names)
    assert all(e.why for e in openapi_contract.SPEC_EXCEPTIONS)


def test_a_spec_that_cannot_be_downloaded_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def pip_fails(args: list, **kwargs: Any) -> subprocess.CompletedProcess:
        del kwargs
        return subprocess.CompletedProcess(
            args, 1, '', 'ERROR: No matching distribution found for '
            f'{openapi_contract.SPEC_WHEEL}\n')

    monkeypatch.setattr(openapi_contract.subprocess, 'run', pip_fails)
    with pytest.raises(openapi_contract.SpecUnavailable,
                       match='No matching distribution found'):
        openapi_contract.download_wheel(tmp_path)
