"""Wires sky-mithril into a running SkyPilot: every hook point, idempotently.

SkyPilot 0.14.1 names its built-in Mithril cloud in several places; each is
redirected here. Every SkyPilot name the plugin relies on is checked first
(`skypilot_names`): the install fails loudly, naming each missing name and the
SkyPilot version, if any of them has moved.
"""

import contextvars
import functools
import hashlib
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

import sky
from sky import sky_logging

import sky_mithril
from sky_mithril import CLOUD_NAME
from sky_mithril import skypilot_names

logger = sky_logging.init_logger('sky.sky_mithril.plugin')

TEMPLATE_PATH = Path(__file__).parent.parent / 'templates' / 'mithril-ray.yml.j2'

_done: Set[str] = set()
"""The install steps that have completed in this process."""


def _take_over_cloud_class() -> type:
    """Makes our class the one every `Mithril` name resolves to."""
    from sky import clouds  # pylint: disable=import-outside-toplevel
    from sky.clouds import mithril as builtin_module  # pylint: disable=import-outside-toplevel
    from sky.utils import registry  # pylint: disable=import-outside-toplevel

    from sky_mithril import cloud  # pylint: disable=import-outside-toplevel

    ours = cloud.Mithril
    # Pickled handles then name the built-in's path, which a client without
    # the plugin loads as the built-in class.
    ours.__module__ = builtin_module.__name__
    ours.__qualname__ = 'Mithril'
    builtin_module.Mithril = ours
    clouds.Mithril = ours
    sky.Mithril = ours
    registry.CLOUD_REGISTRY[CLOUD_NAME] = ours()
    return ours


def _take_over_catalog() -> None:
    import sky.catalog  # pylint: disable=import-outside-toplevel
    from sky.catalog import common  # pylint: disable=import-outside-toplevel

    from sky_mithril.catalog import mithril_catalog  # pylint: disable=import-outside-toplevel
    from sky_mithril.catalog import catalog_files  # pylint: disable=import-outside-toplevel
    from sky_mithril.catalog import live_prices  # pylint: disable=import-outside-toplevel
    sys.modules['sky.catalog.mithril_catalog'] = mithril_catalog
    sky.catalog.mithril_catalog = mithril_catalog  # type: ignore[attr-defined]
    target = Path(common.get_catalog_path('mithril/vms.csv'))
    # The catalog the plugin serves: the live overlay once there is one (it
    # alone lists the project's CPU VM types), else the shipped one.
    overlay = live_prices.overlay_path()
    try:
        catalog_files.publish_for_skypilot(
            target, overlay if overlay.is_file() else None)
    except OSError as e:
        # Only the plugin-less `sky` client reads this copy; the API server
        # must still start (for every cloud) when the home is read-only.
        logger.warning(f'Could not publish the Mithril catalog to {target} '
                       f'({e}); the `sky` client may then refuse a Mithril '
                       'instance_type. Run `sky-mithril setup` as the user '
                       'who runs `sky` to publish it.')


# SkyPilot's accelerator registry, which a controller downloads from GitHub
# on first use unless it is there (`sky.utils.accelerator_registry`).
COMMON_CATALOGS = ('common/accelerators.csv', 'common/metadata.csv')


def _controllers_get_common_catalogs() -> None:
    """A remote controller reads accelerator names with SkyPilot's common
    catalogs, which it downloads from GitHub on first use: a host without
    that reach (an air-gapped VPC, the emulator's hosts) cannot launch a
    GPU job at all. The API server's copies go up with the controller, as
    SkyPilot's locally modified cloud catalogs do, so the controller also
    names accelerators exactly as the server that accepted the job."""
    import os  # pylint: disable=import-outside-toplevel
    from sky.catalog import common  # pylint: disable=import-outside-toplevel
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel
    original = common.get_modified_catalog_file_mounts

    @functools.wraps(original)
    def with_common_catalogs() -> Dict[str, str]:
        mounts = original()
        for catalog in COMMON_CATALOGS:
            local = common.get_catalog_path(catalog)
            if os.path.isfile(local):
                mounts[os.path.join(constants.CATALOG_DIR,
                                    constants.CATALOG_SCHEMA_VERSION,
                                    catalog)] = local
        return mounts

    common.get_modified_catalog_file_mounts = with_common_catalogs


@functools.lru_cache(maxsize=1)
def node_package() -> Tuple[str, str]:
    """This package's folder and a hash of its code: the template copies it to
    every node under the hash, so a changed plugin re-runs the node setup."""
    root = Path(sky_mithril.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob('*')):
        if path.is_file() and '__pycache__' not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return str(root), digest.hexdigest()[:16]


def _template_override(task: Any, to_provision: Any, *,
                       _extra_launch_context: Dict[str, Any],
                       _is_launched_by_jobs_controller: bool) -> Any:
    """Every Mithril launch renders our template, which installs this
    package's provisioner into the nodes' SkyPilot (see node_hook)."""
    del task, to_provision, _extra_launch_context, _is_launched_by_jobs_controller
    from sky import provision  # pylint: disable=import-outside-toplevel
    package_dir, package_hash = node_package()
    return provision.TemplateSpec(template_path=str(TEMPLATE_PATH),
                                  variables={
                                      'mithril_node_package': package_dir,
                                      'mithril_node_package_hash': package_hash,
                                  })


def _take_over_provisioner() -> None:
    from sky import provision  # pylint: disable=import-outside-toplevel
    from sky.provision import mithril as builtin_provision  # pylint: disable=import-outside-toplevel

    from sky_mithril import provision as ours  # pylint: disable=import-outside-toplevel
    # The provisioner tells a cluster's bid from its standby by recovery's
    # records (`recovery.standby` plugs them in).
    from sky_mithril.recovery import standby  # pylint: disable=import-outside-toplevel,unused-import
    lacking = [
        name for name, value in vars(builtin_provision).items()
        if isinstance(value, types.FunctionType) and not hasattr(ours, name)
    ]
    if lacking:
        raise skypilot_names.PluginCompatibilityError(
            f'SkyPilot {sky.__version__}\'s built-in Mithril provisioner '
            f'defines {lacking}, which sky-mithril does not; those calls would '
            'reach the built-in. Use skypilot==0.14.1 or upgrade sky-mithril.')
    provision.register_provisioner(CLOUD_NAME,
                                   ours,
                                   template_override=_template_override)


def _take_over_authentication() -> None:
    from sky import authentication  # pylint: disable=import-outside-toplevel

    from sky_mithril.account import ssh_keys  # pylint: disable=import-outside-toplevel
    authentication.setup_mithril_authentication = (
        ssh_keys.setup_mithril_authentication)


def _extend_config_schema() -> None:
    """Adds `mithril:` to the config schema (task form) and `plugins.mithril`."""
    from sky import skypilot_config  # pylint: disable=import-outside-toplevel
    from sky.utils import schemas  # pylint: disable=import-outside-toplevel

    from sky_mithril.recovery import policy  # pylint: disable=import-outside-toplevel
    from sky_mithril.task import settings  # pylint: disable=import-outside-toplevel
    builtin_get_config_schema = schemas.get_config_schema

    def section_schema() -> Dict[str, Any]:
        """The task's settings and the managed-job recovery's, one section."""
        schema = settings.section_schema()
        schema['properties'].update(policy.schema_properties())
        return schema

    def get_config_schema_with_mithril(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        schema = builtin_get_config_schema(*args, **kwargs)
        schema['properties'].setdefault(CLOUD_NAME, section_schema())
        return schema

    schemas.get_config_schema = get_config_schema_with_mithril
    schemas.register_plugin_property(CLOUD_NAME, section_schema())
    for key in (*settings.KEYS, *policy.KEYS):
        skypilot_config.register_task_overrideable_config_key((CLOUD_NAME, key))


def _register_jobs_runtime() -> None:
    """Managed jobs on Mithril recover from the preemption notice on
    (`recovery.runtime`); only the jobs controller consults it."""
    from sky.jobs import runtime  # pylint: disable=import-outside-toplevel
    from sky_mithril.recovery import runtime as mithril_runtime  # pylint: disable=import-outside-toplevel
    runtime.register(mithril_runtime.MithrilJobRuntime())


# The cluster config's provider fields that are this launch's settings, not
# the cluster's identity (region, project, API).
LAUNCH_SETTINGS = ('limit_price_per_hour', 'provision_timeout', 'boot_timeout',
                   'instance_type_fid', 'volume_fids', 'max_hourly_spend')


def _launch_settings_reach_existing_clusters() -> None:
    """SkyPilot keeps an existing cluster's old `provider` section when it
    launches onto it again; the launch's own settings (a new limit price, a
    recovery's `recovery_limit_price`) must reach the bid, so they are taken
    from the new config like SkyPilot's own listed exceptions."""
    from sky.backends import backend_utils  # pylint: disable=import-outside-toplevel
    exceptions = backend_utils._RAY_YAML_KEYS_TO_RESTORE_EXCEPTIONS  # pylint: disable=protected-access
    for key in LAUNCH_SETTINGS:
        if ('provider', key) not in exceptions:
            exceptions.append(('provider', key))


def _task_config_reaches_existing_clusters() -> None:
    """SkyPilot launches onto an existing cluster with the resources it was
    launched with, config overrides included: a task's new
    `config.mithril` (a new limit price, timeouts, volumes) and its
    `max_hourly_cost` (the limit's cap) would never reach the cluster's
    config. For a Mithril cluster, the task's section and cap replace the
    old ones in the resources to provision."""
    # pylint: disable=import-outside-toplevel,protected-access
    from sky.backends import cloud_vm_ray_backend
    backend = cloud_vm_ray_backend.CloudVmRayBackend
    original = backend._check_existing_cluster

    @functools.wraps(original)
    def check_existing_cluster(self: Any, task: Any, *args: Any,
                               **kwargs: Any) -> Any:
        to_provision = original(self, task, *args, **kwargs)
        resources = to_provision.resources
        if (to_provision.prev_handle is None or resources.cloud is None or
                not resources.cloud.is_same_cloud(sky.Mithril())):
            return to_provision
        overrides = dict(resources.cluster_config_overrides)
        asked = next(iter(task.resources))
        section = asked.cluster_config_overrides.get(CLOUD_NAME)
        if (overrides.get(CLOUD_NAME) == section and
                resources.max_hourly_cost == asked.max_hourly_cost):
            return to_provision
        overrides.pop(CLOUD_NAME, None)
        if section is not None:
            overrides[CLOUD_NAME] = section
        # Resources.copy would merge the old section into the new one (a key
        # the task dropped would stay), so the copy's overrides are replaced.
        replaced = resources.copy(max_hourly_cost=asked.max_hourly_cost)
        replaced._cluster_config_overrides = overrides
        to_provision.resources = replaced
        return to_provision

    backend._check_existing_cluster = check_existing_cluster


def _take_over_recovery_strategies() -> None:
    """SkyPilot's EAGER_NEXT_REGION and FAILOVER, recovering a Mithril job
    through a standby bid (`recovery.strategy`); unchanged for other
    clouds."""
    from sky.utils import registry  # pylint: disable=import-outside-toplevel
    from sky_mithril.recovery import strategy  # pylint: disable=import-outside-toplevel
    strategies = registry.JOBS_RECOVERY_STRATEGY_REGISTRY
    strategies['eager_next_region'] = strategy.EagerNextRegionWithStandby
    strategies['failover'] = strategy.FailoverWithStandby


def _charges_reach_cost_report() -> None:
    """`sky cost-report` shows Mithril clusters at what their bids were
    charged, not at today's price times SkyPilot's duration: SkyPilot's
    report, as the API server and its workers compute it, passes through
    `plugin.cost_report`."""
    from sky import core  # pylint: disable=import-outside-toplevel
    from sky_mithril.plugin import cost_report  # pylint: disable=import-outside-toplevel
    original = core.cost_report

    # Named as SkyPilot's (functools.wraps), so a request that pickles it by
    # reference finds it again in a worker process.
    @functools.wraps(original)
    def cost_report_with_charges(*args: Any, **kwargs: Any) -> Any:
        return cost_report.with_charges(original(*args, **kwargs))

    core.cost_report = cost_report_with_charges


# How SkyPilot's serve controller template starts the controller, and how
# sky-mithril starts it instead (`plugin.serve_controller`).
SERVE_CONTROLLER_COMMAND = '-m sky.serve.service '
SERVE_CONTROLLER_WITH_PLUGINS = ('-m sky_mithril.plugin.serve_controller '
                                 'sky.serve.service ')


def _controller_has_the_plugin(variables: Dict[str, Any]) -> bool:
    """Whether the controller a SkyPilot controller template renders runs
    where sky-mithril is installed: on this host (consolidation mode), or
    on a remote host our wheel goes up to (`controller_wheel_path`)."""
    if variables.get('consolidation_mode_job_id') is not None:
        return True
    wheels = variables.get('plugin_wheel_file_mounts') or {}
    return any(Path(str(local)).name.startswith('sky_mithril-')
               for local in wheels.values())


def _serve_controller_loads_plugins() -> None:
    """SkyPilot's serve controller does not load plugins: it reads its
    replicas' endpoints and status with the built-in cloud, which refuses
    a Mithril replica's endpoint (the service never serves). It launches
    and tears down replicas through the API server. Where sky-mithril is
    installed beside it (consolidation mode: this host; a remote controller
    that gets our wheel, `sky-mithril setup --remote`) the controller task
    SkyPilot renders starts it through `plugin.serve_controller`, which
    loads them first. A remote controller without our wheel is left as
    SkyPilot starts it."""
    # pylint: disable=import-outside-toplevel
    from sky.serve import constants as serve_constants
    from sky.utils import common_utils
    original = common_utils.fill_template

    @functools.wraps(original)
    def fill_template(template_ref: str, variables: Dict[str, Any],
                      output_path: str) -> None:
        original(template_ref, variables, output_path)
        if (template_ref != serve_constants.CONTROLLER_TEMPLATE or
                not _controller_has_the_plugin(variables)):
            return
        rendered = Path(output_path).expanduser()
        text = rendered.read_text(encoding='utf-8')
        if SERVE_CONTROLLER_COMMAND not in text:
            logger.warning('sky-mithril: the serve controller template no '
                           'longer runs `python -m sky.serve.service`; the '
                           'controller starts without plugins, and cannot '
                           'reach replicas on Mithril.')
            return
        rendered.write_text(text.replace(SERVE_CONTROLLER_COMMAND,
                                         SERVE_CONTROLLER_WITH_PLUGINS),
                            encoding='utf-8')

    common_utils.fill_template = fill_template


# The first statement of the code SkyPilot runs on the serve controller's
# host (`ServeCodeGen`): where sky-mithril is installed, the plugins that
# host lists load (`plugin.serve_controller` loads them on import).
SERVE_CODEGEN_LOADS_PLUGINS = (
    "__import__('importlib.util').util.find_spec('sky_mithril') and "
    "__import__('sky_mithril.plugin.serve_controller')")


def _serve_codegen_loads_plugins() -> None:
    """`sky serve status`, `update`, `logs` and `down` run SkyPilot's code
    on the serve controller's host (`ServeCodeGen`) in a new Python process,
    without plugins: there the built-in cloud refuses a Mithril replica's
    endpoint ("Querying endpoints is not supported"), and the command fails
    while any replica is up. That code loads the plugins first where
    sky-mithril is installed (the API server's host in consolidation mode,
    a remote controller that got our wheel); elsewhere it runs as SkyPilot
    wrote it."""
    # pylint: disable=import-outside-toplevel
    from sky.serve import serve_utils
    codegen = serve_utils.ServeCodeGen
    original = codegen._build.__func__  # pylint: disable=protected-access

    @functools.wraps(original)
    def build(cls: Any, code: List[str]) -> str:
        return original(cls, [SERVE_CODEGEN_LOADS_PLUGINS, *code])

    codegen._build = classmethod(build)  # pylint: disable=protected-access


def _serve_replicas_leave_at_notice() -> None:
    """SkyServe replicas on Mithril are replaced from the preemption notice
    on (`recovery.serve_notice`); only the serve controller probes."""
    from sky_mithril.recovery import serve_notice  # pylint: disable=import-outside-toplevel
    serve_notice.install()


def _serve_update_keeps_replicas_serving() -> None:
    """Replicas an update keeps in place stay in the load balancer
    (`recovery.serve_update`)."""
    from sky_mithril.recovery import serve_update  # pylint: disable=import-outside-toplevel
    serve_update.install()


_DAG_NAMES_RESERVATION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    'sky_mithril_dag_names_reservation', default=False)


def _reservations_reach_the_optimizer() -> None:
    """SkyPilot asks clouds for their reservations only when its own config
    names some (`need_to_query_reservations`); it also asks while it
    optimizes a DAG whose task (or user) names a Mithril reservation, so the
    reservation's free instances count at no extra cost."""
    from sky import optimizer  # pylint: disable=import-outside-toplevel
    from sky.utils import resources_utils  # pylint: disable=import-outside-toplevel
    from sky_mithril import cloud  # pylint: disable=import-outside-toplevel
    original_optimize = optimizer.Optimizer.optimize
    original_need = resources_utils.need_to_query_reservations

    @functools.wraps(original_optimize)
    def optimize(dag: Any, *args: Any, **kwargs: Any) -> Any:
        token = _DAG_NAMES_RESERVATION.set(cloud.names_reservation(dag))
        try:
            return original_optimize(dag, *args, **kwargs)
        finally:
            _DAG_NAMES_RESERVATION.reset(token)

    @functools.wraps(original_need)
    def need_to_query_reservations() -> bool:
        return _DAG_NAMES_RESERVATION.get() or original_need()

    optimizer.Optimizer.optimize = staticmethod(optimize)  # type: ignore[method-assign]
    resources_utils.need_to_query_reservations = need_to_query_reservations


# How long `sky serve up` waits for a new service's controller to register.
# SkyPilot waits 60 s; a controller that loads the server's plugins first
# (`_serve_controller_loads_plugins`) on a busy API-server host can take
# longer, and the command then fails while the service starts anyway.
SERVICE_REGISTER_SECONDS = 300


def _serve_registration_waits_for_plugins() -> None:
    """Raises SkyPilot's wait for a service's registration (read by the
    code SkyPilot runs on the controller's host, which loads the plugins
    first: `_serve_codegen_loads_plugins`) to SERVICE_REGISTER_SECONDS."""
    from sky.serve import constants  # pylint: disable=import-outside-toplevel
    constants.SERVICE_REGISTER_TIMEOUT_SECONDS = max(
        constants.SERVICE_REGISTER_TIMEOUT_SECONDS, SERVICE_REGISTER_SECONDS)


_STEPS: Tuple[Callable[[], None], ...] = (
    _extend_config_schema, _take_over_catalog, _controllers_get_common_catalogs,
    _take_over_cloud_class,
    _take_over_provisioner, _take_over_authentication, _register_jobs_runtime,
    _take_over_recovery_strategies, _launch_settings_reach_existing_clusters,
    _task_config_reaches_existing_clusters, _charges_reach_cost_report,
    _reservations_reach_the_optimizer, _serve_controller_loads_plugins,
    _serve_codegen_loads_plugins, _serve_replicas_leave_at_notice,
    _serve_update_keeps_replicas_serving,
    _serve_registration_waits_for_plugins)


def install() -> None:
    """Idempotent, step by step: SkyPilot calls it twice in one API server
    process, and after a step failed a later call runs only what is left
    (a schema extended twice would raise in SkyPilot)."""
    skypilot_names.require(skypilot_names.CHECKED_AT_INSTALL)
    for step in _STEPS:
        if step.__name__ not in _done:
            step()
            _done.add(step.__name__)

