"""Mithril credentials: environment first, then a profile of Mithril's config file.

The config file is the one Mithril's own `ml setup` writes
(`$XDG_CONFIG_HOME/mithril/config.yaml`, default `~/.config/mithril/config.yaml`):

    current_profile: default
    profiles:
      default: {api_key: ..., project_id: ..., api_url: https://api.mithril.ai}

`MITHRIL_API_KEY`, `MITHRIL_PROJECT` and `MITHRIL_API_URL` win over the profile;
`MITHRIL_PROFILE` picks the profile. `sky-mithril setup --api-key` writes a
profile of that file (`save_profile`), so `ml` is not needed. The API key is
never part of a repr or message.
"""

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from sky_mithril import files
from sky_mithril.api.client import DEFAULT_API_URL

ENV_API_KEY = 'MITHRIL_API_KEY'
ENV_PROJECT = 'MITHRIL_PROJECT'
ENV_API_URL = 'MITHRIL_API_URL'
ENV_PROFILE = 'MITHRIL_PROFILE'

# What fixes missing or broken credentials: our own command first.
SETUP_COMMAND = 'sky-mithril setup --api-key'
RERUN_SETUP = f'run `{SETUP_COMMAND}` (or Mithril\'s `ml setup`)'
SETUP_HINT = (f'Run `{SETUP_COMMAND}` (or Mithril\'s `ml setup`), or set '
              f'{ENV_API_KEY} and {ENV_PROJECT}.')
DEFAULT_PROFILE = 'default'


class CredentialsError(Exception):
    """Credentials are missing, unreadable or malformed; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a Mithril API call needs. `api_key` is excluded from repr.
    `source` says where the key came from, `project_source` where the
    project did (None when none is configured)."""

    api_key: str = dataclasses.field(repr=False)
    api_url: str
    project_id: Optional[str]
    profile: Optional[str]
    source: str
    project_source: Optional[str] = None


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


def active_profile_name() -> str:
    """The profile a new key is stored under: ${ENV_PROFILE}, else the config
    file's current profile, else `default`."""
    if os.environ.get(ENV_PROFILE):
        return os.environ[ENV_PROFILE]
    data = _read_config_file(credentials_path()) or {}
    return str(data.get('current_profile') or DEFAULT_PROFILE)


def check_api_url(api_url: str, where: str) -> None:
    """Refuses an API URL without a scheme (`127.0.0.1:8765`), saying what
    to write; `where` names its source (`MITHRIL_API_URL`, a profile)."""
    if '://' not in api_url:
        raise CredentialsError(
            f'{where} is {api_url!r}, which lacks a scheme: write '
            f'http://{api_url} for a server on this machine (the emulator), '
            f'or https://{api_url}.')


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
            f'Fix its permissions (chmod 600) or {RERUN_SETUP}.') from e
    except UnicodeDecodeError as e:
        raise CredentialsError(
            f'Mithril config {display_path(path)} is not UTF-8 text. Delete it '
            f'and {RERUN_SETUP}.') from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CredentialsError(
            f'Mithril config {display_path(path)} is not valid YAML '
            f'({type(e).__name__}). Fix or delete it and {RERUN_SETUP}.') from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get('profiles', {}), dict):
        raise CredentialsError(
            f'Mithril config {display_path(path)} must be a mapping with a '
            f'`profiles:` mapping. Fix or delete it and {RERUN_SETUP}.')
    return data


def _profile_section(data: Dict[str, Any], profile: str,
                     path: Path) -> Dict[str, Any]:
    profiles = data.get('profiles') or {}
    if profile not in profiles:
        available = ', '.join(sorted(profiles)) or 'none'
        raise CredentialsError(
            f'Mithril profile {profile!r} is not in {display_path(path)} '
            f'(profiles: {available}). Set {ENV_PROFILE} to one of them or '
            f'{RERUN_SETUP}.')
    section = profiles[profile]
    if not isinstance(section, dict):
        raise CredentialsError(
            f'Profile {profile!r} in {display_path(path)} must be a mapping '
            f'with api_key and project_id. Fix it or {RERUN_SETUP}.')
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
    in_profile = f'profile {chosen!r} in {display_path(path)}'
    source = _source(ENV_API_KEY, in_profile)
    project_id = os.environ.get(ENV_PROJECT) or section.get('project_id')
    api_url = str(os.environ.get(ENV_API_URL) or section.get('api_url') or
                  DEFAULT_API_URL).rstrip('/')
    check_api_url(api_url, ENV_API_URL if os.environ.get(ENV_API_URL) else
                  f'The api_url of {in_profile}')
    return Credentials(api_key=str(api_key),
                       api_url=api_url,
                       project_id=str(project_id) if project_id else None,
                       profile=chosen if section else None,
                       source=source,
                       project_source=(_source(ENV_PROJECT, in_profile)
                                       if project_id else None))


def _source(variable: str, in_profile: str) -> str:
    """Where a setting came from: the environment variable, else the profile."""
    return (f'environment variable {variable}' if os.environ.get(variable)
            else in_profile)


def save_profile(profile: str, api_key: str, project_id: str,
                 api_url: str) -> Path:
    """Writes `profile` into the config file in `ml setup`'s format and makes
    it the current one; every other profile and setting is kept. The file is
    mode 600 in a 700 folder. Refuses (CredentialsError) to rewrite a file
    it cannot read as a config."""
    path = credentials_path()
    data = _read_config_file(path) or {}
    profiles = dict(data.get('profiles') or {})
    profiles[profile] = {'api_key': api_key, 'project_id': project_id,
                         'api_url': api_url}
    data['profiles'] = profiles
    data['current_profile'] = profile
    files.write_private(path, yaml.safe_dump(data, sort_keys=False))
    return path
