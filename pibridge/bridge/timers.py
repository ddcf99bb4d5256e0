"""The scheduler's timers: one heap of ``(due, action, owner, token)``, superseded ones skipped.

A timer belongs to an owner (a sensor) and carries the owner's ``token`` from when it was set.
The owner bumps its token on every new attempt or slot, which makes all its older timers stale
at once: nothing is searched or removed, a stale timer is dropped when it reaches the top (so
it never wakes the loop). A timer with no owner (the clock poll) is never stale.

    entry  │ due (monotonic s) │ seq (set order: ties) │ action │ owner │ owner's token when set
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from typing import Generic, NamedTuple, Protocol, TypeVar


class Tokened(Protocol):
    """An owner of timers: its ``token`` changes whenever its pending timers are superseded."""

    token: int


Owner = TypeVar("Owner", bound=Tokened)


class Timer(NamedTuple, Generic[Owner]):
    due: float
    seq: int
    action: str
    owner: Owner | None
    token: int

    @property
    def stale(self) -> bool:
        return self.owner is not None and self.token != self.owner.token


class TimerHeap(Generic[Owner]):
    """Timers by due time (monotonic seconds); only live ones are ever handed out."""

    def __init__(self) -> None:
        self._heap: list[Timer[Owner]] = []
        self._seq = itertools.count()

    def at(self, due: float, action: str, owner: Owner | None) -> None:
        """Set ``action`` for ``owner`` at ``due``, valid until the owner's token changes."""
        token = owner.token if owner is not None else 0
        heapq.heappush(self._heap, Timer(due, next(self._seq), action, owner, token))

    def peek(self) -> Timer[Owner] | None:
        """The earliest live timer (stale ones above it are dropped), still set."""
        heap = self._heap
        while heap and heap[0].stale:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop_due(self, now: float) -> Timer[Owner] | None:
        """The earliest live timer if it is due at ``now``, taken off the heap; else None."""
        top = self.peek()
        if top is None or top.due > now:
            return None
        return heapq.heappop(self._heap)

    def pop(self) -> Timer[Owner]:
        """The earliest live timer (the one `peek` shows), taken off the heap."""
        if self.peek() is None:
            raise IndexError("no live timer")
        return heapq.heappop(self._heap)

    def next_due(self) -> float:
        """When the earliest live timer is due; infinity when none is set."""
        top = self.peek()
        return top.due if top is not None else math.inf

    def clear(self) -> None:
        self._heap.clear()

    def __iter__(self) -> Iterator[Timer[Owner]]:
        """The live timers, in no particular order (for tests and diagnostics)."""
        return (timer for timer in self._heap if not timer.stale)
