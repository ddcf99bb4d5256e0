"""A register-level fake BME280 / BMP280 (datasheet rev 1.1 §3–§5) and its simulator.

`FakeBME280` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus`; `simulate` builds a `BME280`
driver on the simulated world's I2C bus with a fake chip fed by the world's environment.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import bme280 as chip
from .i2c import FakeI2CDevice

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

# ================================================================================================

#: A real part's trim ("vector A", a register dump of one BME280) and its raw sample.
VECTOR_A_CALIBRATION = chip.Calibration(
    T1=28009, T2=25654, T3=50, P1=39145, P2=-10750, P3=3024, P4=5667, P5=-120, P6=-7, P7=15500,
    P8=-14600, P9=6000, H1=75, H2=376, H3=0, H4=286, H5=50, H6=30)
VECTOR_A_RAW = (529191, 326816, 30281)  # adc_T, adc_P, adc_H

ADC_20BIT_MAX = (1 << 20) - 1
ADC_16BIT_MAX = (1 << 16) - 1
FULL_RESOLUTION_BITS = 20
BASE_RESOLUTION_BITS = 16     #: x1 without filter; each osrs step adds one bit up to 20
IM_UPDATE_S = 0.002           #: NVM copy after power-on / soft reset
#: BME280 normal-mode standby codes (t_sb) in seconds
STANDBY_S = (0.0005, 0.0625, 0.125, 0.25, 0.5, 1.0, 0.010, 0.020)
CONFIG_WRITABLE_MASK = 0b1111_1101  #: bit 1 of config is reserved
FILTER_COEFFICIENTS = (1, 2, 4, 8, 16, 16, 16, 16)  #: filter code -> IIR coefficient (1 = off)
OVERSAMPLING_FACTORS = (0, 1, 2, 4, 8, 16, 16, 16)  #: osrs code -> factor
DATA_REGISTERS = range(chip.REG_DATA, chip.REG_DATA + chip.DATA_LEN_BME280)
CALIB_TP_REGISTERS = range(chip.REG_CALIB_TP, chip.REG_CALIB_TP + chip.CALIB_TP_LEN)
CALIB_H_REGISTERS = range(chip.REG_CALIB_H, chip.REG_CALIB_H + chip.CALIB_H_LEN)
BMP280_ABSENT = frozenset({0xA0, 0xA1, chip.REG_CTRL_HUM, *CALIB_H_REGISTERS, 0xFD, 0xFE})


def pack_calibration(c: chip.Calibration, *, humidity: bool = True) -> tuple[bytes, bytes]:
    """Calibration words -> register images (0x88..0xA1, 0xE1..0xE7); inverse of
    `pibridge.drivers.bme280.parse_calibration`. Without ``humidity`` 0xA0/0xA1 and 0xE1.. are zero."""
    tp = struct.pack("<HhhHhhhhhhhh", c.T1, c.T2, c.T3, c.P1, c.P2, c.P3, c.P4, c.P5, c.P6, c.P7,
                     c.P8, c.P9) + bytes([0x00, c.H1 if humidity else 0x00])
    if not humidity:
        return tp, bytes(chip.CALIB_H_LEN)
    e4 = (c.H4 >> 4) & 0xFF
    e5 = ((c.H5 & 0x0F) << 4) | (c.H4 & 0x0F)
    e6 = (c.H5 >> 4) & 0xFF
    h = struct.pack("<hB", c.H2, c.H3) + bytes([e4, e5, e6]) + struct.pack("<b", c.H6)
    return tp, h


#: secant steps before `_smallest_at_least` falls back to halving (a curve it does not suit)
SECANT_STEPS = 8
#: the second starting point of a search from a hint, this many counts towards the target
HINT_STEP = 16


def _smallest_at_least(f: Callable[[int], float], target: float, lo: int, hi: int,
                       hint: int | None = None) -> int:
    """Nearest x in [lo, hi] to where the non-decreasing ``f`` crosses ``target``: the smallest x
    with f(x) >= target (hi if none), or the one below it when that is closer.

    The compensation curves are smooth, so the crossing is found by secant steps through the
    last two points evaluated, starting from ``hint`` (the previous conversion's counts: the
    air moves little between two reads) or from ``lo`` and ``hi``; each step is kept inside the
    bracket (below, above] that must hold the answer, and after `SECANT_STEPS` steps the rest
    is plain halving. Since f never decreases, that smallest x is one number, the same
    bisection finds; about 5 evaluations instead of bisection's 20."""
    seen: dict[int, float] = {}

    def value(x: int) -> float:
        if x not in seen:
            seen[x] = f(x)
        return seen[x]

    below, above = lo - 1, hi  # f(below) < target (lo - 1: nothing below lo counts); answer <= above
    if hint is not None:
        start = min(max(hint, lo), hi)
        step = HINT_STEP if value(start) < target else -HINT_STEP
        points = [start, min(max(start + step, lo), hi)]
    else:
        points = [lo, hi]
    for x in points:
        if value(x) >= target:
            above = min(above, x)
        else:
            below = max(below, x)
    (x0, f0), (x1, f1) = ((x, value(x)) for x in points)
    steps = 0
    while above - below > 1:
        if steps < SECANT_STEPS and f1 != f0:
            guess = x1 + (target - f1) * (x1 - x0) / (f1 - f0)
            probe = min(max(math.ceil(guess), below + 1), above - 1)
            steps += 1
        else:
            probe = (below + above) // 2
        f_probe = value(probe)
        if f_probe >= target:
            above = probe
        else:
            below = probe
        (x0, f0), (x1, f1) = (x1, f1), (probe, f_probe)
    if above > lo and abs(value(above - 1) - target) < abs(value(above) - target):
        return above - 1
    return above


def _quantize(adc: int, bits: int, maximum: int) -> int:
    """Round a 20-bit ADC value to ``bits`` of resolution (the low bits read as 0)."""
    step = 1 << (FULL_RESOLUTION_BITS - bits)
    return min(maximum - (step - 1), (adc + step // 2) // step * step)


class FakeBME280(FakeI2CDevice):
    """Register-level BME280 (or BMP280 with ``variant="BMP280"``), per the datasheet (rev 1.1
    §3.3 modes, §5.4 registers).

    Inputs per conversion: ``source()`` -> (°C, Pa, %RH) physical values, turned into the ADC
    counts that this part's calibration maps back to them (a secant search through the
    datasheet compensation); or, without ``source``, the fixed ``raw`` = (adc_T, adc_P, adc_H).

    Behaviour: register pointer + auto-increment reads; writes are (register, value) pairs;
    ctrl_hum latched only by a ctrl_meas write; forced mode (01/10) runs one conversion of the
    datasheet typical duration (status bit 3 set meanwhile), then mode bits read 00; normal mode
    (11) repeats with t_sb standby; mode writes during a conversion are delayed to its end
    (later ones and ctrl_hum writes are dropped); 0xB6 to 0xE0 resets (im_update for 2 ms);
    skipped channels read 0x80000/0x8000; without filter the resolution is 16 + (osrs-1) bits;
    with the filter T and P go through the IIR at 20 bits. Read-only registers ignore writes.

    Faults: ``chip_id`` (wrong id), ``nack``/`fail_next` (errno 121), ``stuck_measuring``,
    ``blank_calibration`` (reads 0xFF), ``humidity_stuck`` (0x8000), ``stuck_values`` (data
    registers never update).
    """

    def __init__(self, *, variant: str = "BME280", chip_id: int | None = None,
                 calibration: chip.Calibration = VECTOR_A_CALIBRATION,
                 raw: tuple[int, int, int] = VECTOR_A_RAW,
                 source: Callable[[], tuple[float, float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if variant not in ("BME280", "BMP280"):
            raise ValueError(f"variant must be BME280 or BMP280, not {variant!r}")
        self.variant = variant
        self.has_humidity = variant == "BME280"
        self.chip_id = chip_id if chip_id is not None else (
            chip.CHIP_ID_BME280 if self.has_humidity else chip.CHIP_IDS_BMP280[0])
        self.calibration = calibration
        self.raw = raw
        self.source = source
        self.clock = clock
        self.stuck_measuring = False
        self.blank_calibration = False
        self.humidity_stuck = False
        self.stuck_values = False
        self.conversions = 0
        #: per channel (T, P, H) the counts of the previous inversion: where the next search
        #: starts (speed only: the answer does not depend on it)
        self._inverse_hints: list[int | None] = [None, None, None]
        self.regs = bytearray(256)
        tp, h = pack_calibration(calibration, humidity=self.has_humidity)
        self.regs[chip.REG_CALIB_TP:chip.REG_CALIB_TP + len(tp)] = tp
        if self.has_humidity:
            self.regs[chip.REG_CALIB_H:chip.REG_CALIB_H + len(h)] = h
        self._pointer = 0
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on / soft reset: control registers 0 (sleep), data registers at reset values."""
        for reg in (chip.REG_CTRL_HUM, chip.REG_CTRL_MEAS, chip.REG_CONFIG):
            self.regs[reg] = 0x00
        self._write_adc(chip.ADC_SKIPPED_20BIT, chip.ADC_SKIPPED_20BIT, chip.ADC_SKIPPED_16BIT)
        self.ctrl_hum_pending = 0
        self.osrs_h_latched = 0
        self._busy_until: float | None = None
        self._delayed_ctrl_meas: int | None = None
        self._iir: list[float | None] = [None, None]  # T, P
        self._im_update_until = self.clock() + IM_UPDATE_S

    @property
    def mode(self) -> int:
        return self.regs[chip.REG_CTRL_MEAS] & 0b11

    @property
    def osrs_codes(self) -> tuple[int, int, int]:
        """(osrs_t, osrs_p, osrs_h) codes in force for the next conversion."""
        meas = self.regs[chip.REG_CTRL_MEAS]
        return meas >> 5, (meas >> 2) & 0b111, self.osrs_h_latched

    def conversion_time_s(self) -> float:
        """Datasheet typical measurement time for the latched oversampling."""
        t, p, h = (OVERSAMPLING_FACTORS[c] for c in self.osrs_codes)
        return chip.measurement_time_s(t, p, h if self.has_humidity else 0, maximum=False)

    def measuring(self) -> bool:
        self._advance()
        return self.stuck_measuring or (self._busy_until is not None and self.clock() < self._busy_until)

    # -- wire ----------------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        """``[pointer]`` sets the register pointer; ``[reg0, val0, reg1, val1, ...]`` writes pairs
        (the BME280 does not auto-increment on writes, datasheet Fig. 9)."""
        self._advance()
        if not data:
            return
        self._pointer = data[0]
        pairs = data
        while len(pairs) >= 2:
            self._write_register(pairs[0], pairs[1])
            pairs = pairs[2:]
        if pairs:
            self._pointer = pairs[0]

    def i2c_read(self, length: int) -> bytes:
        """Auto-incrementing read from the register pointer."""
        self._advance()
        out = bytearray()
        for _ in range(length):
            out.append(self._read_register(self._pointer))
            self._pointer = (self._pointer + 1) & 0xFF
        return bytes(out)

    def _read_register(self, reg: int) -> int:
        if reg == chip.REG_CHIP_ID:
            return self.chip_id
        if reg == chip.REG_RESET:
            return 0x00
        if reg == chip.REG_STATUS:
            status = chip.STATUS_MEASURING if self.measuring() else 0
            if self.clock() < self._im_update_until:
                status |= chip.STATUS_IM_UPDATE
            return status
        if not self.has_humidity and reg in BMP280_ABSENT:
            return 0x00
        if self.blank_calibration and (reg in CALIB_TP_REGISTERS or reg in CALIB_H_REGISTERS):
            return 0xFF
        if self.humidity_stuck and reg in (0xFD, 0xFE):
            return 0x80 if reg == 0xFD else 0x00
        return self.regs[reg]

    def _write_register(self, reg: int, value: int) -> None:
        busy = self.measuring()
        if reg == chip.REG_RESET:
            if value == chip.RESET_COMMAND:
                self.reset()
        elif reg == chip.REG_CTRL_HUM:
            if self.has_humidity and not busy:
                self.regs[reg] = value & 0b111
                self.ctrl_hum_pending = value & 0b111
        elif reg == chip.REG_CTRL_MEAS:
            if busy:
                if self._delayed_ctrl_meas is None:
                    self._delayed_ctrl_meas = value
            else:
                self._apply_ctrl_meas(value)
        elif reg == chip.REG_CONFIG and self.mode != chip.MODE_NORMAL:
            # writes "may be ignored" in normal mode: the fake always ignores them there
            self.regs[reg] = value & CONFIG_WRITABLE_MASK
        # everything else is read-only (or absent): ignored, as the chip does

    def _apply_ctrl_meas(self, value: int) -> None:
        self.regs[chip.REG_CTRL_MEAS] = value
        self.osrs_h_latched = self.ctrl_hum_pending
        if value & 0b11 == chip.MODE_SLEEP:
            self._busy_until = None
        else:
            now = self.clock()
            self._busy_until = now + self.conversion_time_s()

    def _advance(self) -> None:
        """Finish conversions whose time has come (lazily, on each access)."""
        if self.stuck_measuring or self._busy_until is None:
            return
        now = self.clock()
        if now < self._busy_until:
            return
        finished = self._busy_until
        self._complete_conversion()
        if self.mode == chip.MODE_NORMAL:
            standby = STANDBY_S[self.regs[chip.REG_CONFIG] >> 5]
            period = self.conversion_time_s() + standby
            skipped = math.floor((now - finished) / period)  # cycles elapsed unobserved
            start = finished + standby + skipped * period
            self._busy_until = start + self.conversion_time_s()
        else:
            self.regs[chip.REG_CTRL_MEAS] &= ~0b11 & 0xFF  # forced mode done: back to sleep
            self._busy_until = None
        if self._delayed_ctrl_meas is not None:
            value, self._delayed_ctrl_meas = self._delayed_ctrl_meas, None
            self._apply_ctrl_meas(value)

    # -- conversion ----------------------------------------------------------------------------
    def _complete_conversion(self) -> None:
        self.conversions += 1
        if self.stuck_values:
            return
        osrs_t, osrs_p, osrs_h = self.osrs_codes
        filter_c = FILTER_COEFFICIENTS[(self.regs[chip.REG_CONFIG] >> 2) & 0b111]
        calib = self.calibration
        physical = self.source() if self.source is not None else None

        if osrs_t == 0:
            adc_t = chip.ADC_SKIPPED_20BIT
        else:
            ideal_t = self.raw[0] if physical is None else self.adc_for_temperature(physical[0])
            adc_t = self._shape(0, ideal_t, osrs_t, filter_c)
        t_fine = chip.compensate_temperature(adc_t, calib)[0]
        if osrs_p == 0:
            adc_p = chip.ADC_SKIPPED_20BIT
        else:
            ideal_p = self.raw[1] if physical is None else self.adc_for_pressure(physical[1], t_fine)
            adc_p = self._shape(1, ideal_p, osrs_p, filter_c)
        if osrs_h == 0 or not self.has_humidity:
            adc_h = chip.ADC_SKIPPED_16BIT
        else:
            adc_h = self.raw[2] if physical is None else self.adc_for_humidity(physical[2], t_fine)
        self._write_adc(adc_p, adc_t, adc_h)

    def _shape(self, channel: int, adc: int, osrs: int, filter_c: int) -> int:
        """Resolution and IIR filter of the P/T path (humidity is never filtered)."""
        if filter_c == 1:
            bits = min(FULL_RESOLUTION_BITS, BASE_RESOLUTION_BITS + osrs - 1)
            return _quantize(adc, bits, ADC_20BIT_MAX)
        previous = self._iir[channel]
        value = float(adc) if previous is None else (previous * (filter_c - 1) + adc) / filter_c
        self._iir[channel] = value
        return round(value)

    def _write_adc(self, adc_p: int, adc_t: int, adc_h: int) -> None:
        """Data registers (see `pibridge.drivers.bme280.parse_data` for the layout)."""
        for base, adc in ((chip.REG_DATA, adc_p), (chip.REG_DATA + 3, adc_t)):
            self.regs[base] = (adc >> 12) & 0xFF
            self.regs[base + 1] = (adc >> 4) & 0xFF
            self.regs[base + 2] = (adc & 0x0F) << 4
        if self.has_humidity:
            self.regs[0xFD], self.regs[0xFE] = (adc_h >> 8) & 0xFF, adc_h & 0xFF

    # -- physics -> ADC counts (numerical inverse of the compensation: `_smallest_at_least`) ------
    def adc_for_temperature(self, celsius: float) -> int:
        """adc_T whose t_fine is closest to ``celsius`` (t_fine = °C × 5120)."""
        calib = self.calibration
        return self._inverted(0, lambda a: chip.compensate_temperature(a, calib)[0],
                              celsius * 5120.0, ADC_20BIT_MAX)

    def adc_for_pressure(self, pascal: float, t_fine: int) -> int:
        """adc_P that compensates closest to ``pascal`` at ``t_fine`` (pressure falls with adc)."""
        calib = self.calibration
        return self._inverted(1, lambda a: -chip.compensate_pressure(a, t_fine, calib),
                              -pascal * chip.PRESSURE_Q, ADC_20BIT_MAX)

    def adc_for_humidity(self, percent: float, t_fine: int) -> int:
        """adc_H that compensates closest to ``percent`` at ``t_fine``."""
        calib = self.calibration
        return self._inverted(2, lambda a: chip.compensate_humidity(a, t_fine, calib),
                              percent * chip.HUMIDITY_Q, ADC_16BIT_MAX)

    def _inverted(self, channel: int, f: Callable[[int], float], target: float, top: int) -> int:
        """`_smallest_at_least` over [0, top], starting from this channel's previous answer."""
        adc = _smallest_at_least(f, target, 0, top, hint=self._inverse_hints[channel])
        self._inverse_hints[channel] = adc
        return adc


def simulate(world: SimulatedWorld, cls: type[chip.BME280], options: dict[str, Any]) -> chip.BME280:
    """A BME280 driver on the world's fake I2C bus, its chip measuring the environment's air
    (temperature, pressure, humidity) at each conversion, on the world's clock."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeBME280(
        clock=world.clock.monotonic,
        source=lambda: (env.air_temperature(), env.pressure(), env.relative_humidity())))
    return cls(bus=bus, **options)
