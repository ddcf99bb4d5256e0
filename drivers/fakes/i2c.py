"""A fake I2C bus and fake I2C chips that behave like the real parts on the wire.

Every smbus2 call is reduced to what the wire carries: an optional *write phase* (bytes sent
after the address) and an optional *read phase* (bytes clocked back), each handed to the chip
at that address. The chip alone decides what the bytes mean: the BME280 treats the first
written byte as its register pointer and further bytes as (register, value) pairs; the BH1750
treats a written byte as an opcode. So the SMBus idioms map as:

======================================  ========================  ===============
smbus2 call                             write phase               read phase
======================================  ========================  ===============
``read_byte(a)``                        --                        1 byte
``write_byte(a, v)``                    ``[v]``                   --
``read_byte_data(a, r)``                ``[r]``                   1 byte
``write_byte_data(a, r, v)``            ``[r, v]``                --
``read_word_data(a, r)``                ``[r]``                   2 bytes, LSB first
``read_i2c_block_data(a, r, n)``        ``[r]``                   n bytes (n <= 32)
``write_i2c_block_data(a, r, data)``    ``[r, *data]`` (<= 32)    --
``i2c_rdwr(msg, ...)``                  each write msg            each read msg
======================================  ========================  ===============

A missing address (or a chip told to NACK) raises ``OSError(121, "Remote I/O error")`` as Linux
does. Chips keep time with a ``clock`` callable (seconds): ``time.monotonic`` for ``--simulate``,
a `VirtualClock` in tests so that no test sleeps for real.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import bh1750 as lux_chip
from .. import bme280 as chip
from .clock import VirtualClock

I2C_SMBUS_BLOCK_MAX = 32  #: smbus2's block-transfer limit
I2C_M_RD = 0x0001         #: i2c_msg flag of a read message


def nack_error() -> OSError:
    """What Linux reports for an address nobody acknowledges."""
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


def simulation_timing(sleep: Callable[[float], None] | None) -> tuple[Callable[[], float],
                                                                       Callable[[float], None]]:
    """(chip clock, driver wait) for a ``simulated()`` driver. Without ``sleep``: real time.
    With ``sleep`` (e.g. a no-op for benchmarks): a `VirtualClock` that the driver's waits advance
    before calling ``sleep``, so the fake chip still sees the conversion time elapse."""
    if sleep is None:
        return time.monotonic, time.sleep
    clock = VirtualClock()
    inner = sleep

    def wait(seconds: float) -> None:
        clock.sleep(seconds)
        inner(seconds)

    return clock, wait


class FakeI2CDevice:
    """Base of the fake chips: one write phase, one read phase per transfer.

    Fault injection (off unless asked): ``nack = True`` makes every transfer fail with errno
    121; `fail_next` makes only the next *n* transfers fail.
    """

    def __init__(self) -> None:
        self.nack = False
        self._nack_next = 0

    def fail_next(self, count: int = 1) -> None:
        """NACK the next ``count`` transfers (a glitch), then answer again."""
        self._nack_next = count

    def check_ack(self) -> None:
        """Raise the NACK OSError if a fault says so."""
        if self._nack_next > 0:
            self._nack_next -= 1
            raise nack_error()
        if self.nack:
            raise nack_error()

    def i2c_write(self, data: bytes) -> None:
        """The bytes of a write phase (after the address byte)."""
        raise NotImplementedError

    def i2c_read(self, length: int) -> bytes:
        """Bytes clocked out in a read phase."""
        raise NotImplementedError


class FakeSMBus:
    """Duck-typed ``smbus2.SMBus`` holding fake chips by 7-bit address.

    ``transfers`` logs each call as ``(method, address, register-or-None, payload)`` so tests can
    check what went over the wire (e.g. one burst read per sample).
    """

    def __init__(self, bus: int | None = None, devices: dict[int, FakeI2CDevice] | None = None) -> None:
        self.bus = bus
        self.devices: dict[int, FakeI2CDevice] = dict(devices or {})
        self.transfers: list[tuple[str, int, int | None, Any]] = []
        self.closed = False

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, address: int, device: FakeI2CDevice) -> FakeI2CDevice:
        self.devices[address] = device
        return device

    def detach(self, address: int) -> None:
        """The chip is gone (unplugged): its address NACKs from now on."""
        self.devices.pop(address, None)

    def _device(self, address: int) -> FakeI2CDevice:
        if self.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        device = self.devices.get(address)
        if device is None:
            raise nack_error()
        device.check_ack()
        return device

    def _log(self, method: str, address: int, register: int | None, payload: Any) -> None:
        self.transfers.append((method, address, register, payload))

    # -- smbus2 API --------------------------------------------------------------------------
    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        self._log("read_byte", i2c_addr, None, 1)
        return self._device(i2c_addr).i2c_read(1)[0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._log("write_byte", i2c_addr, None, value)
        self._device(i2c_addr).i2c_write(bytes([value]))

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._log("read_byte_data", i2c_addr, register, 1)
        device = self._device(i2c_addr)
        device.i2c_write(bytes([register]))
        return device.i2c_read(1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        self._log("write_byte_data", i2c_addr, register, value)
        self._device(i2c_addr).i2c_write(bytes([register, value]))

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._log("read_word_data", i2c_addr, register, 2)
        device = self._device(i2c_addr)
        device.i2c_write(bytes([register]))
        low, high = device.i2c_read(2)
        return low | (high << 8)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {I2C_SMBUS_BLOCK_MAX} bytes")
        self._log("read_i2c_block_data", i2c_addr, register, length)
        device = self._device(i2c_addr)
        device.i2c_write(bytes([register]))
        return list(device.i2c_read(length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Iterable[int],
                             force: bool | None = None) -> None:
        data = list(data)
        if len(data) > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._log("write_i2c_block_data", i2c_addr, register, data)
        self._device(i2c_addr).i2c_write(bytes([register, *data]))

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        """Combined transfer of smbus2 ``i2c_msg`` objects; read messages are filled in place."""
        for msg in i2c_msgs:
            device = self._device(msg.addr)
            if msg.flags & I2C_M_RD:
                self._log("i2c_rdwr.read", msg.addr, None, msg.len)
                data = bytes(device.i2c_read(msg.len))
                ctypes.memmove(msg.buf, data, msg.len)
            else:
                payload = bytes(list(msg)[: msg.len])
                self._log("i2c_rdwr.write", msg.addr, None, list(payload))
                device.i2c_write(payload)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeSMBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ================================================================================================
# BME280 / BMP280
# ================================================================================================

#: A real part's trim (shared/hardware.md §1.7 Vector A) and its raw sample.
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


def _smallest_at_least(f: Callable[[int], float], target: float, lo: int, hi: int) -> int:
    """Nearest x in [lo, hi] to where the non-decreasing ``f`` crosses ``target`` (bisection)."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        if f(mid) >= target:
            b = mid
        else:
            a = mid + 1
    if a > lo and abs(f(a - 1) - target) < abs(f(a) - target):
        return a - 1
    return a


def _quantize(adc: int, bits: int, maximum: int) -> int:
    """Round a 20-bit ADC value to ``bits`` of resolution (the low bits read as 0)."""
    step = 1 << (FULL_RESOLUTION_BITS - bits)
    return min(maximum - (step - 1), (adc + step // 2) // step * step)


class FakeBME280(FakeI2CDevice):
    """Register-level BME280 (or BMP280 with ``variant="BMP280"``), per shared/hardware.md §1.8.

    Inputs per conversion: ``source()`` -> (°C, Pa, %RH) physical values, turned into the ADC
    counts that this part's calibration maps back to them (bisection through the datasheet
    compensation); or, without ``source``, the fixed ``raw`` = (adc_T, adc_P, adc_H).

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

    # -- physics -> ADC counts (numerical inverse of the compensation) ---------------------------
    def adc_for_temperature(self, celsius: float) -> int:
        """adc_T whose t_fine is closest to ``celsius`` (t_fine = °C × 5120)."""
        calib = self.calibration
        return _smallest_at_least(lambda a: chip.compensate_temperature(a, calib)[0],
                                  celsius * 5120.0, 0, ADC_20BIT_MAX)

    def adc_for_pressure(self, pascal: float, t_fine: int) -> int:
        """adc_P that compensates closest to ``pascal`` at ``t_fine`` (pressure falls with adc)."""
        calib = self.calibration
        return _smallest_at_least(lambda a: -chip.compensate_pressure(a, t_fine, calib),
                                  -pascal * chip.PRESSURE_Q, 0, ADC_20BIT_MAX)

    def adc_for_humidity(self, percent: float, t_fine: int) -> int:
        """adc_H that compensates closest to ``percent`` at ``t_fine``."""
        calib = self.calibration
        return _smallest_at_least(lambda a: chip.compensate_humidity(a, t_fine, calib),
                                  percent * chip.HUMIDITY_Q, 0, ADC_16BIT_MAX)


# ================================================================================================
# BH1750
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
