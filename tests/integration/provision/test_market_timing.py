"""What launches learn about a Mithril endpoint's timing, and that a launch
planned with the live catalog's fid skips the instance-type look-ups."""

import datetime

from tests.helpers.provisioning import bids_named, launch, provision_config

from sky_mithril.catalog import live_prices
from sky_mithril.provision.market_timing import MarketTiming

T0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def emulator_timing() -> MarketTiming:
    """Learned from two bids of a 60x server placed 2 local seconds apart,
    whose auction clears every 120 server seconds on the minute."""
    timing = MarketTiming('http://server')
    timing.observe_clock(at(0), 1000.0)
    timing.observe_clock(at(120), 1002.0)
    timing.learn_clearings('r', [at(-240), at(-120), at(0)])
    return timing


def test_the_server_clock_rate_comes_from_two_placements():
    timing = emulator_timing()
    assert timing.rate == 60.0
    assert timing.to_local(at(180)) == 1003.0


def test_an_unconfirmed_schedule_is_used_only_within_a_backoff():
    timing = emulator_timing()
    # At local 1002 (server 120 s) the next clearing (server 240 s) is 2
    # local seconds away.
    assert timing.next_clearing('r', 1002.0, unconfirmed_within=3.0) is not None
    assert timing.next_clearing('r', 1002.0, unconfirmed_within=1.0) is None


def test_an_allocation_on_a_clearing_confirms_the_schedule():
    timing = emulator_timing()
    timing.observe_allocation('r', at(240.5))
    after_121 = 1002.0 + 1 / 60  # server 121 s
    clearing = timing.next_clearing('r', after_121, unconfirmed_within=0.0)
    assert clearing is not None and 1004.0 <= clearing <= 1004.1
    timing.observe_allocation('r', at(300))  # Off schedule: stop trusting it.
    assert timing.next_clearing('r', after_121, unconfirmed_within=0.0) is None


def test_a_restarted_server_at_the_same_address_is_forgotten():
    timing = emulator_timing()
    timing.observe_reachable('it', 'r', 1.0)
    timing.observe_clock(at(5), 1010.0)  # Its clock went backwards.
    assert timing.rate is None and not timing.clearings and not timing.boots


def test_boot_polls_narrow_to_the_boot_time_and_restart_when_slower():
    timing = MarketTiming('http://server')
    assert timing.next_boot_poll('it', 'r', 0.0) is None
    timing.observe_reachable('it', 'r', 1.0)
    timing.observe_booting('it', 'r', 0.5)
    first = timing.next_boot_poll('it', 'r', 0.0)
    assert first is not None and 0.5 < first < 1.0
    for _ in range(20):  # Nodes really become reachable at 0.8 s.
        probe = timing.next_boot_poll('it', 'r', 0.0)
        assert probe is not None
        if probe >= 0.8:
            timing.observe_reachable('it', 'r', probe)
        else:
            timing.observe_booting('it', 'r', probe)
    settled = timing.next_boot_poll('it', 'r', 0.0)
    assert settled is not None and 0.8 <= settled <= 0.8 * 1.06
    timing.observe_booting('it', 'r', 2.0)
    timing.observe_reachable('it', 'r', 3.0)  # A slower boot: start over.
    assert timing.next_boot_poll('it', 'r', 0.0) == 0.0 + 0.6 * 3.0


def test_timing_survives_between_processes():
    timing = emulator_timing()
    timing.observe_reachable('it', 'r', 1.0)
    timing.save()
    again = MarketTiming.load('http://server')
    assert again.rate == 60.0 and again.boots == {'it@r': [0.0, 1.0]}


def test_a_launch_planned_with_the_live_fid_skips_the_look_ups(fast_emulator):
    live_prices.refresh()
    fid = live_prices.snapshot().fid('a100-80gb.sxm.1x', 'us-central3-a')
    assert fid
    config = provision_config()
    config.provider_config['instance_type_fid'] = fid
    fast_emulator.control('DELETE', 'stats')
    launch('planned', config)
    routes = fast_emulator.control('GET', 'stats')['by_route']
    assert 'GET /v2/instance-types' not in routes
    assert 'GET /v2/spot/availability' not in routes
    assert bids_named(fast_emulator, 'planned')[0]['status'] == 'Allocated'


def test_a_stale_planned_fid_is_looked_up_again(fast_emulator):
    config = provision_config()
    config.provider_config['instance_type_fid'] = 'it_gone'
    launch('stale', config)
    [bid] = bids_named(fast_emulator, 'stale')
    assert bid['status'] == 'Allocated' and bid['instance_type'] != 'it_gone'
