"""The sandboxed SkyPilot home's Mithril profile, changed for a while: the
e2e tier shares one sandbox (and its API server) between modules, each of
which points it at an emulator of its own."""

import contextlib
import secrets
import sqlite3
from pathlib import Path
from typing import Iterator

import yaml

from sky_mithril import shared_state
from sky_mithril.catalog import live_prices
from sky_mithril.devtools.sandbox import SkySandbox

# The e2e sandbox's Mithril API key: recognisable and random, so that
# tests/e2e/test_secrets.py can search everything written for it.
SANDBOX_KEY = 'sk-mithril-SECRET-' + secrets.token_hex(12)


def profile_path(box: SkySandbox) -> Path:
    """The sandbox's `ml setup` config (`~/.config/mithril/config.yaml`)."""
    return box.home / '.config' / 'mithril' / 'config.yaml'


def forget_live_prices(box: SkySandbox) -> None:
    """Drops the sandbox's cached market (the overlay and its state, not the
    clusters' node keys beside them, and the market shared in its SkyPilot
    database): the next command fetches it anew."""
    cache = box.home / '.sky' / 'mithril'
    for cached in (live_prices.overlay_path(), live_prices._state_path()):
        (cache / cached.name).unlink(missing_ok=True)
    database = box.home / '.sky' / 'kv_cache.db'
    if database.exists():
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
            db.execute('DELETE FROM kv_cache WHERE key LIKE ?', (
                f'{shared_state.KEY_PREFIX}{live_prices.SHARED_KEY}/%',))


def set_profile(box: SkySandbox, **fields: str) -> None:
    """Sets `fields` (api_url, api_key, project_id) in the default profile,
    and drops the market cached from the API it pointed at before."""
    path = profile_path(box)
    config = yaml.safe_load(path.read_text())
    config['profiles']['default'].update(fields)
    path.write_text(yaml.safe_dump(config))
    forget_live_prices(box)


@contextlib.contextmanager
def profile_changed(box: SkySandbox, **fields: str) -> Iterator[None]:
    """The default profile with `fields` set while the block runs; then the
    profile as it was (whatever the block did to it), no cached market."""
    path = profile_path(box)
    original = path.read_text()
    set_profile(box, **fields)
    try:
        yield
    finally:
        path.write_text(original)
        path.chmod(0o600)
        forget_live_prices(box)
