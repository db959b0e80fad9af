"""Who uses the market: one organization with one project and one user
(its owner, so its only teammate), the project's quotas (spot instances per
instance type, volume storage) and the organization's storage quota per
region.

The volume storage quota, `VOLUME_QUOTA_GB`, spans regions: the organization's
quota in a region grants that much, counts the GB of volumes there as used,
and leaves what a new volume there may still take (the quota less the GB used
in every region).
"""

from typing import List, Optional

from sky_mithril.emulator.market.errors import FieldError, NotFound
from sky_mithril.emulator.market.records import (CAPACITY_HOLDERS, Project,
                                                 Quota, RegionStorageQuota,
                                                 User)
from sky_mithril.emulator.market.state import (MarketState, region_id,
                                               stable_fid)

PROJECT_FID = 'proj_emulator'
PROJECT_NAME = 'emulator'
USER_FID = 'user_emulator'
ORGANIZATION_ID = '00000000-0000-4000-8000-000000000002'
VOLUME_QUOTA_GB = 20_000


class Accounts:
    """The project and user every request acts as, and their quotas."""

    def __init__(self, state: MarketState) -> None:
        self._store = state.store
        self.project = Project(fid=PROJECT_FID,
                               id='00000000-0000-4000-8000-000000000003',
                               name=PROJECT_NAME,
                               created_at=state.now)
        self.user = User(fid=USER_FID,
                         id='00000000-0000-4000-8000-000000000001',
                         email='emulator@localhost',
                         organization_id=ORGANIZATION_ID,
                         organization_role='owner',
                         user_name='emulator')

    def teammates(self) -> List[User]:
        """The users the user sees in its organization: itself."""
        return [self.user]

    def require_project(self, project: str) -> None:
        """Raises NotFound unless `project` is the market's project."""
        if project != self.project.fid:
            raise NotFound('Project', project)

    def project_error(self, project: str) -> Optional[FieldError]:
        """Why a request's `project` argument is refused, if it is."""
        if project != self.project.fid:
            return FieldError('project', f'Project {project} not found')
        return None

    def order_errors(self, project: str, name: str) -> List[FieldError]:
        """Why a create request's `project` and `name` are refused, if they
        are: an unknown project, an empty name."""
        errors = [e for e in (self.project_error(project),) if e is not None]
        if not name.strip():
            errors.append(FieldError('name', 'name must not be empty',
                                     'string_too_short'))
        return errors

    def storage_used(self, project: str) -> int:
        """GB of volumes `project` has, against `VOLUME_QUOTA_GB`."""
        return sum(v.capacity_gb
                   for v in self._store.volumes.values()
                   if v.project == project)

    def quotas(self, project: str) -> List[Quota]:
        """Spot capacity per instance type (the sum over regions, and what
        the project holds), then the project's volume storage."""
        self.require_project(project)
        quotas = []
        for instance_type in self._store.instance_types.values():
            auctions = [
                a for a in self._store.auctions.values()
                if a.instance_type is instance_type
            ]
            used = sum(bid.instance_quantity
                       for a in auctions
                       for bid in a.live_bids
                       if bid.project == project and
                       bid.status in CAPACITY_HOLDERS)
            quotas.append(
                Quota(fid=stable_fid('quota', instance_type.name),
                      project=project,
                      product_type='spot',
                      name=instance_type.name,
                      units='instances',
                      total_quantity=sum(a.capacity for a in auctions),
                      used_quantity=used,
                      instance_type=instance_type))
        quotas.append(
            Quota(fid=stable_fid('quota', 'storage'),
                  project=project,
                  product_type='storage',
                  name='storage',
                  units='GB',
                  total_quantity=VOLUME_QUOTA_GB,
                  used_quantity=self.storage_used(project)))
        return quotas

    def organization_storage_quotas(
            self, organization_id: str) -> List[RegionStorageQuota]:
        """The organization's volume storage per region, in catalog order
        (module docstring); raises NotFound for another organization."""
        if organization_id != self.user.organization_id:
            raise NotFound('Organization', organization_id)
        remaining = max(0, VOLUME_QUOTA_GB - self.storage_used(self.project.fid))
        quotas = []
        for region in self._store.regions():
            used = sum(v.capacity_gb
                       for v in self._store.volumes.values()
                       if v.region == region)
            quotas.append(
                RegionStorageQuota(region=region,
                                   region_id=region_id(region),
                                   granted=VOLUME_QUOTA_GB,
                                   used=used,
                                   remaining=remaining,
                                   used_by_project={self.project.id: used}))
        return quotas
