"""The recovery records (in SkyPilot's database, which a test process keeps
for its whole run) cleared, so a test starts from no records of its own."""

from sky_mithril import shared_state
from sky_mithril.recovery import records


def forget_recovery_records() -> None:
    """Drops every recovery record of this process's SkyPilot state."""
    from sky.utils.db import kv_cache  # pylint: disable=import-outside-toplevel
    kv_cache.delete_cache_entries_by_prefix(
        f'{shared_state.KEY_PREFIX}{records.KEY_PREFIX}')
