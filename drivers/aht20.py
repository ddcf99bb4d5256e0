"""Aosong AHT20 (and AHT10 where it differs) temperature and humidity over I2C (AHT20
datasheet v1.1 §5.4, DHT20 datasheet §7).

No registers: the host writes 1-3 byte commands and reads raw bytes; any plain read starts with
the status byte (bit 7 busy, bit 3 calibrated). ``start()`` writes the trigger ``AC 33 00`` and
returns the datasheet's 80 ms; ``collect()`` reads the 7-byte frame in its own transaction::

    byte: 0       1         2         3                 4         5        6
          status  RH[19:12] RH[11:4]  RH[3:0] | T[19:16] T[15:8]  T[7:0]   CRC (AHT20 only)

    RH = S_RH / 2^20 · 100 %        T = S_T / 2^20 · 200 - 50 °C

The CRC is the Sensirion CRC-8 (0x31, init 0xFF) over bytes 0..5. Adafruit reads 6 bytes and
never checks it; this driver checks it on an AHT20. The AHT10 sends no CRC.

Initialisation: on the first ``start()`` the status byte is read; if its calibration bit is 0,
the variant's calibration command is sent (AHT20 ``BE 08 00``, AHT10 ``E1 08 00``; the AHT10's is
sent on its first start whatever the bit, as ESPHome does). After a calibration command
``collect()`` says `NotReadyError` ("measuring on the next attempt"). The variant is never guessed
from how the chip answers ``E1``: hardware.md §9.6 says the NACK is variable (many AHT20s accept
``E1``). Option ``variant``: ``auto`` (default) is an AHT20 at 0x38 and an AHT10 at 0x39 (only an
AHT10 has that address); an AHT10 at 0x38 needs ``variant = "aht10"``. Errors and recovery:

* the CRC (AHT20) is checked before anything in the frame is believed: a mismatch ->
  `BadDataError` (a corrupted status byte is bad data, not "busy" or "calibration lost").
* busy bit still set at ``collect()`` -> `NotReadyError`; twice in a row -> the next ``start()``
  sends the soft reset ``BA`` (≤ 20 ms) and re-initialises (one log line).
* calibration bit cleared in a frame (a power glitch restarted the chip) -> `NotReadyError`; the
  next ``start()`` calibrates again (one log line).
* S_RH = 0 (ESPHome's failure signature: an all-zero humidity
  field, 0 %RH is not a real reading) -> `ImplausibleValueError`.
* a failed transfer -> `BusError` (`DeviceNotFoundError` before the chip ever answered); the next
  ``start()`` reads the status again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .base import Metric, Option, OptionProblem, RetryPolicy, Sample
from .crc import crc8_sensirion
from .errors import BadDataError, ImplausibleValueError, NotReadyError
from .i2c import I2CDriver, i2c_address_option, i2c_bus_option

log = logging.getLogger(__name__)

ADDRESSES = (0x38, 0x39)  #: AHT20 (and AHT10 ADR low); 0x39 only an AHT10 with ADR high
AHT10_ONLY_ADDRESS = 0x39
VARIANTS = ("auto", "aht20", "aht10")   #: auto: AHT20 at 0x38, AHT10 at 0x39

CMD_TRIGGER = b"\xac\x33\x00"
CMD_INIT_AHT20 = b"\xbe\x08\x00"
CMD_INIT_AHT10 = b"\xe1\x08\x00"
CMD_SOFT_RESET = 0xBA

STATUS_BUSY = 0x80
STATUS_CALIBRATED = 0x08

FRAME_LEN_AHT20 = 7       #: status, 5 data bytes, CRC
FRAME_LEN_AHT10 = 6       #: no CRC
STATUS_LEN = 1
CRC_SPAN = 6              #: the CRC covers bytes 0..5

MEASUREMENT_S = 0.080     #: datasheet: wait 80 ms, then check the busy bit
INIT_S = 0.010            #: after the calibration command
SOFT_RESET_S = 0.020
BUS_TIME_S = 0.001        #: a 3-byte write and a 7-byte read at 100 kHz, roughly
STUCK_AFTER = 2           #: consecutive busy frames before the chip is reset

FULL_SCALE = 1 << 20
RH_SPAN = 100.0
T_SPAN_C, T_OFFSET_C = 200.0, -50.0


def parse_frame(data: bytes) -> tuple[int, int, int]:
    """(status, S_RH, S_T) from the first 6 bytes (20-bit fields, the split every library and
    real frame uses)."""
    s_rh = (data[1] << 12) | (data[2] << 4) | (data[3] >> 4)
    s_t = ((data[3] & 0x0F) << 16) | (data[4] << 8) | data[5]
    return data[0], s_rh, s_t


def frame_crc_ok(data: bytes) -> bool:
    """Whether byte 6 is the CRC-8 of bytes 0..5."""
    return crc8_sensirion(data[:CRC_SPAN]) == data[CRC_SPAN]


def ticks_to_humidity(s_rh: int) -> float:
    """Datasheet: ``RH = S_RH / 2^20 · 100`` % (0 .. 99.9999: no clamp needed)."""
    return s_rh * RH_SPAN / FULL_SCALE


def ticks_to_celsius(s_t: int) -> float:
    """Datasheet: ``T = S_T / 2^20 · 200 - 50`` °C."""
    return s_t * T_SPAN_C / FULL_SCALE + T_OFFSET_C


class AHT20(I2CDriver):
    """AHT20 (and AHT10). Units: °C, %RH."""

    name = "aht20"
    chip_name = "AHT20"
    description = "Aosong AHT20 (and AHT10) temperature and humidity over I2C"
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        i2c_address_option(ADDRESSES, "I2C address (0x38; 0x39 is an AHT10 with ADR high)"),
        i2c_bus_option(),
        Option("variant", str, "auto", "auto (an AHT20 at 0x38, an AHT10 at 0x39), aht20, or aht10 "
               "(an AHT10 at 0x38: it sends no CRC)", choices=VARIANTS),
    )
    read_time_s = MEASUREMENT_S + BUS_TIME_S
    min_interval_s = 0.1
    retry = RetryPolicy(attempts=2, spacing_s=0.02)
    simulator = "pibridge.drivers.fakes.aht20:simulate"

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """An AHT20 has one address, 0x38."""
        if config["variant"] == "aht20" and config["address"] == AHT10_ONLY_ADDRESS:
            return [OptionProblem("variant", "option variant: an AHT20 is always at 0x38; 0x39 is an "
                                             "AHT10 (variant aht10 or auto)")]
        return []

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        chosen = self.config["variant"]
        if chosen == "auto":
            chosen = "aht10" if self.address == AHT10_ONLY_ADDRESS else "aht20"
        self.variant = chosen.upper()
        self._initialised = False           # the AHT10's init sent once (its first start)
        self._ready = False                 # status read and calibration bit seen
        self._phase: str | None = None
        self._recovery: str | None = None   # why the next start resets / re-initialises
        self._busy_frames = 0

    @property
    def label(self) -> str:
        return f"{self.variant} at 0x{self.address:02x}"

    def _transfer_failed(self) -> None:
        self._phase = None
        self._ready = False

    def _calibrate(self) -> None:
        """The variant's calibration command (an AHT20 that NACKs ``BE`` is a `BusError`)."""
        self.write_bytes(CMD_INIT_AHT20 if self.variant == "AHT20" else CMD_INIT_AHT10,
                         "calibration command")
        self._initialised = True

    def start(self) -> float:
        """Trigger a measurement (or, first and after trouble, reset / calibrate); returns the
        seconds until ``collect()`` may read."""
        self._phase = None
        if self._recovery == "reset":
            self.write_byte(CMD_SOFT_RESET, "soft reset")
            log.warning("%s: soft reset after %d busy frames in a row", self.label, STUCK_AFTER)
            self._recovery, self._busy_frames, self._ready = None, 0, False
            self._phase = "setup"
            return SOFT_RESET_S
        if not self._ready:
            status = self.read_bytes(STATUS_LEN, "status read")[0]
            if not status & STATUS_CALIBRATED or (self.variant == "AHT10" and not self._initialised):
                self._calibrate()
                if self._recovery == "calibration":
                    log.warning("%s: calibration bit cleared (power glitch?); calibrated again", self.label)
                    self._recovery = None
                self._phase = "setup"
                return INIT_S
            self._ready = True
        self.write_bytes(CMD_TRIGGER, "measurement trigger")
        self._phase = "measure"
        return self.timing.read_time_s

    def collect(self) -> Sample:
        """The measurement ``start`` triggered: {temperature °C, humidity %RH}."""
        phase, self._phase = self._phase, None
        if phase is None:
            raise NotReadyError(f"{self.label}: collect() before start()")
        if phase == "setup":
            raise NotReadyError(f"{self.label}: reset/calibration sent; measuring on the next attempt")
        data = self.read_bytes(FRAME_LEN_AHT20 if self.variant == "AHT20" else FRAME_LEN_AHT10)
        if self.variant == "AHT20" and not frame_crc_ok(data):  # before any byte is believed
            hint = ("; an AHT10 sends no CRC: set variant = \"aht10\"" if self.config["variant"] == "auto"
                    else "")
            raise BadDataError(f"{self.label}: CRC mismatch ({data.hex(' ')}, expected CRC "
                               f"0x{crc8_sensirion(data[:CRC_SPAN]):02x}){hint}")
        status, s_rh, s_t = parse_frame(data)
        if status & STATUS_BUSY:
            self._busy_frames += 1
            if self._busy_frames >= STUCK_AFTER:
                self._recovery = "reset"
            raise NotReadyError(f"{self.label}: still measuring (status 0x{status:02x}, busy bit set)")
        self._busy_frames = 0
        if not status & STATUS_CALIBRATED:
            self._ready = False
            self._recovery = "calibration"
            raise NotReadyError(f"{self.label}: calibration bit cleared (status 0x{status:02x}); "
                                "calibrating again on the next attempt")
        if s_rh == 0:
            raise ImplausibleValueError(f"{self.label}: humidity field is all zero ({data.hex(' ')})")
        return {"temperature": ticks_to_celsius(s_t), "humidity": ticks_to_humidity(s_rh)}
