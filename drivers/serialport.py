"""Serial ports for UART sensors (MH-Z19, PMS5003): one port per sensor, opened through pyserial.

* `SerialLink`: one port, opened on first use with a read timeout (``serial`` is imported there,
  never at import time). Every failure of the port itself (missing, no permission, locked by
  another program, EIO/ENXIO when a USB adapter is unplugged) is a `SerialPortGoneError`; the link
  closes its handle so that the driver's next attempt opens the port again, as a replugged
  adapter needs.
* `FrameScanner`: finds a chip's frames in a byte stream and resynchronises after garbage: scan
  for the start bytes, ask the chip how long the frame is, check it; a bad candidate costs one
  byte and the scan goes on. Bounded by ``max_buffer``.
* `SerialDriver`: the base of a UART sensor driver: the ``port`` option, the port as a claimed
  resource (two sensors on ``/dev/serial0`` clash in ``pibridge check``), opening and re-opening.
* `console_devices`, `holds_console`: the Pi's serial console per ``cmdline.txt``
  (``console=serial0,115200``), which must not share its port with a sensor.
* `serial_ports`: the ports ``pibridge scan`` lists; `foreign_line_discipline`: whether a
  program has put another protocol on a port (Bluetooth's HCI on a Pi 3/4's ``ttyAMA0``), which
  scan must not disturb.

Drivers never block on the port: `SerialDriver.poll_frame` takes only the bytes that have already
arrived (``in_waiting``) and hands back `CollectAgain` while a frame is incomplete, a bounded number
of times (`MAX_POLLS`), then a typed error. `read_frame` (blocking, bounded by the read timeout) is
for one-off tools and tests, never for a driver's ``collect()``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import termios
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .base import CollectAgain, Driver, Option, OptionProblem, Resources
from .errors import BadDataError, BusError, DeviceNotFoundError, NotReadyError

DEFAULT_PORT = "/dev/serial0"          #: Raspberry Pi OS's link to the primary UART (GPIO 14/15)
DEFAULT_BAUDRATE = 9600
DEFAULT_TIMEOUT_S = 0.2                #: a read waits at most this long for missing bytes
WRITE_TIMEOUT_S = 0.5
BITS_PER_BYTE_8N1 = 10                 #: start bit + 8 data bits + stop bit
PORT_MAX_CHARS = 200                   #: a device path longer than this is a mistake
MAX_SCAN_BYTES = 256                   #: bytes a frame search looks through before giving up
#: ``collect()`` calls that may find the awaited frame still incomplete (each answered with
#: `CollectAgain` for the bytes still missing) before the search fails: the first ``collect()``
#: already comes after the whole frame's time, so these only absorb a late or slow sensor.
MAX_POLLS = 4

#: Where Raspberry Pi OS keeps the kernel command line: bookworm, then older releases. A module
#: attribute so tests (and `holds_console`'s callers) can point elsewhere.
CMDLINE_FILES: tuple[Path, ...] = (Path("/boot/firmware/cmdline.txt"), Path("/boot/cmdline.txt"))
CMDLINE_MAX_BYTES = 4096
CONSOLE_RE = re.compile(r"(?:^|\s)console=([^,\s]+)")
VIRTUAL_TERMINAL_RE = re.compile(r"tty\d*$")   #: console=tty1: the screen, not a serial port

#: The ports `pibridge scan` looks for, in /dev (ttyS*: only those with a real UART behind them).
SCAN_PATTERNS = ("serial0", "serial1", "ttyAMA*", "ttyS*", "ttyUSB*", "ttyACM*")
SYS_TTY_CLASS = Path("/sys/class/tty")
N_TTY = 0                              #: the ordinary terminal line discipline (linux/tty.h)


def byte_time_s(baudrate: int = DEFAULT_BAUDRATE) -> float:
    """Seconds one byte takes on the wire at 8N1."""
    return BITS_PER_BYTE_8N1 / baudrate


class SerialPortGoneError(DeviceNotFoundError):
    """The serial port cannot be opened or vanished while in use (unplugged USB adapter: EIO,
    ENXIO, ENODEV; a missing device node: ENOENT; no permission; locked by another program).
    Not retried within the sample; the driver opens the port again at its next attempt."""


_GONE_HINTS = {
    errno.ENOENT: "no such port (UART not enabled, or USB adapter unplugged?)",
    errno.EACCES: "permission denied (the user must be in the dialout group)",
    errno.EBUSY: "port busy (used by another program, or the serial console?)",
}


# ================================================================================================
# one port
# ================================================================================================

class SerialLink:
    """One serial port at 8N1, opened on first use (``open``), with a read timeout.

    ``path``: what is opened (normally the ``port`` option; the simulation's pseudo-terminal);
    ``label``: how messages name it (the ``port`` option). Every port failure raises
    `SerialPortGoneError` and closes the handle, so the next use opens the port again.
    """

    def __init__(self, path: str, *, baudrate: int = DEFAULT_BAUDRATE,
                 timeout_s: float = DEFAULT_TIMEOUT_S, label: str = "") -> None:
        self.path = path
        self.label = label or path
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._serial: Any = None
        self.opened = 0   #: how many times the port was opened (a reopen after a vanished port counts)
        self.sent_bytes = 0  #: bytes written since the port was last opened

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open the port if it is not open. `SerialPortGoneError` if it cannot be."""
        if self._serial is not None:
            return
        try:
            import serial  # lazily: pyserial is only needed where a port is opened
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise SerialPortGoneError(f"{self.label}: pyserial is not installed ({exc})") from None
        try:
            self._serial = serial.Serial(self.path, self.baudrate, bytesize=serial.EIGHTBITS,
                                         parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                         timeout=self.timeout_s, write_timeout=WRITE_TIMEOUT_S,
                                         exclusive=True)
        except (OSError, ValueError, serial.SerialException) as exc:
            raise SerialPortGoneError(f"{self.label}: cannot open: {_describe(exc)}") from None
        self.opened += 1
        self.sent_bytes = 0

    def close(self) -> None:
        """Close the port (idempotent)."""
        handle, self._serial = self._serial, None
        if handle is not None:
            with contextlib.suppress(Exception):  # a vanished port may fail to close: closed either way
                handle.close()

    def _failed(self, doing: str, exc: BaseException) -> SerialPortGoneError:
        self.close()
        return SerialPortGoneError(f"{self.label}: {doing} failed, port closed: {_describe(exc)}")

    def send(self, data: bytes, doing: str) -> None:
        """Discard unread input (a late reply, an ack, garbage) and write ``data``."""
        self.open()
        try:
            self._serial.reset_input_buffer()
            self._serial.write(data)
            self.sent_bytes += len(data)
        except Exception as exc:  # SerialException, SerialTimeoutException, OSError
            raise self._failed(doing, exc) from None

    def discard_input(self, doing: str = "flushing input") -> None:
        self.open()
        try:
            self._serial.reset_input_buffer()
        except Exception as exc:
            raise self._failed(doing, exc) from None

    def read(self, size: int, doing: str) -> bytes:
        """Up to ``size`` bytes: returns early with fewer only when the timeout passes."""
        self.open()
        try:
            data: bytes = self._serial.read(size)
        except Exception as exc:
            raise self._failed(doing, exc) from None
        return data

    def read_available(self, doing: str) -> bytes:
        """Whatever has arrived, without waiting."""
        self.open()
        try:
            waiting = self._serial.in_waiting
            data: bytes = self._serial.read(waiting) if waiting else b""
        except Exception as exc:
            raise self._failed(doing, exc) from None
        return data


def _describe(exc: BaseException) -> str:
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number in _GONE_HINTS:
        return _GONE_HINTS[number]
    text = str(exc) or type(exc).__name__
    if "exclusively lock" in text:
        return "port in use by another program"
    return text


# ================================================================================================
# frames in a byte stream
# ================================================================================================

@dataclass
class FrameScanner:
    """Frames of one chip in a byte stream, with resynchronisation.

    ``start``: the bytes every frame begins with; ``size_of(head)``: the whole frame's length
    from its first ``head_len`` bytes, or None when that header is impossible (a wrong length
    field); ``check(frame)``: None or what is wrong (a checksum). A candidate that fails either
    check is dropped by ONE byte (a stray start byte inside garbage or data) and the scan goes on.
    """

    start: bytes
    head_len: int
    size_of: Callable[[bytes], int | None]
    check: Callable[[bytes], str | None]
    max_buffer: int = MAX_SCAN_BYTES
    buffer: bytearray = field(default_factory=bytearray)
    problems: list[str] = field(default_factory=list)   #: what was dropped, in order
    skipped: int = 0                                     #: garbage bytes before frame starts
    received: int = 0                                    #: bytes fed since the last reset

    def reset(self) -> None:
        self.buffer.clear()
        self.problems.clear()
        self.skipped = 0
        self.received = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.received += len(data)
        if len(self.buffer) > self.max_buffer:   # keep the newest bytes: the scan is bounded
            drop = len(self.buffer) - self.max_buffer
            self.skipped += drop
            del self.buffer[:drop]

    def frames(self) -> Iterator[bytes]:
        """Every complete, valid frame now in the buffer, in order (consumed as it is yielded);
        an incomplete candidate stays in the buffer for more bytes."""
        while True:
            at = self.buffer.find(self.start)
            if at < 0:  # keep only a tail that may be the first bytes of a split start sequence
                keep = next((k for k in range(min(len(self.start) - 1, len(self.buffer)), 0, -1)
                             if self.buffer.endswith(self.start[:k])), 0)
                drop = len(self.buffer) - keep
                self.skipped += drop
                del self.buffer[:drop]
                return
            if at:
                self.skipped += at
                del self.buffer[:at]
            if len(self.buffer) < self.head_len:
                return
            size = self.size_of(bytes(self.buffer[:self.head_len]))
            if size is None:
                self.problems.append(f"impossible header {bytes(self.buffer[:self.head_len]).hex(' ')}")
                self.skipped += 1
                del self.buffer[:1]
                continue
            if len(self.buffer) < size:
                return
            frame = bytes(self.buffer[:size])
            wrong = self.check(frame)
            if wrong is not None:
                self.problems.append(wrong)
                self.skipped += 1
                del self.buffer[:1]
                continue
            del self.buffer[:size]
            yield frame

    def missing(self) -> int:
        """Bytes still needed to complete the candidate at the buffer's start (0: none pending).
        After `frames`, the buffer is empty, the first bytes of a start sequence, or a frame
        that has begun."""
        if not self.buffer:
            return 0
        if len(self.buffer) < self.head_len:
            return self.head_len - len(self.buffer)
        size = self.size_of(bytes(self.buffer[:self.head_len]))
        return 0 if size is None else max(0, size - len(self.buffer))

    def failure(self, label: str, what: str, received: int) -> BadDataError | BusError:
        """The typed error for a search that found no valid frame: a checksum or header problem
        or a truncated frame (`BadDataError`, retryable), or silence (`BusError`)."""
        if self.problems:  # a checksum failure says most (a stray start byte in garbage or data, less)
            chosen = next((p for p in self.problems if p.startswith("checksum")), self.problems[0])
            return BadDataError(f"{label}: {chosen} ({what})")
        if self.buffer and self.missing():
            return BadDataError(f"{label}: truncated {what}: {len(self.buffer)} bytes, then silence")
        if received:
            return BadDataError(f"{label}: {received} bytes without a {what} (garbage on the line?)")
        return BusError(f"{label}: no {what}: the sensor is silent (wiring: its TX to the Pi's RX; "
                        "powered?)")


def read_frame(link: SerialLink, scanner: FrameScanner, first: int, what: str,
               newest: bool = False) -> bytes:
    """Read from ``link`` until ``scanner`` yields a valid frame: frames already buffered first,
    then ``first`` bytes (blocking up to the timeout), or what a pending candidate still misses.
    ``newest``: read what has arrived as well and return the newest valid frame (a sensor
    streaming frames). Bounded by ``scanner.max_buffer`` bytes and each read's timeout; typed
    errors otherwise."""
    received = 0
    found: bytes | None = None
    timed_out = False
    while True:
        for frame in scanner.frames():
            found = frame
            if not newest:
                return frame
        missing = scanner.missing()
        if found is not None and (not missing or timed_out or received > scanner.max_buffer):
            return found
        if timed_out or received > scanner.max_buffer:
            raise scanner.failure(link.label, what, received)
        want = missing or first
        data = link.read(want, f"reading a {what}")
        timed_out = len(data) < want  # nothing more is coming now
        if newest and not timed_out:
            data += link.read_available(f"reading a {what}")
        received += len(data)
        scanner.feed(data)


# ================================================================================================
# the driver base
# ================================================================================================

def serial_port_option(default: str = DEFAULT_PORT) -> Option:
    return Option("port", str, default, "serial device (/dev/serial0: the Pi's header UART, GPIO 14/15; "
                  "a USB adapter: /dev/ttyUSB0)")


class SerialDriver(Driver):
    """A sensor on its own serial port. Subclasses declare ``baudrate`` and use ``self.link``.

    ``SerialDriver(device=None, *, timeout_s=DEFAULT_TIMEOUT_S, release=None, **options)``:
    ``device`` is the path actually opened (default: the ``port`` option; the simulation passes
    its pseudo-terminal, messages still name the ``port``); ``release`` is called once when the
    driver closes (the simulation stops its fake chip there). The port is opened by the
    subclass's constructor (configuration is written at build time) and again after it failed.
    """

    baudrate: ClassVar[int] = DEFAULT_BAUDRATE
    chip_name: ClassVar[str] = ""

    def __init__(self, device: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 release: Callable[[], None] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.port: str = self.config["port"]
        self.label = f"{self.chip_name or self.name} on {self.port}"
        self.link = SerialLink(device or self.port, baudrate=self.baudrate, timeout_s=timeout_s,
                               label=self.label)
        self._release_hook = release
        self._polls = 0            #: `poll_frame` calls in a row that found no frame
        self._unwanted_frames = 0  #: frames `poll_frame` skipped in the current search

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """The port is an absolute device path (``/dev/serial0``, ``/dev/serial/by-id/…``)."""
        port = config["port"]
        if not port.startswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in port) \
                or len(port) > PORT_MAX_CHARS:
            return [OptionProblem("port", f"option port: must be a device path such as /dev/serial0 or "
                                          f"/dev/ttyUSB0, not {port[:PORT_MAX_CHARS]!r}")]
        return []

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """Its port (and any GPIO option, such as a SET pin)."""
        base = super().resources(config)
        return Resources(gpio=base.gpio, serial=(config["port"],))

    def poll_frame(self, scanner: FrameScanner, what: str, *, frame_len: int, latency_s: float,
                   wanted: Callable[[bytes], bool] = lambda frame: True,
                   newest: bool = False) -> bytes | CollectAgain:
        """One non-blocking step of a frame search, for ``collect()``: feed ``scanner`` with the
        bytes that have already arrived (never waiting for more), then the first valid frame
        ``wanted`` accepts (others, such as command acks, are skipped), or the newest with
        ``newest`` (a sensor streaming frames). While none is complete: `CollectAgain` for the
        time the missing bytes take on the wire plus ``latency_s``, at most `MAX_POLLS` times in
        a row; then the scanner's typed error (`BusError` for silence, `BadDataError` for a bad
        or truncated frame), or `NotReadyError` when only unwanted frames came."""
        scanner.feed(self.link.read_available(f"reading a {what}"))
        found: bytes | None = None
        for frame in scanner.frames():
            if not wanted(frame):
                self._unwanted_frames += 1
                continue
            found = frame
            if not newest:
                break
        if found is not None:
            self._polls = 0
            return found
        if self._polls >= MAX_POLLS or scanner.received > scanner.max_buffer:
            self._polls, unwanted, self._unwanted_frames = 0, self._unwanted_frames, 0
            if unwanted and not scanner.problems and not scanner.missing():
                raise NotReadyError(f"{self.label}: only {unwanted} other frame(s) (command acks), "
                                    f"no {what} yet")
            raise scanner.failure(self.label, what, scanner.received)
        self._polls += 1
        return CollectAgain((scanner.missing() or frame_len) * byte_time_s(self.baudrate) + latency_s)

    def new_search(self, scanner: FrameScanner) -> None:
        """Forget a former search's bytes and polls (a new request or a new reading)."""
        scanner.reset()
        self._polls = self._unwanted_frames = 0

    def _release(self) -> None:
        self.link.close()
        hook, self._release_hook = self._release_hook, None
        if hook is not None:
            hook()


# ================================================================================================
# the Pi's serial console, the ports present
# ================================================================================================

def console_devices(cmdline_files: tuple[Path, ...] | None = None) -> tuple[Path, list[str]] | None:
    """The first readable cmdline.txt and the serial consoles it names (``console=serial0,115200``
    -> ``/dev/serial0``; virtual terminals such as ``tty1`` are not serial), or None when none
    can be read (not a Pi, or not visible). ``cmdline_files``: default `CMDLINE_FILES`."""
    for path in (CMDLINE_FILES if cmdline_files is None else cmdline_files):
        try:
            with open(path, "rb") as file:
                text = file.read(CMDLINE_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        return path, [f"/dev/{name}" for name in CONSOLE_RE.findall(text)
                      if not VIRTUAL_TERMINAL_RE.match(name)]
    return None


#: The names the Pi's header UART (GPIO 14/15) may have: the link and the two nodes it may point
#: to (which one depends on the model and on Bluetooth), see `SERIAL_PORT_PINS`.
HEADER_UART_PATHS = ("/dev/serial0", "/dev/ttyS0", "/dev/ttyAMA0")


def device_exists(path: str) -> bool:
    """Whether ``path`` exists here (a module function: tests check profiles "off a Pi")."""
    return os.path.exists(path)


def same_device(a: str, b: str) -> bool:
    """Whether two device paths are one port: equal, or the same once links resolve
    (``/dev/serial0`` -> ``/dev/ttyS0`` on a Pi 3/4, ``ttyAMA0`` on a Pi 5)."""
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    return device_exists(a) and device_exists(b) and os.path.realpath(a) == os.path.realpath(b)


def may_be_one_header_uart(a: str, b: str) -> bool:
    """Whether two different names may be the header UART both (``serial0``, ``ttyS0``,
    ``ttyAMA0``) and this machine cannot tell (checked off a Pi: not both exist, so their links
    cannot be resolved). On the Pi itself `same_device` decides."""
    a, b = os.path.normpath(a), os.path.normpath(b)
    return (a != b and a in HEADER_UART_PATHS and b in HEADER_UART_PATHS
            and not (device_exists(a) and device_exists(b)))


def holds_console(port: str, cmdline_files: tuple[Path, ...] | None = None) -> tuple[str, Path] | None:
    """(the console entry, the cmdline.txt naming it) when ``port`` is the Pi's serial console,
    else None (also when no cmdline.txt can be seen)."""
    found = console_devices(cmdline_files)
    if found is None:
        return None
    path, consoles = found
    for console in consoles:
        if same_device(port, console):
            return console, path
    return None


def console_problem(port: str, cmdline_files: tuple[Path, ...] | None = None) -> str | None:
    """One line when ``port`` is the serial console (the kernel and a login shell talk on it),
    else None."""
    held = holds_console(port, cmdline_files)
    if held is None:
        return None
    console, path = held
    return (f"{port} is the serial console ({console.removeprefix('/dev/')} in {path}): free it with "
            "sudo raspi-config nonint do_serial_cons 1, then reboot")


def _is_real_uart(name: str, sys_tty: Path) -> bool:
    """ttyS*: the kernel makes legacy 8250 nodes whatever the hardware, all on the
    ``serial8250`` placeholder device; one with another device behind it is a real UART (on a
    Pi, the mini UART ttyS0)."""
    device = sys_tty / name / "device"
    return device.exists() and os.path.basename(os.path.realpath(device)) != "serial8250"


def serial_ports(dev_root: Path = Path("/dev"), sys_tty: Path = SYS_TTY_CLASS) -> list[str]:
    """The serial ports present: ``serial0``/``serial1`` links, ``ttyAMA*``, ``ttyS*`` with a
    real UART behind, ``ttyUSB*``, ``ttyACM*`` (paths under ``dev_root``), sorted and unique."""
    found: list[str] = []
    for pattern in SCAN_PATTERNS:
        for path in sorted(dev_root.glob(pattern)):
            if pattern == "ttyS*" and not _is_real_uart(path.name, sys_tty):
                continue
            if str(path) not in found:
                found.append(str(path))
    return found


def foreign_line_discipline(path: str) -> str | None:
    """Why ``path`` must not be opened as a plain serial port, or None: it is not a terminal, or
    a program runs another line discipline on it (``hciattach``: Bluetooth HCI, ``pppd``: PPP),
    which reconfiguring it to 9600 baud would break. Opens the node without touching its
    settings (``O_NONBLOCK | O_NOCTTY``, no termios change) and asks ``TIOCGETD``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        return f"cannot open: {_describe(exc)}"
    try:
        raw = fcntl.ioctl(fd, termios.TIOCGETD, struct.pack("i", 0))
    except OSError as exc:
        return "not a serial port" if exc.errno == errno.ENOTTY else f"cannot ask: {_describe(exc)}"
    finally:
        os.close(fd)
    discipline = struct.unpack("i", raw)[0]
    if discipline != N_TTY:
        return f"in use by another program (line discipline {discipline}: Bluetooth, PPP?)"
    return None
