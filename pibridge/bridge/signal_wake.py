"""The main loop's sleep, woken at once by a signal whichever thread the kernel delivered it to.

A signal sent to the process (``kill``, ``systemctl stop``, Ctrl-C) goes to any one of its threads
that does not block it. CPython's C handler only notes it; the Python handler (``stop.set()``,
the reload flag) runs in the main thread, and only once that thread runs bytecode again. A main
thread asleep in ``Event.wait(10)`` while the kernel chose, say, the queue's thread, noticed a SIGTERM
only when its wait ran out: 10 s (seen under load, in about 1 run of 30)::

    kernel ──SIGTERM──▶ any thread ──C handler──▶ byte on the wake-up pipe (signal.set_wakeup_fd)
                                                         │
    main thread: select([pipe], timeout) ◀───────────────┘  returns at once; the Python handler
                                                            runs before `stop` is read

`SignalWake` installs the pipe for as long as the loop runs (main thread only: ``set_wakeup_fd``
is refused elsewhere) and puts the previous one back.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from types import TracebackType

#: Bytes drained from the pipe per wake-up (one per signal received).
DRAIN_BYTES = 512


class SignalWake:
    """``with SignalWake(stop) as wake: while not wake.wait(t): ...`` — `wait` is
    ``stop.wait(t)`` that a signal ends at once (``stop`` set from another thread still waits
    out ``t``: in the bridge only signal handlers set it while this runs)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._read = self._write = -1
        self._previous = -1

    def __enter__(self) -> SignalWake:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)

    def wait(self, timeout: float) -> bool:
        """True once ``stop`` is set; returns after ``timeout`` seconds or at the first signal."""
        if self.stop.is_set():
            return True
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, DRAIN_BYTES)
        return self.stop.is_set()  # a Python call: pending signal handlers run before it reads
