"""Plantower PMS5003 particulate sensor on a UART (data manual appendices I/II; hardware.md §16).

9600 baud 8N1. The data frame, every word big-endian unsigned::

    | 42 4D | 00 1C  | PM1 PM2.5 PM10 | PM1 PM2.5 PM10 | >0.3 >0.5 >1.0 >2.5 >5.0 >10 µm | res | CK |
    |  "BM" | len 28 | CF=1 µg/m³     | atmospheric    | particles per 0.1 L of air       |     |    |
     bytes 0-1  2-3     4-9              10-15            16-27                            28-29 30-31
    CK = 16-bit sum of bytes 0..29

Commands ``42 4D CMD DH DL CKH CKL`` (CK: 16-bit sum of the first 5 bytes); passive mode, sleep
and active mode are answered by an undocumented 8-byte ack (length field 4), which the frame scan
recognises and skips. The atmospheric values are reported (§16.4: CF=1 is for the factory).

Modes (option ``mode``):

* ``active`` (the chip's power-on default): the fan runs all the time and the sensor pushes a
  frame about every 2.3 s. ``start()`` discards what is buffered and returns one frame period;
  ``collect()`` takes the newest valid frame that arrived. Any interval from 2.5 s.
* ``passive``: the fan sleeps between samples (it wears out: Plantower rates it for years of
  use, not of sleep). ``start()`` wakes it (SET high with ``set_pin``, else the wake command) and
  returns the **30 s** warm-up the manual asks for; ``collect()`` sends the read request and
  returns `CollectAgain` for the frame's time, then takes the frame and puts the fan back to
  sleep. The timing of this mode therefore asks for at least ~30 s between samples, so
  ``pibridge check`` refuses a shorter interval: use ``active`` for short intervals (the fan
  then never sleeps).

``collect()`` never waits on the port: it takes the bytes that have arrived, and `CollectAgain`
asks for the time a frame still missing takes (a bounded number of times, then a typed error).

Mode, wake and sleep are written at build time and when the port was reopened; per read only the
read request (passive) goes out. ``set_pin``: GPIO driving the SET pin (high: working, low: sleep).

Errors: bad checksum, impossible length field, truncated frame -> `BadDataError`; silence ->
`BusError` (retried); the fan still warming up -> `NotReadyError`; a port that cannot be opened
or vanished -> `SerialPortGoneError` (opened again at the next attempt).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pibridge.protocol import ValueType

from .base import CollectAgain, GpioPin, Metric, Option, RetryPolicy, Sample, Timing
from .errors import BusError, NotReadyError
from .gpio import hardware_pin_factory, missing_library
from .serialport import (
    DEFAULT_BAUDRATE,
    FrameScanner,
    SerialDriver,
    SerialPortGoneError,
    byte_time_s,
    serial_port_option,
)

START = b"BM"                  #: 0x42 0x4D
HEAD_LEN = 4                   #: start bytes + length word
DATA_LENGTH = 28               #: length field of a data frame (13 data words + checksum)
ACK_LENGTH = 4                 #: length field of a command ack
DATA_FRAME_LEN = HEAD_LEN + DATA_LENGTH   #: 32
ACK_FRAME_LEN = HEAD_LEN + ACK_LENGTH     #: 8
CMD_READ = 0xE2                #: passive mode: send one frame
CMD_MODE = 0xE1                #: data 0 passive, 1 active
CMD_SLEEP = 0xE4               #: data 0 sleep, 1 wake
MODE_PASSIVE, MODE_ACTIVE = 0, 1
SLEEP, WAKE = 0, 1

ATMOSPHERIC_AT = 10            #: byte offset of the atmospheric PM1.0, PM2.5, PM10 words
COUNTS_AT = 16                 #: byte offset of the six particle counts
COUNT_KEYS = ("particles_0_3", "particles_0_5", "particles_1_0", "particles_2_5", "particles_5_0",
              "particles_10")
COUNT_SIZES = (">0.3", ">0.5", ">1.0", ">2.5", ">5.0", ">10")
PM_KEYS = ("pm1_0", "pm2_5", "pm10")

MODES = ("active", "passive")
WARMUP_S = 30.0                #: manual: stable data at least 30 s after waking (fan)
FRAME_PERIOD_S = 2.3           #: active mode, "stable": about one frame per 2.3 s
SENSOR_LATENCY_S = 0.1         #: allowance for the sensor's own delays (not in the manual)
FRAME_TIME_S = DATA_FRAME_LEN * byte_time_s(DEFAULT_BAUDRATE)
ACTIVE_READ_TIME_S = FRAME_PERIOD_S + FRAME_TIME_S + SENSOR_LATENCY_S
PASSIVE_READ_TIME_S = WARMUP_S + FRAME_TIME_S + SENSOR_LATENCY_S


def command(cmd: int, data: int = 0) -> bytes:
    """A 7-byte command::

        | 42 4D | cmd | DH DL | CKH CKL |   CK = 16-bit sum of the first 5 bytes
    """
    body = START + bytes([cmd, data >> 8, data & 0xFF])
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


READ_REQUEST = command(CMD_READ)                     #: 42 4D E2 00 00 01 71
PASSIVE_MODE = command(CMD_MODE, MODE_PASSIVE)       #: 42 4D E1 00 00 01 70
ACTIVE_MODE = command(CMD_MODE, MODE_ACTIVE)         #: 42 4D E1 00 01 01 71
SLEEP_COMMAND = command(CMD_SLEEP, SLEEP)            #: 42 4D E4 00 00 01 73
WAKE_COMMAND = command(CMD_SLEEP, WAKE)              #: 42 4D E4 00 01 01 74


def frame_size(head: bytes) -> int | None:
    """A frame's total length from its 4-byte head: 32 (data) or 8 (ack); None for any other
    length field (a corrupted or false start)."""
    length = (head[2] << 8) | head[3]
    return {DATA_LENGTH: DATA_FRAME_LEN, ACK_LENGTH: ACK_FRAME_LEN}.get(length)


def frame_problem(frame: bytes) -> str | None:
    """What is wrong with a frame's checksum (16-bit sum of all bytes before the last two)."""
    expected = sum(frame[:-2]) & 0xFFFF
    got = int.from_bytes(frame[-2:], "big")
    if got != expected:
        return f"checksum 0x{got:04x} != 0x{expected:04x}"
    return None


def words(frame: bytes, at: int, count: int) -> tuple[int, ...]:
    return tuple(int.from_bytes(frame[i:i + 2], "big") for i in range(at, at + 2 * count, 2))


def parse_frame(frame: bytes) -> dict[str, int]:
    """A checked data frame -> atmospheric µg/m³ (``pm1_0``, ``pm2_5``, ``pm10``) and the
    particle counts per 0.1 L (``particles_*``)."""
    values = dict(zip(PM_KEYS, words(frame, ATMOSPHERIC_AT, 3), strict=True))
    values.update(zip(COUNT_KEYS, words(frame, COUNTS_AT, 6), strict=True))
    return values


def frame_scanner() -> FrameScanner:
    return FrameScanner(start=START, head_len=HEAD_LEN, size_of=frame_size, check=frame_problem)


class PMS5003(SerialDriver):
    """PMS5003 particulate sensor. Units: µg/m³ (atmospheric), particles per 0.1 L.

    ``PMS5003(device=None, *, timeout_s=…, release=None, pin_factory=None,
    clock=time.monotonic, **options)``: see `SerialDriver`; ``pin_factory`` (gpiozero) drives
    ``set_pin`` (default: this machine's, closed with the driver); ``clock`` times the warm-up.
    """

    name = "pms5003"
    chip_name = "PMS5003"
    description = "Plantower PMS5003 particulate matter sensor on a serial port (UART, 9600 baud)"
    metrics = tuple(Metric(key, f"PM{size}", value_type=ValueType.DOUBLE, annotation="µg/m³")
                    for key, size in zip(PM_KEYS, ("1.0", "2.5", "10"), strict=True)) + tuple(
        Metric(key, f"Particles {size} µm", value_type=ValueType.INTEGER, annotation="/0.1L")
        for key, size in zip(COUNT_KEYS, COUNT_SIZES, strict=True))
    options = (
        serial_port_option(),
        Option("mode", str, "active", "active (fan always on, any interval from 2.5 s) or passive "
               "(the fan sleeps between samples; 30 s warm-up, interval >= 30.2 s)", choices=MODES),
        Option("set_pin", GpioPin, None, "GPIO wired to the SET pin (sleep control); optional"),
        Option("counts", bool, False, "also report the particle counts per 0.1 L of air"),
    )
    read_time_s = ACTIVE_READ_TIME_S
    min_interval_s = ACTIVE_READ_TIME_S
    retry = RetryPolicy(attempts=2, spacing_s=0.2)
    simulator = "pibridge.drivers.fakes.pms5003:simulate"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """Active: one frame period per read. Passive: the fan's 30 s warm-up per read, so at
        least that much between samples."""
        wait = PASSIVE_READ_TIME_S if config["mode"] == "passive" else ACTIVE_READ_TIME_S
        return Timing(wait, wait, cls.retry)

    @classmethod
    def metrics_for(cls, config: Mapping[str, Any]) -> tuple[Metric, ...]:
        return cls.metrics if config["counts"] else cls.metrics[:len(PM_KEYS)]

    def __init__(self, device: str | None = None, *, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(device, **kwargs)
        self.passive = self.config["mode"] == "passive"
        self.counts: bool = self.config["counts"]
        self._clock = clock
        self._scanner = frame_scanner()
        self._configured = False
        self._awake_since: float | None = None   #: when the fan was last woken (passive)
        self._request_pending = False             #: passive: the read request is still to send
        self._started = False
        self._set: Any = None
        self._factory: Any = None
        self._own_factory = False
        try:
            if self.config["set_pin"] is not None:
                self._claim_set_pin(pin_factory)
            self._configure()
        except BaseException:
            self.close()
            raise

    def _claim_set_pin(self, pin_factory: Any) -> None:
        try:
            from gpiozero import DigitalOutputDevice, GPIOZeroError
        except ImportError as exc:
            raise missing_library("gpiozero", "a PMS5003 SET pin") from exc
        self._own_factory = pin_factory is None
        self._factory = hardware_pin_factory() if pin_factory is None else pin_factory
        try:
            self._set = DigitalOutputDevice(self.config["set_pin"], initial_value=True,
                                            pin_factory=self._factory)
        except GPIOZeroError as exc:
            raise BusError(f"{self.label}: cannot claim GPIO{self.config['set_pin']} (SET): {exc}") from exc

    # -- the fan ---------------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._set is not None:
            self._set.on()
        else:
            self.link.send(WAKE_COMMAND, "waking the sensor")
        self._awake_since = self._clock()

    def _sleep(self) -> None:
        if self._set is not None:
            self._set.off()
        else:
            self.link.send(SLEEP_COMMAND, "putting the sensor to sleep")
        self._awake_since = None

    def _configure(self) -> None:
        """Awake (a former passive run may have left it asleep), then the mode. The fan stays on
        until the first sample is read (dropping SET right after the command could put it to
        sleep before it has taken the command in); passive mode sleeps after each sample."""
        self._wake()
        self.link.send(PASSIVE_MODE if self.passive else ACTIVE_MODE, "setting the mode")
        self._configured = True

    def _port_failed(self) -> None:
        self._configured = False
        self._started = self._request_pending = False

    def _warmup_left(self) -> float:
        if self._awake_since is None:
            return WARMUP_S
        return max(0.0, self._awake_since + WARMUP_S - self._clock())

    # -- one read --------------------------------------------------------------------------------
    def start(self) -> float:
        """Active: discard buffered frames, wait one frame period. Passive: wake the fan and wait
        the warm-up (or what is left of it), else send the read request."""
        try:
            if not self._configured:
                self._configure()
            self.new_search(self._scanner)
            if not self.passive:
                self.link.discard_input()
                self._started = True
                return ACTIVE_READ_TIME_S
            if self._awake_since is None:
                self._wake()
            self._started = True
            left = self._warmup_left()
            if left > 0:
                self._request_pending = True
                return left + FRAME_TIME_S + SENSOR_LATENCY_S
            self.link.send(READ_REQUEST, "sending the read request")
            self._request_pending = False
            return FRAME_TIME_S + SENSOR_LATENCY_S
        except SerialPortGoneError:
            self._port_failed()
            raise

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        """The newest data frame (active) or the requested one (passive), as µg/m³ (and counts).
        Never blocks: a read request still to send goes out here and `CollectAgain` asks for the
        frame's time; a frame not yet complete is `CollectAgain` (bounded, see `poll_frame`)."""
        if not self._started:
            raise NotReadyError(f"{self.label}: collect() before start()")
        try:
            if self.passive:
                left = self._warmup_left()
                if left > 0:
                    raise NotReadyError(f"{self.label}: fan warming up, {left:.1f} s left")
                if self._request_pending:  # woken in start(): the request goes out now
                    self.new_search(self._scanner)
                    self.link.send(READ_REQUEST, "sending the read request")
                    self._request_pending = False
                    return CollectAgain(FRAME_TIME_S + SENSOR_LATENCY_S)
            found = self.poll_frame(self._scanner, "frame", frame_len=DATA_FRAME_LEN,
                                    latency_s=SENSOR_LATENCY_S, newest=not self.passive,
                                    wanted=lambda frame: len(frame) == DATA_FRAME_LEN)
            if isinstance(found, CollectAgain):
                return found
            self._started = False
            if self.passive:
                self._sleep()
        except SerialPortGoneError:
            self._port_failed()
            raise
        values = parse_frame(found)
        sample: Sample = {key: float(values[key]) for key in PM_KEYS}
        if self.counts:
            sample.update({key: values[key] for key in COUNT_KEYS})
        return sample

    def _release(self) -> None:
        try:
            if self._set is not None:
                self._set.close()
            if self._own_factory and self._factory is not None:
                self._factory.close()
        finally:
            super()._release()
