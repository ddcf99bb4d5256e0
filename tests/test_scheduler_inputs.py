"""The scheduler's two additions for the CO₂ sensors: a reading of several command/wait/read steps
(`CollectAgain`), and `SensorPlan.inputs` (``pressure_from``: one sensor's pressure handed to
another sensor's driver). Real threads on real time with short intervals; tests wait on events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from pibridge.bridge.clock import SystemClock
from pibridge.bridge.model import TakenSample
from pibridge.bridge.scheduler import Scheduler, SensorPlan
from pibridge.bridge.service import sensor_plans
from pibridge.drivers.base import CollectAgain, Driver, Metric, RetryPolicy, Sample, Timing
from pibridge.drivers.scd4x import CMD_SET_AMBIENT_PRESSURE, SCD4x
from pibridge.drivers.simulation import Environment, SimulatedWorld
from pibridge.profile import SensorConfig

WAIT_S = 15.0
FAST_S = 0.05


class Synced:
    def synchronized(self) -> bool:
        return True


class Recorder:
    def __init__(self) -> None:
        self.samples: list[TakenSample] = []
        self.cond = threading.Condition()

    def put(self, sample: TakenSample) -> None:
        with self.cond:
            self.samples.append(sample)
            self.cond.notify_all()

    def of(self, sensor: str) -> list[TakenSample]:
        with self.cond:
            return [s for s in self.samples if s.sensor == sensor]

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                assert remaining > 0, "timed out waiting"
                self.cond.wait(min(remaining, 0.05))


@pytest.fixture
def run() -> Iterator[Callable[[list[SensorPlan]], tuple[Scheduler, Recorder]]]:
    started: list[Scheduler] = []

    def start(plans: list[SensorPlan]) -> tuple[Scheduler, Recorder]:
        recorder = Recorder()
        scheduler = Scheduler(plans, recorder, clock=SystemClock(Synced(), floor_s=0.0), rebuild_first_s=0.01)
        scheduler.start()
        started.append(scheduler)
        return scheduler, recorder

    yield start
    for scheduler in started:
        scheduler.stop(5.0)


class Barometer(Driver):
    """A source: its pressure climbs 150 Pa per reading."""

    name = "barometer"
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("pressure", "Pressure", unit="SI.Pressure.PASCAL"),)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.readings = 0

    def collect(self) -> Sample:
        self.readings += 1
        return {"pressure": 100_000.0 + 150.0 * self.readings}


class Stepper(Driver):
    """A reading of three steps (two `CollectAgain`), which records the pressure handed to it and
    the thread it was handed on."""

    name = "stepper"
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("co2", "CO2", value_type="double", annotation="ppm"),)  # type: ignore[arg-type]
    read_time_s = 0.01
    retry = RetryPolicy(attempts=0, spacing_s=0.01)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.steps = 0
        self.pressures: list[float] = []
        self.handed_on: set[str] = set()
        self.in_call = False
        self.overlapped = False

    def set_ambient_pressure(self, pascal: float) -> None:
        self.overlapped |= self.in_call
        self.handed_on.add(threading.current_thread().name)
        self.pressures.append(pascal)

    def start(self) -> float:
        self.steps = 0
        return 0.001

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        self.in_call = True
        try:
            self.steps += 1
            if self.steps < 3:
                return CollectAgain(0.002)
            return {"co2": 400.0 + len(self.pressures)}
        finally:
            self.in_call = False


def test_a_multi_step_reading_is_one_attempt_and_one_sample(run: Any) -> None:
    stepper = Stepper()
    scheduler, recorder = run([SensorPlan("S", FAST_S, lambda: stepper)])
    recorder.wait(lambda: len(recorder.of("S")) >= 3)
    stats = scheduler.stats()["S"]
    assert stats["failed"] == 0 and stats["retries"] == 0 and stats["driver_exceptions"] == 0


def test_the_source_pressure_is_handed_before_the_consumer_reads_on_the_timer_thread(run: Any) -> None:
    barometer, stepper = Barometer(), Stepper()
    plans = [SensorPlan("Air", FAST_S, lambda: barometer),
             SensorPlan("CO2", FAST_S, lambda: stepper,
                        inputs={"set_ambient_pressure": ("Air", "pressure")})]
    _scheduler, recorder = run(plans)
    recorder.wait(lambda: len(stepper.pressures) >= 3 and len(recorder.of("CO2")) >= 3)
    assert stepper.pressures == sorted(set(stepper.pressures))       # each new value once, in order
    assert all(p >= 100_150.0 and (p - 100_000.0) % 150 == 0 for p in stepper.pressures)
    assert stepper.handed_on == {"pibridge-scheduler"} and not stepper.overlapped


def test_an_input_from_a_sensor_that_never_read_hands_nothing(run: Any) -> None:
    class Broken(Barometer):
        def collect(self) -> Sample:
            raise RuntimeError("no")

    stepper = Stepper()
    plans = [SensorPlan("Air", FAST_S, Broken), SensorPlan("Ghost", FAST_S, Barometer),
             SensorPlan("CO2", FAST_S, lambda: stepper,
                        inputs={"set_ambient_pressure": ("Air", "pressure"),
                                "no_such_method": ("Ghost", "pressure")})]
    _scheduler, recorder = run(plans)
    recorder.wait(lambda: len(recorder.of("CO2")) >= 3 and len(recorder.of("Ghost")) >= 2)
    assert stepper.pressures == []


def test_sensor_plans_turn_pressure_from_into_an_input() -> None:
    configs = [SensorConfig("Air", "bme280", 30.0), SensorConfig("CO2", "scd4x", 30.0, pressure_from="Air")]
    plans = {p.name: p for p in sensor_plans(configs, None)}
    assert plans["Air"].inputs == {}
    assert plans["CO2"].inputs == {"set_ambient_pressure": ("Air", "pressure")}


class FastClock:
    """The fakes' time, running 10 times faster than the scheduler's: an SCD4x period of 5 s
    passes in 0.5 s of the test."""

    FACTOR = 10.0

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def monotonic(self) -> float:
        return self.origin + (time.monotonic() - self.origin) * self.FACTOR

    def sleep(self, seconds: float) -> None:
        """Nothing waits inside a fake."""


def test_simulated_bme280_pressure_reaches_the_scd41_chip(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through `sensor_plans` and the real drivers: the BME280's pressure is written to
    the SCD41 (set_ambient_pressure, during periodic measurement) and CO₂ samples keep coming."""
    monkeypatch.setattr(SCD4x, "timing_for",   # pace it for the fast fake clock
                        classmethod(lambda cls, config: Timing(0.6, 0.0, RetryPolicy(0, 0.05))))
    with SimulatedWorld(Environment(seed=2), clock=FastClock(), door_timer=False) as world:
        configs = [SensorConfig("Air", "bme280", 0.2, {}),   # the set-up's 0.5 s stop fits in 1 s
                   SensorConfig("CO2", "scd4x", 1.0, {}, pressure_from="Air")]
        _scheduler, recorder = run(sensor_plans(configs, world))
        recorder.wait(lambda: len(recorder.of("CO2")) >= 2)
        chip = world.i2c_bus(1).devices[0x62]
        air = [s.values["pressure"] for s in recorder.of("Air")]
        assert CMD_SET_AMBIENT_PRESSURE in chip.commands          # type: ignore[attr-defined]
        assert chip.mode == "periodic"                            # type: ignore[attr-defined]
        assert any(abs(chip.pressure_hpa * 100 - p) <= 150 for p in air)  # type: ignore[attr-defined]
        co2 = [s.values["co2"] for s in recorder.of("CO2")]
        assert all(400 <= v <= 1250 for v in co2)


def test_read_once_follows_the_steps_and_stops_an_endless_reading() -> None:
    from pibridge.drivers.base import read_once
    from pibridge.drivers.errors import SensorError

    waited: list[float] = []
    assert read_once(Stepper(), waited.append) == {"co2": 400.0}
    assert waited == [0.001, 0.002, 0.002]

    class Endless(Stepper):
        def collect(self) -> CollectAgain:  # type: ignore[override]
            return CollectAgain(0.0)

    with pytest.raises(SensorError, match="more than 64 collect steps"):
        read_once(Endless(), waited.append)
