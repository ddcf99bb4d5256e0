"""One sensor's sample timestamps: grid samples strictly increasing, and never two samples of
the sensor in one millisecond (an edge sample in the millisecond of another moves 1 ms on).

A sample is stamped with the wall clock once the clock is known to be set (milliseconds since
the epoch); before that with the monotonic clock only (``timestamp_ms`` None: the queue stamps
it when the clock is set, `pibridge.bridge.clock.resolve_timestamp_ms`). Both kinds are kept
apart in `recent`: monotonic milliseconds are stored negated, so they never equal a wall one.
"""

from __future__ import annotations

import math
from collections import deque

from pibridge.bridge.clock import MS_PER_S, resolve_timestamp_ms

#: How many of a sensor's latest timestamps an edge sample is kept apart from.
RECENT_STAMPS = 16


class SampleTimeline:
    """``last_ts_ms``: wall ms of the newest sample (clock set); ``last_mono_ms``: monotonic ms
    of the newest sample stamped before the clock was set."""

    def __init__(self) -> None:
        self.last_ts_ms: int | None = None
        self.last_mono_ms: int | None = None
        self.recent: deque[int] = deque(maxlen=RECENT_STAMPS)

    def stamp(self, mono: float, wall: float, clock_was_set: bool, clock_offset_ms: int | None, *,
              event: bool) -> tuple[int | None, float]:
        """The timestamp of a sample begun at ``mono`` / ``wall`` (seconds): ``(timestamp_ms,
        mono)``; ``timestamp_ms`` None while the clock is not set (``mono`` then moved on as the
        millisecond rule needs). ``clock_offset_ms``: wall − monotonic once the clock is set (a
        read begun before that and ended after it gets its wall time from it)."""
        timestamp_ms: int | None
        if clock_was_set:
            timestamp_ms = round(wall * MS_PER_S)
        elif clock_offset_ms is not None:
            timestamp_ms = resolve_timestamp_ms(mono, clock_offset_ms)
        else:
            timestamp_ms = None
        if timestamp_ms is not None:
            if not event and self.last_ts_ms is not None and timestamp_ms <= self.last_ts_ms:
                timestamp_ms = self.last_ts_ms + 1  # grid samples: strictly increasing
            while timestamp_ms in self.recent:
                timestamp_ms += 1  # an edge in the millisecond of another sample: 1 ms on
            self.recent.append(timestamp_ms)
            self.last_ts_ms = max(self.last_ts_ms or timestamp_ms, timestamp_ms)
            return timestamp_ms, mono
        mono_ms = round(mono * MS_PER_S)
        if not event and self.last_mono_ms is not None and mono_ms <= self.last_mono_ms:
            mono_ms = self.last_mono_ms + 1
        while -mono_ms in self.recent:  # monotonic ms kept negative: never equal to wall ms
            mono_ms += 1
        if mono_ms != round(mono * MS_PER_S):
            mono = mono_ms / MS_PER_S
        self.recent.append(-mono_ms)
        self.last_mono_ms = max(self.last_mono_ms or mono_ms, mono_ms)
        return None, mono

    def clock_set(self, offset_ms: int) -> None:
        """The clock is set (wall − monotonic = ``offset_ms``): the last monotonic-only sample,
        in wall terms, is the newest timestamp the next one must follow."""
        if self.last_mono_ms is not None:
            resolved = self.last_mono_ms + offset_ms
            self.last_ts_ms = max(self.last_ts_ms or resolved, resolved)

    def first_slot_after_last(self, interval_s: float) -> int | None:
        """The first grid slot (of ``interval_s``) after the newest timestamp; None before any."""
        if self.last_ts_ms is None:
            return None
        return math.floor(self.last_ts_ms / MS_PER_S / interval_s) + 1
