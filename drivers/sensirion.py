"""What the Sensirion I2C chips (SHT3x, SHT4x, and the SCD family) share: data words guarded by a
CRC-8 each, the 32-bit serial number made of two such words, the temperature formula of their
16-bit words, and (SHT3x, SHT4x) the bookkeeping of a single-shot reading with its recovery.

Every word a Sensirion chip sends is followed by its CRC (``crc8_sensirion``: polynomial 0x31,
init 0xFF, MSB first, over the two bytes of the word)::

    +--------+--------+-------+--------+--------+-------+
    | w0 MSB | w0 LSB | CRC0  | w1 MSB | w1 LSB | CRC1  |  ...
    +--------+--------+-------+--------+--------+-------+
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .crc import crc8_sensirion
from .errors import BadDataError, NotReadyError

WORD_LEN = 2
WORD_WITH_CRC_LEN = 3
SERIAL_FRAME_LEN = 2 * WORD_WITH_CRC_LEN  #: two words + CRCs
FLOATING_BUS_WORD = 0xFFFF                #: SDA held high by the pull-up: reads FF FF FF
TICKS_FULL_SCALE = 65535                  #: 2^16 - 1: the datasheets divide by this, not by 2^16
T_OFFSET_C, T_SPAN_C = -45, 175           #: SHT3x, SHT4x, SCD4x: T = -45 + 175 · S_T / (2^16 - 1)


def ticks_to_celsius(s_t: int) -> float:
    """``T = -45 + 175 · S_T / (2^16 - 1)`` °C (SHT3x, SHT4x, SCD4x datasheets), as one rounding
    of the exact fraction ``(-45 · 65535 + 175 · S_T) / 65535`` (an integer numerator): the float
    nearest the datasheet value."""
    return (T_OFFSET_C * TICKS_FULL_SCALE + T_SPAN_C * s_t) / TICKS_FULL_SCALE


def word_ok(data: bytes, at: int) -> bool:
    """Whether the CRC byte after the word at ``data[at:at+2]`` matches it."""
    return crc8_sensirion(data[at:at + WORD_LEN]) == data[at + WORD_LEN]


def check_words(data: bytes, count: int, label: str = "") -> tuple[int, ...]:
    """The first ``count`` words of ``data`` (each followed by its CRC), big-endian, after
    checking every CRC; `BadDataError` naming the word otherwise (a floating bus reads
    ``FF FF FF``, whose CRC would be 0xAC). ``label`` begins the message (none: the caller
    adds what it was reading)."""
    label = f"{label}: " if label else ""
    if len(data) < count * WORD_WITH_CRC_LEN:
        raise BadDataError(f"{label}short read ({len(data)} bytes, {count * WORD_WITH_CRC_LEN} expected)")
    words = []
    for i in range(count):
        at = i * WORD_WITH_CRC_LEN
        if not word_ok(data, at):
            got = data[at:at + WORD_WITH_CRC_LEN].hex(" ")
            raise BadDataError(f"{label}CRC mismatch on word {i} ({got}, "
                               f"expected CRC 0x{crc8_sensirion(data[at:at + WORD_LEN]):02x})")
        words.append((data[at] << 8) | data[at + 1])
    return tuple(words)


def parse_serial(data: bytes) -> int | None:
    """The 32-bit serial number ``w0 << 16 | w1`` from a 6-byte answer, or None when a CRC does
    not hold (not a Sensirion answer)."""
    if len(data) < SERIAL_FRAME_LEN or not (word_ok(data, 0) and word_ok(data, WORD_WITH_CRC_LEN)):
        return None
    return (data[0] << 24) | (data[1] << 16) | (data[3] << 8) | data[4]


class SingleShotSteps:
    """The bookkeeping of an SHT3x/SHT4x driver between its ``start()`` and ``collect()`` calls:
    which step ``collect()`` takes (``phase``: "measure", or the driver's own reset or heater
    steps), why the next ``start()`` resets the chip instead of measuring (``reset_reason``: a
    CRC error, a failed transfer, ``stuck_after`` results in a row that never arrived)."""

    def __init__(self, stuck_after: int) -> None:
        self.stuck_after = stuck_after
        self.phase: str | None = None
        self.reset_reason: str | None = None
        self.not_there = 0   #: results in a row that were not there (busy NACK) when collected

    def transfer_failed(self) -> None:
        """A transfer failed: no step pending; the next ``start()`` resets."""
        self.phase = None
        self.reset_reason = self.reset_reason or "a failed transfer"

    def reset_due(self) -> str | None:
        """Why the next ``start()`` resets (taken: the reason and the count start afresh), or None."""
        reason, self.reset_reason = self.reset_reason, None
        if reason is not None:
            self.not_there = 0
        return reason

    def take_phase(self, label: str) -> str:
        """The step ``collect()`` takes now (cleared); `NotReadyError` when none was begun."""
        phase, self.phase = self.phase, None
        if phase is None:
            raise NotReadyError(f"{label}: collect() before start()")
        return phase

    def result(self, read: Callable[[], bytes], label: str, count: int = 2) -> tuple[int, ...]:
        """``count`` CRC-checked words of a result from ``read()``: a busy NACK (`NotReadyError`)
        counts towards a reset after ``stuck_after`` in a row, a CRC error asks for one."""
        try:
            data = read()
        except NotReadyError:   # busy NACK: not a failed transfer, unless it never ends
            self.reset_reason = None
            self.not_there += 1
            if self.not_there >= self.stuck_after:
                self.reset_reason = f"{self.not_there} measurements that never arrived"
            raise
        self.not_there = 0
        try:
            return check_words(data, count, label)
        except BadDataError:
            self.reset_reason = "a CRC error"
            raise


class AmbientPressure:
    """The ambient pressure a CO₂ chip compensates with (Pa): ``wanted`` (the profile's
    ``ambient_pressure``, then the newest value another sensor hands on through `offer`) and
    ``sent`` (what the chip was last given). An offer outside the chip's range is dropped with one
    warning; `due` tells whether ``wanted`` moved by ``step_pa`` or more since it was sent (the
    chip is only written to then, never per reading). No bus traffic here."""

    def __init__(self, label: str, part: str, wanted: float | None, minimum: float, maximum: float,
                 step_pa: float) -> None:
        self.label, self.part = label, part
        self.wanted: float | None = wanted
        self.sent: float | None = None
        self.minimum, self.maximum, self.step_pa = minimum, maximum, step_pa
        self._warned = False

    def offer(self, pascal: float) -> None:
        if not self.minimum <= pascal <= self.maximum:
            if not self._warned:
                self._warned = True
                logging.getLogger(__name__).warning(
                    "%s: ambient pressure %.0f Pa is outside the %s's %d–%d Pa: not sent",
                    self.label, pascal, self.part, self.minimum, self.maximum)
            return
        self.wanted = float(pascal)

    @property
    def due(self) -> bool:
        return self.wanted is not None and (self.sent is None or abs(self.wanted - self.sent) >= self.step_pa)
