"""Server-Sent Events from one broadcaster: one thread notices a change (a cheap counter the data
source bumps), builds ONE event, serializes it ONCE, and every connected client's thread sends
those same bytes. A second, third, tenth browser costs one socket and one waiting thread, never
one more snapshot.

    broadcaster = Broadcaster(version=lambda: history.version, build=make_event_bytes)
    broadcaster.start()
    ... Stream(events=broadcaster.subscribe) ...     # in a request handler
    broadcaster.stop()

A client that falls more than `BACKLOG_EVENTS` events behind (it stopped reading) is dropped; the
browser's EventSource reconnects by itself and starts from a full event again. Every event is a
full state (the page can draw from any one of them) plus what was added since the one before.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: how often the change counter is looked at
POLL_S = 0.25
#: a comment line this often keeps proxies and the browser from timing the stream out
KEEPALIVE_S = 15.0
#: events a slow client may be behind before it is dropped (then it reconnects)
BACKLOG_EVENTS = 32
#: ``retry:`` sent to the browser: reconnect this soon after the bridge restarts (ms)
RETRY_MS = 1000


def sse_event(name: str, payload: Any) -> bytes:
    """One SSE event: ``event: NAME`` and one ``data:`` line of compact JSON (JSON never holds a
    raw newline, so one data line is always enough)."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return f"event: {name}\ndata: {data}\n\n".encode()


class Broadcaster:
    """See the module docstring. ``version()``: a number that changes when there is something new
    (cheap: called every `POLL_S`); ``build(first)``: the event's bytes — ``first`` is True for
    the full event a new subscriber gets at once (no "since the last event" part)."""

    def __init__(self, version: Callable[[], int], build: Callable[[bool], bytes], *,
                 poll_s: float = POLL_S) -> None:
        self._version, self._build = version, build
        self._poll_s = poll_s
        self._cond = threading.Condition()
        self._events: deque[tuple[int, bytes]] = deque(maxlen=BACKLOG_EVENTS)
        self._seq = 0
        self._clients = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.built = 0           #: events built (one per change, however many clients)

    @property
    def clients(self) -> int:
        with self._cond:
            return self._clients

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pibridge-web-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        seen = None
        last_sent = time.monotonic()
        while not self._stopping.wait(self._poll_s):
            try:
                version = self._version()
                now = time.monotonic()
                if version != seen and self.clients:
                    self._publish(self._build(False))
                    seen, last_sent = version, now
                elif version != seen:
                    seen = version             # nobody listens: nothing built
                elif now - last_sent >= KEEPALIVE_S:
                    self._publish(b": keepalive\n\n")
                    last_sent = now
            except Exception:      # a failing build must not end the stream for everybody
                log.exception("web: building an event failed")

    def _publish(self, data: bytes) -> None:
        with self._cond:
            self._seq += 1
            self._events.append((self._seq, data))
            self.built += 1
            self._cond.notify_all()

    def subscribe(self) -> Iterator[bytes]:
        """A client's stream: the retry hint and a full event at once, then every event built."""
        with self._cond:
            self._clients += 1
            position = self._seq
        try:
            yield f"retry: {RETRY_MS}\n".encode() + self._build(True)
            while not self._stopping.is_set():
                with self._cond:
                    while self._seq == position and not self._stopping.is_set():
                        self._cond.wait(KEEPALIVE_S)
                    if self._stopping.is_set():
                        return
                    oldest = self._events[0][0] if self._events else self._seq + 1
                    if position + 1 < oldest:       # fell behind: drop it, the browser reconnects
                        return
                    pending = [data for seq, data in self._events if seq > position]
                    position = self._seq
                yield from pending
        finally:
            with self._cond:
                self._clients -= 1
