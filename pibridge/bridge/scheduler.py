"""The sampling scheduler: every sensor on its own grid, the scheduler owns time.

Grid. Sensor s with interval I has slot k at wall-clock time k·I since the Unix epoch, so all
sensors with one interval fall due together. A slot is waited on the monotonic clock: its due
time is ``k·I − (wall − monotonic)``, computed from the offset *when the slot is scheduled*; the
next slot is always k+1 (or later), never "now + I", so there is no drift. When the offset jumps
by more than `grid.CLOCK_STEP_S` (NTP stepping the clock after boot, someone running ``date -s``), the
grid is re-anchored: every waiting sensor takes the first slot after the new "now" (no burst of
missed slots) and after its last timestamp (a backward step makes it wait instead of repeating
timestamps), so one sensor's timestamps stay strictly increasing.

Shape (no thread per sleeping driver; a Pi Zero has one core):

    timer thread ──(one CallBatch per loop turn)──▶ worker pool ──(one message per batch)──▶ inbox
         │                                                                            ▲   ▲
         └──(processed samples, hook calls, in order)──▶ outbox thread ──▶ sink.put     │  edges
                                                                         (the queue)  timer thread

- *One timer thread* owns all state: a heap of timers (`pibridge.bridge.timers`: slot, collect,
  retry, deadline, rebuild, clock poll) and an inbox of results and edges; it sleeps on the
  inbox until the earliest live timer (a superseded one, such as the deadline of an attempt that
  ended, is dropped off the heap before it sleeps and never wakes it), the held samples'
  hand-over or a call about to turn stuck, and takes every message waiting per turn.
- *A worker pool* runs the blocking calls (`pibridge.bridge.calls`; `CallDispatch` sends them):
  the starts and collects the timer thread asked for in one loop turn go as ONE job
  (`CallBatch`: starts first, each stamped as it begins, then collects; a start that needs no
  wait has its collect run at once in the same job), and come back as one message; so the
  sensors due in one slot cost one job and one wake-up for their starts and one per distinct
  ready time for their collects (timed from the end of the batch's last start, so sensors
  started together are collected together). Driver
  construction is a job of its own. The pool keeps `CORE_WORKERS` healthy threads: a thread
  inside one call for longer than `STUCK_CALL_S` (a hung driver) is replaced while jobs wait,
  and a batch whose running call is stuck hands over what it finished and sends the calls it
  has not begun to another thread, so a hung driver never makes another sensor wait; extra
  threads leave after `IDLE_WORKER_S`. One call in flight per sensor bounds the pool to
  ``CORE_WORKERS`` + the number of sensors.
- *An outbox thread* (`pibridge.bridge.outbox`) hands samples to the sink (``queue.put``
  returns once committed to disk, which may take a while on an SD card) and calls the hooks,
  so neither delays a slot. The samples of one slot go as one batch (``sink.put_many``: one
  commit, a few pages written to the card instead of a few per sample): the timer thread holds
  a slot's samples (`pibridge.bridge.handover`) until no read of that slot is expected to end
  soon, at most `handover.HAND_OVER_MAX_S` after the first, and batches waiting behind each
  other in the outbox join. An edge sample, a hook call or a barrier first hands over what is
  held (order kept).

One sample = one cycle: at the slot, ``start()`` (its moment is the sample's timestamp), wait
what it returned, ``collect()``, `check_sample`, processing, out. A failed attempt is retried per
the driver's `RetryPolicy` while the retry (its spacing, at least ``min_interval_s`` after the
last attempt began, plus the read time) still ends before the next slot. Each attempt must
finish within `attempt_budget` (twice the declared read time plus `READ_SLACK_S`, at most until
the next slot): else the cycle is abandoned, the late result discarded and counted, and the
sensor skips slots until its worker returns. A cycle that runs into later slots skips them
(counted), never bursts.

Sensors with the same ``group_key()`` due in the same slot start together through their class's
``start_group`` (DS18B20 probes on one master: one conversion), then collect and retry one by
one. Sensors with the same ``exclusive_key()`` (the channels of one ADC, which share its config
register) take their attempts one at a time: an attempt that finds the key held waits, without a
deadline of its own, until the holder's attempt ends (its collect, a failure, its deadline, its
removal), then starts if that still leaves its read time before its next slot (else the slot is
skipped). The retry spacing frees the chip for the others. (Exclusive keys apply to single
starts; a driver uses either them or ``start_group``.)

A driver with ``on_change(callback)`` (a door contact) also sends each edge at once as its own
sample stamped at the edge; two samples of one sensor never share a millisecond (a later one
moves 1 ms on: `pibridge.bridge.timeline`). A driver that cannot be built is rebuilt with backoff
(`pibridge.bridge.health`).

Resume. A driver that declares `Driver.resumable_metrics` (a pulse counter's running total) gets
`Driver.resume(values)` once it is built, before its first read: the newest raw values this
scheduler emitted for the sensor (a rebuilt or replaced driver continues), else the ones the
bridge stored before (``resume=``, from the queue's resume table at start-up). Every sample
carries its raw resumable values (`TakenSample.resume`) for the queue to keep. Every exception from a
driver is caught, counted and reported; a failing sensor is logged once per change of state.

A profile reload changes single sensors of a running scheduler: `Scheduler.add`, `remove` and
`replace` (handed to the timer thread; every other sensor keeps its driver, grid and timers). A
removed sensor's call in flight only closes its driver when it returns; a replaced sensor's new
driver is built after the old one is closed (or at the old attempt's deadline, if hung) and
continues its timeline (timestamps strictly increasing, counters kept).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pibridge.bridge.calls import (  # noqa: F401 (CORE_WORKERS, IDLE_WORKER_S, STUCK_CALL_S: named above)
    BUILD,
    COLLECT,
    CORE_WORKERS,
    GROUP_START,
    IDLE_WORKER_S,
    START,
    STUCK_CALL_S,
    CallBatch,
    CallDispatch,
    DriverCall,
    WorkerPool,
    call_driver,
    needs_no_wait,
)
from pibridge.bridge.clock import SystemClock
from pibridge.bridge.exclusive import ExclusiveKeys
from pibridge.bridge.grid import SamplingGrid
from pibridge.bridge.handover import SlotHandOver
from pibridge.bridge.health import REBUILD_FIRST_S
from pibridge.bridge.model import SensorSpec, Value
from pibridge.bridge.outbox import Outbox, SampleSink
from pibridge.bridge.sensor_state import Cycle, SensorPlan, SensorState, describe
from pibridge.bridge.timers import TimerHeap
from pibridge.drivers.base import CollectAgain, Driver, check_sample
from pibridge.drivers.errors import SensorError

log = logging.getLogger(__name__)

#: An attempt may take twice the declared read time plus this, before it counts as hung.
READ_SLACK_S = 0.5
READ_TIME_FACTOR = 2.0
#: Sensors whose slots fall within this of each other are "due together" (group starts).
SAME_SLOT_S = 0.001
#: How often the clock's "set" rule is polled until it holds.
CLOCK_POLL_S = 1.0
#: The timer loop counts as hung (the watchdog stops) when one turn has worked this long; a loop
#: waiting for its next timer or message is never hung, so an idle bridge's timer thread sleeps
#: until its next slot (it wakes for nothing else).
TIMER_HUNG_S = 30.0


@dataclass
class SchedulerHooks:
    """What the rest of the bridge hears, called from the outbox thread (never the timer):
    ``sensor_error(name, text)`` when a sensor starts failing (or fails differently, or still
    fails `health.ERROR_REPEAT_S` later); ``driver_ready(name, spec)`` when a driver is built (its
    active metrics may differ from the class's); ``clock_set(boot_id, wall_minus_monotonic_ms)``
    once, when the wall clock is known to be set — every sample handed over before it with
    ``timestamp_ms=None`` is stamped with `resolve_timestamp_ms` by the queue."""

    sensor_error: Callable[[str, str], None] | None = None
    driver_ready: Callable[[str, SensorSpec], None] | None = None
    clock_set: Callable[[str, int], None] | None = None


def attempt_budget(read_time_s: float) -> float:
    """Seconds one attempt (start + wait + collect) may take before it counts as hung."""
    return READ_TIME_FACTOR * max(0.0, read_time_s) + READ_SLACK_S


# -- the scheduler -----------------------------------------------------------------------------
class Scheduler:
    """Samples ``plans`` onto ``sink``. `start` runs it on its own threads; `stop` ends it."""

    def __init__(self, plans: Sequence[SensorPlan], sink: SampleSink, *, clock: SystemClock | None = None,
                 hooks: SchedulerHooks | None = None, pool: WorkerPool | None = None,
                 rebuild_first_s: float = REBUILD_FIRST_S, hung_after_s: float = TIMER_HUNG_S,
                 resume: Mapping[str, Mapping[str, Value]] | None = None) -> None:
        self.hung_after_s = hung_after_s
        #: sensor → the values its driver resumes from when nothing newer was taken in this run
        self._stored_resume = {name: dict(values) for name, values in (resume or {}).items()}
        names = [p.name for p in plans]
        if len(set(names)) != len(names):
            raise ValueError("sensor names must be unique")
        for plan in plans:
            _check_plan(plan)
        self._names = set(names)        # the sensors as the caller of add/remove/replace sees them
        self._names_lock = threading.Lock()
        self.sink = sink
        self.clock = clock or SystemClock()
        self.hooks = hooks or SchedulerHooks()
        self.pool = pool or WorkerPool()
        self.rebuild_first_s = rebuild_first_s
        self._sensors = [SensorState(p, rebuild_first_s) for p in plans]
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._outbox = Outbox(sink, self.hooks)
        self._timers: TimerHeap[SensorState] = TimerHeap()
        #: the current slot's samples, handed to the outbox together (timer thread only)
        self._handover = SlotHandOver(self._outbox)
        self.grid = SamplingGrid()
        self._turned_mono = time.monotonic()  #: when the timer loop's current turn began
        self._waiting = False  #: the timer loop waits for a timer or a message (so it is not hung)
        self._clock_offset_ms: int | None = None   # announced wall − monotonic once the clock is set
        self._running = False
        self._timer_thread: threading.Thread | None = None
        self._exclusive: ExclusiveKeys[SensorState] = ExclusiveKeys()
        #: the calls of each loop turn to the pool, and the batches out
        self._calls = CallDispatch(self.pool, self._stamp_now, self.clock.monotonic, self._batch_posted)

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Build every driver (in the background) and start sampling."""
        self._running = True
        self._outbox.start()
        self._timer_thread = threading.Thread(target=self._loop, name="pibridge-scheduler", daemon=True)
        self._timer_thread.start()

    def stop(self, timeout: float = 5.0) -> int:
        """Stop sampling: calls in flight are abandoned (their results discarded), what was taken
        is handed to the sink, drivers not stuck in a call are closed. Returns how many outbox items
        (samples, hook calls) were still not handed over when ``timeout`` ran out (a sink stuck on
        a slow disk), 0 normally."""
        deadline = time.monotonic() + timeout
        self._inbox.put(("stop",))
        if self._timer_thread is not None:
            self._timer_thread.join(max(0.0, deadline - time.monotonic()))
        left = self._outbox.close(deadline - time.monotonic())
        self.pool.close()
        return left

    # -- changing sensors while running (a profile reload) --------------------------------------
    def add(self, plan: SensorPlan) -> None:
        """Start sampling one more sensor on its own grid; no other sensor is touched."""
        _check_plan(plan)
        with self._names_lock:
            if plan.name in self._names:
                raise ValueError(f"sensor {plan.name!r} is already sampled")
            self._names.add(plan.name)
        self._change(("add", plan))

    def remove(self, name: str) -> None:
        """Stop sampling ``name``: its timers are dropped, its driver closed (once a call in flight
        returns), what it already took still goes to the sink. No other sensor is touched."""
        with self._names_lock:
            if name not in self._names:
                raise KeyError(name)
            self._names.discard(name)
        self._change(("remove", name))

    def replace(self, plan: SensorPlan) -> None:
        """``plan.name``'s driver, interval or processing changed: the old driver is closed and a
        new one built (after the old one's call in flight returns, so a GPIO pin is free again);
        the new grid continues after the old one's last timestamp. No other sensor is touched."""
        _check_plan(plan)
        with self._names_lock:
            if plan.name not in self._names:
                raise KeyError(plan.name)
        self._change(("replace", plan))

    def barrier(self, timeout: float) -> bool:
        """Wait until every change asked for so far is applied and every sample taken before it
        was handed to the sink (so a reload can switch the queue's metric layouts after the
        removed or replaced sensors' last samples are stored with the old ones). False on timeout."""
        if self._timer_thread is None or not self.alive:
            return True
        passed = threading.Event()
        self._inbox.put(("barrier", passed))
        return passed.wait(timeout)

    def after_taken(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the outbox thread once every change asked for so far is applied and every
        sample taken before it was handed to the sink, and before anything a later change causes
        (a rebuilt driver's ``driver_ready``): a reload switches the queue's metric layouts
        there, in order with the samples, with no timeout to guess."""
        if self._timer_thread is None or not self.alive:
            fn()
            return
        self._inbox.put(("call", fn))

    @property
    def sensor_names(self) -> list[str]:
        """The sensors sampled now (after every add/remove/replace asked for so far)."""
        with self._names_lock:
            return sorted(self._names)

    def _change(self, message: tuple[Any, ...]) -> None:
        if self._timer_thread is None:      # not started: apply at once, nothing else runs
            self._apply_change(message)
        else:
            self._inbox.put(message)

    def _apply_change(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "add":
            self._add_sensor(message[1])
        elif kind == "remove":
            self._remove_sensor(message[1])
        else:
            old = self._remove_sensor(message[1].name)
            self._add_sensor(message[1], replacing=old)

    def _add_sensor(self, plan: SensorPlan, replacing: SensorState | None = None) -> None:
        s = SensorState(plan, self.rebuild_first_s)
        if replacing is not None:
            s.continue_from(replacing)
        self._sensors = [*self._sensors, s]   # a new list: `stats` iterates the old one safely
        if replacing is not None and replacing.busy:
            replacing.successor = s   # built when the old call returns (or at its deadline)
            self._timers.at(max(replacing.release_by, self.clock.monotonic()), "build", s)
        elif self._timer_thread is not None:   # before `start`, the loop builds every sensor
            self._timers.at(self.clock.monotonic(), "build", s)

    def _remove_sensor(self, name: str) -> SensorState | None:
        found = [s for s in self._sensors if s.name == name]
        if not found:
            return None
        s = found[0]
        self._sensors = [x for x in self._sensors if x is not s]
        if s.resume:              # added again later (a reload): it continues from here
            self._stored_resume[s.name] = dict(s.resume)
        s.removed = True
        s.token += 1           # every timer of it is stale now
        self._release_exclusive(s)   # (a sensor waiting for a key is skipped when its turn comes)
        if s.cycle is not None:   # a hung call is given up at its attempt's deadline
            s.release_by = s.cycle.deadline_mono
        s.cycle, s.slot_k = None, None
        s.stop_listening()
        if not s.busy:
            self._close_removed(s)
        return s

    def _close_removed(self, s: SensorState) -> None:
        s.close_driver()
        successor, s.successor = s.successor, None
        if successor is not None and not successor.removed and successor.driver is None \
                and not successor.busy:
            successor.token += 1   # the fallback build timer is stale now
            self._build(successor)

    @property
    def alive(self) -> bool:
        """Both threads running and the timer loop not stuck in one turn for `TIMER_HUNG_S` (a
        driver call that hangs on it, e.g. a close, shows here; waiting is not hung): for a
        watchdog."""
        return (self._timer_thread is not None and self._timer_thread.is_alive() and self._outbox.alive
                and (self._waiting or time.monotonic() - self._turned_mono < self.hung_after_s))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per sensor: counters, state, last error, last values (a copy)."""
        return {s.name: s.stats() for s in self._sensors}

    # -- the timer thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        now = self.clock.monotonic()
        self.grid.anchor(self.clock.wall(), now)
        self._poll_clock()
        self._timers.at(now, "clock", None)
        for s in self._sensors:
            self._timers.at(now, "build", s)
        stopping = False
        while not stopping:
            timeout = self._sleep_for()
            self._waiting = True
            messages = self._wait_for_messages(timeout)
            self._turned_mono = time.monotonic()  # before `_waiting` drops: `alive` reads both
            self._waiting = False
            for message in messages:
                if message[0] == "stop":
                    stopping = True
                    break
                if message[0] in ("add", "remove", "replace"):
                    self._guarded(self._apply_change, message)
                elif message[0] in ("barrier", "call"):
                    self._handover.put(message)
                elif message[0] == "batch":
                    self._guarded(self._batch_returned, message[1])
                else:
                    self._guarded(self._edge, *message[1:])
            if stopping:
                break
            self._check_clock_step()
            self._run_due_timers()
            self._guarded(self._check_batches)
            if self._handover.holding:
                self._hand_over_if_slot_done()
            self._calls.flush()
        for call in self._calls.unsent():   # asked for but never sent: their sensors hold no call
            for member, _ in call.members or ((call.owner, call.token),):
                member.busy = False
        self._handover.hand_over()
        self._shutdown()

    def _wait_for_messages(self, timeout: float | None) -> list[tuple[Any, ...]]:
        """The inbox's messages: waits up to ``timeout`` for the first, then takes every one
        already there (one loop turn for all of them)."""
        try:
            messages = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def _sleep_for(self) -> float | None:
        """Seconds until the loop has something to do: the earliest live timer (superseded ones
        never wake it), the held samples' hand-over, a job waiting behind a call about to turn
        stuck, a batch's running call about to turn stuck; None: until a message comes."""
        wake = min(self._timers.next_due(), self._handover.wake_at,
                   self._calls.wake_at(self.clock.monotonic()))
        if wake == math.inf:
            return None
        return max(0.0, wake - self.clock.monotonic())

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a scheduler bug must not end sampling for every sensor
            log.exception("scheduler: internal error (sampling goes on)")

    def _run_due_timers(self) -> None:
        now = self.clock.monotonic()
        timers = self._timers
        due_slots: list[SensorState] = []
        while (timer := timers.pop_due(now)) is not None:
            if timer.action != "slot":
                self._guarded(self._fire, timer.action, timer.owner)
                continue
            assert timer.owner is not None
            due_slots.append(timer.owner)
            # sensors of the same slot that fall due a hair later start with these
            while (other := timers.peek()) is not None and other.action == "slot" \
                    and other.due <= timer.due + SAME_SLOT_S:
                timers.pop()
                assert other.owner is not None
                due_slots.append(other.owner)
        if due_slots:
            self._guarded(self._begin_slots, due_slots)

    def _fire(self, action: str, s: SensorState | None) -> None:
        """A live timer other than a slot (a superseded one never gets here)."""
        if action == "clock":
            if not self._poll_clock():
                self._timers.at(self.clock.monotonic() + CLOCK_POLL_S, "clock", None)
            return
        assert s is not None
        if action == "build":
            self._build(s)
        elif action == "collect":
            assert s.driver is not None
            self._call(s, COLLECT, s.driver.collect)
        elif action == "retry":
            self._start_attempt(s)
        elif action == "deadline":
            self._abandon(s)

    # -- clock -----------------------------------------------------------------------------------
    def _poll_clock(self) -> bool:
        if self._clock_offset_ms is not None:
            return True
        if not self.clock.poll():
            return False
        offset_ms = self.clock.wall_minus_monotonic_ms()
        self._clock_offset_ms = offset_ms
        for s in self._sensors:
            s.timeline.clock_set(offset_ms)
        log.info("system clock is set: samples get wall-clock timestamps (earlier ones are stamped "
                 "from their monotonic time)")
        self._handover.put(("hook", "clock_set", self.clock.boot_id, offset_ms))
        return True

    @property
    def clock_steps(self) -> int:
        """Clock steps seen (each re-anchored the grid)."""
        return self.grid.steps

    def _check_clock_step(self) -> None:
        step = self.grid.stepped(self.clock.wall(), self.clock.monotonic())
        if step is None:
            return
        log.warning("wall clock stepped by %+.3f s: sampling grid re-anchored", step)
        now = self.clock.monotonic()
        for s in self._sensors:
            if s.slot_k is None or s.cycle is not None:
                continue
            due = self._slot_mono(s, s.slot_k)
            if due <= now < due + s.interval:
                # a forward step jumped over the slot it waits for, noticed only now (an idle loop
                # wakes for nothing else): take that slot at once, late, instead of losing it
                s.token += 1
                self._timers.at(now, "slot", s)
            else:
                self._schedule_slot(s, now, after=None)

    def _slot_mono(self, s: SensorState, k: int) -> float:
        return self.grid.due(k, s.interval)

    def _schedule_slot(self, s: SensorState, now: float, after: int | None) -> None:
        """Wait for the first slot after ``now`` (and after slot ``after``, and after the last
        timestamp); slots passed over since ``after`` are counted as skipped."""
        s.slot_k = k = s.slot_after(self.grid.next_slot(now, s.interval), after)
        s.token += 1
        self._timers.at(self._slot_mono(s, k), "slot", s)

    # -- cycles ----------------------------------------------------------------------------------
    def _begin_slots(self, due: list[SensorState]) -> None:
        now = self.clock.monotonic()
        groups: dict[tuple[type, Hashable], list[SensorState]] = {}
        for s in due:
            assert s.slot_k is not None
            k = s.slot_k
            if s.driver is None:
                continue
            if s.busy:  # a hung call is still out: skip this slot
                s.counters.skipped += 1
                self._schedule_slot(s, now, after=k)
                continue
            s.cycle = Cycle(slot_k=k, next_slot_mono=self._slot_mono(s, k + 1), opened_mono=now)
            start_at = s.spaced_start(now)
            if start_at is not None:
                # the last start was late in its slot (a DHT at interval = its 2 s spacing): start
                # as soon as the chip allows, if that still leaves the read time before the next slot
                if start_at + s.driver.timing.read_time_s > s.cycle.next_slot_mono:
                    s.cycle = None
                    s.counters.skipped += 1
                    self._schedule_slot(s, now, after=k)
                    continue
                s.token += 1
                self._timers.at(start_at, "retry", s)
                continue
            key = s.driver_key("group_key")
            if key is None:
                self._start_attempt(s)
            else:
                groups.setdefault((type(s.driver), key), []).append(s)
        for (cls, _), members in groups.items():
            if len(members) == 1:
                self._start_attempt(members[0])
            else:
                self._start_group(cls, members)

    def _start_attempt(self, s: SensorState) -> None:
        assert s.driver is not None and s.cycle is not None
        if not self._take_exclusive(s):
            return   # another sensor's attempt holds the chip: started when it ends
        s.token += 1
        cycle = s.cycle
        cycle.deadline_mono = min(self.clock.monotonic() + attempt_budget(s.driver.timing.read_time_s),
                                  cycle.next_slot_mono)
        self._timers.at(cycle.deadline_mono, "deadline", s)
        s.hand_inputs(self._sensor_named)
        self._call(s, START, s.driver.start, collect=s.driver.collect)

    # -- exclusive keys: one attempt at a time per chip ------------------------------------------
    def _take_exclusive(self, s: SensorState) -> bool:
        """Take ``s``'s exclusive key for one attempt; False (and ``s`` queued) while another
        sensor's attempt holds it."""
        key = s.driver_key("exclusive_key")
        if key is None:
            return True
        if not self._exclusive.take(key, s):
            s.waits_for = key
            return False
        s.holds = key
        return True

    def _release_exclusive(self, s: SensorState) -> None:
        """``s``'s attempt is over: free its key and start the first sensor waiting for it that
        is still due (one whose next slot came too close skips this slot). While ``s``'s call is
        still running (an abandoned or removed attempt) the chip is still in use: the key is
        freed when that call returns (`_call_returned`)."""
        if s.busy and s.holds is not None:
            s.release_when_idle = True
            return
        s.release_when_idle = False
        key, s.holds = s.holds, None
        if key is None:
            return
        self._exclusive.release(key, s)
        now = self.clock.monotonic()
        while (w := self._exclusive.next_waiting(key)) is not None:
            if w.removed or w.cycle is None or w.driver is None or w.waits_for != key:
                continue
            w.waits_for = None
            if now + w.driver.timing.read_time_s > w.cycle.next_slot_mono:
                w.counters.skipped += 1   # the chip was busy for the whole of its slot
                self._end_cycle(w)
                continue
            self._start_attempt(w)
            break

    def _start_group(self, cls: type, members: list[SensorState]) -> None:
        now = self.clock.monotonic()
        drivers = []
        for s in members:
            assert s.driver is not None and s.cycle is not None
            s.token += 1
            s.cycle.deadline_mono = min(now + attempt_budget(s.driver.timing.read_time_s),
                                        s.cycle.next_slot_mono)
            self._timers.at(s.cycle.deadline_mono, "deadline", s)
            s.hand_inputs(self._sensor_named)
            s.busy = True
            drivers.append(s.driver)
        log.debug("one %s.start_group for %s", cls.__name__, ", ".join(s.name for s in members))
        start_group: Callable[[Sequence[Driver]], float] = cls.start_group  # type: ignore[attr-defined]
        self._calls.add(DriverCall(members[0], members[0].token, GROUP_START,
                                   functools.partial(start_group, drivers),
                                   members=[(s, s.token) for s in members]))

    def _stamp_now(self) -> tuple[float, float, bool]:
        was_set = self.clock.is_set()
        return self.clock.monotonic(), self.clock.wall(), was_set

    # -- calls to the workers ----------------------------------------------------------------------
    def _call(self, s: SensorState, kind: str, fn: Callable[[], Any], *,
              collect: Callable[[], Any] | None = None) -> None:
        """A start or collect of ``s``, sent with the others of this loop turn (`CallDispatch`).
        ``collect``: a start's collect, run at once in the same job when the start needs no wait."""
        s.busy = True
        self._calls.add(DriverCall(s, s.token, kind, fn, collect=collect))

    def _build(self, s: SensorState) -> None:
        """Build ``s``'s driver in a job of its own (opening a device may take a while: no slot's
        reads wait behind it)."""
        s.busy = True
        self._calls.send_alone(DriverCall(s, s.token, BUILD, s.plan.build))

    def _batch_posted(self, batch: CallBatch) -> None:
        """(A worker.) Every call of ``batch`` returned."""
        self._inbox.put(("batch", batch))

    def _batch_returned(self, batch: CallBatch) -> None:
        self._calls.returned(batch)
        self._take_results(batch)

    def _check_batches(self) -> None:
        """A batch whose running call turned stuck: take the results it has (its calls not begun
        went on as a new batch)."""
        for batch in self._calls.split_stuck(self.clock.monotonic()):
            self._take_results(batch)

    def _take_results(self, batch: CallBatch) -> None:
        """The results ``batch`` has, in the order they came. Collects are timed from the end of
        the batch's last start (not each start's own end): the collects of sensors started
        together fall due together, one wake-up and one job for all of them, never early."""
        calls = batch.take_done()
        starts_ended = max((call.ended for call in calls if call.kind in (START, GROUP_START)), default=0.0)
        for call in calls:
            if call.kind == GROUP_START:
                for member, token in call.members:
                    self._guarded(self._call_returned, member, token, call, starts_ended)
            else:
                self._guarded(self._call_returned, call.owner, call.token, call, starts_ended)

    def _call_returned(self, s: SensorState, token: int, call: DriverCall, starts_ended: float) -> None:
        kind, ok, result, ended = call.kind, call.ok, call.result, call.ended
        s.busy = call.collect_follows   # a start whose collect ran in the same job: still out
        if not s.busy and s.release_when_idle:   # its attempt ended while this call still used the chip
            self._release_exclusive(s)
        if s.removed:     # its call came back after `remove`: close what it holds, free its successor
            if kind == BUILD and ok and s.driver is None:
                s.driver = result
            if not s.busy:
                self._close_removed(s)
            return
        if kind == BUILD:
            self._built(s, ok, result)
            return
        if token != s.token or s.cycle is None:
            if not (call.after is not None and call.after.discarded):  # counted once per attempt
                s.counters.late_discarded += 1
            call.discarded = True
            return
        cycle = s.cycle
        if kind in (START, GROUP_START):
            cycle.started_mono, cycle.started_wall = call.started_mono, call.started_wall
            cycle.clock_was_set = call.clock_was_set
            s.last_start_mono = call.started_mono
            if not ok:
                self._attempt_failed(s, result, ended)
                return
            if call.collect_follows:
                return   # its collect's result follows in this batch
            ready_in = 0.0 if needs_no_wait(result) else float(result)
            self._timers.at(max(ended, starts_ended) + ready_in, "collect", s)
            return
        # collect
        if not ok:
            self._attempt_failed(s, result, ended)
            return
        if isinstance(result, CollectAgain):  # one more step of a multi-step reading (same attempt)
            wait = result.wait_s if math.isfinite(result.wait_s) else 0.0
            self._timers.at(ended + max(0.0, wait), "collect", s)
            return
        assert s.driver is not None
        try:
            sample = check_sample(s.driver, result)
        except SensorError as exc:
            self._attempt_failed(s, exc, ended)
            return
        except Exception as exc:  # a non-mapping result: a driver bug
            self._attempt_failed(s, exc, ended)
            return
        self._emit(s, sample, cycle.started_mono, cycle.started_wall, cycle.clock_was_set, event=False)
        s.health.recovered()
        self._end_cycle(s)

    def _attempt_failed(self, s: SensorState, exc: BaseException, ended: float) -> None:
        assert s.cycle is not None and s.driver is not None
        self._release_exclusive(s)   # the retry spacing frees the chip for the others
        cycle = s.cycle
        if isinstance(exc, SensorError):
            retryable = exc.retryable
        else:
            s.counters.driver_exceptions += 1
            retryable = False
            if s.health.failing != type(exc).__name__:
                log.error("sensor %s: driver raised %s", s.name, type(exc).__name__, exc_info=exc)
        timing = s.driver.timing
        policy = timing.retry
        if retryable and cycle.attempt < policy.attempts:
            retry_at = max(ended + policy.spacing_s, cycle.started_mono + timing.min_interval_s)
            if retry_at + timing.read_time_s <= cycle.next_slot_mono:
                cycle.attempt += 1
                s.counters.retries += 1
                s.token += 1
                self._timers.at(retry_at, "retry", s)
                return
        s.counters.failed += 1
        self._failing(s, type(exc).__name__, describe(exc))
        self._end_cycle(s)

    def _abandon(self, s: SensorState) -> None:
        if s.cycle is None or s.driver is None:
            return
        s.counters.abandoned += 1
        s.counters.failed += 1
        budget = attempt_budget(s.driver.timing.read_time_s)
        self._failing(s, "Hung", f"no answer within {budget:.2f} s: read abandoned")
        s.token += 1  # whatever comes back now is late
        self._end_cycle(s)

    def _end_cycle(self, s: SensorState) -> None:
        assert s.cycle is not None
        self._release_exclusive(s)
        k = s.cycle.slot_k
        s.cycle = None
        self._schedule_slot(s, self.clock.monotonic(), after=k)

    # -- samples ---------------------------------------------------------------------------------
    def _emit(self, s: SensorState, raw: Mapping[str, Value], started_mono: float, started_wall: float,
              clock_was_set: bool, *, event: bool) -> None:
        sample = s.take(raw, started_mono, started_wall, clock_was_set, self._clock_offset_ms,
                        self.clock.boot_id, event=event)
        if sample is not None:
            self._handover.hold(s, sample, self.clock.monotonic())

    def _sensor_named(self, name: str) -> SensorState | None:
        return next((s for s in self._sensors if s.name == name), None)

    def _hand_over_if_slot_done(self) -> None:
        try:
            self._handover.check(self.clock.monotonic(), self._reads_in_progress())
        except Exception:  # (a driver's timing property raised): the samples go now, never stay held
            log.exception("scheduler: internal error (sampling goes on)")
            self._handover.hand_over()

    def _reads_in_progress(self) -> Iterator[tuple[float, float]]:
        """Each cycle in progress as (when its slot began, when its read should end): what the
        held samples may wait for (`SlotHandOver.check`)."""
        for s in self._sensors:
            cycle, driver = s.cycle, s.driver
            if cycle is not None and driver is not None:
                began = max(cycle.opened_mono, cycle.started_mono)
                yield cycle.opened_mono, began + driver.timing.read_time_s

    def _edge_arrived(self, s: SensorState, state: Value, epoch_s: float) -> None:
        """(The driver's thread.) An edge, for the timer thread."""
        self._inbox.put(("edge", s, state, epoch_s, self.clock.monotonic()))

    def _edge(self, s: SensorState, state: Value, epoch_s: float, received_mono: float) -> None:
        if s.driver is None or s.processor is None or s.removed:
            return
        metrics = s.driver.active_metrics()
        if not metrics:
            return
        wall_now = self.clock.wall()
        edge_mono = received_mono - max(0.0, wall_now - epoch_s)
        s.counters.events += 1
        self._emit(s, {metrics[0].key: state}, edge_mono, epoch_s, self.clock.is_set(), event=True)

    # -- drivers ---------------------------------------------------------------------------------
    def _built(self, s: SensorState, ok: bool, result: Any) -> None:
        now = self.clock.monotonic()
        if not ok:
            s.counters.build_failures += 1
            self._failing(s, "Build:" + type(result).__name__,
                          f"cannot set up the sensor: {describe(result)}")
            s.token += 1
            self._timers.at(now + s.health.next_rebuild_s(), "build", s)
            return
        driver: Driver = result
        if not self._running:
            driver.close()
            return
        try:  # the driver's own declarations can still fail: that is a failed build, rebuilt later
            spec = s.install(driver, self._stored_resume.get(s.name, {}))
        except Exception as exc:
            s.counters.driver_exceptions += 1
            with contextlib.suppress(Exception):
                driver.close()
            self._built(s, False, exc)
            return
        self._handover.put(("hook", "driver_ready", s.name, spec))
        s.listen(self._edge_arrived)
        if s.health.failing is not None and s.health.failing.startswith("Build:"):
            s.health.recovered()
        self._schedule_slot(s, now, after=None)

    # -- state changes ---------------------------------------------------------------------------
    def _failing(self, s: SensorState, kind: str, text: str) -> None:
        if s.health.failed(kind, text, self.clock.monotonic(), self.clock.wall()):
            self._handover.put(("hook", "sensor_error", s.name, text))

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._running = False
        for s in self._sensors:
            s.stop_listening()
            if not s.busy:
                s.close_driver(forget=False)
        self._timers.clear()


def _check_plan(plan: SensorPlan) -> None:
    if not (plan.interval_s > 0 and math.isfinite(plan.interval_s)):
        raise ValueError(f"{plan.name}: interval must be a positive number of seconds")
