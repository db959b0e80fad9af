"""The project's registered keys against the local SSH key pairs
(`account.local_keys`): which keys a new bid or reservation gets, and the
private key that opens a bid's or a cluster's nodes, or why none does."""

import logging
from pathlib import Path
from typing import Iterable, List

from sky_mithril.account import connection
from sky_mithril.account.local_keys import (LOCAL_KEY_PLACES, LocalKeyPair,
                                            key_body, local_key_pairs,
                                            matching_private_key)
from sky_mithril.api import models
from sky_mithril.commands.output import CommandError, progress


def identity_for(key_fids: Iterable[str], project_keys: List[models.SshKey],
                 what: str) -> Path:
    """The private key of the first local pair whose public half is one of
    `key_fids` (or a project key Mithril adds to every node: `required`)."""
    wanted = set(key_fids)
    private_key = matching_private_key(wanted, project_keys)
    if private_key is not None:
        return private_key
    names = ', '.join(k.name for k in project_keys if k.fid in wanted) or 'none'
    raise CommandError(
        f'None of your local SSH keys ({LOCAL_KEY_PLACES}) opens {what}; its '
        f'keys are: {names}. Copy the matching private key to ~/.ssh/ '
        '(with its .pub beside it), or pass it with -i where the command has it.')


def require_local_key_pairs() -> List[LocalKeyPair]:
    """The local key pairs; fails naming `ssh-keygen` when there is none,
    since a bid's nodes would then be unreachable."""
    pairs = local_key_pairs()
    if not pairs:
        raise CommandError(
            f'No SSH key pair found ({LOCAL_KEY_PLACES}). Create one with '
            '`ssh-keygen -t ed25519` and run the command again.')
    return pairs


def key_fids_for_new_bid(conn: connection.Connection) -> List[str]:
    """The project's keys that match a local pair; when none does, the first
    local public key is registered (as SkyPilot's launches do) and used."""
    pairs = require_local_key_pairs()
    local_bodies = {pair.body for pair in pairs}
    matching = [k.fid for k in conn.client.list_ssh_keys(conn.project_id)
                if key_body(k.public_key) in local_bodies]
    if matching:
        return matching
    progress(f'Registering your public key {pairs[0].private_key}.pub with '
             f'project {conn.project_id}.')
    return [_registered_fid(conn, pairs[0].public_key)]


def keys_for_new_reservation(
        conn: connection.Connection) -> List[models.SshKey]:
    """SkyPilot's own key first (registered if it is not yet), then the
    project's other keys that match a local pair: a reservation's keys are
    fixed at create, and SkyPilot reaches its instances only with its own."""
    from sky.utils import auth_utils  # pylint: disable=import-outside-toplevel
    _, public_key_path = auth_utils.get_or_generate_keys()
    sky_public_key = Path(public_key_path).read_text(encoding='utf-8').strip()
    project_keys = conn.client.list_ssh_keys(conn.project_id)
    sky_body = key_body(sky_public_key)
    if not any(key_body(k.public_key) == sky_body for k in project_keys):
        progress(f"Registering SkyPilot's public key {public_key_path} with "
                 f'project {conn.project_id}.')
        _registered_fid(conn, sky_public_key)
        project_keys = conn.client.list_ssh_keys(conn.project_id)
    local_bodies = {pair.body for pair in local_key_pairs()}
    return sorted((k for k in project_keys
                   if key_body(k.public_key) == sky_body or
                   key_body(k.public_key) in local_bodies),
                  key=lambda k: key_body(k.public_key) != sky_body)


def _registered_fid(conn: connection.Connection, public_key: str) -> str:
    """The fid of `public_key` in the project, registering it if absent."""
    from sky_mithril.account import ssh_keys  # pylint: disable=import-outside-toplevel
    # SkyPilot's logger writes to stdout, where `--json` output goes; the
    # callers already say it on stderr.
    ssh_keys_logger = logging.getLogger(ssh_keys.logger.name)
    level = ssh_keys_logger.level
    ssh_keys_logger.setLevel(logging.WARNING)
    try:
        return ssh_keys.ssh_key_fid_for(conn, public_key)
    finally:
        ssh_keys_logger.setLevel(level)
