"""`sky serve update` keeps the replicas it keeps in the load balancer.

An update that changes only the `service:` section (e.g. the replica
policy) moves SkyPilot 0.14.1's replicas to the new version in place
(`SkyPilotReplicaManager.update_version`): no replica is launched, no bid
placed. The load balancer is sent only the replicas of the service's
active versions, and SkyPilot sets those again only after the replica
prober's next round, up to 10 s later: a load balancer sync in that gap
(one every 20 s) finds no replica, and every request answers 503 until
the next sync. Here the active versions are set again as soon as the
replicas have moved.
"""

import functools
from typing import Any


def install() -> None:
    """Wraps the serve controller's `update_version` (see the module)."""
    # pylint: disable=import-outside-toplevel
    from sky.serve import replica_managers
    from sky.serve import serve_state
    from sky.serve import serve_utils
    manager = replica_managers.SkyPilotReplicaManager
    original = manager.update_version

    @functools.wraps(original)
    def update_version(self: Any, version: int, spec: Any,
                       update_mode: Any) -> None:
        original(self, version, spec, update_mode=update_mode)
        service = self._service_name  # pylint: disable=protected-access
        serve_utils.set_service_status_and_active_versions_from_replica(
            service, serve_state.get_replica_infos(service), update_mode)

    manager.update_version = update_version
