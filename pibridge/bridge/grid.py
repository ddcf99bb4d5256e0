"""The sampling grid: slot k of a sensor sampled every I seconds is due at wall-clock time k·I
(multiples of the interval since the epoch, so restarts and several bridges line up), and is
waited for on the monotonic clock, which never jumps.

The anchor is the offset wall − monotonic at which the grid is laid on the monotonic clock:

    due (monotonic) = k · I − offset

A change of the offset of up to `CLOCK_STEP_S` is slewing (NTP adjusting the rate): the anchor
follows it. A larger change is a step (NTP setting the time, a user's ``date``): the grid is
re-anchored and the scheduler re-plans each sensor's next slot.
"""

from __future__ import annotations

import math

#: Offset changes (wall − monotonic) above this are a clock step: the grid is re-anchored.
CLOCK_STEP_S = 0.1


class SamplingGrid:
    """The anchor (``offset``, seconds) and the arithmetic of slots; counts steps (``steps``)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.steps = 0

    def anchor(self, wall: float, monotonic: float) -> None:
        """Lay the grid with the clocks read now."""
        self.offset = wall - monotonic

    def stepped(self, wall: float, monotonic: float) -> float | None:
        """Follow the clocks read now: the step in seconds (the grid re-anchored, counted), or
        None for slewing (followed silently)."""
        offset = wall - monotonic
        step = offset - self.offset
        self.offset = offset
        if abs(step) <= CLOCK_STEP_S:
            return None
        self.steps += 1
        return step

    def due(self, k: int, interval: float) -> float:
        """Slot ``k`` of ``interval``, as a monotonic time."""
        return k * interval - self.offset

    def next_slot(self, monotonic: float, interval: float) -> int:
        """The first slot of ``interval`` strictly after the monotonic time ``monotonic``."""
        return math.floor((monotonic + self.offset) / interval) + 1
