"""One place that turns credentials into a client bound to a project, and
that sends a key only to the API of the credentials it came with."""

import dataclasses
import os
from typing import Any, List, Optional

from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.api import models


_CHOOSE_PROJECT = (f'choose one with `{credentials_lib.SETUP_COMMAND} --project '
                   'NAME` (or Mithril\'s `ml setup`)')


@dataclasses.dataclass(frozen=True)
class Connection:
    """An API client plus the project every call is scoped to."""

    client: client_lib.MithrilClient
    credentials: credentials_lib.Credentials
    project_id: str


def _pick_project(projects: List[models.Project],
                  creds: credentials_lib.Credentials) -> str:
    names = ', '.join(f'{p.fid} ({p.name})' for p in projects) or 'none'
    if creds.project_id:
        for project in projects:
            if creds.project_id in (project.fid, project.name):
                return project.fid
        raise credentials_lib.CredentialsError(
            f'Project {creds.project_id!r} (from {creds.project_source}) is not '
            f'visible to this API key; its projects: {names}. Set '
            f'{credentials_lib.ENV_PROJECT} to one of them, or {_CHOOSE_PROJECT}.')
    if len(projects) == 1:
        return projects[0].fid
    raise credentials_lib.CredentialsError(
        f'No Mithril project is configured and the key sees {len(projects)} '
        f'({names}). Set {credentials_lib.ENV_PROJECT} to one of them, or '
        f'{_CHOOSE_PROJECT}.')


def _require_same_api(creds: credentials_lib.Credentials,
                      cluster_api_url: str, cluster_profile: Optional[str]) -> None:
    """Refuses a cluster recorded against another API than the credentials'
    own: the key would go to whatever answers there now (a stopped
    emulator's loopback port is anyone's to bind)."""
    recorded = cluster_api_url.rstrip('/')
    if recorded == creds.api_url:
        return
    if os.environ.get(credentials_lib.ENV_API_URL):
        in_use = f'{credentials_lib.ENV_API_URL} names {creds.api_url}'
    elif creds.profile:
        in_use = f'profile {creds.profile!r} names {creds.api_url}'
    else:
        in_use = f'the credentials in use are for {creds.api_url}'
    if cluster_profile:
        other_fix = (f'give profile {cluster_profile!r} (which the cluster '
                     f'uses) its api_url {recorded} again')
    else:
        other_fix = (f'set {credentials_lib.ENV_PROFILE} to the profile whose '
                     f'api_url is {recorded}')
    raise credentials_lib.CredentialsError(
        f'The cluster was launched against the Mithril API at {recorded}, but '
        f'{in_use}; the API key is sent only to its own API. To manage the '
        f'cluster, set {credentials_lib.ENV_API_URL}={recorded} (with that '
        f'API\'s key in {credentials_lib.ENV_API_KEY}), or {other_fix}.')


def connect(profile: Optional[str] = None,
            project_id: Optional[str] = None,
            api_url: Optional[str] = None,
            **client_options: Any) -> Connection:
    """Resolves credentials (optionally pinned to a cluster's profile and
    project) and checks the project against `GET /v2/projects`. A cluster's
    `api_url` must be the credentials' own (`_require_same_api`).

    Raises CredentialsError or a typed API error with a message naming the fix.
    """
    creds = credentials_lib.load_credentials(profile)
    if api_url:
        _require_same_api(creds, api_url, profile)
    if project_id:
        creds = dataclasses.replace(creds, project_id=project_id)
    client = client_lib.MithrilClient.from_credentials(creds, **client_options)
    if project_id:
        return Connection(client, creds, project_id)
    try:
        projects = client.list_projects()
    except errors.MithrilAPIError:
        client.close()
        raise
    return Connection(client, creds, _pick_project(projects, creds))
