"""The clusters SkyPilot knows on this machine, so bulk deletes leave their
bids alone (`sky down` is the way to remove those) and volumes show the
clusters that use them."""

from pathlib import Path
from typing import Dict, Set

from sky_mithril.commands.output import CommandError, progress


def _clusters_by_bid_name() -> Dict[str, str]:
    """Each SkyPilot cluster's name, keyed by the names its bid can carry:
    its name on the cloud (what the provisioner names the bid) and its own.

    No `~/.sky` means SkyPilot never ran here: no clusters. Reading a state
    that exists may raise anything SkyPilot raises.
    """
    if not (Path.home() / '.sky').is_dir():
        return {}
    from sky import global_user_state  # pylint: disable=import-outside-toplevel
    clusters = {}
    for record in global_user_state.get_clusters():
        clusters[record['name']] = record['name']
        on_cloud = getattr(record.get('handle'), 'cluster_name_on_cloud', None)
        if on_cloud:
            clusters[on_cloud] = record['name']
    return clusters


def skypilot_cluster_names() -> Set[str]:
    """Each cluster's name and name on the cloud (which its bid carries).

    A state that exists but cannot be read fails, so nothing is cancelled
    blind.
    """
    try:
        return set(_clusters_by_bid_name())
    except Exception as e:  # pylint: disable=broad-except
        raise CommandError(
            f"Cannot read SkyPilot's clusters on this machine ({e}), so this "
            'command cannot tell which bids back them. Pass '
            '--include-sky-clusters to cancel regardless.') from e


def cluster_names_by_bid() -> Dict[str, str]:
    """The SkyPilot cluster a bid name backs, to label output with. A state
    that cannot be read is reported on stderr and labels nothing."""
    try:
        return _clusters_by_bid_name()
    except Exception as e:  # pylint: disable=broad-except
        progress(f"Cannot read SkyPilot's clusters on this machine ({e}); "
                 'bids are shown by their own names.')
        return {}
