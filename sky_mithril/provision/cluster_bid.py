"""The cluster's bid: its one home. Finding it, placing it exactly once,
resuming or adopting it, waiting for the auction and for SSH, and undoing it.

A cluster is one spot bid for all of its nodes, named exactly
`cluster_name_on_cloud`. The live bid is found by that exact name: the server
filters by name (one request however many instances the project has), and the
answer is checked here for the exact name and a live status, so a server that
matched loosely, or old Terminated bids of the same name, cannot mislead it.
Everything after that goes by bid fid.

`ClusterBid.acquire` says what it did with an explicit `Outcome`: PLACED (a new
bid), RESUMED (a paused bid unpaused) or ADOPTED (a live bid used as it was).
`undo` reverses exactly that outcome: a placed bid is cancelled, a resumed one
paused again, an adopted one left alone. Requests that change the market run
with SIGINT/SIGTERM held (`interrupts.deferred`), so their outcome is always
known before an interrupt leaves.

Every change that can lift the project's worst-case spend (a bid placed, a
paused bid resumed, a limit raised) is checked against the launch's
`max_hourly_spend` first and settled after (`budget`).

A bid POST answered by a 5xx, a timeout or a reset may still be committed by
Mithril later. No second POST goes out until the bid has been looked for by
name for LATE_COMMIT_WINDOW_SECONDS (`create_once`; a look-up that fails is
made again until the window ends), and a launch that placed
a bid leaves its name with that one live bid (`cancel_extra_bids`), so a
commit later than the window is still cancelled while the launch is alive.

During a managed job's preemption notice the cluster may also hold a
*standby*: a second bid of the same name, which managed-job recovery places,
records, promotes or drops (`sky_mithril.recovery.standby`, plugged in here
through `use_standbys`). The cluster's bid stays the old one until the
standby is promoted. Having the same name, a standby is cancelled by `sky
down` like the cluster's bid, and by `sky stop`.
"""

import dataclasses
import datetime
import enum
import time
from decimal import Decimal
from typing import Any, Dict, FrozenSet, List, Optional, Protocol, Tuple

from sky import sky_logging
from sky.provision import common

from sky_mithril import CLOUD_NAME
from sky_mithril.account import connection
from sky_mithril import money
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import market_timing
from sky_mithril.provision import interrupts
from sky_mithril.provision import project_snapshot
from sky_mithril.task import settings

logger = sky_logging.init_logger('sky.sky_mithril.provision')

SSH_USER = 'ubuntu'

CANCEL_CONFIRM_SECONDS = 30.0
# A bid POST answered by a 5xx, a timeout or a reset may still be committed by
# Mithril afterwards: a backend can finish a request its gateway already gave
# up on. So after such an answer no second POST of the bid goes out until the
# bid has been looked for by name this long. 60 s is as long as the gateways
# and load balancers in front of an API commonly let a backend run (30 to 60
# s), counted from when the client stopped waiting; it costs a launch whose
# POST truly failed one minute per further POST. A commit later still is
# caught while the launch is alive (`ClusterBid.wait_until_ready`).
LATE_COMMIT_WINDOW_SECONDS = 60.0
# How often the bid is looked for during that window.
LATE_COMMIT_POLL_SECONDS = 2.0
# POSTs of one bid whose answers were lost before giving up.
CREATE_ATTEMPTS = 3
# The first "why is it waiting" report comes once the bid has sat through a
# few polls, so a bid that wins right away costs no pricing request.
FIRST_STATUS_AFTER_SECONDS = 5.0
STATUS_INTERVAL_SECONDS = 30.0
# Waiting polls back off to this interval.
MAX_WAITING_POLL_SECONDS = 3.0
# Polls of booting nodes are at least this far apart.
MIN_POLL_SECONDS = 0.02
LIMIT_KEY_HINT = ('raise config.mithril.limit_price (or limit_price_per_gpu) '
                  'to win sooner, or set config.mithril.provision_timeout.')

_REACHABLE = (models.InstanceState.STARTING, models.InstanceState.RUNNING)
_BOOTING = (models.InstanceState.NEW, models.InstanceState.CONFIRMED,
            models.InstanceState.SCHEDULED, models.InstanceState.INITIALIZING,
            *_REACHABLE)


class AllocationTimeoutError(RuntimeError):
    """The bid was not allocated in time; it has been cancelled. SkyPilot
    fails over to the next region or cloud on this error."""


class SeveralLiveBidsError(RuntimeError):
    """The cluster's name has several live bids and none can be told to be
    the cluster's (no standby is recorded): all of them may bill."""

    def __init__(self, name: str, fids: List[str]) -> None:
        super().__init__(
            f'Mithril has {len(fids)} live bids named {name!r} '
            f'({", ".join(fids)}); sky-mithril expects one per cluster. '
            'Cancel the extra ones (`sky down` cancels all of them).')
        self.fids = fids


class UnwatchedCommitError(errors.MithrilAPIError):
    """Placing a bid stopped without knowing whether a POST whose answer was
    lost was committed, because the last look-up for the bid, at the end of
    its late-commit window, failed: that bid may be live, and it would
    bill."""


class Outcome(enum.Enum):
    """What `ClusterBid.acquire` did to get the cluster's bid."""

    PLACED = 'placed'
    RESUMED = 'resumed'
    ADOPTED = 'adopted'


class Standbys(Protocol):
    """What the cluster's bid needs to know of a standby bid."""

    def standby_of(self, name: str) -> Optional[str]:
        """The fid of the cluster's standby ('' while it is being placed),
        or None when it has none."""

    def drop(self, conn: connection.Connection, name: str,
             standby_fid: str) -> None:
        """Cancels the cluster's standby (confirmed Terminated)."""

    def forget(self, name: str) -> None:
        """The cluster has no standby any more."""

    def being_prepared(self, name: str) -> bool:
        """Whether the cluster's recorded standby is still being prepared
        (its heartbeat is fresh)."""


# Until recovery plugs in (`use_standbys`), no cluster has a standby.
_standbys: Optional[Standbys] = None


def use_standbys(standbys: Standbys) -> None:
    """Tells the cluster's bid from a standby through `standbys` (managed-job
    recovery's records)."""
    global _standbys  # pylint: disable=global-statement
    _standbys = standbys


def boot_timeout(provider_config: Dict[str, Any]) -> float:
    value = provider_config.get('boot_timeout')
    return (float(value) if value not in (None, '') else
            float(settings.DEFAULT_BOOT_TIMEOUT_SECONDS))


def spend_budget(
        provider_config: Dict[str, Any]) -> Optional[settings.SpendBudget]:
    """The `max_hourly_spend` the cluster was launched with, if any."""
    value = provider_config.get('max_hourly_spend')
    if value in (None, ''):
        return None
    return settings.SpendBudget(
        Decimal(value), f'{settings.MAX_HOURLY_SPEND} of this launch')


def connect(provider_config: Optional[Dict[str, Any]]) -> connection.Connection:
    """A connection pinned to the profile, project and API the cluster was
    launched with, so switching profiles later does not lose the cluster."""
    provider_config = provider_config or {}
    return connection.connect(
        profile=provider_config.get('profile') or None,
        project_id=provider_config.get('project_id') or None,
        api_url=provider_config.get('api_url') or None)


def live_bids(conn: connection.Connection, name: str) -> List[models.Bid]:
    """Non-terminated bids named exactly `name`, newest first."""
    bids = conn.client.list_bids(conn.project_id, name=name)
    live = [b for b in bids
            if b.name == name and b.status != models.BidState.TERMINATED]
    return sorted(live, key=lambda b: b.created_at, reverse=True)


def ended_at(conn: connection.Connection,
             name: str) -> Optional[datetime.datetime]:
    """When the last bid named exactly `name` ended (the server's clock),
    once all have; None while one is live, or when none says when it ended.
    One request."""
    bids = [b for b in conn.client.list_bids(conn.project_id, name=name)
            if b.name == name]
    if any(b.status != models.BidState.TERMINATED for b in bids):
        return None
    return max((b.deactivated_at for b in bids if b.deactivated_at),
               default=None)


def live_bid(conn: connection.Connection, name: str) -> Optional[models.Bid]:
    """The cluster's bid, or None once it is gone."""
    return _clusters_bid(live_bids(conn, name), name)


def _clusters_bid(bids: List[models.Bid], name: str) -> Optional[models.Bid]:
    """Which of the cluster's live bids (`live_bids`) is the cluster's bid. A
    standby is the cluster's bid only once the bid it stands by for is gone;
    the standby record is read only when there are several. Several without
    a standby record raise SeveralLiveBidsError: all are the cluster's name's
    (a bid POST whose answer was lost, committed after its launch stopped
    looking), and nothing here tells which one SkyPilot's nodes are, so none
    is cancelled behind the user's back."""
    if len(bids) <= 1:
        return bids[0] if bids else None
    standby = None if _standbys is None else _standbys.standby_of(name)
    if standby is not None:
        # While a standby is being placed ('') its fid is unknown: the
        # cluster's bid is then the oldest.
        others = ([b for b in bids if b.fid != standby] if standby else
                  bids[-1:])
        if len(others) == 1:
            return others[0]
    raise SeveralLiveBidsError(name, [b.fid for b in bids])


def refreshed_bid(conn: connection.Connection,
                  name: str) -> Optional[models.Bid]:
    """The cluster's bid (`live_bid`) at a status refresh or a launch (which
    must not adopt it beside a standby left live), where every other
    live bid of its name must be a recorded standby still being prepared
    (`Standbys.being_prepared`). One that is not, a standby left live when
    its recovery ended (a cancel that failed, a controller gone), is
    cancelled, named in a warning, and its record forgotten. The cluster's
    bid is never cancelled: with one live bid nothing is, and without a
    standby record several live bids raise SeveralLiveBidsError as in
    `live_bid`."""
    bids = live_bids(conn, name)
    if (len(bids) < 2 or _standbys is None or
            _standbys.standby_of(name) is None or
            _standbys.being_prepared(name)):
        return _clusters_bid(bids, name)
    clusters = _clusters_bid(bids, name)
    assert clusters is not None, name
    for other in bids:
        if other.fid != clusters.fid:
            with interrupts.deferred():
                cancel_and_confirm(conn, other.fid)
            logger.warning(
                f'Cancelled bid {other.fid}: a standby of {name!r} that no '
                'recovery prepares any more, live beside the cluster\'s bid '
                f'{clusters.fid}.')
    _standbys.forget(name)
    return clusters


def current_instances(conn: connection.Connection,
                      bid: models.Bid) -> List[models.Instance]:
    """The instances that stand for the bid's nodes (`nodes_of`). One
    request."""
    return nodes_of(bid, conn.client.list_instances(conn.project_id,
                                                    bid_fids=[bid.fid]))


def nodes_of(bid: models.Bid,
             instances: List[models.Instance]) -> List[models.Instance]:
    """Of the bid's `instances`, those that stand for its nodes, at most
    `instance_quantity`, in the bid's own (stable) order where the bid lists
    them: the head is the bid's first, whichever node gets an address first.
    Replaced or terminated instances are skipped."""
    live = [i for i in instances
            if i.status not in (models.InstanceState.REPLACED,
                                models.InstanceState.TERMINATED)]
    return _in_order_of(bid, live)[:bid.instance_quantity]


def ssh_port(instance: models.Instance) -> int:
    """22 on Mithril; the emulator's local SSH hosts add `ssh_port`."""
    return int((instance.model_extra or {}).get('ssh_port') or 22)


def ssh_user_of(instance: models.Instance) -> str:
    """`ubuntu` on Mithril; the emulator's local SSH hosts add `ssh_user`."""
    return str((instance.model_extra or {}).get('ssh_user') or SSH_USER)


def cluster_info(conn: connection.Connection, bid: Optional[models.Bid],
                 provider_config: Optional[Dict[str, Any]]
                 ) -> common.ClusterInfo:
    """The bid's nodes that have an SSH destination, as SkyPilot sees a
    cluster. The head is always the bid's first instance (None while it has
    no address), never a worker that booted first."""
    return nodes_info(current_instances(conn, bid) if bid else [],
                      provider_config)


def nodes_info(instances: List[models.Instance],
               provider_config: Optional[Dict[str, Any]]
               ) -> common.ClusterInfo:
    """Nodes in order, head first, as SkyPilot sees a cluster: those with an
    SSH destination (the head None while it has none)."""
    nodes: Dict[str, List[common.InstanceInfo]] = {}
    ssh_user = SSH_USER
    for instance in instances:
        if not instance.ssh_destination:
            continue
        ssh_user = ssh_user_of(instance)
        nodes[instance.fid] = [
            common.InstanceInfo(instance_id=instance.fid,
                                internal_ip=instance.private_ip or
                                instance.ssh_destination,
                                external_ip=instance.ssh_destination,
                                ssh_port=ssh_port(instance),
                                tags={})
        ]
    return common.ClusterInfo(instances=nodes,
                              head_instance_id=(instances[0].fid if instances and
                                                instances[0].fid in nodes else None),
                              provider_name=CLOUD_NAME,
                              provider_config=provider_config,
                              ssh_user=ssh_user)


def _in_order_of(bid: models.Bid,
                 instances: List[models.Instance]) -> List[models.Instance]:
    """`instances` in the bid's own order; ones the bid does not list (yet)
    last, oldest first."""
    order = {fid: n for n, fid in enumerate(bid.instances)}
    return sorted(instances, key=lambda i: (order.get(i.fid, len(order)),
                                            i.created_at, i.name))


def _booting(instances: List[models.Instance], quantity: int) -> bool:
    """Whether the bid holds capacity: all of its nodes are booting or up."""
    return len(instances) == quantity and all(
        i.status in _BOOTING for i in instances)


def cancel_and_confirm(conn: connection.Connection, bid_fid: str) -> None:
    """Cancels the bid and waits until Mithril reports it Terminated.

    404 means it is already gone. Raises RuntimeError if it cannot be confirmed.
    """
    with project_snapshot.changing(conn):
        try:
            conn.client.cancel_bid(bid_fid)
        except errors.NotFoundError:
            return
        deadline = time.monotonic() + CANCEL_CONFIRM_SECONDS
        while True:
            try:
                status = conn.client.get_bid_status(bid_fid).status
            except errors.NotFoundError:
                return
            if status == models.BidState.TERMINATED:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f'Bid {bid_fid} is still {status} after '
                                   f'cancelling it for {CANCEL_CONFIRM_SECONDS:.0f}s.')
            time.sleep(1.0)


def pause(conn: connection.Connection, name: str) -> None:
    """Pauses the cluster's live bid: instances spin down, billing stops. A
    standby is cancelled: a stopped cluster bills for nothing. Once it is,
    the cluster's bid is looked up again: the standby's guard may have made
    the standby the cluster's bid meanwhile (the notice over), and then the
    drop keeps it, and it is what is paused."""
    bids = live_bids(conn, name)
    bid = _clusters_bid(bids, name)
    if bid is None:
        return
    standbys = [other for other in bids if other.fid != bid.fid]
    for standby in standbys:
        # A second live bid is the cluster's only as a recorded standby.
        assert _standbys is not None, standby.fid
        _standbys.drop(conn, name, standby.fid)
    if standbys:
        bid = live_bid(conn, name)
        if bid is None:
            return
    if bid.status == models.BidState.PAUSED:
        return
    try:
        with interrupts.deferred(), project_snapshot.changing(conn):
            conn.client.update_bid(bid.fid, paused=True)
    except errors.NotFoundError:
        return
    logger.info(f'Paused bid {bid.fid} ({bid.status} before).')


def cancel_all(conn: connection.Connection, name: str) -> None:
    """Cancels every live bid of the cluster (a standby too) and confirms
    each is Terminated. The standby's record is forgotten first: a standby
    placement still under way then finds it gone and cancels the bid it
    places itself, and one it recorded before is live by the time its bids
    are listed here."""
    if _standbys is not None:
        _standbys.forget(name)
    for bid in live_bids(conn, name):
        with interrupts.deferred():
            cancel_and_confirm(conn, bid.fid)
        logger.info(f'Cancelled bid {bid.fid}.')


def instance_type_fid(conn: connection.Connection, instance_type: str,
                      region: str) -> str:
    """The fid of `instance_type` that is auctioned in `region` (a name may
    appear under several fids)."""
    fids = {t.fid for t in conn.client.list_instance_types()
            if t.name == instance_type}
    for auction in conn.client.list_spot_availability():
        if auction.instance_type in fids and auction.region == region:
            return auction.instance_type
    raise RuntimeError(f'Mithril has no auction for {instance_type} in '
                       f'{region} right now; try another region.')


@dataclasses.dataclass(frozen=True)
class MarketView:
    """What the market looks like to a waiting bid."""

    spot_price: Optional[Decimal]
    available: Optional[int]

    def can_win(self, limit: Decimal, quantity: int) -> bool:
        """Whether a bid at `limit` for `quantity` instances would be
        allocated at the next auction round, as far as the market shows."""
        return ((self.spot_price is None or self.spot_price <= limit) and
                (self.available is None or self.available >= quantity))

    def reason(self, limit: Decimal, quantity: int) -> str:
        """Why a bid at `limit` for `quantity` instances waits."""
        if self.spot_price is not None and self.spot_price > limit:
            return (f'the spot price {money.format_dollars(self.spot_price)}/h '
                    f'is above your limit {money.format_dollars(limit)}/h')
        if self.available is not None and self.available < quantity:
            return (f'no capacity: {self.available} instance(s) free, '
                    f'{quantity} needed')
        return 'waiting for the next auction round'


def market_view(conn: connection.Connection, bid: models.Bid) -> MarketView:
    """The current spot price and free capacity for the bid's auction."""
    price = conn.client.get_current_price(bid.instance_type,
                                          region=bid.region,
                                          instance_quantity=bid.instance_quantity)
    return MarketView(price.spot_price, price.available_capacity)


def _describe(error: BaseException) -> str:
    """An error's message, or its kind when it has none (e.g. Ctrl-C)."""
    return str(error) or type(error).__name__


def _provision_timeout(provider_config: Dict[str, Any]) -> Optional[float]:
    value = provider_config.get('provision_timeout')
    return float(value) if value not in (None, '') else None


@dataclasses.dataclass
class ClusterBid:
    """The live bid behind one cluster and how this launch came to hold it."""

    conn: connection.Connection
    bid: models.Bid
    outcome: Outcome
    # Local epoch at which this launch placed the bid (None unless PLACED
    # and answered: a bid found by name after a lost answer has no known time).
    placed_at: Optional[float] = None
    # Live bids of the name that are not this launch's to cancel: the bid a
    # standby stands by for.
    placed_before: FrozenSet[str] = frozenset()

    @classmethod
    def acquire(cls, conn: connection.Connection, region: str, name: str,
                config: common.ProvisionConfig) -> 'ClusterBid':
        """The cluster's bid: the live one resumed or adopted with the
        launch's current settings, else a new one. A standby that no
        recovery prepares any more is cancelled first (`refreshed_bid`): the
        adopted bid would bill beside it for as long as the cluster lives.

        What this does to the market is undone if it fails or is interrupted.
        """
        existing = refreshed_bid(conn, name)
        held = (None if existing is None else cls(
            conn, existing, _outcome_for(conn, existing, region, config)))
        try:
            if held is None:
                placement = cls._place(conn, region, name, config)
                held = cls(conn, placement.bid, Outcome.PLACED,
                           placed_at=placement.placed_at)
            else:
                held._apply_launch_settings(config.provider_config)
        except BaseException as e:
            if held is None:
                cancel_half_placed(conn, name, e)
            else:
                held.undo(e)
            raise
        return held

    def _apply_launch_settings(self, provider_config: Dict[str, Any]) -> None:
        """Resumes a paused bid and gives it the launch's effective limit
        price, in one request, within the launch's spend budget; announces
        what changed. A change that lifts the bid's worst case (a resume, a
        raised limit) is settled against racing changes, and undone if it
        raced past the check or settling it failed. One that does not (a
        lowered limit) cannot lift the project's worst case, so it passes
        the check and stays, even in a project already above its budget."""
        limit = Decimal(provider_config['limit_price_per_hour'])
        new_limit = None if limit == self.bid.limit_price else limit
        resume = self.outcome == Outcome.RESUMED
        if new_limit is None and not resume:
            return
        old = self.bid
        lifts = resume or limit > old.limit_price
        budget = spend_budget(provider_config)
        change = budget_lib.Change(
            f'{"resuming" if resume else "re-pricing"} bid {old.fid} '
            f'({old.instance_quantity}× {money.format_dollars(limit)}/h)',
            limit * old.instance_quantity, frozenset({old.fid}))
        # Waiting for the budget's lock, Ctrl-C ends the launch at once;
        # the update and its settling run with signals held.
        with budget_lib.guarded(self.conn, budget):
            budget_lib.check(self.conn, budget, change)
            with interrupts.deferred(), project_snapshot.changing(self.conn):
                try:
                    self.bid = self.conn.client.update_bid(
                        old.fid, limit_price=new_limit,
                        paused=False if resume else None)
                    raced = (budget_lib.must_yield(self.conn, budget,
                                                   self.bid, latest=True)
                             if lifts else None)
                    if raced is not None:
                        raise raced
                except BaseException as cause:
                    # Unsettled (an update that failed may still have been
                    # applied; it raced past the check, or the re-check
                    # failed), the change could hold the project above its
                    # budget: it is undone whatever ended it.
                    self._put_back(old, new_limit, resume, cause)
                    raise
        if resume:
            logger.info(f'Resumed paused bid {old.fid} in {old.region}.')
        if new_limit is not None:
            logger.info(
                f'Changed the limit price of bid {old.fid} from '
                f'{money.format_dollars(old.limit_price)}/h to '
                f'{money.format_dollars(new_limit)}/h per instance, as this '
                'launch asks.')

    def _put_back(self, old: models.Bid, new_limit: Optional[Decimal],
                  resume: bool, cause: BaseException) -> None:
        """Undoes `_apply_launch_settings`' update of `old`, applied or
        maybe applied: its limit back (if it was raised or lowered), paused
        again (if it was resumed); idempotent. If that fails, stops
        SkyPilot's failover naming the limit the bid may bill at."""
        try:
            self.bid = self.conn.client.update_bid(
                old.fid, limit_price=old.limit_price if new_limit else None,
                paused=True if resume else None)
        except Exception as put_back_error:  # pylint: disable=broad-except
            highest = max(old.limit_price, new_limit or old.limit_price)
            raise common.StopFailoverError(
                f'Changing bid {old.fid} for this launch failed '
                f'({_describe(cause)}) and sky-mithril could not undo the '
                f'change: {put_back_error}. It may bill up to '
                f'{money.format_dollars(highest)}/h per instance: '
                f'run `sky stop` or `sky down` for this cluster, or set its '
                f'limit back to {money.format_dollars(old.limit_price)}/h in '
                'Mithril\'s console.') from put_back_error

    @staticmethod
    def _place(conn: connection.Connection, region: str, name: str,
               config: common.ProvisionConfig) -> 'Placement':
        """Places the cluster's bid exactly once (`create_once`).

        The instance type's fid comes from the live catalog the launch was
        planned with (`instance_type_fid` in the provider config); only when
        there is none, or Mithril refuses it as stale, is it looked up.
        """
        limit = Decimal(config.provider_config['limit_price_per_hour'])
        instance_type = config.node_config['InstanceType']
        planned_fid = config.provider_config.get('instance_type_fid') or None
        request = models.CreateBidRequest(
            project=conn.project_id,
            region=region,
            instance_type=(planned_fid or
                           instance_type_fid(conn, instance_type, region)),
            limit_price=limit,
            instance_quantity=config.count,
            name=name,
            launch_specification=models.LaunchSpecification(
                ssh_keys=[config.authentication_config['ssh_key_id']],
                volumes=volume_fids(config.provider_config)))
        budget = spend_budget(config.provider_config)
        try:
            placement = create_once(conn, request, budget=budget)
        except errors.ValidationError as e:
            if planned_fid is None or not _about_instance_type(e):
                raise
            placement = create_once(conn, request.model_copy(update={
                'instance_type': instance_type_fid(conn, instance_type,
                                                   region)}), budget=budget)
        logger.info(f'Placed Mithril bid {placement.bid.fid}: {config.count}× '
                    f'{instance_type} in {region} at a limit of '
                    f'{money.format_dollars(limit)}/h per instance.')
        return placement

    def wait_until_ready(self, provider_config: Dict[str, Any]
                         ) -> List[models.Instance]:
        """Waits for the auction, then for every node's SSH destination; the
        acquired bid is undone if either fails or is interrupted.

        A bid this launch placed is then its name's only live bid (but for
        `placed_before`), whether the wait ended well or not
        (`cancel_extra_bids`; one request): a bid POST whose answer was lost
        and that Mithril committed after `create_once` stopped looking, even
        one of an earlier launch of the name, is caught here at the latest.
        """
        try:
            instances = self._wait(provider_config)
            if self.outcome == Outcome.PLACED:
                cancel_extra_bids(self.conn, self.bid.name, self.bid.fid,
                                  self.placed_before)
        except BaseException as e:
            self.undo(e)
            raise
        return instances

    def _wait(self, provider_config: Dict[str, Any]) -> List[models.Instance]:
        """Polls the bid's instances, one request per poll, until each node
        is reachable.

        While the bid waits in the auction, polls back off to every 3 s, or
        come right after the auction's next clearing once its schedule is
        known (`market_timing`); the user hears why it waits. Once nodes
        boot, the next poll is timed for when they should be reachable, then
        polls come fast. The bid itself is read only for the reports, at the
        timeouts, and to order several nodes.
        """
        allocation_timeout = _provision_timeout(provider_config)
        boot_seconds = boot_timeout(provider_config)
        timing = self._timing()
        region, instance_type = self.bid.region or '', self.bid.instance_type
        start = last_poll = time.time()
        next_report = start + FIRST_STATUS_AFTER_SECONDS
        waiting_interval = 0.5
        allocated_at: Optional[float] = None
        precise = False
        while True:
            instances = current_instances(self.conn, self.bid)
            now = time.time()
            if _booting(instances, self.bid.instance_quantity):
                if allocated_at is None:
                    allocated_at, precise = self._allocated_at(
                        timing, instances, last_poll, now)
                elapsed = now - allocated_at
                if all(i.status in _REACHABLE and i.ssh_destination
                       for i in instances):
                    if precise:
                        timing.observe_reachable(instance_type, region, elapsed)
                    timing.save()
                    return self._in_bid_order(instances)
                if precise:
                    timing.observe_booting(instance_type, region, elapsed)
                if elapsed > boot_seconds:
                    raise self._boot_timeout_error(instances, boot_seconds)
                target = timing.next_boot_poll(instance_type, region, elapsed)
                delay = (min(max(elapsed / 4, 0.25), MAX_WAITING_POLL_SECONDS)
                         if target is None else
                         max(target - elapsed, MIN_POLL_SECONDS))
            else:
                allocated_at = None
                if (allocation_timeout is not None and
                        now - start >= allocation_timeout):
                    raise self._allocation_timeout_error(allocation_timeout)
                if now >= next_report:
                    self._report_waiting(now - start, allocation_timeout)
                    next_report = now + STATUS_INTERVAL_SECONDS
                delay = waiting_interval
                waiting_interval = min(waiting_interval * 2,
                                       MAX_WAITING_POLL_SECONDS)
                clearing = timing.next_clearing(region, now, waiting_interval)
                if clearing is not None:
                    delay = clearing - now
            last_poll = now
            time.sleep(min(max(delay, 0.0), STATUS_INTERVAL_SECONDS))

    def _timing(self) -> market_timing.MarketTiming:
        """The endpoint's learned timing, updated with this bid's placement;
        the auction's clearing schedule is read once per region (its first
        allocation then confirms it or not)."""
        timing = market_timing.MarketTiming.load(
            self.conn.credentials.api_url)
        if self.placed_at is None:
            return timing
        timing.observe_clock(self.bid.created_at, self.placed_at)
        region = self.bid.region or ''
        if region not in timing.clearings:
            try:
                history = self.conn.client.get_price_history(
                    [self.bid.instance_type], region=region,
                    start_time=self.bid.created_at -
                    datetime.timedelta(hours=1))
                timing.learn_clearings(
                    region, [t for series in history.series
                             for t in series.timestamps])
            except errors.MithrilAPIError:
                pass  # Without a schedule, waiting polls just back off.
        timing.save()
        return timing

    def _allocated_at(self, timing: market_timing.MarketTiming,
                      instances: List[models.Instance], last_poll: float,
                      now: float) -> Tuple[float, bool]:
        """When the bid was allocated, in local time, and whether that is
        precise: from the new instances' creation time once the server's
        clock is known, else the middle of the last poll interval."""
        if self.placed_at is not None:
            created = min(i.created_at for i in instances)
            timing.observe_allocation(self.bid.region or '', created)
            local = timing.to_local(created)
            if local is not None and last_poll - 1.0 <= local <= now:
                return local, True
        return (last_poll + now) / 2, False

    def _report_waiting(self, waited: float, timeout: Optional[float]) -> None:
        """Tells the user why the bid still waits (re-reading it, so a bid
        terminated elsewhere ends the wait)."""
        self.bid = self.conn.client.get_bid(self.bid.fid)
        bid = self.bid
        if bid.status == models.BidState.TERMINATED:
            raise RuntimeError(f'Bid {bid.fid} was terminated on Mithril '
                               'before it was allocated.')
        view = market_view(self.conn, bid)
        waits = ('waits without a deadline' if timeout is None else
                 f'is cancelled after {timeout:.0f}s')
        logger.info(
            f'Bid {bid.fid} is {bid.status} in {bid.region} ({waited:.0f}s): '
            f'{view.reason(bid.limit_price, bid.instance_quantity)}. '
            f'The bid {waits}; {LIMIT_KEY_HINT}')

    def _allocation_timeout_error(self,
                                  timeout: float) -> AllocationTimeoutError:
        bid = self.bid
        view = market_view(self.conn, bid)
        return AllocationTimeoutError(
            f'Mithril bid {bid.fid} in {bid.region} was not allocated '
            f'within {timeout:.0f}s: '
            f'{view.reason(bid.limit_price, bid.instance_quantity)}. '
            f'It was cancelled. {LIMIT_KEY_HINT}')

    def _boot_timeout_error(self, instances: List[models.Instance],
                            boot_timeout: float) -> RuntimeError:
        states = ', '.join(f'{i.fid} {i.status}'
                           for i in instances) or 'no instances yet'
        return RuntimeError(
            f'Bid {self.bid.fid} won the auction, but its nodes were not '
            f'reachable over SSH within {boot_timeout:.0f}s '
            f'(config.mithril.boot_timeout): {states}. The bid is being '
            'cancelled so it stops billing; raise boot_timeout to wait longer.')

    def _in_bid_order(self, instances: List[models.Instance]
                      ) -> List[models.Instance]:
        """The instances in the bid's order (the head first); the bid is
        re-read only when it has several nodes it does not list yet."""
        if len(instances) > 1 and not all(i.fid in self.bid.instances
                                          for i in instances):
            self.bid = self.conn.client.get_bid(self.bid.fid)
        return _in_order_of(self.bid, instances)

    def cluster_info(self, provider_config: Optional[Dict[str, Any]]
                     ) -> common.ClusterInfo:
        """The bid's nodes as SkyPilot sees a cluster."""
        return cluster_info(self.conn, self.bid, provider_config)

    def undo(self, cause: BaseException) -> None:
        """Reverses this launch's outcome; if that is impossible, stops
        SkyPilot's failover so the user learns about the bid."""
        try:
            with interrupts.deferred():
                self._reverse()
        except Exception as cleanup_error:  # pylint: disable=broad-except
            raise common.StopFailoverError(
                f'Launch failed ({_describe(cause)}) and sky-mithril could not '
                f'clean up bid {self.bid.fid}: {cleanup_error}. It may still '
                'allocate and bill: run `sky down` for this cluster or cancel '
                'the bid in Mithril\'s console.') from cleanup_error
        if self.outcome != Outcome.ADOPTED:
            logger.info(f'{"Cancelled" if self.outcome == Outcome.PLACED else "Paused"} '
                        f'bid {self.bid.fid} after: {_describe(cause)}')

    def _reverse(self) -> None:
        """Cancels a placed bid (and any extra bid of its name,
        `cancel_extra_bids`), pauses a resumed one, keeps an adopted one."""
        if self.outcome == Outcome.PLACED:
            cancel_and_confirm(self.conn, self.bid.fid)
            cancel_extra_bids(self.conn, self.bid.name, self.bid.fid,
                              self.placed_before)
        elif self.outcome == Outcome.RESUMED:
            with project_snapshot.changing(self.conn):
                self.conn.client.update_bid(self.bid.fid, paused=True)


@dataclasses.dataclass(frozen=True)
class Placement:
    """A bid `create_once` placed."""

    bid: models.Bid
    # Local epoch of the POST that answered with the bid (the middle of the
    # request); None when the bid was found by name after a lost answer.
    placed_at: Optional[float]


def create_once(conn: connection.Connection,
                request: models.CreateBidRequest,
                placed_before: FrozenSet[str] = frozenset(), *,
                budget: Optional[settings.SpendBudget]) -> Placement:
    """POSTs the bid so that it exists once, never twice, and only within
    `budget` (the project's `max_hourly_spend`; None: none set).

    Every bid placement goes through here. The budget is checked before the
    first POST and, once the bid exists, settled against other changes that
    raced past the check (`budget_lib`), holding the project's budget lock
    throughout; a bid that must yield is cancelled, and the refusal raised.

    A POST answered by a 5xx, a timeout or a reset may still be committed
    later, so no second POST goes out while its outcome is unknown: the bid
    is looked for by name (bids in `placed_before` excepted) for
    LATE_COMMIT_WINDOW_SECONDS and used once it appears; only if it has not
    appeared by then is it POSTed again, at most CREATE_ATTEMPTS times in
    all. The client never retries a POST on its own once it may have reached
    the server.

    A look-up that fails is made again at the next poll, up to the window's
    end: only one that fails once the window is over ends the looking (it
    raises). Each POST runs with SIGINT/SIGTERM held (`interrupts.deferred`);
    the looking between POSTs does not, so Ctrl-C ends it at once. Whatever
    ends this while a POST's outcome is unknown, an interrupt or an error,
    first watches the rest of that POST's window and cancels the bid if it
    appears (`_BidPosts.cancel_late_commit`); if the last look-up fails,
    that raises UnwatchedCommitError. After more than one POST, any other
    live bid of the name is cancelled (`cancel_extra_bids`).
    """
    posts = _BidPosts(conn, request.name, placed_before)
    with budget_lib.guarded(conn, budget):
        budget_lib.check(conn, budget, budget_lib.new_bid(
            request.name, request.instance_quantity, request.limit_price))
        try:
            placed = posts.place(request)
            if posts.count > 1:
                cancel_extra_bids(conn, request.name, placed.bid.fid,
                                  placed_before)
        except BaseException as e:
            posts.cancel_late_commit(e)
            raise
        try:
            raced = budget_lib.must_yield(conn, budget, placed.bid,
                                          latest=False)
            if raced is not None:
                raise raced
        except BaseException:
            # Unsettled, the bid could hold the project above its budget.
            with interrupts.deferred():
                cancel_and_confirm(conn, placed.bid.fid)
            raise
    return placed


class _BidPosts:
    """The POSTs of one bid, and until when one of them whose answer was lost
    may still be committed."""

    def __init__(self, conn: connection.Connection, name: str,
                 placed_before: FrozenSet[str]) -> None:
        self.conn = conn
        self.name = name
        self.placed_before = placed_before
        self.count = 0
        # The monotonic time until which a POST whose answer was lost may
        # still be committed; None while every POST's outcome is known.
        self.unknown_until: Optional[float] = None

    def place(self, request: models.CreateBidRequest) -> Placement:
        """The bid, POSTed as `create_once` says."""
        while True:
            try:
                return self._post(request)
            except errors.AmbiguousResponseError as e:
                found = self._await_late_commit()
                if found is not None:
                    logger.info(f'Bid {found.fid} was placed although the '
                                f'response was lost ({e}); using it.')
                    return Placement(found, placed_at=None)
                if self.count == CREATE_ATTEMPTS:
                    raise
                logger.info(f'Placing the bid failed ({e}); no bid named '
                            f'{self.name!r} appeared within '
                            f'{LATE_COMMIT_WINDOW_SECONDS:.0f}s, so it was '
                            'not created: placing it again.')

    def _post(self, request: models.CreateBidRequest) -> Placement:
        """One POST, with signals held; a lost answer starts its window
        before any held signal is delivered."""
        with interrupts.deferred(), project_snapshot.changing(self.conn):
            self.count += 1
            sent = time.time()
            try:
                bid = self.conn.client.create_bid(request)
            except errors.AmbiguousResponseError:
                self.unknown_until = (time.monotonic() +
                                      LATE_COMMIT_WINDOW_SECONDS)
                raise
            return Placement(bid, placed_at=(sent + time.time()) / 2)

    def _ours(self) -> List[models.Bid]:
        """Live bids of the name this placement may have made, oldest first."""
        return [b for b in reversed(live_bids(self.conn, self.name))
                if b.fid not in self.placed_before]

    def _await_late_commit(self) -> Optional[models.Bid]:
        """The bid of a POST whose answer was lost, once it appears; None if
        it has not by the end of the window. A look-up that fails is made
        again at the next poll, so a commit after a passing failure is still
        found; one that fails once the window is over raises, the POST's
        outcome still unknown."""
        assert self.unknown_until is not None
        while True:
            try:
                found = self._ours()
            except errors.MithrilAPIError as e:
                if time.monotonic() >= self.unknown_until:
                    raise
                logger.debug(f'Looking for bid {self.name!r} failed ({e}); '
                             'looking again.')
            else:
                if found or time.monotonic() >= self.unknown_until:
                    self.unknown_until = None
                    return found[0] if found else None
            time.sleep(LATE_COMMIT_POLL_SECONDS)

    def cancel_late_commit(self, cause: BaseException) -> None:
        """After `cause` ended the placement while a POST's outcome is
        unknown: cancels its bid if it appears before the window ends (a
        window already over is looked at once more). Ctrl-C again stops the
        watch, saying what may still appear."""
        if self.unknown_until is None:
            return
        logger.info(f'Placing bid {self.name!r} stopped ({_describe(cause)}) '
                    'while a POST whose answer was lost may still be '
                    f'committed; watching for it for up to '
                    f'{max(self.unknown_until - time.monotonic(), 0):.0f}s '
                    'to cancel it.')
        until = self.unknown_until
        try:
            found = self._await_late_commit()
        except BaseException as e:
            stopped = (
                f'Stopped watching for bid {self.name!r}: Mithril may have '
                'committed a POST of it whose answer was lost, or still '
                f'commit it in the next {max(until - time.monotonic(), 0):.0f}'
                's, and it would bill. Run `sky down` for this cluster '
                'afterwards to cancel it.')
            logger.warning(stopped)
            if isinstance(e, Exception):
                raise UnwatchedCommitError(
                    f'{stopped} Looking for it failed: {_describe(e)}') from e
            raise
        if found is not None:
            # Undoing it cancels any other bid of the placement too.
            ClusterBid(self.conn, found, Outcome.PLACED,
                       placed_before=self.placed_before).undo(cause)


def cancel_extra_bids(conn: connection.Connection, name: str, keep: str,
                      placed_before: FrozenSet[str] = frozenset()) -> None:
    """Cancels every live bid named `name` but `keep` and `placed_before`,
    each confirmed Terminated and named in a warning: a second bid of the
    name is a bid POST whose answer was lost, committed late, and would bill
    beside the cluster's."""
    for bid in live_bids(conn, name):
        if bid.fid == keep or bid.fid in placed_before:
            continue
        with interrupts.deferred():
            cancel_and_confirm(conn, bid.fid)
        logger.warning(f'Cancelled bid {bid.fid}: a second live bid named '
                       f'{name!r} beside {keep}, from a bid POST whose '
                       'answer was lost and that Mithril committed late.')


def _about_instance_type(error: errors.ValidationError) -> bool:
    """Whether Mithril refused the bid's instance type (e.g. a stale fid)."""
    return any('instance_type' in (entry.get('loc') or ())
               for entry in error.detail)


def volume_fids(provider_config: Dict[str, Any]) -> List[str]:
    """The volumes (`config.mithril.volumes`) the cluster's bid attaches."""
    return [f for f in str(provider_config.get('volume_fids') or '').split(',')
            if f]


def _outcome_for(conn: connection.Connection, bid: models.Bid, region: str,
                 config: common.ProvisionConfig) -> Outcome:
    """RESUMED or ADOPTED for the cluster's live bid, once it is checked to
    match this launch; a mismatch raises naming the fix."""
    wanted = config.node_config['InstanceType']
    names = {t.fid: t.name for t in conn.client.list_instance_types()}
    if names.get(bid.instance_type, bid.instance_type) != wanted:
        raise RuntimeError(
            f'The cluster\'s bid {bid.fid} is for '
            f'{names.get(bid.instance_type, bid.instance_type)}, not {wanted}; '
            'a Mithril bid cannot change its instance type. `sky down` the '
            'cluster and launch again.')
    if bid.region and bid.region != region:
        raise RuntimeError(
            f'The cluster\'s bid {bid.fid} lives in {bid.region}, not '
            f'{region}; a Mithril cluster never moves. `sky down` it to '
            'launch elsewhere.')
    if sorted(bid.launch_specification.volumes) != sorted(
            volume_fids(config.provider_config)):
        raise RuntimeError(
            f'The cluster\'s bid {bid.fid} has volumes '
            f'{bid.launch_specification.volumes or "none"}, but this launch '
            f'mounts {volume_fids(config.provider_config) or "none"}. `sky '
            'down` the cluster and launch again to change its volumes.')
    if bid.instance_quantity != config.count:
        raise RuntimeError(
            f'The cluster\'s bid {bid.fid} has {bid.instance_quantity} '
            f'nodes, not {config.count}; Mithril bids cannot be resized. '
            '`sky down` the cluster and launch again.')
    if bid.status != models.BidState.PAUSED:
        return Outcome.ADOPTED
    if not config.resume_stopped_nodes:
        raise RuntimeError(f'The cluster\'s bid {bid.fid} is paused; use '
                           '`sky start` to resume it.')
    return Outcome.RESUMED


def cancel_half_placed(conn: connection.Connection, name: str,
                       cause: BaseException,
                       placed_before: FrozenSet[str] = frozenset()) -> None:
    """After placing a bid failed or was interrupted, cancels any bid of its
    name (`placed_before` excepted). One look-up does: `create_once` leaves
    only once every POST's outcome is known or its window watched (else it
    raises UnwatchedCommitError), and a bid whose POST was answered just as
    an interrupt came is listed already."""
    with interrupts.deferred():
        try:
            found = [b for b in live_bids(conn, name)
                     if b.fid not in placed_before]
        except Exception as lookup_error:  # pylint: disable=broad-except
            raise common.StopFailoverError(
                f'Placing the Mithril bid {name!r} failed '
                f'({_describe(cause)}) and sky-mithril could not check '
                f'whether it exists: {lookup_error}. Run `sky down` for '
                'this cluster to cancel it if it does.') from lookup_error
        if found:
            # Undoing one cancels the others too (`ClusterBid._reverse`).
            ClusterBid(conn, found[0], Outcome.PLACED,
                       placed_before=placed_before).undo(cause)
