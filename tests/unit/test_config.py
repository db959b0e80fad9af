"""Limit price and provision timeout resolution, as a user writes them."""

import datetime
from decimal import Decimal

import pytest

from sky_mithril.recovery import policy
from sky_mithril.task import settings


def limit(num_gpus=8, task=None, user=None):
    return settings.resolve_limit_price(num_gpus, task or {}, user or {})


def test_default_is_mithrils_documented_32_dollars():
    resolved = limit()
    assert resolved.per_hour == Decimal('32.00')
    assert 'default' in resolved.source


@pytest.mark.parametrize('value', [32, 32.0, '32', '$32.00', ' $32 ', '32.00'])
def test_limit_price_accepts_numbers_and_dollar_strings(value):
    assert limit(task={'limit_price': value}).per_hour == Decimal('32.00')


def test_per_gpu_limit_is_multiplied_by_the_instance_gpus():
    resolved = limit(8, task={'limit_price_per_gpu': '$4.00'})
    assert resolved.per_hour == Decimal('32.00')
    assert '× 8 GPUs' in resolved.describe()


def test_float_limit_keeps_its_decimal_value():
    assert limit(task={'limit_price': 32.1}).per_hour == Decimal('32.1')


def test_task_setting_replaces_user_default_entirely():
    resolved = limit(8,
                     task={'limit_price': 10},
                     user={'limit_price_per_gpu': 1})
    assert resolved.per_hour == Decimal('10')
    assert 'config.mithril' in resolved.source


def test_user_default_applies_when_task_is_silent():
    resolved = limit(2, user={'limit_price_per_gpu': '1.50'})
    assert resolved.per_hour == Decimal('3.00')
    assert 'plugins.mithril' in resolved.source


@pytest.mark.parametrize('value,fragment', [
    (-1, 'must be positive'),
    (0, 'must be positive'),
    ('abc', 'not a dollar amount'),
    ('$', 'not a dollar amount'),
    ('12.345', 'at most 2 decimals (e.g. 12.34 or 12.35)'),
    (1e9, 'sanity ceiling'),
    (True, 'not a dollar amount'),
])
def test_bad_limit_prices_name_the_key_and_the_fix(value, fragment):
    with pytest.raises(settings.MithrilConfigError) as info:
        limit(task={'limit_price': value})
    message = str(info.value)
    assert 'config.mithril.limit_price' in message
    assert fragment in message


def test_both_limit_keys_at_once_is_refused():
    with pytest.raises(settings.MithrilConfigError, match='keep one'):
        limit(task={'limit_price': 10, 'limit_price_per_gpu': 1})


def test_per_gpu_limit_on_a_gpu_less_type_is_refused():
    with pytest.raises(settings.MithrilConfigError, match='use limit_price'):
        limit(0, task={'limit_price_per_gpu': 1})


def test_per_gpu_product_above_ceiling_is_refused():
    with pytest.raises(settings.MithrilConfigError, match='sanity ceiling'):
        limit(8, task={'limit_price_per_gpu': 200})


def test_provision_timeout_default_seconds_and_forever():
    assert settings.resolve_provision_timeout({}, {}) == 600
    assert settings.resolve_provision_timeout({'provision_timeout': 90}, {}) == 90
    assert settings.resolve_provision_timeout({'provision_timeout': 'forever'},
                                            {'provision_timeout': 5}) is None
    assert settings.resolve_provision_timeout({}, {'provision_timeout': 30}) == 30


@pytest.mark.parametrize('value', [0, -5, 'soon', True])
def test_bad_provision_timeout_names_the_fix(value):
    with pytest.raises(settings.MithrilConfigError, match='forever'):
        settings.resolve_provision_timeout({'provision_timeout': value}, {})


def test_boot_timeout_defaults_to_half_an_hour_and_is_validated():
    assert settings.resolve_boot_timeout({}, {}) == 1800
    assert settings.resolve_boot_timeout({'boot_timeout': 3600}, {}) == 3600
    assert settings.resolve_boot_timeout({}, {'boot_timeout': 2400}) == 2400
    with pytest.raises(settings.MithrilConfigError, match='boot_timeout .* 1800'):
        settings.resolve_boot_timeout({'boot_timeout': 'forever'}, {})


def test_a_top_level_mithril_section_in_the_global_config_is_refused():
    from sky import skypilot_config
    from sky.utils import config_utils
    with skypilot_config.replace_skypilot_config_in_process(
            config_utils.Config({'mithril': {'limit_price': 5}})):
        with pytest.raises(settings.MithrilConfigError,
                           match='plugins: {mithril'):
            settings.sections_from_skypilot({})
    with skypilot_config.replace_skypilot_config_in_process(
            config_utils.Config({'plugins': {'mithril': {'limit_price': 5}}})):
        task, user = settings.sections_from_skypilot(
            {'mithril': {'limit_price': 7}, 'jobs': {'x': 1}})
    assert task == {'limit_price': 7} and user == {'limit_price': 5}


def test_recovery_starts_at_the_notice_unless_the_task_says_node_lost():
    assert policy.resolve_recovery_starts({}, {}) == policy.RECOVERY_AT_NOTICE
    assert policy.resolve_recovery_starts(
        {'recovery_starts': 'NODE_LOST'}, {}) == policy.RECOVERY_AT_NODE_LOST
    assert policy.resolve_recovery_starts(
        {}, {'recovery_starts': 'node_lost'}) == policy.RECOVERY_AT_NODE_LOST


def test_the_reservation_end_lead_is_the_settings_else_the_measured_launch():
    minutes = datetime.timedelta(minutes=1)
    assert policy.resolve_reservation_end_lead({}, {}) == 10 * minutes
    assert policy.resolve_reservation_end_lead({}, {}, 60.0) == 10 * minutes
    assert policy.resolve_reservation_end_lead({}, {}, 900.0) == 30 * minutes
    assert policy.resolve_reservation_end_lead(
        {}, {'reservation_end_lead_minutes': 45}, 900.0) == 45 * minutes
    assert policy.resolve_reservation_end_lead(
        {'reservation_end_lead_minutes': 2.5},
        {'reservation_end_lead_minutes': 45}) == 2.5 * minutes
    for bad in (0, -5, True, '30'):
        with pytest.raises(settings.MithrilConfigError,
                           match='positive number of minutes'):
            policy.resolve_reservation_end_lead(
                {'reservation_end_lead_minutes': bad}, {})
    with pytest.raises(settings.MithrilConfigError,
                       match=r'reservation_end_lead_minutes \(plugins.mithril'):
        policy.resolve_reservation_end_lead(
            {}, {'reservation_end_lead_minutes': -1})


def test_back_to_reservation_is_on_unless_the_task_or_the_user_turns_it_off():
    assert policy.resolve_back_to_reservation({}, {}) is True
    assert policy.resolve_back_to_reservation(
        {}, {'back_to_reservation': False}) is False
    assert policy.resolve_back_to_reservation(
        {'back_to_reservation': True}, {'back_to_reservation': False}) is True
    with pytest.raises(settings.MithrilConfigError,
                       match=r'back_to_reservation \(plugins.mithril.*use true'):
        policy.resolve_back_to_reservation({}, {'back_to_reservation': 'no'})


def test_recovery_limit_applies_only_when_set_and_not_below_the_limit():
    limit = settings.resolve_limit_price(1, {'limit_price': 2}, {})
    assert policy.relaunch_limit(limit, {}, {}) == limit
    raised = policy.relaunch_limit(
        limit, {'recovery_limit_price': '4.00'}, {})
    assert raised.per_hour == Decimal('4.00')
    assert 'recovery_limit_price in config.mithril' in raised.source
    with pytest.raises(settings.MithrilConfigError,
                       match='below the launch.s limit.*at or above'):
        policy.relaunch_limit(limit, {'recovery_limit_price': 1}, {})
    with pytest.raises(settings.MithrilConfigError, match='not a dollar amount'):
        policy.relaunch_limit(limit, {'recovery_limit_price': 'x'}, {})


def test_spend_budget_from_the_task_else_the_user():
    assert settings.resolve_spend_budget({}, {}) is None
    user = settings.resolve_spend_budget({}, {'max_hourly_spend': '$50'})
    assert user.per_hour == Decimal('50')
    assert user.describe() == (
        '$50.00/h (max_hourly_spend in plugins.mithril in ~/.sky/config.yaml)')
    task = settings.resolve_spend_budget({'max_hourly_spend': 20.5},
                                         {'max_hourly_spend': 50})
    assert task.describe() == '$20.50/h (max_hourly_spend in config.mithril)'


@pytest.mark.parametrize('value,fragment', [
    ('lots', 'not a dollar amount'), (0, 'must be positive'),
    (10.125, 'whole cents')])
def test_bad_spend_budget_names_the_key_and_the_fix(value, fragment):
    with pytest.raises(settings.MithrilConfigError,
                       match=f'config.mithril.max_hourly_spend.*{fragment}'):
        settings.resolve_spend_budget({'max_hourly_spend': value}, {})


def test_the_reservation_is_one_name_or_a_list_in_fill_order():
    resolve = settings.resolve_reservations
    assert resolve({}, {}) == []
    assert resolve({'reservation': ' train-week '}, {}) == ['train-week']
    assert resolve({'reservation': ['week-1', ' res_2 ']}, {}) == [
        'week-1', 'res_2']
    assert resolve({}, {'reservation': ['week-2', 'week-1']}) == [
        'week-2', 'week-1']
    # The task's own list replaces the user-wide one; an empty one turns
    # it off.
    assert resolve({'reservation': 'mine'}, {'reservation': ['week-1']}) == [
        'mine']
    assert resolve({'reservation': ''}, {'reservation': ['week-1']}) == []
    assert resolve({'reservation': []}, {'reservation': 'week-1'}) == []
    # An empty key (YAML `reservation:`) is unset, as for every setting.
    assert resolve({}, {'reservation': None}) == []


@pytest.mark.parametrize('value,fragment', [
    (5, 'is 5'), ({'name': 'week-1'}, "is {'name'"),
    (['week-1', ''], "is ['week-1', '']"), (['week-1', 3], "is ['week-1', 3]"),
    (['week-1', 'week-2', ' week-1'], "names 'week-1' twice"),
], ids=['number', 'mapping', 'empty-name', 'number-in-list',
        'twice'])
def test_a_bad_reservation_setting_names_the_key_and_the_fix(value, fragment):
    with pytest.raises(settings.MithrilConfigError) as refused:
        settings.resolve_reservations({'reservation': value}, {})
    assert str(refused.value).startswith(
        f'config.mithril.reservation {fragment}')
    assert '`reservation: [train-week-1, train-week-2]`' in str(refused.value)
    with pytest.raises(settings.MithrilConfigError,
                       match=r'^reservation \(plugins.mithril in '):
        settings.resolve_reservations({}, {'reservation': value})
