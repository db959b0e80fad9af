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
  key it replaces stays valid until `sky down`, its own expiry or a renewal
  that reached every node: it is on the same nodes, and revoking it before
  they have the new one would leave them without a working key. A launch
  can fail before its file mounts reach the nodes, which then still hold
  the key it replaced, so the record keeps that key's expiry (`renew_by`)
  as the one to renew by until a renewal has reached every node.
* Renewed while the cluster stays up (`renew_if_due`): at a status refresh
  within RENEW_WITHIN of the earliest expiry its nodes may depend on, the API server that minted it mints a
  new key, has it put on every node (the caller's `deliver`: SkyPilot's SSH,
  `provision.node_key_renewal`), and only then revokes the older keys. Each
  node's skylet warns in its log once its key is within WARN_WITHIN of its
  expiry or no longer works (`watch_expiry`).
* Revoked with every other key of its name once the cluster's bids are
  cancelled (`revoke_all`): by `sky down` on the API server, and by the
  node's autodown with the node's own key, last. The node is often taken
  before it gets there, so the API server also revokes them when it finds
  the cluster gone (`revoke_minted_before`: the keys minted before its last
  bid ended). A revocation that fails never stops a `sky down` or a status
  refresh: it is reported, and the expiry bounds the key. That the node's
  autodown revoked them is also how the API server tells a reserved
  cluster's autodown from a pause in Mithril's console
  (`revoked_by_teardown`).

Why LIFETIME is 30 days: revocation ends a key with its cluster; the expiry
only bounds keys whose revocation failed or whose cluster ended outside
SkyPilot (a bid cancelled in Mithril's console, a lost `~/.sky`). A cluster
that stays up longer keeps a working key through its renewals, as long as
the API server refreshes its status at least once in RENEW_WITHIN (the
status daemon does, while the server runs); `sky launch -c NAME` (no task
needed) renews it too. Keys are minted with the server's clock
(`MithrilClient.server_now`).
"""

import dataclasses
import datetime
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable, List, Optional, Set

import yaml

from sky import sky_logging

from sky_mithril import files
from sky_mithril.account import connection
from sky_mithril.account import credentials as credentials_lib
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.api import models

logger = sky_logging.init_logger('sky.sky_mithril.node_keys')

LIFETIME = datetime.timedelta(days=30)
REUSE_FOR = datetime.timedelta(days=1)
# A week: an API server that is down over a long weekend still renews in
# time; a cluster's key is then renewed every 23 days.
RENEW_WITHIN = datetime.timedelta(days=7)
# After a renewal whose delivery failed (a node unreachable over SSH), the
# next try: each try mints a key, and its SSH attempts slow the refresh.
RENEW_RETRY_AFTER = datetime.timedelta(hours=1)
WARN_WITHIN = datetime.timedelta(days=3)
# How often a node's skylet checks its key (one request).
WARN_CHECK_SECONDS = 6 * 3600
# Where the cluster's nodes hold their credentials file, where the nodes'
# sky-mithril (and `ml`) look for credentials.
NODE_PATH = '~/.config/mithril/config.yaml'
NAME_PREFIX = 'sky-'
# Mithril refuses names of 60 characters or more.
MAX_NAME_LENGTH = 59
_DIGEST_LENGTH = 8
_READABLE_LENGTH = MAX_NAME_LENGTH - len(NAME_PREFIX) - 1 - _DIGEST_LENGTH
DEFAULT_PROFILE = 'default'
_CREDENTIALS_FILE = 'node-credentials.yaml'
_RECORD_FILE = 'node-key.yaml'
_RENEWING_FILE = 'node-credentials.renewing.yaml'
_TIMES = ('created_at', 'expires_at', 'renewal_failed_at', 'renew_by')


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
    account (no secret); by the server's clock, when its renewal last
    failed, and the earliest expiry of a key it replaced that the nodes may
    still hold (None: the nodes hold this one, or none older)."""

    fid: str
    name: str
    created_at: datetime.datetime
    expires_at: datetime.datetime
    api_url: str
    project_id: str
    profile: str
    renewal_failed_at: Optional[datetime.datetime] = None
    renew_by: Optional[datetime.datetime] = None


def _record_path(cluster_name_on_cloud: str) -> Path:
    return cluster_dir(cluster_name_on_cloud) / _RECORD_FILE


def _read_record(cluster_name_on_cloud: str) -> Optional[_Record]:
    try:
        data = yaml.safe_load(_record_path(cluster_name_on_cloud).read_text(
            encoding='utf-8'))
        for field in _TIMES:
            if data.get(field) is not None:
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


def _credentials_text(cluster_name_on_cloud: str,
                      key: models.CreatedApiKey, conn: connection.Connection,
                      profile: str) -> str:
    """The nodes' credentials file for `key`: `ml setup`'s format, one
    profile."""
    section = {'api_key': key.secret, 'api_url': conn.credentials.api_url,
               'project_id': conn.project_id}
    return (f'# The Mithril API key of cluster {cluster_name_on_cloud}\'s '
            f'nodes, expiring {key.expires_at.isoformat()}; `sky down` '
            'revokes it.\n' + yaml.safe_dump(
                {'current_profile': profile, 'profiles': {profile: section}}))


def _record_of(key: models.CreatedApiKey, conn: connection.Connection,
               profile: str,
               renew_by: Optional[datetime.datetime] = None) -> _Record:
    return _Record(fid=key.fid, name=key.name, created_at=key.created_at,
                   expires_at=key.expires_at,
                   api_url=conn.credentials.api_url,
                   project_id=conn.project_id, profile=profile,
                   renew_by=renew_by)


def _write_record(cluster_name_on_cloud: str, record: _Record) -> None:
    fields = dataclasses.asdict(record)
    for field in _TIMES:
        if fields[field] is not None:
            fields[field] = fields[field].isoformat()
    files.write_atomically(_record_path(cluster_name_on_cloud),
                           yaml.safe_dump(fields), mode=0o600)


def _write(cluster_name_on_cloud: str, key: models.CreatedApiKey,
           conn: connection.Connection, profile: str,
           renew_by: Optional[datetime.datetime]) -> None:
    """The credentials file and the record beside it, each replaced in one
    rename, mode 600."""
    _private_dirs(cluster_name_on_cloud)
    files.write_atomically(
        credentials_path(cluster_name_on_cloud),
        _credentials_text(cluster_name_on_cloud, key, conn, profile),
        mode=0o600)
    _write_record(cluster_name_on_cloud,
                  _record_of(key, conn, profile, renew_by))


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
    record = _read_record(cluster_name_on_cloud)
    if path.is_file() and _reusable(record, live, conn, profile, now):
        return path
    key = _mint(conn, name, live, now)
    try:
        _write(cluster_name_on_cloud, key, conn, profile,
               _renew_by(record, live, key))
    except BaseException:
        _revoke(conn, [key])
        raise
    logger.debug(f'Minted API key {key.fid} ({name}) for the nodes of '
                 f'{cluster_name_on_cloud}, expiring '
                 f'{key.expires_at.isoformat()}.')
    return path


def _renew_by(replaced: Optional[_Record], live: List[models.ApiKey],
              key: models.CreatedApiKey) -> Optional[datetime.datetime]:
    """The earliest expiry the cluster's nodes may depend on once `key`
    replaces the key of record `replaced` in the cluster's file: the launch
    writing it may fail before its file mounts reach the nodes, which then
    keep the replaced key (or one it replaced in turn). None when the
    replaced key is not live (`live`, in the new key's account): no node
    depends on it."""
    if replaced is None or not any(k.fid == replaced.fid for k in live):
        return None
    return min(replaced.renew_by or replaced.expires_at, key.expires_at)


def _mint(conn: connection.Connection, name: str,
          live: List[models.ApiKey],
          now: datetime.datetime) -> models.CreatedApiKey:
    """A new key called `name`, expiring LIFETIME after `now` (the server's
    clock). `live` are the keys of the name already held: after a mint
    whose outcome is unknown, any other is revoked before the error leaves."""
    try:
        return conn.client.create_api_key(name, now + LIFETIME)
    except BaseException as e:
        # Unless Mithril refused it, the key may exist with nobody holding
        # its secret (an answer lost, an interrupt mid-request).
        if (not isinstance(e, errors.MithrilAPIError) or
                isinstance(e, errors.AmbiguousResponseError)):
            _revoke_unheld(conn, name, {k.fid for k in live})
        raise


def _renewal_due(record: _Record, conn: connection.Connection,
                 now: datetime.datetime) -> bool:
    """Whether the key this machine minted for the cluster (`record`, in
    `conn`'s account), or a key it replaced that the nodes may still hold
    (`renew_by`), expires within RENEW_WITHIN of `now`, no renewal having
    failed in the last RENEW_RETRY_AFTER."""
    return ((record.api_url, record.project_id) ==
            (conn.credentials.api_url, conn.project_id) and
            (record.renew_by or record.expires_at) - now <= RENEW_WITHIN and
            (record.renewal_failed_at is None or
             now - record.renewal_failed_at >= RENEW_RETRY_AFTER))


def renew_if_due(conn: connection.Connection, cluster_name_on_cloud: str,
                 deliver: Callable[[Path], None],
                 can_deliver: Callable[[], bool]) -> None:
    """Renews the cluster's node key when it is due (module docstring).
    Deciding costs no request: this machine's record of the key (none on a
    node) and the server's clock as its last answer gave it. A renewal due
    while `can_deliver` says `deliver` would not reach the cluster's nodes
    does nothing (nothing minted, put anywhere or revoked, no failure
    recorded), so the next call tries again.

    A new key is minted and written to a file of the cluster's folder (mode
    600), which `deliver` puts on every node as NODE_PATH. Only once it has
    returned does the file become the cluster's credentials file, and are
    the keys of the name that were live before the new one revoked, and
    the record's `renew_by` cleared: every node holds the new key. If it
    raises, nothing is revoked (some nodes may hold the new key, the others
    still hold the old one, valid for days yet), the failure is recorded,
    and the error raised; the next renewal, RENEW_RETRY_AFTER later, or `sky
    down` revokes the keys this one left.

    Call it under SkyPilot's lock of the cluster (a status refresh holds
    it), which keeps launches, `sky down` and other refreshes of the
    cluster out of its files meanwhile."""
    record = _read_record(cluster_name_on_cloud)
    now = conn.client.server_now()
    if (record is None or not _renewal_due(record, conn, now) or
            not can_deliver()):
        return
    name = key_name(conn.project_id, cluster_name_on_cloud)
    older = _live_keys_named(conn, name)
    key = _mint(conn, name, older, now)
    renewing = _private_dirs(cluster_name_on_cloud) / _RENEWING_FILE
    try:
        files.write_atomically(
            renewing, _credentials_text(cluster_name_on_cloud, key, conn,
                                        record.profile), mode=0o600)
        deliver(renewing)
    except BaseException:
        renewing.unlink(missing_ok=True)
        _write_record(cluster_name_on_cloud,
                      dataclasses.replace(record, renewal_failed_at=now))
        raise
    os.replace(renewing, credentials_path(cluster_name_on_cloud))
    _write_record(cluster_name_on_cloud, _record_of(key, conn, record.profile))
    _revoke(conn, older)
    logger.info(f'Renewed the API key of {cluster_name_on_cloud}\'s nodes: '
                f'{key.fid} ({name}), expiring {key.expires_at.isoformat()}, '
                f'replaces {", ".join(k.fid for k in older) or "none"}.')


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


def _is_own(key: models.ApiKey, secret: str) -> bool:
    """Whether `key` is the one whose secret is `secret`, as far as its
    snippet shows."""
    shown = (key.snippet or '').rstrip('.')
    return bool(shown) and secret.startswith(shown)


def _own_last(keys: List[models.ApiKey],
              secret: str) -> List[models.ApiKey]:
    """`keys` with the caller's own (on a node) moved last: once it is
    revoked nothing else can be."""
    return ([k for k in keys if not _is_own(k, secret)] +
            [k for k in keys if _is_own(k, secret)])


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


def revoked_by_teardown(conn: connection.Connection,
                        cluster_name_on_cloud: str) -> bool:
    """Whether the cluster's teardown revoked its nodes' keys: none of its
    name is live, and the newest was revoked before its expiry. A node's
    autodown revokes them (`revoke_all`, after it paused or cancelled what
    the cluster runs on); instances paused by anyone else leave the
    cluster's key live, and a key that merely expired says nothing."""
    name = key_name(conn.project_id, cluster_name_on_cloud)
    named = [k for k in conn.client.list_api_keys() if k.name == name]
    now = conn.client.server_now()
    if not named or any(k.is_live(now) for k in named):
        return False
    newest = max(named, key=lambda k: k.created_at)
    return (newest.deactivated_at is not None and
            newest.deactivated_at < newest.expires_at)


def expiry_warning(client: client_lib.MithrilClient,
                   secret: str) -> Optional[str]:
    """On a node: what its log should say of its own key (`secret`), that
    it expires within WARN_WITHIN or no longer works; None while it is good
    for longer, or when Mithril does not list it. One request."""
    try:
        listed = client.list_api_keys()
    except errors.AuthenticationError:
        return ('This node\'s Mithril API key no longer works (expired or '
                'revoked): autostop and autodown fail while the cluster\'s '
                'bid may bill. `sky launch -c <cluster>` gives the nodes a '
                'new key; `sky down` ends the cluster.')
    own = [k for k in listed if _is_own(k, secret)]
    if not own:
        return None
    expires_at = max(k.expires_at for k in own)
    left = expires_at - client.server_now()
    if left > WARN_WITHIN:
        return None
    return (f'This node\'s Mithril API key ({", ".join(k.fid for k in own)}) '
            f'expires at {expires_at.isoformat()}, in '
            f'{max(left.total_seconds(), 0) / 3600:.0f} h: then autostop and '
            'autodown fail while the cluster\'s bid may bill. The API server '
            'renews it at a status refresh (`sky status -r`) once it is within '
            f'{RENEW_WITHIN.days} days of its expiry; `sky launch -c '
            '<cluster>` renews it too.')


def watch_expiry() -> None:
    """On a node's skylet, forever: every WARN_CHECK_SECONDS, warns in the
    skylet's log while the node's key is close to its expiry or no longer
    works (`expiry_warning`). The credentials file is read afresh each time
    (a renewal replaces it); a check that cannot reach Mithril waits for
    the next."""
    while True:
        time.sleep(WARN_CHECK_SECONDS)
        try:
            node = credentials_lib.load_credentials()
            with client_lib.MithrilClient.from_credentials(node) as client:
                warning = expiry_warning(client, node.api_key)
        except (credentials_lib.CredentialsError, errors.MithrilAPIError):
            continue
        if warning is not None:
            logger.warning(warning)
