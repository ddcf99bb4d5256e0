"""What delivery sends next: samples to send again first (lowest id first), then the queue's rows
after a cursor, in id order (oldest first).

    again (a heap by id) ─────────────────────────────────┐
    ready (rows read, not yet sent) ◀── disk: fetch(cursor)├──▶ next()
                                    ◀── memory: batches the queue committed after the disk ran dry

Once a fetch finds nothing more on disk, every row the queue commits later is handed over in
memory (`on_committed`, on the queue's thread, in commit order and before the queue answers any
later fetch), so a bridge that keeps up reads each row from disk never. A batch of None, or too
many batches waiting (`HANDED_MAX_BATCHES`: delivery fell behind), means "read the disk again";
so does a `rewind` (rows stamped late have lower ids than the cursor).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pibridge.bridge.queue import QueuedSample, SampleQueue

#: Rows fetched from the queue per read.
FETCH_BATCH = 512
#: Batches handed over in memory that may wait for the delivery thread; beyond, it reads the disk.
HANDED_MAX_BATCHES = 64


@dataclass(order=True)
class _Again:
    id: int
    sample: QueuedSample = field(compare=False)


class Backlog:
    """The order samples go to the agent in (delivery thread, but `on_committed`)."""

    def __init__(self, queue: SampleQueue) -> None:
        self._queue = queue
        self._again: list[_Again] = []
        self._ready: deque[QueuedSample] = deque()
        self._cursor = 0
        #: batches the queue committed, handed over in memory (None: read the disk); used once the
        #: disk has nothing more after the cursor
        self._handed: deque[list[QueuedSample] | None] = deque()
        self._from_memory = False

    def on_committed(self, samples: list[QueuedSample] | None) -> None:
        """(The queue's thread.) ``samples`` were committed; None: read them from disk."""
        if len(self._handed) >= HANDED_MAX_BATCHES:   # fallen behind: the disk has them
            self._handed.clear()
            samples = None
        self._handed.append(samples)

    def again(self, sample: QueuedSample) -> None:
        """Send ``sample`` again, before any row not sent yet."""
        heapq.heappush(self._again, _Again(sample.id, sample))

    @property
    def again_count(self) -> int:
        """How many samples wait to be sent again."""
        return len(self._again)

    def again_ids(self) -> set[int]:
        return {entry.id for entry in self._again}

    def rewind(self) -> None:
        """Read the queue from its start again."""
        self._cursor = 0
        self._ready.clear()
        self._from_memory = False

    def next(self, taken: Callable[[], set[int]]) -> QueuedSample | None:
        """The next sample to send, None when there is none. ``taken``: ids of rows delivery holds
        already (in flight, acknowledged or buried, not yet told to the queue), skipped when
        the disk is read."""
        if self._again:
            return heapq.heappop(self._again).sample
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._from_memory:
                if not self._handed:
                    return None
                batch = self._handed.popleft()
                if batch is None:
                    self._from_memory = False
                    continue
                self._ready.extend(r for r in batch if r.id > self._cursor)  # up to it: read already
                if batch:
                    self._cursor = max(self._cursor, batch[-1].id)
                continue
            rows = self._queue.fetch(self._cursor, FETCH_BATCH)
            if not rows:
                self._from_memory = True   # caught up: what the queue commits from now on is handed over
                return None
            self._cursor = rows[-1].id
            skip = taken() | self.again_ids()
            self._ready.extend(r for r in rows if r.id not in skip)
