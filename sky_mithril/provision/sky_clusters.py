"""The clusters SkyPilot knows on this machine, by the names their bids
carry, so what sky-mithril says about a bid can name its SkyPilot cluster."""

from pathlib import Path
from typing import Dict


def clusters_by_bid_name() -> Dict[str, str]:
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
