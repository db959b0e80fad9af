"""A refused connection (nothing listens at the API URL) is named as such;
the interactive commands' clients (`retry_refused=False`) fail at once
instead of retrying it in silence, the plugin's runtime keeps retrying."""

from typing import Iterator, List

import pytest
import requests
import responses
from urllib3.exceptions import NewConnectionError

from sky_mithril.api import errors
from sky_mithril.api.client import MithrilClient

API_URL = 'https://api.mithril.test'


def refused() -> requests.exceptions.ConnectionError:
    """What requests raises when the port is closed."""
    cause = NewConnectionError(None, 'Failed to establish a new connection: '
                                     '[Errno 111] Connection refused')
    cause.__cause__ = ConnectionRefusedError(111, 'Connection refused')
    return requests.exceptions.ConnectionError(cause)


@pytest.fixture
def mocked_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f'{API_URL}/v2/me', body=refused())
        yield mock


def _client(retry_refused: bool, waits: List[float]) -> MithrilClient:
    return MithrilClient('mk_key', API_URL, max_retry_seconds=30.0,
                         retry_refused=retry_refused, sleep=waits.append)


def test_an_interactive_client_fails_at_once(mocked_api):
    waits: List[float] = []
    client = _client(False, waits)
    with pytest.raises(errors.ConnectionFailedError) as failed:
        client.me()
    assert client.request_count == 1 and waits == []
    assert str(failed.value).startswith(
        f'Cannot reach the Mithril API at {API_URL}: nothing accepts connections '
        'there (')
    assert 'Check MITHRIL_API_URL or the api_url of your Mithril profile' in str(failed.value)


def test_the_runtime_client_keeps_retrying(mocked_api):
    waits: List[float] = []
    client = _client(True, waits)
    with pytest.raises(errors.ConnectionFailedError) as failed:
        client.me()
    assert client.request_count > 1 and waits
    assert 'nothing accepts connections there' in str(failed.value)
    assert 'Gave up after' in str(failed.value)
