"""The plugin's routes on SkyPilot's API server, all read-only (GET) under
`/plugins/api/mithril/`: JSON for the dashboard, and the dashboard's script
itself (served here, same origin, as the dashboard's CSP allows only
'self'). Each JSON route connects with the API server's own Mithril
credentials and answers what the project holds; the key stays on the
server. A route that cannot reach Mithril answers 503 with `error`, the
reason (as `sky check` would give it)."""

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, TypeVar

import fastapi
from fastapi import responses
from sky.clouds import cloud as sky_cloud

from sky_mithril.account import connection
from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import errors
from sky_mithril.plugin.dashboard import PREFIX
from sky_mithril.plugin.dashboard import views
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import project_snapshot
from sky_mithril.task import settings

_SCRIPT = Path(__file__).with_name('mithril_dashboard.js')

router = fastapi.APIRouter(prefix=PREFIX)
T = TypeVar('T')


class Unreachable(Exception):
    """Mithril cannot be asked (no credentials, the API refused or failed),
    or the user's `plugins.mithril` settings do not parse."""


@contextlib.contextmanager
def _connected() -> Iterator[connection.Connection]:
    try:
        conn = connection.connect(max_retry_seconds=5.0, timeout=10.0)
    except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
        raise Unreachable(str(e)) from e
    try:
        yield conn
    except (errors.MithrilAPIError, settings.MithrilConfigError) as e:
        raise Unreachable(str(e)) from e
    finally:
        conn.client.close()


def _answer(build: Callable[[connection.Connection], T]) -> Any:
    """`build`'s answer, or 503 naming why Mithril could not be asked."""
    try:
        with _connected() as conn:
            return build(conn)
    except Unreachable as e:
        return responses.JSONResponse({'error': str(e)}, status_code=503)


@router.get('/market')
def market() -> Any:
    """Per instance type and region: spot price now, free capacity, the
    7-day history, the user's limit and the suggested one."""
    return _answer(lambda conn: {'market': views.market(
        conn, project_snapshot.current(conn))})


@router.get('/bids')
def bids() -> Any:
    """The project's bids with their clusters, statuses and prices."""
    return _answer(lambda conn: {'bids': views.bids(
        conn, project_snapshot.current(conn), budget_lib.cluster_labels())})


@router.get('/spend')
def spend() -> Any:
    """The worst-case hourly spend against `max_hourly_spend`."""
    return _answer(lambda conn: views.spend(project_snapshot.current(conn)))


@router.get('/volumes')
def volumes() -> Any:
    """The project's volumes and the clusters (or bids) using them."""
    return _answer(lambda conn: {'volumes': views.volumes(
        conn, project_snapshot.current(conn), budget_lib.cluster_labels())})


@router.get('/reservations')
def reservations() -> Any:
    """The project's reservations: window, instances, credits."""
    return _answer(lambda conn: {'reservations': views.reservations(conn)})


@router.get('/infra')
def infra() -> Dict[str, Any]:
    """Whether Mithril is enabled (`sky check`'s own check, and its reason
    when not) and, when it is, one row per region the project can use."""
    from sky_mithril import cloud  # pylint: disable=import-outside-toplevel
    enabled, reason = cloud.Mithril.check_credentials(
        sky_cloud.CloudCapability.COMPUTE)
    if not enabled:
        return {'enabled': False, 'reason': str(reason), 'regions': []}
    answer = _answer(lambda conn: views.infra_regions(
        conn, project_snapshot.current(conn)))
    if isinstance(answer, responses.JSONResponse):
        return {'enabled': False, 'reason': 'the Mithril API failed while '
                'listing regions; try Refresh', 'regions': []}
    return {'enabled': True, 'reason': None, 'regions': answer}


@router.get('/dashboard.js')
def script() -> responses.Response:
    """The dashboard's script: the Infra rows and the Mithril page."""
    return responses.Response(_SCRIPT.read_text(encoding='utf-8'),
                              media_type='text/javascript',
                              headers={'Cache-Control': 'no-cache'})
