"""Mithril credentials: environment first, then a profile of Mithril's config file.

The config file is the one Mithril's own `ml setup` writes
(`$XDG_CONFIG_HOME/mithril/config.yaml`, default `~/.config/mithril/config.yaml`):

    current_profile: default
    profiles:
      default: {api_key: ..., project_id: ..., api_url: https://api.mithril.ai}

`MITHRIL_API_KEY`, `MITHRIL_PROJECT` and `MITHRIL_API_URL` win over the profile;
`MITHRIL_PROFILE` picks the profile. The API key is never part of a repr or message.
"""

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from sky_mithril.api.client import DEFAULT_API_URL

ENV_API_KEY = 'MITHRIL_API_KEY'
ENV_PROJECT = 'MITHRIL_PROJECT'
ENV_API_URL = 'MITHRIL_API_URL'
ENV_PROFILE = 'MITHRIL_PROFILE'

SETUP_HINT = (f'Run `ml setup` (Mithril\'s CLI) or set {ENV_API_KEY} and '
              f'{ENV_PROJECT}.')


class CredentialsError(Exception):
    """Credentials are missing, unreadable or malformed; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a Mithril API call needs. `api_key` is excluded from repr."""

    api_key: str = dataclasses.field(repr=False)
    api_url: str
    project_id: Optional[str]
    profile: Optional[str]
    source: str


def credentials_path() -> Path:
    """The config file path, honouring XDG_CONFIG_HOME like Mithril's CLI does."""
    xdg = os.environ.get('XDG_CONFIG_HOME')
    base = Path(xdg) if xdg else Path.home() / '.config'
    return base / 'mithril' / 'config.yaml'


def display_path(path: Path) -> str:
    """`path` with the home directory written as ~ (for messages and file mounts)."""
    home = str(Path.home())
    text = str(path)
    return '~' + text[len(home):] if text.startswith(home + os.sep) else text


def is_readable_by_others(path: Path) -> bool:
    """True when group or other users may read the credentials file."""
    return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))


def _read_config_file(path: Path) -> Optional[Dict[str, Any]]:
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding='utf-8')
    except OSError as e:
        raise CredentialsError(
            f'Cannot read Mithril config {display_path(path)}: {e.strerror}. '
            f'Fix its permissions (chmod 600) or run `ml setup` again.') from e
    except UnicodeDecodeError as e:
        raise CredentialsError(
            f'Mithril config {display_path(path)} is not UTF-8 text. Delete it '
            'and run `ml setup` again.') from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CredentialsError(
            f'Mithril config {display_path(path)} is not valid YAML '
            f'({type(e).__name__}). Fix or delete it and run `ml setup`.') from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get('profiles', {}), dict):
        raise CredentialsError(
            f'Mithril config {display_path(path)} must be a mapping with a '
            '`profiles:` mapping. Run `ml setup` to rewrite it.')
    return data


def _profile_section(data: Dict[str, Any], profile: str,
                     path: Path) -> Dict[str, Any]:
    profiles = data.get('profiles') or {}
    if profile not in profiles:
        available = ', '.join(sorted(profiles)) or 'none'
        raise CredentialsError(
            f'Mithril profile {profile!r} is not in {display_path(path)} '
            f'(profiles: {available}). Set {ENV_PROFILE} to one of them or '
            f'run `ml setup`.')
    section = profiles[profile]
    if not isinstance(section, dict):
        raise CredentialsError(
            f'Profile {profile!r} in {display_path(path)} must be a mapping '
            'with api_key and project_id. Run `ml setup`.')
    return section


def load_credentials(profile: Optional[str] = None) -> Credentials:
    """Resolves credentials; `profile` pins a profile (as stored in a cluster's config)."""
    path = credentials_path()
    data = _read_config_file(path)
    chosen = profile or os.environ.get(ENV_PROFILE) or (
        data or {}).get('current_profile')
    if chosen is None and data and 'default' in (data.get('profiles') or {}):
        chosen = 'default'
    section: Dict[str, Any] = {}
    if chosen is not None:
        if data is None:
            if profile or os.environ.get(ENV_PROFILE):
                raise CredentialsError(
                    f'Mithril profile {chosen!r} was asked for but '
                    f'{display_path(path)} does not exist. {SETUP_HINT}')
        else:
            section = _profile_section(data, chosen, path)

    api_key = os.environ.get(ENV_API_KEY) or section.get('api_key')
    if not api_key:
        where = (f'profile {chosen!r} of {display_path(path)}'
                 if section else display_path(path))
        raise CredentialsError(f'No Mithril API key found (looked in '
                               f'{ENV_API_KEY} and {where}). {SETUP_HINT}')
    if os.environ.get(ENV_API_KEY):
        source = f'environment variable {ENV_API_KEY}'
    else:
        source = f'profile {chosen!r} in {display_path(path)}'
    project_id = os.environ.get(ENV_PROJECT) or section.get('project_id')
    api_url = (os.environ.get(ENV_API_URL) or section.get('api_url') or
               DEFAULT_API_URL).rstrip('/')
    return Credentials(api_key=str(api_key),
                       api_url=api_url,
                       project_id=str(project_id) if project_id else None,
                       profile=chosen if section else None,
                       source=source)
