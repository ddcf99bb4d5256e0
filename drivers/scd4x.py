"""Sensirion SCD40/SCD41 CO₂ (plus temperature and humidity) over I2C (datasheet v1.3, §3).

The chip is not a register file: every exchange is a 16-bit command, then (for a *read*) the
command's execution time, then a **separate** plain read of words, each followed by its CRC-8
(`pibridge.drivers.crc.crc8_sensirion`, §7.4 of hardware.md). The driver never sleeps: each wait
is handed to the caller, as `start()`'s return value and as `CollectAgain` from `collect()`
between the steps of one reading.

Modes (option ``mode``):

=============  ===============================================================================
periodic       the chip measures every 5 s by itself (start_periodic_measurement, once)
low_power      the same every ~30 s (start_low_power_periodic_measurement, once)
single_shot    SCD41 only: each reading sends measure_single_shot and waits its 5 s
=============  ===============================================================================

Set-up (first use, and again after the chip lost it): stop_periodic_measurement, the 500 ms the
chip is deaf after it, serial number and variant (an SCD40 refuses ``single_shot`` here, in one
line), then the settings the profile gives (temperature offset, altitude or ambient pressure,
automatic self-calibration) and the start of periodic measurement. Settings are volatile: they are
written at set-up and never persisted (persist_settings wears the EEPROM, ≥ 2000 cycles; call
`SCD4x.persist_settings` explicitly). In periodic mode the chip takes only read_measurement,
get_data_ready_status, stop_periodic_measurement and set_ambient_pressure (§11.3), which is all a
reading sends.

One reading (periodic modes): [set_ambient_pressure if it moved ≥ 1 hPa], get_data_ready_status,
1 ms, read the status; not ready → `NotReadyError` (the measurement already sent is never sent
again: reading it emptied the chip's buffer); ready → read_measurement, 1 ms, read 3 words.

Errors and recovery (each recovery is announced once, in one log line):

* CRC mismatch → `BadDataError`; NACK while the chip still executes a command → `NotReadyError`;
  nothing answers → `DeviceNotFoundError` (before first contact) or `BusError`.
* No new measurement for `LOST_AFTER_PERIODS` periods → `MeasurementStoppedError`: the chip lost
  its configuration (a power glitch leaves it idle, data ready never set); the next reading sets it
  up again and restarts periodic measurement.
* Data ready set but the measurement read refused (empty buffer) → `DataReadyStuckError`; the next
  reading stops the chip, re-initialises it (reinit) and sets it up again.

Pressure from another sensor: `SCD4x.set_ambient_pressure` (Pa) records the value; the next
reading sends it (allowed during periodic measurement) when it moved by `PRESSURE_STEP_PA` or
more since the value last sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, ClassVar

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
from .errors import BadDataError, ConfigurationError, NotReadyError, SensorError
from .i2c import I2CDriver, i2c_address_option, i2c_bus_option
from .sensirion import AmbientPressure, check_words, ticks_to_celsius

log = logging.getLogger(__name__)

ADDRESS = 0x62

# --- commands (datasheet Table 9; 16-bit, MSB first) ---------------------------------------------
CMD_START_PERIODIC = 0x21B1
CMD_READ_MEASUREMENT = 0xEC05
CMD_STOP_PERIODIC = 0x3F86
CMD_SET_TEMPERATURE_OFFSET = 0x241D
CMD_GET_TEMPERATURE_OFFSET = 0x2318
CMD_SET_ALTITUDE = 0x2427
CMD_GET_ALTITUDE = 0x2322
CMD_SET_AMBIENT_PRESSURE = 0xE000
CMD_PERFORM_FRC = 0x362F
CMD_SET_ASC_ENABLED = 0x2416
CMD_GET_ASC_ENABLED = 0x2313
CMD_START_LOW_POWER_PERIODIC = 0x21AC
CMD_GET_DATA_READY = 0xE4B8
CMD_PERSIST_SETTINGS = 0x3615
CMD_GET_SERIAL_NUMBER = 0x3682
CMD_REINIT = 0x3646
CMD_MEASURE_SINGLE_SHOT = 0x219D
CMD_GET_SENSOR_VARIANT = 0x202F

#: the only commands the chip takes while it measures periodically (§11.2 "Periodic?" column)
ALLOWED_WHILE_MEASURING = frozenset({CMD_READ_MEASUREMENT, CMD_GET_DATA_READY, CMD_STOP_PERIODIC,
                                     CMD_SET_AMBIENT_PRESSURE})

# --- execution times (datasheet maxima, seconds) --------------------------------------------------
EXEC_S = 0.001               #: read_measurement, get_data_ready_status, the set/get commands
STOP_S = 0.500               #: after stop_periodic_measurement the chip answers nothing
REINIT_S = 0.030             #: datasheet 20 ms; Sensirion's driver waits 30
PERSIST_S = 0.800
FRC_S = 0.400
SINGLE_SHOT_S = 5.000
PERIOD_S = {"periodic": 5.0, "low_power": 30.0, "single_shot": SINGLE_SHOT_S}
#: no new measurement for this many periods: the chip stopped measuring (lost its configuration)
LOST_AFTER_PERIODS = 3

# --- words ---------------------------------------------------------------------------------------
WORD_BYTES = 2
FRAME_BYTES = 3              #: word MSB, word LSB, CRC
DATA_READY_MASK = 0x07FF     #: data ready when the 11 LSBs are not all 0 (§11.3)
VARIANT_MASK = 0xF000
VARIANTS = {0x0000: "SCD40", 0x1000: "SCD41", 0x2000: "SCD42", 0x5000: "SCD43"}
SINGLE_SHOT_VARIANTS = frozenset({"SCD41", "SCD43"})
FRC_OFFSET = 0x8000
FRC_FAILED = 0xFFFF
T_SPAN_C = 175
RH_SPAN_PCT = 100
WORD_FULL_SCALE = 0xFFFF     #: 2^16 − 1: the datasheet's divisor (ESPHome's 2^16 differs, §11.5)
PA_PER_HPA = 100

# --- option ranges -------------------------------------------------------------------------------
ALTITUDE_MAX_M = 3000        #: datasheet: 0–3000 m
PRESSURE_MIN_PA = 70_000     #: datasheet: 700–1200 hPa
PRESSURE_MAX_PA = 120_000
TEMPERATURE_OFFSET_MAX_C = 20.0
#: a pressure handed in by another sensor is sent again only when it moved at least this much
PRESSURE_STEP_PA = 100.0
MODES = ("periodic", "low_power", "single_shot")
BUS_TIME_S = 0.002           #: a few short transfers at 100 kHz


class MeasurementStoppedError(NotReadyError):
    """No new measurement for several periods: the chip stopped measuring (a power glitch left
    it idle with its settings lost). The next reading sets it up again."""


class DataReadyStuckError(NotReadyError):
    """The data-ready status says ready but the chip refused the measurement read (its buffer is
    empty). The next reading re-initialises the chip."""


# --- the chip's maths and wire formats (pure functions) ------------------------------------------
def command_bytes(command: int) -> bytes:
    """A 16-bit command on the wire::

        byte 0: command[15:8]   byte 1: command[7:0]
    """
    return bytes(((command >> 8) & 0xFF, command & 0xFF))


def write_frame(command: int, word: int) -> bytes:
    """A command with one argument word and its CRC (the *write* sequence)::

        cmd MSB | cmd LSB | word MSB | word LSB | CRC-8(word)
    """
    data = bytes(((word >> 8) & 0xFF, word & 0xFF))
    return command_bytes(command) + data + bytes((crc8_sensirion(data),))


def words_from_frame(data: bytes, count: int) -> list[int]:
    """``count`` words from a reply, each checked against the CRC byte behind it::

        w0 MSB | w0 LSB | CRC | w1 MSB | w1 LSB | CRC | ...

    (`sensirion.check_words`) `BadDataError` names the first word whose CRC does not match; the
    caller adds what it was reading."""
    return list(check_words(data, count))


def convert_measurement(co2_word: int, t_word: int, rh_word: int) -> tuple[float, float, float]:
    """read_measurement's three words -> (CO₂ ppm, °C, %RH) (§11.4)::

        CO₂ = word0    T = −45 + 175·word1 / 65535    RH = 100·word2 / 65535

    Each is one rounding of the exact fraction (the numerator is an exact integer), so the result
    is the datasheet formula to the last bit of the float."""
    temperature = ticks_to_celsius(t_word)   # the same formula as the SHT3x/SHT4x
    humidity = RH_SPAN_PCT * rh_word / WORD_FULL_SCALE
    return float(co2_word), temperature, humidity


def data_ready(status_word: int) -> bool:
    """get_data_ready_status: a measurement waits when the 11 LSBs are not all 0."""
    return status_word & DATA_READY_MASK != 0


def temperature_offset_word(celsius: float) -> int:
    """°C -> the set_temperature_offset word, ``round(T·65535/175)`` (5.4 °C -> 0x07E6)."""
    return round(celsius * WORD_FULL_SCALE / T_SPAN_C)


def temperature_offset_celsius(word: int) -> float:
    """The get_temperature_offset word -> °C, ``word·175/65535``."""
    return word * T_SPAN_C / WORD_FULL_SCALE


def pressure_word(pascal: float) -> int:
    """Pa -> the set_ambient_pressure word (hPa, rounded): 98700 Pa -> 987."""
    return round(pascal / PA_PER_HPA)


def serial_number(words: Sequence[int]) -> int:
    """get_serial_number's 3 words -> the 48-bit serial, word 0 most significant."""
    return (words[0] << 32) | (words[1] << 16) | words[2]


def variant_name(word: int) -> str | None:
    """get_sensor_variant -> "SCD40", "SCD41", ... or None for an unknown code."""
    return VARIANTS.get(word & VARIANT_MASK)


def frc_correction(word: int) -> int | None:
    """perform_forced_recalibration's reply -> the correction in ppm, None when it failed
    (0xFFFF). Adafruit unpacks it signed and never sees the failure (§11.5)."""
    return None if word == FRC_FAILED else word - FRC_OFFSET


# --- the driver ----------------------------------------------------------------------------------


class SCD4x(I2CDriver):
    """SCD40/SCD41 CO₂ sensor. Units: ppm (custom metric), °C, %RH.

    ``SCD4x(bus=None, *, clock=time.monotonic, **options)``: ``bus`` is an smbus2.SMBus-like
    object (never closed by the driver); ``clock`` is only read (never slept on), to notice a chip
    that stopped measuring. Set-up happens on the first reading; until the chip measures, a
    reading is a `NotReadyError` naming when the first measurement is due.
    """

    name = "scd4x"
    chip_name = "SCD4x"
    description = "Sensirion SCD40/SCD41 CO2, temperature and humidity over I2C, periodic or single shot"
    metrics = (
        Metric("co2", "CO2 concentration", value_type=ValueType.DOUBLE, annotation="ppm"),
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        i2c_address_option((ADDRESS,), "I2C address (fixed 0x62)"),
        i2c_bus_option(),
        Option("mode", str, "periodic", "periodic (a reading every 5 s), low_power (every 30 s) or "
               "single_shot (SCD41 only: one measurement per reading, 5 s)", choices=MODES),
        Option("altitude", int, None, "altitude of the sensor in metres, for pressure compensation "
               "(or give ambient_pressure; unset: the chip's own setting)", minimum=0,
               maximum=ALTITUDE_MAX_M),
        Option("ambient_pressure", float, None, "ambient pressure in Pa for pressure compensation "
               "(overrides altitude; or take it from another sensor with pressure_from)",
               minimum=PRESSURE_MIN_PA, maximum=PRESSURE_MAX_PA),
        Option("temperature_offset", float, None, "°C the chip's self-heating adds (chip default 4; "
               "unset: the chip's own setting)", minimum=0.0, maximum=TEMPERATURE_OFFSET_MAX_C),
        Option("self_calibration", bool, True, "automatic self-calibration (needs a week with "
               "fresh air daily; off in a greenhouse that never sees 400 ppm)"),
    )
    #: the set-up reading is the longest: stop, reinit (after a stuck flag), 6 commands, 2 reads
    read_time_s = STOP_S + REINIT_S + 8 * EXEC_S + BUS_TIME_S
    min_interval_s = PERIOD_S["periodic"]
    retry = RetryPolicy(attempts=1, spacing_s=PERIOD_S["periodic"])
    simulator = "pibridge.drivers.fakes.scd4x:simulate"
    #: `pibridge scan` may send only this: allowed in every mode, it disturbs no measurement
    scan_command: ClassVar[int] = CMD_GET_DATA_READY

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """Periodic modes: no new value before one period; single shot: the set-up plus the 5 s
        measurement are one reading."""
        period = PERIOD_S[config["mode"]]
        read = cls.read_time_s
        if config["mode"] == "single_shot":
            read += SINGLE_SHOT_S + 2 * EXEC_S
        return Timing(read, period, RetryPolicy(attempts=1, spacing_s=period))

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """altitude and ambient_pressure are two ways to say the same thing: one at most."""
        if config["altitude"] is not None and config["ambient_pressure"] is not None:
            return [OptionProblem("ambient_pressure", "option ambient_pressure: give altitude or "
                                  "ambient_pressure, not both (the chip uses the last one set)")]
        return []

    @classmethod
    def identify(cls, bus: Any, address: int, sleep: Callable[[float], None]) -> str | None:
        """For `pibridge scan`: get_data_ready_status (allowed while it measures, consumes
        nothing), then its CRC-checked word; None when it does not answer as an SCD4x. The serial
        and variant commands are idle-only, so scan does not send them."""
        from smbus2 import i2c_msg

        try:
            bus.i2c_rdwr(i2c_msg.write(address, command_bytes(cls.scan_command)))
            sleep(EXEC_S)
            reply = i2c_msg.read(address, FRAME_BYTES)
            bus.i2c_rdwr(reply)
            words_from_frame(bytes(reply), 1)
        except (OSError, BadDataError):
            return None
        return "SCD4x (SCD40/SCD41 CO2; answers get_data_ready_status)"

    def __init__(self, bus: Any = None, *, clock: Callable[[], float] = time.monotonic,
                 **options: Any) -> None:
        super().__init__(bus, **options)
        self.clock = clock
        self.mode: str = self.config["mode"]
        self.period_s = PERIOD_S[self.mode]
        self.serial: int | None = None
        self.variant: str | None = None
        self._set_up = False
        self._reinit_next = False
        self._steps = SteppedReading(self.label)
        self._last_fresh: float | None = None     # clock() of the last new measurement (or set-up)
        self._pressure = AmbientPressure(self.label, "chip", self.config["ambient_pressure"], PRESSURE_MIN_PA,
                                         PRESSURE_MAX_PA, PRESSURE_STEP_PA)
        self.setups = 0                            # how many times the chip was set up

    # -- pressure compensation from another sensor ------------------------------------------------
    def set_ambient_pressure(self, pascal: float) -> None:
        """The ambient pressure (Pa) from another sensor: sent on the next reading if it moved
        `PRESSURE_STEP_PA` or more since the value last sent. No bus traffic here."""
        self._pressure.offer(pascal)

    # -- one reading, in steps --------------------------------------------------------------------
    def start(self) -> float:
        """Begin one reading: its first command is sent; returns the seconds until `collect`."""
        return self._steps.begin(self._reading())

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        """The next step of the reading `start` began: `CollectAgain` (its wait) between steps,
        the sample at the end."""
        return self._steps.advance()

    def _reading(self) -> Steps:
        """The steps of one reading; each ``yield`` hands a wait to the caller."""
        if not self._set_up:
            yield from self._set_up_chip()
            if self.mode != "single_shot":
                raise NotReadyError(f"{self.label}: {self.mode.replace('_', '-')} measurement started; "
                                    f"the first measurement is due in {self.period_s:g} s")
        yield from self._send_pressure_if_moved()
        if self.mode == "single_shot":
            self._send(CMD_MEASURE_SINGLE_SHOT, "single-shot measurement")
            yield SINGLE_SHOT_S
        (status,) = yield from self._read_words(CMD_GET_DATA_READY, 1, "data-ready status read")
        if not data_ready(status):
            self._check_still_measuring()
            raise NotReadyError(f"{self.label}: no new measurement since the last one "
                                f"(data ready not set; one every {self.period_s:g} s)")
        try:
            words = yield from self._read_words(CMD_READ_MEASUREMENT, 3, "measurement read")
        except NotReadyError:
            self._set_up, self._reinit_next = False, True
            log.warning("%s: data ready is set but the chip has no measurement (stuck data-ready "
                        "flag); re-initialising it on the next reading", self.label)
            raise DataReadyStuckError(f"{self.label}: data ready set but the measurement read was "
                                      "refused (empty buffer): stuck data-ready flag") from None
        self._last_fresh = self.clock()
        co2, temperature, humidity = convert_measurement(*words)
        return {"co2": co2, "temperature": temperature, "humidity": humidity}

    def _check_still_measuring(self) -> None:
        """Nothing new for `LOST_AFTER_PERIODS` periods: the chip stopped measuring."""
        if self.mode == "single_shot" or self._last_fresh is None:
            return
        silent = self.clock() - self._last_fresh
        if silent >= LOST_AFTER_PERIODS * self.period_s:
            self._set_up = False
            log.warning("%s: no new measurement for %.0f s: the chip stopped measuring (power "
                        "glitch?); setting it up and starting it again on the next reading",
                        self.label, silent)
            raise MeasurementStoppedError(
                f"{self.label}: no new measurement for {silent:.0f} s ({LOST_AFTER_PERIODS} periods): "
                "the chip lost its configuration; it is set up again on the next reading")

    def _set_up_chip(self) -> Generator[float, None, None]:
        """Stop, identify, configure and (periodic modes) start measuring. Only idle-mode
        commands after the stop, each after the previous one's execution time."""
        self._send(CMD_STOP_PERIODIC, "stop_periodic_measurement")
        yield STOP_S
        if self._reinit_next:
            self._send(CMD_REINIT, "reinit")
            yield REINIT_S
            self._reinit_next = False
        if self.serial is None:
            self.serial = serial_number((yield from self._read_words(CMD_GET_SERIAL_NUMBER, 3,
                                                                     "serial number read")))
            try:
                (word,) = yield from self._read_words(CMD_GET_SENSOR_VARIANT, 1, "variant read")
                self.variant = variant_name(word)
            except NotReadyError:  # older firmware does not know the command: NACK
                self.variant = None
            log.info("%s: %s serial %012x", self.label, self.variant or "SCD4x (variant unknown)",
                     self.serial)
        if self.mode == "single_shot" and self.variant is not None \
                and self.variant not in SINGLE_SHOT_VARIANTS:
            raise ConfigurationError(f"{self.label}: mode single_shot needs an SCD41; this chip is an "
                                     f"{self.variant} (use mode periodic or low_power)")
        config = self.config
        if config["temperature_offset"] is not None:
            self._write(CMD_SET_TEMPERATURE_OFFSET, temperature_offset_word(config["temperature_offset"]),
                        "temperature offset write")
            yield EXEC_S
        if config["altitude"] is not None:
            self._write(CMD_SET_ALTITUDE, config["altitude"], "altitude write")
            yield EXEC_S
        self._write(CMD_SET_ASC_ENABLED, int(config["self_calibration"]), "self-calibration write")
        yield EXEC_S
        self._pressure.sent = None   # a new set-up sends the pressure again
        yield from self._send_pressure_if_moved()
        if self.mode == "periodic":
            self._send(CMD_START_PERIODIC, "start_periodic_measurement")
        elif self.mode == "low_power":
            self._send(CMD_START_LOW_POWER_PERIODIC, "start_low_power_periodic_measurement")
        self._set_up = True
        self.setups += 1
        self._last_fresh = self.clock()
        if self.setups > 1:
            log.info("%s: set up again (%s)", self.label, self.mode.replace("_", "-"))

    def _send_pressure_if_moved(self) -> Generator[float, None, None]:
        wanted = self._pressure.wanted
        if wanted is None or not self._pressure.due:
            return
        self._write(CMD_SET_AMBIENT_PRESSURE, pressure_word(wanted), "ambient pressure write")
        self._pressure.sent = wanted
        yield EXEC_S

    # -- explicit commands (never part of a reading) ----------------------------------------------
    def persist_settings(self, sleep: Callable[[float], None]) -> None:
        """Store the settings in the chip's EEPROM (≥ 2000 write cycles: call it on purpose, not
        per reading). Stops measurement first; the next reading starts it again."""
        self._send(CMD_STOP_PERIODIC, "stop_periodic_measurement")
        self._set_up = False
        sleep(STOP_S)
        self._send(CMD_PERSIST_SETTINGS, "persist_settings")
        sleep(PERSIST_S)

    def forced_recalibration(self, target_ppm: int, sleep: Callable[[float], None]) -> int:
        """Forced recalibration (§11.3): after ≥ 3 minutes of measuring at a known, steady CO₂
        level ``target_ppm``, stop, wait 500 ms, send the target, wait 400 ms, read the
        correction (ppm) the chip applied. A failed FRC (the chip had not been measuring) is a
        `SensorError`; Adafruit reads the reply signed and never sees that failure (§11.5).
        An explicit command, never part of a reading; the next reading sets the chip up again."""
        self._send(CMD_STOP_PERIODIC, "stop_periodic_measurement")
        self._set_up = False
        sleep(STOP_S)
        self._write(CMD_PERFORM_FRC, target_ppm, "forced recalibration")
        sleep(FRC_S)
        data = self.read_bytes(FRAME_BYTES, "forced recalibration reply")
        (word,) = words_from_frame(data, 1)
        correction = frc_correction(word)
        if correction is None:
            raise SensorError(f"{self.label}: forced recalibration failed (reply 0xFFFF): measure for "
                              "at least 3 minutes at the target level first")
        log.info("%s: forced recalibration to %d ppm: correction %+d ppm", self.label, target_ppm,
                 correction)
        return correction

    # -- transfers ---------------------------------------------------------------------------------
    def _send(self, command: int, doing: str) -> None:
        self.write_bytes(command_bytes(command), doing)

    def _write(self, command: int, word: int, doing: str) -> None:
        self.write_bytes(write_frame(command, word), doing)

    def _read_words(self, command: int, count: int, doing: str) -> Generator[float, None, list[int]]:
        """Send ``command``, hand back its execution time, then read ``count`` CRC-checked words
        in a separate transaction (no repeated START)."""
        self._send(command, doing)
        yield EXEC_S
        data = self.read_bytes(count * FRAME_BYTES, doing)
        try:
            return words_from_frame(data, count)
        except BadDataError as exc:
            raise BadDataError(f"{self.label}: {doing}: {exc}") from None
