"""The sampling scheduler (`pibridge.bridge.scheduler`) with test-only drivers and a recording sink.

Behaviour tests run the real threads on real time with short intervals and wait on events (never
on sleeps, never asserting durations); the grid arithmetic (slots, re-anchoring after a clock
step) is checked on a scheduler whose clock the test sets.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from pibridge.bridge.calls import WorkerPool
from pibridge.bridge.clock import SystemClock, resolve_timestamp_ms
from pibridge.bridge.model import SensorSpec, TakenSample
from pibridge.bridge.scheduler import Scheduler, SchedulerHooks, SensorPlan
from pibridge.drivers.base import Driver, Metric, RetryPolicy, Sample
from pibridge.drivers.errors import BadDataError, DeviceNotFoundError, SensorError
from pibridge.profile import MetricConfig
from pibridge.protocol import ValueType

WAIT_S = 15.0
#: A timestamp rounded to the ms may lie a hair before its slot; so may a float division.
SLOT_ROUNDING = 1e-3
FAST_S = 0.05  # interval of most test sensors
#: interval where a test counts exact outcomes: an attempt may take up to its slot (here 200 ms)
#: before it is abandoned as hung, which even a loaded test machine does not reach
CALM_S = 0.2
BOOT = "test-boot"


class Flag:
    def __init__(self, value: bool) -> None:
        self.value = value

    def synchronized(self) -> bool:
        return self.value


class Recorder:
    """A sink behind the queue's ``put`` interface; tests wait on what it received."""

    def __init__(self) -> None:
        self.samples: list[TakenSample] = []
        self.cond = threading.Condition()
        self.fail_next = 0

    def put(self, sample: TakenSample) -> None:
        with self.cond:
            if self.fail_next:
                self.fail_next -= 1
                raise OSError("disk full")
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
                self.cond.wait(min(remaining, 0.05))  # also re-checks conditions set elsewhere


class Probe(Driver):
    """A test driver: two metrics; ``script`` decides each attempt (a value, an exception to
    raise, or a callable run inside ``collect``)."""

    name = "probe"
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("a", "A", unit="SI.Temperature.CELSIUS"),
                                             Metric("b", "B", unit="SI.Pressure.PASCAL"))
    read_time_s = 0.0
    retry = RetryPolicy(attempts=2, spacing_s=0.001)

    def __init__(self, script: Callable[[int], Any] | None = None, *, retry: RetryPolicy | None = None,
                 read_time_s: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.script = script or (lambda n: n)
        if retry is not None or read_time_s:
            self.timing = type(self.timing)(read_time_s, 0.0, retry or self.retry)
        self.attempts = 0
        self.starts: list[float] = []
        self.closed = 0

    def start(self) -> float:
        self.starts.append(time.time())
        return self.timing.read_time_s

    def collect(self) -> Sample:
        self.attempts += 1
        outcome = self.script(self.attempts)
        if callable(outcome):
            outcome = outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, dict):
            return outcome
        return {"a": float(outcome), "b": float(outcome) * 10}

    def _release(self) -> None:
        self.closed += 1


@pytest.fixture
def run() -> Iterator[Callable[..., tuple[Scheduler, Recorder]]]:
    started: list[Scheduler] = []

    def start(plans: Sequence[SensorPlan], *, sync: Flag | None = None, hooks: SchedulerHooks | None = None,
              recorder: Recorder | None = None) -> tuple[Scheduler, Recorder]:
        recorder = recorder or Recorder()
        clock = SystemClock(sync or Flag(True), boot_id=BOOT, floor_s=0.0)
        scheduler = Scheduler(plans, recorder, clock=clock, hooks=hooks, rebuild_first_s=0.01)
        scheduler.start()
        started.append(scheduler)
        return scheduler, recorder

    yield start
    for scheduler in started:
        scheduler.stop(5.0)


def slot_of(sample: TakenSample, interval_s: float) -> int:
    assert sample.timestamp_ms is not None
    return math.floor(sample.timestamp_ms / (interval_s * 1000) + SLOT_ROUNDING)


# -- behaviour ---------------------------------------------------------------------------------
def test_every_metric_of_a_sample_in_one_message_on_distinct_increasing_slots(run: Any) -> None:
    plans = [SensorPlan("one", FAST_S, Probe), SensorPlan("two", FAST_S * 2, Probe)]
    scheduler, rec = run(plans)
    rec.wait(lambda: len(rec.of("one")) >= 6 and len(rec.of("two")) >= 4)
    scheduler.stop()
    for name, interval in (("one", FAST_S), ("two", FAST_S * 2)):
        samples = rec.of(name)
        assert all(set(s.values) == {"a", "b"} and s.values["b"] == s.values["a"] * 10 for s in samples)
        assert all(s.boot_id == BOOT and not s.event and s.timestamp_ms is not None for s in samples)
        stamps = [s.timestamp_ms for s in samples]
        assert stamps == sorted(set(stamps))
        slots = [slot_of(s, interval) for s in samples]
        assert slots == sorted(set(slots))  # one sample per slot, never a burst
        counters = scheduler.stats()[name]
        assert counters["taken"] == len(samples)
        # every slot between the first and the last was either read or counted as skipped
        assert slots[-1] - slots[0] + 1 <= len(samples) + counters["skipped"]


def test_a_retryable_failure_is_retried_in_the_slot_and_stamped_at_its_attempt(run: Any) -> None:
    probe = Probe(lambda n: BadDataError("crc") if n == 1 else 1.0)
    scheduler, rec = run([SensorPlan("p", 0.5, lambda: probe)])
    rec.wait(lambda: len(rec.of("p")) >= 1)
    sample = rec.of("p")[0]
    assert sample.values == {"a": 1.0, "b": 10.0}
    assert scheduler.stats()["p"]["retries"] == 1
    assert sample.timestamp_ms is not None
    first, second = probe.starts[0], probe.starts[1]
    assert first * 1000 <= sample.timestamp_ms <= second * 1000 + 1  # the successful attempt's start


def test_no_retry_for_a_non_retryable_error_nor_one_that_would_end_after_the_next_slot(run: Any) -> None:
    gone = Probe(lambda n: DeviceNotFoundError("no chip"))
    late = Probe(lambda n: BadDataError("crc"), retry=RetryPolicy(attempts=3, spacing_s=10.0))
    scheduler, rec = run([SensorPlan("gone", FAST_S, lambda: gone), SensorPlan("late", FAST_S, lambda: late)])
    rec.wait(lambda: scheduler.stats()["gone"]["failed"] >= 3 and scheduler.stats()["late"]["failed"] >= 3)
    assert scheduler.stats()["gone"]["retries"] == 0 and scheduler.stats()["late"]["retries"] == 0
    assert gone.attempts >= 3 and late.attempts >= 3


def test_errors_reported_once_per_change_of_state_and_the_sensor_resumes_by_itself(run: Any) -> None:
    healthy = threading.Event()
    healthy.set()
    reports: list[tuple[str, str]] = []
    probe = Probe(lambda n: 1.0 if healthy.is_set() else DeviceNotFoundError("unplugged"))
    hooks = SchedulerHooks(sensor_error=lambda name, text: reports.append((name, text)))
    scheduler, rec = run([SensorPlan("p", CALM_S, lambda: probe)], hooks=hooks)
    rec.wait(lambda: len(rec.of("p")) >= 2)
    healthy.clear()
    rec.wait(lambda: scheduler.stats()["p"]["failed"] >= 3)
    assert scheduler.stats()["p"]["state"] == "failing"
    assert reports == [("p", "DeviceNotFoundError: unplugged")]
    taken = len(rec.of("p"))
    healthy.set()
    rec.wait(lambda: len(rec.of("p")) >= taken + 2)
    assert scheduler.stats()["p"]["state"] == "ok"
    healthy.clear()
    rec.wait(lambda: len(reports) == 2)


def test_a_hung_sensor_is_abandoned_and_delays_no_other(run: Any) -> None:
    release = threading.Event()
    hung = Probe(lambda n: (lambda: release.wait(WAIT_S) and 7.0) if n == 1 else 8.0)
    scheduler, rec = run([SensorPlan("hung", FAST_S, lambda: hung), SensorPlan("fine", FAST_S, Probe)])
    stats = scheduler.stats
    rec.wait(lambda: stats()["hung"]["abandoned"] == 1 and stats()["hung"]["skipped"] >= 3)
    before = len(rec.of("fine"))
    rec.wait(lambda: len(rec.of("fine")) >= before + 5)  # still sampling while the other hangs
    assert rec.of("hung") == [] and scheduler.stats()["hung"]["state"] == "failing"
    release.set()
    rec.wait(lambda: scheduler.stats()["hung"]["late_discarded"] >= 1 and len(rec.of("hung")) >= 1)
    assert all(s.values["a"] == 8.0 for s in rec.of("hung"))  # the late 7.0 was discarded
    rec.wait(lambda: scheduler.stats()["hung"]["state"] == "ok")


class BatchRecorder(Recorder):
    """A sink with the queue's ``put_many``: records each hand-over's samples."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[TakenSample]] = []

    def put_many(self, samples: Sequence[TakenSample]) -> None:
        with self.cond:
            self.batches.append(list(samples))
            self.samples.extend(samples)
            self.cond.notify_all()


class CountingPool(WorkerPool):
    """The real pool, counting the jobs it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs = 0

    def submit(self, job: Callable[[], None]) -> None:
        self.jobs += 1
        super().submit(job)


def test_a_slot_of_reads_without_a_wait_is_one_job() -> None:
    """Five sensors due together whose start needs no wait: their starts and collects run as
    one pool job per slot (start all, collect all inline), not two jobs per sensor."""
    names = [f"s{i}" for i in range(5)]
    pool = CountingPool()
    rec = BatchRecorder()
    scheduler = Scheduler([SensorPlan(name, CALM_S, Probe) for name in names], rec,
                          clock=SystemClock(Flag(True), boot_id=BOOT, floor_s=0.0), pool=pool)
    scheduler.start()
    try:
        rec.wait(lambda: any(sorted(s.sensor for s in b) == names for b in rec.batches))
        built_jobs = pool.jobs            # five builds and the first slots' jobs so far
        slots_before = {slot_of(s, CALM_S) for s in rec.samples}
        rec.wait(lambda: len({slot_of(s, CALM_S) for s in rec.samples} - slots_before) >= 3)
        scheduler.stop()
        new_slots = {slot_of(s, CALM_S) for s in rec.samples} - slots_before
        # one job per slot for its five sensors (was ten: a start and a collect each); room for
        # a slot begun before the count and for a batch split off a call stalled on a loaded machine
        assert pool.jobs - built_jobs <= 2 * len(new_slots) + 1
    finally:
        scheduler.stop()


def test_the_samples_of_one_slot_are_handed_over_as_one_batch(run: Any) -> None:
    names = [f"s{i}" for i in range(5)]
    # a read time: the slot's reads overlap, so the batch really waits for the last of them
    plans = [SensorPlan(name, CALM_S, lambda: Probe(read_time_s=0.02)) for name in names]
    _, rec = run(plans, recorder=BatchRecorder())
    rec.wait(lambda: len(rec.batches) >= 3)
    batches: list[list[TakenSample]] = rec.batches
    full = [b for b in batches if sorted(s.sensor for s in b) == names]
    assert full, [[s.sensor for s in b] for b in batches]
    slots = [{round((s.timestamp_ms or 0) / (CALM_S * 1000)) for s in b} for b in full]
    assert all(len(slot) == 1 for slot in slots)  # one slot per batch


def test_a_hung_read_does_not_hold_back_the_batch_of_its_slot(run: Any) -> None:
    release = threading.Event()
    hung = Probe(lambda n: (lambda: release.wait(WAIT_S) and 7.0) if n == 1 else 8.0)
    # at 1 s the hung read is abandoned 0.5 s after it began; the batch must not wait for that
    scheduler, rec = run([SensorPlan("hung", 1.0, lambda: hung), SensorPlan("fine", 1.0, Probe)],
                         recorder=BatchRecorder())
    rec.wait(lambda: len(rec.of("fine")) >= 1 and hung.attempts >= 1)
    # the fine sample of the hung one's slot came long before the hung read was abandoned
    assert scheduler.stats()["hung"]["abandoned"] == 0
    release.set()


class GroupProbe(Probe):
    """Probes on one bus: ``start_group`` starts them all in one go (like a w1 bulk conversion)."""

    group_calls: ClassVar[list[tuple[int, ...]]] = []

    def group_key(self) -> str:
        return "master-1"

    @classmethod
    def start_group(cls, drivers: Sequence[Driver]) -> float:
        cls.group_calls.append(tuple(id(d) for d in drivers))
        return 0.001


def test_sensors_of_one_group_due_together_share_one_start_then_retry_alone(run: Any) -> None:
    GroupProbe.group_calls = []
    first = GroupProbe()
    second = GroupProbe(lambda n: BadDataError("crc") if n == 1 else 2.0)
    scheduler, rec = run([SensorPlan("g1", CALM_S, lambda: first), SensorPlan("g2", CALM_S, lambda: second)])
    rec.wait(lambda: len(rec.of("g1")) >= 3 and len(rec.of("g2")) >= 3)
    scheduler.stop()
    assert GroupProbe.group_calls and all(set(c) == {id(first), id(second)} for c in GroupProbe.group_calls)
    assert first.starts == []            # never started alone
    assert len(second.starts) == 1       # its one retry started it alone
    assert scheduler.stats()["g2"]["retries"] == 1


class ChannelProbe(Probe):
    """One input of a shared ADC: attempts of one chip must never overlap (they share its config
    register). Records each attempt's [start, end of collect] on the chip's common log."""

    def __init__(self, log: list[tuple[float, float, str]], name: str, chip: str = "ads@0x48",
                 **kwargs: Any) -> None:
        super().__init__(read_time_s=0.02, **kwargs)
        self.log, self.label, self.chip = log, name, chip
        self.began: float | None = None

    def exclusive_key(self) -> str:
        return self.chip

    def start(self) -> float:
        self.began = time.monotonic()
        return super().start()

    def collect(self) -> Sample:
        try:
            return super().collect()
        finally:
            assert self.began is not None
            self.log.append((self.began, time.monotonic(), self.label))
            self.began = None


def test_sensors_of_one_exclusive_key_take_turns_and_each_keeps_its_slots(run: Any) -> None:
    log: list[tuple[float, float, str]] = []
    flaky = ChannelProbe(log, "c1", script=lambda n: BadDataError("torn") if n % 3 == 1 else float(n))
    drivers = [ChannelProbe(log, "c0"), flaky, ChannelProbe(log, "c2"), ChannelProbe(log, "c3")]
    other = ChannelProbe(log, "x0", chip="ads@0x49")
    plans = [SensorPlan(d.label, CALM_S, lambda d=d: d) for d in [*drivers, other]]
    scheduler, rec = run(plans)
    rec.wait(lambda: all(len(rec.of(name)) >= 4 for name in ("c0", "c1", "c2", "c3", "x0")))
    scheduler.stop()
    chip = sorted((a, b) for a, b, name in log if name != "x0")
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(chip)), chip
    overlapping_other = [(a, b) for a, b, name in log if name == "x0"
                         and any(s < b and a < e for s, e in chip)]
    assert overlapping_other, "another chip's sensor is not held up by this chip"
    assert scheduler.stats()["c1"]["retries"] >= 1
    for name in ("c0", "c2", "c3"):
        slots = [slot_of(t, CALM_S) for t in rec.of(name)]
        assert slots == sorted(set(slots)) and scheduler.stats()[name]["failed"] == 0


class HangingChannel(ChannelProbe):
    """A channel whose first collect hangs past its attempt's budget, until ``release`` is set."""

    def __init__(self, log: list[tuple[float, float, str]], release: threading.Event) -> None:
        super().__init__(log, "hung")
        self.release, self.hung_once = release, False

    def collect(self) -> Sample:
        if not self.hung_once:
            self.hung_once = True
            self.release.wait(WAIT_S)     # still talking to the chip after it was abandoned
        return super().collect()


def test_an_abandoned_call_keeps_its_chip_until_it_returns(run: Any) -> None:
    """The scheduler gives up on a hung attempt at its deadline, but the call is still using the
    chip (an ADC's shared config register): another channel of that chip waits until it returns."""
    log: list[tuple[float, float, str]] = []
    release = threading.Event()
    hung, other = HangingChannel(log, release), ChannelProbe(log, "c1")
    scheduler, rec = run([SensorPlan("hung", CALM_S, lambda: hung), SensorPlan("c1", CALM_S, lambda: other)])
    deadline = time.monotonic() + WAIT_S
    while scheduler.stats()["hung"]["abandoned"] < 1:
        assert time.monotonic() < deadline, "the hung attempt was never abandoned"
        threading.Event().wait(0.02)
    before = len(rec.of("c1"))

    def c1_waits_for_the_chip() -> bool:
        return any(w.name == "c1" and scheduler._exclusive.is_waiting("ads@0x48", w)
                   for w in scheduler._sensors)
    while not (c1_waits_for_the_chip() or len(rec.of("c1")) > before):
        assert time.monotonic() < deadline, "c1 never asked for the chip"
        threading.Event().wait(0.02)
    assert len(rec.of("c1")) == before and c1_waits_for_the_chip()   # held while the call runs
    release.set()
    rec.wait(lambda: len(rec.of("c1")) >= before + 2)           # the chip is free once the call returns
    scheduler.stop()
    hung_span = next((a, b) for a, b, name in log if name == "hung")
    assert not [(a, b) for a, b, name in log if name == "c1" and a < hung_span[1] and hung_span[0] < b], log


class Door(Probe):
    """A driver with edges (``on_change``), like the door contact."""

    metrics = (Metric("state", "State", value_type=ValueType.BOOL, annotation="open"),)

    def __init__(self) -> None:
        super().__init__()
        self.callbacks: list[Callable[[bool, float], None]] = []
        self.closed_state = False

    def collect(self) -> Sample:
        return {"state": self.closed_state}

    def on_change(self, callback: Callable[[bool, float], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)


def test_an_edge_is_its_own_sample_stamped_at_the_edge_and_never_collides(run: Any) -> None:
    door = Door()
    scheduler, rec = run([SensorPlan("door", 0.2, lambda: door)])
    rec.wait(lambda: len(rec.of("door")) >= 1 and bool(door.callbacks))
    periodic = rec.of("door")[-1]
    assert periodic.timestamp_ms is not None
    door.callbacks[0](True, periodic.timestamp_ms / 1000)  # an edge in the same millisecond
    rec.wait(lambda: any(s.event for s in rec.of("door")))
    edge = next(s for s in rec.of("door") if s.event)
    assert edge.values == {"state": True}
    assert edge.timestamp_ms == periodic.timestamp_ms + 1
    edge_time = time.time() - 0.01
    door.callbacks[0](False, edge_time)
    rec.wait(lambda: sum(s.event for s in rec.of("door")) == 2)
    assert [s for s in rec.of("door") if s.event][-1].timestamp_ms == round(edge_time * 1000)
    rec.wait(lambda: len(rec.of("door")) >= 4)
    stamps = [s.timestamp_ms for s in rec.of("door")]
    assert len(set(stamps)) == len(stamps)
    assert scheduler.stats()["door"]["events"] == 2


def test_a_driver_that_cannot_be_built_is_rebuilt_with_backoff(run: Any) -> None:
    builds = {"n": 0}
    reports: list[str] = []
    ready: list[SensorSpec] = []

    def build() -> Driver:
        builds["n"] += 1
        if builds["n"] <= 3:
            raise DeviceNotFoundError("no chip at 0x76")
        return Probe()

    hooks = SchedulerHooks(sensor_error=lambda n, t: reports.append(t),
                           driver_ready=lambda n, s: ready.append(s))
    scheduler, rec = run([SensorPlan("p", CALM_S, build)], hooks=hooks)
    rec.wait(lambda: len(rec.of("p")) >= 1)
    assert scheduler.stats()["p"]["build_failures"] == 3
    assert reports == ["cannot set up the sensor: DeviceNotFoundError: no chip at 0x76"]
    assert [m.key for m in ready[0].metrics] == ["a", "b"]


def test_a_driver_whose_declarations_fail_after_construction_is_a_failed_build(run: Any) -> None:
    """active_metrics() raising on a freshly built driver must not leave the sensor built but
    never scheduled (silently stalled while everything reports ok): it is a build failure,
    closed, counted and rebuilt."""
    built: list[Probe] = []

    class Moody(Probe):
        def active_metrics(self) -> tuple[Metric, ...]:
            if len(built) <= 2:
                raise RuntimeError("detection bug")
            return super().active_metrics()

    def build() -> Driver:
        built.append(Moody())
        return built[-1]

    scheduler, rec = run([SensorPlan("moody", CALM_S, build)])
    rec.wait(lambda: len(rec.of("moody")) >= 1)
    stats = scheduler.stats()["moody"]
    assert stats["build_failures"] == 2 and [p.closed for p in built[:2]] == [1, 1]


def test_any_exception_from_a_driver_is_caught_counted_and_others_carry_on(run: Any) -> None:
    broken = Probe(lambda n: ZeroDivisionError("bug"))
    nonsense = Probe(lambda n: (lambda: {"a": 1.0}))  # collect returns a callable result → not a sample

    def weird_build() -> Driver:
        raise RuntimeError("constructor bug")

    scheduler, rec = run([SensorPlan("broken", FAST_S, lambda: broken),
                          SensorPlan("weird", FAST_S, weird_build),
                          SensorPlan("nonsense", FAST_S, lambda: nonsense),
                          SensorPlan("fine", FAST_S, Probe)])
    rec.wait(lambda: len(rec.of("fine")) >= 5 and scheduler.stats()["broken"]["driver_exceptions"] >= 2
             and scheduler.stats()["weird"]["build_failures"] >= 2)
    assert scheduler.stats()["broken"]["retries"] == 0 and rec.of("broken") == []
    assert rec.of("nonsense") == [] and scheduler.stats()["nonsense"]["failed"] >= 1


def test_processing_applies_and_a_sample_with_every_metric_left_out_is_not_pushed(run: Any) -> None:
    configs = {"a": MetricConfig("a", valid_range=(0.0, 2.5)), "b": MetricConfig("b", enabled=False)}
    scheduler, rec = run([SensorPlan("p", CALM_S, Probe, configs)])
    rec.wait(lambda: scheduler.stats()["p"]["empty"] >= 2)
    assert [s.values for s in rec.of("p")] == [{"a": 1.0}, {"a": 2.0}]
    assert scheduler.stats()["p"]["out_of_range"] >= 2


def test_clock_not_set_samples_carry_monotonic_time_until_it_is(run: Any) -> None:
    sync = Flag(False)
    announced: list[tuple[str, int]] = []
    rec = Recorder()

    def clock_set(boot: str, offset: int) -> None:
        with rec.cond:
            announced.append((boot, offset))
            rec.samples.append(TakenSample("<clock set>", {}, 0, 0.0, boot))  # a marker in the sink's order

    run([SensorPlan("p", FAST_S, Probe)], sync=sync, hooks=SchedulerHooks(clock_set=clock_set), recorder=rec)
    rec.wait(lambda: len(rec.of("p")) >= 3)
    assert all(s.timestamp_ms is None and s.boot_id == BOOT for s in rec.of("p"))
    sync.value = True
    rec.wait(lambda: bool(announced) and rec.of("p")[-1].timestamp_ms is not None)
    samples = rec.of("p")
    boot, offset = announced[0]
    assert boot == BOOT and len(announced) == 1
    resolved = [s.timestamp_ms if s.timestamp_ms is not None else resolve_timestamp_ms(s.monotonic_s, offset)
                for s in samples]
    assert resolved == sorted(set(resolved))
    # the announcement came after every unstamped sample had been put (the queue stamps those)
    with rec.cond:
        order = [s.sensor if s.sensor == "<clock set>" else s.timestamp_ms is not None for s in rec.samples]
    marker = order.index("<clock set>")
    assert False not in order[marker + 1:]
    assert True not in order[:marker]


def test_stop_closes_idle_drivers_and_leaves_a_hung_one(run: Any) -> None:
    release = threading.Event()
    idle = Probe()
    hung = Probe(lambda n: (lambda: release.wait(WAIT_S) and 1.0))
    scheduler, rec = run([SensorPlan("idle", 0.2, lambda: idle), SensorPlan("hung", 0.2, lambda: hung)])
    rec.wait(lambda: len(rec.of("idle")) >= 1 and hung.attempts >= 1)
    scheduler.stop(5.0)
    assert idle.closed == 1 and hung.closed == 0
    assert not scheduler.alive
    release.set()


def test_a_sink_failure_is_counted_and_storing_resumes(run: Any) -> None:
    recorder = Recorder()
    recorder.fail_next = 2
    scheduler, rec = run([SensorPlan("p", FAST_S, Probe)], recorder=recorder)
    rec.wait(lambda: len(rec.of("p")) >= 2)
    assert scheduler.stats()["p"]["store_failures"] == 2


# -- the grid arithmetic -----------------------------------------------------------------------
class SetClock:
    def __init__(self, wall: float, mono: float) -> None:
        self.wall, self.mono = wall, mono


def grid_scheduler(interval: float, clock: SetClock) -> tuple[Scheduler, Any]:
    system = SystemClock(Flag(True), wall=lambda: clock.wall, monotonic=lambda: clock.mono, boot_id=BOOT,
                         floor_s=0.0)
    scheduler = Scheduler([SensorPlan("p", interval, Probe)], Recorder(), clock=system)
    scheduler.grid.anchor(clock.wall, clock.mono)
    return scheduler, scheduler._sensors[0]


def due_slots(scheduler: Scheduler) -> list[float]:
    return [timer.due for timer in scheduler._timers if timer.action == "slot"]


def test_slots_are_multiples_of_the_interval_since_the_epoch_waited_on_the_monotonic_clock() -> None:
    clock = SetClock(wall=1_800_000_007.3, mono=500.0)
    scheduler, s = grid_scheduler(10.0, clock)
    scheduler._schedule_slot(s, clock.mono, after=None)
    assert s.slot_k == 180_000_001 and due_slots(scheduler) == [pytest.approx(500.0 + 2.7)]
    # a cycle ending late (after the following slot) skips it, counted, and never bursts
    clock.mono += 14.0
    scheduler._schedule_slot(s, clock.mono, after=s.slot_k)
    assert s.slot_k == 180_000_003 and s.counters.skipped == 1
    assert due_slots(scheduler) == [pytest.approx(500.0 + 2.7 + 20.0)]


def test_a_forward_step_re_anchors_without_a_burst() -> None:
    clock = SetClock(wall=1_800_000_000.5, mono=100.0)
    scheduler, s = grid_scheduler(1.0, clock)
    scheduler._schedule_slot(s, clock.mono, after=None)
    clock.wall += 3600.0  # NTP: an hour forward
    scheduler._check_clock_step()
    assert scheduler.clock_steps == 1
    assert due_slots(scheduler) == [pytest.approx(100.5)]  # the next slot of the new grid, not 3600 old ones
    assert s.counters.skipped == 0


def test_a_forward_step_noticed_at_the_slots_old_time_takes_that_slot_at_once() -> None:
    """An idle loop sleeps until its next slot, so it notices a step only then: a step that
    jumped over that slot (by less than an interval) must not cost the sample."""
    clock = SetClock(wall=1_800_000_000.0, mono=100.0)  # on the 60 s grid
    scheduler, s = grid_scheduler(60.0, clock)
    scheduler._schedule_slot(s, clock.mono, after=None)
    assert due_slots(scheduler) == [pytest.approx(160.0)]
    clock.mono, clock.wall = 160.0, 1_800_000_000.0 + 60.0 + 20.0  # woke at the old time, +20 s
    scheduler._check_clock_step()
    assert scheduler.clock_steps == 1 and s.slot_k == 30_000_001 and s.counters.skipped == 0
    assert due_slots(scheduler) == [pytest.approx(160.0)]  # now, not the next slot at 220


def test_a_backward_step_waits_for_a_slot_after_the_last_timestamp() -> None:
    clock = SetClock(wall=1_800_000_000.5, mono=100.0)
    scheduler, s = grid_scheduler(1.0, clock)
    s.timeline.last_ts_ms = 1_800_000_000_001
    scheduler._schedule_slot(s, clock.mono, after=None)
    clock.wall -= 5.0
    scheduler._check_clock_step()
    # wall now 1_799_999_995.5: slots ..996 … ..000 would repeat timestamps; the next is ..001
    assert s.slot_k == 1_800_000_001 and due_slots(scheduler) == [pytest.approx(100.0 + 5.5)]


def test_slow_slewing_follows_the_clock_without_re_anchoring() -> None:
    clock = SetClock(wall=1_800_000_000.5, mono=100.0)
    scheduler, s = grid_scheduler(1.0, clock)
    clock.wall += 0.05
    scheduler._check_clock_step()
    assert scheduler.clock_steps == 0
    scheduler._schedule_slot(s, clock.mono, after=None)
    assert due_slots(scheduler) == [pytest.approx(100.45)]


def test_plans_are_checked() -> None:
    with pytest.raises(ValueError, match="unique"):
        Scheduler([SensorPlan("x", 1.0, Probe), SensorPlan("x", 2.0, Probe)], Recorder())
    with pytest.raises(ValueError, match="interval"):
        Scheduler([SensorPlan("x", 0.0, Probe)], Recorder())
    assert isinstance(SensorError("x"), Exception)


# -- the worker pool ---------------------------------------------------------------------------
def test_the_pool_replaces_a_stuck_worker_and_stays_small_otherwise() -> None:

    pool = WorkerPool(core=2, stuck_s=0.01)
    release, started = threading.Event(), threading.Semaphore(0)

    def hang() -> None:
        started.release()
        release.wait(WAIT_S)

    pool.submit(hang)
    pool.submit(hang)
    assert started.acquire(timeout=WAIT_S) and started.acquire(timeout=WAIT_S)
    done = threading.Event()
    pool.submit(done.set)
    deadline = time.monotonic() + WAIT_S
    while not done.wait(0.02):  # the scheduler calls grow_if_starved on every wake like this
        assert time.monotonic() < deadline
        pool.grow_if_starved()
    assert pool.size >= 3
    release.set()
    pool.close()

    calm = WorkerPool(core=2, stuck_s=WAIT_S)
    finished = threading.Semaphore(0)
    for _ in range(20):
        calm.submit(finished.release)
    for _ in range(20):
        assert finished.acquire(timeout=WAIT_S)
    assert calm.size == 2  # a burst of quick calls: no thread per call
    calm.close()


def test_a_slot_too_close_to_the_last_start_waits_for_the_spacing(run: Any) -> None:
    class Spaced(Probe):
        """Like a DHT: refuses a read within ``min_interval_s`` of the last (here: the interval)."""

        def __init__(self) -> None:
            super().__init__()
            self.timing = type(self.timing)(0.0, 0.1, RetryPolicy(attempts=0))

    probe = Spaced()
    scheduler, rec = run([SensorPlan("dht", 0.1, lambda: probe)])
    rec.wait(lambda: len(rec.of("dht")) >= 8)
    scheduler.stop()
    gaps = [b - a for a, b in zip(probe.starts, probe.starts[1:], strict=False)]
    # never closer than the spacing whatever the jitter (1 ms: between the scheduler's stamp and
    # the driver's own clock reading inside start())
    assert min(gaps) >= 0.1 - 1e-3
