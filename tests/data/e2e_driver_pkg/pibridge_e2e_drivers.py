"""Test-only pibridge drivers, installed as a third-party entry-point package by
``tests/test_bridge_e2e.py`` to misbehave inside a real ``pibridge run``:

- ``e2e_failing``: every read fails (a chip that stopped answering), for ever;
- ``e2e_hanging``: every read blocks ``hang_s`` seconds (a wedged bus);
- ``e2e_counter``: an ``integer`` metric counting its readings, except reading number ``bad_at``,
  which yields the text ``"2.5"`` — a non-whole value the agent rejects with 11
  (ParameterIsNotAnInteger). (The bridge rounds numbers of an integer metric, so only a value
  that is not a number gets through to the agent unchanged.)

Each is built under ``--simulate`` by `simulate` (no hardware involved).
"""

from __future__ import annotations

import threading
from typing import Any

from pibridge.drivers import BusError, Driver, Metric, Option, RetryPolicy, Sample, SimulatedWorld, ValueType

SIMULATOR = "pibridge_e2e_drivers:simulate"


class AlwaysFailing(Driver):
    """Every read raises `BusError`, retried once per slot as its policy says."""

    name = "e2e_failing"
    description = "Test driver: every read fails"
    metrics = (Metric("value", "Value", unit="SI.Temperature.CELSIUS"),)
    read_time_s = 0.001
    min_interval_s = 0.0
    retry = RetryPolicy(attempts=1, spacing_s=0.01)
    simulator = SIMULATOR

    def collect(self) -> Sample:
        raise BusError("e2e_failing: the chip does not answer (test driver)")


class Hanging(Driver):
    """Every read blocks ``hang_s`` seconds, then returns 1.0 (too late to count)."""

    name = "e2e_hanging"
    description = "Test driver: every read hangs"
    metrics = (Metric("value", "Value", unit="SI.Temperature.CELSIUS"),)
    options = (Option("hang_s", float, 30.0, "seconds each read blocks"),)
    read_time_s = 0.01
    min_interval_s = 0.0
    retry = RetryPolicy(attempts=0, spacing_s=0.0)
    simulator = SIMULATOR

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._wedged = threading.Event()  # never set: the bus stays wedged

    def collect(self) -> Sample:
        self._wedged.wait(float(self.config["hang_s"]))
        return {"value": 1.0}


class Counter(Driver):
    """Pulses: 1, 2, 3, … one per reading; reading ``bad_at`` yields ``"2.5"`` instead."""

    name = "e2e_counter"
    description = "Test driver: an integer count with one non-whole value"
    metrics = (Metric("count", "Pulse count", value_type=ValueType.INTEGER, annotation="pulses"),)
    options = (Option("bad_at", int, 0, "the reading that yields a non-whole value (0: none)"),)
    read_time_s = 0.001
    min_interval_s = 0.0
    retry = RetryPolicy(attempts=0, spacing_s=0.0)
    simulator = SIMULATOR

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._readings = 0

    def collect(self) -> Sample:
        self._readings += 1
        if self._readings == self.config["bad_at"]:
            return {"count": "2.5"}
        return {"count": self._readings}


def simulate(world: SimulatedWorld, cls: type[Driver], options: dict[str, Any]) -> Driver:
    """No hardware to fake: the driver as it is."""
    del world
    return cls(**options)
