"""Outstanding requests and the per-operation-and-object FIFO rule (agent-api.md §1).

The agent has no correlation ids: it answers each operation in order on fixed topics. So every
request waits in the FIFO of its key ``(op, sensor id, metric id)``; the success and the error
topic of that key pop the same FIFO. A request that times out keeps its place until its late
answer arrives, which is then discarded. Outstanding requests die with their connection.

A `DeadlineWatcher` thread fails requests whose deadline passed with `RequestTimeout`.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from pibridge.protocol import Op

log = logging.getLogger(__name__)

#: Settled entries the deadline heap may hold before it is worth compacting.
COMPACT_MIN_SETTLED = 1024

FifoKey = tuple[Op, str, str]
"""(operation, sensor id or "", metric id or "")."""


class RequestState(enum.Enum):
    WAITING = "waiting"
    ANSWERED = "answered"
    TIMED_OUT = "timed out"  # still in its FIFO until its late answer comes
    FAILED = "failed"  # connection gone


@dataclass(eq=False)
class PendingRequest:
    """One request waiting for its answer. ``check`` validates a success reply (e.g. ping echo)."""

    key: FifoKey
    future: Future[Any]
    deadline: float  # time.monotonic() seconds
    timeout_s: float
    description: str
    check: Callable[[Any], None] | None = None
    state: RequestState = RequestState.WAITING
    seq: int = field(default=0)


def settle(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless the caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        log.debug("answer for a cancelled request dropped")


class PendingTable:
    """All outstanding requests of one connection, one FIFO per key. Thread-safe."""

    def __init__(self) -> None:
        self._fifos: dict[FifoKey, deque[PendingRequest]] = {}
        self._deadlines: list[tuple[float, int, PendingRequest]] = []
        self._settled_in_heap = 0  # deadline entries of requests no longer waiting
        self._seq = itertools.count()
        self.lock = threading.Lock()
        self.deadline_added = threading.Condition(self.lock)

    def add(self, request: PendingRequest) -> None:
        """Queue ``request`` at the end of its FIFO. Call with `lock` held; the caller publishes
        right after, serializing add + publish under a lock of its own, so the FIFO order is the
        order on the wire (and answers can be popped meanwhile)."""
        request.seq = next(self._seq)
        fifo = self._fifos.get(request.key)
        if fifo is None:
            fifo = self._fifos[request.key] = deque()
        fifo.append(request)
        self._compact_deadlines()
        heapq.heappush(self._deadlines, (request.deadline, request.seq, request))
        if self._deadlines[0][2] is request:
            self.deadline_added.notify()

    def discard(self, request: PendingRequest) -> None:
        """Take back a request whose publish failed. Call with `lock` held."""
        fifo = self._fifos.get(request.key)
        if fifo is not None:
            with contextlib.suppress(ValueError):
                fifo.remove(request)
        request.state = RequestState.FAILED
        self._settled_in_heap += 1

    def _compact_deadlines(self) -> None:
        """Drop the deadline entries of settled requests once they are most of the heap.

        Answered requests stay in the heap until their deadline (removing from a heap is O(n));
        at thousands of pushes per second and a 10 s timeout that would keep tens of thousands
        of requests, their futures and replies alive, and the garbage collector would walk them
        all. Rebuilding when over half the heap is settled keeps it within twice the requests
        really waiting, at amortised O(1) per request. Call with `lock` held."""
        heap = self._deadlines
        if self._settled_in_heap < COMPACT_MIN_SETTLED or 2 * self._settled_in_heap < len(heap):
            return
        self._deadlines = [entry for entry in heap if entry[2].state is RequestState.WAITING]
        heapq.heapify(self._deadlines)
        self._settled_in_heap = 0

    def pop(self, key: FifoKey) -> PendingRequest | None:
        """The oldest request of ``key`` (answered now), or None when nothing is outstanding.

        A returned request in state TIMED_OUT is a late answer's owner: the caller discards it.
        """
        with self.lock:
            fifo = self._fifos.get(key)
            if not fifo:
                return None
            request = fifo.popleft()
            if not fifo:
                del self._fifos[key]
            if request.state is RequestState.WAITING:
                request.state = RequestState.ANSWERED
                self._settled_in_heap += 1
            return request

    def outstanding(self) -> int:
        with self.lock:
            return sum(len(fifo) for fifo in self._fifos.values())

    def expire(self, now: float) -> tuple[list[PendingRequest], float | None]:
        """Mark waiting requests past their deadline as timed out (they keep their FIFO place).

        Returns them and the next deadline (None when nothing waits). Call with `lock` held.
        """
        expired: list[PendingRequest] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, request = heapq.heappop(self._deadlines)
            if request.state is RequestState.WAITING:
                request.state = RequestState.TIMED_OUT
                expired.append(request)
            else:
                self._settled_in_heap -= 1
        return expired, (self._deadlines[0][0] if self._deadlines else None)

    def take_all(self) -> list[PendingRequest]:
        """Empty every FIFO (connection gone); returns the requests still waiting for an answer."""
        with self.lock:
            waiting = [r for fifo in self._fifos.values() for r in fifo if r.state is RequestState.WAITING]
            for request in waiting:
                request.state = RequestState.FAILED
            self._fifos.clear()
            self._deadlines.clear()
            self._settled_in_heap = 0
            return waiting


class DeadlineWatcher:
    """A daemon thread failing requests of a `PendingTable` with ``make_timeout(request)`` when
    their deadline passes."""

    def __init__(self, table: PendingTable, make_timeout: Callable[[PendingRequest], BaseException]) -> None:
        self._table = table
        self._make_timeout = make_timeout
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agent-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._table.lock:
            self._stopping = True
            self._table.deadline_added.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        table = self._table
        while True:
            with table.lock:
                if self._stopping:
                    return
                expired, next_deadline = table.expire(time.monotonic())
                if not expired:
                    wait = None if next_deadline is None else max(0.0, next_deadline - time.monotonic())
                    table.deadline_added.wait(wait)
                    continue
            for request in expired:
                try:
                    settle(request.future, error=self._make_timeout(request))
                except Exception:  # a failing done-callback must not stop the watcher
                    log.exception("timeout handling failed for %s", request.description)
