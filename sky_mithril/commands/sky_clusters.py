"""The clusters SkyPilot knows on this machine, so bulk deletes leave their
bids alone (`sky down` is the way to remove those)."""

from pathlib import Path
from typing import Set

from sky_mithril.commands.output import CommandError


def skypilot_cluster_names() -> Set[str]:
    """Each cluster's name and name on the cloud (which its bid carries).

    No `~/.sky` means SkyPilot never ran here: no clusters. A state that
    exists but cannot be read fails, so nothing is cancelled blind.
    """
    if not (Path.home() / '.sky').is_dir():
        return set()
    try:
        from sky import global_user_state  # pylint: disable=import-outside-toplevel
        records = global_user_state.get_clusters()
    except Exception as e:  # pylint: disable=broad-except
        raise CommandError(
            f"Cannot read SkyPilot's clusters on this machine ({e}), so this "
            'command cannot tell which bids back them. Pass '
            '--include-sky-clusters to cancel regardless.') from e
    names = set()
    for record in records:
        names.add(record['name'])
        on_cloud = getattr(record.get('handle'), 'cluster_name_on_cloud', None)
        if on_cloud:
            names.add(on_cloud)
    return names
