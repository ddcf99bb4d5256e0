"""Virtual time for fakes and tests: nothing really sleeps, yet conversions still take time."""

from __future__ import annotations

import time

#: Virtual clocks start away from 0: libraries (adafruit_dht's ``_last_called``) read 0 as "never".
DEFAULT_START_S = 1000.0


class VirtualClock:
    """Monotonic seconds that only move when something sleeps on them.

    ``clock()`` and ``clock.monotonic()`` read it; ``clock.sleep(s)`` (alias ``advance``) moves it
    forward. Pass ``clock`` where a driver or fake wants a ``time.monotonic``-like callable and
    ``clock.sleep`` where it wants ``time.sleep``.
    """

    def __init__(self, start: float = DEFAULT_START_S) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    advance = sleep


class WallClock:
    """Real monotonic time for fakes in a simulated run; waits *inside* a fake (a w1 conversion
    during a read, a DHT capture) cost nothing, so a simulated read never blocks its caller."""

    def __call__(self) -> float:
        return time.monotonic()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Not waited for in simulation."""
