"""A register-level fake VEML7700 (datasheet rev 1.7) and its simulator.

`FakeVEML7700` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus`; `simulate` builds a `VEML7700`
driver on the simulated world's I2C bus, lit by the world's environment.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import veml7700 as chip
from .i2c import FakeI2CDevice

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

GAIN_OF_CODE = {code: gain for gain, code in chip.GAIN_CODES.items()}
IT_MS_OF_CODE = {code: it for it, code in chip.IT_CODES.items()}
ENABLE_TYPICAL_S = 0.002
PSM_WAIT_S = (0.5, 1.0, 2.0, 4.0)   #: PSM modes 1-4: extra wait between measurements
INT_HIGH_FLAG = 1 << 14
INT_LOW_FLAG = 1 << 15
REGISTER_COUNT = 7
#: lx per count at gain 2, 800 ms, written here from the datasheet (rev 1.7), not imported
LX_PER_COUNT_AT_MAX = 0.0042
NONLINEAR_ABOVE_LX = 1000.0
POLY = (6.0135e-13, -9.3924e-9, 8.1488e-5, 1.0023)


def _reported(linear: float) -> float:
    """What the driver convention reports for a linear illuminance (corrected above 1000 lx)."""
    if linear <= NONLINEAR_ABOVE_LX:
        return linear
    a4, a3, a2, a1 = POLY
    return a4 * linear ** 4 + a3 * linear ** 3 + a2 * linear ** 2 + a1 * linear


@functools.lru_cache(maxsize=256)   # a steady light is inverted once, not per integration
def linear_illuminance(lux: float) -> float:
    """The illuminance the photodiode responds to linearly for a true ``lux``: the inverse of the
    app note's correction above 1000 lx (bisection: the correction is monotonic and >= its input),
    ``lux`` itself below. True values between 1000 and ~1075 lx, which the correction skips,
    read as 1000."""
    if lux <= NONLINEAR_ABOVE_LX:
        return lux
    lo, hi = NONLINEAR_ABOVE_LX, lux
    for _ in range(50):
        mid = (lo + hi) / 2
        if _reported(mid) < lux:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class FakeVEML7700(FakeI2CDevice):
    """VEML7700 on the wire: 16-bit little-endian registers behind a register pointer.

    Powers up shut down (ALS_CONF 0x0001). While ALS_SD = 0 it integrates continuously and the
    ALS/WHITE counts change once per IT (plus the PSM wait), from the light at the end of each
    integration and the gain/IT in force at its start; a write to ALS_CONF restarts the
    integration (after ~2 ms when it wakes from shutdown). Shut down, the counts keep their last
    value. Counts saturate at 65535. Threshold flags in ALS_INT (bits 14/15 when ALS_INT_EN)
    clear when read.

    Inputs: ``source()`` -> lx, or the fixed ``lux``. Faults (opt-in): ``nack``/`fail_next`;
    ``stuck_counts`` (counts frozen); `power_glitch` (every register back to power-on, counts 0);
    detach (gone).
    """

    def __init__(self, *, lux: float = 0.0, source: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.lux = lux
        self.source = source
        self.clock = clock
        self.registers = [0] * REGISTER_COUNT
        self.registers[chip.REG_ALS_CONF] = chip.CONF_POWER_ON
        self.pointer = 0
        self.stuck_counts = False
        self.integrations = 0
        self.conf_writes: list[int] = []
        self._cycle_start: float | None = None   # start of the running integration (None: shut down)

    # -- state ----------------------------------------------------------------------------------
    @property
    def gain(self) -> float:
        return GAIN_OF_CODE[(self.registers[chip.REG_ALS_CONF] >> chip.GAIN_SHIFT) & chip.GAIN_MASK]

    @property
    def it_ms(self) -> int:
        code = (self.registers[chip.REG_ALS_CONF] >> chip.IT_SHIFT) & chip.IT_MASK
        return IT_MS_OF_CODE.get(code, 100)   # reserved codes: treated as 100 ms

    def period_s(self) -> float:
        psm = self.registers[chip.REG_PSM]
        wait = PSM_WAIT_S[(psm >> chip.PSM_MODE_SHIFT) & 0b11] if psm & chip.PSM_EN else 0.0
        return self.it_ms / 1000 + wait

    def counts_for(self, lux: float, gain: float, it_ms: int) -> int:
        """The ALS count for ``lux`` at a setting (saturating)."""
        per_count = LX_PER_COUNT_AT_MAX * (800 / it_ms) * (2 / gain)
        return min(0xFFFF, max(0, round(linear_illuminance(lux) / per_count)))

    def power_glitch(self) -> None:
        """Supply dip: every register at its power-on value (shut down), counts 0."""
        self.registers = [0] * REGISTER_COUNT
        self.registers[chip.REG_ALS_CONF] = chip.CONF_POWER_ON
        self._cycle_start = None

    def _advance(self) -> None:
        if self._cycle_start is None:
            return
        period = self.period_s()
        now = self.clock()
        if now < self._cycle_start + period:
            return
        done = math.floor((now - self._cycle_start) / period)   # skip integrations nobody read
        self._cycle_start += done * period
        self.integrations += done
        if self.stuck_counts:
            return
        lux = self.source() if self.source is not None else self.lux
        count = self.counts_for(lux, self.gain, self.it_ms)
        self.registers[chip.REG_ALS] = count
        self.registers[chip.REG_WHITE] = min(0xFFFF, round(count * 1.1))
        conf = self.registers[chip.REG_ALS_CONF]
        if conf & chip.ALS_INT_EN:
            if count > self.registers[chip.REG_ALS_WH]:
                self.registers[chip.REG_ALS_INT] |= INT_HIGH_FLAG
            if count < self.registers[chip.REG_ALS_WL]:
                self.registers[chip.REG_ALS_INT] |= INT_LOW_FLAG

    # -- the wire -------------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        """``[pointer]`` sets the pointer; ``[register, LSB, MSB]`` writes a word."""
        self._advance()
        if not data:
            return
        self.pointer = data[0]
        if len(data) < 3 or self.pointer >= REGISTER_COUNT or self.pointer in (
                chip.REG_ALS, chip.REG_WHITE, chip.REG_ALS_INT):
            return   # pointer only, or a read-only / absent register
        value = data[1] | (data[2] << 8)
        if self.pointer == chip.REG_ALS_CONF:
            was_on = self._cycle_start is not None
            self.registers[chip.REG_ALS_CONF] = value
            self.conf_writes.append(value)
            if value & chip.ALS_SD:
                self._cycle_start = None
            else:
                self._cycle_start = self.clock() + (0.0 if was_on else ENABLE_TYPICAL_S)
        else:
            self.registers[self.pointer] = value

    def i2c_read(self, length: int) -> bytes:
        """The register at the pointer, LSB first (0xFF past it)."""
        self._advance()
        value = self.registers[self.pointer] if self.pointer < REGISTER_COUNT else 0xFFFF
        if self.pointer == chip.REG_ALS_INT:
            self.registers[chip.REG_ALS_INT] = 0
        return (bytes([value & 0xFF, value >> 8]) + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[chip.VEML7700], options: dict[str, Any]) -> chip.VEML7700:
    """A VEML7700 driver on the world's fake I2C bus, lit by ``environment.illuminance()``."""
    config = cls.check_options(options)
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeVEML7700(
        source=world.environment.illuminance, clock=world.clock.monotonic))
    return cls(bus=bus, **options)
