"""Emulated time: the manual clock of tests and the scaled clock of servers."""

import datetime

import pytest

from sky_mithril.emulator.clock import DEFAULT_START, ManualClock, ScaledClock


@pytest.fixture(name='clock')
def fixture_clock() -> ManualClock:
    return ManualClock()


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
