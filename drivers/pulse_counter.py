"""Pulses on a GPIO input: a tipping-bucket rain gauge, a cup anemometer, a water-flow meter.

Counting. gpiozero's own edge detection calls `PulseCounter._edge` for every edge of the chosen
kind (lgpio's alert thread on a Pi, the caller of ``drive_low``/``drive_high`` on a mock pin); no
polling. The callback applies the debounce (an edge closer than ``debounce`` to the last
*accepted* edge is ignored, measured on gpiozero's own edge timestamps, the ``ticks`` lgpio takes
in the kernel) and counts under a lock; `collect` swaps the count out under the same lock, so an
edge is counted in exactly one sample (read-and-reset is atomic).

What one pulse means (hardware.md §18.1): ``per_pulse`` an amount in ``unit`` (0.2794 mm of rain
per tip, 1/450 L of water), and/or ``rate_factor`` the rate in ``rate_unit`` per Hz of pulses
(2.4 km/h per Hz of wind, 1/7.5 L/min per Hz of a YF-S201).

Metrics (`metrics_for`):

========  ==============================================================  =======================
``rate``  ``rate_factor`` × pulses/s, else ``per_pulse`` × pulses per hour   ``rate_unit`` / ``unit``/h
``count`` pulses in the interval                                         integer, "pulses"
``total`` the running amount: stored total + ``per_pulse`` × pulses since   ``unit`` (``per_pulse`` only)
``gust``  the highest ``rate`` over any ``gust_window`` within the interval   ``rate_unit`` (optional)
========  ==============================================================  =======================

Rates are over the **actual** time between two collects (monotonic), not the nominal interval;
the first sample's rate is over the time since the driver began counting. Units the agent knows
(``m/s``, ``m``, ``Hz`` …) become its SI units; anything else is a custom double annotated with it.

The total survives restarts: it is a resumable metric (`Driver.resumable_metrics`); the bridge
keeps its newest value with each sample and hands it back through `resume` before the first
read. It is computed as ``base + per_pulse × pulses`` (one multiplication, no float drift).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pibridge.protocol import NAME_MAX_LEN, ValueType

from .base import Driver, GpioPin, Metric, Option, OptionProblem, RetryPolicy, Sample, Value
from .errors import BusError
from .gpio import hardware_pin_factory, missing_library

EDGES = ("falling", "rising")
PULLS = ("up", "down", "none")
PULL_UP_ARG = {"up": True, "down": False, "none": None}
HARDWIRED_PULL_UP_PINS = (2, 3)
MAX_DEBOUNCE_S = 10.0
MAX_GUST_WINDOW_S = 600.0
#: gust windows are counted in buckets of this fraction of the window (WMO: a 3 s running mean
#: of 0.25 s samples, i.e. 12 buckets per window)
GUST_BUCKETS_PER_WINDOW = 12
SECONDS_PER_HOUR = 3600.0
UNIT_MAX_LEN = NAME_MAX_LEN
#: annotations the agent has an SI unit for
AGENT_UNITS = {
    "m/s": "SI.Velocity.METERS_PER_SECOND", "m": "SI.Length.METER", "Hz": "SI.Frequency.HERTZ",
    "kg": "SI.Mass.KILOGRAM", "g": "SI.Mass.GRAM", "J": "SI.Energy.JOULE", "W": "SI.Power.WATT",
    "s": "SI.Duration.SECOND",
}

RATE, COUNT, TOTAL, GUST = "rate", "count", "total", "gust"


def unit_metric(key: str, name: str, annotation: str) -> Metric:
    """A double metric in ``annotation``'s agent unit if it has one, else custom and annotated."""
    if annotation in AGENT_UNITS:
        return Metric(key, name, unit=AGENT_UNITS[annotation])
    return Metric(key, name, value_type=ValueType.DOUBLE, annotation=annotation)


def rate_annotation(config: Mapping[str, Any]) -> str:
    """The rate's unit: ``rate_unit`` with a ``rate_factor``, else ``unit``/h."""
    return config["rate_unit"] if config["rate_factor"] is not None else f"{config['unit']}/h"


class PulseCounter(Driver):
    """Edges on one GPIO, counted in gpiozero's callback; rate, count, running total (+ gust)."""

    name = "pulse_counter"
    description = "Pulses on a GPIO (rain gauge, anemometer, flow meter): rate, count, running total"
    metrics = (
        Metric(RATE, "Rate", value_type=ValueType.DOUBLE, annotation="per hour"),
        Metric(COUNT, "Pulses", value_type=ValueType.INTEGER, annotation="pulses"),
        Metric(TOTAL, "Total", value_type=ValueType.DOUBLE, annotation=""),
        Metric(GUST, "Gust", value_type=ValueType.DOUBLE, annotation=""),
    )
    options = (
        Option("pin", GpioPin, None, "input pin (BCM)", required=True),
        Option("edge", str, "falling", "the edge that is one pulse: falling (a switch to GND with "
               "pull=up) or rising", choices=EDGES),
        Option("pull", str, "up", "internal pull resistor: up, down or none", choices=PULLS),
        Option("debounce", float, 0.0, "ignore edges closer than this to the last one "
               "counted (reed switches bounce ~1 ms: rain 50ms, wind ≤ 5ms, Hall flow 0)",
               minimum=0.0, maximum=MAX_DEBOUNCE_S, duration=True),
        Option("per_pulse", float, None, "the amount one pulse means, in unit (0.2794 mm of rain; "
               "0.0022222 L of a YF-S201)", minimum=1e-12),
        Option("unit", str, "", "unit of per_pulse and the total (mm, L, m …)"),
        Option("rate_factor", float, None, "the rate per Hz of pulses, in rate_unit (2.4 km/h per Hz "
               "of wind; 0.13333 L/min per Hz of a YF-S201)", minimum=1e-12),
        Option("rate_unit", str, "", "unit of the rate_factor's rate (km/h, m/s, L/min …)"),
        Option("gust_window", float, 0.0, "report the highest rate over windows this long "
               "(3s, as weather services report gusts; 0: no gust metric); needs rate_factor",
               minimum=0.0, maximum=MAX_GUST_WINDOW_S, duration=True),
    )
    read_time_s = 0.0
    retry = RetryPolicy(attempts=0, spacing_s=0.0)
    simulator = "pibridge.drivers.fakes.pulse:simulate"
    example_options: ClassVar[Mapping[str, Any]] = {"pin": 6, "per_pulse": 0.2794, "unit": "mm"}
    resumable_metrics = (TOTAL,)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """What a pulse means must be given, with its unit; a gust needs a rate factor; no
        pull-down against the Pi's fixed pull-ups."""
        problems = []
        if config["per_pulse"] is None and config["rate_factor"] is None:
            problems.append(OptionProblem("", "give per_pulse (+ unit) and/or rate_factor (+ rate_unit): "
                                          "what one pulse means"))
        for amount, unit in (("per_pulse", "unit"), ("rate_factor", "rate_unit")):
            text = config[unit]
            if config[amount] is not None and not text.strip():
                problems.append(OptionProblem(unit, f"option {unit}: required with {amount} (e.g. "
                                              f"{'mm or L' if unit == 'unit' else 'km/h or L/min'})"))
            elif len(text) > UNIT_MAX_LEN:
                problems.append(OptionProblem(unit, f"option {unit}: at most {UNIT_MAX_LEN} characters"))
            elif not text.isprintable():
                problems.append(OptionProblem(unit, f"option {unit}: printable characters only, "
                                              f"not {text!r}"))
        if config["gust_window"] > 0 and config["rate_factor"] is None:
            problems.append(OptionProblem("gust_window", "option gust_window: needs rate_factor "
                                          "(a gust is a rate)"))
        if config["pin"] in HARDWIRED_PULL_UP_PINS and config["pull"] == "down":
            problems.append(OptionProblem("pull", f"option pull: GPIO{config['pin']} has a fixed 1.8 kΩ "
                                          "pull-up on the Pi; pull=down cannot hold it low"))
        return problems

    @classmethod
    def metrics_for(cls, config: Mapping[str, Any]) -> tuple[Metric, ...]:
        """rate and count always; total with per_pulse; gust with a gust_window."""
        out = [unit_metric(RATE, "Rate", rate_annotation(config)), cls.metrics[1]]
        if config["per_pulse"] is not None:
            out.append(unit_metric(TOTAL, "Total", config["unit"]))
        if config["gust_window"] > 0:
            out.append(unit_metric(GUST, "Gust", config["rate_unit"]))
        return tuple(out)

    def __init__(self, pin_factory: Any = None, *, clock: Callable[[], float] = time.monotonic,
                 release: Callable[[], None] | None = None, **options: Any) -> None:
        """``pin_factory``: gpiozero's (a ``MockFactory`` in tests and ``--simulate``; else the
        Pi's own, closed with the driver); ``clock``: monotonic seconds for the rate's elapsed time;
        ``release``: called once when the driver closes (the simulation stops its pulse train)."""
        super().__init__(**options)
        self._release_hook = release
        config = self.config
        self._clock = clock
        self._debounce = float(config["debounce"])
        self._lock = threading.Lock()
        self._count = 0                      # accepted edges since the last collect (under the lock)
        self._last_accepted: Any = None      # ticks of the last accepted edge (callback thread only)
        self._edge_s = 0.0                   # gust: seconds from the first accepted edge to the last
        self._gust_width = GUST_BUCKETS_PER_WINDOW
        self._bucket_s = float(config["gust_window"]) / GUST_BUCKETS_PER_WINDOW
        self._buckets: dict[int, int] = {}   # gust: bucket index → pulses (under the lock)
        self._tail: dict[int, int] = {}      # the last window's buckets of the previous interval
        self._base = 0.0                     # the total resumed from
        self._pulses = 0                     # pulses since then
        try:
            from gpiozero import GPIOZeroError, InputDevice
        except ImportError as exc:
            raise missing_library("gpiozero", "a pulse counter") from exc
        self._own_factory = pin_factory is None
        self._factory = hardware_pin_factory() if pin_factory is None else pin_factory
        self._ticks_diff = self._factory.ticks_diff
        pull_up = PULL_UP_ARG[config["pull"]]
        try:
            self._device = InputDevice(config["pin"], pull_up=pull_up,
                                       active_state=True if pull_up is None else None,
                                       pin_factory=self._factory)
            self._device.pin.edges = config["edge"]
            self._device.pin.when_changed = self._edge
        except GPIOZeroError as exc:
            if self._own_factory:
                self._factory.close()
            raise BusError(f"pulse_counter: cannot claim GPIO{config['pin']}: {exc}") from exc
        self._since = clock()

    # -- gpiozero's edge callback (its thread) -------------------------------------------------------
    def _edge(self, ticks: Any, state: Any) -> None:
        """One edge of the configured kind at ``ticks`` (gpiozero's timestamp)."""
        since_last = None if self._last_accepted is None else self._ticks_diff(ticks, self._last_accepted)
        if self._debounce > 0 and since_last is not None and since_last < self._debounce:
            return
        self._last_accepted = ticks
        if self._bucket_s:
            # seconds since the first edge, summed edge to edge with gpiozero's ticks_diff: raw
            # ticks are the factory's own units (pigpio: µs that wrap after 2^32, 71.6 min)
            self._edge_s = 0.0 if since_last is None else self._edge_s + since_last
            bucket = math.floor(self._edge_s / self._bucket_s)
            with self._lock:
                self._count += 1
                self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        else:
            with self._lock:
                self._count += 1

    # -- the bridge's side ---------------------------------------------------------------------------
    def resume(self, values: Mapping[str, Value]) -> None:
        """Continue the running total from the stored one (pulses counted so far stay in it)."""
        total = values.get(TOTAL)
        if isinstance(total, int | float) and not isinstance(total, bool) and math.isfinite(total):
            self._base = float(total) - self._pulses * (self.config["per_pulse"] or 0.0)

    def collect(self) -> Sample:
        """The pulses since the last collect (swapped out under the lock) as rate, count, total."""
        now = self._clock()
        with self._lock:
            count, self._count = self._count, 0
            buckets, self._buckets = self._buckets, {}
        elapsed = now - self._since
        self._since = now
        self._pulses += count
        config = self.config
        hertz = count / elapsed if elapsed > 0 else 0.0
        sample: Sample = {}
        if config["rate_factor"] is not None:
            sample[RATE] = hertz * config["rate_factor"]
        else:
            sample[RATE] = hertz * config["per_pulse"] * SECONDS_PER_HOUR
        sample[COUNT] = count
        if config["per_pulse"] is not None:
            sample[TOTAL] = self._base + self._pulses * config["per_pulse"]
        if self._bucket_s:
            sample[GUST] = self._gust(buckets)
        return sample

    def _gust(self, buckets: dict[int, int]) -> float:
        """The highest rate over any gust window ending in this interval (windows may reach back
        into the previous interval's last buckets)."""
        merged = dict(self._tail)
        for index, pulses in buckets.items():
            merged[index] = merged.get(index, 0) + pulses
        ends = {i: merged[i] for i in buckets}
        best = 0
        for end in ends:
            best = max(best, sum(merged.get(i, 0) for i in range(end - self._gust_width + 1, end + 1)))
        if merged:
            newest = max(merged)
            self._tail = {i: n for i, n in merged.items() if i > newest - self._gust_width}
        window_s = self._bucket_s * self._gust_width
        return best / window_s * self.config["rate_factor"]

    def _release(self) -> None:
        try:
            with contextlib.suppress(Exception):  # a pin already gone: nothing left to detach
                self._device.pin.when_changed = None
            self._device.close()
            if self._own_factory:
                self._factory.close()
        finally:
            hook, self._release_hook = self._release_hook, None
            if hook is not None:
                hook()
