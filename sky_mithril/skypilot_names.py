"""sky-mithril's contract with SkyPilot: every SkyPilot name it relies on,
public or private, where it is used, and the check that each is there.

A name is what sky-mithril's code reaches in SkyPilot: a module attribute it
imports, calls, reads or replaces; a class attribute (method, property, enum
member) it calls or overrides; an instance attribute it reads on SkyPilot's
objects (handles, resources, configs); the keyword arguments it passes; a
module SkyPilot loads by name. Keys of SkyPilot's dicts and YAML, and the
cluster template's variables, are not names here.

Each name is checked on the side that needs it, before that side relies on
it: the plugin's install (API server, jobs controller, and the `sky-mithril`
commands that read SkyPilot's state) checks API_SERVER and NODE names (a
node runs the SkyPilot wheel of the API server that launched it); the node
hook checks NODE names again when the skylet starts; the dev sandbox checks
everything when it starts. Standard library only at import: the node hook
imports this module on the nodes, and it imports SkyPilot only to check.
"""

import dataclasses
import importlib
import importlib.util
import inspect
from typing import Iterable, List, Set, Tuple

import sky_mithril

API_SERVER = 'api-server'
NODE = 'node'
DEVTOOLS = 'devtools'
CHECKED_AT_INSTALL = (API_SERVER, NODE)
ALL_SIDES = (API_SERVER, NODE, DEVTOOLS)
SUPPORTED_SKYPILOT = '0.14.x (tested with 0.14.1)'


class PluginCompatibilityError(RuntimeError):
    """This SkyPilot lacks a name sky-mithril relies on."""


@dataclasses.dataclass(frozen=True)
class SkyPilotName:
    """One name in SkyPilot's `module`: `name` is a dotted path from the
    module ('' for the module itself), `used_by` says where in sky-mithril
    (our module.function: what for), `side` where it is needed (module
    docstring). `keywords` are the keyword arguments sky-mithril passes (or,
    for a callback SkyPilot calls, receives); `on_instances` marks an
    attribute SkyPilot's objects carry rather than their class."""

    module: str
    name: str
    side: str
    used_by: str
    keywords: Tuple[str, ...] = ()
    on_instances: bool = False

    @property
    def dotted(self) -> str:
        return f'{self.module}.{self.name}' if self.name else self.module

    @property
    def private(self) -> bool:
        """Whether any part of the name is private to SkyPilot (`_x`)."""
        return any(part.startswith('_') and not part.startswith('__')
                   for part in self.dotted.split('.'))

    def lacking(self) -> List[str]:
        """What of this name the installed SkyPilot lacks, as the refusal
        names it: the name itself, or `name(keyword=)` per keyword its
        signature no longer names. Empty when it all resolves."""
        if not self.name:
            return [] if _module_exists(self.module) else [self.dotted]
        *path, last = self.name.split('.')
        try:
            owner = importlib.import_module(self.module)
            for part in path:
                owner = getattr(owner, part)
        except Exception:  # pylint: disable=broad-except
            # A module that no longer imports fails us as a missing name does.
            return [self.dotted]
        present = (_instances_have(owner, last)
                   if self.on_instances else _has(owner, last))
        if not present:
            return [self.dotted]
        if not self.keywords:
            return []
        named = _keywords_named(getattr(owner, last))
        return [f'{self.dotted}({keyword}=)' for keyword in self.keywords
                if keyword not in named]


def _module_exists(module: str) -> bool:
    """Found without being run: the skylet's module, for one, imports gRPC
    stubs that only the nodes' runtime has."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _has(owner: object, attribute: str) -> bool:
    """hasattr, except that a class's special method must come from a class
    of its own, not from `object` or the metaclass (an override of
    `__getstate__` overrides SkyPilot's, not object's)."""
    if (isinstance(owner, type) and attribute.startswith('__') and
            attribute.endswith('__')):
        return any(attribute in vars(k) for k in owner.__mro__
                   if k is not object)
    return hasattr(owner, attribute)


def _instances_have(cls: type, attribute: str) -> bool:
    """Whether instances of `cls` carry `attribute`: a class attribute, a
    dataclass field, or an attribute its constructor (or a base's) names."""
    if _has(cls, attribute):
        return True
    if dataclasses.is_dataclass(cls) and attribute in {
            f.name for f in dataclasses.fields(cls)}:
        return True
    for klass in cls.__mro__:
        constructor = getattr(vars(klass).get('__init__'), '__code__', None)
        if constructor is not None and attribute in constructor.co_names:
            return True
    return False


def _keywords_named(target: object) -> Set[str]:
    """The keyword names `target`'s signature names (a `**kwargs` would take
    a renamed one silently, so it does not count)."""
    return {p.name for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _entry(module: str, name: str, side: str, used_by: str, *,
           keywords: Tuple[str, ...] = (),
           on_instances: bool = False) -> SkyPilotName:
    """One row of NAMES (a short name keeps the table readable)."""
    return SkyPilotName(module, name, side, used_by, keywords, on_instances)


_CLOUD = 'sky.clouds.mithril'
_FEATURES = 'CloudImplementationFeatures'
_BACKEND = 'sky.backends.cloud_vm_ray_backend'
_HANDLE = 'CloudVmRayResourceHandle'
_STRATEGY = 'sky.jobs.recovery_strategy'
_RUNTIME = 'sky.jobs.runtime'
_PROVISION_COMMON = 'sky.provision.common'
_CATALOG_COMMON = 'sky.catalog.common'
_SETUP = 'sky.provision.instance_setup'
_CONSTANTS = 'sky.skylet.constants'

NAMES: Tuple[SkyPilotName, ...] = (
    # The plugin entry point and its install (plugin/__init__, plugin/takeover).
    _entry('sky.server.plugins', 'BasePlugin', API_SERVER,
           'plugin.MithrilPlugin: the plugin SkyPilot loads'),
    _entry('sky.server.plugins', 'BasePlugin.name', API_SERVER,
           'plugin.MithrilPlugin.name: overridden'),
    _entry('sky.server.plugins', 'BasePlugin.version', API_SERVER,
           'plugin.MithrilPlugin.version: overridden'),
    _entry('sky.server.plugins', 'BasePlugin.install', API_SERVER,
           'plugin.MithrilPlugin.install: overridden; wires everything'),
    _entry('sky.server.plugins', 'ExtensionContext', API_SERVER,
           'plugin.MithrilPlugin.install: its argument'),
    _entry('sky.server.plugins', 'ExtensionContext.app', API_SERVER,
           'plugin.MithrilPlugin.install: mounts the dashboard\'s routes on it',
           on_instances=True),
    _entry('sky.server.plugins', 'BasePlugin.js_extension_path', API_SERVER,
           'plugin.MithrilPlugin.js_extension_path: overridden; the '
           'dashboard\'s script (plugin/dashboard)'),
    _entry('sky.server.plugins', 'BasePlugin.viewer_allowlist', API_SERVER,
           'plugin.MithrilPlugin.viewer_allowlist: overridden; viewers may '
           'read the dashboard\'s routes'),
    _entry('sky.server.plugins', 'RBACRule', API_SERVER,
           'plugin.MithrilPlugin.viewer_allowlist: its entries',
           keywords=('path', 'method', 'description')),
    _entry('sky.clouds.cloud', 'CloudCapability', API_SERVER,
           'plugin/dashboard/routes.infra: `sky check`\'s compute check'),
    _entry('sky', '__version__', API_SERVER,
           'skypilot_names: the refusal names the version'),
    _entry('sky', 'Mithril', API_SERVER,
           'plugin.takeover._take_over_cloud_class: replaced by ours; '
           '_task_config_reaches_existing_clusters: is_same_cloud'),
    _entry('sky.clouds', 'Mithril', API_SERVER,
           'plugin.takeover._take_over_cloud_class: replaced by ours'),
    _entry(_CLOUD, 'Mithril', API_SERVER,
           'cloud.Mithril: its base; plugin.takeover._take_over_cloud_class: '
           'replaced by ours'),
    _entry('sky.utils.registry', 'CLOUD_REGISTRY', API_SERVER,
           'plugin.takeover._take_over_cloud_class: our cloud under `mithril`'),
    _entry('sky.utils.registry', 'JOBS_RECOVERY_STRATEGY_REGISTRY', API_SERVER,
           'plugin.takeover._take_over_recovery_strategies: ours under '
           'EAGER_NEXT_REGION and FAILOVER'),
    _entry('sky.catalog.mithril_catalog', '', API_SERVER,
           'plugin.takeover._take_over_catalog: replaced by catalog.'
           'mithril_catalog, which SkyPilot loads by this name'),
    _entry(_CATALOG_COMMON, 'get_catalog_path', API_SERVER,
           'plugin.takeover._take_over_catalog: where the `sky` client reads '
           'the catalog'),
    _entry(_CATALOG_COMMON, 'get_modified_catalog_file_mounts', API_SERVER,
           'plugin.takeover._controllers_get_common_catalogs: the common '
           'catalogs go up with a remote controller too'),
    _entry(_CONSTANTS, 'CATALOG_DIR', API_SERVER,
           'plugin.takeover._controllers_get_common_catalogs: where a '
           'controller reads catalogs'),
    _entry('sky.provision', 'register_provisioner', NODE,
           'plugin.takeover._take_over_provisioner and node_hook.register: our '
           'provisioner for `mithril`', keywords=('template_override',)),
    _entry('sky.provision', 'TemplateSpec', API_SERVER,
           'plugin.takeover._template_override: our cluster template',
           keywords=('template_path', 'variables')),
    _entry('sky.provision', 'TemplateOverrideFn.__call__', API_SERVER,
           'plugin.takeover._template_override: the keywords SkyPilot calls it '
           'with', keywords=('_extra_launch_context',
                             '_is_launched_by_jobs_controller')),
    _entry('sky.provision', 'cleanup_cluster_resources', API_SERVER,
           'provision.instance.cleanup_cluster_resources: ours, which SkyPilot '
           'calls once it finds a cluster gone (a status refresh, `sky down`), '
           'revokes its node keys'),
    _entry('sky.provision.mithril', '', API_SERVER,
           'plugin.takeover._take_over_provisioner: every function it defines '
           'is one ours must define; templates/mithril-ray.yml.j2: the '
           'provider module'),
    _entry('sky.authentication', 'setup_mithril_authentication', API_SERVER,
           'plugin.takeover._take_over_authentication: replaced by account.'
           'ssh_keys.setup_mithril_authentication, which also fills the '
           'cluster\'s node credentials before SkyPilot stages its file mounts'),
    _entry('sky.utils.schemas', 'get_config_schema', API_SERVER,
           'plugin.takeover._extend_config_schema: wrapped to allow the task\'s '
           '`mithril:` section'),
    _entry('sky.utils.schemas', 'register_plugin_property', API_SERVER,
           'plugin.takeover._extend_config_schema: `plugins.mithril`'),
    _entry('sky.skypilot_config', 'register_task_overrideable_config_key',
           API_SERVER, 'plugin.takeover._extend_config_schema: the task\'s '
           '`config.mithril` keys'),
    _entry(_RUNTIME, 'register', API_SERVER,
           'plugin.takeover._register_jobs_runtime: our managed-job runtime'),
    _entry('sky.backends.backend_utils', '_RAY_YAML_KEYS_TO_RESTORE_EXCEPTIONS',
           API_SERVER, 'plugin.takeover._launch_settings_reach_existing_clusters: '
           'a relaunch\'s limit price and timeouts reach the bid'),
    _entry('sky.optimizer', 'Optimizer.optimize', API_SERVER,
           'plugin.takeover._reservations_reach_the_optimizer: wrapped to know '
           'whether the DAG names a Mithril reservation'),
    _entry('sky.utils.resources_utils', 'need_to_query_reservations',
           API_SERVER, 'plugin.takeover._reservations_reach_the_optimizer: '
           'also true while the DAG names a Mithril reservation'),
    _entry(_CLOUD, 'Mithril.get_reservations_available_resources', API_SERVER,
           'cloud.Mithril: the free instances of the task\'s reservation',
           keywords=('instance_type', 'region', 'zone',
                     'specific_reservations')),
    # SkyServe: the controller loads plugins (plugin.serve_controller) and
    # replaces replicas from the notice on (recovery.serve_notice).
    _entry('sky.server.plugins', 'load_plugins', API_SERVER,
           'plugin.serve_controller.load_plugins: in the serve controller'),
    _entry('sky.server.plugins', 'PluginContext.CONTROLLER', API_SERVER,
           'plugin.serve_controller.load_plugins: the context it loads in'),
    _entry('sky.serve.service', '', API_SERVER,
           'plugin.serve_controller: the module it runs as __main__'),
    _entry('sky.serve.constants', 'CONTROLLER_TEMPLATE', API_SERVER,
           'plugin.takeover._serve_controller_loads_plugins: the template '
           'whose rendering starts the controller through ours'),
    _entry('sky.serve.constants', 'SERVICE_REGISTER_TIMEOUT_SECONDS',
           API_SERVER, 'plugin.takeover._serve_registration_waits_for_plugins: '
           'raised'),
    _entry('sky.serve.constants', 'LB_CONTROLLER_SYNC_INTERVAL_SECONDS',
           API_SERVER, 'recovery.serve_notice.leave_at_notice: the drain '
           'delay covers it'),
    _entry('sky.serve.serve_utils', 'ServeCodeGen._build', API_SERVER,
           'plugin.takeover._serve_codegen_loads_plugins: wrapped; the code '
           'run on the controller\'s host loads the plugins first'),
    _entry('sky.utils.common_utils', 'fill_template', API_SERVER,
           'plugin.takeover._serve_controller_loads_plugins: wrapped',
           keywords=('template_ref', 'variables', 'output_path')),
    _entry('sky.serve.replica_managers',
           'SkyPilotReplicaManager._probe_all_replicas', API_SERVER,
           'recovery.serve_notice.install: wrapped; replicas in their notice '
           'leave after each probe round'),
    _entry('sky.serve.replica_managers',
           'SkyPilotReplicaManager._terminate_replica', API_SERVER,
           'recovery.serve_notice.leave_at_notice: recycles a replica',
           keywords=('sync_down_logs', 'replica_drain_delay_seconds',
                     'is_scale_down')),
    _entry('sky.serve.replica_managers', 'SkyPilotReplicaManager.lock',
           API_SERVER, 'recovery.serve_notice.leave_at_notice: held',
           on_instances=True),
    _entry('sky.serve.replica_managers',
           'SkyPilotReplicaManager._service_name', API_SERVER,
           'recovery.serve_notice.leave_at_notice: the replicas\' service',
           on_instances=True),
    _entry('sky.serve.replica_managers',
           'SkyPilotReplicaManager._down_thread_pool', API_SERVER,
           'recovery.serve_notice.retry_failed_teardowns: no teardown under '
           'way', on_instances=True),
    _entry('sky.serve.serve_state', 'get_replicas_at_status', API_SERVER,
           'recovery.serve_notice.retry_failed_teardowns: FAILED_CLEANUP'),
    _entry('sky.serve.replica_managers', 'SkyPilotReplicaManager._is_pool',
           API_SERVER, 'recovery.serve_notice.install: pools are left alone',
           on_instances=True),
    _entry('sky.serve.replica_managers', 'ReplicaInfo.is_ready', API_SERVER,
           'recovery.serve_notice.replicas_in_notice: ready replicas only'),
    _entry('sky.serve.replica_managers',
           'SkyPilotReplicaManager._handle_sky_down_finish', API_SERVER,
           'recovery.serve_notice.install: wrapped; a failed teardown of a '
           'Mithril replica keeps its record', keywords=('info', 'format_exc')),
    _entry('sky.serve.replica_managers', 'ReplicaInfo.status_property',
           API_SERVER, 'recovery.serve_notice.keep_failed_teardown: '
           'sky_down_status set FAILED', on_instances=True),
    _entry('sky.utils.common_utils', 'ProcessStatus.FAILED', API_SERVER,
           'recovery.serve_notice.keep_failed_teardown'),
    _entry('sky.serve.replica_managers', 'ReplicaInfo.cluster_name',
           API_SERVER, 'recovery.serve_notice.replicas_in_notice',
           on_instances=True),
    _entry('sky.serve.replica_managers', 'ReplicaInfo.replica_id',
           API_SERVER, 'recovery.serve_notice.leave_at_notice',
           on_instances=True),
    _entry('sky.serve.serve_state', 'get_replica_infos', API_SERVER,
           'recovery.serve_notice.leave_at_notice: the service\'s replicas'),
    _entry('sky.serve.replica_managers',
           'SkyPilotReplicaManager.update_version', API_SERVER,
           'recovery.serve_update.install: wrapped; the active versions are '
           'set as soon as replicas move in place',
           keywords=('version', 'spec', 'update_mode')),
    _entry('sky.serve.serve_utils',
           'set_service_status_and_active_versions_from_replica', API_SERVER,
           'recovery.serve_update.install: what the prober calls after each '
           'round', keywords=('service_name', 'replica_infos', 'update_mode')),
    _entry('sky.serve.serve_state', 'get_replica_info_from_id', API_SERVER,
           'recovery.serve_notice.leave_at_notice: the replica still serves'),
    _entry('sky.serve.serve_state', 'add_or_update_replica', API_SERVER,
           'recovery.serve_notice.keep_failed_teardown: keeps the record'),
    _entry('sky.serve.serve_state', 'get_service_from_name', API_SERVER,
           'recovery.back_to_reservation: a pool\'s worker is never moved'),
    _entry('sky.core', 'cost_report', API_SERVER,
           'plugin.takeover._charges_reach_cost_report: wrapped so Mithril '
           'clusters show what their bids were charged'),
    _entry('sky.utils.common_utils', 'make_cluster_name_on_cloud', API_SERVER,
           'plugin.cost_report.bid_name: a cluster\'s bid name, for the user '
           'who launched it', keywords=('max_length', 'add_user_hash')),
    _entry(_CLOUD, 'Mithril.max_cluster_name_length', API_SERVER,
           'plugin.cost_report.bid_name: how SkyPilot cuts the name'),
    _entry(_BACKEND, 'CloudVmRayBackend._check_existing_cluster', API_SERVER,
           'plugin.takeover._task_config_reaches_existing_clusters: wrapped so a '
           'relaunch\'s `config.mithril` replaces the old one'),
    _entry(_BACKEND, 'RetryingVmProvisioner.ToProvisionConfig.resources',
           API_SERVER, 'plugin.takeover._task_config_reaches_existing_clusters: '
           'the resources to provision', on_instances=True),
    _entry(_BACKEND, 'RetryingVmProvisioner.ToProvisionConfig.prev_handle',
           API_SERVER, 'plugin.takeover._task_config_reaches_existing_clusters: '
           'whether the cluster exists', on_instances=True),
    _entry('sky.resources', 'Resources._cluster_config_overrides', API_SERVER,
           'plugin.takeover._task_config_reaches_existing_clusters: set on a '
           'copy, which Resources.copy would merge', on_instances=True),
    _entry('sky.task', 'Task.resources', API_SERVER,
           'plugin.takeover._task_config_reaches_existing_clusters and '
           'recovery.strategy._launch_in: the task\'s resources',
           on_instances=True),
    _entry('sky.task', 'Task.set_resources', API_SERVER,
           'recovery.strategy._launch_in: the relaunch\'s regions'),
    _entry('sky.dag', 'Dag.tasks', API_SERVER,
           'recovery.strategy._launch_in: the job\'s task', on_instances=True),
    # The cloud (cloud.py): what it uses and what it overrides.
    _entry('sky.clouds', _FEATURES, API_SERVER,
           'cloud._UNSUPPORTED: what Mithril does not offer'),
    *(_entry('sky.clouds', f'{_FEATURES}.{feature}', API_SERVER,
             'cloud._UNSUPPORTED: not offered on Mithril')
      for feature in ('IMAGE_ID', 'CUSTOM_DISK_TIER',
                      'CUSTOM_NETWORK_TIER', 'CUSTOM_MULTI_NETWORK',
                      'LOCAL_DISK', 'CLONE_DISK_FROM_CLUSTER',
                      'HOST_CONTROLLERS', 'HIGH_AVAILABILITY_CONTROLLERS')),
    _entry('sky.clouds', f'{_FEATURES}.OPEN_PORTS', API_SERVER,
           'cloud.Mithril._unsupported_features_for_resources: ports Mithril '
           'cannot open'),
    *(_entry('sky.clouds', f'{_FEATURES}.{feature}', API_SERVER,
             'cloud.Mithril._unsupported_features_for_resources: not on a '
             'CPU VM type (one machine, billed until deleted)')
      for feature in ('MULTI_NODE', 'STOP', 'AUTOSTOP')),
    _entry('sky.clouds', 'OpenPortsVersion.LAUNCH_ONLY', API_SERVER,
           'cloud.Mithril.OPEN_PORTS_VERSION: run_instances gets the ports at '
           'every launch and start'),
    _entry('sky.clouds', 'Region', API_SERVER, 'cloud.Mithril: its regions'),
    _entry('sky.clouds', 'Region.name', API_SERVER,
           'cloud.Mithril.regions_with_offering and '
           'make_deploy_resources_variables: the region\'s name'),
    _entry('sky.clouds', 'Zone', API_SERVER,
           'cloud.Mithril.make_deploy_resources_variables: its signature'),
    _entry('sky.clouds.cloud', 'Region', API_SERVER,
           'catalog.mithril_catalog: the regions it returns'),
    _entry('sky.clouds.cloud', 'Cloud.is_same_cloud', API_SERVER,
           'plugin.takeover._task_config_reaches_existing_clusters: a Mithril '
           'cluster?'),
    _entry('sky.clouds.cloud', 'Cloud.canonical_name', API_SERVER,
           'recovery.runtime.is_mithril, cloud._account_of and plugin.cost_report: a Mithril '
           'cluster?'),
    *(_entry(_CLOUD, f'Mithril.{method}', API_SERVER,
             'cloud.Mithril: overridden')
      for method in ('_REPR', 'OPEN_PORTS_VERSION', '__getstate__',
                     '_unsupported_features_for_resources',
                     'instance_type_exists', 'regions',
                     'regions_with_offering', 'zones_provision_loop',
                     'validate_region_zone',
                     'get_vcpus_mem_from_instance_type',
                     'get_accelerators_from_instance_type',
                     'get_default_instance_type',
                     'instance_type_to_hourly_cost',
                     'accelerators_to_hourly_cost', 'get_egress_cost',
                     'get_feasible_launchable_resources',
                     '_get_feasible_launchable_resources',
                     '_check_compute_credentials', '_check_credentials',
                     'get_credential_file_mounts',
                     'make_deploy_resources_variables')),
    _entry('sky.exceptions', 'InvalidCloudCredentials', API_SERVER,
           'cloud._account_for_launch: credential problems block the cloud'),
    _entry('sky.exceptions', 'InvalidCloudConfigs', API_SERVER,
           'cloud._check_budget: a launch over max_hourly_spend leaves '
           'Mithril out'),
    _entry('sky.utils.common_utils', 'get_current_request_id', API_SERVER,
           'cloud._first_time_this_launch: a note once per request'),
    _entry('sky.utils.resources_utils', 'FeasibleResources', API_SERVER,
           'cloud.Mithril: the launchable resources it ranks'),
    _entry('sky.utils.resources_utils', 'FeasibleResources.resources_list',
           API_SERVER, 'cloud.Mithril.get_feasible_launchable_resources and '
           '_rank: the candidates', on_instances=True),
    _entry('sky.utils.resources_utils', 'FeasibleResources.fuzzy_candidate_list',
           API_SERVER, 'cloud.Mithril._rank: kept as SkyPilot found them',
           on_instances=True),
    _entry('sky.utils.resources_utils', 'DiskTier', API_SERVER,
           'cloud.Mithril.get_default_instance_type and catalog.mithril_catalog.'
           'get_default_instance_type: their signatures'),
    _entry('sky.utils.resources_utils', 'make_ray_custom_resources_str',
           API_SERVER, 'cloud.Mithril.make_deploy_resources_variables and '
           'recovery.staging.set_up_runtime: Ray\'s GPU resources'),
    _entry('sky.utils.resources_utils', 'ClusterName', API_SERVER,
           'cloud.Mithril.make_deploy_resources_variables and '
           'recovery.staging.set_up_runtime: the cluster\'s names'),
    _entry('sky.utils.resources_utils', 'ClusterName.display_name', API_SERVER,
           'cloud.Mithril.make_deploy_resources_variables: a recovering cluster?',
           on_instances=True),
    _entry('sky.utils.resources_utils', 'ClusterName.name_on_cloud', API_SERVER,
           'cloud.Mithril.make_deploy_resources_variables: a note once per '
           'cluster', on_instances=True),
    *(_entry('sky.resources', f'Resources.{attribute}', API_SERVER,
             f'cloud.Mithril, recovery.strategy, recovery.runtime: '
             f'the resources\' {attribute}')
      for attribute in ('cluster_config_overrides', 'cloud', 'region', 'zone',
                        'instance_type', 'accelerators', 'cpus', 'memory',
                        'use_spot', 'max_hourly_cost', 'ports', 'copy',
                        'assert_launchable')),
    *(_entry('sky.utils.resources_utils', helper, API_SERVER,
             'provision.public_ports, recovery.staging.open_ports: the '
             'task\'s ports and ranges')
      for helper in ('port_ranges_to_set', 'port_set_to_ranges')),
    _entry('sky.utils.volume', 'VolumeMount', API_SERVER,
           'cloud.Mithril.make_deploy_resources_variables: its signature'),
    # The catalog (catalog/).
    _entry(_CATALOG_COMMON, 'LazyDataFrame', API_SERVER,
           'catalog.mithril_catalog: our catalog with live prices over it',
           keywords=('update_if_stale_func',)),
    _entry(_CATALOG_COMMON, 'InstanceTypeInfo', API_SERVER,
           'catalog.mithril_catalog.list_accelerators: its signature'),
    *(_entry(_CATALOG_COMMON, helper, API_SERVER,
             'catalog.mithril_catalog: the query as on every cloud')
      for helper in ('instance_type_exists_impl', 'validate_region_zone_impl',
                     'get_hourly_cost_impl',
                     'get_vcpus_mem_from_instance_type_impl',
                     'get_accelerators_from_instance_type_impl',
                     'get_arch_from_instance_type_impl',
                     'get_instance_type_for_cpus_mem_impl',
                     'get_region_zones', 'list_accelerators_impl')),
    _entry(_CATALOG_COMMON, 'get_instance_type_for_accelerator_impl', API_SERVER,
           'catalog.mithril_catalog.get_instance_type_for_accelerator',
           keywords=('df', 'acc_name', 'acc_count', 'cpus', 'memory', 'use_spot',
                     'region', 'zone', 'max_hourly_cost')),
    _entry(_CONSTANTS, 'CATALOG_SCHEMA_VERSION', API_SERVER,
           'catalog.live_prices._publish_for_client, plugin.setup.'
           'publish_catalog, plugin.takeover._controllers_get_common_catalogs '
           'and devtools.sandbox: where SkyPilot\'s catalog is'),
    # SSH keys and settings (account/ssh_keys.py, task/settings.py).
    _entry('sky.authentication', 'configure_ssh_info', API_SERVER,
           'account.ssh_keys.setup_mithril_authentication: SkyPilot\'s own last step'),
    _entry('sky.utils.auth_utils', 'get_or_generate_keys', API_SERVER,
           'account.ssh_keys.setup_mithril_authentication: the key Mithril gets; '
           'commands.keys.keys_for_new_reservation: a reservation carries it'),
    _entry('sky.utils.common_utils', 'get_user_hash', API_SERVER,
           'account.ssh_keys.ssh_key_fid_for: the registered key\'s name; '
           'plugin.cost_report.bid_name: a record without a user'),
    _entry('sky.skypilot_config', 'get_nested', API_SERVER,
           'task.settings.sections_from_skypilot: the user\'s `plugins.mithril`'),
    # SkyPilot's state, read by `sky-mithril` commands and the jobs controller.
    _entry('sky.global_user_state', 'get_clusters', API_SERVER,
           'provision.sky_clusters: bulk deletes leave SkyPilot\'s bids alone'),
    _entry('sky.global_user_state', 'get_cluster_yaml_dict', API_SERVER,
           'recovery.runtime.provider_config, recovery.strategy and '
           'cloud._account_of: the cluster\'s config'),
    _entry('sky.global_user_state', 'get_handle_from_cluster_name', API_SERVER,
           'recovery.strategy._StandbyRecovery.recover, cloud._account_of and '
           'provision.node_key_renewal.push_to_nodes: the cluster\'s record'),
    _entry('sky.global_user_state', 'update_cluster_handle', API_SERVER,
           'recovery.strategy.make_standby_the_clusters_bid: the record '
           'points at the standby'),
    # Managed jobs: the runtime (recovery/runtime) and the recovery
    # strategies (recovery/strategy), in the jobs controller.
    *(_entry(_RUNTIME, f'ManagedJobRuntime.{method}', API_SERVER,
             'recovery.runtime.MithrilJobRuntime: implemented')
      for method in ('get_job_status', 'get_job_submitted_at',
                     'get_job_ended_at', 'get_exit_codes', 'download_logs',
                     'on_before_recovery', 'tail_logs', 'job_group_envs',
                     'k8s_dns_addresses_for_task',
                     'k8s_dns_addresses_for_handle')),
    _entry('sky.backends', 'CloudVmRayBackend', API_SERVER,
           'recovery.runtime and recovery.strategy: SkyPilot\'s backend'),
    _entry(_BACKEND, 'CloudVmRayBackend.get_job_status', API_SERVER,
           'recovery.runtime._finished_status: a job that ended in the notice',
           keywords=('job_ids', 'stream_logs')),
    _entry(_BACKEND, 'CloudVmRayBackend.cancel_jobs', API_SERVER,
           'recovery.strategy.move_to_standby: the job on the old node',
           keywords=('jobs', 'cancel_all')),
    _entry('sky.skylet.job_lib', 'JobStatus.is_terminal', API_SERVER,
           'recovery.runtime._finished_status: the job ended?'),
    *(_entry(_BACKEND, f'{_HANDLE}.{attribute}', API_SERVER,
             'recovery.runtime, recovery.strategy, provision.sky_clusters, '
             f'cloud._account_of: the cluster record\'s {attribute}',
             on_instances=True)
      for attribute in ('cluster_name', 'cluster_name_on_cloud',
                        'launched_resources', 'cluster_yaml')),
    _entry(_BACKEND, f'{_HANDLE}.launched_nodes', API_SERVER,
           'provision.node_key_renewal.push_to_nodes: every node reached?',
           on_instances=True),
    _entry(_BACKEND, f'{_HANDLE}.get_command_runners', API_SERVER,
           'recovery.notice.wait_for_preemption_hooks and recovery.'
           'staging.fetch_runtime_files: SSH to the head node; provision.'
           'node_key_renewal.push_to_nodes: SSH to every node'),
    _entry(_BACKEND, f'{_HANDLE}.update_cluster_ips', API_SERVER,
           'recovery.staging.pointed_at: a record of the standby\'s nodes',
           keywords=('cluster_info',)),
    _entry(_BACKEND, f'{_HANDLE}.close_skylet_ssh_tunnel', API_SERVER,
           'recovery.strategy.make_standby_the_clusters_bid: the tunnel to '
           'the old head'),
    _entry(_BACKEND, f'{_HANDLE}.is_grpc_enabled', API_SERVER,
           'recovery.staging.stage_job: SSH, not the old head\'s tunnel',
           on_instances=True),
    _entry('sky.utils.command_runner', 'CommandRunner.run', API_SERVER,
           'recovery.notice.wait_for_preemption_hooks: the "hooks done" '
           'file; provision.public_ports.open_on_head: the head\'s forwarders',
           keywords=('stream_logs', 'require_outputs')),
    _entry('sky.utils.command_runner', 'CommandRunner.node', API_SERVER,
           'provision.node_key_renewal.records_the_nodes: where a runner '
           'connects', on_instances=True),
    _entry('sky.utils.command_runner', 'CommandRunner.rsync', API_SERVER,
           'recovery.staging.fetch_runtime_files: from the old node; provision.'
           'node_key_renewal.push_to_nodes: a renewed key to every node',
           keywords=('up', 'stream_logs')),
    _entry('sky.execution', '_execute', API_SERVER,
           'recovery.staging._run_launch_stages: SkyPilot\'s launch stages '
           'on the standby',
           keywords=('entrypoint', 'stream_logs', 'handle', 'backend', 'stages',
                     'cluster_name', 'down', 'idle_minutes_to_autostop',
                     '_request_name', '_is_launched_by_jobs_controller')),
    *(_entry('sky.execution', f'Stage.{stage}', API_SERVER,
             'recovery.staging.stage_job and submit_job: a launch stage')
      for stage in ('SYNC_WORKDIR', 'SYNC_FILE_MOUNTS', 'SETUP', 'PRE_EXEC',
                    'EXEC')),
    _entry('sky.server.requests.request_names',
           'AdminPolicyRequestName.CLUSTER_LAUNCH', API_SERVER,
           'recovery.staging._run_launch_stages: the request it runs as'),
    _entry(_STRATEGY, '_AUTODOWN_MINUTES', API_SERVER,
           'recovery.staging._run_launch_stages: the controller\'s autodown '
           'on the standby'),
    _entry(_STRATEGY, 'EagerFailoverStrategyExecutor', API_SERVER,
           'recovery.strategy.EagerNextRegionWithStandby: its base'),
    _entry(_STRATEGY, 'FailoverStrategyExecutor', API_SERVER,
           'recovery.strategy.FailoverWithStandby: its base'),
    _entry(_STRATEGY, 'StrategyExecutor.recover', API_SERVER,
           'recovery.strategy._StandbyRecovery.recover: overridden; '
           'super() when no standby (_recover_as_skypilot_does)'),
    _entry(_STRATEGY, 'StrategyExecutor._launch', API_SERVER,
           'recovery.strategy._StandbyRecovery._launch_in: the relaunch',
           keywords=('raise_on_failure', 'recovery')),
    _entry(_STRATEGY, 'StrategyExecutor._cleanup_cluster', API_SERVER,
           'recovery.strategy._StandbyRecovery._relaunch_in: tears the '
           'preempted cluster down'),
    _entry(_STRATEGY, 'StrategyExecutor._try_cancel_jobs', API_SERVER,
           'recovery.strategy._StandbyRecovery._move_onto_standby: a job '
           'it may have submitted'),
    _entry(_STRATEGY, 'StrategyExecutor._wait_until_job_starts_on_cluster',
           API_SERVER, 'recovery.strategy._StandbyRecovery._move_onto_standby: '
           'the job runs on the standby'),
    *(_entry(_STRATEGY, f'StrategyExecutor.{attribute}', API_SERVER,
             f'recovery.strategy._StandbyRecovery: the strategy\'s {attribute}',
             on_instances=True)
      for attribute in ('cluster_name', 'pool', 'dag')),
    _entry('sky.catalog', 'get_region_zones_for_instance_type', API_SERVER,
           'recovery.strategy._other_regions: where the type is offered',
           keywords=('clouds',)),
    _entry('sky.backends.backend_utils', 'ssh_credential_from_yaml', API_SERVER,
           'recovery.staging.set_up_runtime: SSH to the standby',
           keywords=('ssh_user',)),
    _entry(_SETUP, 'internal_file_mounts', API_SERVER,
           'recovery.staging.set_up_runtime: the runtime\'s files'),
    _entry(_SETUP, 'setup_runtime_on_cluster', API_SERVER,
           'recovery.staging.set_up_runtime: SkyPilot\'s runtime'),
    _entry(_SETUP, 'start_ray_on_head_node', API_SERVER,
           'recovery.staging.set_up_runtime: Ray on the head',
           keywords=('custom_resource', 'cluster_info', 'ssh_credentials')),
    _entry(_SETUP, 'start_ray_on_worker_nodes', API_SERVER,
           'recovery.staging.set_up_runtime: Ray on the workers',
           keywords=('no_restart', 'custom_resource', 'ray_port', 'cluster_info',
                     'ssh_credentials')),
    _entry(_SETUP, 'start_skylet_on_head_node', API_SERVER,
           'recovery.staging.set_up_runtime: the skylet'),
    _entry('sky.provision.logging', 'setup_provision_logging', API_SERVER,
           'recovery.staging.set_up_runtime: the standby\'s setup log'),
    _entry('sky.provision.provisioner', 'wait_for_ssh', API_SERVER,
           'recovery.staging.set_up_runtime: the standby is reachable; '
           'provision.public_ports.open_on_head: the head is'),
    _entry('sky.provision', 'get_command_runners', API_SERVER,
           'provision.public_ports.open_on_head: SSH to the head'),
    _entry(_PROVISION_COMMON, 'ClusterInfo.get_head_instance', API_SERVER,
           'provision.public_ports.open_on_head and provision.instance.'
           'query_ports: the head'),
    _entry(_PROVISION_COMMON, 'ClusterInfo.provider_config', API_SERVER,
           'provision.public_ports.open_on_head: kept for the head alone',
           on_instances=True),
    *(_entry(_PROVISION_COMMON, f'InstanceInfo.{attribute}', API_SERVER,
             f'provision.public_ports.open_on_head: the head\'s {attribute}',
             on_instances=True)
      for attribute in ('instance_id', 'external_ip')),
    _entry(_PROVISION_COMMON, 'query_ports_passthrough', API_SERVER,
           'provision.instance.query_ports: each port at the head\'s address'),
    _entry(_CONSTANTS, 'SKY_REMOTE_RAY_PORT', API_SERVER,
           'recovery.staging.set_up_runtime: Ray\'s port'),
    # Whether a process shares the API server's database (shared_state.py).
    *(_entry(_CONSTANTS, constant, API_SERVER,
             'shared_state.apart_from_api_server: a remote controller\'s '
             'SkyPilot database is its own')
      for constant in ('OVERRIDE_CONSOLIDATION_MODE',
                       'ENV_VAR_DB_CONNECTION_URI')),
    _entry('sky.jobs.constants', 'JOBS_CONSOLIDATION_RELOADED_SIGNAL_FILE',
           API_SERVER, 'shared_state.apart_from_api_server: the API server '
           'runs the jobs controllers on its host'),
    # On the nodes: the provisioner (provision/) that autostop and autodown
    # reach, and the node hook (node_hook.py).
    _entry('sky.sky_logging', 'init_logger', NODE,
           'provision, cloud, auth, plugin: our loggers'),
    _entry(_PROVISION_COMMON, 'ProvisionConfig', NODE,
           'provision.instance and provision.cluster_bid: the launch\'s input'),
    *(_entry(_PROVISION_COMMON, f'ProvisionConfig.{field}', NODE,
             f'provision.instance and provision.cluster_bid: the launch\'s {field}',
             on_instances=True)
      for field in ('provider_config', 'authentication_config',
                    'node_config', 'count', 'resume_stopped_nodes',
                    'ports_to_open_on_launch')),
    _entry(_PROVISION_COMMON, 'ProvisionRecord', NODE,
           'provision.instance.run_instances: what the launch did',
           keywords=('provider_name', 'region', 'zone', 'cluster_name',
                     'head_instance_id', 'resumed_instance_ids',
                     'created_instance_ids')),
    _entry(_PROVISION_COMMON, 'ClusterInfo', NODE,
           'provision.cluster_bid.cluster_info: the bid\'s nodes; provision.'
           'public_ports.open_on_head: the head alone',
           keywords=('instances', 'head_instance_id', 'provider_name',
                     'provider_config', 'ssh_user')),
    _entry(_PROVISION_COMMON, 'ClusterInfo.ssh_user', API_SERVER,
           'recovery.staging.set_up_runtime: SSH to the standby; provision.'
           'public_ports.open_on_head: to the head', on_instances=True),
    _entry(_PROVISION_COMMON, 'InstanceInfo', NODE,
           'provision.cluster_bid.cluster_info: one node',
           keywords=('instance_id', 'internal_ip', 'external_ip', 'ssh_port',
                     'tags')),
    _entry(_PROVISION_COMMON, 'Endpoint', NODE,
           'provision.instance.query_ports: its signature'),
    _entry(_PROVISION_COMMON, 'StopFailoverError', NODE,
           'provision.cluster_bid: a bid that may still bill stops the failover'),
    _entry('sky.utils.status_lib', 'ClusterStatus', NODE,
           'provision.status_table and provision.instance: a node\'s status'),
    *(_entry('sky.utils.status_lib', f'ClusterStatus.{status}', NODE,
             'provision.status_table: a bid\'s status as SkyPilot\'s')
      for status in ('INIT', 'UP', 'STOPPED')),
    _entry('sky.skylet.skylet', '', NODE,
           'node_hook._is_skylet: the skylet\'s module, on its command line'),
    _entry('sky.skylet.hook_executor', 'try_claim_teardown', NODE,
           'recovery.notice._run_preemption_hooks: the hooks run once'),
    _entry('sky.skylet.hook_executor', 'PREEMPTION', NODE,
           'recovery.notice._run_preemption_hooks: the event'),
    _entry('sky.skylet.hook_executor', 'run', NODE,
           'recovery.notice._run_preemption_hooks: the task\'s hooks'),
    _entry('sky.skylet.autostop_lib', 'get_hooks', NODE,
           'recovery.notice._run_preemption_hooks: the hooks SkyPilot stored'),
    # Dev tools (devtools/, emulator/hosts/vm_image).
    _entry('sky.backends.backend_utils', '_TEST_IP_LIST', DEVTOOLS,
           'devtools.sandbox._SITECUSTOMIZE: the network probe goes to loopback'),
    _entry('sky.server.common', 'DEFAULT_SERVER_PORT', DEVTOOLS,
           'devtools.sandbox._queue_manager_port: SkyPilot\'s formula'),
    _entry('sky.server.requests.queues.mp_queue', 'DEFAULT_QUEUE_MANAGER_PORT',
           DEVTOOLS, 'devtools.sandbox._queue_manager_port: SkyPilot\'s formula'),
    _entry('sky.server.version_check', 'VERSION_CACHE_FILE', DEVTOOLS,
           'devtools.sandbox._seed_version_cache: the release check offline'),
    _entry('sky.provision.provisioner', '_MAX_RETRY', DEVTOOLS,
           'devtools.chaos.SKYPILOT_TEARDOWN_TRIES: mirrors its value'),
    *(_entry(_PROVISION_COMMON, f'ProvisionConfig.{field}', DEVTOOLS,
             'devtools.provisioning.provision_config: passed as SkyPilot does',
             on_instances=True)
      for field in ('docker_config', 'tags')),
    *(_entry(_CONSTANTS, constant, DEVTOOLS,
             'emulator.hosts.vm_image: the node image has SkyPilot\'s runtime')
      for constant in ('SKY_REMOTE_RAY_VERSION', 'RAY_INSTALLATION_COMMANDS',
                       'SKYPILOT_WHEEL_INSTALLATION_COMMANDS',
                       'UV_INSTALLATION_COMMANDS',
                       'SKY_USER_ENV_CREATION_COMMANDS',
                       'RAY_SKYPILOT_INSTALLATION_COMMANDS')),
    _entry('sky.backends.wheel_utils', 'build_sky_wheel', DEVTOOLS,
           'emulator.hosts.vm_image: the wheel as `sky launch` builds it'),
)


def lacking(sides: Iterable[str]) -> List[str]:
    """Everything of the names needed on `sides` that this SkyPilot lacks."""
    wanted = set(sides)
    return [what for entry in NAMES if entry.side in wanted
            for what in entry.lacking()]


def refusal(missing: List[str]) -> str:
    """The one message that names each missing name and this SkyPilot."""
    version = getattr(importlib.import_module('sky'), '__version__', 'unknown')
    return (f'sky-mithril {sky_mithril.__version__} supports SkyPilot '
            f'{SUPPORTED_SKYPILOT}, but this is SkyPilot {version}, which '
            f'lacks: {", ".join(missing)}. Install `skypilot==0.14.1` or a '
            'sky-mithril release made for this SkyPilot.')


def require(sides: Iterable[str]) -> None:
    """Raises PluginCompatibilityError naming everything `sides` need that
    this SkyPilot lacks."""
    missing = lacking(sides)
    if missing:
        raise PluginCompatibilityError(refusal(missing))
