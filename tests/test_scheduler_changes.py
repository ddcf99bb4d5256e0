"""Adding, removing and replacing single sensors of a running scheduler (a profile reload):
the other sensors' drivers and grids are never touched, a replaced sensor's timestamps stay
strictly increasing, a removed one's driver is closed and what it took still reaches the sink."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import test_bridge_scheduler as base
from test_bridge_scheduler import CALM_S, WAIT_S, Probe, slot_of

from pibridge.bridge.scheduler import SensorPlan

run = base.run  # the fixture that starts (and stops) schedulers


class Counted:
    """A driver factory that remembers every driver it built and the order of builds/closes."""

    def __init__(self, events: list[str], label: str, **probe: Any) -> None:
        self.events, self.label, self.probe = events, label, probe
        self.built: list[Probe] = []

    def __call__(self) -> Probe:
        label, events = self.label, self.events

        class Tracked(Probe):
            def _release(self) -> None:
                events.append(f"close {label}")
                super()._release()

        driver = Tracked(**self.probe)
        self.built.append(driver)
        self.events.append(f"build {self.label}")
        return driver


def test_add_and_remove_leave_the_other_sensor_alone(run: Any) -> None:
    events: list[str] = []
    steady = Counted(events, "steady")
    scheduler, rec = run([SensorPlan("steady", CALM_S, steady)])
    rec.wait(lambda: len(rec.of("steady")) >= 2)
    extra = Counted(events, "extra")
    scheduler.add(SensorPlan("extra", CALM_S, extra))
    rec.wait(lambda: len(rec.of("extra")) >= 2)
    assert scheduler.sensor_names == ["extra", "steady"]
    scheduler.remove("extra")
    rec.wait(lambda: "close extra" in events)
    taken_extra = len(rec.of("extra"))
    before = len(rec.of("steady"))
    rec.wait(lambda: len(rec.of("steady")) >= before + 3)
    scheduler.stop()
    assert len(rec.of("extra")) == taken_extra          # nothing after the removal
    assert "extra" not in scheduler.stats()
    assert len(steady.built) == 1 and events.count("build steady") == 1   # never rebuilt
    samples = rec.of("steady")
    slots = [slot_of(s, CALM_S) for s in samples]
    assert slots == sorted(set(slots))                  # on its grid, one sample per slot
    assert slots[-1] - slots[0] + 1 <= len(samples) + scheduler.stats()["steady"]["skipped"]


def test_after_taken_runs_after_the_removed_sensors_last_sample_and_before_a_new_drivers_spec(
        run: Any) -> None:
    """What a reload switches (the queue's metric layouts) happens in order with the samples: every
    sample the removed sensor took is stored before, the added sensor's driver_ready comes after."""
    order: list[str] = []
    ready = threading.Event()

    def driver_ready(name: str, spec: Any) -> None:
        order.append(f"ready {name}")
        if name == "new":
            ready.set()

    hooks = base.SchedulerHooks(driver_ready=driver_ready)
    scheduler, rec = run([SensorPlan("old", base.FAST_S, Probe)], hooks=hooks)
    rec.wait(lambda: len(rec.of("old")) >= 3)
    scheduler.remove("old")
    scheduler.add(SensorPlan("new", base.FAST_S, Probe))
    seen: list[int] = []
    ran_on: list[str] = []
    scheduler.after_taken(lambda: (seen.append(len(rec.of("old"))), order.append("switch"),
                                   ran_on.append(threading.current_thread().name)))
    assert ready.wait(WAIT_S)
    rec.wait(lambda: len(rec.of("new")) >= 2)
    scheduler.stop()
    assert seen == [len(rec.of("old"))]                 # no sample of "old" stored after the switch
    assert order.index("switch") < order.index("ready new")
    assert ran_on and ran_on[0] != threading.current_thread().name


def test_a_driver_call_hanging_on_the_timer_thread_makes_the_scheduler_not_alive() -> None:
    """A removed sensor's close() that hangs freezes every sensor: the watchdog must see it."""
    release = threading.Event()

    class StuckOnClose(Probe):
        def _release(self) -> None:
            release.wait(WAIT_S)

    rec = base.Recorder()
    clock = base.SystemClock(base.Flag(True), boot_id=base.BOOT, floor_s=0.0)
    scheduler = base.Scheduler([SensorPlan("stuck", CALM_S, StuckOnClose)], rec, clock=clock,
                               rebuild_first_s=0.01, hung_after_s=0.5)
    scheduler.start()
    try:
        rec.wait(lambda: len(rec.of("stuck")) >= 1)
        assert scheduler.alive
        scheduler.remove("stuck")
        rec.wait(lambda: not scheduler.alive)      # re-checked every 50 ms until the guard
        release.set()
        rec.wait(lambda: scheduler.alive)          # turning again once the call returns
    finally:
        release.set()
        scheduler.stop(5.0)


def test_replace_closes_the_old_driver_before_building_the_new_and_continues_the_timeline(run: Any) -> None:
    events: list[str] = []
    scheduler, rec = run([SensorPlan("s", CALM_S, Counted(events, "old")),
                          SensorPlan("other", CALM_S, Counted(events, "other"))])
    rec.wait(lambda: len(rec.of("s")) >= 2)
    scheduler.replace(SensorPlan("s", CALM_S * 2, Counted(events, "new")))
    rec.wait(lambda: "build new" in events)
    count = len(rec.of("s"))
    rec.wait(lambda: len(rec.of("s")) >= count + 2)
    scheduler.stop()
    assert events.index("close old") < events.index("build new")
    assert events.count("build other") == 1
    stamps = [s.timestamp_ms for s in rec.of("s")]
    assert stamps == sorted(set(stamps))                # strictly increasing across the replacement
    assert scheduler.stats()["s"]["interval_s"] == CALM_S * 2
    assert scheduler.stats()["s"]["taken"] == len(rec.of("s"))   # counters carried over


def test_replacing_a_sensor_in_a_read_waits_for_the_read_before_building_again(run: Any) -> None:
    events: list[str] = []
    release = threading.Event()
    entered = threading.Event()

    def slow(n: int) -> Any:
        if n == 1:
            def hang() -> float:
                entered.set()
                release.wait(WAIT_S)
                return 1.0
            return hang
        return 1.0

    # the first read hangs in collect (its attempt may take 2 × 0.5 + 0.5 s before it is abandoned)
    scheduler, rec = run([SensorPlan("s", 2.0, Counted(events, "old", script=slow, read_time_s=0.5))])
    assert entered.wait(WAIT_S)
    scheduler.replace(SensorPlan("s", 2.0, Counted(events, "new")))
    assert scheduler.barrier(WAIT_S)          # the replacement is applied while the read still hangs
    assert "build new" not in events          # … and waits for it
    release.set()
    rec.wait(lambda: "build new" in events and len(rec.of("s")) >= 1)
    scheduler.stop()
    assert events.index("close old") < events.index("build new")


def test_changes_are_checked_where_they_are_asked_for(run: Any) -> None:
    scheduler, _ = run([SensorPlan("s", CALM_S, Probe)])
    with pytest.raises(ValueError, match="already sampled"):
        scheduler.add(SensorPlan("s", CALM_S, Probe))
    with pytest.raises(KeyError):
        scheduler.remove("nosuch")
    with pytest.raises(KeyError):
        scheduler.replace(SensorPlan("nosuch", CALM_S, Probe))
    with pytest.raises(ValueError, match="interval"):
        scheduler.add(SensorPlan("bad", 0.0, Probe))
