"""What delivery sends for queued samples: their agent ids (`PushAddresses`) and the pushes that
carry them (`Push`, one sample or several of one sensor).

A sample is addressed by its sensor's sensorId and each metric's metricId as the last
reconciliation verified them (`ResolvedInventory`), for the layout it was taken with: a sample
queued before a unit changed still goes to the metric of its old unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pibridge.bridge.inventory import ResolvedInventory
from pibridge.bridge.model import SensorSpec
from pibridge.bridge.queue import QueuedSample

#: Bounds of one push carrying several samples of one sensor (a backlog): samples, values, and
#: payload bytes (the emulator refuses more than 1,000 values or 256 KB; the real agent states
#: no bound, so these stay well below).
MAX_SAMPLES_PER_PUSH = 32
MAX_VALUES_PER_PUSH = 200
MAX_PUSH_BYTES = 64 * 1024

#: (sensorId, {metricId: value}) of a sample.
Address = tuple[str, dict[str, Any]]


class Push:
    """Samples of one sensor sent in one push. One sample goes as before: its values under the
    push's top-level timestamp. Several (a backlog: the agent serializes pushes per sensor, so
    one message per sample would cost a round trip each) carry a timestamp per value
    (agent-api.md §4: a per-element timestamp overrides the top-level one)::

        {"metrics": [{"metricId": m1, "value": v, "timestamp": t1},   ← sample 1, every metric
                     {"metricId": m2, "value": w, "timestamp": t1},
                     {"metricId": m1, "value": x, "timestamp": t2},   ← sample 2
                     ...]}

    The agent takes a push whole or refuses it whole, so a sample is acknowledged exactly when
    its push is."""

    __slots__ = ("count", "number", "samples", "sensor_id", "values")

    def __init__(self, sensor_id: str, number: int) -> None:
        self.sensor_id = sensor_id
        self.number = number  # which push this is (the delivery counts them): whose answer it gets
        self.samples: list[QueuedSample] = []
        self.values: list[dict[str, Any]] = []
        self.count = 0  # values in all samples

    def fits(self, values: dict[str, Any]) -> bool:
        return (len(self.samples) < MAX_SAMPLES_PER_PUSH
                and self.count + len(values) <= MAX_VALUES_PER_PUSH)

    def add(self, sample: QueuedSample, values: dict[str, Any]) -> None:
        self.samples.append(sample)
        self.values.append(values)
        self.count += len(values)

    def body(self) -> tuple[dict[str, Any] | list[tuple[str, Any, int]], int | None]:
        """(values, top-level timestamp) for `pibridge.agent.encode_push`."""
        if len(self.samples) == 1:
            return self.values[0], self.samples[0].timestamp_ms
        return [(metric_id, value, sample.timestamp_ms)
                for sample, values in zip(self.samples, self.values, strict=True)
                for metric_id, value in values.items()], None


class PushAddresses:
    """Queued samples → their agent ids. The metric ids of a (sensor, layout) are looked up once
    per verified inventory and set of specs (a cache a new reconciliation or reload replaces)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, str]] = {}
        self._cache_for: tuple[ResolvedInventory, Mapping[str, SensorSpec]] | None = None

    def address(self, sample: QueuedSample, resolved: ResolvedInventory,
                specs: Mapping[str, SensorSpec]) -> Address | str:
        """(sensorId, {metricId: value}), or why there is none."""
        sensor_id = resolved.sensors.get(sample.sensor)
        if sensor_id is None:
            return f"sensor {sample.sensor!r} has no id at the agent (gone from the profile and the agent)"
        metric_ids = self._metric_ids(sample, resolved, specs)
        values: dict[str, Any] = {}
        for key, value in sample.values.items():
            metric_id = metric_ids.get(key)
            if metric_id is None:
                return f"metric {key!r} of sensor {sample.sensor!r} has no id at the agent"
            values[metric_id] = value
        if not values:
            return f"sample of sensor {sample.sensor!r} has no values"
        return sensor_id, values

    def _metric_ids(self, sample: QueuedSample, resolved: ResolvedInventory,
                    specs: Mapping[str, SensorSpec]) -> dict[str, str]:
        """{metric key: metricId} for the layout ``sample`` was taken with (its own identities,
        else the current spec's)."""
        cached_for = self._cache_for
        if cached_for is None or cached_for[0] is not resolved or cached_for[1] is not specs:
            self._cache.clear()
            self._cache_for = (resolved, specs)
        cache_key = (sample.sensor, sample.metrics)
        found = self._cache.get(cache_key)
        if found is None:
            identities = dict(sample.metrics)
            spec = specs.get(sample.sensor)
            if spec is not None:
                for metric in spec.metrics:
                    identities.setdefault(metric.key, metric.identity[1])
            found = {}
            for key, identity in identities.items():
                metric_id = resolved.metrics.get((sample.sensor, key, identity))
                if metric_id is not None:
                    found[key] = metric_id
            self._cache[cache_key] = found
        return found
