"""When a managed job's recovery starts and what its relaunch bids: the
task's `recovery_starts`, `reservation_end_lead_minutes`,
`back_to_reservation` and `recovery_limit_price` (in `config.mithril`, or
`plugins.mithril` for the user), and the one relaunch limit.
"""

import datetime
from typing import Any, Dict, Optional

from sky_mithril import money
from sky_mithril.task import settings

RECOVERY_STARTS = 'recovery_starts'
RECOVERY_LIMIT_PRICE = 'recovery_limit_price'
RESERVATION_END_LEAD = 'reservation_end_lead_minutes'
BACK_TO_RESERVATION = 'back_to_reservation'
KEYS = (RECOVERY_STARTS, RECOVERY_LIMIT_PRICE, RESERVATION_END_LEAD,
        BACK_TO_RESERVATION)
# When a managed job's recovery starts: at Mithril's preemption notice, or
# (SkyPilot's own behaviour) once the node is gone.
RECOVERY_AT_NOTICE = 'notice'
RECOVERY_AT_NODE_LOST = 'node_lost'
# How long before its reservation ends a managed job moves off it, unless
# the task says: twice the cluster's last launch as measured, at least this.
DEFAULT_RESERVATION_END_LEAD = datetime.timedelta(minutes=10)
# The measured launch times this much: the relaunch bids and boots again.
MEASURED_LAUNCH_MARGIN = 2
# A job on a spot bid moves back onto its reservation at most once per this
# (Mithril's clock), doubled for each earlier move on record: a move whose
# relaunch lost the free instance to another launch leaves the job on spot
# until then.
BACK_TO_RESERVATION_INTERVAL = datetime.timedelta(hours=1)


def schema_properties() -> Dict[str, Any]:
    """The recovery's keys in the `mithril` section's JSON schema."""
    return {
        RECOVERY_STARTS: {'type': 'string',
                          'case_insensitive_enum': [RECOVERY_AT_NOTICE,
                                                    RECOVERY_AT_NODE_LOST]},
        RECOVERY_LIMIT_PRICE: settings.NUMBER_OR_STRING,
        RESERVATION_END_LEAD: {'type': 'number'},
        BACK_TO_RESERVATION: {'type': 'boolean'},
    }


def resolve_recovery_starts(task_section: Dict[str, Any],
                            user_section: Dict[str, Any]) -> str:
    """When a managed job's recovery starts (`RECOVERY_AT_*`): the task's
    setting, else the user's, else at the notice."""
    return settings.first_set(RECOVERY_STARTS, task_section, user_section,
                              lambda value, _scope: str(value).lower(),
                              default=RECOVERY_AT_NOTICE)


def resolve_back_to_reservation(task_section: Dict[str, Any],
                                user_section: Dict[str, Any]) -> bool:
    """Whether a managed job that burst onto a spot bid moves back onto its
    reservation once the reservation has room (`recovery.back_to_reservation`):
    the task's setting, else the user's, else yes."""

    def parse(value: Any, scope: str) -> bool:
        if not isinstance(value, bool):
            raise settings.MithrilConfigError(
                f'{settings.name_in(BACK_TO_RESERVATION, scope)} is {value!r}; '
                'use true (a managed job on spot moves back onto its '
                'reservation once it has room) or false (it stays on spot).')
        return value

    return settings.first_set(BACK_TO_RESERVATION, task_section, user_section,
                              parse, default=True)


def resolve_reservation_end_lead(task_section: Dict[str, Any],
                                 user_section: Dict[str, Any],
                                 measured_launch_seconds: Optional[float] = None
                                 ) -> datetime.timedelta:
    """How long before its reservation's `end_time` a managed job on
    reserved instances starts its recovery (a reservation's end is a
    preemption known in advance), and how soon before its end a reservation
    takes no more launches: the task's `reservation_end_lead_minutes`, else
    the user's, else MEASURED_LAUNCH_MARGIN times the cluster's last launch
    (`measured_launch_seconds`, when known), at least
    DEFAULT_RESERVATION_END_LEAD."""

    def parse(value: Any, scope: str) -> datetime.timedelta:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                value <= 0):
            raise settings.MithrilConfigError(
                f'{settings.name_in(RESERVATION_END_LEAD, scope)} is '
                f'{value!r}; use a positive number of minutes (e.g. 30): how '
                'long before its reservation ends a managed job moves onto '
                'spot, long enough for the relaunch to win a bid, boot and '
                'set up.')
        return datetime.timedelta(minutes=value)

    lead = settings.first_set(RESERVATION_END_LEAD, task_section,
                              user_section, parse, default=None)
    if lead is not None:
        return lead
    if measured_launch_seconds is None:
        return DEFAULT_RESERVATION_END_LEAD
    return max(DEFAULT_RESERVATION_END_LEAD, datetime.timedelta(
        seconds=MEASURED_LAUNCH_MARGIN * measured_launch_seconds))


def relaunch_limit(limit: settings.LimitPrice, task_section: Dict[str, Any],
                   user_section: Dict[str, Any],
                   max_hourly_cost: Optional[float] = None
                   ) -> settings.LimitPrice:
    """The limit a managed job's relaunch after a preemption bids at: the
    recovery limit (task, else user) when set, else the launch's own
    `limit`. The one rule for the cloud (rendering a recovering cluster's
    relaunch) and the standby bid alike. A recovery limit below the
    launch's limit is refused: it could only wait longer; so is one above
    the task's `resources.max_hourly_cost`."""

    def parse(value: Any, scope: str) -> settings.LimitPrice:
        per_hour = settings.parse_price(value, RECOVERY_LIMIT_PRICE, scope)
        where = settings.name_in(RECOVERY_LIMIT_PRICE, scope)
        settings.check_ceiling(per_hour, where)
        settings.check_within_cap(per_hour, where,
                                  settings.cost_cap(max_hourly_cost))
        if per_hour < limit.per_hour:
            raise settings.MithrilConfigError(
                f'{where} is {money.format_dollars(per_hour)}/h, below the '
                f'launch\'s limit {limit.describe()}; a recovery limit is the '
                'cap a relaunch after a preemption may re-bid up to, so set it '
                'at or above the limit price.')
        return settings.LimitPrice(per_hour,
                                   f'{RECOVERY_LIMIT_PRICE} in {scope}, '
                                   'for a recovery after a preemption')

    return settings.first_set(RECOVERY_LIMIT_PRICE, task_section,
                              user_section, parse, default=limit)
