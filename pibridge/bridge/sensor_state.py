"""One sampled sensor as the scheduler keeps it: its plan, driver and processing, the cycle in
progress, its timeline, health, counters and the values it took (`SensorState`), and what it
does with them that needs no scheduling: hand its driver its inputs, turn a reading into a
sample, install a freshly built driver, resume one, report its numbers; and the answers the
scheduler asks of it: its group and exclusive keys, the slot to wait for, when the chip's
spacing lets it start, its driver's edges.

The scheduler (`pibridge.bridge.scheduler`) decides *when*; this decides *what*. Everything here
runs on the scheduler's timer thread, but `SensorState.stats` (the status's reader: a copy) and
the edge callback `listen` registers (the driver's thread).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pibridge.bridge.calls import call_driver
from pibridge.bridge.health import SensorHealth
from pibridge.bridge.model import SensorSpec, TakenSample, Value
from pibridge.bridge.processing import SampleProcessor, sensor_spec
from pibridge.bridge.timeline import SampleTimeline
from pibridge.drivers.base import Driver
from pibridge.profile import MetricConfig

#: the scheduler's logger: these lines are the scheduler's to a reader of the log
log = logging.getLogger("pibridge.bridge.scheduler")


@dataclass(frozen=True)
class SensorPlan:
    """One sensor to sample: its profile name, interval (s), how to build its driver (real or
    simulated hardware; may raise), and the profile's per-metric configuration.

    ``inputs``: values this sensor's driver takes from other sensors, as driver method ->
    (source sensor, source metric key), e.g. ``{"set_ambient_pressure": ("Air", "pressure")}`` for
    a profile's ``pressure_from = "Air"``. Before each attempt of this sensor, on the timer
    thread and while none of its calls is out, the scheduler calls the method with the newest
    value of that metric the source took (the driver's own value, before processing: in the
    driver's unit), when it differs from the one handed last. The method only records it (no
    bus traffic); the driver sends it during its own reading."""

    name: str
    interval_s: float
    build: Callable[[], Driver]
    metric_configs: Mapping[str, MetricConfig] = field(default_factory=dict)
    inputs: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class SensorCounters:
    """Per-sensor counts since start (for ``pibridge status``)."""

    taken: int = 0            #: samples handed to the sink (committed)
    events: int = 0           #: of which edge samples
    failed: int = 0           #: cycles that ended without a sample (after retries)
    retries: int = 0          #: extra attempts made
    skipped: int = 0          #: slots not read: overrun, a hung read still out, min spacing
    abandoned: int = 0        #: attempts given up as hung
    late_discarded: int = 0   #: results that came back after their attempt was abandoned
    driver_exceptions: int = 0  #: non-SensorError exceptions from a driver (bugs)
    build_failures: int = 0   #: failed driver constructions
    empty: int = 0            #: samples whose every metric was left out by processing
    out_of_range: int = 0
    deadband: int = 0
    store_failures: int = 0   #: sink.put raised (sample lost)


@dataclass
class Cycle:
    """One slot's reading in progress (monotonic and wall seconds)."""

    slot_k: int
    attempt: int = 0
    started_mono: float = 0.0
    started_wall: float = 0.0
    clock_was_set: bool = False
    deadline_mono: float = 0.0
    next_slot_mono: float = 0.0
    opened_mono: float = 0.0  #: when its slot began (samples held since then wait for it)


class SensorState:
    def __init__(self, plan: SensorPlan, rebuild_first_s: float) -> None:
        self.plan = plan
        self.name = plan.name
        self.interval = plan.interval_s
        self.driver: Driver | None = None
        self.processor: SampleProcessor | None = None
        self.counters = SensorCounters()
        self.cycle: Cycle | None = None
        self.busy = False              # a worker call is out for this sensor
        self.token = 0                 # bumps on every new attempt/slot: stale timers/results ignored
        self.slot_k: int | None = None  # the slot waited for (None while building)
        self.last_start_mono: float | None = None
        self.timeline = SampleTimeline()
        self.health = SensorHealth(plan.name, rebuild_first_s)
        self.remove_listener: Callable[[], None] | None = None
        self.last_values: dict[str, Value] = {}
        self.raw_values: dict[str, Value] = {}   # the driver's newest values (what inputs hand on)
        self.handed: dict[str, Value] = {}       # input method -> value handed to this driver last
        self.last_read_wall: float | None = None  # wall seconds of the last successful read (shown
        #                                           beside the last value: a deadband holds values back)
        self.removed = False           # taken out by `Scheduler.remove`: its results only close it
        self.successor: SensorState | None = None  # built once this (removed, busy) one lets go
        self.release_by = 0.0          # monotonic: the successor is built by then even if still busy
        self.holds: Hashable | None = None      # the exclusive key its attempt holds now
        self.release_when_idle = False          # its attempt ended; the key goes when its call returns
        self.waits_for: Hashable | None = None  # the exclusive key it waits for (no attempt yet)
        self.resume: dict[str, Value] = {}  # newest raw values of the driver's resumable metrics

    def continue_from(self, old: SensorState) -> None:
        """Take over a replaced sensor's timeline: its timestamps stay strictly increasing and the
        chip's minimum spacing since the last start still holds."""
        self.last_start_mono, self.timeline = old.last_start_mono, old.timeline   # the old one emits no more
        self.counters, self.last_values = old.counters, old.last_values
        self.raw_values = old.raw_values
        self.resume = old.resume
        self.last_read_wall = old.last_read_wall

    def hand_inputs(self, source_named: Callable[[str], SensorState | None]) -> None:
        """Hand the driver the newest value of each of its inputs (`SensorPlan.inputs`) that
        changed since it was handed last; a source not sampled (yet) hands nothing."""
        if not self.plan.inputs or self.driver is None:
            return
        for method, (source_name, key) in self.plan.inputs.items():
            source = source_named(source_name)
            value = source.raw_values.get(key) if source is not None else None
            if value is None or self.handed.get(method) == value:
                continue
            setter = getattr(self.driver, method, None)
            if not callable(setter):
                continue
            ok, exc = call_driver(functools.partial(setter, value))
            if ok:
                self.handed[method] = value
            else:
                self.counters.driver_exceptions += 1
                log.warning("sensor %s: %s(%r) from sensor %s failed: %s", self.name, method, value,
                            source_name, describe(exc))

    def take(self, raw: Mapping[str, Value], started_mono: float, started_wall: float, clock_was_set: bool,
             clock_offset_ms: int | None, boot_id: str, *, event: bool) -> TakenSample | None:
        """The sample a reading (``raw``: the driver's values) begun at ``started_mono`` /
        ``started_wall`` makes: processed and stamped; None when processing left every value out
        and there is no running total to keep (a sample with no values carries one)."""
        assert self.processor is not None
        if not event:
            self.raw_values.update(raw)
        keys = getattr(self.driver, "resumable_metrics", ())
        resume = {key: raw[key] for key in keys if key in raw} or None
        if resume:
            self.resume = resume
        self.last_read_wall = started_wall
        values = self.processor.process(raw, started_mono, always=event)
        counters = self.processor.counters
        self.counters.out_of_range, self.counters.deadband = counters.out_of_range, counters.deadband
        if not values:
            self.counters.empty += 1
            # every value held back (deadband, range): its running total is still kept
            return TakenSample(self.name, {}, None, started_mono, boot_id, resume=resume) if resume else None
        self.last_values.update(values)
        timestamp_ms, mono = self.timeline.stamp(started_mono, started_wall, clock_was_set, clock_offset_ms,
                                                 event=event)
        return TakenSample(self.name, values, timestamp_ms, mono, boot_id, event=event, resume=resume)

    def install(self, driver: Driver, stored_resume: Mapping[str, Value]) -> SensorSpec:
        """Make a freshly built ``driver`` this sensor's: its metrics' spec and processing, then
        `Driver.resume` from the newest running totals (this run's, else ``stored_resume``).
        Raises (nothing installed) when the driver's own declarations fail: a failed build."""
        spec = sensor_spec(self.name, driver.active_metrics(), self.plan.metric_configs)
        processor = SampleProcessor(spec, self.plan.metric_configs)
        _ = driver.timing  # read once here, so a broken property fails the build
        keys = getattr(driver, "resumable_metrics", ())
        known = self.resume or stored_resume
        values = {key: known[key] for key in keys if key in known}
        self.driver, self.processor = driver, processor   # nothing above raised: installed
        self.health.built()
        if values:
            ok, exc = call_driver(lambda: driver.resume(values))
            if not ok:
                self.counters.driver_exceptions += 1
                log.error("sensor %s: cannot resume from %s: %s", self.name, values, describe(exc))
        return spec

    def driver_key(self, name: str) -> Hashable | None:
        """The driver's ``group_key()`` or ``exclusive_key()`` (``name``); None when it has none
        or the call fails."""
        ok, key = call_driver(lambda: getattr(self.driver, name)())
        return key if ok else None

    def slot_after(self, k: int, after: int | None) -> int:
        """The slot to wait for: ``k`` (the grid's first after now) or later, after slot
        ``after`` (the slots passed over since are counted as skipped) and after the last
        timestamp."""
        if after is not None:
            if k > after + 1:
                self.counters.skipped += k - after - 1
            k = max(k, after + 1)
        after_last = self.timeline.first_slot_after_last(self.interval)
        return k if after_last is None else max(k, after_last)

    def spaced_start(self, now: float) -> float | None:
        """When the chip allows the next start (its ``min_interval_s`` since the last one), if
        that is later than ``now``; None: at once."""
        assert self.driver is not None
        spacing_s = self.driver.timing.min_interval_s
        if self.last_start_mono is None or now - self.last_start_mono >= spacing_s:
            return None
        return self.last_start_mono + spacing_s

    def listen(self, edge: Callable[[SensorState, Value, float], None]) -> None:
        """A driver with ``on_change`` (a door contact): ``edge(self, state, epoch_s)`` for each
        change, called from the driver's own thread."""
        on_change = getattr(self.driver, "on_change", None)
        if not callable(on_change):
            return
        try:
            self.remove_listener = on_change(lambda state, epoch_s: edge(self, state, epoch_s))
        except Exception as exc:
            self.counters.driver_exceptions += 1
            log.error("sensor %s: cannot listen for changes: %s", self.name, describe(exc))

    def stop_listening(self) -> None:
        """Stop the driver's edges (a failure to is the driver's: it only stops sending them)."""
        remove, self.remove_listener = self.remove_listener, None
        if remove is not None:
            call_driver(remove)

    def close_driver(self, *, forget: bool = True) -> None:
        """Close the driver (and forget it, unless the sampling stops and its state stays for a
        last status); a close that fails is logged."""
        driver = self.driver
        if forget:
            self.driver = None
        if driver is not None:
            ok, exc = call_driver(driver.close)
            if not ok:
                log.warning("sensor %s: closing its driver failed: %s", self.name, describe(exc))

    def stats(self) -> dict[str, Any]:
        """Counters, state, last error, last values (a copy), for ``pibridge status``."""
        health = self.health
        # "ok" from the first reading on; until then (driver built or not) "building"
        state = "failing" if health.failing else (
            "ok" if self.driver is not None and self.last_read_wall is not None else "building")
        return {**vars(self.counters), "state": state, "last_read_at": self.last_read_wall,
                "failing_since": health.failing_since, "last_error": health.last_error,
                "last_values": dict(self.last_values), "interval_s": self.interval,
                "last_timestamp_ms": self.timeline.last_ts_ms}


def describe(exc: BaseException) -> str:
    """An exception as one line: its class, and its message when it has one."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
