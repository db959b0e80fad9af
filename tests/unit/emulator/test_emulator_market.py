"""The emulator's market rules, one test each, driven by a ManualClock (no sleeping)."""

import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

import pytest

from sky_mithril.emulator.clock import DEFAULT_START, ManualClock, ScaledClock
from sky_mithril.emulator.hosts import HostAddress
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import (Bid, BidEventType, BidStatus,
                                         InstanceStatus, InvalidRequest,
                                         InvalidState, Market, NotFound,
                                         PROJECT_FID)

TYPE = 'gpu.sxm.1x'
REGION = 'region-a'
OTHER_REGION = 'region-b'
CLEARING_S = 120.0
NOTICE_S = 300.0
BOOT_S = 60.0
PUBLIC_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorTestKey test'


def _row(name: str, region: str, spot: str, floor: str) -> Dict[str, str]:
    return {
        'InstanceType': name, 'AcceleratorName': 'H100',
        'AcceleratorCount': '1', 'vCPUs': '20', 'MemoryGiB': '200',
        'Price': floor, 'SpotPrice': spot, 'Region': region,
        'GpuInfo': "{'Gpus': [{'Name': 'H100', 'Count': 1, "
                   "'MemoryInfo': {'SizeInMiB': 81920}}]}",
    }


CATALOG = [_row(TYPE, REGION, '1.00', '0.50'),
           _row(TYPE, OTHER_REGION, '2.00', '0.50')]


class RecordingHosts(PlaceholderHosts):
    """Placeholder hosts that remember every hook call, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[str, str]] = []
        self.created_keys: Dict[str, List[str]] = {}
        self.preemption_end_times: Dict[str, datetime.datetime] = {}
        self.fail_create = False

    def create(self, instance_fid: str, ssh_public_keys: List[str]) -> HostAddress:
        self.calls.append(('create', instance_fid))
        if self.fail_create:
            raise RuntimeError('no host for you')
        self.created_keys[instance_fid] = list(ssh_public_keys)
        return super().create(instance_fid, ssh_public_keys)

    def pause(self, instance_fid: str) -> None:
        self.calls.append(('pause', instance_fid))

    def resume(self, instance_fid: str) -> HostAddress:
        self.calls.append(('resume', instance_fid))
        return super().resume(instance_fid)

    def notify_preemption(self, instance_fid: str, *, bid_status: str,
                          end_time: datetime.datetime) -> None:
        assert bid_status == 'Preempting'
        self.calls.append(('notify_preemption', instance_fid))
        self.preemption_end_times[instance_fid] = end_time

    def preempt(self, instance_fid: str) -> None:
        self.calls.append(('preempt', instance_fid))

    def destroy(self, instance_fid: str) -> None:
        self.calls.append(('destroy', instance_fid))
        super().destroy(instance_fid)

    def hooks_for(self, instance_fid: str) -> List[str]:
        return [hook for hook, fid in self.calls if fid == instance_fid]


@pytest.fixture(name='clock')
def fixture_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(name='hosts')
def fixture_hosts() -> RecordingHosts:
    return RecordingHosts()


@pytest.fixture(name='market')
def fixture_market(clock: ManualClock, hosts: RecordingHosts) -> Market:
    return Market(clock, hosts, CATALOG, capacity=8,
                  clearing_interval_s=CLEARING_S,
                  preemption_notice_s=NOTICE_S)


def _type_fid(market: Market) -> str:
    return market.auction(TYPE, REGION).instance_type.fid


def _bid(market: Market, limit: str = '$5.00', quantity: int = 1,
         name: str = 'job', region: str = REGION,
         ssh_keys: Optional[List[str]] = None) -> Bid:
    return market.create_bid(project=PROJECT_FID, region=region,
                             instance_type=_type_fid(market),
                             limit_price=limit, instance_quantity=quantity,
                             name=name, ssh_keys=ssh_keys or [])


def _statuses(bid: Bid) -> List[InstanceStatus]:
    return [instance.status for instance in bid.instances]


def _events(bid: Bid) -> List[BidEventType]:
    return [event.event_type for event in bid.events]


def test_new_bid_waits_for_next_clearing_then_pays_spot_not_limit(
        market: Market) -> None:
    market.advance(CLEARING_S / 2)
    bid = _bid(market, limit='$5.00')
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S / 2 - 1)
    assert bid.status == BidStatus.OPEN
    market.advance(1)
    assert bid.status == BidStatus.ALLOCATED
    assert bid.price_paid == Decimal('1.00')
    assert [i.price_paid for i in bid.instances] == [Decimal('1.00')]
    assert market.free_capacity(bid.auction) == 7


def test_bid_below_spot_price_stays_open(market: Market) -> None:
    bid = _bid(market, limit='$0.99')
    market.advance(3 * CLEARING_S)
    assert bid.status == BidStatus.OPEN
    assert bid.instances == []


def test_bid_waits_while_capacity_is_taken(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 1)
    first = _bid(market, name='first')
    second = _bid(market, name='second')
    market.advance(CLEARING_S)
    assert (first.status, second.status) == (BidStatus.ALLOCATED,
                                             BidStatus.OPEN)
    market.cancel_bid(first.fid)
    market.advance(CLEARING_S)
    assert second.status == BidStatus.ALLOCATED


def test_higher_limit_is_served_first(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 1)
    low = _bid(market, limit='$2.00', name='low')
    high = _bid(market, limit='$3.00', name='high')
    market.advance(CLEARING_S)
    assert (low.status, high.status) == (BidStatus.OPEN, BidStatus.ALLOCATED)


def test_equal_limits_are_served_in_submission_order(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 1)
    earlier = _bid(market, limit='$2.00', name='earlier')
    market.advance(1)
    later = _bid(market, limit='$2.00', name='later')
    market.advance(CLEARING_S)
    assert (earlier.status, later.status) == (BidStatus.ALLOCATED,
                                              BidStatus.OPEN)


def test_all_or_nothing_lets_a_smaller_lower_bid_fit(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 4)
    big = _bid(market, limit='$9.00', quantity=6, name='big')
    small = _bid(market, limit='$2.00', quantity=3, name='small')
    market.advance(CLEARING_S)
    assert big.status == BidStatus.OPEN and big.instances == []
    assert small.status == BidStatus.ALLOCATED
    assert len(small.instances) == 3
    assert market.free_capacity(small.auction) == 1


def test_second_price_is_highest_losing_limit(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 2)
    winner = _bid(market, limit='$9.00', quantity=2, name='winner')
    loser = _bid(market, limit='$4.00', quantity=1, name='loser')
    market.advance(CLEARING_S)
    assert (winner.status, loser.status) == (BidStatus.ALLOCATED,
                                             BidStatus.OPEN)
    assert winner.price_paid == Decimal('4.00')
    assert winner.auction.last_instance_price == Decimal('4.00')


def test_second_price_never_exceeds_the_winners_limit(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 2)
    too_big = _bid(market, limit='$9.00', quantity=3, name='too-big')
    fits = _bid(market, limit='$3.00', quantity=2, name='fits')
    market.advance(CLEARING_S)
    assert too_big.status == BidStatus.OPEN
    assert fits.price_paid == Decimal('3.00')


def test_price_rise_preempts_after_notice_and_reallocates_same_instances(
        market: Market, hosts: RecordingHosts) -> None:
    bid = _bid(market, limit='$3.00', quantity=2)
    market.advance(CLEARING_S + BOOT_S)
    assert _statuses(bid) == [InstanceStatus.RUNNING] * 2
    instance_fids = [i.fid for i in bid.instances]
    addresses = [i.address for i in bid.instances]

    market.set_price(TYPE, REGION, '$4.00')
    market.advance(CLEARING_S - BOOT_S)
    assert bid.status == BidStatus.PREEMPTING
    assert _statuses(bid) == [InstanceStatus.PREEMPTING] * 2
    end_time = market.now + datetime.timedelta(seconds=NOTICE_S)
    assert all(hosts.preemption_end_times[fid] == end_time
               for fid in instance_fids)
    assert market.free_capacity(bid.auction) == 6  # held during the notice

    market.advance(NOTICE_S - 1)
    assert bid.status == BidStatus.PREEMPTING
    market.advance(1)
    assert bid.status == BidStatus.OPEN
    assert _statuses(bid) == [InstanceStatus.PREEMPTED] * 2
    assert market.free_capacity(bid.auction) == 8
    assert all(hosts.hooks_for(fid)[-1] == 'preempt' for fid in instance_fids)

    market.set_price(TYPE, REGION, '$2.00')
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.ALLOCATED
    assert bid.price_paid == Decimal('2.00')
    market.advance(BOOT_S)
    assert [i.fid for i in bid.instances] == instance_fids
    assert _statuses(bid) == [InstanceStatus.RUNNING] * 2
    assert [i.address for i in bid.instances] == addresses
    for fid in instance_fids:
        assert hosts.hooks_for(fid) == ['create', 'notify_preemption',
                                        'preempt', 'resume']


def test_pause_stops_instances_frees_capacity_and_unpause_resumes_them(
        market: Market, hosts: RecordingHosts) -> None:
    bid = _bid(market)
    market.advance(CLEARING_S + BOOT_S)
    fid = bid.instances[0].fid

    market.update_bid(bid.fid, paused=True)
    assert bid.status == BidStatus.PAUSED
    assert _statuses(bid) == [InstanceStatus.STOPPING]
    assert bid.price_paid is None and bid.instances[0].price_paid is None
    assert market.free_capacity(bid.auction) == 8
    market.advance(market.stop_duration_s)
    assert _statuses(bid) == [InstanceStatus.PAUSED]
    market.advance(2 * CLEARING_S)
    assert bid.status == BidStatus.PAUSED  # out of the market

    market.update_bid(bid.fid, paused=False)
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S + BOOT_S)
    assert bid.status == BidStatus.ALLOCATED
    assert [i.fid for i in bid.instances] == [fid]
    assert _statuses(bid) == [InstanceStatus.RUNNING]
    assert hosts.hooks_for(fid) == ['create', 'pause', 'resume']


def test_pausing_an_open_bid_takes_it_out_of_the_market(market: Market) -> None:
    bid = _bid(market)
    market.update_bid(bid.fid, paused=True)
    market.advance(3 * CLEARING_S)
    assert bid.status == BidStatus.PAUSED and bid.instances == []


def test_cancel_terminates_destroys_hosts_and_is_idempotent(
        market: Market, hosts: RecordingHosts) -> None:
    bid = _bid(market, quantity=2)
    market.advance(CLEARING_S + BOOT_S)
    market.cancel_bid(bid.fid)
    assert bid.status == BidStatus.TERMINATED
    assert bid.deactivated_at == market.now
    assert _statuses(bid) == [InstanceStatus.TERMINATED] * 2
    assert market.free_capacity(bid.auction) == 8
    destroyed = [fid for hook, fid in hosts.calls if hook == 'destroy']
    assert destroyed == [i.fid for i in bid.instances]
    market.cancel_bid(bid.fid)
    assert len([c for c in hosts.calls if c[0] == 'destroy']) == 2
    with pytest.raises(NotFound):
        market.cancel_bid('bid_unknown')


def test_cancel_during_boot_stops_the_boot(market: Market,
                                           hosts: RecordingHosts) -> None:
    bid = _bid(market)
    market.advance(CLEARING_S + 10)
    market.cancel_bid(bid.fid)
    market.advance(BOOT_S)
    assert _statuses(bid) == [InstanceStatus.TERMINATED]
    assert hosts.calls == []


def test_limit_price_changes_take_effect_at_next_clearing(
        market: Market) -> None:
    bid = _bid(market, limit='$0.50')
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.OPEN
    market.update_bid(bid.fid, limit_price='$1.50')
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.ALLOCATED
    market.update_bid(bid.fid, limit_price='$0.75')
    assert bid.status == BidStatus.ALLOCATED
    market.advance(CLEARING_S)
    assert bid.status == BidStatus.PREEMPTING
    changes = [e for e in bid.events
               if e.event_type == BidEventType.LIMIT_PRICE_CHANGED]
    assert [e.limit_price for e in changes] == [Decimal('1.50'),
                                                Decimal('0.75')]


def test_instance_boot_sequence_and_host_creation(clock: ManualClock,
                                                  hosts: RecordingHosts) -> None:
    durations = {InstanceStatus.NEW: 1, InstanceStatus.CONFIRMED: 2,
                 InstanceStatus.SCHEDULED: 3, InstanceStatus.INITIALIZING: 4,
                 InstanceStatus.STARTING: 5}
    market = Market(clock, hosts, CATALOG, clearing_interval_s=CLEARING_S,
                    boot_durations_s=durations)
    key, _ = market.create_ssh_key(PROJECT_FID, 'mine', PUBLIC_KEY)
    bid = _bid(market, ssh_keys=[key.fid])
    market.advance(CLEARING_S)
    instance = bid.instances[0]
    seen = []
    for seconds in (1, 2, 3, 4, 5):
        seen.append((instance.status, instance.address is not None))
        market.advance(seconds)
    seen.append((instance.status, instance.address is not None))
    assert seen == [(InstanceStatus.NEW, False),
                    (InstanceStatus.CONFIRMED, False),
                    (InstanceStatus.SCHEDULED, False),
                    (InstanceStatus.INITIALIZING, False),
                    (InstanceStatus.STARTING, True),
                    (InstanceStatus.RUNNING, True)]
    assert hosts.created_keys[instance.fid] == [PUBLIC_KEY]
    assert instance.name == 'job-0'


def test_default_boot_takes_about_a_minute(market: Market) -> None:
    bid = _bid(market)
    market.advance(CLEARING_S + BOOT_S - 1)
    assert _statuses(bid) == [InstanceStatus.STARTING]
    market.advance(1)
    assert _statuses(bid) == [InstanceStatus.RUNNING]


def test_bid_history_records_each_event(market: Market) -> None:
    bid = _bid(market, limit='$3.00')
    market.advance(CLEARING_S)
    market.update_bid(bid.fid, limit_price='$3.50')
    market.force_preempt(bid.fid)
    market.advance(NOTICE_S)
    market.update_bid(bid.fid, paused=True)
    market.update_bid(bid.fid, paused=False)
    market.cancel_bid(bid.fid)
    assert _events(bid) == [
        BidEventType.PLACED, BidEventType.ALLOCATED,
        BidEventType.LIMIT_PRICE_CHANGED, BidEventType.PREEMPTED,
        BidEventType.PAUSED, BidEventType.RESUMED, BidEventType.TERMINATED
    ]
    assert bid.events[0].limit_price == Decimal('3.00')
    times = [e.timestamp for e in bid.events]
    assert times == sorted(times)


def test_bid_names_need_not_be_unique(market: Market) -> None:
    old = _bid(market, name='same')
    market.cancel_bid(old.fid)
    new = _bid(market, name='same')
    market.advance(CLEARING_S)
    assert new.status == BidStatus.ALLOCATED
    assert [b.fid for b in market.bids(name='same')] == [old.fid, new.fid]


def test_capacity_never_goes_negative(market: Market) -> None:
    bid = _bid(market, quantity=4)
    market.advance(CLEARING_S)
    market.set_capacity(TYPE, REGION, 2)
    assert market.free_capacity(bid.auction) == 0
    small = _bid(market, name='small')
    market.advance(CLEARING_S)
    assert small.status == BidStatus.OPEN
    market.cancel_bid(bid.fid)
    assert market.free_capacity(bid.auction) == 2


def test_force_preempt_needs_an_allocated_bid(market: Market) -> None:
    bid = _bid(market)
    with pytest.raises(InvalidState):
        market.force_preempt(bid.fid)
    market.advance(CLEARING_S)
    market.force_preempt(bid.fid)
    assert bid.status == BidStatus.PREEMPTING
    market.advance(NOTICE_S)
    assert bid.status == BidStatus.OPEN
    market.advance(CLEARING_S)  # the price never rose: allocated again
    assert bid.status == BidStatus.ALLOCATED


def test_pause_during_notice_cancels_the_preemption(market: Market,
                                                    hosts: RecordingHosts) -> None:
    bid = _bid(market)
    market.advance(CLEARING_S + BOOT_S)
    market.force_preempt(bid.fid)
    market.update_bid(bid.fid, paused=True)
    market.advance(NOTICE_S)
    assert bid.status == BidStatus.PAUSED
    assert _statuses(bid) == [InstanceStatus.PAUSED]
    assert hosts.hooks_for(bid.instances[0].fid) == ['create',
                                                     'notify_preemption',
                                                     'pause']


def test_filler_instances_are_cheap_scenery(market: Market,
                                            hosts: RecordingHosts) -> None:
    market.add_filler_instances(1000)
    instances = market.instances(PROJECT_FID)
    assert len(instances) == 1000
    assert {i.status for i in instances} == {InstanceStatus.RUNNING}
    assert len({i.address.ssh_destination for i in instances if i.address}) == 1000
    assert hosts.calls == []
    auction = market.auction(TYPE, REGION)
    assert market.free_capacity(auction) == 8
    market.set_price(TYPE, REGION, '$100.00')
    market.advance(CLEARING_S)
    assert {b.status for b in market.bids()} == {BidStatus.ALLOCATED}


def test_price_history_samples_each_clearing(market: Market) -> None:
    market.set_price(TYPE, REGION, '$1.50')
    market.advance(3 * CLEARING_S)
    (auction, points), = market.price_history([TYPE], REGION)
    assert auction.region == REGION
    assert [t for t, _ in points] == [
        DEFAULT_START + datetime.timedelta(seconds=CLEARING_S * k)
        for k in (1, 2, 3)
    ]
    assert {p for _, p in points} == {Decimal('1.50')}
    assert len(market.price_history([TYPE], REGION, num_samples=2)[0][1]) == 2


def test_script_history_preloads_samples(market: Market) -> None:
    past = [(DEFAULT_START - datetime.timedelta(hours=h), f'${h}.25')
            for h in (3, 2, 1)]
    market.script_history(TYPE, REGION, past)
    market.advance(CLEARING_S)
    (_, points), = market.price_history(
        [TYPE], REGION, end=DEFAULT_START - datetime.timedelta(minutes=30))
    assert [price for _, price in points] == [Decimal('3.25'), Decimal('2.25'),
                                              Decimal('1.25')]


def test_scripted_prices_apply_at_clearings(market: Market) -> None:
    bid = _bid(market, limit='$3.00')
    start = market.now
    market.script_prices(TYPE, REGION, [
        (start + datetime.timedelta(seconds=130), '$5.00'),
        (start + datetime.timedelta(seconds=250), '$2.00'),
    ])
    market.advance(CLEARING_S)
    assert market.auction(TYPE, REGION).spot_price == Decimal('1.00')
    assert bid.status == BidStatus.ALLOCATED
    market.advance(CLEARING_S)
    assert market.auction(TYPE, REGION).spot_price == Decimal('5.00')
    assert bid.status == BidStatus.PREEMPTING
    market.advance(CLEARING_S)
    assert market.auction(TYPE, REGION).spot_price == Decimal('2.00')


def test_random_walk_is_seeded_and_floored() -> None:

    def walk(seed: int) -> List[Decimal]:
        market = Market(ManualClock(), PlaceholderHosts(), CATALOG, seed=seed)
        market.start_random_walk(TYPE, REGION, volatility=0.5)
        market.advance(20 * CLEARING_S)
        return [p for _, p in market.price_history([TYPE], REGION)[0][1]]

    assert walk(1) == walk(1)
    assert walk(1) != walk(2)
    assert min(walk(1)) >= Decimal('0.50')
    assert len(set(walk(1))) > 1


def test_create_bid_validation(market: Market) -> None:
    with pytest.raises(InvalidRequest) as info:
        market.create_bid(project='proj_nope', region='nowhere',
                          instance_type=_type_fid(market), limit_price='abc',
                          instance_quantity=0, name=' ',
                          ssh_keys=['sshkey_nope'])
    locs = {e.loc for e in info.value.errors}
    assert locs == {('body', 'project'), ('body', 'region'),
                    ('body', 'instance_quantity'), ('body', 'limit_price'),
                    ('body', 'name'),
                    ('body', 'launch_specification', 'ssh_keys', 0)}
    for bad_price in ('12.50', '$0.00', '$-1', '$1.234', '$'):
        with pytest.raises(InvalidRequest):
            _bid(market, limit=bad_price)
    with pytest.raises(InvalidRequest):
        market.create_bid(project=PROJECT_FID, region=REGION,
                          instance_type='it_unknown', limit_price='$1.00',
                          instance_quantity=1, name='x')
    assert market.bids() == []


def test_update_of_terminated_bid_is_refused(market: Market) -> None:
    bid = _bid(market)
    market.cancel_bid(bid.fid)
    with pytest.raises(InvalidRequest):
        market.update_bid(bid.fid, limit_price='$2.00')
    with pytest.raises(NotFound):
        market.update_bid('bid_unknown', paused=True)


def test_current_prices_and_win_price(market: Market) -> None:
    market.set_capacity(TYPE, REGION, 2)
    _bid(market, limit='$4.00', quantity=1, name='holder')
    market.advance(CLEARING_S)
    _bid(market, limit='$3.00', quantity=1, name='waiting-a')
    _bid(market, limit='$2.00', quantity=1, name='waiting-b')
    quote = market.current_prices(_type_fid(market), REGION)
    assert quote.spot_price == Decimal('1.00')
    assert quote.minimum_price == Decimal('0.50')
    assert quote.lowest_allocated_limit == Decimal('4.00')
    assert (quote.free_capacity, quote.capacity) == (1, 2)
    assert quote.win_price == Decimal('3.01')
    assert market.current_prices(_type_fid(market), REGION, 2).win_price is None
    cheapest = market.current_prices(_type_fid(market))
    assert cheapest.spot_price == Decimal('1.00')  # region-a beats region-b


def test_required_project_keys_reach_every_host(market: Market,
                                                hosts: RecordingHosts) -> None:
    own, _ = market.create_ssh_key(PROJECT_FID, 'own', PUBLIC_KEY)
    required, _ = market.create_ssh_key(PROJECT_FID, 'ops',
                                        'ssh-ed25519 AAAArequired ops',
                                        required=True)
    bid = _bid(market, ssh_keys=[own.fid])
    market.advance(CLEARING_S + BOOT_S)
    assert hosts.created_keys[bid.instances[0].fid] == [PUBLIC_KEY,
                                                        required.public_key]


def test_generated_ssh_key_returns_private_key(market: Market) -> None:
    key, private_key = market.create_ssh_key(PROJECT_FID, 'generated')
    assert key.public_key.startswith('ssh-ed25519 ')
    assert private_key is not None and 'PRIVATE KEY' in private_key
    assert market.ssh_keys(PROJECT_FID) == [key]


def test_failing_host_backend_marks_instance_error(market: Market,
                                                  hosts: RecordingHosts) -> None:
    hosts.fail_create = True
    bid = _bid(market)
    market.advance(CLEARING_S + BOOT_S)
    assert _statuses(bid) == [InstanceStatus.ERROR]
    assert bid.status == BidStatus.ALLOCATED


def test_fids_are_deterministic_per_seed() -> None:

    def fids(seed: int) -> Tuple[str, ...]:
        market = Market(ManualClock(), PlaceholderHosts(), CATALOG, seed=seed)
        bid = _bid(market)
        market.advance(CLEARING_S)
        return (bid.fid, bid.instances[0].fid)

    assert fids(7) == fids(7)
    assert fids(7) != fids(8)


def test_dump_state_is_plain_data(market: Market) -> None:
    bid = _bid(market, quantity=2)
    market.advance(CLEARING_S)
    state: Dict[str, Any] = market.dump_state()
    dumped, = state['bids']
    assert dumped['fid'] == bid.fid
    assert dumped['status'] == 'Allocated'
    assert dumped['price_paid'] == '$1.00'
    assert [i['status'] for i in dumped['instances']] == ['STATUS_NEW'] * 2
    assert {a['region'] for a in state['auctions']} == {REGION, OTHER_REGION}


def test_scaled_clock_runs_speed_times_wall_time() -> None:
    wall = [100.0]
    clock = ScaledClock(60.0, start=DEFAULT_START, wall_seconds=lambda: wall[0])
    wall[0] += 2.0
    assert clock.now() == DEFAULT_START + datetime.timedelta(seconds=120)
    clock.advance(30)
    assert clock.now() == DEFAULT_START + datetime.timedelta(seconds=150)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_manual_clock_only_moves_when_told(clock: ManualClock) -> None:
    assert clock.now() == DEFAULT_START
    assert clock.advance(5) == DEFAULT_START + datetime.timedelta(seconds=5)
    assert clock.now().tzinfo == datetime.timezone.utc


def test_kubernetes_cluster_comes_up_and_bids_join_it(market: Market,
                                                      hosts: RecordingHosts) -> None:
    key, _ = market.create_ssh_key(PROJECT_FID, 'k', PUBLIC_KEY)
    ready: List[str] = []
    market.control_node_ready = lambda cluster: ready.append(cluster.fid)
    cluster = market.create_kubernetes_cluster(
        project=PROJECT_FID, name='pool', region=REGION, instance_type=TYPE,
        ssh_keys=[key.fid])
    assert cluster.status.value == 'Pending' and cluster.kube_host is None
    assert cluster.join_command is None and hosts.calls == []

    market.advance(BOOT_S)
    assert cluster.status.value == 'Available' and ready == [cluster.fid]
    assert cluster.kube_host == cluster.address.ssh_destination
    assert f'{cluster.address.private_ip}:6443' in cluster.join_command
    control_keys = hosts.created_keys[cluster.control_node_fid]
    assert control_keys[0] == PUBLIC_KEY and len(control_keys) == 2
    assert 'OPENSSH PRIVATE KEY' in market.control_node_private_key

    worker = market.create_bid(project=PROJECT_FID, region=REGION,
                               instance_type=_type_fid(market),
                               limit_price='$5.00', instance_quantity=2,
                               name='workers', kubernetes_cluster=cluster.fid)
    loner = _bid(market, name='loner')
    market.advance(CLEARING_S)
    assert worker.launch_specification.kubernetes_cluster == cluster.fid
    assert market.cluster_instances(cluster) == worker.instances
    assert loner.instances[0] not in market.cluster_instances(cluster)
    market.cancel_bid(worker.fid)
    assert market.cluster_instances(cluster) == []

    market.delete_kubernetes_cluster(cluster.fid)
    market.delete_kubernetes_cluster(cluster.fid)
    assert cluster.status.value == 'Terminated' and cluster.deleted_at == market.now
    assert hosts.hooks_for(cluster.control_node_fid) == ['create', 'destroy']
    assert market.kubernetes_clusters(PROJECT_FID) == [cluster]
    with pytest.raises(InvalidRequest, match='kubernetes_cluster'):
        market.create_bid(project=PROJECT_FID, region=REGION,
                          instance_type=_type_fid(market), limit_price='$5.00',
                          instance_quantity=1, name='late',
                          kubernetes_cluster=cluster.fid)


def test_kubernetes_cluster_requests_are_checked(market: Market,
                                                 hosts: RecordingHosts) -> None:
    with pytest.raises(InvalidRequest) as info:
        market.create_kubernetes_cluster(
            project=PROJECT_FID, name=' ', region='nowhere',
            instance_type='no-type', ssh_keys=['sshkey_x'], k8s_version='1.0')
    assert {e.loc for e in info.value.errors} == {
        ('body', 'name'), ('body', 'region'), ('body', 'instance_type'),
        ('body', 'k8s_version'), ('body', 'ssh_keys', 0)}
    with pytest.raises(NotFound):
        market.kubernetes_cluster('k8s_missing')
    with pytest.raises(InvalidRequest, match='k8s_missing'):
        market.create_bid(project=PROJECT_FID, region=REGION,
                          instance_type=_type_fid(market), limit_price='$5.00',
                          instance_quantity=1, name='orphan',
                          kubernetes_cluster='k8s_missing')
    hosts.fail_create = True
    cluster = market.create_kubernetes_cluster(
        project=PROJECT_FID, name='broken', region=REGION, instance_type=TYPE)
    market.advance(BOOT_S)
    assert cluster.status.value == 'Pending' and cluster.address is None
