"""A serial sensor in the real scheduler: a port missing at start-up is a failed build, rebuilt
with backoff; a port that vanishes while sampling fails the samples (reported once, typed) and the
sensor carries on by itself once the adapter is back, with its configuration written again."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from pibridge.bridge.clock import SystemClock
from pibridge.bridge.model import TakenSample
from pibridge.bridge.scheduler import Scheduler, SchedulerHooks, SensorPlan
from pibridge.drivers import mhz19 as chip
from pibridge.drivers.fakes.mhz19 import FakeMHZ19

WAIT_S = 30.0
INTERVAL_S = chip.MIN_INTERVAL_S
TIMEOUT_S = 0.3


class Synced:
    def synchronized(self) -> bool:
        return True


class Recorder:
    """The queue's ``put``, and the hooks' reports; tests wait on them."""

    def __init__(self) -> None:
        self.samples: list[TakenSample] = []
        self.errors: list[str] = []
        self.cond = threading.Condition()

    def put(self, sample: TakenSample) -> None:
        with self.cond:
            self.samples.append(sample)
            self.cond.notify_all()

    def error(self, name: str, text: str) -> None:
        with self.cond:
            self.errors.append(text)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, WAIT_S), "timed out waiting"

    def values(self) -> list[float]:
        return [float(s.values["co2"]) for s in self.samples]


def test_a_vanished_port_fails_samples_and_the_sensor_resumes_on_the_replugged_one(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB0"
    fakes: list[FakeMHZ19] = []
    builds = {"n": 0}

    def build() -> chip.MHZ19:
        builds["n"] += 1
        return chip.MHZ19(timeout_s=TIMEOUT_S, port=str(link))

    rec = Recorder()
    scheduler = Scheduler([SensorPlan("CO2", INTERVAL_S, build)], rec,
                          clock=SystemClock(Synced(), boot_id="serial", floor_s=0.0),
                          hooks=SchedulerHooks(sensor_error=rec.error), rebuild_first_s=0.01)
    scheduler.start()
    try:
        # no port at start-up: a failed build, rebuilt with backoff until the adapter appears
        rec.wait(lambda: len(rec.errors) >= 1)
        assert rec.errors[0].startswith("cannot set up the sensor: SerialPortGoneError: MH-Z19 on ")
        fakes.append(FakeMHZ19(ppm=700))
        os.symlink(fakes[0].device, link)
        rec.wait(lambda: 700.0 in rec.values())
        built = builds["n"]
        assert built >= 2

        fakes[0].unplug()                                   # pulled while sampling
        rec.wait(lambda: any("SerialPortGoneError" in e and "port closed" in e for e in rec.errors[1:]))
        fakes.append(FakeMHZ19(ppm=900))                    # plugged in again
        os.unlink(link)
        os.symlink(fakes[1].device, link)
        rec.wait(lambda: 900.0 in rec.values())
        assert builds["n"] == built                          # the same driver reopened its port
        assert fakes[1].commands[:2] == [chip.CMD_RANGE, chip.CMD_ABC]  # and configured it again
        assert fakes[1].commands.count(chip.CMD_RANGE) == 1
        assert scheduler.stats()["CO2"]["failed"] >= 1
    finally:
        scheduler.stop(5.0)
        for fake in fakes:
            fake.close()
