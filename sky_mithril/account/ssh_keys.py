"""The nodes' access, set up as SkyPilot writes a cluster's config: the local
SkyPilot SSH key, registered with Mithril once per project and reused by fid
on every later launch, and the cluster's own API key (`node_keys`)."""

from typing import Any, Dict

from sky import sky_logging
from sky.utils import auth_utils
from sky.utils import common_utils

from sky_mithril.account import connection
from sky_mithril.account import local_keys
from sky_mithril.account import node_keys
from sky_mithril.api import errors

logger = sky_logging.init_logger('sky.sky_mithril.auth')


def ssh_key_fid_for(conn: connection.Connection, public_key: str) -> str:
    """The fid of `public_key` in the project, registering it if absent.

    A create whose response was lost is reconciled by listing again, so a
    retry never registers the key twice.
    """
    wanted = local_keys.key_body(public_key)

    def find() -> str:
        for key in conn.client.list_ssh_keys(conn.project_id):
            if local_keys.key_body(key.public_key or '') == wanted:
                return key.fid
        return ''

    existing = find()
    if existing:
        return existing
    name = f'sky-{common_utils.get_user_hash()}'
    try:
        created = conn.client.create_ssh_key(conn.project_id, name, public_key)
    except errors.AmbiguousResponseError:
        existing = find()
        if existing:
            return existing
        raise
    logger.info(f'Registered SSH key {name!r} with Mithril ({created.fid}).')
    return created.fid


def setup_mithril_authentication(config: Dict[str, Any]) -> Dict[str, Any]:
    """Replaces `sky.authentication.setup_mithril_authentication`, which
    SkyPilot calls once per launch, relaunch and `sky start` (not in a dry
    run), as it writes the cluster's config and before it stages the file
    mounts: registers the SSH key and fills the cluster's credentials file
    with a key of its own (`node_keys.issue`), both in the account the
    cluster's provider config names."""
    from sky import authentication  # pylint: disable=import-outside-toplevel
    _, public_key_path = auth_utils.get_or_generate_keys()
    with open(public_key_path, encoding='utf-8') as f:
        public_key = f.read().strip()
    provider = config.get('provider', {})
    conn = connection.connect(profile=provider.get('profile') or None,
                              project_id=provider.get('project_id') or None,
                              api_url=provider.get('api_url') or None)
    try:
        key_fid = ssh_key_fid_for(conn, public_key)
        node_keys.issue(conn, config['cluster_name'],
                        provider.get('profile') or None)
    finally:
        conn.client.close()
    auth = config.setdefault('auth', {})
    auth['ssh_user'] = 'ubuntu'
    auth['ssh_public_key'] = public_key_path
    auth['ssh_key_id'] = key_fid
    return authentication.configure_ssh_info(config)
