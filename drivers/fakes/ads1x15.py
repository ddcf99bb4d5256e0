"""A register-level fake ADS1115 / ADS1015 and its simulator.

`FakeADS1x15` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus` and behaves as hardware.md §10.8
asks: a pointer register, big-endian 16-bit registers with their power-on values, a single-shot
conversion started by writing OS = 1 in power-down mode (OS reads 0 for 1/DR, then the
conversion register latches the input and OS reads 1 again), continuous mode updating every
1/DR, OS writes ignored in continuous mode.

Inputs are four voltages (AIN0..AIN3 against GND), each a number or a callable giving volts;
a differential MUX setting reads their difference. The code is worked out here on its own
(``round(V / FS · 2^15)``, clamped to the 16-bit range; the ADS1015 keeps 12 bits, left-justified
with a zero low nibble), not with the driver's maths, so tests compare two implementations.

Faults (off unless asked): ``nack`` / `fail_next` (from `FakeI2CDevice`), ``stuck_converting``
(OS never comes back), `power_glitch` (every register back to its power-on value), and
``poses_as_ads1015`` on a 16-bit fake: an ADS1015 sold as an ADS1115 (hardware.md §10.5: codes
step by 16, DR 111 means 3300 SPS).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import ads1x15 as chip
from ..errors import ConfigurationError
from .i2c import FakeI2CDevice

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

Voltage = float | Callable[[], float]

POINTER_MASK = 0b11          #: the pointer register's two meaningful bits
CONFIG_WRITABLE = 0xFFFF & ~chip.CONFIG_OS
MUX_MASK, PGA_MASK, DR_MASK = 0b111, 0b111, 0b111
MODE_BIT = 1 << 8
#: MUX code -> (positive input, negative input or None for GND) (datasheet Table 8)
MUX_INPUTS = {0b000: (0, 1), 0b001: (0, 3), 0b010: (1, 3), 0b011: (2, 3),
              0b100: (0, None), 0b101: (1, None), 0b110: (2, None), 0b111: (3, None)}
PGA_FULL_SCALE_V = {0b000: 6.144, 0b001: 4.096, 0b010: 2.048, 0b011: 1.024, 0b100: 0.512,
                    0b101: 0.256, 0b110: 0.256, 0b111: 0.256}
ADS1115_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
ADS1015_SPS = (128, 250, 490, 920, 1600, 2400, 3300, 3300)
CODE_MIN, CODE_MAX = -0x8000, 0x7FFF


class FakeADS1x15(FakeI2CDevice):
    """An ADS1115 (``bits=16``) or ADS1015 (``bits=12``) at the register level; time from
    ``clock`` (seconds). ``set_input(n, volts)`` with a number or a callable."""

    def __init__(self, *, bits: int = 16, clock: Callable[[], float] = time.monotonic,
                 inputs: tuple[Voltage, Voltage, Voltage, Voltage] = (0.0, 0.0, 0.0, 0.0)) -> None:
        super().__init__()
        if bits not in (12, 16):
            raise ValueError("an ADS1x15 has 12 or 16 bits")
        self.bits = bits
        self.clock = clock
        self.inputs: list[Voltage] = list(inputs)
        self.stuck_converting = False
        self.poses_as_ads1015 = False
        self.conversions = 0
        self.power_glitch()

    # -- state -----------------------------------------------------------------------------------
    def power_glitch(self) -> None:
        """Brown-out / power-on: every register back to its reset value, no conversion running."""
        self.pointer = chip.REG_CONVERSION
        self.config = chip.CONFIG_RESET
        self.conversion = 0x0000
        self.lo_thresh = chip.LO_THRESH_RESET
        self.hi_thresh = chip.HI_THRESH_RESET
        self._busy_until: float | None = None
        self._next_continuous: float | None = None

    def set_input(self, channel: int, volts: Voltage) -> None:
        self.inputs[channel] = volts

    def _volts(self, channel: int | None) -> float:
        if channel is None:
            return 0.0
        v = self.inputs[channel]
        return float(v() if callable(v) else v)

    @property
    def twelve_bit(self) -> bool:
        return self.bits == 12 or self.poses_as_ads1015

    def sps(self) -> int:
        dr = (self.config >> chip.DR_SHIFT) & DR_MASK
        return (ADS1015_SPS if self.twelve_bit else ADS1115_SPS)[dr]

    def code_for(self, config: int) -> int:
        """The conversion register for the inputs now, under ``config``'s MUX and PGA."""
        positive, negative = MUX_INPUTS[(config >> chip.MUX_SHIFT) & MUX_MASK]
        volts = self._volts(positive) - self._volts(negative)
        full_scale = PGA_FULL_SCALE_V[(config >> chip.PGA_SHIFT) & PGA_MASK]
        if self.twelve_bit:
            code = max(-2048, min(2047, math.floor(volts / full_scale * 2048 + 0.5)))
            return (code << 4) & 0xFFFF
        code = max(CODE_MIN, min(CODE_MAX, math.floor(volts / full_scale * 32768 + 0.5)))
        return code & 0xFFFF

    def _advance(self) -> None:
        now = self.clock()
        if self._busy_until is not None and now >= self._busy_until and not self.stuck_converting:
            self._busy_until = None
            self.conversion = self.code_for(self.config)
            self.conversions += 1
        if self._next_continuous is not None and now >= self._next_continuous:
            self.conversion = self.code_for(self.config)   # the newest of the periods that went by
            period = 1.0 / self.sps()
            passed = math.floor((now - self._next_continuous) / period) + 1
            self.conversions += passed
            self._next_continuous += passed * period

    def _config_read(self) -> int:
        converting = self._busy_until is not None
        return (self.config & ~chip.CONFIG_OS) | (0 if converting else chip.CONFIG_OS)

    # -- the wire ----------------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        """``[pointer]`` sets the pointer; ``[pointer, MSB, LSB]`` writes that register too."""
        self._advance()
        if not data:
            return
        self.pointer = data[0] & POINTER_MASK
        if len(data) < 3:
            return
        word = (data[1] << 8) | data[2]
        if self.pointer == chip.REG_CONFIG:
            self._write_config(word)
        elif self.pointer == chip.REG_LO_THRESH:
            self.lo_thresh = word
        elif self.pointer == chip.REG_HI_THRESH:
            self.hi_thresh = word
        # the conversion register is read-only

    def _write_config(self, word: int) -> None:
        single_shot = bool(word & MODE_BIT)
        self.config = word & CONFIG_WRITABLE
        now = self.clock()
        if not single_shot:
            self._busy_until = None
            if self._next_continuous is None:
                self._next_continuous = now + 1.0 / self.sps()
            return
        self._next_continuous = None
        if word & chip.CONFIG_OS and self._busy_until is None:
            self._busy_until = now + 1.0 / self.sps()

    def i2c_read(self, length: int) -> bytes:
        """The register the pointer selects, MSB first (the pointer stays: a second read repeats)."""
        self._advance()
        value = {chip.REG_CONVERSION: self.conversion, chip.REG_CONFIG: self._config_read(),
                 chip.REG_LO_THRESH: self.lo_thresh, chip.REG_HI_THRESH: self.hi_thresh}[self.pointer]
        data = bytes([value >> 8, value & 0xFF])
        return (data * ((length + 1) // 2))[:length]


# ================================================================================================
# the simulator
# ================================================================================================

SUPPLY_DIVIDER_V = 3.3 / 2    #: AIN2: the 3.3 V rail through a 1:1 divider
GROUNDED_NOISE_V = 300e-6     #: AIN3: a grounded input reads a few LSB either side of 0 (negative codes)


def simulate(world: SimulatedWorld, cls: type[chip._ADS1x15], options: dict[str, Any]) -> chip._ADS1x15:
    """An ADS1x15 driver on the world's fake I2C bus. One fake chip per address (every sensor of
    the chip shares it), wired like a greenhouse board: AIN0 a capacitive soil probe
    (``environment.soil_volts()``), AIN1 a second bed's probe (watered at another hour), AIN2
    the 3.3 V rail through a 1:1 divider, AIN3 grounded (a few LSB of noise: negative codes)."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])

    def make() -> FakeADS1x15:
        def rail() -> float:
            return SUPPLY_DIVIDER_V * (1 + env.jitter(0.001))

        def grounded() -> float:
            return GROUNDED_NOISE_V * env.jitter(1.0)

        return FakeADS1x15(bits=cls.bits, clock=world.clock.monotonic,
                           inputs=(env.soil_volts, lambda: env.soil_volts(bed=1), rail, grounded))

    chip_there = world.attach_i2c(bus, config["address"], make)
    if not isinstance(chip_there, FakeADS1x15) or chip_there.bits != cls.bits:
        what = f"an ADS1x15 of {chip_there.bits} bits" if isinstance(chip_there, FakeADS1x15) else \
            type(chip_there).__name__
        raise ConfigurationError(f"{cls.name}: the simulated chip at 0x{config['address']:02x} on bus "
                                 f"{config['i2c_bus']} is {what}, not an {cls.chip_name}")
    return cls(bus=bus, **options)
