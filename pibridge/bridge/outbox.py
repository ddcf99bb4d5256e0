"""The scheduler's last stage: its own thread hands taken samples to the sink and calls the
hooks, in the order the timer thread sent them, so neither a slow commit (an SD card) nor a
hook ever delays a slot.

    timer thread ──("samples", [(sensor, sample), …]) ─┐
                 ──("hook", name, *args) ──────────────┼──▶ Outbox thread ──▶ sink.put_many (one commit)
                 ──("barrier", event) / ("call", fn) ──┘                  ──▶ hooks, barriers, calls

Sample batches waiting right behind each other join: one ``put_many`` (one commit) for all of
them. A batch's samples count as ``taken`` (each sensor's counters) once the sink returned; a
sink that raises loses that batch (counted per sensor in ``store_failures``, logged once per
run of failures).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from pibridge.bridge.model import TakenSample

log = logging.getLogger(__name__)

#: the outbox found nothing more waiting behind a batch of samples
_EMPTY: tuple[Any, ...] = ("empty",)


class SampleSink(Protocol):
    """Where taken samples go: `pibridge.bridge.queue.SampleQueue` (``put`` returns once the
    sample is committed)."""

    def put(self, sample: TakenSample) -> None: ...

    # A sink may also have ``put_many(samples)``: several samples in one commit (the queue's
    # `put_many`); the outbox uses it for a batch when it is there.


class Counted(Protocol):
    """What a batch's first element is: a sensor with ``counters`` (``taken``, ``store_failures``)."""

    counters: Any


class Outbox:
    """See the module docstring. ``hooks``: an object whose attributes named by ``("hook", name,
    …)`` items are called (None: skipped)."""

    def __init__(self, sink: SampleSink, hooks: Any) -> None:
        self.sink, self.hooks = sink, hooks
        self._items: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._store_failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._drain, name="pibridge-outbox", daemon=True)
        self._thread.start()

    def put(self, item: tuple[Any, ...]) -> None:
        self._items.put(item)

    def close(self, timeout: float) -> int:
        """Hand over what waits, then end; returns how many items were still not handed over when
        ``timeout`` ran out (a sink stuck on a slow disk), 0 normally."""
        self._items.put(None)
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
            if self._thread.is_alive():
                # the item being handed over now, and what waits behind it (less the stop marker)
                return max(1, self._items.qsize())
        return 0

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _drain(self) -> None:
        item: tuple[Any, ...] | None = None
        while True:
            if item is None:
                item = self._items.get()
            if item is None:
                return
            if item[0] == "samples":
                batch = list(item[1])
                # whatever else waits right behind joins this batch: one commit for all of them
                following: tuple[Any, ...] | None = _EMPTY
                while True:
                    try:
                        following = self._items.get_nowait()
                    except queue.Empty:
                        following = _EMPTY
                        break
                    if following is None or following[0] != "samples":
                        break
                    batch.extend(following[1])
                self._store(batch)
                if following is None:
                    return
                item = None if following is _EMPTY else following
                continue
            if item[0] == "barrier":
                item[1].set()
            elif item[0] == "call":
                try:
                    item[1]()
                except Exception:
                    log.exception("scheduler: a call after the samples taken failed")
            else:
                hook = getattr(self.hooks, item[1])
                if hook is not None:
                    try:
                        hook(*item[2:])
                    except Exception:
                        log.exception("scheduler: %s hook failed", item[1])
            item = None

    def _store(self, batch: Sequence[tuple[Counted, TakenSample]]) -> None:
        """Hand ``batch`` to the sink as one ``put_many`` (one commit)."""
        try:
            put_many = getattr(self.sink, "put_many", None)
            if len(batch) > 1 and put_many is not None:
                put_many([sample for _, sample in batch])
            else:
                for _, sample in batch:
                    self.sink.put(sample)
        except Exception as exc:
            for sensor, _ in batch:
                sensor.counters.store_failures += 1
            if not self._store_failing:
                self._store_failing = True
                text = str(exc).strip()
                log.error("cannot store samples: %s (samples are being lost)",
                          f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
            return
        if self._store_failing:
            self._store_failing = False
            log.info("storing samples again")
        for sensor, sample in batch:
            if sample.values:      # (a sample without values only carries a running total to keep)
                sensor.counters.taken += 1
