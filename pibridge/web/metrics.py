"""``/metrics``: the bridge's health in the Prometheus text exposition format (version 0.0.4),
from one status snapshot. Names start with ``pibridge_``; per-sensor series carry
``sensor="<name>"``, last values also ``metric="<key>"`` and ``unit`` (the agent's unit as shown,
e.g. "°C", "hPa": the value is in that unit). Label values are escaped as the format says
(backslash, double quote, line feed).

    # HELP pibridge_samples_taken_total Samples committed to the queue since the bridge started.
    # TYPE pibridge_samples_taken_total counter
    pibridge_samples_taken_total{sensor="Air"} 42
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pibridge.bridge.status import FAILING, BridgeStatus

from .display import shown

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: sensor counter field → (metric name, help)
SENSOR_COUNTERS = (
    ("taken", "pibridge_samples_taken_total", "Samples committed to the queue since the bridge started."),
    ("pushed", "pibridge_samples_pushed_total", "Samples the agent acknowledged since the bridge started."),
    ("failed", "pibridge_reads_failed_total", "Reads that failed after the driver's retries."),
    ("skipped", "pibridge_slots_skipped_total", "Grid slots missed (overrun, hung or abandoned read)."),
    ("dead_lettered", "pibridge_samples_dead_lettered_total", "Samples the agent refused for good."),
)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{escape_label(value)}"' for name, value in labels.items()) + "}"


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return repr(value) if isinstance(value, float) else str(value)


class _Family:
    def __init__(self, lines: list[str], name: str, kind: str, help_text: str) -> None:
        self.lines, self.name = lines, name
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def sample(self, value: float | int | bool, **labels: str) -> None:
        self.lines.append(f"{self.name}{_labels(**labels) if labels else ''} {_number(value)}")


def render(status: BridgeStatus, now: float,
           units: Callable[[str, str], tuple[str | None, str | None]] | None = None) -> str:
    """The exposition text. ``now``: wall-clock seconds (ages are measured against it);
    ``units(sensor, key)``: the metric's agent (unit, annotation), for the shown unit."""
    lines: list[str] = []
    for field_name, name, help_text in SENSOR_COUNTERS:
        family = _Family(lines, name, "counter", help_text)
        for sensor in status.sensors:
            family.sample(getattr(sensor, field_name), sensor=sensor.name)
    failing = _Family(lines, "pibridge_sensor_failing", "gauge", "1 while the sensor's reads fail.")
    for sensor in status.sensors:
        failing.sample(sensor.state == FAILING, sensor=sensor.name)
    age = _Family(lines, "pibridge_sensor_last_sample_age_seconds", "gauge",
                  "Seconds since the sensor's last sample.")
    for sensor in status.sensors:
        if sensor.last_sample_at is not None:
            age.sample(round(now - sensor.last_sample_at, 3), sensor=sensor.name)
    last = _Family(lines, "pibridge_metric_value", "gauge",
                   "The last value of each metric, in the unit of its unit label (flags 0/1).")
    for sensor in status.sensors:
        for reading in sensor.values:
            unit, annotation = units(sensor.name, reading.key) if units else (None, reading.unit)
            number, symbol = shown(reading.value, unit, annotation)
            if isinstance(number, int | float) and (isinstance(number, bool) or math.isfinite(number)):
                last.sample(number, sensor=sensor.name, metric=reading.key, unit=symbol)
    queue = status.queue
    _Family(lines, "pibridge_queue_depth", "gauge",
            "Samples waiting in the on-disk queue.").sample(queue.depth)
    oldest = _Family(lines, "pibridge_queue_oldest_age_seconds", "gauge",
                     "Age of the oldest stamped sample waiting (0 when none waits).")
    oldest.sample(round(now - queue.oldest_sample_at, 3) if queue.oldest_sample_at is not None else 0)
    _Family(lines, "pibridge_queue_unstamped", "gauge",
            "Samples waiting for the clock to be set.").sample(queue.unstamped)
    _Family(lines, "pibridge_queue_dropped_total", "counter",
            "Samples dropped (queue full or too old) since the bridge started.").sample(queue.dropped)
    _Family(lines, "pibridge_dead_letters_total", "counter",
            "Samples dead-lettered since the bridge started.").sample(queue.dead_letters)
    agent = status.agent
    _Family(lines, "pibridge_agent_connected", "gauge",
            "1 while connected to the agent.").sample(agent.connected)
    ack = _Family(lines, "pibridge_agent_last_ack_age_seconds", "gauge",
                  "Seconds since the agent last acknowledged a push (absent before the first).")
    if agent.last_ack_at is not None:
        ack.sample(round(now - agent.last_ack_at, 3))
    _Family(lines, "pibridge_clock_synchronised", "gauge",
            "1 once the system clock is known to be set.").sample(status.clock.synchronised)
    _Family(lines, "pibridge_uptime_seconds", "gauge", "Seconds since the bridge started.").sample(
        round(now - status.started_at, 3))
    return "\n".join(lines) + "\n"


