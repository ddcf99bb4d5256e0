"""Each metric's recent values in memory, for the page's charts (nothing written anywhere).

One ring per (sensor, metric key) of at most `POINTS_PER_METRIC` points, kept in two
``array('d')`` (timestamp s, value; NaN marks a gap): 16 bytes a point, so 720 points — one hour
at a 5 s interval, two at 10 s — cost 11.5 kB per metric (50 sensors × 3 metrics: 1.7 MB once
full). A gap is drawn where slots were missed: when a sample comes more than `GAP_FACTOR`
intervals after the one before, a NaN point is put between them (uPlot draws no line across it).

Fed from the bridge's sample sink (`add`, on the scheduler's outbox thread, after the sample was
committed to the queue); read by the web server's threads. ``version`` counts samples added: the
broadcaster's cheap change counter.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

POINTS_PER_METRIC = 720
GAP_FACTOR = 1.5


@dataclass
class Series:
    """One metric's ring: ``ts``/``values`` in time order, ``added`` points ever appended (the
    broadcaster sends ``added - previously seen`` new ones)."""

    ts: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("d"))
    added: int = 0

    def append(self, ts: float, value: float, bound: int) -> None:
        if len(self.ts) >= bound:
            del self.ts[0]
            del self.values[0]
        self.ts.append(ts)
        self.values.append(value)
        self.added += 1

    def last(self, count: int) -> tuple[list[float], list[float | None]]:
        count = min(count, len(self.ts))
        start = len(self.ts) - count
        return (list(self.ts[start:]), [None if math.isnan(v) else v for v in self.values[start:]])


def numeric(value: Any) -> float | None:
    """What a chart can draw: numbers, and flags as 0/1; text and None are not drawn."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class MetricHistory:
    """See the module docstring. ``intervals``: each sensor's grid interval (s), for gaps."""

    def __init__(self, intervals: Mapping[str, float] | None = None, *,
                 bound: int = POINTS_PER_METRIC) -> None:
        self.bound = bound
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], Series] = {}
        self._intervals: dict[str, float] = dict(intervals or {})
        self.version = 0

    def set_intervals(self, intervals: Mapping[str, float]) -> None:
        """After a reload: new intervals; series of sensors that are gone are dropped."""
        with self._lock:
            if dict(intervals) == self._intervals:
                return
            self._intervals = dict(intervals)
            for key in [k for k in self._series if k[0] not in self._intervals]:
                del self._series[key]
            self.version += 1

    def add(self, sensor: str, ts: float, values: Mapping[str, Any]) -> None:
        """One sample of ``sensor`` at ``ts`` (wall-clock s): each drawable value appended."""
        interval = self._intervals.get(sensor)
        with self._lock:
            for key, raw in values.items():
                value = numeric(raw)
                if value is None:
                    continue
                series = self._series.get((sensor, key))
                if series is None:
                    series = self._series[(sensor, key)] = Series()
                if series.ts:
                    previous = series.ts[-1]
                    if ts < previous:        # an older sample (clock step): not drawn out of order
                        continue
                    missed = interval and ts - previous > GAP_FACTOR * interval
                    if missed and not math.isnan(series.values[-1]):
                        series.append(previous + interval, math.nan, self.bound)
                series.append(ts, value, self.bound)
            self.version += 1

    def window(self, sensor: str, key: str) -> tuple[list[float], list[float | None]] | None:
        """The whole window of one metric (None if it has no point)."""
        with self._lock:
            series = self._series.get((sensor, key))
            return None if series is None else series.last(len(series.ts))

    def since(self, seen: Mapping[tuple[str, str], int]) -> tuple[
            dict[tuple[str, str], tuple[list[float], list[float | None]]], dict[tuple[str, str], int]]:
        """The points each series got after ``seen`` (its ``added`` count then), and the counts
        now (the next call's ``seen``), taken together."""
        with self._lock:
            new = {}
            for key, series in self._series.items():
                count = series.added - seen.get(key, 0)
                if count > 0:
                    new[key] = series.last(count)
            return new, {key: series.added for key, series in self._series.items()}
