"""The plugin's settings: limit price, provision and boot timeouts, volumes,
the project's spend budget (`max_hourly_spend`) and the reservations a task
runs on first (`reservation`: one name or fid, or a list in fill order).

A task sets them in its YAML (`config: {mithril: {limit_price: 32.00}}`); a
user-wide default goes in `~/.sky/config.yaml` under `plugins: {mithril: ...}`
(SkyPilot rejects a top-level `mithril:` there before any plugin loads). When a
task sets either limit key, it replaces the user-wide limit entirely.

Rounding rule: Mithril prices are whole cents, so a limit with more than two
decimals is refused rather than silently rounded.
"""

import dataclasses
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from sky_mithril import CLOUD_NAME
from sky_mithril import money

DEFAULT_LIMIT_PRICE_PER_HOUR = Decimal('32.00')
MAX_LIMIT_PRICE_PER_HOUR = Decimal('1000.00')
DEFAULT_PROVISION_TIMEOUT_SECONDS = 600
# Real GPU nodes can take well over ten minutes from winning the auction to
# SSH; SkyPilot's built-in Mithril provisioner waits an hour.
DEFAULT_BOOT_TIMEOUT_SECONDS = 1800
WAIT_FOREVER = 'forever'

LIMIT_PRICE = 'limit_price'
LIMIT_PRICE_PER_GPU = 'limit_price_per_gpu'
PROVISION_TIMEOUT = 'provision_timeout'
BOOT_TIMEOUT = 'boot_timeout'
VOLUMES = 'volumes'
MAX_HOURLY_SPEND = 'max_hourly_spend'
RESERVATION = 'reservation'
# The managed-job recovery's keys of the same section are in recovery.policy.
KEYS = (LIMIT_PRICE, LIMIT_PRICE_PER_GPU, PROVISION_TIMEOUT, BOOT_TIMEOUT,
        VOLUMES, MAX_HOURLY_SPEND, RESERVATION)

# SkyPilot's own cap per node-hour, in the task's `resources:`.
MAX_HOURLY_COST = 'resources.max_hourly_cost'
TASK_SCOPE = 'config.mithril'
USER_SCOPE = 'plugins.mithril in ~/.sky/config.yaml'

NUMBER_OR_STRING = {'anyOf': [{'type': 'number'}, {'type': 'string'}]}


# The task's `config.mithril` and the user's `plugins.mithril`, in that order.
Sections = Tuple[Dict[str, Any], Dict[str, Any]]
T = TypeVar('T')


class MithrilConfigError(ValueError):
    """A bad setting; the message names the key and how to fix it."""


def section_schema() -> Dict[str, Any]:
    """JSON schema of the `mithril` section (task `config:` and `plugins:`),
    but for the recovery's keys (`recovery.policy.schema_properties`)."""
    return {
        'type': 'object',
        'required': [],
        'additionalProperties': False,
        'properties': {
            LIMIT_PRICE: NUMBER_OR_STRING,
            LIMIT_PRICE_PER_GPU: NUMBER_OR_STRING,
            PROVISION_TIMEOUT: NUMBER_OR_STRING,
            BOOT_TIMEOUT: {'type': 'number'},
            # Mount path -> Mithril volume name (`volumes`).
            VOLUMES: {'type': 'object',
                      'additionalProperties': {'type': 'string'}},
            MAX_HOURLY_SPEND: NUMBER_OR_STRING,
            # A reservation's name or fid (`res_...`), or a list of them in
            # fill order (`resolve_reservations`).
            RESERVATION: {'anyOf': [
                {'type': 'string'},
                {'type': 'array', 'items': {'type': 'string'}}]},
        },
    }


@dataclasses.dataclass(frozen=True)
class LimitPrice:
    """The effective limit for one instance, and where it came from."""

    per_hour: Decimal
    source: str

    def describe(self) -> str:
        return f'{money.format_dollars(self.per_hour)}/h per instance ({self.source})'


@dataclasses.dataclass(frozen=True)
class SpendBudget:
    """The most the project's live bids may cost per hour together
    (`max_hourly_spend`), and where it was set."""

    per_hour: Decimal
    source: str

    def describe(self) -> str:
        return f'{money.format_dollars(self.per_hour)}/h ({self.source})'


def name_in(key: str, scope: str) -> str:
    """How an error names `key` set in `scope`: `config.mithril.KEY` in a
    task, `KEY (plugins.mithril in ~/.sky/config.yaml)` user-wide, so the
    user knows which file to fix."""
    return f'{scope}.{key}' if scope == TASK_SCOPE else f'{key} ({scope})'


def first_set(key: str, task_section: Dict[str, Any],
              user_section: Dict[str, Any], parse: Callable[[Any, str], T],
              default: T) -> T:
    """`parse(value, scope)` of the task's `key`, else of the user's, else
    `default`: the one precedence every setting follows. `parse` refuses a
    bad value with MithrilConfigError naming the scope and the fix. Whatever
    the task's value parses to stands, None included, so a task can turn a
    user-wide setting off."""
    for section, scope in ((task_section, TASK_SCOPE), (user_section,
                                                        USER_SCOPE)):
        value = section.get(key)
        if value is not None:
            return parse(value, scope)
    return default


def parse_price(value: Any, key: str, scope: str) -> Decimal:
    """A positive whole-cent dollar amount; anything else raises naming the fix."""
    where = name_in(key, scope)
    example = f'`{key}: 32.00` or `{key}: "$32.00"`'
    try:
        amount = money.parse_dollars(value)
    except money.MoneyFormatError:
        raise MithrilConfigError(
            f'{where} is {value!r}, which is not a dollar amount. '
            f'Write it as {example}.') from None
    if amount <= 0:
        raise MithrilConfigError(
            f'{where} must be positive (got {value!r}). Write it as {example}.')
    if amount != amount.quantize(money.CENT):
        raise MithrilConfigError(
            f'{where} is {value!r}: Mithril prices are whole cents, so use at '
            f'most 2 decimals (e.g. {amount.quantize(money.CENT, "ROUND_DOWN")}'
            f' or {amount.quantize(money.CENT, "ROUND_UP")}).')
    return amount


def check_ceiling(per_hour: Decimal, where: str) -> None:
    if per_hour > MAX_LIMIT_PRICE_PER_HOUR:
        raise MithrilConfigError(
            f'{where} gives {money.format_dollars(per_hour)}/h per instance, '
            f'above the sanity ceiling of '
            f'{money.format_dollars(MAX_LIMIT_PRICE_PER_HOUR)}/h. Check for a '
            'typo (the limit is per instance-hour, in dollars).')


def _limit_from_section(section: Dict[str, Any], scope: str,
                        num_gpus: int) -> Optional[LimitPrice]:
    has_total = section.get(LIMIT_PRICE) is not None
    has_per_gpu = section.get(LIMIT_PRICE_PER_GPU) is not None
    if has_total and has_per_gpu:
        raise MithrilConfigError(
            f'{scope} sets both {LIMIT_PRICE} and {LIMIT_PRICE_PER_GPU}; '
            f'keep one ({LIMIT_PRICE} is per instance-hour, '
            f'{LIMIT_PRICE_PER_GPU} is multiplied by the GPUs per instance).')
    if has_total:
        per_hour = parse_price(section[LIMIT_PRICE], LIMIT_PRICE, scope)
        check_ceiling(per_hour, name_in(LIMIT_PRICE, scope))
        return LimitPrice(per_hour, f'{LIMIT_PRICE} in {scope}')
    if has_per_gpu:
        per_gpu = parse_price(section[LIMIT_PRICE_PER_GPU], LIMIT_PRICE_PER_GPU,
                              scope)
        where = name_in(LIMIT_PRICE_PER_GPU, scope)
        if num_gpus < 1:
            raise MithrilConfigError(
                f'{where} needs an instance type with GPUs; use {LIMIT_PRICE} '
                'for this one.')
        per_hour = per_gpu * num_gpus
        check_ceiling(per_hour, where)
        return LimitPrice(
            per_hour, f'{LIMIT_PRICE_PER_GPU} {money.format_dollars(per_gpu)}'
            f' × {num_gpus} GPUs in {scope}')
    return None


def cost_cap(max_hourly_cost: Optional[float]) -> Optional[Decimal]:
    """SkyPilot's `resources.max_hourly_cost` (dollars per node-hour) as a cap
    on the limit price, rounded down to whole cents so a limit at the cap
    never exceeds it; None when the task sets none."""
    if max_hourly_cost is None:
        return None
    cap = money.parse_dollars(max_hourly_cost).quantize(money.CENT,
                                                        'ROUND_DOWN')
    if cap <= 0:
        raise MithrilConfigError(
            f'{MAX_HOURLY_COST} is {max_hourly_cost!r}, below one cent per '
            'node-hour: no Mithril bid fits under it. Raise it, or leave '
            'Mithril out with `infra:`.')
    return cap


def check_within_cap(per_hour: Decimal, where: str,
                     cap: Optional[Decimal]) -> None:
    """Refuses a limit above the task's `resources.max_hourly_cost`: a bid at
    it could be billed above the cap the user set."""
    if cap is not None and per_hour > cap:
        raise MithrilConfigError(
            f'{where} gives {money.format_dollars(per_hour)}/h per instance, '
            f'above {MAX_HOURLY_COST} {money.format_dollars(cap)}/h (SkyPilot\'s '
            'cap per node-hour): a bid at that limit could be billed above '
            f'your cap. Lower it to at most {money.format_dollars(cap)}, raise '
            f'{MAX_HOURLY_COST}, or drop the Mithril limit to bid at '
            f'{MAX_HOURLY_COST}.')


def resolve_limit_price(num_gpus: int, task_section: Dict[str, Any],
                        user_section: Dict[str, Any],
                        max_hourly_cost: Optional[float] = None) -> LimitPrice:
    """Task settings, else user-wide settings, else the task's
    `resources.max_hourly_cost`, else Mithril's documented default. Never
    above `max_hourly_cost`."""
    cap = cost_cap(max_hourly_cost)
    for section, scope in ((task_section, TASK_SCOPE), (user_section,
                                                        USER_SCOPE)):
        limit = _limit_from_section(section, scope, num_gpus)
        if limit is not None:
            check_within_cap(limit.per_hour, limit.source, cap)
            return limit
    if cap is not None and cap > MAX_LIMIT_PRICE_PER_HOUR:
        # A generous cap meant for every cloud: bid at the sanity ceiling.
        return LimitPrice(MAX_LIMIT_PRICE_PER_HOUR,
                          f'the sanity ceiling, below {MAX_HOURLY_COST} '
                          f'{money.format_dollars(cap)}/h of the task')
    if cap is not None:
        return LimitPrice(cap, f'{MAX_HOURLY_COST} of the task, SkyPilot\'s '
                          'cap per node-hour')
    return LimitPrice(DEFAULT_LIMIT_PRICE_PER_HOUR,
                      "Mithril's default; set config.mithril.limit_price")


def resolve_spend_budget(task_section: Dict[str, Any],
                         user_section: Dict[str, Any]) -> Optional[SpendBudget]:
    """`max_hourly_spend` from the task, else the user; None when neither
    sets one. Validated as a limit price is (positive, whole cents)."""
    return first_set(
        MAX_HOURLY_SPEND, task_section, user_section,
        lambda value, scope: SpendBudget(
            parse_price(value, MAX_HOURLY_SPEND, scope),
            f'{MAX_HOURLY_SPEND} in {scope}'),
        default=None)


def resolve_reservations(task_section: Dict[str, Any],
                         user_section: Dict[str, Any]) -> List[str]:
    """The reservations (names or fids) a launch fills first, in order, from
    the task, else the user; empty when neither names one. The task's
    `reservation: ''` (or `[]`) turns a user-wide one off."""
    return first_set(RESERVATION, task_section, user_section,
                     _reservation_list, default=[])


def _reservation_list(value: Any, scope: str) -> List[str]:
    """`reservation` as a list of distinct names; MithrilConfigError naming
    the fix for anything else."""
    fix = ('write one reservation\'s name or fid, or a list of them in the '
           'order to fill (`reservation: [train-week-1, train-week-2]`; '
           '`sky-mithril reservations list` shows them).')
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if not isinstance(value, list) or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise MithrilConfigError(
            f'{name_in(RESERVATION, scope)} is {value!r}; {fix}')
    names = [v.strip() for v in value]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MithrilConfigError(
            f'{name_in(RESERVATION, scope)} names '
            f'{", ".join(map(repr, twice))} twice; {fix}')
    return names


def _resolve_seconds(key: str, default: int, can_wait_forever: bool,
                     task_section: Dict[str, Any],
                     user_section: Dict[str, Any]) -> Optional[int]:
    """A positive number of seconds from the task, else the user, else
    `default`; "forever" gives None where `can_wait_forever`."""

    def parse(value: Any, scope: str) -> Optional[int]:
        if (can_wait_forever and isinstance(value, str) and
                value.strip().lower() == WAIT_FOREVER):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                value <= 0):
            forever = (f' or "{WAIT_FOREVER}" to keep the bid waiting until '
                       'the price allows' if can_wait_forever else '')
            raise MithrilConfigError(
                f'{key} in {scope} is {value!r}; use a number of seconds '
                f'(e.g. 1800){forever}.')
        return int(value)

    return first_set(key, task_section, user_section, parse, default)


def resolve_provision_timeout(task_section: Dict[str, Any],
                              user_section: Dict[str, Any]) -> Optional[int]:
    """Seconds to wait for allocation before cancelling; None waits forever."""
    return _resolve_seconds(PROVISION_TIMEOUT, DEFAULT_PROVISION_TIMEOUT_SECONDS,
                            True, task_section, user_section)


def resolve_boot_timeout(task_section: Dict[str, Any],
                         user_section: Dict[str, Any]) -> int:
    """Seconds a won bid's nodes may take to become reachable over SSH."""
    seconds = _resolve_seconds(BOOT_TIMEOUT, DEFAULT_BOOT_TIMEOUT_SECONDS,
                               False, task_section, user_section)
    assert seconds is not None
    return seconds


def sections_from_skypilot(
        override_configs: Optional[Dict[str, Any]]) -> Sections:
    """The task's `config.mithril` and the user's `plugins.mithril`, as dicts.

    The task section comes from the task's own overrides only: a top-level
    `mithril:` in `~/.sky/config.yaml` is refused, not read as the task's.
    """
    from sky import skypilot_config  # pylint: disable=import-outside-toplevel
    if skypilot_config.get_nested((CLOUD_NAME,), None) is not None:
        raise MithrilConfigError(
            'Your SkyPilot config (~/.sky/config.yaml or the project\'s '
            '.sky.yaml) has a top-level `mithril:` section, which only a '
            'task\'s `config:` may have. Move it under `plugins: {mithril: '
            '...}` for a user-wide default.')
    task_section = dict((override_configs or {}).get(CLOUD_NAME) or {})
    user_section = skypilot_config.get_nested(('plugins', CLOUD_NAME), None) or {}
    return ({k: v for k, v in task_section.items() if v is not None},
            dict(user_section))
