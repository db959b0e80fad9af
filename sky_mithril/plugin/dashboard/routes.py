"""The plugin's routes on SkyPilot's API server, all read-only (GET) under
`/plugins/api/mithril/`: JSON for the dashboard, and the dashboard's script
itself (served here, same origin, as the dashboard's CSP allows only
'self'). Each JSON route connects with the API server's own Mithril
credentials and answers what the project holds; the key stays on the
server. What they read from Mithril is shared by every viewer and process
for a few seconds (`shared_answers`), and read again after any change the
plugin makes. A route that cannot reach Mithril answers 503 with `error`,
the reason (as `sky check` would give it)."""

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

import fastapi
from fastapi import responses
from sky.clouds import cloud as sky_cloud

from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import errors
from sky_mithril.plugin.dashboard import PREFIX
from sky_mithril.plugin.dashboard import shared_answers
from sky_mithril.plugin.dashboard import views
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import project_snapshot
from sky_mithril.task import settings

_SCRIPT = Path(__file__).with_name('mithril_dashboard.js')
_TIMEOUTS: Dict[str, float] = {'max_retry_seconds': 5.0, 'timeout': 10.0}

router = fastapi.APIRouter(prefix=PREFIX)
T = TypeVar('T')


class Unreachable(Exception):
    """Mithril cannot be asked (no credentials, the API refused or failed),
    or the user's `plugins.mithril` settings do not parse."""


def _project_fid() -> str:
    """The fid of the project the server's credentials name, checked with
    `GET /v2/projects` (which also checks the key) once per TTL for every
    viewer and process."""
    creds = credentials_lib.load_credentials()
    named = shared_state.project_scope(creds.api_url, creds.project_id)

    def check() -> str:
        conn = connection.connect(**_TIMEOUTS)
        conn.client.close()
        return conn.project_id

    return shared_answers.shared(f'project/{named}',
                                 shared_answers.TTL_SECONDS, check)


@contextlib.contextmanager
def _connected() -> Iterator[connection.Connection]:
    try:
        conn = connection.connect(project_id=_project_fid(), **_TIMEOUTS)
    except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
        raise Unreachable(str(e)) from e
    try:
        yield conn
    except (errors.MithrilAPIError, settings.MithrilConfigError) as e:
        raise Unreachable(str(e)) from e
    finally:
        conn.client.close()


def _answer(build: Callable[[connection.Connection], T],
            shared_as: Optional[str] = None) -> Any:
    """`build`'s answer, or 503 naming why Mithril could not be asked. With
    `shared_as` (the route's name), one answer serves every viewer and
    process for a TTL, and none from before a change the plugin made."""
    try:
        with _connected() as conn:
            if shared_as is None:
                return build(conn)
            project = project_snapshot.scope_of(conn)
            return shared_answers.shared(
                f'{project}/{shared_as}', shared_answers.TTL_SECONDS,
                lambda: build(conn), project)
    except Unreachable as e:
        return responses.JSONResponse({'error': str(e)}, status_code=503)


@router.get('/market')
def market() -> Any:
    """Per instance type and region: spot price now, free capacity, the
    7-day history, the user's limit and the suggested one."""
    return _answer(lambda conn: {'market': views.market(
        conn, project_snapshot.current(conn))}, 'market')


@router.get('/bids')
def bids() -> Any:
    """The project's bids with their clusters, statuses and prices."""
    return _answer(lambda conn: {'bids': views.bids(
        conn, project_snapshot.current(conn), budget_lib.cluster_labels())},
                   'bids')


@router.get('/spend')
def spend() -> Any:
    """The worst-case hourly spend against `max_hourly_spend`. Not shared
    itself: it reads Mithril only through the snapshot, shared already, and
    a budget set in the config shows at once."""
    return _answer(lambda conn: views.spend(project_snapshot.current(conn)))


@router.get('/volumes')
def volumes() -> Any:
    """The project's volumes and the clusters (or bids) using them."""
    return _answer(lambda conn: {'volumes': views.volumes(
        conn, project_snapshot.current(conn), budget_lib.cluster_labels())},
                   'volumes')


@router.get('/reservations')
def reservations() -> Any:
    """The project's reservations: window, instances, credits."""
    return _answer(lambda conn: {'reservations': views.reservations(conn)},
                   'reservations')


@router.get('/infra')
def infra() -> Dict[str, Any]:
    """Whether Mithril is enabled and, when it is, one row per region the
    project can use; when it is not, `sky check`'s own reason."""
    answer = _answer(lambda conn: views.infra_regions(
        conn, project_snapshot.current(conn)), 'infra')
    if not isinstance(answer, responses.JSONResponse):
        return {'enabled': True, 'reason': None, 'regions': answer}
    from sky_mithril import cloud  # pylint: disable=import-outside-toplevel
    enabled, reason = cloud.Mithril.check_credentials(
        sky_cloud.CloudCapability.COMPUTE)
    if not enabled:
        return {'enabled': False, 'reason': str(reason), 'regions': []}
    return {'enabled': False, 'reason': 'the Mithril API failed while '
            'listing regions; try Refresh', 'regions': []}


@router.get('/dashboard.js')
def script() -> responses.Response:
    """The dashboard's script: the Infra rows and the Mithril page."""
    return responses.Response(_SCRIPT.read_text(encoding='utf-8'),
                              media_type='text/javascript',
                              headers={'Cache-Control': 'no-cache'})
