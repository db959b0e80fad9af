"""SkyPilot's own launch steps, replayed on a standby's nodes while the old
node still trains: the task's public ports on the standby's head
(`open_ports`), the runtime, Ray and the skylet (`set_up_runtime`, with the
runtime files fetched from the old node), then the job's workdir, file
mounts, setup, autodown and hooks (`stage_job`). After the switch only the
submission is left (`submit_job`).
"""

import copy
import os
import time
from typing import Any, Dict, List

from sky import execution
from sky import global_user_state
from sky.jobs import recovery_strategy
from sky.utils import resources_utils

from sky_mithril.provision import public_ports


def fetch_runtime_files(handle: Any, into: str) -> Dict[str, str]:
    """The files SkyPilot's runtime setup installs on a node (the cluster
    launch's file mounts), copied from the old node into `into` while it is
    reachable: the launch staged them in a local directory that is gone
    since. Remote path -> local copy."""
    yaml_config = global_user_state.get_cluster_yaml_dict(handle.cluster_yaml)
    mounts = {}
    for n, remote in enumerate(yaml_config.get('file_mounts', {})):
        local = os.path.join(into, str(n))
        handle.get_command_runners()[0].rsync(
            f'{remote.rstrip("/")}/', local, up=False, stream_logs=False)
        mounts[remote] = local
    return mounts


def open_ports(handle: Any, info: Any) -> None:
    """Opens the task's ports on the standby's head, as a launch does
    (`public_ports.open_on_head`, reached with the cluster config's `auth`):
    a promoted standby skips SkyPilot's relaunch, the step that would open
    them, and `sky status --endpoints` then points at the standby's head.
    Raises PortsNotOpenedError naming each port that did not open."""
    ports = resources_utils.port_ranges_to_set(handle.launched_resources.ports)
    if not ports:
        return
    yaml_config = global_user_state.get_cluster_yaml_dict(handle.cluster_yaml)
    public_ports.open_on_head(info, yaml_config['auth'],
                              handle.cluster_name_on_cloud, ports)


def set_up_runtime(handle: Any, runtime_files: Dict[str, str],
                   info: Any) -> None:
    """SkyPilot's own post-provision steps, on the standby's nodes, with the
    `runtime_files` fetched from the old node: what the relaunch would
    otherwise do after training stopped (for a real GPU node that includes
    installing SkyPilot's runtime). The relaunch then finds the runtime
    installed and Ray running."""
    # pylint: disable=import-outside-toplevel
    from sky.backends import backend_utils
    from sky.provision import instance_setup
    from sky.provision import logging as provision_logging
    from sky.provision import provisioner
    from sky.skylet import constants
    from sky.utils import resources_utils
    yaml_config = global_user_state.get_cluster_yaml_dict(handle.cluster_yaml)
    credentials = backend_utils.ssh_credential_from_yaml(
        handle.cluster_yaml, ssh_user=info.ssh_user)
    name = handle.cluster_name_on_cloud
    custom_resource = resources_utils.make_ray_custom_resources_str(
        handle.launched_resources.accelerators)
    log_dir = os.path.join(os.path.expanduser('~/sky_logs'), 'mithril-standby',
                           f'{name}-{int(time.time())}')
    with provision_logging.setup_provision_logging(log_dir):
        provisioner.wait_for_ssh(info, credentials)
        instance_setup.internal_file_mounts(name, runtime_files, info,
                                            credentials)
        instance_setup.setup_runtime_on_cluster(
            name, yaml_config['setup_commands'], info, credentials)
        instance_setup.start_ray_on_head_node(
            name, custom_resource=custom_resource, cluster_info=info,
            ssh_credentials=credentials)
        instance_setup.start_ray_on_worker_nodes(
            name, no_restart=False, custom_resource=custom_resource,
            ray_port=constants.SKY_REMOTE_RAY_PORT, cluster_info=info,
            ssh_credentials=credentials)
        instance_setup.start_skylet_on_head_node(
            resources_utils.ClusterName(handle.cluster_name, name), info,
            credentials, handle.launched_resources)


def _run_launch_stages(dag: Any, handle: Any, stages: List[Any]) -> None:
    """SkyPilot's own launch `stages` for the job, on the nodes `handle`
    names, with the jobs controller's launch settings (autodown as its
    safety net, the task's hooks). On a copy of the job's DAG: the stages
    write the launch's autostop settings into its resources."""
    # pylint: disable=import-outside-toplevel
    from sky import backends
    from sky.server.requests import request_names
    execution._execute(  # pylint: disable=protected-access
        entrypoint=copy.deepcopy(dag),
        stream_logs=False,
        handle=handle,
        backend=backends.CloudVmRayBackend(),
        stages=stages,
        cluster_name=handle.cluster_name,
        down=True,
        idle_minutes_to_autostop=recovery_strategy._AUTODOWN_MINUTES,  # pylint: disable=protected-access
        _request_name=request_names.AdminPolicyRequestName.CLUSTER_LAUNCH,
        _is_launched_by_jobs_controller=True)


def pointed_at(handle: Any, info: Any) -> Any:
    """A copy of SkyPilot's record of the cluster, pointed at `info`'s
    nodes: a new object, since SkyPilot caches a record's SSH runners by the
    object."""
    pointed = copy.deepcopy(handle)
    pointed.update_cluster_ips(cluster_info=info)
    return pointed


def stage_job(dag: Any, handle: Any, info: Any) -> None:
    """The job's launch steps before its run, on the standby's nodes: the
    workdir, the file mounts, the task's setup, autodown and the task's
    hooks (which the node's preemption watcher reads). After the switch only
    the submission is left. SkyPilot's record of the cluster still names
    the old node, so this works on a copy pointed at the standby; it talks
    SSH, because the cluster's skylet tunnel leads to the old head."""
    from sky.execution import Stage  # pylint: disable=import-outside-toplevel
    standby = pointed_at(handle, info)
    standby.is_grpc_enabled = False
    _run_launch_stages(dag, standby, [Stage.SYNC_WORKDIR,
                                      Stage.SYNC_FILE_MOUNTS, Stage.SETUP,
                                      Stage.PRE_EXEC])


def submit_job(dag: Any, handle: Any) -> None:
    """Submits the job on the cluster's (staged) standby, as `sky exec`
    does, without `sky exec`'s status refresh of a cluster that was just
    checked."""
    from sky.execution import Stage  # pylint: disable=import-outside-toplevel
    _run_launch_stages(dag, handle, [Stage.EXEC])
