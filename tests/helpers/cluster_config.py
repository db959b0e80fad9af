"""SkyPilot writing a Mithril cluster's config in-process, as `sky launch`,
a relaunch and `sky start` do on the API server: the template rendered
with our deploy variables, our authentication step, and the file mounts
staged into one local folder for upload."""

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
import sky
from sky import authentication
from sky import global_user_state
from sky.backends import backend_utils
from sky.clouds import cloud as sky_cloud

from sky_mithril import cloud
from sky_mithril.account import ssh_keys
from sky_mithril.plugin import takeover

REGION = 'us-central3-a'
INSTANCE_TYPE = 'a100-80gb.sxm.1x'


@dataclasses.dataclass(frozen=True)
class WrittenConfig:
    """What SkyPilot keeps of a written cluster config."""

    cluster_name_on_cloud: str
    config: Dict[str, Any]
    yaml_path: str

    @property
    def provider(self) -> Dict[str, Any]:
        return self.config['provider']

    def staged_files(self) -> List[Path]:
        """Every file SkyPilot staged for upload to the nodes."""
        [staged] = self.config['file_mounts'].values()
        return [p for p in Path(staged).rglob('*') if p.is_file()]

    def staged_holding(self, text: str) -> List[Path]:
        return [p for p in self.staged_files()
                if text.encode() in p.read_bytes()]


def write_cluster_config(monkeypatch: pytest.MonkeyPatch,
                         cluster_name: str) -> WrittenConfig:
    """SkyPilot's `write_cluster_config` for one A100 node of `cluster_name`,
    with sky-mithril's template and authentication step (what the plugin
    installs on the API server)."""
    monkeypatch.setattr(authentication, 'setup_mithril_authentication',
                        ssh_keys.setup_mithril_authentication)
    resources = sky.Resources(cloud=cloud.Mithril(),
                              instance_type=INSTANCE_TYPE, region=REGION)
    spec = takeover._template_override(  # pylint: disable=protected-access
        None, resources, _extra_launch_context={},
        _is_launched_by_jobs_controller=False)
    written = backend_utils.write_cluster_config(
        resources, 1, spec.template_path, cluster_name,
        Path(tempfile.mkdtemp(prefix='wheel-')), 'wheelhash',
        sky_cloud.Region(REGION), extra_template_variables=spec.variables)
    return WrittenConfig(
        written['cluster_name_on_cloud'],
        global_user_state.get_cluster_yaml_dict(written['ray']),
        written['ray'])
