"""Vishay VEML7700 ambient light sensor over I2C (datasheet rev 1.7, application note 84323).

16-bit registers, **little-endian** (LSB first), at the fixed address 0x10. The chip integrates
continuously once its shutdown bit is cleared and updates the ALS count once per integration
time (IT)::

    ALS_CONF 0x00:  15..13  12..11    10  9..6    5..4    3..2  1       0
                    0       ALS_GAIN  0   ALS_IT  ALS_PERS 0    ALS_INT_EN ALS_SD (1 = shut down)
    ALS      0x04:  16-bit count (read only)

    lux (linear) = count · resolution,   resolution = 0.0042 lx · (800 ms / IT) · (2 / gain)

Resolution 0.0042 lx/count at gain 2 and 800 ms is datasheet rev 1.7 and Vishay's PCN. Older
datasheets, the Adafruit Arduino library and ESPHome (2024-10) use 0.0036 and so read 14 % low;
Adafruit CircuitPython moved to 0.0042 in 2025. Above 1000 lx (linear) the app note's
non-linearity correction is applied (a fixed convention here; Adafruit applies it only inside
``autolux``, ESPHome whenever the gain is 1/4 or 1/8).

Ranging (``gain`` and/or ``integration_time`` = ``auto``) follows app note 84323 (what Adafruit's
``autolux`` implements): start at gain 1/8, 100 ms; while the count is <= 100 raise the gain
(1/4, 1, 2) then IT (200, 400, 800 ms); when it is > 10000 shorten IT (50, 25 ms). Here it runs
*across reads*, never by sleeping: a count inside the app note's window (100, 10000] (or at an
end of the ladder) is a reading; any other count picks, from the lux it implies, the setting
where the app note's steps would end, and ``collect()`` says `NotReadyError` ("re-ranged"); the
next ``start()`` writes the new setting and returns how long the chip needs with it (the
caller's retry). A count outside the window is the only trigger, so noise does not flip ranges.

One attempt: ``start()`` writes the configuration when it is not on the chip yet (first read,
after a range change, after a failure) and returns enable time + 2 IT (the first integration
after a change may have begun under the old one); otherwise 0 (the chip keeps converting;
``min_interval_s`` is one IT, so every read sees a new count). ``collect()`` reads ALS_CONF (a
chip that lost power is back at 0x0001, shut down, with a frozen count) and then the count.

Errors: NACK before any answer -> `DeviceNotFoundError`, later -> `BusError` (the configuration is
written again); ALS_CONF not what was written -> `NotReadyError`, one log line, reconfigured on
the next start; a saturated count (65535) at the least sensitive setting allowed (gain 1/8,
25 ms for auto: 140926 lx linear) -> `ImplausibleValueError` (out of range, not a number).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pibridge.protocol import ValueType

from .base import Metric, Option, RetryPolicy, Sample, Timing
from .errors import ConfigurationError, ImplausibleValueError, NotReadyError
from .i2c import I2CDriver, i2c_address_option, i2c_bus_option

log = logging.getLogger(__name__)

ADDRESS = 0x10

# --- registers (datasheet Table 1) ----------------------------------------------------------------
REG_ALS_CONF = 0x00
REG_ALS_WH = 0x01
REG_ALS_WL = 0x02
REG_PSM = 0x03
REG_ALS = 0x04
REG_WHITE = 0x05
REG_ALS_INT = 0x06
WORD_LEN = 2

ALS_SD = 0x0001                #: bit 0: shut down
ALS_INT_EN = 0x0002
GAIN_SHIFT, GAIN_MASK = 11, 0b11
IT_SHIFT, IT_MASK = 6, 0b1111
PERS_SHIFT, PERS_MASK = 4, 0b11
CONF_POWER_ON = ALS_SD         #: VEML6030 sister datasheet: register 0 powers up as 0x0001
PSM_OFF = 0x0000
PSM_EN = 0x0001
PSM_MODE_SHIFT = 1

#: gain -> ALS_GAIN bits; integration time ms -> ALS_IT bits
GAIN_CODES: dict[float, int] = {2.0: 0b01, 1.0: 0b00, 0.25: 0b11, 0.125: 0b10}
IT_CODES: dict[int, int] = {25: 0b1100, 50: 0b1000, 100: 0b0000, 200: 0b0001, 400: 0b0010, 800: 0b0011}
GAINS = (0.125, 0.25, 1.0, 2.0)       #: least to most sensitive
INTEGRATION_TIMES_MS = (25, 50, 100, 200, 400, 800)
AUTO = "auto"

# --- resolution and correction ---------------------------------------------------------------------
#: lx/count at gain 2, 800 ms (rev 1.7; 0.0036 in older datasheets and libraries: 14 % low)
RESOLUTION_AT_MAX_LX = 0.0042
MAX_GAIN = 2.0
MAX_IT_MS = 800
COUNT_MAX = 0xFFFF             #: a saturated count
#: app note 84323: lux_c = A4·L^4 + A3·L^3 + A2·L^2 + A1·L
CORRECTION = (6.0135e-13, -9.3924e-9, 8.1488e-5, 1.0023)
CORRECTION_ABOVE_LX = 1000.0   #: applied when the linear illuminance is above this

# --- ranging (app note 84323 / Adafruit autolux) ---------------------------------------------------
LOW_COUNTS = 100               #: at or below: too dark for this setting, raise sensitivity
HIGH_COUNTS = 10000            #: above: shorten IT (linearity)
RANGE_START = (0.125, 100)     #: where the app note's procedure begins
#: both automatic: the app note's steps, least to most sensitive
APP_NOTE_LADDER: tuple[tuple[float, int], ...] = (
    (0.125, 25), (0.125, 50), (0.125, 100), (0.25, 100), (1.0, 100), (2.0, 100),
    (2.0, 200), (2.0, 400), (2.0, 800))

# --- timing -----------------------------------------------------------------------------------------
ENABLE_S = 0.0025              #: after clearing ALS_SD, before the first integration (datasheet)
SETTLE_INTEGRATIONS = 2        #: after a configuration write (as Adafruit's autolux waits)
BUS_TIME_S = 0.001             #: two 3-byte writes or two word reads at 100 kHz, roughly


def resolution(gain: float, it_ms: int) -> float:
    """lx per count: ``0.0042 · (800 / IT) · (2 / gain)``."""
    return RESOLUTION_AT_MAX_LX * (MAX_IT_MS / it_ms) * (MAX_GAIN / gain)


def correct(lux: float) -> float:
    """App note 84323's non-linearity correction of a linear illuminance."""
    a4, a3, a2, a1 = CORRECTION
    return ((a4 * lux + a3) * lux + a2) * lux * lux + a1 * lux


def count_to_lux(count: int, gain: float, it_ms: int) -> float:
    """Count -> lx: linear, corrected when the linear value is above 1000 lx."""
    lux = count * resolution(gain, it_ms)
    return correct(lux) if lux > CORRECTION_ABOVE_LX else lux


def conf_word(gain: float, it_ms: int) -> int:
    """ALS_CONF for a setting: powered on, persistence 1, no interrupt."""
    return (GAIN_CODES[gain] << GAIN_SHIFT) | (IT_CODES[it_ms] << IT_SHIFT)


def le_word(data: bytes) -> int:
    """A register's two bytes, LSB first."""
    return data[0] | (data[1] << 8)


def write_frame(register: int, value: int) -> bytes:
    """``S addr+W register LSB MSB P``: the bytes after the address."""
    return bytes([register, value & 0xFF, value >> 8])


@dataclass(frozen=True)
class Ladder:
    """The settings ranging may use, least to most sensitive, and where the app note starts."""

    steps: tuple[tuple[float, int], ...]
    start: int

    def target(self, lux: float) -> tuple[float, int]:
        """Where the app note's steps end for this (linear) illuminance: from the start, up
        while the count would be <= 100, or down while it would be > 10000."""
        def counts(step: tuple[float, int]) -> float:
            return lux / resolution(*step)

        if counts(self.steps[self.start]) <= LOW_COUNTS:
            return next((s for s in self.steps[self.start + 1:] if counts(s) > LOW_COUNTS), self.steps[-1])
        down = reversed(self.steps[:self.start + 1])
        return next((s for s in down if counts(s) <= HIGH_COUNTS), self.steps[0])

    def next_setting(self, count: int, current: tuple[float, int]) -> tuple[float, int] | None:
        """None when ``count`` at ``current`` is a reading; else the setting to switch to."""
        first, last = self.steps[0], self.steps[-1]
        if count >= COUNT_MAX:
            return None if current == first else first
        if LOW_COUNTS < count <= HIGH_COUNTS or (count <= LOW_COUNTS and current == last) or (
                count > HIGH_COUNTS and current == first):
            return None
        target = self.target(count * resolution(*current))
        return None if target == current else target


def ladder_for(gain: float | str, it_ms: int | str) -> Ladder:
    """The ranging ladder of a configuration (a single step when nothing is automatic)."""
    if gain == AUTO and it_ms == AUTO:
        return Ladder(APP_NOTE_LADDER, APP_NOTE_LADDER.index(RANGE_START))
    if gain == AUTO:
        assert isinstance(it_ms, int)
        return Ladder(tuple((g, it_ms) for g in GAINS), 0)
    assert isinstance(gain, float)
    if it_ms == AUTO:
        return Ladder(tuple((gain, t) for t in INTEGRATION_TIMES_MS), INTEGRATION_TIMES_MS.index(100))
    assert isinstance(it_ms, int)
    return Ladder(((gain, it_ms),), 0)


def show_setting(setting: tuple[float, int]) -> str:
    gain, it_ms = setting
    return f"gain {gain:g}, {it_ms} ms"


@dataclass(frozen=True)
class NumberOrAuto(Option):
    """An option that is one of a set of numbers (``kind`` int or float) or ``"auto"``; numbers
    may come as TOML numbers or as text (``--option gain=0.25``)."""

    def _coerce(self, raw: Any) -> Any:
        if isinstance(raw, str) and raw.strip().lower() == AUTO:
            return AUTO
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(f"option {self.key}: {raw!r} is not a number or 'auto'") from None
        if self.kind is int and value.is_integer():
            return int(value)
        return value

    @property
    def kind_label(self) -> str:
        return f"{self.kind.__name__} or 'auto'"


class VEML7700(I2CDriver):
    """VEML7700 ambient light. Unit: lx."""

    name = "veml7700"
    chip_name = "VEML7700"
    description = "Vishay VEML7700 ambient light sensor over I2C (dark night to full sun with auto ranging)"
    metrics = (Metric("illuminance", "Illuminance", value_type=ValueType.DOUBLE, annotation="lx"),)
    options = (
        i2c_address_option((ADDRESS,), "I2C address (fixed)"),
        i2c_bus_option(),
        NumberOrAuto("gain", float, AUTO, "ALS gain 0.125, 0.25, 1 or 2, or auto (app note ranging)",
                     choices=(*GAINS, AUTO)),
        NumberOrAuto("integration_time", int, AUTO, "integration time ms 25, 50, 100, 200, 400, 800, "
                     "or auto (app note ranging)", choices=(*INTEGRATION_TIMES_MS, AUTO)),
    )
    read_time_s = ENABLE_S + SETTLE_INTEGRATIONS * MAX_IT_MS / 1000 + BUS_TIME_S
    min_interval_s = MAX_IT_MS / 1000
    retry = RetryPolicy(attempts=3, spacing_s=0.01)
    simulator = "pibridge.drivers.fakes.veml7700:simulate"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """The longest integration the configuration may use: a start after a configuration
        write waits 2.5 ms + 2 IT; a new count comes every IT. Ranging takes up to 2 extra
        attempts (saturated -> least sensitive -> the app note's setting)."""
        ladder = ladder_for(config["gain"], config["integration_time"])
        longest = max(it for _, it in ladder.steps) / 1000
        attempts = 3 if len(ladder.steps) > 1 else 2
        return Timing(ENABLE_S + SETTLE_INTEGRATIONS * longest + BUS_TIME_S, longest,
                      RetryPolicy(attempts=attempts, spacing_s=cls.retry.spacing_s))

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        self.ladder = ladder_for(self.config["gain"], self.config["integration_time"])
        self.setting: tuple[float, int] = self.ladder.steps[self.ladder.start]
        self._written: int | None = None     # ALS_CONF as last written, None: write it at start

    def _transfer_failed(self) -> None:
        self._written = None

    def start(self) -> float:
        """Write the configuration when the chip does not have it; returns the seconds until a
        count under it is ready (0 when it already is: the chip converts continuously)."""
        if self._written is not None:
            return 0.0
        conf = conf_word(*self.setting)
        self.write_bytes(write_frame(REG_PSM, PSM_OFF), "power-saving mode write")
        self.write_bytes(write_frame(REG_ALS_CONF, conf), "configuration write")
        self._written = conf
        return ENABLE_S + SETTLE_INTEGRATIONS * self.setting[1] / 1000 + BUS_TIME_S

    def collect(self) -> Sample:
        """{illuminance: lx} from the newest count, or a range change (`NotReadyError`)."""
        if self._written is None:
            raise NotReadyError(f"{self.label}: collect() before start()")
        conf = le_word(self.read_registers(REG_ALS_CONF, WORD_LEN, "configuration read"))
        if conf != self._written:
            log.warning("%s: configuration register reads 0x%04x, not 0x%04x (power glitch?); "
                        "configuring again", self.label, conf, self._written)
            self._written = None
            raise NotReadyError(f"{self.label}: lost its configuration (ALS_CONF 0x{conf:04x}); "
                                "configuring again on the next attempt")
        count = le_word(self.read_registers(REG_ALS, WORD_LEN, "count read"))
        target = self.ladder.next_setting(count, self.setting)
        if target is not None:
            log.debug("%s: count %d at %s -> %s", self.label, count, show_setting(self.setting),
                      show_setting(target))
            previous, self.setting, self._written = self.setting, target, None
            raise NotReadyError(f"{self.label}: count {count} at {show_setting(previous)}; "
                                f"re-ranged to {show_setting(target)}, reading again")
        if count >= COUNT_MAX:
            hint = ("above the chip's range (its least sensitive setting)" if self.setting == (0.125, 25)
                    else "use a lower gain, a shorter integration time, or auto")
            raise ImplausibleValueError(f"{self.label}: count saturated (65535) at "
                                        f"{show_setting(self.setting)}: {hint}")
        return {"illuminance": count_to_lux(count, *self.setting)}
