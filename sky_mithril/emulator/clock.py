"""Emulated time for the market: a manual clock for tests, a scaled one for servers.

The market never reads the wall clock itself; it asks a `Clock`. Tests move a
`ManualClock` by hand, so every market rule is checked without sleeping. A
server uses a `ScaledClock`, where one wall second is `speed` emulated seconds,
so a 2-minute clearing interval passes in 2 wall seconds at speed 60; its
`advance` jumps ahead on top of that (the control API's "advance the clock").
"""

import datetime
import threading
import time
from typing import Callable, Optional, Protocol

DEFAULT_START = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


class Clock(Protocol):
    """Emulated UTC time that only moves forward."""

    def now(self) -> datetime.datetime:
        """The current emulated time (timezone-aware, UTC)."""

    def advance(self, seconds: float) -> datetime.datetime:
        """Jumps `seconds` of emulated time ahead; returns the new time."""


def _check_forward(seconds: float) -> None:
    if seconds < 0:
        raise ValueError(f'time only moves forward; got {seconds} seconds')


class ManualClock:
    """Stands still until `advance` moves it; deterministic for tests."""

    def __init__(self, start: datetime.datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError('start must be timezone-aware')
        self._now = start.astimezone(datetime.timezone.utc)

    def now(self) -> datetime.datetime:
        return self._now

    def advance(self, seconds: float) -> datetime.datetime:
        _check_forward(seconds)
        self._now += datetime.timedelta(seconds=seconds)
        return self._now


class ScaledClock:
    """Emulated time = start + wall seconds elapsed x `speed` + manual offset."""

    def __init__(self,
                 speed: float = 60.0,
                 *,
                 start: Optional[datetime.datetime] = None,
                 wall_seconds: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError(f'speed must be positive; got {speed}')
        self.speed = speed
        self._start = (start or datetime.datetime.now(
            datetime.timezone.utc)).astimezone(datetime.timezone.utc)
        self._wall_seconds = wall_seconds
        self._wall_start = wall_seconds()
        self._offset_s = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime.datetime:
        with self._lock:
            elapsed = (self._wall_seconds() - self._wall_start) * self.speed
            return self._start + datetime.timedelta(seconds=elapsed +
                                                    self._offset_s)

    def advance(self, seconds: float) -> datetime.datetime:
        _check_forward(seconds)
        with self._lock:
            self._offset_s += seconds
        return self.now()
