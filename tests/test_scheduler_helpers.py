"""The scheduler's helpers on their own: its timer heap, a sensor's timeline and health, and the
slot hand-over (the scheduler's tests drive them through whole cycles)."""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import pytest

from pibridge.bridge.handover import HAND_OVER_MAX_S, HAND_OVER_SLACK_S, SlotHandOver
from pibridge.bridge.health import ERROR_REPEAT_S, REBUILD_MAX_S, SensorHealth
from pibridge.bridge.model import TakenSample
from pibridge.bridge.sensor_state import SensorPlan, SensorState
from pibridge.bridge.timeline import RECENT_STAMPS, SampleTimeline
from pibridge.bridge.timers import TimerHeap
from pibridge.drivers.base import Driver, Metric, Sample


class Owner:
    def __init__(self) -> None:
        self.token = 0


# -- timers ------------------------------------------------------------------------------------
def test_timers_come_due_in_order_and_a_bumped_token_makes_an_owner_s_timers_stale() -> None:
    timers: TimerHeap[Owner] = TimerHeap()
    a, b = Owner(), Owner()
    timers.at(3.0, "collect", a)
    timers.at(1.0, "deadline", a)
    timers.at(2.0, "slot", b)
    timers.at(2.0, "retry", b)        # same due time: the order they were set
    timers.at(5.0, "clock", None)     # no owner: never stale
    assert timers.next_due() == 1.0
    a.token += 1                      # a's attempt ended: its deadline and collect are void
    assert timers.next_due() == 2.0 and sorted(t.action for t in timers) == ["clock", "retry", "slot"]
    assert timers.pop_due(1.9) is None
    assert timers.pop().action == "slot"
    due = [timers.pop_due(10.0) for _ in range(3)]
    assert [t.action if t else None for t in due] == ["retry", "clock", None]
    assert timers.next_due() == math.inf
    with pytest.raises(IndexError):
        timers.pop()


def test_a_timer_set_after_the_bump_is_live() -> None:
    timers: TimerHeap[Owner] = TimerHeap()
    owner = Owner()
    timers.at(1.0, "slot", owner)
    owner.token += 1
    timers.at(2.0, "slot", owner)
    assert [t.due for t in timers] == [2.0]
    timer = timers.pop_due(2.0)
    assert timer is not None and timer.token == owner.token and not timer.stale


# -- timeline ----------------------------------------------------------------------------------
def test_grid_samples_are_strictly_increasing_and_edges_never_share_a_millisecond() -> None:
    line = SampleTimeline()
    assert line.stamp(10.0, 1_000.0004, True, None, event=False) == (1_000_000, 10.0)
    assert line.stamp(10.0, 1_000.0, True, None, event=False)[0] == 1_000_001   # not before the last
    assert line.stamp(10.0, 1_000.0, True, None, event=True)[0] == 1_000_002    # an edge: 1 ms on
    assert line.stamp(10.0, 999.0, True, None, event=True)[0] == 999_000        # an edge may be older
    assert line.last_ts_ms == 1_000_002
    assert line.first_slot_after_last(2.0) == 501   # 1,000.002 s: slot 500 (1,000 s) is past


def test_before_the_clock_is_set_the_monotonic_time_moves_on_and_is_resolved_once_set() -> None:
    line = SampleTimeline()
    assert line.stamp(5.0, 0.0, False, None, event=False) == (None, 5.0)
    assert line.stamp(5.0, 0.0, False, None, event=False) == (None, 5.001)
    assert line.stamp(5.0, 0.0, False, None, event=True) == (None, 5.002)
    assert line.first_slot_after_last(1.0) is None
    line.clock_set(1_700_000_000_000)
    assert line.last_ts_ms == 1_700_000_005_002
    # a read begun before the clock was set and ended after: stamped from its monotonic time
    assert line.stamp(6.0, 0.0, False, 1_700_000_000_000, event=False)[0] == 1_700_000_006_000


def test_edges_stay_apart_from_the_last_recent_stamps_only() -> None:
    line = SampleTimeline()
    for i in range(RECENT_STAMPS + 1):
        line.stamp(0.0, 1.0 + i / 1000, True, None, event=True)
    assert line.stamp(0.0, 1.0, True, None, event=True)[0] == 1_000  # 1,000 ms fell out of the window


# -- health ------------------------------------------------------------------------------------
def test_a_failure_is_reported_on_change_and_again_after_the_repeat_time(caplog: Any) -> None:
    health = SensorHealth("Soil")
    with caplog.at_level(logging.INFO, logger="pibridge.bridge.scheduler"):
        assert health.failed("BusError", "BusError: no ACK", 100.0, 1_000.0)
        assert not health.failed("BusError", "BusError: no ACK again", 101.0, 1_001.0)
        assert health.failed("BusError", "BusError: still", 100.0 + ERROR_REPEAT_S, 2_000.0)
        assert health.failed("Hung", "no answer", 700.1, 2_001.0)   # another kind: at once
        assert health.failing == "Hung" and health.failing_since == 1_000.0
        health.recovered()
        health.recovered()
    assert health.failing is None and health.failing_since is None and health.last_error == "no answer"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["sensor Soil: failing: BusError: no ACK", "sensor Soil: failing: no answer",
                     "sensor Soil: recovered"]


def test_rebuilds_back_off_to_the_cap_and_start_over_once_built() -> None:
    health = SensorHealth("Air", rebuild_first_s=2.0)
    delays = [health.next_rebuild_s() for _ in range(10)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0] and delays[-1] == REBUILD_MAX_S
    health.built()
    assert health.next_rebuild_s() == 2.0


# -- the slot hand-over ------------------------------------------------------------------------
class Items:
    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def put(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)


def sample(name: str) -> TakenSample:
    return TakenSample(name, {"t": 1.0}, 1_000, 0.0, "boot")


def edge(name: str) -> TakenSample:
    return TakenSample(name, {"door": "open"}, 1_000, 0.0, "boot", event=True)


def test_held_samples_wait_for_a_read_of_their_slot_then_go_as_one_batch() -> None:
    out = Items()
    handover = SlotHandOver(out)
    assert handover.wake_at == math.inf
    handover.hold("a", sample("a"), 10.0)
    assert handover.wake_at == 10.0 + HAND_OVER_MAX_S
    reads = [(9.9, 10.2), (10.5, 10.6)]   # one of this slot, due to end at 10.2; one of a later slot
    handover.check(10.05, reads)
    assert out.items == [] and handover.wake_at == pytest.approx(10.2 + HAND_OVER_SLACK_S)
    handover.hold("b", sample("b"), 10.1)
    handover.check(10.2 + HAND_OVER_SLACK_S, [(9.9, 10.2)])   # its time is up: late reads hold nothing
    assert out.items == [("samples", [("a", sample("a")), ("b", sample("b"))])]
    assert not handover.holding and handover.wake_at == math.inf


def test_nothing_waits_past_the_longest_hold_and_edges_and_hooks_go_after_what_is_held() -> None:
    out = Items()
    handover = SlotHandOver(out)
    handover.hold("a", sample("a"), 10.0)
    handover.check(10.0 + HAND_OVER_MAX_S, [(9.0, 30.0)])   # a slow read of the slot: held no longer
    assert len(out.items) == 1
    handover.hold("b", sample("b"), 20.0)
    handover.put(("hook", "sensor_error", "c", "text"))
    handover.hold("d", edge("d"), 20.1)
    assert [item[0] for item in out.items] == ["samples", "samples", "hook", "samples"]
    assert out.items[1][1] == [("b", sample("b"))] and out.items[3][1] == [("d", edge("d"))]


def test_a_read_whose_timing_raises_never_keeps_the_slot_s_samples_held() -> None:
    """The scheduler asks each driver's ``timing`` while samples are held: a property that raises
    there hands the samples over at once (logged), so nothing is held and the loop never spins."""
    from pibridge.bridge.scheduler import Scheduler
    from pibridge.bridge.sensor_state import Cycle

    class Sink:
        def put(self, sample: TakenSample) -> None: ...

    class Broken:
        @property
        def timing(self) -> Any:
            raise RuntimeError("timing broke")

    scheduler = Scheduler([SensorPlan("x", 1.0, lambda: Broken())], Sink())  # type: ignore[arg-type,return-value]
    out = Items()
    scheduler._handover = SlotHandOver(out)
    sensor = scheduler._sensors[0]
    sensor.driver, sensor.cycle = Broken(), Cycle(slot_k=1)  # type: ignore[assignment]
    scheduler._handover.hold("a", sample("a"), scheduler.clock.monotonic())
    scheduler._hand_over_if_slot_done()
    assert len(out.items) == 1 and not scheduler._handover.holding


class Thermometer(Driver):
    """A driver reading one constant temperature."""

    name = "thermometer"
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("t", "Temperature", unit="SI.Temperature.CELSIUS"),)

    def collect(self) -> Sample:
        return {"t": 20.0}


def test_a_driver_whose_resumable_metrics_raise_is_not_installed() -> None:
    """`SensorState.install` raises before it installs anything (the scheduler then counts a
    failed build and rebuilds): a driver half-installed would be read after it was closed."""

    class Broken(Thermometer):
        @property
        def resumable_metrics(self) -> tuple[str, ...]:  # type: ignore[override]
            raise RuntimeError("resumable_metrics broke")

    state = SensorState(SensorPlan("x", 1.0, Broken), 2.0)
    with pytest.raises(RuntimeError, match="broke"):
        state.install(Broken(), {})
    assert state.driver is None and state.processor is None
    spec = state.install(Thermometer(), {})
    assert state.driver is not None and [m.key for m in spec.metrics] == ["t"]


def test_a_sensor_waits_for_a_slot_after_the_last_one_and_after_its_last_timestamp() -> None:
    state = SensorState(SensorPlan("x", 10.0, Thermometer), 2.0)
    assert state.slot_after(5, None) == 5
    assert state.slot_after(9, 5) == 9 and state.counters.skipped == 3   # 6, 7, 8 passed over
    assert state.slot_after(5, 5) == 6                                    # never the same slot again
    state.timeline.last_ts_ms = 120_000                                   # 120 s: slot 12
    assert state.slot_after(5, None) == 13


def test_a_key_the_driver_fails_to_give_is_no_key_and_the_chip_s_spacing_delays_a_start() -> None:
    class Fussy(Thermometer):
        min_interval_s = 2.0

        def group_key(self) -> Any:
            raise OSError("bus gone")

    state = SensorState(SensorPlan("x", 10.0, Fussy), 2.0)
    state.install(Fussy(), {})
    assert state.driver_key("group_key") is None and state.driver_key("exclusive_key") is None
    assert state.spaced_start(100.0) is None                  # never started
    state.last_start_mono = 99.5
    assert state.spaced_start(100.0) == 101.5 and state.spaced_start(101.5) is None
