"""One place that turns credentials into a client bound to a project."""

import dataclasses
from typing import List, Optional

from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.api import models


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
            f'Project {creds.project_id!r} (from {creds.source}) is not '
            f'visible to this API key; its projects: {names}. Set '
            f'{credentials_lib.ENV_PROJECT} to one of them or run `ml setup`.')
    if len(projects) == 1:
        return projects[0].fid
    raise credentials_lib.CredentialsError(
        f'No Mithril project is configured and the key sees {len(projects)} '
        f'({names}). Set {credentials_lib.ENV_PROJECT} or add project_id to '
        'your profile with `ml setup`.')


def connect(profile: Optional[str] = None,
            project_id: Optional[str] = None,
            api_url: Optional[str] = None,
            **client_options: float) -> Connection:
    """Resolves credentials (optionally pinned to a cluster's profile, project
    and API URL) and checks the project against `GET /v2/projects`.

    Raises CredentialsError or a typed API error with a message naming the fix.
    """
    creds = credentials_lib.load_credentials(profile)
    if project_id or api_url:
        creds = dataclasses.replace(creds,
                                    project_id=project_id or creds.project_id,
                                    api_url=api_url or creds.api_url)
    client = client_lib.MithrilClient.from_credentials(creds, **client_options)
    if project_id:
        return Connection(client, creds, project_id)
    try:
        projects = client.list_projects()
    except errors.MithrilAPIError:
        client.close()
        raise
    return Connection(client, creds, _pick_project(projects, creds))
