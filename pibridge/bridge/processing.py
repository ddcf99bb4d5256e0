"""From a driver's raw sample to what is pushed: the profile's per-metric processing.

For each metric, in this order (`MetricProcessor.process`):

1. ``enabled = false`` → the metric is never sent (and never registered at the agent);
2. calibration → the true value: ``points`` (piecewise linear through (raw, true) pairs,
   extrapolated from the end segments) or ``raw × scale + offset``;
3. ``valid_range = [low, high]`` (on the calibrated value, inclusive) → outside: left out of this
   sample, counted (and it does not enter the median window);
4. ``clamp = [low, high]`` → outside: the nearer bound (a soil probe wetter than its "in water"
   calibration point is 100 %, not 104 %); after ``valid_range``, so a wider ``valid_range`` can
   still leave out what no probe reads (a broken wire);
5. ``median = N`` → the median of the last N valid values (fewer while the window fills);
6. ``deadband`` → left out while it moved less than this from the last value *sent*, but sent at
   least every ``max_silence_s`` (monotonic seconds).

Only numbers are calibrated, range-checked and median-filtered; booleans and strings pass through,
and with a deadband they are left out while unchanged. A metric typed ``integer`` stays a whole
number (rounded after calibration; a low median). A sample whose metrics are all left out is
not pushed (`SampleProcessor.process` returns an empty dict).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pibridge.bridge.model import MetricSpec, SensorSpec, Value
from pibridge.drivers.base import Metric
from pibridge.profile import Calibration, MetricConfig
from pibridge.protocol import ValueType


def median(values: Iterable[float], low: bool = False) -> float:
    """The median of ``values``: the middle one, or the mean of the middle two (``low``: the
    lower of them), as `statistics.median` / `median_low` compute it (not imported: it brings
    ``decimal`` and ``fractions``, most of a megabyte, into the bridge for three lines)."""
    data = sorted(values)
    middle = len(data) // 2
    if len(data) % 2:
        return data[middle]
    return data[middle - 1] if low else (data[middle - 1] + data[middle]) / 2


def calibrate(raw: float, calibration: Calibration) -> float:
    """The true value of ``raw``: through ``points`` if given, else ``raw × scale + offset``."""
    points = calibration.points
    if not points:
        return raw * calibration.scale + calibration.offset
    if len(points) == 1:  # one reference point: a pure offset
        return raw + (points[0][1] - points[0][0])
    raws = [p[0] for p in points]
    # the segment that holds raw; the end segments extend beyond the first and last points
    i = min(max(bisect.bisect_right(raws, raw), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (raw - x0) * (y1 - y0) / (x1 - x0)


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class ProcessingCounters:
    """Values left out, per reason, for one sensor."""

    out_of_range: int = 0
    deadband: int = 0


class MetricProcessor:
    """One metric's processing state (median window, last sent value)."""

    def __init__(self, config: MetricConfig, spec: MetricSpec) -> None:
        self.config = config
        self.integer = spec.value_type == ValueType.INTEGER
        self._window: deque[float] = deque(maxlen=max(1, config.median))
        self._last_sent: Value | None = None
        self._last_sent_at: float | None = None

    def process(self, value: Value, now_s: float, counters: ProcessingCounters,
                *, always: bool = False) -> Value | None:
        """The value to send, or None when it is left out. ``now_s``: monotonic seconds;
        ``always``: an event sample (a door edge) is a change by definition: no deadband."""
        config = self.config
        if _is_number(value):
            number = float(value)
            if config.calibration is not None:
                number = calibrate(number, config.calibration)
            if config.valid_range is not None:
                low, high = config.valid_range
                if not low <= number <= high:
                    counters.out_of_range += 1
                    return None
            if config.clamp is not None:
                number = min(max(number, config.clamp[0]), config.clamp[1])
            self._window.append(number)
            if len(self._window) > 1:
                number = median(self._window, low=self.integer)
            value = round(number) if self.integer else number
        if not always and self._suppressed(value, now_s):
            counters.deadband += 1
            return None
        self._last_sent, self._last_sent_at = value, now_s
        return value

    def _suppressed(self, value: Value, now_s: float) -> bool:
        deadband = self.config.deadband
        if deadband is None or self._last_sent is None or self._last_sent_at is None:
            return False
        silence = self.config.max_silence_s
        if silence is not None and now_s - self._last_sent_at >= silence:
            return False
        if _is_number(value) and _is_number(self._last_sent):
            return abs(float(value) - float(self._last_sent)) < deadband
        return value == self._last_sent


class SampleProcessor:
    """All metrics of one sensor: raw sample in, what to push out."""

    def __init__(self, spec: SensorSpec, configs: Mapping[str, MetricConfig]) -> None:
        self.spec = spec
        self.counters = ProcessingCounters()
        self._metrics = {m.key: MetricProcessor(configs.get(m.key) or MetricConfig(m.key), m)
                         for m in spec.metrics}

    def process(self, raw: Mapping[str, Value], now_s: float, *, always: bool = False) -> dict[str, Value]:
        """The processed values of the enabled metrics that were not left out (maybe none)."""
        out: dict[str, Value] = {}
        for key, value in raw.items():
            metric = self._metrics.get(key)
            if metric is None:  # disabled in the profile
                continue
            processed = metric.process(value, now_s, self.counters, always=always)
            if processed is not None:
                out[key] = processed
        return out


def metric_spec(metric: Metric, config: MetricConfig | None) -> MetricSpec:
    """The agent's view of one driver metric after the profile's overrides: a name, and a unit
    or a type + annotation (a profile unit/type replaces the driver's; an annotation alone
    re-labels the driver's type)."""
    name = (config.name if config and config.name else None) or metric.name
    if config is not None and config.unit is not None:
        return MetricSpec(metric.key, name, unit=config.unit)
    if config is not None and config.value_type is not None:
        return MetricSpec(metric.key, name, value_type=config.value_type, annotation=config.annotation or "")
    if metric.unit is not None:
        return MetricSpec(metric.key, name, unit=metric.unit)
    annotation = metric.annotation
    if config is not None and config.annotation is not None:
        annotation = config.annotation
    return MetricSpec(metric.key, name, value_type=str(metric.value_type), annotation=annotation)


def sensor_spec(name: str, metrics: Iterable[Metric], configs: Mapping[str, MetricConfig]) -> SensorSpec:
    """The agent's view of one sensor: its enabled metrics, in the driver's order."""
    return SensorSpec(name, tuple(metric_spec(m, configs.get(m.key)) for m in metrics
                                  if configs.get(m.key) is None or configs[m.key].enabled))
