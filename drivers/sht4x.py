"""Sensirion SHT4x (SHT40 / SHT41 / SHT45) temperature and humidity over I2C (datasheet v6, §4).

No registers: the master writes one command byte, and reads the result later as a plain 6-byte
read in its own transaction (never a repeated START straight after the command: the chip NACKs
its read header until the measurement is done, and Linux reports that as errno 121)::

    S addr+W cmd P     ...measuring (NACKs reads)...     S addr+R T_msb T_lsb CRC RH_msb RH_lsb CRC P

One attempt in two phases: ``start()`` writes the measure command of the configured precision and
returns the datasheet *maximum* duration; ``collect()`` reads 6 bytes, checks both CRCs and
converts with the datasheet formulas (divide by 2^16 - 1; RH cropped to 0..100 %RH as the
datasheet's own pseudo code does).

Heater (optional, ``heater`` = a power/duration pair): it dries a condensed sensor, so it runs
only when the previous reading was at or above `HEATER_MIN_RH`, at most once per
``heater_interval`` seconds (the datasheet's 10 % duty-cycle limit is a `check_config` rule), or
once on `SHT4x.request_heater`. The heater command ends with a measurement taken while hot:
that frame is checked and thrown away (never a sample), and the sensor is left to cool for
`HEATER_COOLDOWN_S` before the next measurement (`NotReadyError` meanwhile).

Error mapping and recovery:

* NACK on the first transfer -> `DeviceNotFoundError`; NACK of the result read right after the
  command -> `NotReadyError` (still measuring: collected too early); other failures -> `BusError`.
* a CRC mismatch -> `BadDataError`.
* after a CRC error, a failed transfer or a result still missing on two attempts in a row, the
  next ``start()`` sends a soft reset (0x94, the chip is deaf for ~1 ms) instead of a
  measurement, logs one line, and its ``collect()`` says `NotReadyError` ("measuring on the next
  attempt"); the caller's retry then measures. The chip
  keeps no configuration, so nothing else is lost in a power glitch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .base import Metric, Option, OptionProblem, RetryPolicy, Sample, Timing
from .errors import NotReadyError
from .i2c import CommandId, I2CDriver, i2c_address_option, i2c_bus_option
from .sensirion import (
    SERIAL_FRAME_LEN,
    TICKS_FULL_SCALE,
    SingleShotSteps,
    check_words,
    parse_serial,
    ticks_to_celsius,
)

log = logging.getLogger(__name__)

ADDRESSES = (0x44, 0x45, 0x46)  #: fixed by part number: -AD1x, -BD1B, -CD1B (no address pin)

# --- commands (datasheet §4.5, one byte each) -----------------------------------------------------
CMD_MEASURE = {"high": 0xFD, "medium": 0xF6, "low": 0xE0}  #: T + RH, by repeatability (precision)
CMD_SERIAL = 0x89
CMD_SOFT_RESET = 0x94
#: heater option -> (command, power mW, duration s); each ends with a high-precision measurement
HEATER_SETTINGS: dict[str, tuple[int, int, float]] = {
    "200mW-1s": (0x39, 200, 1.0), "200mW-100ms": (0x32, 200, 0.1),
    "110mW-1s": (0x2F, 110, 1.0), "110mW-100ms": (0x24, 110, 0.1),
    "20mW-1s": (0x1E, 20, 1.0), "20mW-100ms": (0x15, 20, 0.1),
}
HEATER_OFF = "off"

# --- timing (datasheet Table 4 maximum; seconds) ------------------------------------------------
MEASUREMENT_MAX_S = {"high": 0.0083, "medium": 0.0045, "low": 0.0017}
HEATER_OVERHEAD = 1.1        #: heater commands take up to 1.1 s / 0.11 s (datasheet, Sensirion's driver)
SOFT_RESET_S = 0.001
SERIAL_WAIT_S = 0.001
BUS_TIME_S = 0.0005          #: a 1-byte write and a 6-byte read at 100 kHz, roughly
STUCK_AFTER = 2              #: consecutive "not there yet" results before the chip is reset
HEATER_MAX_DUTY = 0.1        #: datasheet: heater on at most 10 % of the time
HEATER_COOLDOWN_S = 20.0     #: no measurement this long after a pulse (about 10 thermal time constants)
HEATER_MIN_RH = 95.0         #: %RH: a reading this high means a wet (condensed) sensor worth drying
HEATER_INTERVAL_DEFAULT_S = 3600
HEATER_INTERVAL_MAX_S = 7 * 86400

# --- conversion (datasheet §4.6; the temperature formula is `sensirion.ticks_to_celsius`) ---------
RH_OFFSET, RH_SPAN = -6.0, 125.0
RH_MIN, RH_MAX = 0.0, 100.0


def ticks_to_humidity(s_rh: int) -> float:
    """Datasheet: ``RH = -6 + 125 · S_RH / (2^16 - 1)`` %RH, cropped to 0..100 as the datasheet
    advises (the formula spans -6..119). Adafruit crops too but returns the int 0 or 100;
    Sensirion's own drivers and Linux do not crop."""
    return min(RH_MAX, max(RH_MIN, RH_OFFSET + RH_SPAN * s_rh / TICKS_FULL_SCALE))


def parse_measurement(data: bytes, label: str = "SHT4x") -> tuple[int, int]:
    """(S_T, S_RH) from the 6-byte frame, CRCs checked (`BadDataError`)::

        byte: 0      1      2      3       4       5
              T_msb  T_lsb  CRC_T  RH_msb  RH_lsb  CRC_RH
    """
    s_t, s_rh = check_words(data, 2, label)
    return s_t, s_rh


def convert(data: bytes, label: str = "SHT4x") -> tuple[float, float]:
    """6-byte frame -> (°C, %RH)."""
    s_t, s_rh = parse_measurement(data, label)
    return ticks_to_celsius(s_t), ticks_to_humidity(s_rh)


def _name_serial(data: bytes) -> str | None:
    serial = parse_serial(data)
    return None if serial is None else f"SHT4x (serial 0x{serial:08x})"


class SHT4x(I2CDriver):
    """SHT40/41/45 single-shot reads. Units: °C, %RH.

    ``SHT4x(bus=None, clock=time.monotonic, **options)``: ``bus`` is an smbus2.SMBus-like object
    (never closed by the driver); ``clock`` (seconds) spaces the heater pulses.
    """

    name = "sht4x"
    chip_name = "SHT4x"
    description = "Sensirion SHT40/41/45 temperature and humidity over I2C, single shot"
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        i2c_address_option(ADDRESSES, "I2C address, fixed by the part number (0x44 most parts, "
                           "0x45 SHT40-BD1B, 0x46 SHT40-CD1B)"),
        i2c_bus_option(),
        Option("precision", str, "high", "repeatability: high (8.3 ms), medium (4.5 ms), low (1.7 ms)",
               choices=tuple(CMD_MEASURE)),
        Option("heater", str, HEATER_OFF, "heater pulse power-duration to dry a condensed sensor "
               f"(runs only after a reading >= {HEATER_MIN_RH:g} %RH), or off",
               choices=(HEATER_OFF, *HEATER_SETTINGS)),
        Option("heater_interval", int, HEATER_INTERVAL_DEFAULT_S, "seconds between two heater "
               "pulses at least (the duty cycle must stay <= 10 %)", minimum=1,
               maximum=HEATER_INTERVAL_MAX_S),
    )
    read_time_s = MEASUREMENT_MAX_S["high"] + BUS_TIME_S
    min_interval_s = 0.01
    retry = RetryPolicy(attempts=2, spacing_s=0.01)
    simulator = "pibridge.drivers.fakes.sht4x:simulate"
    chip_id = CommandId(bytes([CMD_SERIAL]), SERIAL_FRAME_LEN, SERIAL_WAIT_S, _name_serial)

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """The measurement of the configured precision; with a heater, a start may take a whole
        pulse (up to 1.1 s)."""
        read_time = MEASUREMENT_MAX_S[config["precision"]] + BUS_TIME_S
        if config["heater"] != HEATER_OFF:
            read_time = max(read_time, HEATER_SETTINGS[config["heater"]][2] * HEATER_OVERHEAD + BUS_TIME_S)
        return Timing(read_time, cls.min_interval_s, cls.retry)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """The heater's duty cycle stays within the datasheet's 10 %."""
        if config["heater"] == HEATER_OFF:
            return []
        duration = HEATER_SETTINGS[config["heater"]][2]
        shortest = duration / HEATER_MAX_DUTY
        if config["heater_interval"] < shortest:
            return [OptionProblem("heater_interval", f"option heater_interval: {config['heater_interval']} s "
                                  f"puts heater {config['heater']} above the datasheet's 10 % duty cycle "
                                  f"(at least {shortest:g} s)")]
        return []

    def __init__(self, bus: Any = None, clock: Callable[[], float] = time.monotonic, **options: Any) -> None:
        super().__init__(bus, **options)
        self.clock = clock
        self.precision: str = self.config["precision"]
        self._heater = HEATER_SETTINGS.get(self.config["heater"])
        self._steps = SingleShotSteps(STUCK_AFTER)   # phase: "measure", "heater", "reset"
        self._last_pulse: float | None = None
        self._heater_requested = False
        self._last_humidity: float | None = None

    # -- heater --------------------------------------------------------------------------------
    def request_heater(self) -> None:
        """Run one heater pulse at the next ``start()`` (still within the 10 % duty cycle)."""
        if self._heater is None:
            raise NotReadyError(f"{self.label}: no heater configured (option heater = off)")
        self._heater_requested = True

    def _heater_due(self, now: float) -> bool:
        if self._heater is None:
            return False
        duration = self._heater[2]
        since = None if self._last_pulse is None else now - self._last_pulse
        if self._heater_requested:
            return since is None or since >= duration / HEATER_MAX_DUTY
        wet = self._last_humidity is not None and self._last_humidity >= HEATER_MIN_RH
        return wet and (since is None or since >= self.config["heater_interval"])

    # -- recovery ------------------------------------------------------------------------------
    def _transfer_failed(self) -> None:
        self._steps.transfer_failed()

    # -- one reading, in two phases -------------------------------------------------------------
    def start(self) -> float:
        """Send the measure command (or, after a failure, a soft reset; or a due heater pulse);
        returns the seconds until ``collect()`` may read."""
        steps = self._steps
        steps.phase = None
        reason = steps.reset_due()
        if reason is not None:
            self.write_byte(CMD_SOFT_RESET, "soft reset")
            log.warning("%s: soft reset after %s", self.label, reason)
            steps.phase = "reset"
            return SOFT_RESET_S
        now = self.clock()
        if self._last_pulse is not None and now - self._last_pulse < HEATER_COOLDOWN_S:
            raise NotReadyError(f"{self.label}: cooling down after a heater pulse "
                                f"({HEATER_COOLDOWN_S - (now - self._last_pulse):.0f} s left)")
        if self._heater is not None and self._heater_due(now):
            command, power, duration = self._heater
            self.write_byte(command, "heater command")
            log.info("%s: heater pulse %d mW for %g s to dry the sensor", self.label, power, duration)
            self._last_pulse = now
            self._heater_requested = False
            steps.phase = "heater"
            return duration * HEATER_OVERHEAD + BUS_TIME_S
        self.write_byte(CMD_MEASURE[self.precision], "measurement command")
        steps.phase = "measure"
        return MEASUREMENT_MAX_S[self.precision] + BUS_TIME_S

    def collect(self) -> Sample:
        """The measurement ``start`` began: {temperature °C, humidity %RH}."""
        phase = self._steps.take_phase(self.label)
        if phase == "reset":
            raise NotReadyError(f"{self.label}: soft reset done; measuring on the next attempt")
        s_t, s_rh = self._steps.result(lambda: self.read_bytes(6), self.label)
        temperature, humidity = ticks_to_celsius(s_t), ticks_to_humidity(s_rh)
        if phase == "heater":
            raise NotReadyError(f"{self.label}: heater pulse done; its reading ({temperature:.1f} °C) is "
                                "not ambient and is not sent")
        self._last_humidity = humidity
        return {"temperature": temperature, "humidity": humidity}
