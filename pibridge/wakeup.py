"""`WakePair`: ends another thread's ``select`` from any thread.

The waiting thread selects on `WakePair.reader` beside its other sockets; any thread calls
`WakePair.wake`. One byte per wait: `wake` sends only while none is on its way, and the waiter's
`drain` (before it looks for work) reads it and re-arms, so a burst of wakes costs one system call.
Used by the delivery thread's inbox, a non-threaded MQTT session's I/O holder and the emulator
core's command queue.
"""

from __future__ import annotations

import contextlib
import socket

#: Bytes read per `WakePair.drain` (more than ever wait: one per re-arm).
DRAIN_BYTES = 4096


class WakePair:
    """A non-blocking socket pair: `reader` for the waiter's select, `wake` for everyone else."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self.woken = False  # a byte was sent and not drained yet

    def wake(self) -> None:
        if self.woken:
            return  # a byte is on its way: it ends the wait for every wake before the drain
        self.woken = True
        with contextlib.suppress(OSError):  # full (a byte is waiting anyway) or closed
            self._writer.send(b"\0")

    def drain(self) -> None:
        """(The waiter.) Read the bytes; a wake after this sends one again."""
        self.woken = False  # before reading: a wake racing this read is not lost
        with contextlib.suppress(OSError):
            self.reader.recv(DRAIN_BYTES)

    def close(self) -> None:
        self.reader.close()
        self._writer.close()
