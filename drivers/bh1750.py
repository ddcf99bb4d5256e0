"""ROHM BH1750FVI ambient light sensor over I2C (opcodes, no register map).

The master writes one-byte opcodes (``write_byte``) and reads the result as a plain 2-byte read
(``i2c_rdwr`` with one ``i2c_msg.read``), never ``read_i2c_block_data(addr, opcode, 2)``, which
sends the opcode and reads at once, before the conversion is done (shared/hardware.md §6).

One ``read()`` in a one-time mode: write the mode opcode, wait the datasheet *maximum*
conversion time scaled by MTreg/69, read 2 bytes. In a continuous mode the first read starts
the mode and waits once; later reads just fetch the latest result. MTreg (and power-on) are
written on the first read and again after any bus error.

Error mapping: errno 121 on the very first transfer (power on) -> `DeviceNotFoundError`;
any later OSError -> `BusError`. Raw 0 is a legitimate reading (darkness).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from pibridge.protocol import ValueType

from .base import Metric, Option, RetryPolicy, Sample
from .errors import SensorError
from .i2c import I2CDriver, i2c_bus_option

ADDRESSES = (0x23, 0x5C)  #: ADDR pin low/floating, ADDR high
DEFAULT_ADDRESS = 0x23

# --- opcodes ------------------------------------------------------------------------------------
OP_POWER_DOWN = 0x00
OP_POWER_ON = 0x01
OP_RESET = 0x07            #: clears the data register (only while powered on)
OP_CONTINUOUS_H = 0x10
OP_CONTINUOUS_H2 = 0x11
OP_CONTINUOUS_L = 0x13
OP_ONE_TIME_H = 0x20
OP_ONE_TIME_H2 = 0x21
OP_ONE_TIME_L = 0x23
OP_MTREG_HIGH = 0x40       #: 0b01000_hhh: MTreg bits 7:5
OP_MTREG_HIGH_MASK = 0xF8
OP_MTREG_LOW = 0x60        #: 0b011_lllll: MTreg bits 4:0
OP_MTREG_LOW_MASK = 0xE0
MTREG_HIGH_SHIFT = 5
MTREG_LOW_BITS = 0x1F

MODES = ("one-time", "continuous")
RESOLUTIONS = ("high", "high2", "low")
#: (mode, resolution) -> measurement opcode
MODE_OPCODES = {
    ("continuous", "high"): OP_CONTINUOUS_H,
    ("continuous", "high2"): OP_CONTINUOUS_H2,
    ("continuous", "low"): OP_CONTINUOUS_L,
    ("one-time", "high"): OP_ONE_TIME_H,
    ("one-time", "high2"): OP_ONE_TIME_H2,
    ("one-time", "low"): OP_ONE_TIME_L,
}
OPCODE_RESOLUTION = {op: resolution for (_, resolution), op in MODE_OPCODES.items()}

MTREG_DEFAULT = 69
MTREG_MIN = 31
MTREG_MAX = 254
COUNTS_PER_LUX = 1.2       #: datasheet: lux = counts / 1.2 at MTreg 69
#: conversion time at MTreg 69, seconds (scales with MTreg / 69)
TYPICAL_TIME_S = {"high": 0.120, "high2": 0.120, "low": 0.016}
MAX_TIME_S = {"high": 0.180, "high2": 0.180, "low": 0.024}
RESULT_LEN = 2


def raw_to_lux(raw: int, mtreg: int = MTREG_DEFAULT, resolution: str = "high") -> float:
    """Counts -> lux: ``raw / 1.2 × 69 / MTreg``, halved in the H2 modes."""
    lux = raw / COUNTS_PER_LUX * MTREG_DEFAULT / mtreg
    return lux / 2 if resolution == "high2" else lux


def parse_result(data: bytes) -> int:
    """The 2-byte result::

        byte 0: counts[15:8]   byte 1: counts[7:0]
    """
    return (data[0] << 8) | data[1]


def mtreg_opcodes(mtreg: int) -> tuple[int, int]:
    """MTreg as its two opcodes::

        0 1 0 0 0 | MT7 MT6 MT5         0 1 1 | MT4 MT3 MT2 MT1 MT0
    """
    return OP_MTREG_HIGH | (mtreg >> MTREG_HIGH_SHIFT), OP_MTREG_LOW | (mtreg & MTREG_LOW_BITS)


def conversion_time_s(resolution: str, mtreg: int = MTREG_DEFAULT) -> float:
    """Datasheet maximum conversion time for a resolution and MTreg, seconds."""
    return MAX_TIME_S[resolution] * mtreg / MTREG_DEFAULT


class BH1750(I2CDriver):
    """BH1750 ambient light sensor. Unit: lx.

    ``BH1750(bus=None, *, sleep=time.sleep, **options)``: ``bus`` is an smbus2.SMBus-like object
    (never closed by the driver); without one the driver opens ``smbus2.SMBus(i2c_bus)`` on the
    first read and closes it in ``close()``. ``sleep`` is the conversion wait (injectable).
    """

    name = "bh1750"
    description = "ROHM BH1750 ambient light sensor over I2C"
    metrics = (Metric("illuminance", "Illuminance", value_type=ValueType.DOUBLE, annotation="lx"),)
    options = (
        Option("address", int, DEFAULT_ADDRESS, "I2C address (0x23 ADDR low, 0x5C ADDR high)",
               choices=ADDRESSES),
        i2c_bus_option(),
        Option("mode", str, "one-time", "one-time (powers down between reads) or continuous",
               choices=MODES),
        Option("resolution", str, "high", "high (1 lx), high2 (0.5 lx) or low (4 lx, faster)",
               choices=RESOLUTIONS),
        Option("mtreg", int, MTREG_DEFAULT, "measurement time register: sensitivity and "
               "conversion time scale with it", minimum=MTREG_MIN, maximum=MTREG_MAX),
    )
    read_time_s = MAX_TIME_S["high"]      #: one-time H at MTreg 69
    min_interval_s = MAX_TIME_S["high"]   #: no fresh value before a conversion ends
    retry = RetryPolicy(attempts=2, spacing_s=MAX_TIME_S["high"])

    def __init__(self, bus: Any = None, *, sleep: Callable[[float], None] = time.sleep,
                 **options: Any) -> None:
        super().__init__(bus, **options)
        self._sleep = sleep
        self.mtreg: int = self.config["mtreg"]
        self.resolution: str = self.config["resolution"]
        self.continuous = self.config["mode"] == "continuous"
        self.opcode = MODE_OPCODES[(self.config["mode"], self.resolution)]
        # timing follows the configured resolution and MTreg (class values: one-time H, MTreg 69);
        # in continuous mode a read sooner than one conversion would repeat the previous value
        conversion = conversion_time_s(self.resolution, self.mtreg)
        self.read_time_s = self.min_interval_s = conversion
        self.retry = RetryPolicy(attempts=self.retry.attempts, spacing_s=conversion)
        self._seen = False        # has the chip ever acknowledged?
        self._configured = False

    @property
    def conversion_time_s(self) -> float:
        """Maximum conversion time for the configured resolution and MTreg, seconds."""
        return conversion_time_s(self.resolution, self.mtreg)

    def _error(self, exc: OSError, doing: str) -> SensorError:
        """A NACK before the chip ever answered means it is absent; anything else is a bus error."""
        self._configured = False
        if not self._seen and exc.errno == errno.EREMOTEIO:
            return self._absent()
        return self._bus_error(exc, doing)

    def _configure(self, bus: Any) -> None:
        """Power on, set MTreg; in continuous mode start converting and wait for the first result."""
        bus.write_byte(self.address, OP_POWER_ON)
        self._seen = True
        high, low = mtreg_opcodes(self.mtreg)
        bus.write_byte(self.address, high)
        bus.write_byte(self.address, low)
        if self.continuous:
            bus.write_byte(self.address, self.opcode)
            self._sleep(self.conversion_time_s)
        self._configured = True

    def _read_result(self, bus: Any) -> bytes:
        from smbus2 import i2c_msg  # lazily: only when building messages

        msg = i2c_msg.read(self.address, RESULT_LEN)
        bus.i2c_rdwr(msg)
        return bytes(msg)

    def read(self) -> Sample:
        """One measurement: {illuminance: lx}."""
        bus = self._open_bus()
        try:
            if not self._configured:
                self._configure(bus)
            if not self.continuous:
                bus.write_byte(self.address, self.opcode)
                self._sleep(self.conversion_time_s)
            data = self._read_result(bus)
        except OSError as exc:
            raise self._error(exc, "transfer") from exc
        return {"illuminance": raw_to_lux(parse_result(data), self.mtreg, self.resolution)}

    @classmethod
    def simulated(cls, environment: Any, *, sleep: Callable[[float], None] | None = None,
                  **options: Any) -> BH1750:
        """A BH1750 driver on a `FakeSMBus` holding a `FakeBH1750` lit by
        ``environment.illuminance()``. ``sleep``: see `pibridge.drivers.fakes.i2c.simulation_timing`."""
        from .fakes.i2c import FakeBH1750, FakeSMBus, simulation_timing

        config = cls.check_options(options)
        clock, wait = simulation_timing(sleep)
        bus = FakeSMBus()
        bus.attach(config["address"], FakeBH1750(source=environment.illuminance, clock=clock))
        return cls(bus=bus, sleep=wait, **options)
