"""A byte-level fake AHT20 / AHT10 and its simulator.

`FakeAHT20` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus`; `simulate` builds an `AHT20`
driver on the simulated world's I2C bus, fed by the world's air temperature and humidity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import aht20 as chip
from .i2c import FakeI2CDevice, nack_error
from .sensirion import crc8

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

MEASUREMENT_TYPICAL_S = 0.075   #: the driver waits the datasheet's 80 ms
INIT_TYPICAL_S = 0.005
SOFT_RESET_TYPICAL_S = 0.015
STATUS_BASE = 0x10              #: bit 4, set in every captured AHT20 frame (reserved)
FIELD_MAX = (1 << 20) - 1


class FakeAHT20(FakeI2CDevice):
    """AHT20 on the wire: any plain read returns the status byte, then (from byte 1) the last
    result's 5 data bytes and their CRC.

    * ``AC 33 00``: busy for ~75 ms; the data bytes keep the previous result until it ends.
    * ``BE 08 00``: sets the calibration bit (after ~5 ms). ``E1 08 00`` (the AHT10's) is NACKed
      unless ``aht10`` (Adafruit issue #17: an AHT20 NACKs it) or ``accepts_e1`` (hardware.md
      §9.6: the NACK is variable, many AHT20s take ``E1`` and calibrate); in AHT10 mode ``BE`` is
      NACKed (an assumption: the sources do not say) and reads carry no CRC (0xFF after byte 5).
    * ``BA``: soft reset to the power-on state, busy for ~15 ms.
    * power-on: calibration bit 0 unless ``calibrated_at_power_on``.

    Inputs: ``source()`` -> (°C, %RH), or ``celsius``/``humidity``. Faults (opt-in): ``nack``/
    `fail_next`; ``corrupt_crc`` (next N frames); ``corrupt_status`` (next N frames: the status
    byte's busy bit flipped on the wire after the CRC was computed); ``zero_humidity``
    (S_RH = 0); ``stuck_busy``; `power_glitch` (calibration lost); detach (gone).
    """

    def __init__(self, *, celsius: float = 21.0, humidity: float = 50.0,
                 source: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic, aht10: bool = False,
                 calibrated_at_power_on: bool = False, accepts_e1: bool = False) -> None:
        super().__init__()
        self.celsius, self.humidity = celsius, humidity
        self.source = source
        self.clock = clock
        self.aht10 = aht10
        self.accepts_e1 = accepts_e1
        self.corrupt_status = 0
        self.calibrated_at_power_on = calibrated_at_power_on
        self.corrupt_crc = 0
        self.zero_humidity = False
        self.stuck_busy = False
        self.writes: list[bytes] = []
        self.measurements = 0
        self.calibrated = calibrated_at_power_on
        self._busy_until = -1.0
        self._pending: tuple[int, int] | None = None
        self._fields = (0, 0)    # (S_RH, S_T) of the last finished measurement

    def power_glitch(self) -> None:
        """Supply dip: power-on state, calibration bit as at power-on, data cleared."""
        self.calibrated = self.calibrated_at_power_on
        self._busy_until = -1.0
        self._pending = None
        self._fields = (0, 0)

    def _advance(self) -> bool:
        """Finish a measurement whose time has come; returns whether the chip is busy."""
        now = self.clock()
        if self._pending is not None and now >= self._busy_until and not self.stuck_busy:
            self._fields, self._pending = self._pending, None
            self.measurements += 1
        return self.stuck_busy or now < self._busy_until

    def status(self) -> int:
        busy = self._advance()
        calibrated = chip.STATUS_CALIBRATED if self.calibrated else 0
        return STATUS_BASE | calibrated | (chip.STATUS_BUSY if busy else 0)

    def _sample(self) -> tuple[int, int]:
        celsius, humidity = self.source() if self.source is not None else (self.celsius, self.humidity)
        s_rh = 0 if self.zero_humidity else min(FIELD_MAX, max(0, round(humidity / 100.0 * (1 << 20))))
        s_t = min(FIELD_MAX, max(0, round((celsius + 50.0) / 200.0 * (1 << 20))))
        return s_rh, s_t

    def i2c_write(self, data: bytes) -> None:
        self._advance()
        self.writes.append(bytes(data))
        command = bytes(data[:3])
        now = self.clock()
        if command == chip.CMD_TRIGGER:
            self._pending = self._sample()
            self._busy_until = now + MEASUREMENT_TYPICAL_S
        elif (command == chip.CMD_INIT_AHT20 and not self.aht10) or (
                command == chip.CMD_INIT_AHT10 and (self.aht10 or self.accepts_e1)):
            self.calibrated = True
            self._busy_until = now + INIT_TYPICAL_S
        elif data and data[0] == chip.CMD_SOFT_RESET and len(data) == 1:
            self.power_glitch()
            self._busy_until = now + SOFT_RESET_TYPICAL_S
        else:
            raise nack_error()

    def i2c_read(self, length: int) -> bytes:
        status = self.status()
        s_rh, s_t = self._fields
        body = bytes([status, (s_rh >> 12) & 0xFF, (s_rh >> 4) & 0xFF, ((s_rh & 0x0F) << 4) | (s_t >> 16),
                      (s_t >> 8) & 0xFF, s_t & 0xFF])
        if not self.aht10:
            crc = crc8(body)
            if self.corrupt_crc > 0 and length > len(body):
                self.corrupt_crc -= 1
                crc ^= 0x5A
            body += bytes([crc])
        if self.corrupt_status > 0 and length > 1:
            self.corrupt_status -= 1
            body = bytes([body[0] ^ chip.STATUS_BUSY]) + body[1:]
        return (body + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[chip.AHT20], options: dict[str, Any]) -> chip.AHT20:
    """An AHT20 driver on the world's fake I2C bus (an AHT10 at 0x39), reading the environment."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeAHT20(
        source=lambda: (env.air_temperature(), env.relative_humidity()), clock=world.clock.monotonic,
        aht10=config["address"] == chip.AHT10_ONLY_ADDRESS))
    return cls(bus=bus, **options)
