"""Sensirion SCD30 CO₂ module (plus temperature and humidity) over I2C (interface description
v1.0, May 2020).

Every exchange is a 16-bit command (optionally one argument word + CRC-8) in its own
transaction, then, for a reply, **at least 3 ms** later a separate read of words each followed by
its CRC (no repeated START: the SCD30 does not support it). The driver never sleeps: the 3 ms are
handed to the caller, as `start()`'s return value and as `CollectAgain` between the steps of one
reading.

The module measures continuously by itself every ``measurement_interval`` seconds; interval,
self-calibration, altitude (and "measuring") are kept in its non-volatile memory, so the set-up
on first use reads each setting back and writes only the ones that differ (no flash write on a
restart), then (re)starts continuous measurement with the ambient pressure (0 = none).

One reading: [restart with the new pressure if it moved ≥ 1 hPa], get_data_ready, 3 ms, read
the word (0: `NotReadyError`, never the last value again), read_measurement, 3 ms, read 18 bytes.

**Raspberry Pi: use a software I2C bus.** The Pi's hardware I2C controller (i2c-bcm2835)
mishandles clock stretching, which the SCD30 does for up to 30 ms per frame (150 ms during its
daily calibration): bits are corrupted, so CRC errors come in bursts, and the module may vanish
until power-cycled. The fix is the kernel's bit-banged ``i2c-gpio`` bus, which honours stretching:
add to ``/boot/firmware/config.txt`` (``/boot/config.txt`` before Bookworm)::

    dtoverlay=i2c-gpio,bus=3,i2c_gpio_sda=23,i2c_gpio_scl=24,i2c_gpio_delay_us=2

wire the SCD30 to those pins (GPIO 23 = header pin 16, GPIO 24 = pin 18; 3V3 and GND as usual),
reboot, and set ``i2c_bus = 3`` in the sensor's options (the bus appears as /dev/i2c-3). When the
driver sees the symptom (`CRC_BURST` CRC errors among the last `CRC_WINDOW` transfers) it says
so once, in one log line naming this fix. Lowering the hardware bus to 50 kHz
(``dtparam=i2c_arm_baudrate=50000``) helps but does not cure it (raspberrypi/linux #4884).

Errors and recovery (each recovery is announced once, in one log line):

* CRC mismatch → `BadDataError`; NACK during the 3 ms → `NotReadyError`; nothing answers →
  `DeviceNotFoundError` / `BusError`.
* Data ready not set for `LOST_AFTER_PERIODS` intervals → `MeasurementStoppedError`; the next
  reading sets the module up and starts continuous measurement again.
* Data ready set but the frame is the one already sent (byte for byte) → `DataReadyStuckError`;
  the driver soft-resets the module at once and sets it up on the next reading; until
  `SOFT_RESET_S` have passed (the module boots, deaf) a reading is `NotReadyError` without bus
  traffic.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping
from typing import Any

from pibridge.protocol import ValueType

from .base import (
    CollectAgain,
    Metric,
    Option,
    OptionProblem,
    RetryPolicy,
    Sample,
    SteppedReading,
    Steps,
    Timing,
)
from .crc import crc8_sensirion
from .errors import BadDataError, ConfigurationError, NotReadyError
from .i2c import I2CDriver, i2c_address_option, i2c_bus_option
from .sensirion import AmbientPressure, check_words

log = logging.getLogger(__name__)

ADDRESS = 0x61

# --- commands (interface description §1.4) -------------------------------------------------------
CMD_START_CONTINUOUS = 0x0010        #: argument: ambient pressure in mbar, 0 = no compensation
CMD_STOP_CONTINUOUS = 0x0104
CMD_MEASUREMENT_INTERVAL = 0x4600    #: write: set (2–1800 s); command alone: read back
CMD_GET_DATA_READY = 0x0202
CMD_READ_MEASUREMENT = 0x0300
CMD_SELF_CALIBRATION = 0x5306        #: write 1/0; command alone: read back
CMD_FORCED_RECALIBRATION = 0x5204
CMD_TEMPERATURE_OFFSET = 0x5403
CMD_ALTITUDE = 0x5102                #: metres
CMD_FIRMWARE_VERSION = 0xD100
CMD_SOFT_RESET = 0xD304

# --- timing (seconds) ----------------------------------------------------------------------------
COMMAND_TO_READ_S = 0.003     #: ≥ 3 ms between a command and the read of its reply
AFTER_WRITE_S = 0.005         #: before the next command after a write (Adafruit waits this much)
SOFT_RESET_S = 2.0            #: after soft reset the module boots (deaf); Sensirion's driver waits 2 s
LOST_AFTER_PERIODS = 3

# --- words and ranges ----------------------------------------------------------------------------
WORD_BYTES = 2
FRAME_BYTES = 3
MEASUREMENT_WORDS = 6         #: CO₂, T, RH: two words (one float32) each
INTERVAL_MIN_S = 2
INTERVAL_MAX_S = 1800
ALTITUDE_MAX_M = 3000
PRESSURE_MIN_PA = 70_000      #: 700 mbar
PRESSURE_MAX_PA = 140_000     #: 1400 mbar
PA_PER_MBAR = 100
FRC_MIN_PPM = 400
FRC_MAX_PPM = 2000
PRESSURE_STEP_PA = 100.0      #: a handed-in pressure is sent again when it moved this much
NO_COMPENSATION = 0
#: the Pi clock-stretching symptom: this many CRC errors among the last CRC_WINDOW transfers
CRC_BURST = 3
CRC_WINDOW = 10
SOFTWARE_I2C_FIX = ("dtoverlay=i2c-gpio,bus=3,i2c_gpio_sda=23,i2c_gpio_scl=24,i2c_gpio_delay_us=2 in "
                    "config.txt and option i2c_bus = 3 (see the scd30 driver's docs)")


class MeasurementStoppedError(NotReadyError):
    """No new measurement for several intervals: the module stopped measuring. The next reading
    starts continuous measurement again."""


class DataReadyStuckError(NotReadyError):
    """Data ready set, but the frame is the one already sent: the module was soft-reset."""


# --- wire formats and maths (pure functions) ------------------------------------------------------
def command_bytes(command: int, argument: int | None = None) -> bytes:
    """A command, optionally with its argument word and CRC::

        cmd MSB | cmd LSB [| arg MSB | arg LSB | CRC-8(arg)]
    """
    data = bytes(((command >> 8) & 0xFF, command & 0xFF))
    if argument is None:
        return data
    word = bytes(((argument >> 8) & 0xFF, argument & 0xFF))
    return data + word + bytes((crc8_sensirion(word),))


def words_from_frame(data: bytes, count: int) -> list[int]:
    """``count`` words from a reply, each checked against the CRC byte behind it::

        w0 MSB | w0 LSB | CRC | w1 MSB | w1 LSB | CRC | ...

    (`sensirion.check_words`) `BadDataError` names the first word whose CRC does not match; the
    caller adds what it was reading."""
    return list(check_words(data, count))


def decode_measurement(data: bytes) -> tuple[float, float, float]:
    """The 18-byte read_measurement reply -> (CO₂ ppm, °C, %RH)::

        CO2: MMSB MLSB CRC LMSB LLSB CRC | T: (same) | RH: (same)

    each float = IEEE-754 float32, big-endian, from its two words without the CRC bytes."""
    words = words_from_frame(data, MEASUREMENT_WORDS)
    packed = b"".join(struct.pack(">H", w) for w in words)
    co2, temperature, humidity = struct.unpack(">fff", packed)
    return co2, temperature, humidity


def firmware_version(word: int) -> str:
    """The firmware version word -> "major.minor" (major in the high byte)."""
    return f"{word >> 8}.{word & 0xFF}"


def pressure_argument(pascal: float | None) -> int:
    """Pa -> start_continuous_measurement's argument in mbar (0 = no compensation)."""
    return NO_COMPENSATION if pascal is None else round(pascal / PA_PER_MBAR)


# --- the driver ----------------------------------------------------------------------------------


class SCD30(I2CDriver):
    """SCD30 in continuous measurement. Units: ppm (custom metric), °C, %RH.

    ``SCD30(bus=None, *, clock=time.monotonic, **options)``: ``bus`` an smbus2.SMBus-like object
    (never closed by the driver); ``clock`` only read, to notice a module that stopped measuring.
    On a Raspberry Pi use the software I2C bus (module docstring)."""

    name = "scd30"
    chip_name = "SCD30"
    description = "Sensirion SCD30 CO2, temperature and humidity over I2C (Pi: use an i2c-gpio bus)"
    metrics = (
        Metric("co2", "CO2 concentration", value_type=ValueType.DOUBLE, annotation="ppm"),
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        i2c_address_option((ADDRESS,), "I2C address (fixed 0x61)"),
        i2c_bus_option(),
        Option("measurement_interval", int, INTERVAL_MIN_S, "seconds between the module's own "
               "measurements (stored in the module)", minimum=INTERVAL_MIN_S, maximum=INTERVAL_MAX_S),
        Option("altitude", int, None, "altitude in metres for pressure compensation (or give "
               "ambient_pressure; unset: the module's stored setting)", minimum=0, maximum=ALTITUDE_MAX_M),
        Option("ambient_pressure", float, None, "ambient pressure in Pa for compensation (overrides "
               "altitude; or take it from another sensor with pressure_from)",
               minimum=PRESSURE_MIN_PA, maximum=PRESSURE_MAX_PA),
        Option("self_calibration", bool, None, "automatic self-calibration (needs 7 days with an "
               "hour of fresh air daily; unset: the module's stored setting)"),
    )
    #: the set-up reading: 4 read-backs, up to 3 writes, start, data ready, measurement
    read_time_s = 4 * COMMAND_TO_READ_S + 4 * AFTER_WRITE_S + 2 * COMMAND_TO_READ_S + 0.01
    min_interval_s = INTERVAL_MIN_S
    retry = RetryPolicy(attempts=2, spacing_s=0.1)
    simulator = "pibridge.drivers.fakes.scd30:simulate"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """No new measurement before one interval; a CRC error is retried 0.1 s later (the
        clock-stretching glitch passes)."""
        return Timing(cls.read_time_s, float(config["measurement_interval"]), cls.retry)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        if config["altitude"] is not None and config["ambient_pressure"] is not None:
            return [OptionProblem("ambient_pressure", "option ambient_pressure: give altitude or "
                                  "ambient_pressure, not both (the pressure overrides the altitude)")]
        return []

    @classmethod
    def identify(cls, bus: Any, address: int, sleep: Callable[[float], None]) -> str | None:
        """For `pibridge scan`: the firmware version (allowed at any time), or None."""
        from smbus2 import i2c_msg

        try:
            bus.i2c_rdwr(i2c_msg.write(address, command_bytes(CMD_FIRMWARE_VERSION)))
            sleep(COMMAND_TO_READ_S)
            reply = i2c_msg.read(address, FRAME_BYTES)
            bus.i2c_rdwr(reply)
            (word,) = words_from_frame(bytes(reply), 1)
        except (OSError, BadDataError):
            return None
        return f"SCD30 (CO2, firmware {firmware_version(word)})"

    def __init__(self, bus: Any = None, *, clock: Callable[[], float] = time.monotonic,
                 **options: Any) -> None:
        super().__init__(bus, **options)
        self.clock = clock
        self.interval_s = float(self.config["measurement_interval"])
        self.firmware: str | None = None
        self._set_up = False
        self._steps = SteppedReading(self.label)
        self._last_frame: bytes | None = None
        self._last_fresh: float | None = None
        self._pressure = AmbientPressure(self.label, "module", self.config["ambient_pressure"],
                                         PRESSURE_MIN_PA, PRESSURE_MAX_PA, PRESSURE_STEP_PA)
        self._crc_history: deque[bool] = deque(maxlen=CRC_WINDOW)
        self._reset_at: float | None = None   #: when the last soft reset was sent (clock)
        self.stretch_hint_given = False
        self.setups = 0
        self.writes = 0      #: settings written to the module's flash since construction

    # -- pressure compensation from another sensor ------------------------------------------------
    def set_ambient_pressure(self, pascal: float) -> None:
        """Ambient pressure (Pa) from another sensor: the next reading restarts continuous
        measurement with it if it moved `PRESSURE_STEP_PA` or more. No bus traffic here."""
        self._pressure.offer(pascal)

    # -- one reading, in steps --------------------------------------------------------------------
    def start(self) -> float:
        """Begin one reading: its first command is sent; returns the seconds until `collect`.
        Within `SOFT_RESET_S` of a soft reset: `NotReadyError` (the module is still booting)."""
        self._steps.abandon()
        if self._reset_at is not None:
            left = self._reset_at + SOFT_RESET_S - self.clock()
            if left > 0:
                raise NotReadyError(f"{self.label}: soft reset sent; the module boots, ready in {left:.1f} s")
            self._reset_at = None
        return self._steps.begin(self._reading())

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        """The next step of the reading: `CollectAgain` between steps, the sample at the end."""
        return self._steps.advance()

    def _reading(self) -> Steps:
        just_set_up = False
        if not self._set_up:
            yield from self._set_up_module()
            just_set_up = True
        elif self._pressure.due:
            yield from self._start_continuous()
        (ready,) = yield from self._read_words(CMD_GET_DATA_READY, 1, "data-ready read")
        if not ready:
            if just_set_up:
                raise NotReadyError(f"{self.label}: continuous measurement started; the first "
                                    f"measurement is due within {self.interval_s:g} s")
            self._check_still_measuring()
            raise NotReadyError(f"{self.label}: no new measurement since the last one (data ready "
                                f"0; one every {self.interval_s:g} s)")
        self._send(CMD_READ_MEASUREMENT, "measurement read")
        yield COMMAND_TO_READ_S
        data = self.read_bytes(MEASUREMENT_WORDS * FRAME_BYTES, "measurement read")
        if data == self._last_frame:
            self._send(CMD_SOFT_RESET, "soft reset")
            self._reset_at = self.clock()
            self._set_up = False
            log.warning("%s: data ready is set but the module repeats its last measurement (stuck "
                        "data-ready flag): soft-reset; set up again on the next reading", self.label)
            raise DataReadyStuckError(f"{self.label}: data ready set but the measurement is the one "
                                      "already sent (stuck data-ready flag); the module was soft-reset")
        co2, temperature, humidity = self._decode(data)
        self._last_frame = data
        self._last_fresh = self.clock()
        return {"co2": co2, "temperature": temperature, "humidity": humidity}

    def _decode(self, data: bytes) -> tuple[float, float, float]:
        try:
            values = decode_measurement(data)
        except BadDataError as exc:
            self._crc_seen(True)
            raise BadDataError(f"{self.label}: measurement read: {exc}") from None
        self._crc_seen(False)
        return values

    def _check_still_measuring(self) -> None:
        if self._last_fresh is None:
            return
        silent = self.clock() - self._last_fresh
        if silent >= LOST_AFTER_PERIODS * self.interval_s:
            self._set_up = False
            log.warning("%s: no new measurement for %.0f s: the module stopped measuring; starting "
                        "it again on the next reading", self.label, silent)
            raise MeasurementStoppedError(
                f"{self.label}: no new measurement for {silent:.0f} s ({LOST_AFTER_PERIODS} intervals): "
                "continuous measurement is started again on the next reading")

    def _set_up_module(self) -> Generator[float, None, None]:
        """Firmware version (once), then each stored setting read back and written only if it
        differs, then (re)start continuous measurement with the pressure."""
        if self.firmware is None:
            (word,) = yield from self._read_words(CMD_FIRMWARE_VERSION, 1, "firmware version read")
            self.firmware = firmware_version(word)
            log.info("%s: SCD30 firmware %s", self.label, self.firmware)
        config = self.config
        wanted = [(CMD_MEASUREMENT_INTERVAL, config["measurement_interval"], "measurement interval")]
        if config["self_calibration"] is not None:
            wanted.append((CMD_SELF_CALIBRATION, int(config["self_calibration"]), "self-calibration"))
        if config["altitude"] is not None:
            wanted.append((CMD_ALTITUDE, config["altitude"], "altitude"))
        for command, value, what in wanted:
            (stored,) = yield from self._read_words(command, 1, f"{what} read")
            if stored != value:
                self.write_bytes(command_bytes(command, value), f"{what} write")
                self.writes += 1
                yield AFTER_WRITE_S
        yield from self._start_continuous()
        self._set_up = True
        self.setups += 1
        self._last_fresh = self.clock()
        if self.setups > 1:
            log.info("%s: continuous measurement started again", self.label)

    # -- explicit commands (never part of a reading) ----------------------------------------------
    def forced_recalibration(self, target_ppm: int) -> None:
        """Forced recalibration: after ≥ 2 minutes of continuous measurement at a known, steady
        CO₂ level, tell the module that level (400–2000 ppm). An explicit command, never part of
        a reading; the module keeps measuring."""
        if not FRC_MIN_PPM <= target_ppm <= FRC_MAX_PPM:
            raise ConfigurationError(f"{self.label}: forced recalibration target {target_ppm} ppm is "
                                     f"outside {FRC_MIN_PPM}–{FRC_MAX_PPM} ppm")
        self.write_bytes(command_bytes(CMD_FORCED_RECALIBRATION, target_ppm), "forced recalibration")
        log.info("%s: forced recalibration to %d ppm", self.label, target_ppm)

    def _start_continuous(self) -> Generator[float, None, None]:
        self.write_bytes(command_bytes(CMD_START_CONTINUOUS, pressure_argument(self._pressure.wanted)),
                         "start continuous measurement")
        self._pressure.sent = self._pressure.wanted
        yield AFTER_WRITE_S

    # -- transfers ---------------------------------------------------------------------------------
    def _send(self, command: int, doing: str) -> None:
        self.write_bytes(command_bytes(command), doing)

    def _read_words(self, command: int, count: int, doing: str) -> Generator[float, None, list[int]]:
        """The command in one transaction, ≥ 3 ms (the caller's wait), the reply in another."""
        self._send(command, doing)
        yield COMMAND_TO_READ_S
        data = self.read_bytes(count * FRAME_BYTES, doing)
        try:
            words = words_from_frame(data, count)
        except BadDataError as exc:
            self._crc_seen(True)
            raise BadDataError(f"{self.label}: {doing}: {exc}") from None
        self._crc_seen(False)
        return words

    def _crc_seen(self, failed: bool) -> None:
        """Track CRC outcomes; the Pi's clock-stretching symptom is named once, with its fix."""
        self._crc_history.append(failed)
        if failed and not self.stretch_hint_given and sum(self._crc_history) >= CRC_BURST:
            self.stretch_hint_given = True
            log.warning("%s: CRC errors in bursts (%d of the last %d transfers on I2C bus %d): the "
                        "Raspberry Pi's I2C controller corrupts bits while the SCD30 stretches the "
                        "clock; use the software I2C bus: %s", self.label, sum(self._crc_history),
                        len(self._crc_history), self.config["i2c_bus"], SOFTWARE_I2C_FIX)
