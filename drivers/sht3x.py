"""Sensirion SHT3x (SHT30 / SHT31 / SHT35) temperature and humidity over I2C, single shot with
clock stretching disabled (datasheet SHT3x-DIS v5, Tables 9, 16-20).

Commands are 16 bits, MSB first. A single-shot command without clock stretching (0x24xx) makes
the chip NACK its read header until the result is ready, so it is safe on the Raspberry Pi's
hardware I2C controller, which mishandles clock stretching. The result is a plain 6-byte read in
its own transaction (no repeated START)::

    S addr+W 0x24 0x00 P     ...measuring (NACKs reads)...     S addr+R T_msb T_lsb CRC RH_msb RH_lsb CRC P

``start()`` writes the command of the configured repeatability and returns the datasheet
*maximum* duration; ``collect()`` reads, checks both CRCs and converts with the datasheet
formulas (``T = -45 + 175·S_T/(2^16-1)``, ``RH = 100·S_RH/(2^16-1)``: 0..100 by construction).

Error mapping and recovery:

* NACK on the first transfer -> `DeviceNotFoundError`; NACK of the result read after the command
  -> `NotReadyError`; other failures -> `BusError`; a CRC mismatch -> `BadDataError`.
* after a CRC error, a failed transfer, or a result that is still not there on two attempts in a
  row (a chip stuck in periodic mode, left there by another program, refuses single-shot
  commands), the next reading recovers instead of measuring, in steps (the waits handed back as
  `CollectAgain`): ``start()`` sends the break command (0x3093: stops periodic mode, in which a
  soft reset is ignored; harmless otherwise) and logs one line; then the status register is read
  and, if bit 13 says the heater is on (left on by another program: readings too warm), the
  heater-off command 0x3066 is sent (one log line); then the soft reset 0x30A2 (1.5 ms); the last
  ``collect()`` says `NotReadyError` and the caller's retry measures. Single-shot mode keeps no
  configuration, so a power glitch loses nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .base import CollectAgain, Metric, Option, RetryPolicy, Sample, Timing
from .errors import BadDataError, NotReadyError
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

ADDRESSES = (0x44, 0x45)  #: ADDR pin low (most breakouts), high

# --- commands (datasheet Tables 9, 13-16; 16 bits, MSB first) -------------------------------------
CMD_SINGLE_SHOT = {"high": 0x2400, "medium": 0x240B, "low": 0x2416}  #: clock stretching disabled
CMD_SINGLE_SHOT_STRETCH = {"high": 0x2C06, "medium": 0x2C0D, "low": 0x2C10}  #: not used on a Pi
#: periodic mode (Table 10): mps -> repeatability -> command. 10 mps low is 0x272A per the
#: datasheet and Adafruit; Sensirion's generated embedded-i2c-sht3x sends 0x273A.
CMD_PERIODIC = {
    0.5: {"high": 0x2032, "medium": 0x2024, "low": 0x202F},
    1: {"high": 0x2130, "medium": 0x2126, "low": 0x212D},
    2: {"high": 0x2236, "medium": 0x2220, "low": 0x222B},
    4: {"high": 0x2334, "medium": 0x2322, "low": 0x2329},
    10: {"high": 0x2737, "medium": 0x2721, "low": 0x272A},
}
CMD_ART = 0x2B32            #: accelerated response time: periodic at 4 Hz
CMD_FETCH = 0xE000          #: periodic mode: read the newest result
CMD_BREAK = 0x3093          #: stop periodic mode
CMD_SOFT_RESET = 0x30A2     #: ignored in periodic mode
CMD_HEATER_ON = 0x306D
CMD_HEATER_OFF = 0x3066
CMD_READ_STATUS = 0xF32D
CMD_CLEAR_STATUS = 0x3041
CMD_SERIAL = 0x3682         #: electronic identification code, no clock stretching (0x3780 stretches)

# --- status register bits (Table 17) --------------------------------------------------------------
STATUS_ALERT_PENDING = 1 << 15
STATUS_HEATER_ON = 1 << 13
STATUS_RH_ALERT = 1 << 11
STATUS_T_ALERT = 1 << 10
STATUS_RESET_DETECTED = 1 << 4
STATUS_COMMAND_FAILED = 1 << 1
STATUS_WRITE_CRC_FAILED = 1 << 0
STATUS_POWER_ON = STATUS_ALERT_PENDING | STATUS_RESET_DETECTED  #: 0x8010

# --- timing (Table 4 maximum; the later revision's 15.5 ms for high) ------------------------------
MEASUREMENT_MAX_S = {"high": 0.0155, "medium": 0.006, "low": 0.004}
BREAK_S = 0.001
SOFT_RESET_S = 0.0015
SERIAL_WAIT_S = 0.001
STATUS_WAIT_S = 0.001        #: status command -> its reply (the chip answers at once; 1 ms margin)
COMMAND_GAP_S = 0.001        #: between two commands (the datasheet's 1 ms idle time)
STATUS_WORDS = 1
BUS_TIME_S = 0.0006          #: a 2-byte write and a 6-byte read at 100 kHz, roughly
STUCK_AFTER = 2              #: consecutive "not there yet" results before the chip is reset

# --- conversion (datasheet §4.13; the temperature formula is `sensirion.ticks_to_celsius`) --------
RH_SPAN = 100.0


def command_bytes(command: int) -> bytes:
    """A 16-bit command as sent, MSB first."""
    return bytes([command >> 8, command & 0xFF])


def ticks_to_humidity(s_rh: int) -> float:
    """Datasheet: ``RH = 100 · S_RH / (2^16 - 1)`` %RH (0..100 by construction: no clamp)."""
    return RH_SPAN * s_rh / TICKS_FULL_SCALE


def convert(data: bytes, label: str = "SHT3x") -> tuple[float, float]:
    """6-byte frame -> (°C, %RH), CRCs checked (`BadDataError`)::

        byte: 0      1      2      3       4       5
              T_msb  T_lsb  CRC_T  RH_msb  RH_lsb  CRC_RH
    """
    s_t, s_rh = check_words(data, 2, label)
    return ticks_to_celsius(s_t), ticks_to_humidity(s_rh)


def _name_serial(data: bytes) -> str | None:
    serial = parse_serial(data)
    return None if serial is None else f"SHT3x (serial 0x{serial:08x})"


class SHT3x(I2CDriver):
    """SHT30/31/35 single-shot reads without clock stretching. Units: °C, %RH."""

    name = "sht3x"
    chip_name = "SHT3x"
    description = "Sensirion SHT30/31/35 temperature and humidity over I2C, single shot"
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        i2c_address_option(ADDRESSES, "I2C address (0x44 ADDR low, 0x45 ADDR high)"),
        i2c_bus_option(),
        Option("repeatability", str, "high", "high (15.5 ms), medium (6 ms) or low (4 ms)",
               choices=tuple(CMD_SINGLE_SHOT)),
    )
    read_time_s = MEASUREMENT_MAX_S["high"] + BUS_TIME_S
    min_interval_s = 0.02
    retry = RetryPolicy(attempts=2, spacing_s=0.02)
    simulator = "pibridge.drivers.fakes.sht3x:simulate"
    chip_id = CommandId(command_bytes(CMD_SERIAL), SERIAL_FRAME_LEN, SERIAL_WAIT_S, _name_serial)

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """The conversion of the configured repeatability (datasheet maximum)."""
        return Timing(MEASUREMENT_MAX_S[config["repeatability"]] + BUS_TIME_S, cls.min_interval_s, cls.retry)

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        self.repeatability: str = self.config["repeatability"]
        self._command = command_bytes(CMD_SINGLE_SHOT[self.repeatability])
        self._steps = SingleShotSteps(STUCK_AFTER)

    def _transfer_failed(self) -> None:
        self._steps.transfer_failed()

    def start(self) -> float:
        """Send the single-shot command (or, after a failure, the break command that begins the
        recovery); returns the seconds until ``collect()`` may read."""
        steps = self._steps
        steps.phase = None
        reason = steps.reset_due()
        if reason is not None:
            self.write_bytes(command_bytes(CMD_BREAK), "break command")
            log.warning("%s: break (stop periodic mode) after %s", self.label, reason)
            steps.phase = "break"
            return BREAK_S
        self.write_bytes(self._command, "measurement command")
        steps.phase = "measure"
        return self.timing.read_time_s

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        """The measurement ``start`` began: {temperature °C, humidity %RH}; during a recovery
        its next step (`CollectAgain`), and `NotReadyError` at its end."""
        phase = self._steps.take_phase(self.label)
        if phase != "measure":
            return self._recovery_step(phase)
        s_t, s_rh = self._steps.result(lambda: self.read_bytes(6), self.label)
        return {"temperature": ticks_to_celsius(s_t), "humidity": ticks_to_humidity(s_rh)}

    def _recovery_step(self, phase: str) -> CollectAgain:
        """break (sent by ``start``) -> status read -> [heater off] -> soft reset -> done."""
        if phase == "break":
            self.write_bytes(command_bytes(CMD_READ_STATUS), "status command")
            self._steps.phase = "status"
            return CollectAgain(STATUS_WAIT_S)
        if phase == "status":
            try:
                (status,) = check_words(self.read_bytes(STATUS_WORDS * 3, "status read"), STATUS_WORDS,
                                        self.label)
            except BadDataError:
                status = 0   # unknown: the soft reset switches the heater off as well
            if status & STATUS_HEATER_ON:
                self.write_bytes(command_bytes(CMD_HEATER_OFF), "heater-off command")
                log.warning("%s: the heater was on (status 0x%04x): switched off", self.label, status)
                self._steps.phase = "heater off"
                return CollectAgain(COMMAND_GAP_S)
            phase = "heater off"
        if phase == "heater off":
            self.write_bytes(command_bytes(CMD_SOFT_RESET), "soft reset")
            self._steps.phase = "soft reset"
            return CollectAgain(SOFT_RESET_S)
        raise NotReadyError(f"{self.label}: break sent, then soft reset; measuring on the next attempt")
