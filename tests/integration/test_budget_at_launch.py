"""Before any bid, the launch's deploy step (`make_deploy_resources_variables`,
a dry run's too) shows the project's worst case against `max_hourly_spend`
and leaves Mithril out when the launch would lift it past the budget."""

from typing import Any, Dict

import pytest
import sky
from sky import exceptions
from sky.clouds import cloud as sky_cloud
from sky.utils import resources_utils

from sky_mithril import cloud

from tests.helpers.provisioning import launch, provision_config

TYPE = 'a100-80gb.sxm.1x'


def deploy(name: str, dryrun: bool, **mithril: Any) -> Dict[str, Any]:
    """The deploy step of cluster `name` (one A100 in us-central3-a) with
    `config.mithril` set to `mithril`."""
    resources = sky.Resources(cloud=cloud.Mithril(), instance_type=TYPE,
                              region='us-central3-a',
                              _cluster_config_overrides={'mithril': mithril})
    return cloud.Mithril().make_deploy_resources_variables(
        resources, resources_utils.ClusterName(name, name),
        sky_cloud.Region('us-central3-a'), None, 1, dryrun=dryrun)


@pytest.mark.parametrize('dryrun', [True, False])
def test_the_launch_shows_the_worst_case_and_is_refused_past_the_budget(
        fast_emulator, caplog, dryrun):
    launch('busy', provision_config(limit='10.00'))
    caplog.set_level('INFO')
    variables = deploy(f'fits-{dryrun}', dryrun, limit_price=5,
                       max_hourly_spend=15)
    assert variables['max_hourly_spend'] == '15'
    assert ('Mithril spend: worst case now $10.00/h of your $15.00/h '
            '(max_hourly_spend in config.mithril); $15.00/h with this launch '
            f'(1× {TYPE} at $5.00/h).') in caplog.text
    with pytest.raises(exceptions.InvalidCloudConfigs) as refusal:
        deploy(f'over-{dryrun}', dryrun, limit_price=6, max_hourly_spend=15)
    assert '$1.00/h above $15.00/h' in str(refusal.value)
    assert 'bid busy (' in str(refusal.value)


def test_a_relaunch_of_a_cluster_counts_its_own_bid_once(fast_emulator):
    launch('busy', provision_config(limit='10.00'))
    # Its own $10.00/h is replaced, not added: $10.00/h of $12.00/h.
    deploy('busy', False, limit_price=10, max_hourly_spend=12)
    with pytest.raises(exceptions.InvalidCloudConfigs):
        deploy('busy', False, limit_price=13, max_hourly_spend=12)


def test_no_budget_no_lookup(fast_emulator):
    fast_emulator.control('DELETE', 'stats')
    assert deploy('free', True, limit_price=5)['max_hourly_spend'] == ''
    by_route = fast_emulator.control('GET', 'stats')['by_route']
    assert 'GET /v2/spot/bids' not in by_route
