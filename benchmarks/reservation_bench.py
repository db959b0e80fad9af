"""Reserved capacity first, spot when it is full: a week of a team's jobs on
Mithril's market, four ways side by side (issue 22, "Measured").

The policies, each on its own market (same seed, same prices, same jobs):
- spot only: each job places a one-node spot bid at the limit price and keeps
  it until the job is done; a preempted job waits in its bid for the next win
  and redoes the work since its last checkpoint;
- reservation only: a 2-node reservation for the week; jobs queue for its
  nodes, first come first served;
- reservation first: the same reservation; a job takes a free reserved node,
  else places a spot bid; a job whose bid is waiting (not won yet, or its node
  lost to a preemption) moves to a reserved node as soon as one is free, and
  so, after the waiting ones, does a job running on spot, in submission
  order, as the plugin moves a managed job that burst onto spot back onto
  its reservation (`sky_mithril/recovery/back_to_reservation.py`, on by
  default with `recovery_starts: notice`): its preemption hooks save a
  checkpoint at the move, so it loses no work, then its bid is cancelled
  and it takes the reserved node, resumed if paused (the market's boot,
  about a minute here; SkyPilot's own relaunch and setup are not counted,
  as for any launch in the bench). No move starts within the lead time (10
  minutes) of the reservation's end. The plugin waits an hour (doubling)
  before moving a job again after a move whose relaunch lost the free node
  to another launch; here one free node starts one move and the bench is
  the only launcher, so no move loses and a job moves at most once. What
  stays on spot beside a free reserved node (a node under a preemption
  notice, which the plugin does not move, or the last minutes before the
  end) is the row "spot job-hours while a reserved node was free";
- reservation first, no move back: the same without the move, so a job
  running on spot stays there until it ends or loses its node (the plugin
  with `back_to_reservation: false` or `recovery_starts: node_lost`, and
  this bench's reservation first before the plugin moved jobs back); side
  by side, the two show what the move is worth.
With a reservation, a job's reserved node is paused when the job ends and
resumed by the next job that takes it, as the plugin does (`sky down` of a
cluster on reserved instances pauses them; a launch claims free instances,
running ones first, and resumes paused ones): a node paused an hour or more
earns the pause credit, and a resume takes minutes when spot bids hold the
capacity the pause lent them.

The market is the emulator's model (`sky_mithril.emulator.market`) in
process, its clock moved a minute at a time, with no sleeping. Its own rules
make every dollar and minute: the clearing every 2 minutes and its second
price, a preemption when the spot price rises above a bid's limit (a 5-minute
notice, then the node is gone), the 1-minute boot, the reservation's quote and
up-front charge, and the reserved capacity leaving the spot pool. The bench
only decides which job runs where (and pauses or resumes reserved nodes), and
reads the market's record: instances' statuses (running or not, a node lost),
charges (the clearing prices the bids were billed) and the pause credit.
Unlike the other benchmarks it runs no HTTP server: they measure
sky-mithril's client, which speaks HTTP, while this one measures the
policies, played by the bench itself with no client code on its path, so a
server would only slow its 40,000 steps down.

The scenario, and why (realistic, not picked to win):
- one node type, h100-80gb.sxm.8x in us-central2-a, of the emulator's default
  market: $15.20/h (about $1.90 per GPU-hour), 8 nodes of capacity (its
  default), of which a reservation takes its nodes out of the spot pool;
- spot prices: the week before and the week run follow the emulator's default
  price history (`default_market.seed_history`: a daily cycle of +-12%,
  dearest in the early afternoon UTC, and a mean-reverting random walk); no
  spikes were added to make spot look worse;
- the limit price is what `sky-mithril prices` suggests from the week before
  (its default 90% likelihood), as docs/limit-prices.md tells a user to pick it;
- the reservation is bought Monday 09:00 UTC for the week (168 h), 2 nodes,
  at the market's quote then (the spot price then, raised by the share of
  capacity already reserved, plus a 25% option premium that buys the
  credits: a reserved node-hour costs more than spot did at purchase): the
  base load (1.5 nodes) rounded up, the size bought to cover what always
  runs. Its cost is the up-front charge less the pause credit its paused
  nodes earned (a credit on future Mithril usage, counted as dollars back);
- demand, seeded: a base load of training runs round the clock (one every 4 h
  on average, 4-8 h of work each) plus sweeps on weekdays 09:00-18:00 UTC
  (one every 3 h on average, 2-6 jobs of 1-3 h each, launched at once); jobs
  save a checkpoint every 30 minutes of work. Jobs arrive over the whole week;
  what is not done when the week (and the reservation) ends is reported
  incomplete, with the work left.

Printed per policy: dollars (the reservation's up-front charge, unit price x
hours x nodes, and the pause credit the market granted; the spot charges the
market recorded), wait (the hours a job was not running between its
submission and its end, or the week's end if it did not finish: queueing,
auctions, boots, preemptions, moves), work done and redone, the jobs moved
from spot onto a reserved node, and ratios to spot only; then the goal
(judged on reservation first with the move, as the plugin plays it),
whether it holds and, if its cost side does not, the unit price at which it
would, and whether placing the jobs better could close the gap at the
quote. The policies do not finish the same work (reservation only leaves a
backlog), so cost is compared per job-hour done: in total dollars
reservation first can never undercut reservation only, which buys the same
reservation without the burst.

Run: python benchmarks/reservation_bench.py  (a few seconds; no network).
"""

import dataclasses
import datetime
import math
import random
import time
from decimal import Decimal
from typing import Dict, List, Optional, Sequence, Tuple

from sky_mithril import money
from sky_mithril.catalog import price_history
from sky_mithril.commands.prices import DEFAULT_DAYS, DEFAULT_LIKELIHOOD
from sky_mithril.emulator import default_market
from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import (DEFAULT_CAPACITY, PROJECT_FID, Bid,
                                         BidStatus, Instance, InstanceStatus,
                                         Market, Reservation)
from sky_mithril.emulator.market.records import hours_between
from sky_mithril.emulator.server import load_catalog
from sky_mithril.recovery.policy import DEFAULT_RESERVATION_END_LEAD

INSTANCE_TYPE = 'h100-80gb.sxm.8x'
REGION = 'us-central2-a'
RESERVED_NODES = 2
START = datetime.datetime(2025, 1, 6, 9, 0, tzinfo=datetime.timezone.utc)  # a Monday
WORKDAY_HOURS = (9, 18)  # sweeps are launched on weekdays between these (UTC)
CHECKPOINT_S = 1800
STEP_S = 60
PricePoint = Tuple[datetime.datetime, Decimal]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """How long the run (and the reservation) lasts, and the demand curve:
    the base load round the clock, sweeps on weekdays' working hours."""

    hours: int
    base_gap_h: float  # mean hours between training runs
    base_work_h: Tuple[float, float]  # each run's work, uniform in the range
    sweep_gap_h: float  # mean hours between sweeps in working hours
    sweep_jobs: Tuple[int, int]  # jobs per sweep, uniform in the range
    sweep_work_h: Tuple[float, float]  # each sweep job's work
    seed: int = 22

    @property
    def end(self) -> datetime.datetime:
        return START + datetime.timedelta(hours=self.hours)


WEEK = Scenario(hours=168, base_gap_h=4.0, base_work_h=(4.0, 8.0),
                sweep_gap_h=3.0, sweep_jobs=(2, 6), sweep_work_h=(1.0, 3.0))


@dataclasses.dataclass(frozen=True)
class Policy:
    """Where jobs run: `reserves` buys the reservation and gives its free
    nodes first; `bursts` bids on spot for the jobs without one;
    `moves_back` moves a job running on spot onto a reserved node once one
    is free, as the plugin's `back_to_reservation` does."""

    name: str
    reserves: bool
    bursts: bool
    moves_back: bool


POLICIES = (Policy('spot only', reserves=False, bursts=True, moves_back=False),
            Policy('reservation only', reserves=True, bursts=False,
                   moves_back=False),
            Policy('reservation first', reserves=True, bursts=True,
                   moves_back=True),
            Policy('reservation first, no move back', reserves=True,
                   bursts=True, moves_back=False))
SPOT_ONLY, RESERVATION_ONLY, RESERVATION_FIRST, NO_MOVE_BACK = POLICIES


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A job as submitted: when, and its work in seconds (whole minutes)."""

    name: str
    submitted: datetime.datetime
    work_s: int


@dataclasses.dataclass
class Job:
    """A submitted job under one policy: its node (a reserved instance or a
    spot bid), its work kept and redone, and its time on a running node."""

    spec: JobSpec
    done_s: int = 0
    redone_s: int = 0
    ran_s: int = 0
    nodes_lost: int = 0
    running: bool = False  # its node runs for the step that starts now
    bid: Optional[Bid] = None
    reserved: Optional[Instance] = None
    moved: Optional[datetime.datetime] = None  # left spot for a reserved node
    ended: Optional[datetime.datetime] = None

    @property
    def finished(self) -> bool:
        return self.done_s >= self.spec.work_s

    def wait_s(self, week_end: datetime.datetime) -> float:
        """Seconds not running, from submission to its end (or the week's)."""
        until = self.ended or week_end
        return (until - self.spec.submitted).total_seconds() - self.ran_s


def demand(scenario: Scenario) -> List[JobSpec]:
    """The jobs of the scenario, in submission order (seeded; the base load
    and the sweeps each from their own random stream)."""
    base_rng = random.Random(f'{scenario.seed}:base')
    sweep_rng = random.Random(f'{scenario.seed}:sweeps')

    def minutes(hours: float) -> int:
        """`hours` as whole minutes, at least one, in seconds."""
        return max(1, round(hours * 60)) * 60

    def arrivals(rng: random.Random, since: datetime.datetime,
                 until: datetime.datetime,
                 gap_h: float) -> List[datetime.datetime]:
        times, at = [], since
        while True:
            at += datetime.timedelta(
                seconds=minutes(rng.expovariate(1 / gap_h)))
            if at >= until:
                return times
            times.append(at)

    jobs = [JobSpec(f'train-{n}', at,
                    minutes(base_rng.uniform(*scenario.base_work_h)))
            for n, at in enumerate(arrivals(base_rng, START, scenario.end,
                                            scenario.base_gap_h))]
    midnight = START.replace(hour=0)
    sweeps = 0
    for day in range(math.ceil(scenario.hours / 24) + 1):
        opens = midnight + datetime.timedelta(days=day, hours=WORKDAY_HOURS[0])
        closes = opens.replace(hour=WORKDAY_HOURS[1])
        if opens.weekday() >= 5:
            continue
        for at in arrivals(sweep_rng, max(opens, START),
                           min(closes, scenario.end), scenario.sweep_gap_h):
            jobs += [JobSpec(f'sweep-{sweeps}-{k}', at,
                             minutes(sweep_rng.uniform(*scenario.sweep_work_h)))
                     for k in range(sweep_rng.randint(*scenario.sweep_jobs))]
            sweeps += 1
    return sorted(jobs, key=lambda job: job.submitted)


def run_prices(scenario: Scenario) -> List[PricePoint]:
    """Spot prices for the run: the emulator's default price history drawn
    for a market whose clock stands at the run's end, so it covers the run
    (another seed than the week before); it spans a week at most."""
    assert scenario.hours <= default_market.HISTORY_DAYS * 24
    later = Market(ManualClock(scenario.end), PlaceholderHosts(),
                   load_catalog(), seed=scenario.seed + 1)
    default_market.seed_history(later, scenario.seed + 1)
    return [(t, price) for t, price in later.auctions.get(
        INSTANCE_TYPE, REGION).price_history if t >= START]


def new_market(scenario: Scenario, prices: Sequence[PricePoint]) -> Market:
    """The emulator's default market at START with the week before as price
    history and `prices` to come."""
    market = Market(ManualClock(START), PlaceholderHosts(), load_catalog(),
                    seed=scenario.seed)
    default_market.seed_history(market, scenario.seed)
    market.auctions.script_prices(INSTANCE_TYPE, REGION, prices)
    boot_s = sum(market.boot_durations_s.values())
    # Clearings, notices' ends and boots then all fall on a step (each a
    # whole number of steps after another), so a status seen at a step holds
    # until the next one and the bench's accounting is exact.
    for seconds in (market.clearing_interval_s, market.preemption_notice_s,
                    boot_s):
        assert seconds % STEP_S == 0, f'{seconds} s is not whole steps'
    return market


def suggested_limit(market: Market) -> Decimal:
    """The limit `sky-mithril prices` suggests from the market's history (its
    default days and likelihood)."""
    [(_, samples)] = market.auctions.price_history(
        [INSTANCE_TYPE], REGION,
        start=market.now - datetime.timedelta(days=DEFAULT_DAYS),
        num_samples=price_history.NUM_SAMPLES)
    return price_history.suggest_limit([price for _, price in samples],
                                       DEFAULT_LIKELIHOOD,
                                       price_history.time_weights(samples))


@dataclasses.dataclass
class Outcome:
    """What one policy did over the run."""

    policy: Policy
    jobs: List[Job]
    reservation: Optional[Reservation]
    pause_credit: Decimal
    spot_dollars: Decimal
    highest_price_paid: Optional[Decimal]
    most_on_reserved: int
    most_on_spot: int
    reserved_busy_s: int
    spot_while_reserved_free_s: int

    @property
    def up_front_dollars(self) -> Decimal:
        return (self.reservation.charged if self.reservation is not None else
                Decimal(0))

    @property
    def reserved_dollars(self) -> Decimal:
        """The reservation's cost: its up-front charge less the pause
        credit its idle instances earned."""
        return self.up_front_dollars - self.pause_credit

    @property
    def dollars(self) -> Decimal:
        return self.reserved_dollars + self.spot_dollars

    @property
    def work_done_h(self) -> Decimal:
        return Decimal(sum(job.done_s for job in self.jobs)) / 3600

    @property
    def dollars_per_job_hour(self) -> Decimal:
        return self.dollars / self.work_done_h

    def waits_h(self, week_end: datetime.datetime) -> List[float]:
        return sorted(job.wait_s(week_end) / 3600 for job in self.jobs)


class Simulation:
    """One policy on its own market over the run, a step at a time."""

    def __init__(self, policy: Policy, scenario: Scenario,
                 jobs: Sequence[JobSpec], prices: Sequence[PricePoint],
                 limit: Decimal) -> None:
        self.policy = policy
        self.end = scenario.end
        self.limit = limit
        self.market = new_market(scenario, prices)
        self.type_fid = self.market.auctions.get(INSTANCE_TYPE,
                                                 REGION).instance_type.fid
        self.reservation = (self.market.reservations.create(
            project=PROJECT_FID, instance_type=self.type_fid, region=REGION,
            start_time=START, end_time=self.end,
            instance_quantity=RESERVED_NODES, name='team-week')
                            if policy.reserves else None)
        self.to_come = list(jobs)
        self.jobs: List[Job] = []
        self.bids: List[Bid] = []
        self.most_on_reserved = 0
        self.most_on_spot = 0
        self.reserved_busy_s = 0
        self.spot_while_reserved_free_s = 0

    def run(self) -> Outcome:
        while True:
            now = self.market.now
            self._account_step()
            if now >= self.end:
                break
            while self.to_come and self.to_come[0].submitted <= now:
                self.jobs.append(Job(self.to_come.pop(0)))
            self._schedule()
            self._observe()
            self.market.advance(STEP_S)
        for bid in self.bids:
            self.market.bids.cancel(bid.fid)
        spot_dollars, highest = self._spot_charges()
        credit = (self.market.reservations.pause_credit(self.reservation)
                  if self.reservation is not None else Decimal(0))
        return Outcome(self.policy, self.jobs, self.reservation, credit,
                       spot_dollars, highest, self.most_on_reserved,
                       self.most_on_spot, self.reserved_busy_s,
                       self.spot_while_reserved_free_s)

    def _active(self) -> List[Job]:
        return [job for job in self.jobs if job.ended is None]

    def _account_step(self) -> None:
        """The step just past: work for the jobs that ran, jobs done, and
        work lost with a node (back to the last checkpoint)."""
        for job in self._active():
            if job.running:
                job.done_s += STEP_S
                job.ran_s += STEP_S
            if job.finished:
                self._release(job)
                job.ended = self.market.now
            elif job.bid is not None and job.bid.instances:
                nodes_lost = sum(1 for change in
                                 job.bid.instances[0].status_changes
                                 if change.status == InstanceStatus.PREEMPTED)
                if nodes_lost > job.nodes_lost:
                    kept = job.done_s // CHECKPOINT_S * CHECKPOINT_S
                    job.redone_s += job.done_s - kept
                    job.done_s = kept
                    job.nodes_lost = nodes_lost

    def _release(self, job: Job) -> None:
        """The job leaves its node: its bid cancelled, or its reserved node
        paused and free for the next, as `sky down` of a cluster on a
        reservation does (`provision.reserved_nodes`): paused an hour or
        more, it earns the pause credit."""
        if job.bid is not None:
            self.market.bids.cancel(job.bid.fid)
        if (job.reserved is not None and
                job.reserved.status == InstanceStatus.RUNNING):
            self.market.instances.set_status([job.reserved.fid],
                                             InstanceStatus.PAUSED)
        job.bid = job.reserved = None
        job.running = False

    def _free_reserved(self) -> List[Instance]:
        """The reservation's instances no job holds that a launch can claim
        (`reserved_nodes.free_instances`): running ones first, then paused
        ones (a stopping one once its pause is through)."""
        if self.reservation is None:
            return []
        busy = {job.reserved.fid for job in self._active()
                if job.reserved is not None}
        free = [instance for instance in self.reservation.instances
                if instance.status in (InstanceStatus.RUNNING,
                                       InstanceStatus.PAUSED) and
                instance.fid not in busy]
        return sorted(free,
                      key=lambda i: i.status != InstanceStatus.RUNNING)

    def _schedule(self) -> None:
        """Free reserved nodes to the jobs waiting longest, then (moving
        back) to the jobs running on spot, earliest submitted first, then a
        spot bid for each job without a node."""
        if self.reservation is not None:
            free = self._free_reserved()
            waiting = [job for job in self._active()
                       if job.reserved is None and
                       (job.bid is None or job.bid.status == BidStatus.OPEN)]
            for instance, job in zip(free, waiting):
                self._take(job, instance)
            if self.policy.moves_back and self._may_move():
                on_spot = [job for job in self._active()
                           if self._running_on_spot(job)]
                for instance, job in zip(free[len(waiting):], on_spot):
                    # The preemption hooks save a checkpoint at the move, so
                    # the teardown loses no work: done_s is kept whole.
                    job.moved = self.market.now
                    self._take(job, instance)
        if self.policy.bursts:
            for job in self._active():
                if job.bid is None and job.reserved is None:
                    job.bid = self.market.bids.create(
                        project=PROJECT_FID, region=REGION,
                        instance_type=self.type_fid,
                        limit_price=money.format_dollars(self.limit),
                        instance_quantity=1, name=job.spec.name)
                    self.bids.append(job.bid)

    def _take(self, job: Job, instance: Instance) -> None:
        """`job` goes onto the free reserved `instance`: its bid cancelled
        first (a won bid's capacity is then free for a paused node to take
        back), then a paused node resumed, which takes its boot, plus a
        notice's minutes when other spot bids hold its capacity."""
        self._release(job)
        if instance.status == InstanceStatus.PAUSED:
            self.market.instances.set_status([instance.fid],
                                             InstanceStatus.RUNNING)
        job.reserved = instance

    def _may_move(self) -> bool:
        """Whether a move may start now: the plugin takes no reservation that
        ends within the job's lead time (twice the job's last launch, at
        least 10 minutes: here a launch takes a few minutes, so 10)."""
        assert self.reservation is not None
        return (self.reservation.end_time - self.market.now >
                DEFAULT_RESERVATION_END_LEAD)

    @staticmethod
    def _running_on_spot(job: Job) -> bool:
        """Whether the job runs on a won bid whose node is up and under no
        notice: what the plugin moves (an Allocated bid, its head node
        reachable, its preemption hooks not run yet)."""
        return (job.bid is not None and job.bid.status == BidStatus.ALLOCATED
                and bool(job.bid.instances) and
                job.bid.instances[0].status == InstanceStatus.RUNNING)

    def _observe(self) -> None:
        """Which jobs' nodes run for the step that starts now."""
        on_reserved = on_spot = 0
        for job in self._active():
            if job.reserved is not None:
                job.running = job.reserved.status == InstanceStatus.RUNNING
                on_reserved += job.running
            elif job.bid is not None and job.bid.instances:
                job.running = job.bid.instances[0].status in (
                    InstanceStatus.RUNNING, InstanceStatus.PREEMPTING)
                on_spot += job.running
        self.most_on_reserved = max(self.most_on_reserved, on_reserved)
        self.most_on_spot = max(self.most_on_spot, on_spot)
        self.reserved_busy_s += on_reserved * STEP_S
        self.spot_while_reserved_free_s += (
            min(on_spot, len(self._free_reserved())) * STEP_S)

    def _spot_charges(self) -> Tuple[Decimal, Optional[Decimal]]:
        """Dollars the bids were charged, per the market's record, and the
        highest price any was charged."""
        dollars, highest = Decimal(0), None
        for bid in self.bids:
            for _, charges in self.market.history.charges(PROJECT_FID,
                                                          bid_fid=bid.fid):
                for charge in charges:
                    dollars += charge.price * hours_between(
                        charge.start, charge.end or self.end)
                    highest = max(highest or charge.price, charge.price)
        return dollars, highest


@dataclasses.dataclass
class Comparison:
    """The policies on one scenario, and what they shared."""

    scenario: Scenario
    jobs: List[JobSpec]
    prices: List[PricePoint]
    limit: Decimal
    outcomes: Dict[Policy, Outcome]


def compare(scenario: Scenario) -> Comparison:
    """Runs every policy on the scenario's jobs and prices."""
    prices = run_prices(scenario)
    jobs = demand(scenario)
    limit = suggested_limit(new_market(scenario, prices))
    return Comparison(scenario, jobs, prices, limit, {
        policy: Simulation(policy, scenario, jobs, prices, limit).run()
        for policy in POLICIES})


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile of sorted `values`."""
    return values[math.ceil(0.95 * len(values)) - 1]


def report(comparison: Comparison) -> List[str]:
    """The printed lines: the scenario, the table, the goal."""
    scenario, limit = comparison.scenario, comparison.limit
    outcomes = comparison.outcomes
    end = scenario.end
    reservation = outcomes[RESERVATION_FIRST].reservation
    assert reservation is not None
    unit_price = reservation.terms.unit_price
    week_prices = [price for _, price in comparison.prices] or [Decimal(0)]
    above = sum(1 for price in week_prices if price > limit) / len(week_prices)
    mean_price = sum(week_prices) / len(week_prices)
    work_h = sum(job.work_s for job in comparison.jobs) / 3600
    lines = [
        f'A team\'s jobs for {scenario.hours} h from {START:%a %Y-%m-%d %H:%M} '
        f'UTC on {INSTANCE_TYPE} in {REGION} ({DEFAULT_CAPACITY} nodes of '
        f'capacity): {len(comparison.jobs)} jobs, {work_h:.1f} job-hours of '
        'work; each policy on its own market, with the same jobs and prices.',
        f'Spot price over the run {money.format_dollars(min(week_prices))}-'
        f'{money.format_dollars(max(week_prices))}/h (mean '
        f'{money.format_dollars(mean_price)}), above the limit '
        f'{above:.0%} of the time; limit {money.format_dollars(limit)}/h '
        '(sky-mithril prices\' suggestion from the week before).',
        f'Reservation: {RESERVED_NODES} nodes x {scenario.hours} h at '
        f'{money.format_dollars(unit_price)}/h (the market\'s quote at the '
        f'start), {money.format_dollars(reservation.charged)} charged up '
        'front; pause credit '
        f'{money.format_dollars(reservation.terms.pause_credit)}/h for a '
        'node paused an hour or more.',
    ]

    def waits(outcome: Outcome) -> List[float]:
        return outcome.waits_h(end)

    def incomplete(outcome: Outcome) -> str:
        left = [job for job in outcome.jobs if not job.finished]
        left_h = sum(job.spec.work_s - job.done_s for job in left) / 3600
        return f'{len(left)} ({left_h:.1f} h left)'

    reserved_node_hours = RESERVED_NODES * scenario.hours

    def reserved_use(outcome: Outcome) -> str:
        if outcome.reservation is None:
            return '-'
        busy_h = outcome.reserved_busy_s / 3600
        return f'{busy_h:.1f} ({busy_h / reserved_node_hours:.0%})'

    spot = outcomes[SPOT_ONLY]
    rows = [
        (f'jobs completed (of {len(comparison.jobs)})',
         lambda o: str(sum(job.finished for job in o.jobs))),
        ('jobs incomplete at the end', incomplete),
        ('work done (job-hours)', lambda o: f'{o.work_done_h:.1f}'),
        ('work redone after nodes lost (job-hours)',
         lambda o: f'{sum(job.redone_s for job in o.jobs) / 3600:.1f}'),
        ('nodes lost to preemption',
         lambda o: str(sum(job.nodes_lost for job in o.jobs))),
        ('wait, mean (h)', lambda o: f'{sum(waits(o)) / len(o.jobs):.2f}'),
        ('wait, p95 (h)', lambda o: f'{p95(waits(o)):.2f}'),
        (f'reserved node-hours used (of {reserved_node_hours})', reserved_use),
        ('most jobs running at once on reserved nodes',
         lambda o: str(o.most_on_reserved)),
        ('most jobs running at once on spot nodes',
         lambda o: str(o.most_on_spot)),
        (f'highest spot price paid (limit {money.format_dollars(limit)})',
         lambda o: (money.format_dollars(o.highest_price_paid)
                    if o.highest_price_paid is not None else '-')),
        ('spot job-hours while a reserved node was free',
         lambda o: (f'{o.spot_while_reserved_free_s / 3600:.1f}'
                    if o.policy.reserves and o.policy.bursts else '-')),
        ('jobs moved from spot onto a reserved node',
         lambda o: (str(sum(job.moved is not None for job in o.jobs))
                    if o.policy.reserves and o.policy.bursts else '-')),
        ('reservation, up front ($)',
         lambda o: f'{o.up_front_dollars:.2f}'),
        ('reservation, pause credit earned ($)',
         lambda o: f'{o.pause_credit:.2f}'),
        ('spot, charged ($)', lambda o: f'{o.spot_dollars:.2f}'),
        ('total ($)', lambda o: f'{o.dollars:.2f}'),
        ('$ per job-hour done', lambda o: f'{o.dollars_per_job_hour:.2f}'),
        ('$ per job-hour / spot only\'s',
         lambda o: f'{o.dollars_per_job_hour / spot.dollars_per_job_hour:.2f}'),
        ('mean wait / spot only\'s',
         lambda o: (f'{sum(waits(o)) / sum(waits(spot)):.2f}'
                    if sum(waits(spot)) else '-')),
    ]
    width = max(len(title) for title, _ in rows)
    columns = [(p, max(18, len(p.name))) for p in POLICIES]
    lines.append(f'{"":{width}}  ' +
                 '  '.join(f'{p.name:>{w}}' for p, w in columns))
    lines += [f'{title:{width}}  ' +
              '  '.join(f'{cell(outcomes[p]):>{w}}' for p, w in columns)
              for title, cell in rows]
    return lines + goal(comparison)


def goal(comparison: Comparison) -> List[str]:
    """The goal, whether it holds, and the unit price at which the cost
    side would."""
    outcomes, end = comparison.outcomes, comparison.scenario.end
    first, spot = outcomes[RESERVATION_FIRST], outcomes[SPOT_ONLY]
    cheaper = min((outcomes[SPOT_ONLY], outcomes[RESERVATION_ONLY]),
                  key=lambda o: o.dollars_per_job_hour)
    first_waits, spot_waits = first.waits_h(end), spot.waits_h(end)
    first_mean = sum(first_waits) / len(first_waits)
    spot_mean = sum(spot_waits) / len(spot_waits)
    cost_holds = first.dollars_per_job_hour <= cheaper.dollars_per_job_hour
    wait_holds = (first_mean <= spot_mean and
                  p95(first_waits) <= p95(spot_waits))

    def verdict(holds: bool) -> str:
        return 'holds' if holds else 'does not hold'

    lines = [
        'Goal: reservation first costs no more per job-hour done than the '
        'cheaper of the other two, and its jobs wait no longer than with spot '
        'only (mean and p95).',
        f'  cost: ${first.dollars_per_job_hour:.2f} vs '
        f'${cheaper.dollars_per_job_hour:.2f} per job-hour ({cheaper.policy.name}): '
        f'{verdict(cost_holds)}',
        f'  wait: mean {first_mean:.2f} h vs {spot_mean:.2f} h, p95 '
        f'{p95(first_waits):.2f} h vs {p95(spot_waits):.2f} h: '
        f'{verdict(wait_holds)}',
        f'The goal {verdict(cost_holds and wait_holds)} on this demand curve.',
    ]
    if not cost_holds and first.reservation is not None:
        lines += _why_cost_fails(first, cheaper)
    return lines


def _why_cost_fails(first: Outcome, cheaper: Outcome) -> List[str]:
    """The unit price at which reservation first would cost as little per
    job-hour as `cheaper` (its pause credit scaling with the price), and,
    when the quote is above `cheaper`'s cost, why using the reservation
    better cannot close the gap: its cost per job-hour mixes the
    reservation's (never below the unit price) and its burst's."""
    assert first.reservation is not None
    quoted = first.reservation.terms.unit_price
    node_hours = (RESERVED_NODES *
                  hours_between(first.reservation.start_time,
                                first.reservation.end_time))
    target = cheaper.dollars_per_job_hour
    break_even = ((target * first.work_done_h - first.spot_dollars) /
                  (node_hours - first.pause_credit / quoted)).quantize(
                      money.CENT)
    lines = [
        f'Reservation first would cost as little per job-hour as '
        f'{cheaper.policy.name} at a unit price of '
        f'{money.format_dollars(break_even)}/h or less; the quote was '
        f'{money.format_dollars(quoted)}/h.' if break_even > 0 else
        'Reservation first could not cost as little per job-hour as '
        f'{cheaper.policy.name} at any unit price: its spot burst alone '
        'costs more.'
    ]
    burst_h = first.work_done_h - Decimal(first.reserved_busy_s) / 3600
    burst_rate = first.spot_dollars / burst_h if burst_h else Decimal(0)
    if quoted > target and burst_rate > target:
        lines.append(
            'At the quote, a job-hour on the reservation costs at least its '
            f'unit price ({money.format_dollars(quoted)}; idle hours only '
            f'add, less the pause credit), above {cheaper.policy.name}\'s '
            f'${target:.2f}: only a spot burst cheaper than that could make '
            f'up for it, and this one cost ${burst_rate:.2f} per job-hour.')
    return lines


def main(scenario: Scenario = WEEK) -> None:
    started = time.monotonic()
    print('\n'.join(report(compare(scenario))))
    print(f'({time.monotonic() - started:.0f} s)')


if __name__ == '__main__':
    main()
