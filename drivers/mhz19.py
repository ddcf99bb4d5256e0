"""Winsen MH-Z19B / MH-Z19C NDIR CO₂ sensor on a UART (manual v1.0; hardware.md §15).

9600 baud 8N1; every request and reply is 9 bytes::

    request   FF 01 CMD b3 b4 b5 b6 b7 CK
    reply     FF CMD HH LL TT SS U1 U2 CK        (0x86: CO₂ = HH·256 + LL ppm)
    CK = (−sum(bytes 1..7)) & 0xFF               (byte 0 never counts)

Configuration (measuring range 0x99, automatic baseline correction 0x79) has no reply; it is
written when the driver is built and again after the port was reopened (the sensor may have been
power-cycled with a USB adapter), never per read. One read: ``start()`` discards unread input and
sends 0x86, returning the time the request and the reply take on the wire plus the sensor's
latency; ``collect()`` takes the reply from the bytes already arrived (`CollectAgain` while it is
incomplete: it never waits on the port), resynchronising after garbage (the scan looks for
``FF 86``, so a reply to anything else is skipped too). TT, SS, U1, U2 are undocumented
(diagnostic only; TT − 40 is the sensor's internal temperature, not the air's) and not reported.

Errors: a bad checksum or a truncated reply -> `BadDataError`, silence -> `BusError` (both
retried); a value above the configured range -> `ImplausibleValueError`; a port that cannot be
opened or vanished -> `SerialPortGoneError` (opened again at the next attempt).

The first 3 minutes after power-up (preheat) give values that are not usable; the reply does
not say so (no documented status), so the driver cannot filter them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pibridge.protocol import ValueType

from .base import CollectAgain, Metric, Option, RetryPolicy, Sample, Timing
from .errors import ImplausibleValueError, NotReadyError, SensorError
from .serialport import (
    DEFAULT_BAUDRATE,
    FrameScanner,
    SerialDriver,
    SerialPortGoneError,
    byte_time_s,
    serial_port_option,
)

FRAME_LEN = 9
START_BYTE = 0xFF
SENSOR_ADDRESS = 0x01          #: byte 1 of every request
CMD_READ_CO2 = 0x86
CMD_ABC = 0x79                 #: automatic baseline correction on/off
CMD_ZERO_POINT = 0x87
CMD_SPAN_POINT = 0x88
CMD_RANGE = 0x99
ABC_ON = 0xA0                  #: byte 3 of 0x79
ABC_OFF = 0x00
RANGES_PPM = (2000, 5000, 10000)
DEFAULT_RANGE_PPM = 5000
RANGE_HIGH_BYTE = 6            #: 0x99 carries the range in bytes 6–7 (see `range_command`)
SENSOR_LATENCY_S = 0.03        #: allowance for the sensor's own reply delay (not in the manual)
#: start() -> collect(): the request and the reply on the wire plus the sensor's latency
READ_TIME_S = 2 * FRAME_LEN * byte_time_s(DEFAULT_BAUDRATE) + SENSOR_LATENCY_S
TEMPERATURE_OFFSET = 40        #: TT = °C + 40 (undocumented)
MIN_INTERVAL_S = 1.0           #: it measures continuously; faster reads only repeat the value


def checksum(frame: bytes) -> int:
    """The 9-byte frame's checksum over bytes 1–7: ``(0xFF − (sum & 0xFF)) + 1``, i.e.
    ``(−sum) & 0xFF``."""
    return -sum(frame[1:8]) & 0xFF


def command(cmd: int, data: bytes = b"") -> bytes:
    """A request frame::

        | FF | 01 | cmd | b3 b4 b5 b6 b7 (data, zero-padded) | CK |
    """
    body = bytes([START_BYTE, SENSOR_ADDRESS, cmd]) + data.ljust(5, b"\x00")[:5]
    return body + bytes([checksum(body + b"\x00")])


READ_CO2_REQUEST = command(CMD_READ_CO2)   #: FF 01 86 00 00 00 00 00 79


def abc_command(on: bool) -> bytes:
    """0x79 with A0 (on) or 00 (off) in byte 3: FF 01 79 A0 … E6 / FF 01 79 00 … 86."""
    return command(CMD_ABC, bytes([ABC_ON if on else ABC_OFF]))


def range_command(ppm: int) -> bytes:
    """0x99 with the range in bytes 6–7 (big-endian)::

        | FF | 01 | 99 | 00 | 00 | 00 | HH | LL | CK |     2000 ppm: … 07 D0 8F

    The MH-Z19B manual puts it in bytes 3–4; the commands that work (UedaTakeyuki, revspace,
    MH-Z-CO2-Sensors #15) use bytes 6–7, as here."""
    return command(CMD_RANGE, bytes([0, 0, 0, ppm >> 8, ppm & 0xFF]))


def reply_problem(frame: bytes) -> str | None:
    """What is wrong with a 9-byte reply frame, or None."""
    if frame[8] != checksum(frame):
        return f"checksum 0x{frame[8]:02x} != 0x{checksum(frame):02x} in {frame.hex(' ')}"
    return None


def parse_co2(frame: bytes) -> int:
    """CO₂ in ppm from a checked 0x86 reply: ``HH·256 + LL`` (bytes 2, 3)."""
    return (frame[2] << 8) | frame[3]


def internal_temperature_c(frame: bytes) -> int:
    """The undocumented TT byte of a 0x86 reply as °C (TT − 40): the sensor's own temperature,
    diagnostic only (hardware.md §15.3), never the air's."""
    return frame[4] - TEMPERATURE_OFFSET


def reply_scanner() -> FrameScanner:
    """Finds ``FF 86`` replies (9 bytes, checksum) in a byte stream."""
    return FrameScanner(start=bytes([START_BYTE, CMD_READ_CO2]), head_len=2,
                        size_of=lambda head: FRAME_LEN, check=reply_problem)


class MHZ19(SerialDriver):
    """MH-Z19B/C CO₂ sensor. Unit: ppm.

    ``MHZ19(device=None, *, timeout_s=…, release=None, **options)``: see `SerialDriver`. The
    constructor opens the port and writes range and ABC.
    """

    name = "mhz19"
    chip_name = "MH-Z19"
    description = "Winsen MH-Z19B/C NDIR CO2 sensor on a serial port (UART, 9600 baud)"
    metrics = (Metric("co2", "CO2", value_type=ValueType.DOUBLE, annotation="ppm"),)
    options = (
        serial_port_option(),
        Option("range", int, DEFAULT_RANGE_PPM, "measuring range in ppm (written to the sensor)",
               choices=RANGES_PPM),
        Option("self_calibration", bool, False, "automatic baseline correction (ABC): takes the "
               "lowest reading of each day as 400 ppm; keep off in a greenhouse or closed room"),
    )
    read_time_s = READ_TIME_S
    min_interval_s = MIN_INTERVAL_S
    retry = RetryPolicy(attempts=2, spacing_s=0.1)
    simulator = "pibridge.drivers.fakes.mhz19:simulate"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        return Timing(READ_TIME_S, MIN_INTERVAL_S, cls.retry)

    def __init__(self, device: str | None = None, **kwargs: Any) -> None:
        super().__init__(device, **kwargs)
        self.range_ppm: int = self.config["range"]
        self.self_calibration: bool = self.config["self_calibration"]
        self._configured = False
        self._requested = False
        self._scanner = reply_scanner()
        try:
            self._configure()
        except BaseException:
            self.close()
            raise

    def _configure(self) -> None:
        """Range, then ABC (no replies): at build time and after the port was reopened."""
        self.link.send(range_command(self.range_ppm), "writing the range")
        self.link.send(abc_command(self.self_calibration), "writing ABC")
        self._configured = True

    def start(self) -> float:
        """Send 0x86 (after configuring, when the port was reopened); the seconds until the
        reply is in."""
        try:
            if not self._configured:
                self._configure()
            self.link.send(READ_CO2_REQUEST, "sending the read command")
        except SerialPortGoneError:
            self._configured = self._requested = False
            raise
        self._requested = True
        self.new_search(self._scanner)
        return READ_TIME_S

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        """The reply as {co2: ppm}, from the bytes that have arrived: `CollectAgain` while it is
        incomplete (bounded, see `poll_frame`); never waits on the port."""
        if not self._requested:
            raise NotReadyError(f"{self.label}: collect() before start()")
        try:
            found = self.poll_frame(self._scanner, "0x86 reply", frame_len=FRAME_LEN,
                                    latency_s=SENSOR_LATENCY_S)
        except SerialPortGoneError:
            self._configured = self._requested = False
            raise
        except SensorError:
            self._requested = False
            raise
        if isinstance(found, CollectAgain):
            return found
        self._requested = False
        ppm = parse_co2(found)
        if ppm > self.range_ppm:
            raise ImplausibleValueError(f"{self.label}: {ppm} ppm is above the configured range "
                                        f"of {self.range_ppm} ppm")
        return {"co2": float(ppm)}
