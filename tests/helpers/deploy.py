"""The launch's deploy step, in-process: what `Mithril.make_deploy_resources_variables`
(where credentials and the project are checked, just before the bid) refuses."""

import pytest
import sky
from sky import exceptions
from sky.clouds import cloud as sky_cloud
from sky.utils import resources_utils

from sky_mithril import cloud


def deploy_refusal() -> str:
    """What the launch's deploy step raises for one A100 in us-central3-a."""
    resources = sky.Resources(cloud=cloud.Mithril(),
                              instance_type='a100-80gb.sxm.1x',
                              region='us-central3-a')
    with pytest.raises(exceptions.InvalidCloudCredentials) as info:
        cloud.Mithril().make_deploy_resources_variables(
            resources, resources_utils.ClusterName('creds', 'creds'),
            sky_cloud.Region('us-central3-a'), None, 1)
    return str(info.value)
