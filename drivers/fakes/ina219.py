"""A register-level fake INA219 and its simulator.

`FakeINA219` does what hardware.md §14.6 asks: the current and power registers are derived from
the shunt, bus and calibration registers as the silicon does (``CURRENT = SHUNT · Cal / 4096``,
``POWER = |CURRENT| · BUS / 5000``, both 0 while Cal is 0); RST and a brown-out restore 0x399F and
Cal 0; bit 0 of Cal is always 0; conversions complete every (shunt + bus) conversion time in
continuous mode, once after the configuration write in triggered mode, never when powered down;
CNVR is set by each completed conversion and cleared by a power read or a configuration write;
OVF is set when the current or power does not fit its register.

The physical side: ``source()`` gives (bus volts at IN−, amperes through the shunt), and
``shunt_ohms`` is the resistor actually fitted (the driver's option may be wrong: tests check
what that does). The encoding here is the chip's own (round to 10 µV and 4 mV, integer maths
with truncation), not the driver's.

Faults (off unless asked): ``nack`` / `fail_next`, `brownout` (registers to power-on values),
``stalled`` (no conversion ever completes: CNVR stays clear), ``force_overflow``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import ina219 as chip
from .i2c import FakeI2CDevice

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

POINTER_MASK = 0b111
#: ADC code (BADC/SADC bits) -> conversion time, seconds (datasheet Table 5, typical)
ADC_TIME_S = {0b0000: 84e-6, 0b0001: 148e-6, 0b0010: 276e-6, 0b0011: 532e-6, 0b1000: 532e-6,
              0b1001: 1.06e-3, 0b1010: 2.13e-3, 0b1011: 4.26e-3, 0b1100: 8.51e-3, 0b1101: 17.02e-3,
              0b1110: 34.05e-3, 0b1111: 68.10e-3}
ADC_CODE_FALLBACK = {0b0100: 0b0000, 0b0101: 0b0001, 0b0110: 0b0010, 0b0111: 0b0011}  #: 01xx: 9–12 bit too
PG_COUNTS = {0b00: 4000, 0b01: 8000, 0b10: 16000, 0b11: 32000}   #: shunt full scale in 10 µV counts
BUS_COUNTS_MAX = 0x1FFF
MODE_MASK = 0b111
MODE_POWER_DOWN, MODE_ADC_OFF = 0b000, 0b100
INT16_MIN, INT16_MAX, UINT16_MAX = -0x8000, 0x7FFF, 0xFFFF


class FakeINA219(FakeI2CDevice):
    """An INA219 at the register level; time from ``clock`` (seconds)."""

    def __init__(self, *, shunt_ohms: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 source: Callable[[], tuple[float, float]] = lambda: (12.0, 0.2)) -> None:
        super().__init__()
        self.shunt_ohms = shunt_ohms
        self.clock = clock
        self.source = source
        self.stalled = False
        self.force_overflow = False
        self.conversions = 0
        self.brownout()

    def brownout(self) -> None:
        """Power-on / reset: configuration 0x399F, every result and Cal 0, conversions restart."""
        self.pointer = chip.REG_CONFIG
        self.config = chip.CONFIG_RESET
        self.calibration = 0
        self.shunt = self.bus_counts = self.current = self.power = 0
        self.cnvr = self.ovf = False
        self._epoch = self.clock()
        self._done = 0   # conversions completed since the epoch that were latched

    # -- conversions ---------------------------------------------------------------------------
    def period_s(self) -> float:
        badc = (self.config >> chip.BADC_SHIFT) & 0b1111
        sadc = (self.config >> chip.SADC_SHIFT) & 0b1111
        return (ADC_TIME_S[ADC_CODE_FALLBACK.get(badc, badc)]
                + ADC_TIME_S[ADC_CODE_FALLBACK.get(sadc, sadc)])

    def _completed(self) -> int:
        mode = self.config & MODE_MASK
        if self.stalled or mode in (MODE_POWER_DOWN, MODE_ADC_OFF):
            return self._done
        count = math.floor((self.clock() - self._epoch) / self.period_s())
        return min(count, 1) if mode < MODE_ADC_OFF else count   # triggered: one conversion

    def _advance(self) -> None:
        completed = self._completed()
        if completed > self._done:
            self._done = completed
            self.conversions += 1
            self._latch()

    def _latch(self) -> None:
        volts, amps = self.source()
        pg = (self.config >> chip.PG_SHIFT) & 0b11
        limit = PG_COUNTS[pg]
        self.shunt = max(-limit, min(limit, round(amps * self.shunt_ohms * 100_000)))
        self.bus_counts = max(0, min(BUS_COUNTS_MAX, round(volts * 250)))
        current = int(self.shunt * self.calibration / 4096)          # truncates toward zero
        power = abs(current) * self.bus_counts // 5000
        self.ovf = self.force_overflow or not INT16_MIN <= current <= INT16_MAX or power > UINT16_MAX
        self.current = max(INT16_MIN, min(INT16_MAX, current))
        self.power = min(UINT16_MAX, power)
        self.cnvr = True

    def _register(self, pointer: int) -> int:
        if pointer == chip.REG_CONFIG:
            return self.config
        if pointer == chip.REG_SHUNT:
            return self.shunt & 0xFFFF
        if pointer == chip.REG_BUS:
            return (self.bus_counts << 3) | (0b10 if self.cnvr else 0) | (0b01 if self.ovf else 0)
        if pointer == chip.REG_POWER:
            return self.power
        if pointer == chip.REG_CURRENT:
            return self.current & 0xFFFF
        if pointer == chip.REG_CALIBRATION:
            return self.calibration
        return 0xFFFF   # no register there

    # -- the wire ------------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        """``[pointer]`` or ``[pointer, MSB, LSB]`` (config and calibration are writable)."""
        self._advance()
        if not data:
            return
        self.pointer = data[0] & POINTER_MASK
        if len(data) < 3:
            return
        word = (data[1] << 8) | data[2]
        if self.pointer == chip.REG_CONFIG:
            if word & chip.CONFIG_RST:
                self.brownout()
                return
            self.config = word
            self.cnvr = False
            self._epoch, self._done = self.clock(), 0
        elif self.pointer == chip.REG_CALIBRATION:
            self.calibration = word & chip.CAL_BIT0_MASK

    def i2c_read(self, length: int) -> bytes:
        self._advance()
        value = self._register(self.pointer)
        if self.pointer == chip.REG_POWER:
            self.cnvr = False
        data = bytes([value >> 8, value & 0xFF])
        return (data * ((length + 1) // 2))[:length]


# ================================================================================================
# the simulator
# ================================================================================================

PUMP_AMPS = 1.2              #: the irrigation pump's draw on the 12 V battery
PUMP_RUN_S = 600.0           #: it runs 10 minutes…
PUMP_PERIOD_S = 3600.0       #: …every hour
SOLAR_PEAK_AMPS = 2.0        #: the panel's charge current in full sun
BATTERY_REST_V = 12.4
CHARGE_V_PER_A = 0.25        #: the terminal voltage rises while charging, sags under load
LOAD_V_PER_A = 0.2


def solar_and_pump(world: SimulatedWorld) -> Callable[[], tuple[float, float]]:
    """(bus volts, amps) of a 12 V battery between a solar panel and a pump: the pump draws
    (positive current) 10 minutes an hour, the panel charges (negative) with the daylight."""
    env = world.environment

    def source() -> tuple[float, float]:
        pump = PUMP_AMPS if env.clock() % PUMP_PERIOD_S < PUMP_RUN_S else 0.0
        solar = SOLAR_PEAK_AMPS * env.illuminance() / env.peak_lux if env.peak_lux > 0 else 0.0
        amps = pump - solar + env.jitter(0.005)
        volts = BATTERY_REST_V + CHARGE_V_PER_A * solar - LOAD_V_PER_A * pump + env.jitter(0.01)
        return volts, amps

    return source


def simulate(world: SimulatedWorld, cls: type[chip.INA219], options: dict[str, Any]) -> chip.INA219:
    """An INA219 driver on the world's fake I2C bus, on a 12 V battery that a solar panel charges
    and a pump drains (the fitted shunt is the one the options name)."""
    config = cls.check_options(options)
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeINA219(
        shunt_ohms=config["shunt_ohms"], clock=world.clock.monotonic, source=solar_and_pump(world)))
    return cls(bus=bus, **options)
