"""Blocking driver calls, off the scheduler's timer thread: the worker pool and one slot's calls
as one job.

    timer thread ── CallBatch [start A, start B, group start C+D, collect E] ──▶ WorkerPool
                                                                                    │ one thread
          ▲                                 runs the starts first (each stamped), then the
          │                                 collects, then the collects of starts that need no
          └──────── ("batch", batch) ◀───── wait ("inline": no timer, no second job); one
                                            message to the timer thread at the end

A batch is *one* pool job however many sensors are due together: one thread wake-up and one
message instead of two of each per sample. A hung call must not hold the others back: while a
call runs longer than the pool's ``stuck_s``, `CallBatch.split_if_stuck` (the timer thread,
woken for it at `CallBatch.check_at`) hands the finished calls' results over at once and moves
the calls not begun yet into a new batch, which the pool runs on another thread (the pool adds one
while a thread is stuck).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the scheduler's logger: a reader of the log sees these lines as the scheduler's
log = logging.getLogger("pibridge.bridge.scheduler")

CORE_WORKERS = 2
IDLE_WORKER_S = 30.0
#: A worker inside one driver call for longer than this is "stuck": another thread takes its place.
STUCK_CALL_S = 0.1


def call_driver(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, exception)``: every driver failure, typed or a bug (even
    SystemExit), is a result."""
    try:
        return True, fn()
    except BaseException as exc:
        return False, exc


# -- worker pool -------------------------------------------------------------------------------
class WorkerPool:
    """Threads for blocking driver calls. It keeps ``core`` *healthy* threads: a thread inside
    one call for longer than ``stuck_s`` (a hung or very slow driver) no longer counts, and a new
    thread takes its place while jobs wait. So the pool is ``core`` + the calls stuck right now,
    never a thread per sensor; threads above ``core`` leave after ``idle_s`` without work."""

    def __init__(self, core: int = CORE_WORKERS, idle_s: float = IDLE_WORKER_S,
                 stuck_s: float = STUCK_CALL_S) -> None:
        self.core, self.idle_s, self.stuck_s = core, idle_s, stuck_s
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0
        self._busy_since: dict[int, float] = {}   # thread number -> monotonic start of its call
        self._closed = False
        self._ids = itertools.count(1)

    @property
    def size(self) -> int:
        return self._threads

    @property
    def waiting(self) -> int:
        """Jobs no thread has taken yet."""
        return self._pending

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending += 1
            self._grow_locked(time.monotonic())
        self._jobs.put(job)

    def check_in(self) -> float | None:
        """Seconds until a job waiting behind busy threads may need a new thread (the first busy
        call turns "stuck"), 0 if one is due now; None when no job waits: the timer thread sleeps
        until then instead of polling."""
        with self._lock:
            if self._closed or self._pending <= self._idle:
                return None
            now = time.monotonic()
            turning = [since + self.stuck_s - now for since in self._busy_since.values()
                       if now - since <= self.stuck_s]
            return max(0.0, min(turning)) if turning else 0.0

    def grow_if_starved(self) -> None:
        """Add threads while jobs wait and fewer than ``core`` threads are healthy (the
        scheduler calls this on every wake while jobs wait)."""
        with self._lock:
            if not self._closed:
                self._grow_locked(time.monotonic())

    def _grow_locked(self, now: float) -> None:
        stuck = sum(1 for since in self._busy_since.values() if now - since > self.stuck_s)
        while self._pending > self._idle and self._threads - stuck < self.core:
            self._threads += 1
            number = next(self._ids)
            threading.Thread(target=self._work, args=(number,), name=f"pibridge-read-{number}",
                             daemon=True).start()
            self._idle += 1  # counted idle from now: it takes a job as soon as it runs

    def _work(self, number: int) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._threads > self.core:
                        self._threads -= 1
                        self._idle -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                if job is None:
                    self._threads -= 1
                    return
                self._pending -= 1
                self._busy_since[number] = time.monotonic()
            job()  # jobs catch every exception of the driver call they make
            with self._lock:
                del self._busy_since[number]
                now = time.monotonic()
                stuck = sum(1 for since in self._busy_since.values() if now - since > self.stuck_s)
                if self._pending == 0 and self._threads - stuck > self.core:
                    self._threads -= 1  # the stuck call it stood in for is over: leave
                    return
                self._idle += 1

    def close(self) -> None:
        """No new jobs; idle threads leave (threads inside a hung call are daemons)."""
        with self._lock:
            self._closed = True
            count = self._threads
        for _ in range(count):
            self._jobs.put(None)


# -- one slot's calls as one job -----------------------------------------------------------------
#: the order calls of one batch run in: starts first (their moment is the sample's timestamp),
#: then collects
START, GROUP_START, COLLECT, BUILD = "start", "group", "collect", "build"
_RANK = {START: 0, GROUP_START: 0, COLLECT: 1, BUILD: 2}


@dataclass(eq=False)
class DriverCall:
    """One blocking driver call of a sensor's attempt and what came of it (filled by the worker).

    ``owner`` is the scheduler's sensor (``token``: its attempt token when the call was made);
    ``fn`` the call; ``collect``: the driver's ``collect`` for a start, run in the same job at
    once when the start needs no wait (its result comes back as a call of its own, ``inline``,
    after the start's, which then has ``collect_follows``). A group start (``members``: the
    other sensors of it with their tokens) has no collect of its own."""

    owner: Any
    token: int
    kind: str
    fn: Callable[[], Any]
    collect: Callable[[], Any] | None = None
    members: Sequence[tuple[Any, int]] = ()
    inline: bool = False
    ok: bool = False
    result: Any = None
    started_mono: float = 0.0
    started_wall: float = 0.0
    clock_was_set: bool = False
    ended: float = 0.0
    collect_follows: bool = False
    #: (an inline collect) the start it follows; ``discarded``: the timer thread dropped this
    #: call's result as late (its inline collect, late too, is not counted again)
    after: DriverCall | None = None
    discarded: bool = False

    def run(self, stamp: Callable[[], tuple[float, float, bool]], monotonic: Callable[[], float]) -> None:
        if self.kind != COLLECT:
            self.started_mono, self.started_wall, self.clock_was_set = stamp()
        self.ok, self.result = call_driver(self.fn)
        self.ended = monotonic()


def needs_no_wait(result: Any) -> bool:
    """A start's result that says the reading is ready at once (0, negative, None, not finite)."""
    return not (isinstance(result, int | float) and math.isfinite(result) and result > 0)


@dataclass(eq=False)
class CallBatch:
    """Calls the timer thread made in one turn, run by one pool job in `_RANK` order; see the
    module docstring. ``done`` holds finished calls until the timer thread `take_done`s them.

    Watching for a stuck call: ``next_look`` is when the timer thread should look at the batch
    next (`check_at`): ``stuck_s`` after it was sent, after its running call began, or after the
    last look found it not started yet; never again for a call already split off from (until the
    next call begins). A batch that finishes in time is never looked at: its message comes first.
    Calls that are each just under ``stuck_s`` must not add up either (their sensors' deadlines
    run from the turn): once the batch itself has run ``stuck_s``, the calls not begun are split
    off too."""

    calls: list[DriverCall]
    number: int = 0
    done: list[DriverCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_index: int = 0
    running_since: float | None = None   #: monotonic start of the call running now
    began: float | None = None           #: monotonic start of the batch's first call
    next_look: float | None = None
    stuck_s: float = STUCK_CALL_S
    finished: bool = False

    def __post_init__(self) -> None:
        self.calls.sort(key=lambda call: _RANK[call.kind])

    def sent(self, now: float, stuck_s: float) -> None:
        """(The timer thread, as it hands the batch to the pool.)"""
        self.stuck_s = stuck_s
        self.next_look = now + stuck_s

    def run(self, stamp: Callable[[], tuple[float, float, bool]], monotonic: Callable[[], float],
            post: Callable[[CallBatch], None]) -> None:
        """The pool job: every call in turn, then ``post(self)`` once."""
        while True:
            with self.lock:
                if self.next_index >= len(self.calls):
                    self.finished, self.running_since, self.next_look = True, None, None
                    break
                call = self.calls[self.next_index]
                self.next_index += 1
                self.running_since = monotonic()
                if self.began is None:
                    self.began = self.running_since
                self.next_look = self._look_after(self.running_since)
            call.run(stamp, monotonic)
            follow = None
            if call.kind == START and call.collect is not None and call.ok and needs_no_wait(call.result):
                call.collect_follows = True
                follow = DriverCall(call.owner, call.token, COLLECT, call.collect, inline=True, after=call)
            with self.lock:
                self.done.append(call)
                self.running_since = None
                if follow is not None:
                    self.calls.append(follow)
        post(self)

    def take_done(self) -> list[DriverCall]:
        with self.lock:
            done, self.done = self.done, []
            return done

    def check_at(self) -> float | None:
        """When the timer thread should look at this batch (monotonic), None: not before its
        message or its next call."""
        with self.lock:
            return self.next_look

    def _look_after(self, running_since: float) -> float:
        """(Lock held.) When a call that began at ``running_since`` is looked at: when it would be
        stuck, or, while calls wait behind it, when the batch has run ``stuck_s``."""
        look = running_since + self.stuck_s
        if self.began is not None and self.next_index < len(self.calls):
            look = min(look, self.began + self.stuck_s)
        return look

    def split_if_stuck(self, now: float) -> list[DriverCall] | None:
        """If the running call is stuck, or the batch ran ``stuck_s`` with calls still waiting: the
        calls not begun yet, taken out of this batch (for a new one; maybe none); else None (and
        the next look set)."""
        with self.lock:
            if self.next_look is None or now < self.next_look:
                return None
            if self.running_since is None:          # not begun yet, or between two calls
                self.next_look = now + self.stuck_s
                return None
            overrun = (self.began is not None and now - self.began >= self.stuck_s
                       and self.next_index < len(self.calls))
            if now - self.running_since < self.stuck_s and not overrun:
                self.next_look = self._look_after(self.running_since)
                return None
            self.next_look = None                   # until its next call begins
            rest = self.calls[self.next_index:]
            del self.calls[self.next_index:]
            return rest


# -- the timer thread's side -------------------------------------------------------------------
#: The timer loop sleeps at least this long (seconds) while it waits for a busy call to turn stuck.
MIN_SLEEP_S = 0.001


class CallDispatch:
    """What the timer thread sends the pool (timer thread only). The starts and collects one loop
    turn asks for (`add`) go as one `CallBatch` when the turn ends (`flush`); a build goes alone
    (`send_alone`: opening a device may take a while, no slot's reads wait behind it). Every
    batch out is kept until its message comes back (`returned`); one whose running call turned
    stuck is split (`split_stuck`). ``post``: how a worker hands a finished batch back."""

    def __init__(self, pool: WorkerPool, stamp: Callable[[], tuple[float, float, bool]],
                 monotonic: Callable[[], float], post: Callable[[CallBatch], None]) -> None:
        self.pool = pool
        self._stamp, self._monotonic, self._post = stamp, monotonic, post
        self._turn: list[DriverCall] = []
        self._out: dict[int, CallBatch] = {}   # by number
        self._numbers = itertools.count(1)

    def add(self, call: DriverCall) -> None:
        """``call`` goes with the others of this turn."""
        self._turn.append(call)

    def send_alone(self, call: DriverCall) -> None:
        self._send(CallBatch([call]))

    def flush(self) -> None:
        """This turn's calls to the pool as one job."""
        if self._turn:
            calls, self._turn = self._turn, []
            self._send(CallBatch(calls))

    def unsent(self) -> list[DriverCall]:
        """The calls asked for and never sent (the loop stopped first), taken back."""
        calls, self._turn = self._turn, []
        return calls

    def returned(self, batch: CallBatch) -> None:
        """``batch``'s message came back: every call of it returned."""
        self._out.pop(batch.number, None)

    def split_stuck(self, now: float) -> list[CallBatch]:
        """The batches whose running call turned stuck, their finished calls' results to be taken
        now; the calls each had not begun go on as a new batch (another thread runs them)."""
        split = []
        for batch in list(self._out.values()):
            rest = batch.split_if_stuck(now)
            if rest is None:
                continue
            split.append(batch)
            if rest:
                log.debug("a call hangs: %d more of its batch go on another thread", len(rest))
                self._send(CallBatch(rest))
        return split

    def wake_at(self, now: float) -> float:
        """When the timer loop must look again for the pool's sake (monotonic; infinity: never): a
        job waiting behind a call about to turn stuck (the pool grows at once if one is stuck
        already), a batch's running call about to turn stuck."""
        wake = math.inf
        pool_in = self.pool.check_in()
        if pool_in is not None:
            self.pool.grow_if_starved()
            pool_in = self.pool.check_in()
            if pool_in is not None:
                wake = now + max(pool_in, MIN_SLEEP_S)
        for batch in self._out.values():
            at = batch.check_at()
            if at is not None:
                wake = min(wake, at)
        return wake

    def _send(self, batch: CallBatch) -> None:
        batch.number = next(self._numbers)
        batch.sent(self._monotonic(), self.pool.stuck_s)
        self._out[batch.number] = batch
        self.pool.submit(functools.partial(batch.run, self._stamp, self._monotonic, self._post))
