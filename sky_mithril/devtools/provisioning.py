"""The provisioner's input as SkyPilot builds it, for the dev tools, benchmarks
and tests that call a Mithril provisioner's run_instances directly."""

from typing import Any, Dict

from sky.provision import common


def provision_config(provider_config: Dict[str, Any],
                     ssh_key_id: str,
                     instance_type: str,
                     *,
                     count: int = 1,
                     resume_stopped_nodes: bool = False) -> common.ProvisionConfig:
    """What SkyPilot passes run_instances for `count` nodes of `instance_type`
    logged into as `ubuntu` with the SSH key `ssh_key_id` (a Mithril key fid):
    no docker, no tags, no ports to open."""
    return common.ProvisionConfig(
        provider_config=provider_config,
        authentication_config={'ssh_user': 'ubuntu', 'ssh_key_id': ssh_key_id},
        docker_config={},
        node_config={'InstanceType': instance_type},
        count=count,
        tags={},
        resume_stopped_nodes=resume_stopped_nodes,
        ports_to_open_on_launch=None)
