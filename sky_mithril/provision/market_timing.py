"""What earlier launches learned about a Mithril endpoint's timing, so a
launch polls when something can have changed instead of at a fixed rate.

Three things, per API endpoint, kept in `~/.sky/mithril/market-timing.json`:
- The server's clock against ours: each placed bid's `created_at` (server
  time) is paired with when we placed it; two pairs give the rate of server
  seconds per local second (1 on Mithril; the emulator may run faster).
- The auction's clearing schedule (period and one clearing instant, server
  time), read from the auction's recent price history. It is trusted to time
  polls only once a bid's allocation fell on a predicted clearing; until
  then waiting polls back off as usual, so a wrong schedule costs nothing.
- Boot durations (local seconds from allocation to every node having an SSH
  destination) per instance type and region, as a bracket: the longest
  elapsed time at which a node was still booting and the shortest at which
  all were reachable. Polls probe inside the bracket until it is narrow, then
  come once at its top; a boot slower than the bracket restarts it. A real
  GPU node takes minutes, the emulator's a second. Only allocations whose
  time is known from the server's clock are used.
A cache that cannot be read or written only costs later launches polls.
"""

import dataclasses
import datetime
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sky_mithril import files

# A boot bracket narrower than this share of its top is settled.
SETTLED_BRACKET = 0.05
# Where in an unsettled bracket the next probe goes.
PROBE_POINT = 0.6
# An allocation this close to a predicted clearing (as a share of the
# period) confirms the schedule.
CONFIRM_TOLERANCE = 0.02
# Local seconds between two clock pairs needed to measure the rate.
MIN_RATE_BASELINE_S = 0.5
# A rate this far (as a share) from the learned one means another server
# answers at this address (e.g. a restarted emulator): start over.
RATE_TOLERANCE = 0.1


def _path() -> Path:
    return files.state_dir() / 'market-timing.json'


def _epoch(when: datetime.datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


@dataclasses.dataclass
class MarketTiming:
    """The learned timing of one API endpoint (see the module docstring)."""

    api_url: str
    rate: Optional[float] = None
    anchor: Optional[List[float]] = None  # [server epoch, local epoch]
    clearings: Dict[str, List[float]] = dataclasses.field(
        default_factory=dict)  # region -> [period, one clearing] (server s)
    confirmed: Dict[str, bool] = dataclasses.field(default_factory=dict)
    # f'{instance type fid}@{region}' -> [still booting at, reachable at]
    boots: Dict[str, List[float]] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, api_url: str) -> 'MarketTiming':
        try:
            entry = json.loads(_path().read_text()).get(api_url) or {}
            return cls(api_url=api_url, **entry)
        except (OSError, ValueError, TypeError):
            return cls(api_url=api_url)

    def save(self) -> None:
        try:
            data: Dict[str, Any] = json.loads(_path().read_text())
        except (OSError, ValueError):
            data = {}
        entry = dataclasses.asdict(self)
        del entry['api_url']
        data[self.api_url] = entry
        try:
            files.write_private(_path(), json.dumps(data))
        except OSError:
            pass

    def observe_clock(self, server_time: datetime.datetime,
                      local_time: float) -> None:
        """Pairs a server timestamp with the local time it was made at."""
        server = _epoch(server_time)
        if self.anchor is not None:
            local_span = local_time - self.anchor[1]
            server_span = server - self.anchor[0]
            if server_span <= 0 or local_span <= 0:
                self._forget()
            elif local_span >= MIN_RATE_BASELINE_S:
                rate = server_span / local_span
                if self.rate is not None and abs(
                        rate - self.rate) > RATE_TOLERANCE * self.rate:
                    self._forget()
                else:
                    self.rate = rate
        self.anchor = [server, local_time]

    def _forget(self) -> None:
        """Drops what was learned from a server that no longer answers here
        (time ran backwards or at another rate: e.g. a restarted emulator)."""
        self.rate = None
        self.clearings.clear()
        self.confirmed.clear()
        self.boots.clear()

    def to_local(self, server_time: datetime.datetime) -> Optional[float]:
        """The local epoch of a server timestamp, once the rate is known."""
        if self.rate is None or self.anchor is None:
            return None
        return self.anchor[1] + (_epoch(server_time) -
                                 self.anchor[0]) / self.rate

    def to_server(self, local_time: float) -> Optional[float]:
        """The server epoch at a local epoch, once the rate is known."""
        if self.rate is None or self.anchor is None:
            return None
        return self.anchor[0] + (local_time - self.anchor[1]) * self.rate

    def learn_clearings(self, region: str,
                        timestamps: Sequence[datetime.datetime]) -> None:
        """The clearing period and phase from recent price-history points:
        the smallest gap between them, and the newest point."""
        points = sorted(_epoch(t) for t in timestamps)[-10:]
        gaps = [b - a for a, b in zip(points, points[1:]) if b > a]
        if gaps:
            self.clearings[region] = [min(gaps), points[-1]]

    def next_clearing(self, region: str, now: float,
                      unconfirmed_within: float) -> Optional[float]:
        """The local epoch just after the auction's first clearing after the
        local epoch `now`, when the clock is known and the schedule
        confirmed, or unconfirmed but due within `unconfirmed_within` local
        seconds (a wrong guess then costs no more than a backoff interval)."""
        schedule = self.clearings.get(region)
        server_now = self.to_server(now)
        if schedule is None or server_now is None or self.rate is None:
            return None
        period, reference = schedule
        steps = math.floor((server_now - reference) / period) + 1
        local = now + (reference + steps * period - server_now) / self.rate
        if not self.confirmed.get(region) and local - now > unconfirmed_within:
            return None
        return local + CONFIRM_TOLERANCE * period / self.rate

    def observe_allocation(self, region: str,
                           allocated: datetime.datetime) -> None:
        """Confirms (or withdraws) the schedule with a real allocation time."""
        schedule = self.clearings.get(region)
        if schedule is None:
            return
        period, reference = schedule
        offset = (_epoch(allocated) - reference) % period
        self.confirmed[region] = min(offset, period - offset) <= (
            CONFIRM_TOLERANCE * period)

    def next_boot_poll(self, instance_type: str, region: str,
                       elapsed: float) -> Optional[float]:
        """Seconds after allocation at which to poll booting nodes next, or
        None when nothing has been learned."""
        bracket = self.boots.get(f'{instance_type}@{region}')
        if bracket is None:
            return None
        low, high = max(bracket[0], elapsed), bracket[1]
        if high - low <= SETTLED_BRACKET * high:
            return high
        return low + PROBE_POINT * (high - low)

    def observe_booting(self, instance_type: str, region: str,
                        elapsed: float) -> None:
        """Nodes were still booting `elapsed` seconds after allocation."""
        bracket = self.boots.get(f'{instance_type}@{region}')
        if bracket is not None:
            bracket[0] = max(bracket[0], elapsed)

    def observe_reachable(self, instance_type: str, region: str,
                          elapsed: float) -> None:
        """All nodes were reachable `elapsed` seconds after allocation."""
        key = f'{instance_type}@{region}'
        low, high = self.boots.get(key, [0.0, elapsed])
        if low >= elapsed:  # Reachable sooner than a node was booting before.
            low = 0.0
        if high < low:  # Slower than learned: start over.
            low, high = 0.0, elapsed
        self.boots[key] = [low, min(high, elapsed)]
