"""The emulator's /v2 API over plain HTTP, for integration tests that talk to
it as a client would: any bearer token, JSON in and out."""

from typing import Any, Dict, Optional

import requests

from sky_mithril.emulator.server import EmulatorServer

AUTH = {'Authorization': 'Bearer test-key'}


def api(server: EmulatorServer,
        method: str,
        path: str,
        json: Optional[Any] = None,
        params: Optional[Dict[str, Any]] = None) -> requests.Response:
    """One request to `server`'s `path` (e.g. '/v2/me'), answered as is."""
    return requests.request(method, f'{server.url}{path}', headers=AUTH,
                            json=json, params=params, timeout=10)
