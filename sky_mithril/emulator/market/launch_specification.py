"""The checks a bid's and a reservation's launch specification share: its
SSH keys, volumes, image, Kubernetes cluster and memory, each refusal a
FieldError naming the field."""

from typing import List, Optional, Sequence

from sky_mithril.emulator.market.errors import FieldError
from sky_mithril.emulator.market.images import IMAGE_VERSION_FID
from sky_mithril.emulator.market.kubernetes import KubernetesClusters
from sky_mithril.emulator.market.ssh_keys import SshKeys
from sky_mithril.emulator.market.storage import Volumes

MEMORY_NOT_ADJUSTABLE = 'Memory is not adjustable in this auction'


def launch_specification_errors(ssh_key_store: SshKeys, volume_store: Volumes,
                                kubernetes: KubernetesClusters, *, project: str,
                                region: Optional[str], ssh_keys: Sequence[str],
                                volumes: Sequence[str], image_version: Optional[str],
                                kubernetes_cluster: Optional[str],
                                memory_gb: Optional[int]) -> List[FieldError]:
    """Why the specification cannot launch in `region` (volumes are checked
    only when the region is known: None skips them)."""
    errors = ssh_key_store.unknown_key_errors(project, ssh_keys)
    if region is not None:
        errors += volume_store.attachable_errors(project, region, volumes)
    if image_version is not None and image_version != IMAGE_VERSION_FID:
        errors.append(FieldError('image_version',
                                 f'Image version {image_version} not found'))
    if (kubernetes_cluster is not None and
            not kubernetes.can_join(project, kubernetes_cluster)):
        errors.append(FieldError('kubernetes_cluster',
                                 f'Kubernetes cluster {kubernetes_cluster} not '
                                 'found in project (or terminated)'))
    if memory_gb is not None:
        errors.append(FieldError('memory_gb', MEMORY_NOT_ADJUSTABLE))
    return errors
