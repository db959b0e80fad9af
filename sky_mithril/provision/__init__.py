"""sky-mithril's provisioner, registered for the `mithril` cloud."""

from sky_mithril.provision.instance import bootstrap_instances
from sky_mithril.provision.instance import cleanup_cluster_resources
from sky_mithril.provision.instance import cleanup_custom_multi_network
from sky_mithril.provision.instance import cleanup_ports
from sky_mithril.provision.instance import get_cluster_info
from sky_mithril.provision.instance import open_ports
from sky_mithril.provision.instance import query_instances
from sky_mithril.provision.instance import query_ports
from sky_mithril.provision.instance import run_instances
from sky_mithril.provision.instance import stop_instances
from sky_mithril.provision.instance import terminate_instances
from sky_mithril.provision.instance import wait_instances

__all__ = [
    'bootstrap_instances', 'cleanup_cluster_resources',
    'cleanup_custom_multi_network', 'cleanup_ports',
    'get_cluster_info', 'open_ports', 'query_instances', 'query_ports',
    'run_instances', 'stop_instances', 'terminate_instances', 'wait_instances'
]
