"""An opcode-level fake BH1750 and its simulator.

`FakeBH1750` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus`; `simulate` builds a `BH1750`
driver on the simulated world's I2C bus, lit by the world's environment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import bh1750 as lux_chip
from .i2c import FakeI2CDevice

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

# ================================================================================================

BH1750_MEASURE_OPCODES = frozenset(lux_chip.MODE_OPCODES.values())
BH1750_ONE_TIME_OPCODES = frozenset(
    op for (mode, _), op in lux_chip.MODE_OPCODES.items() if mode == "one-time")
BH1750_RAW_MAX = 0xFFFF
BH1750_LOW_RES_MASK = 0xFFFC  #: the fake models L-resolution's 4 lx steps as two zero low bits
BH1750_MTREG_HIGH_MASK = 0b1110_0000
BH1750_MTREG_LOW_MASK = 0b0001_1111


class FakeBH1750(FakeI2CDevice):
    """Opcode-level BH1750: one opcode per write, results as a plain 2-byte read (MSB first).

    Starts powered down with MTreg 69 and data 0. Measurement opcodes power it on and start a
    conversion of the datasheet *typical* duration scaled by MTreg/69; the data register changes
    only when a conversion completes, so a read taken too early repeats the previous value.
    Continuous modes keep converting; one-time modes power down after one conversion. Reset
    (0x07) clears the data register, only while powered on. MTreg is written as two opcodes
    (0x40 | MT[7:5], 0x60 | MT[4:0]); counts scale with MTreg (and double in H2 modes).

    Inputs: ``source()`` -> lux, or the fixed attribute ``lux``. Faults: ``nack``/`fail_next`,
    ``stuck_values`` (data register frozen), detaching it from the bus (gone).
    """

    def __init__(self, *, lux: float = 0.0, source: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.lux = lux
        self.source = source
        self.clock = clock
        self.powered = False
        self.mtreg = lux_chip.MTREG_DEFAULT
        self._data = 0
        self.mode_opcode: int | None = None
        self.stuck_values = False
        self.conversions = 0
        self._busy_until: float | None = None
        self._busy_mtreg = self.mtreg

    @property
    def data(self) -> int:
        """The 16-bit data register as of now."""
        self._advance()
        return self._data

    def conversion_time_s(self, opcode: int, mtreg: int) -> float:
        resolution = lux_chip.OPCODE_RESOLUTION[opcode]
        return lux_chip.TYPICAL_TIME_S[resolution] * mtreg / lux_chip.MTREG_DEFAULT

    def counts_for(self, lux: float, opcode: int, mtreg: int) -> int:
        """Raw counts the chip would report for ``lux`` (inverse of `raw_to_lux`, saturating)."""
        resolution = lux_chip.OPCODE_RESOLUTION[opcode]
        counts = lux * lux_chip.COUNTS_PER_LUX * mtreg / lux_chip.MTREG_DEFAULT
        if resolution == "high2":
            counts *= 2
        raw = min(BH1750_RAW_MAX, max(0, round(counts)))
        return raw & BH1750_LOW_RES_MASK if resolution == "low" else raw

    def _advance(self) -> None:
        if self._busy_until is None or self.clock() < self._busy_until:
            return
        assert self.mode_opcode is not None
        self.conversions += 1
        if not self.stuck_values:
            lux = self.source() if self.source is not None else self.lux
            self._data = self.counts_for(lux, self.mode_opcode, self._busy_mtreg)
        if self.mode_opcode in BH1750_ONE_TIME_OPCODES:
            self.powered = False
            self.mode_opcode = None
            self._busy_until = None
        else:  # continuous: the next conversion follows at once (skip unobserved ones)
            period = self.conversion_time_s(self.mode_opcode, self.mtreg)
            behind = math.floor((self.clock() - self._busy_until) / period)
            self._busy_until += (behind + 1) * period
            self._busy_mtreg = self.mtreg

    def i2c_write(self, data: bytes) -> None:
        """One opcode per transaction; bytes after the first are ignored."""
        self._advance()
        if not data:
            return
        op = data[0]
        if op == lux_chip.OP_POWER_DOWN:
            self.powered = False
            self.mode_opcode = None
            self._busy_until = None
        elif op == lux_chip.OP_POWER_ON:
            self.powered = True
        elif op == lux_chip.OP_RESET:
            if self.powered:
                self._data = 0
        elif op in BH1750_MEASURE_OPCODES:
            self.powered = True
            self.mode_opcode = op
            self._busy_mtreg = self.mtreg
            self._busy_until = self.clock() + self.conversion_time_s(op, self.mtreg)
        elif op & lux_chip.OP_MTREG_HIGH_MASK == lux_chip.OP_MTREG_HIGH:
            self.mtreg = (self.mtreg & BH1750_MTREG_LOW_MASK) | ((op & 0b111) << 5)
        elif op & lux_chip.OP_MTREG_LOW_MASK == lux_chip.OP_MTREG_LOW:
            self.mtreg = (self.mtreg & BH1750_MTREG_HIGH_MASK) | (op & BH1750_MTREG_LOW_MASK)
        # unknown opcodes are ignored

    def i2c_read(self, length: int) -> bytes:
        """The data register, high byte first (0xFF after the two bytes)."""
        self._advance()
        data = bytes([(self._data >> 8) & 0xFF, self._data & 0xFF])
        return (data + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[lux_chip.BH1750], options: dict[str, Any]) -> lux_chip.BH1750:
    """A BH1750 driver on the world's fake I2C bus, lit by ``environment.illuminance()``."""
    config = cls.check_options(options)
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeBH1750(
        source=world.environment.illuminance, clock=world.clock.monotonic))
    return cls(bus=bus, **options)
