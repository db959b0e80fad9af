"""SkyPilot's `resources.max_hourly_cost` caps the Mithril limit price: the
bid's limit never exceeds it, and a Mithril limit above it is refused."""

from decimal import Decimal

import pytest

from sky_mithril.recovery import policy
from sky_mithril.task import settings


def limit(task=None, user=None, max_hourly_cost=None, num_gpus=8):
    return settings.resolve_limit_price(num_gpus, task or {}, user or {},
                                        max_hourly_cost)


def test_max_hourly_cost_is_the_limit_when_no_mithril_limit_is_set():
    resolved = limit(max_hourly_cost=20)
    assert resolved.per_hour == Decimal('20.00')
    assert 'resources.max_hourly_cost' in resolved.describe()


def test_a_fractional_cap_rounds_down_so_the_limit_never_exceeds_it():
    assert limit(max_hourly_cost=19.999).per_hour == Decimal('19.99')


@pytest.mark.parametrize('task,user', [
    ({'limit_price': 25}, {}),
    ({'limit_price_per_gpu': 3.00}, {}),  # 8 GPUs: $24.00
    ({}, {'limit_price': 21}),
])
def test_a_mithril_limit_above_the_cap_is_refused_naming_both_keys(task, user):
    with pytest.raises(settings.MithrilConfigError) as refused:
        limit(task, user, max_hourly_cost=20)
    message = str(refused.value)
    assert 'resources.max_hourly_cost $20.00/h' in message
    assert 'limit_price' in message
    assert 'at most $20.00' in message


def test_a_mithril_limit_within_the_cap_is_kept():
    resolved = limit({'limit_price': 12}, max_hourly_cost=20)
    assert resolved.per_hour == Decimal('12')
    assert resolved.source == 'limit_price in config.mithril'


def test_no_cap_keeps_mithrils_default():
    assert limit().per_hour == Decimal('32.00')


def test_a_cap_below_one_cent_is_refused():
    with pytest.raises(settings.MithrilConfigError, match='below one cent'):
        limit(max_hourly_cost=0.001)


def test_a_cap_above_the_sanity_ceiling_bids_at_the_ceiling():
    """A generous cap meant for every cloud of the task keeps Mithril in,
    bidding at the ceiling a limit key may reach."""
    resolved = limit(max_hourly_cost=5000)
    assert resolved.per_hour == settings.MAX_LIMIT_PRICE_PER_HOUR
    assert 'sanity ceiling' in resolved.describe()


def test_a_recovery_limit_above_the_cap_is_refused_naming_both_keys():
    launch = limit({'limit_price': 10}, max_hourly_cost=20)
    assert policy.relaunch_limit(launch, {'recovery_limit_price': 20}, {},
                                 20).per_hour == Decimal('20')
    with pytest.raises(settings.MithrilConfigError) as refused:
        policy.relaunch_limit(launch, {'recovery_limit_price': 25}, {}, 20)
    message = str(refused.value)
    assert 'config.mithril.recovery_limit_price' in message
    assert 'resources.max_hourly_cost $20.00/h' in message
