"""The `Mithril` cloud SkyPilot's optimizer, backend and `sky check` talk to.

It subclasses the built-in class and takes over its name
(`sky.clouds.mithril.Mithril`), so every place SkyPilot names the built-in —
`isinstance` checks, template lookup by type, the built-in's own `Mithril()`
calls, and handles unpickled by a client that has no plugin — resolves to it.
"""

import typing
from typing import Any, Dict, List, Optional, Tuple, Union

from sky import clouds
from sky import exceptions
from sky import sky_logging
from sky.clouds import mithril as builtin_mithril
from sky.utils import resources_utils

from sky_mithril.catalog import mithril_catalog
from sky_mithril import config
from sky_mithril import connection
from sky_mithril import credentials as credentials_lib
from sky_mithril.catalog import live_prices
from sky_mithril import money
from sky_mithril.api import errors

if typing.TYPE_CHECKING:
    from sky import resources as resources_lib
    from sky.utils import volume as volume_lib

logger = sky_logging.init_logger('sky.sky_mithril.cloud')
# Where the nodes' sky-mithril (and `ml`) look for credentials.
NODE_CREDENTIALS_PATH = '~/.config/mithril/config.yaml'

_F = clouds.CloudImplementationFeatures
_UNSUPPORTED: Dict[clouds.CloudImplementationFeatures, str] = {
    _F.OPEN_PORTS: 'Mithril instances have no port firewall API to drive.',
    _F.IMAGE_ID: 'Custom images are not offered through the Mithril bid API.',
    _F.CUSTOM_DISK_TIER: 'Mithril machines come with fixed disks.',
    _F.CUSTOM_NETWORK_TIER: 'Mithril machines come with a fixed network.',
    _F.CUSTOM_MULTI_NETWORK: 'Mithril machines come with a fixed network.',
    _F.LOCAL_DISK: 'Local disk size is fixed per Mithril instance type.',
    _F.CLONE_DISK_FROM_CLUSTER: 'Mithril has no disk snapshots to clone.',
    _F.HOST_CONTROLLERS: ('Controllers on spot capacity would be preempted; '
                          'run them elsewhere or in consolidation mode.'),
    _F.HIGH_AVAILABILITY_CONTROLLERS: 'See host controllers.',
}


def _connect_or_block_cloud() -> 'connection.Connection':
    """Resolves the account before a launch; credential problems block the
    whole cloud (SkyPilot then fails over elsewhere) with the reason shown."""
    try:
        conn = connection.connect()
    except (credentials_lib.CredentialsError, errors.AuthenticationError,
            errors.PermissionDeniedError) as e:
        raise exceptions.InvalidCloudCredentials(str(e)) from None
    conn.client.close()
    return conn


def _market_note(instance_type: str, region: str, limit: config.LimitPrice,
                 timeout: Optional[int]) -> str:
    """Spot price vs the effective limit, and what happens if the bid waits."""
    quote = live_prices.quote(instance_type, region)
    if quote is None:
        return ''
    spot, capacity = quote
    spot_text = f'{money.format_dollars(spot)}/h'
    if spot <= limit.per_hour:
        return (f'Spot price in {region} now: {spot_text} ({capacity} free), '
                'within your limit.')
    wait = ('until the price falls (provision_timeout: forever)'
            if timeout is None else
            f'at most {timeout}s (provision_timeout), then it is cancelled '
            'and SkyPilot tries elsewhere')
    return (f'Spot price in {region} now: {spot_text}, above your limit '
            f'{money.format_dollars(limit.per_hour)}/h: the bid will wait {wait}. '
            f'To be allocated now, raise config.mithril.limit_price to at least '
            f'{money.format_dollars(spot)}.')


class Mithril(builtin_mithril.Mithril):
    """Mithril GPU spot market: every instance is a bid at the user's limit price."""

    _REPR = 'Mithril'

    @classmethod
    def _unsupported_features_for_resources(
        cls,
        resources: 'resources_lib.Resources',
        region: Optional[str] = None,
    ) -> Dict[clouds.CloudImplementationFeatures, str]:
        del resources, region
        return {feature: f'{feature.value}: {why}'
                for feature, why in _UNSUPPORTED.items()}

    def instance_type_exists(self, instance_type: str) -> bool:
        return mithril_catalog.instance_type_exists(instance_type)

    @classmethod
    def regions(cls) -> List[clouds.Region]:
        return mithril_catalog.regions()

    @classmethod
    def regions_with_offering(
        cls,
        instance_type: str,
        accelerators: Optional[Dict[str, int]],
        use_spot: bool,
        region: Optional[str],
        zone: Optional[str],
        resources: Optional['resources_lib.Resources'] = None,
    ) -> List[clouds.Region]:
        del accelerators, resources
        if zone is not None:
            raise ValueError(mithril_catalog.ZONES_UNSUPPORTED)
        offered = mithril_catalog.get_region_zones_for_instance_type(
            instance_type, use_spot)
        return [r for r in offered if region is None or r.name == region]

    @classmethod
    def zones_provision_loop(cls, *, region: str, num_nodes: int,
                             instance_type: str,
                             accelerators: Optional[Dict[str, int]] = None,
                             use_spot: bool = False):
        del region, num_nodes, instance_type, accelerators, use_spot
        yield None

    def validate_region_zone(
            self, region: Optional[str],
            zone: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
        return mithril_catalog.validate_region_zone(region, zone)

    @classmethod
    def get_vcpus_mem_from_instance_type(
            cls, instance_type: str) -> Tuple[Optional[float], Optional[float]]:
        return mithril_catalog.get_vcpus_mem_from_instance_type(instance_type)

    @classmethod
    def get_accelerators_from_instance_type(
            cls, instance_type: str) -> Optional[Dict[str, Union[int, float]]]:
        return mithril_catalog.get_accelerators_from_instance_type(instance_type)

    @classmethod
    def get_default_instance_type(cls,
                                  cpus: Optional[str] = None,
                                  memory: Optional[str] = None,
                                  disk_tier: Optional[
                                      resources_utils.DiskTier] = None,
                                  local_disk: Optional[str] = None,
                                  region: Optional[str] = None,
                                  zone: Optional[str] = None,
                                  use_spot: bool = False,
                                  max_hourly_cost: Optional[float] = None
                                  ) -> Optional[str]:
        return mithril_catalog.get_default_instance_type(cpus, memory, disk_tier,
                                                 local_disk, region, zone,
                                                 use_spot, max_hourly_cost)

    def instance_type_to_hourly_cost(self,
                                     instance_type: str,
                                     use_spot: bool,
                                     region: Optional[str] = None,
                                     zone: Optional[str] = None) -> float:
        return mithril_catalog.get_hourly_cost(instance_type, use_spot, region, zone)

    def accelerators_to_hourly_cost(self, accelerators: Dict[str, int],
                                    use_spot: bool, region: Optional[str],
                                    zone: Optional[str]) -> float:
        """Accelerators are part of the instance price on Mithril."""
        del accelerators, use_spot, region, zone
        return 0.0

    def get_egress_cost(self, num_gigabytes: float) -> float:
        del num_gigabytes
        return 0.0

    @staticmethod
    def gpu_count(instance_type: str) -> int:
        accelerators = mithril_catalog.get_accelerators_from_instance_type(
            instance_type) or {}
        return int(sum(accelerators.values()))

    @classmethod
    def effective_limit_price(cls, instance_type: str,
                              sections: config.Sections) -> config.LimitPrice:
        """The limit price a bid for `instance_type` would carry, given the
        task's and the user's settings (`config.sections_from_skypilot`)."""
        return config.resolve_limit_price(cls.gpu_count(instance_type),
                                          *sections)

    def _get_feasible_launchable_resources(
        self, resources: 'resources_lib.Resources'
    ) -> resources_utils.FeasibleResources:
        """Instance types that fit; validates the limit price up front so a
        bad value fails in the optimizer, long before any bid exists."""
        sections = config.sections_from_skypilot(
            resources.cluster_config_overrides)
        if resources.instance_type is not None:
            self.effective_limit_price(resources.instance_type, sections)
            return resources_utils.FeasibleResources(
                [resources.copy(accelerators=None)], [], None)

        def launchable(instance_types: List[str]) -> List['resources_lib.Resources']:
            for instance_type in instance_types:
                self.effective_limit_price(instance_type, sections)
            return [
                resources.copy(cloud=type(self)(),
                               instance_type=instance_type,
                               accelerators=None,
                               cpus=None,
                               memory=None) for instance_type in instance_types
            ]

        if resources.accelerators is None:
            default = self.get_default_instance_type(
                cpus=resources.cpus,
                memory=resources.memory,
                region=resources.region,
                zone=resources.zone,
                use_spot=resources.use_spot,
                max_hourly_cost=resources.max_hourly_cost)
            return resources_utils.FeasibleResources(
                launchable([default]) if default else [], [], None)

        (name, count), = resources.accelerators.items()
        instance_types, fuzzy = mithril_catalog.get_instance_type_for_accelerator(
            name,
            int(count),
            cpus=resources.cpus,
            memory=resources.memory,
            use_spot=resources.use_spot,
            region=resources.region,
            zone=resources.zone,
            max_hourly_cost=resources.max_hourly_cost)
        return resources_utils.FeasibleResources(
            launchable(instance_types or []), fuzzy, None)

    @classmethod
    def _check_compute_credentials(cls) -> Tuple[bool, Optional[str]]:
        """Calls `GET /v2/me` and `GET /v2/projects` with the configured key."""
        try:
            conn = connection.connect(max_retry_seconds=10.0, timeout=10.0)
        except (credentials_lib.CredentialsError, errors.MithrilAPIError) as e:
            return False, str(e)
        try:
            me = conn.client.me()
        except errors.MithrilAPIError as e:
            return False, str(e)
        finally:
            conn.client.close()
        path = credentials_lib.credentials_path()
        if path.exists() and credentials_lib.is_readable_by_others(path):
            logger.warning(
                f'{credentials_lib.display_path(path)} is readable by other '
                f'users; run `chmod 600 {credentials_lib.display_path(path)}`.')
        logger.debug(f'Mithril user {me.fid}, project {conn.project_id}')
        return True, None

    @classmethod
    def _check_credentials(cls) -> Tuple[bool, Optional[str]]:
        return cls._check_compute_credentials()

    def get_credential_file_mounts(self) -> Dict[str, str]:
        """The current credentials, and nothing else, for every node: the
        nodes' autostop and autodown (and a remote jobs controller) call the
        API with them. Written here even when the key comes from the
        environment, which the nodes do not share."""
        try:
            creds = credentials_lib.load_credentials()
        except credentials_lib.CredentialsError:
            return {}
        return {NODE_CREDENTIALS_PATH:
                    str(credentials_lib.node_credentials_file(creds))}

    def make_deploy_resources_variables(
        self,
        resources: 'resources_lib.Resources',
        cluster_name: resources_utils.ClusterName,
        region: clouds.Region,
        zones: Optional[List[clouds.Zone]],
        num_nodes: int,
        dryrun: bool = False,
        volume_mounts: Optional[List['volume_lib.VolumeMount']] = None,
    ) -> Dict[str, Any]:
        """Template variables, including the effective limit price, which is
        shown to the user here, before any bid is placed."""
        del cluster_name, volume_mounts
        if zones is not None:
            raise ValueError(mithril_catalog.ZONES_UNSUPPORTED)
        resources = resources.assert_launchable()
        instance_type = resources.instance_type
        sections = config.sections_from_skypilot(
            resources.cluster_config_overrides)
        limit = self.effective_limit_price(instance_type, sections)
        timeout = config.resolve_provision_timeout(*sections)
        boot_timeout = config.resolve_boot_timeout(*sections)
        logger.info(f'Mithril limit price: {limit.describe()} for '
                    f'{num_nodes}× {instance_type} in {region.name}. You pay '
                    'the market clearing price, never more than this.')
        market_note = _market_note(instance_type, region.name, limit, timeout)
        if market_note:
            logger.info(market_note)
        profile, project_id, api_url = '', '', ''
        if not dryrun:
            conn = _connect_or_block_cloud()
            profile = conn.credentials.profile or ''
            project_id = conn.project_id
            api_url = conn.credentials.api_url
        accelerators = self.get_accelerators_from_instance_type(instance_type)
        variables: Dict[str, Any] = {
            'instance_type': instance_type,
            'custom_resources':
                resources_utils.make_ray_custom_resources_str(accelerators),
            'region': region.name,
            'mithril_profile': profile,
            'mithril_project_id': project_id,
            'mithril_api_url': api_url,
            'limit_price_per_hour': str(limit.per_hour),
            'provision_timeout': '' if timeout is None else str(timeout),
            'boot_timeout': str(boot_timeout),
        }
        if accelerators:
            variables['docker_run_options'] = ['--gpus all']
        return variables
