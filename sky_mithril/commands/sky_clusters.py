"""The clusters SkyPilot knows on this machine, so bulk deletes leave their
bids alone (`sky down` is the way to remove those) and volumes show the
clusters that use them."""

from typing import Dict, Set

from sky_mithril.commands.output import CommandError, progress
from sky_mithril.provision.sky_clusters import clusters_by_bid_name


def skypilot_cluster_names() -> Set[str]:
    """Each cluster's name and name on the cloud (which its bid carries).

    A state that exists but cannot be read fails, so nothing is cancelled
    blind.
    """
    try:
        return set(clusters_by_bid_name())
    except Exception as e:  # pylint: disable=broad-except
        raise CommandError(
            f"Cannot read SkyPilot's clusters on this machine ({e}), so this "
            'command cannot tell which bids back them. Pass '
            '--include-sky-clusters to cancel regardless.') from e


def cluster_names_by_bid() -> Dict[str, str]:
    """The SkyPilot cluster a bid name backs, to label output with. A state
    that cannot be read is reported on stderr and labels nothing."""
    try:
        return clusters_by_bid_name()
    except Exception as e:  # pylint: disable=broad-except
        progress(f"Cannot read SkyPilot's clusters on this machine ({e}); "
                 'bids are shown by their own names.')
        return {}
