"""The types the bridge's parts hand each other: what a sensor looks like at the agent
(`SensorSpec`, `MetricSpec`) and one taken sample (`TakenSample`)."""

from __future__ import annotations

from dataclasses import dataclass

Value = float | int | bool | str


@dataclass(frozen=True)
class MetricSpec:
    """One metric as the agent should have it: the driver's metric key, the agent metric's name,
    and exactly one of ``unit`` (an agent valueUnit) or ``value_type`` (+ ``annotation``).
    ``identity`` (key + unit/type) decides whether an existing agent metric can be reused; a new
    name or annotation is an update of the same metric."""

    key: str
    name: str
    unit: str | None = None
    value_type: str | None = None
    annotation: str = ""

    @property
    def identity(self) -> tuple[str, str]:
        """(key, "unit:…" or "type:…"): what a stored mapping to a metricId is keyed by."""
        return self.key, (f"unit:{self.unit}" if self.unit is not None else f"type:{self.value_type}")


@dataclass(frozen=True)
class SensorSpec:
    """One sensor as the agent should have it: the profile's sensor name (the agent sensor's
    name) and its metrics, in the driver's order."""

    name: str
    metrics: tuple[MetricSpec, ...]

    def metric(self, key: str) -> MetricSpec:
        for spec in self.metrics:
            if spec.key == key:
                return spec
        raise KeyError(key)


@dataclass(frozen=True)
class TakenSample:
    """All metrics of one sample of one sensor, after processing, as the scheduler took it.

    ``timestamp_ms``: wall-clock ms since the epoch at the moment the measurement started, or
    None while the system clock is not known to be set; then ``monotonic_s`` (time.monotonic at
    the start) and ``boot_id`` (/proc/sys/kernel/random/boot_id) let the queue stamp it once the
    clock is set. ``event``: taken on an edge (a door contact), not on the grid. ``resume``: the
    driver's raw values of its `resumable_metrics` (a pulse counter's running total, before any
    processing), which the queue keeps as the newest per metric for the next start. A sample
    whose every value processing held back (deadband, valid_range) is still handed over when it
    has ``resume`` values, with empty ``values``: the queue keeps its resume values and stores
    no row."""

    sensor: str
    values: dict[str, Value]
    timestamp_ms: int | None
    monotonic_s: float
    boot_id: str
    event: bool = False
    resume: dict[str, Value] | None = None
