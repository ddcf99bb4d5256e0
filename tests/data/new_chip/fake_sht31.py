"""A fake SHT31 on the wire, and its simulator (copied to ``drivers/fakes/sht31.py``).

It answers the single-shot command, measures for the datasheet *typical* time on its clock
(NACKing reads meanwhile, as the chip does without clock stretching), then returns the six
result bytes with their CRCs. Faults: ``nack``/``fail_next`` (from `FakeI2CDevice`),
``corrupt_crc``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import sht31 as chip
from . import FakeI2CDevice, nack_error

if TYPE_CHECKING:
    from .. import SimulatedWorld

MEASUREMENT_TYPICAL_S = 0.0125  #: datasheet Table 4, high repeatability


def crc8(word: bytes) -> int:
    """CRC-8 0x31 / init 0xFF, written again here so that the fake checks the driver."""
    crc = 0xFF
    for byte in word:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class FakeSHT31(FakeI2CDevice):
    """Inputs: ``source()`` -> (°C, %RH) at each measurement."""

    def __init__(self, *, source: Callable[[], tuple[float, float]] = lambda: (21.0, 50.0),
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self.ready_at: float | None = None
        self.result = b""
        self.corrupt_crc = False
        self.measurements = 0

    def i2c_write(self, data: bytes) -> None:
        if bytes(data[:2]) == chip.CMD_SINGLE_SHOT_HIGH:
            celsius, percent = self.source()
            raw_t = round((celsius - chip.T_OFFSET_C) / chip.T_SPAN_C * chip.FULL_SCALE)
            raw_rh = round(percent / chip.RH_SPAN_PCT * chip.FULL_SCALE)
            words = [raw_t.to_bytes(2, "big"), raw_rh.to_bytes(2, "big")]
            self.result = b"".join(w + bytes([crc8(w) ^ (0xFF if self.corrupt_crc else 0)]) for w in words)
            self.ready_at = self.clock() + MEASUREMENT_TYPICAL_S
            self.measurements += 1

    def i2c_read(self, length: int) -> bytes:
        if self.ready_at is None or self.clock() < self.ready_at:
            raise nack_error()  # measuring (or nothing measured): the read header is not acknowledged
        self.ready_at = None
        return self.result[:length]


def simulate(world: SimulatedWorld, cls: type[chip.SHT31], options: dict[str, Any]) -> chip.SHT31:
    """An SHT31 on the world's fake I2C bus, measuring the environment's air."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeSHT31(
        source=lambda: (env.air_temperature(), env.relative_humidity()), clock=world.clock.monotonic))
    return cls(bus=bus, **options)
