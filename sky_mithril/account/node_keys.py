"""The API key a Mithril cluster's nodes hold: one per cluster, expiring, and
revoked with the cluster. The account's own key never leaves the API server.

Mithril has no scoped keys: a node's key can do whatever the account can, so
what limits it is where it goes and how long it lives.

* Minted for one cluster (`issue`), under the cluster's own profile, when
  SkyPilot writes the cluster's config for a launch, a relaunch or `sky
  start`, into a file of that cluster's alone (`credentials_path`, mode 600
  in directories of mode 700). Only that cluster's template mounts it on its
  nodes, as `~/.config/mithril/config.yaml`, where the skylet's autostop and
  autodown find it.
* Named after the cluster (`key_name`), so every key of a cluster is found
  again by name, on the API server and on the nodes alike.
* Expiring LIFETIME after it was minted. A launch or start within REUSE_FOR
  of the mint reuses the key (a `sky launch --fast` then finds the cluster's
  config unchanged); any later one mints a new key, so the nodes leave every
  launch and start with a key valid for at least LIFETIME - REUSE_FOR. The
  key it replaces stays valid until `sky down` or its own expiry: it is on
  the same nodes, and revoking it before they have the new one would leave
  them without a working key.
* Revoked with every other key of its name once the cluster's bids are
  cancelled (`revoke_all`): by `sky down` on the API server, and by the
  node's autodown with the node's own key, last. The node is often taken
  before it gets there, so the API server also revokes them when it finds
  the cluster gone (`revoke_minted_before`: the keys minted before its last
  bid ended). A revocation that fails never stops a `sky down` or a status
  refresh: it is reported, and the expiry bounds the key.

Why LIFETIME is 30 days: revocation ends a key with its cluster; the expiry
only bounds keys whose revocation failed or whose cluster ended outside
SkyPilot (a bid cancelled in Mithril's console, a lost `~/.sky`). It also
bounds a cluster that stays up without a launch or start: after it, the
nodes' autostop and autodown fail, so a cluster meant to run longer is
renewed by `sky launch -c NAME` (no task needed) or `sky stop` and `sky start`.
Keys are minted with the server's clock (`MithrilClient.server_now`).
"""

import dataclasses
import datetime
import hashlib
import os
import shutil
from pathlib import Path
from typing import List, Optional, Set

import yaml

from sky import sky_logging

from sky_mithril import files
from sky_mithril.account import connection
from sky_mithril.api import errors
from sky_mithril.api import models

logger = sky_logging.init_logger('sky.sky_mithril.node_keys')

LIFETIME = datetime.timedelta(days=30)
REUSE_FOR = datetime.timedelta(days=1)
NAME_PREFIX = 'sky-'
# Mithril refuses names of 60 characters or more.
MAX_NAME_LENGTH = 59
_DIGEST_LENGTH = 8
_READABLE_LENGTH = MAX_NAME_LENGTH - len(NAME_PREFIX) - 1 - _DIGEST_LENGTH
DEFAULT_PROFILE = 'default'
_CREDENTIALS_FILE = 'node-credentials.yaml'
_RECORD_FILE = 'node-key.yaml'


def key_name(project_id: str, cluster_name_on_cloud: str) -> str:
    """`sky-<cluster>-<digest>`, under 60 characters whatever the name. One
    listing holds the keys of all the user's projects, so the digest covers
    the project with the whole name (two long names may share their start)."""
    digest = hashlib.sha256(
        f'{project_id}\0{cluster_name_on_cloud}'.encode()).hexdigest()
    readable = cluster_name_on_cloud[:_READABLE_LENGTH].rstrip('-_.')
    return f'{NAME_PREFIX}{readable}-{digest[:_DIGEST_LENGTH]}'


def cluster_dir(cluster_name_on_cloud: str) -> Path:
    """This machine's folder for the cluster's node key."""
    return (Path.home() / '.sky' / 'mithril' / 'clusters' /
            cluster_name_on_cloud)


def credentials_path(cluster_name_on_cloud: str) -> Path:
    """The file the cluster's nodes get as `~/.config/mithril/config.yaml`."""
    return cluster_dir(cluster_name_on_cloud) / _CREDENTIALS_FILE


@dataclasses.dataclass(frozen=True)
class _Record:
    """Which key the cluster's credentials file holds, and for which
    account (no secret)."""

    fid: str
    name: str
    created_at: datetime.datetime
    expires_at: datetime.datetime
    api_url: str
    project_id: str
    profile: str


def _record_path(cluster_name_on_cloud: str) -> Path:
    return cluster_dir(cluster_name_on_cloud) / _RECORD_FILE


def _read_record(cluster_name_on_cloud: str) -> Optional[_Record]:
    try:
        data = yaml.safe_load(_record_path(cluster_name_on_cloud).read_text(
            encoding='utf-8'))
        for field in ('created_at', 'expires_at'):
            data[field] = datetime.datetime.fromisoformat(data[field])
        return _Record(**data)
    except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError):
        return None


def _private_dirs(cluster_name_on_cloud: str) -> Path:
    """The cluster's folder, it and its parent mode 700."""
    folder = cluster_dir(cluster_name_on_cloud)
    for path in (folder.parent, folder):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    return folder


def _write(cluster_name_on_cloud: str, key: models.CreatedApiKey,
           conn: connection.Connection, profile: str) -> None:
    """The credentials file (`ml setup`'s format, one profile) and the
    record beside it, each replaced in one rename, mode 600."""
    _private_dirs(cluster_name_on_cloud)
    section = {'api_key': key.secret, 'api_url': conn.credentials.api_url,
               'project_id': conn.project_id}
    text = (f'# The Mithril API key of cluster {cluster_name_on_cloud}\'s '
            f'nodes, expiring {key.expires_at.isoformat()}; `sky down` '
            'revokes it.\n' + yaml.safe_dump(
                {'current_profile': profile, 'profiles': {profile: section}}))
    files.write_atomically(credentials_path(cluster_name_on_cloud), text,
                           mode=0o600)
    record = _Record(fid=key.fid, name=key.name, created_at=key.created_at,
                     expires_at=key.expires_at,
                     api_url=conn.credentials.api_url,
                     project_id=conn.project_id, profile=profile)
    fields = dataclasses.asdict(record)
    for field in ('created_at', 'expires_at'):
        fields[field] = fields[field].isoformat()
    files.write_atomically(_record_path(cluster_name_on_cloud),
                           yaml.safe_dump(fields), mode=0o600)


def _live_keys_named(conn: connection.Connection,
                     name: str) -> List[models.ApiKey]:
    """The keys called `name` that are live by the server's clock, oldest first."""
    listed = conn.client.list_api_keys()
    now = conn.client.server_now()
    return sorted((k for k in listed if k.name == name and k.is_live(now)),
                  key=lambda k: k.created_at)


def _reusable(record: Optional[_Record], live: List[models.ApiKey],
              conn: connection.Connection, profile: str,
              now: datetime.datetime) -> bool:
    """Whether the cluster's file holds a live key of this account that was
    minted less than REUSE_FOR ago."""
    return (record is not None and
            any(k.fid == record.fid for k in live) and
            (record.api_url, record.project_id, record.profile) ==
            (conn.credentials.api_url, conn.project_id, profile) and
            now - record.created_at < REUSE_FOR)


def issue(conn: connection.Connection, cluster_name_on_cloud: str,
          profile: Optional[str]) -> Path:
    """The cluster's credentials file, holding a key of the cluster's that
    is live for at least LIFETIME - REUSE_FOR from now: the one it holds,
    or a new one (module docstring). `conn` is bound to the cluster's
    account, `profile` the cluster's profile (None: DEFAULT_PROFILE).

    A key minted here and not written is revoked before the error leaves.
    """
    profile = profile or DEFAULT_PROFILE
    name = key_name(conn.project_id, cluster_name_on_cloud)
    live = _live_keys_named(conn, name)
    now = conn.client.server_now()
    path = credentials_path(cluster_name_on_cloud)
    if path.is_file() and _reusable(_read_record(cluster_name_on_cloud),
                                    live, conn, profile, now):
        return path
    try:
        key = conn.client.create_api_key(name, now + LIFETIME)
    except BaseException as e:
        # Unless Mithril refused it, the key may exist with nobody holding
        # its secret (an answer lost, an interrupt mid-request).
        if (not isinstance(e, errors.MithrilAPIError) or
                isinstance(e, errors.AmbiguousResponseError)):
            _revoke_unheld(conn, name, {k.fid for k in live})
        raise
    try:
        _write(cluster_name_on_cloud, key, conn, profile)
    except BaseException:
        _revoke(conn, [key])
        raise
    logger.debug(f'Minted API key {key.fid} ({name}) for the nodes of '
                 f'{cluster_name_on_cloud}, expiring '
                 f'{key.expires_at.isoformat()}.')
    return path


def _revoke_unheld(conn: connection.Connection, name: str,
                   held: Set[str]) -> None:
    """After a mint whose outcome is unknown: the keys called `name` that
    are not in `held` were minted without anyone getting their secret."""
    try:
        unheld = [k for k in _live_keys_named(conn, name)
                  if k.fid not in held]
    except errors.MithrilAPIError as e:
        logger.warning(f'Could not list the Mithril API keys named {name!r} '
                       f'after a lost answer: {e} `sky down` revokes them.')
        return
    _revoke(conn, unheld)


def _own_last(keys: List[models.ApiKey],
              secret: str) -> List[models.ApiKey]:
    """`keys` with the one whose snippet starts `secret` (the caller's own
    key, on a node) moved last: once it is revoked nothing else can be."""
    def is_own(key: models.ApiKey) -> bool:
        shown = (key.snippet or '').rstrip('.')
        return bool(shown) and secret.startswith(shown)
    return ([k for k in keys if not is_own(k)] +
            [k for k in keys if is_own(k)])


def _revoke(conn: connection.Connection, keys: List[models.ApiKey]) -> None:
    """Revokes `keys`, the caller's own last, reporting each that fails;
    never raises for an API error."""
    for key in _own_last(keys, conn.credentials.api_key):
        try:
            conn.client.revoke_api_key(key.fid)
        except errors.NotFoundError:
            continue
        except errors.MithrilAPIError as e:
            logger.warning(
                f'Could not revoke Mithril API key {key.fid} ({key.name}): '
                f'{e} It stays valid until {key.expires_at.isoformat()}; '
                f'revoke it with `DELETE /v2/api-keys/{key.fid}` or in '
                'Mithril\'s console.')


def revoke_all(conn: connection.Connection,
               cluster_name_on_cloud: str) -> None:
    """Revokes every live key of the cluster's name and forgets this
    machine's copy (module docstring). A failure is reported, never raised:
    it must not stop a `sky down`."""
    name = key_name(conn.project_id, cluster_name_on_cloud)
    try:
        live = _live_keys_named(conn, name)
    except errors.MithrilAPIError as e:
        logger.warning(f'Could not list the Mithril API keys named {name!r} '
                       f'to revoke them: {e} Each expires at most '
                       f'{LIFETIME.days} days after it was minted.')
    else:
        _revoke(conn, live)
    shutil.rmtree(cluster_dir(cluster_name_on_cloud), ignore_errors=True)


def revoke_minted_before(conn: connection.Connection,
                         cluster_name_on_cloud: str,
                         ended_at: datetime.datetime) -> None:
    """Revokes the cluster's live keys minted before `ended_at`, when its
    last bid ended (the server's clock), and forgets this machine's copy if
    it holds one of them: the cluster ended outside `sky down` (autodown,
    the console). A key minted later is a launch's of the name under way,
    and is kept. A failure is reported, never raised."""
    name = key_name(conn.project_id, cluster_name_on_cloud)
    try:
        ended = [k for k in _live_keys_named(conn, name)
                 if k.created_at < ended_at]
    except errors.MithrilAPIError as e:
        logger.warning(f'Could not list the Mithril API keys named {name!r} '
                       f'to revoke them: {e} Each expires at most '
                       f'{LIFETIME.days} days after it was minted.')
        return
    _revoke(conn, ended)
    record = _read_record(cluster_name_on_cloud)
    if record is not None and record.created_at < ended_at:
        shutil.rmtree(cluster_dir(cluster_name_on_cloud), ignore_errors=True)
    if ended:
        logger.info(f'Revoked the API keys of {cluster_name_on_cloud}\'s '
                    f'nodes ({", ".join(k.fid for k in ended)}): its bid '
                    f'ended at {ended_at.isoformat()}.')
