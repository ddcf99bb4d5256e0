"""A fake UART chip on a real pseudo-terminal pair.

`FakeSerialChip` opens ``os.openpty()``; the driver opens the slave's name (``device``) through
pyserial exactly as it opens ``/dev/serial0`` on a Pi (termios, timeouts, ``in_waiting``), and a
thread serves the master side byte by byte: every received byte goes to `receive` (the chip's
command parser), replies go out through `send` (at the baud rate's pace with ``realtime``, else
at once), and `tick` runs on the chip's own schedule (a sensor that streams frames).

Faults, all opt-in: `inject` (raw bytes now: garbage, a stray start byte), ``silent`` (the chip
answers nothing), ``split_next`` (the next reply in two parts with a pause), `unplug` (the port
vanishes: the master side closes, the slave's node disappears; the driver sees EIO/ENOENT).

`close` stops the thread and closes both sides; the simulator calls it when its driver closes,
so no thread outlives its sensor.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable

from ..serialport import DEFAULT_BAUDRATE, SerialLink, byte_time_s

POLL_S = 0.05          #: the thread's longest wait while idle (ticks and stop are checked after it)
MIN_WAIT_S = 0.001     #: the shortest wait for a tick that is already due (never a busy loop)
READ_CHUNK = 256
SPLIT_PAUSE_S = 0.02   #: pause between the two parts of a split reply (far below the read timeout)


class FakeSerialChip:
    """The chip side of a serial port. Subclasses implement `receive` (and `tick`).

    ``clock``: the chip's time (warm-up, cadence): ``time.monotonic``, a `VirtualClock`, the
    world's clock. ``realtime``: pace replies at ``baudrate`` (8N1), as the wire does.
    """

    name = "chip"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, baudrate: int = DEFAULT_BAUDRATE,
                 realtime: bool = False) -> None:
        self.clock = clock
        self.byte_s = byte_time_s(baudrate)
        self.realtime = realtime
        self.silent = False
        self.split_next = False
        self.received = bytearray()      #: every byte the driver sent (bounded: last 64 KiB)
        self.sent_frames = 0             #: replies/frames written (injected bytes not counted)
        self.received_total = 0          #: bytes received and handled so far
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)          # until pyserial configures it: no echo, no line editing
        self.device = os.ttyname(self._slave)
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._gone = False
        self._unplugged = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"pibridge-fake-{self.name}", daemon=True)
        self._thread.start()

    # -- what a chip implements ------------------------------------------------------------------
    def receive(self, byte: int) -> None:
        """One byte from the driver."""

    def poll(self) -> None:
        """Called on every turn of the thread (at least every `POLL_S`): follow inputs that are
        not bytes (a SET pin)."""

    def tick(self, now: float) -> float | None:
        """The chip's own schedule: act at ``now``; returns the clock time it wants to run
        again (None: only on input)."""
        return None

    # -- the wire ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """A reply or frame onto the wire (nothing while ``silent``; in two parts if
        ``split_next``)."""
        if self.silent or self._gone:
            return
        parts = [data]
        if self.split_next and len(data) > 1:
            self.split_next = False
            parts = [data[:len(data) // 2], data[len(data) // 2:]]
        for index, part in enumerate(parts):
            if index:
                self._stop.wait(SPLIT_PAUSE_S)
            self._write(part)
        with self._sent:
            self.sent_frames += 1
            self._sent.notify_all()

    def inject(self, data: bytes) -> None:
        """Raw bytes onto the wire now (garbage, partial frames): not counted as a frame."""
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self._gone or self._master < 0:
            return
        try:
            if self.realtime:
                for byte in data:
                    os.write(self._master, bytes([byte]))
                    self._stop.wait(self.byte_s)
            else:
                os.write(self._master, data)
        except OSError:  # the port is closing
            pass

    def wait_sent(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until `sent_frames` reaches ``count`` (tests wait on this, never on sleeps)."""
        return self.wait_until(lambda: self.sent_frames >= count, timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``condition()`` holds; checked after every frame sent and every chunk of
        bytes received (``lambda: len(fake.commands) >= 3``)."""
        with self._sent:
            return self._sent.wait_for(condition, timeout)

    def poke(self) -> None:
        """Wake the thread to run `tick` now (after a virtual clock moved)."""
        if not self._closed:
            os.write(self._wake_w, b"x")

    # -- the thread ------------------------------------------------------------------------------
    def _serve(self) -> None:
        next_tick: float | None = self.tick(self.clock())
        while not self._stop.is_set():
            if self._gone:
                self._close_pty()
                self._stop.wait(POLL_S)
                continue
            wait = POLL_S if next_tick is None else min(POLL_S, max(MIN_WAIT_S, next_tick - self.clock()))
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], wait)
            except (OSError, ValueError):
                return
            if self._stop.is_set():
                return
            if self._wake_r in ready:
                os.read(self._wake_r, READ_CHUNK)
            if self._master in ready and not self._gone:
                try:
                    data = os.read(self._master, READ_CHUNK)
                except OSError:  # no slave side open right now (EIO): the driver closed the port
                    data = b""
                    self._stop.wait(POLL_S)
                for byte in data:
                    self.received.append(byte)
                    self.receive(byte)
                if len(self.received) > 65536:
                    del self.received[:-65536]
                self.received_total += len(data)
                with self._sent:
                    self._sent.notify_all()
            self.poll()
            now = self.clock()
            if (next_tick is not None and now >= next_tick) or self._wake_r in ready:
                next_tick = self.tick(now)

    # -- the end ---------------------------------------------------------------------------------
    def _close_pty(self) -> None:
        with self._lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = -1
        self._unplugged.set()

    def unplug(self) -> None:
        """The port vanishes (a USB adapter pulled): the master side closes, so the driver's
        reads and writes fail with EIO and, once it closes, the device node is gone. Returns once
        the pty is closed."""
        self._gone = True
        if self._thread.is_alive():
            self.poke()
            self._unplugged.wait(5.0)
        else:
            self._close_pty()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread and close the pty (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        self._gone = True
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


def input_waiter(link: SerialLink, at_least_s: float) -> Callable[[float], None]:
    """A ``sleep`` for a driver's non-blocking reads in tests, as the scheduler waits: the
    ``seconds`` the driver asked for (real time: the fake answers in real time), and beyond them,
    up to ``at_least_s`` in all, until bytes are readable at ``link``'s port (an event: a pty
    hands bytes over asynchronously, a loaded machine may run the fake late). Returns at once
    when the port is closed."""
    def wait(seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        port = link._serial
        if port is not None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                if port.in_waiting == 0:
                    select.select([port.fileno()], [], [], max(seconds, at_least_s))
        time.sleep(max(0.0, deadline - time.monotonic()))
    return wait
