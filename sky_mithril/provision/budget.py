"""The project's spend budget (`max_hourly_spend`): its worst case, the check
every bid placement, resume and limit raise passes (`check`), and the rule
that settles changes that raced past it (`must_yield`).

On Mithril a live bid is never billed above its limit, so the project's
worst-case spend per hour is exact: limit × instances summed over its
billable bids (Open, Allocated, Preempting; a Paused bid bills nothing).
A change (a new bid, a paused bid resumed, a limit raised) that would lift
it above the budget is refused before the request that makes it, naming the
bids that use the budget (with their SkyPilot clusters) and by how much it
would exceed; a change that does not lift it (a relaunch at the same or a
lower limit) always passes, and is never undone.

How close the guarantee is. The check and the change are one step per
project on one SkyPilot state: `guarded` holds SkyPilot's lock around both
(`shared_state`: a file lock for one user's home, shared by the API server's
worker processes, its jobs controller (consolidation mode) and the
`sky-mithril` commands of that home; a Postgres advisory lock shared by every
process and replica of a team's API server). Changes made elsewhere (another
API server, a teammate's laptop) can pass their checks before either
is made; so right after its change each one reads the live bids again
(`must_yield`) and undoes itself if the bids that entered the budget before
it, plus itself (as the change's answer has it, listed yet or not), exceed
the budget, or if that re-read fails: of two racing bids the one placed
first is kept, and a resumed bid or a raised limit yields to every other. Until that
re-read (one request after the change) the worst case can exceed the budget
by the racing change; a bid allocated in that moment bills for it. Bids that
enter the project without this check (Mithril's console, `ml`, a user
without `max_hourly_spend`) count against the budget but are never refused.
"""

import contextlib
import dataclasses
import datetime
from decimal import Decimal
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

from sky_mithril import money
from sky_mithril import shared_state
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.provision import project_snapshot
from sky_mithril.provision import sky_clusters
from sky_mithril.task import settings

# The bid states that can bill: at most limit × instances per hour.
BILLABLE = (models.BidState.OPEN, models.BidState.ALLOCATED,
            models.BidState.PREEMPTING)
HOW_TO_FIT = ('Make room with `sky down` or `sky stop` (a stopped cluster\'s '
              'paused bid bills nothing) or `sky-mithril instance delete`, '
              'lower the limit price, or raise max_hourly_spend.')


class BudgetExceededError(RuntimeError):
    """A change would lift the project's worst case above its budget; the
    change was not made, or has been undone."""


def worst_case(bid: models.Bid) -> Decimal:
    """The most `bid` can bill per hour now: nothing unless it is billable."""
    if bid.status not in BILLABLE:
        return Decimal(0)
    return bid.limit_price * bid.instance_quantity


def total_worst_case(bids: List[models.Bid]) -> Decimal:
    """The most `bids` can bill per hour together."""
    return sum((worst_case(b) for b in bids), Decimal(0))


def billable_bids(conn: connection.Connection) -> List[models.Bid]:
    """The project's bids that can bill, oldest first. One listing of every
    bid (all pages) rather than one per status, which could miss a bid that
    changes status between them."""
    bids = [b for b in conn.client.list_bids(conn.project_id)
            if b.status in BILLABLE]
    return sorted(bids, key=_entered)


def _entered(bid: models.Bid) -> Tuple[datetime.datetime, str]:
    """The order bids entered the budget in: placement time, then fid."""
    return (bid.created_at, bid.fid)


@dataclasses.dataclass(frozen=True)
class Change:
    """What a request is about to do to the worst case: `what` (for the
    user) will cost at most `per_hour`, in place of the bids in `replaces`
    (the bid it resumes or re-prices, a cluster's own bid); none for a new
    bid."""

    what: str
    per_hour: Decimal
    replaces: FrozenSet[str] = frozenset()


def new_bid(name: str, quantity: int, limit: Decimal) -> Change:
    """Placing a bid named `name` for `quantity` instances at `limit`."""
    return Change(f'the new bid {name!r} ({quantity}× {_per_hour(limit)})',
                  limit * quantity)


@dataclasses.dataclass(frozen=True)
class Standing:
    """The project's worst case now (over `using`, its billable bids) and
    once `change` is made, against `budget`."""

    budget: settings.SpendBudget
    change: Change
    using: List[models.Bid]
    now: Decimal
    after: Decimal

    @property
    def fits(self) -> bool:
        """Whether the change may be made: it keeps the worst case within
        the budget, or does not lift it."""
        return self.after <= self.budget.per_hour or self.after <= self.now

    def note(self) -> str:
        """The pre-launch line."""
        return (f'Mithril spend: worst case now {_per_hour(self.now)} of your '
                f'{self.budget.describe()}; {_per_hour(self.after)} with '
                f'{self.change.what}.')

    def refusal(self, labels: Dict[str, str]) -> BudgetExceededError:
        """Why the change is refused, naming the bids that use the budget
        (`labels`: SkyPilot cluster by bid name)."""
        excess = self.after - self.budget.per_hour
        return BudgetExceededError(
            f'Mithril spend budget: {self.change.what} would lift the '
            f'project\'s worst case from {_per_hour(self.now)} to '
            f'{_per_hour(self.after)}, {_per_hour(excess)} above '
            f'{self.budget.describe()}. Using the budget: '
            f'{describe_bids(self.using, labels)}. {HOW_TO_FIT}')


def standing(budget: settings.SpendBudget, bids: List[models.Bid],
             change: Change) -> Standing:
    """The worst case over `bids` (billable, `billable_bids`), now and once
    `change` replaces its bids."""
    now = total_worst_case(bids)
    replaced = total_worst_case([b for b in bids if b.fid in change.replaces])
    return Standing(budget, change, bids, now, now - replaced + change.per_hour)


def check(conn: connection.Connection,
          budget: Optional[settings.SpendBudget],
          change: Change) -> Optional[Standing]:
    """The one check: raises BudgetExceededError when `change` would lift
    the project's worst case above `budget`; None when there is no budget.
    Run it inside `guarded`, with the change."""
    if budget is None:
        return None
    found = standing(budget, billable_bids(conn), change)
    if not found.fits:
        raise found.refusal(cluster_labels())
    return found


def must_yield(conn: connection.Connection,
               budget: Optional[settings.SpendBudget], bid: models.Bid, *,
               latest: bool) -> Optional[BudgetExceededError]:
    """After a change made `bid` (as the change's answer has it) billable:
    why the change must be undone, if the bids that entered the budget
    before it plus itself now exceed the budget (module docstring); None if
    it stays. A bid placed by the change entered at its placement; one it
    resumed or whose limit it raised entered just now (`latest`), after
    every other.

    `bid` counts as the answer has it (limit × instances) whether or not
    the listing shows it: a listing can lag the request that made the
    change, and a bid it leaves out would be kept above the budget."""
    if budget is None:
        return None
    before = [b for b in billable_bids(conn) if b.fid != bid.fid and
              (latest or _entered(b) < _entered(bid))]
    total = (total_worst_case(before) +
             bid.limit_price * bid.instance_quantity)
    if total <= budget.per_hour:
        return None
    return BudgetExceededError(
        f'Mithril spend budget: bid {bid.fid} ({bid.name}) raced other '
        f'changes to the project past the budget check: with the bids that '
        f'entered the budget before it the worst case is {_per_hour(total)}, '
        f'{_per_hour(total - budget.per_hour)} above '
        f'{budget.describe()}, so this launch undid its change. Using the '
        f'budget: {describe_bids(before, cluster_labels())}. {HOW_TO_FIT}')


@contextlib.contextmanager
def guarded(conn: connection.Connection,
            budget: Optional[settings.SpendBudget]) -> Iterator[None]:
    """Holds the project's budget lock in SkyPilot's state (when there is a
    budget): the check and the change it allows, as one step."""
    if budget is None:
        yield
        return
    with shared_state.held(_lock_name(conn)):
        yield


def _lock_name(conn: connection.Connection) -> str:
    return f'budget-{project_snapshot.scope_of(conn)}'


def cluster_labels() -> Dict[str, str]:
    """SkyPilot's clusters by bid name; none when SkyPilot's state cannot be
    read (the bids are then named by their own names)."""
    try:
        return sky_clusters.clusters_by_bid_name()
    except Exception:  # pylint: disable=broad-except
        return {}


def describe_bids(bids: List[models.Bid], labels: Dict[str, str]) -> str:
    """Each bid with its SkyPilot cluster, status and worst case."""
    if not bids:
        return 'no bids'
    parts = []
    for bid in bids:
        owner = (f'cluster {labels[bid.name]}' if bid.name in labels else
                 f'bid {bid.name}')
        parts.append(f'{owner} ({bid.fid}, {bid.status}, '
                     f'{bid.instance_quantity}× '
                     f'{_per_hour(bid.limit_price)} = '
                     f'{_per_hour(worst_case(bid))})')
    return '; '.join(parts)


def _per_hour(amount: Decimal) -> str:
    return f'{money.format_dollars(amount)}/h'
