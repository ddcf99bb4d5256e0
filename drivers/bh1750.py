"""ROHM BH1750FVI ambient light sensor over I2C (opcodes, no register map).

The master writes one-byte opcodes (``write_byte``) and reads the result as a plain 2-byte read
(``i2c_rdwr`` with one ``i2c_msg.read``), never ``read_i2c_block_data(addr, opcode, 2)``, which
sends the opcode and reads at once, before the conversion is done (datasheet p. 7: the result
is a plain read after the measurement time).

One attempt in two phases (the caller owns the wait). One-time modes: ``start()`` writes the
mode opcode and returns the datasheet *maximum* conversion time scaled by MTreg/69;
``collect()`` reads 2 bytes. Collected too early, the chip hands back its previous result (as
the real part does). Continuous modes: the first ``start()`` starts the mode and returns one
conversion time; later ones return 0 and ``collect()`` fetches the latest result. MTreg (and
power-on) are written on the first start and again after any bus error.

Error mapping (`I2CDriver`'s transfer helpers): errno 121 on the very first transfer (power
on) -> `DeviceNotFoundError`; any later OSError -> `BusError`. Raw 0 is a legitimate reading
(darkness).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pibridge.protocol import ValueType

from .base import Metric, Option, RetryPolicy, Sample, Timing
from .errors import NotReadyError
from .i2c import I2CDriver, i2c_address_option, i2c_bus_option

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

    ``BH1750(bus=None, **options)``: ``bus`` is an smbus2.SMBus-like object (never closed by the
    driver); without one the driver opens ``smbus2.SMBus(i2c_bus)`` on the first transfer and
    closes it in ``close()``.
    """

    name = "bh1750"
    chip_name = "BH1750"
    description = "ROHM BH1750 ambient light sensor over I2C"
    metrics = (Metric("illuminance", "Illuminance", value_type=ValueType.DOUBLE, annotation="lx"),)
    options = (
        i2c_address_option(ADDRESSES, "I2C address (0x23 ADDR low, 0x5C ADDR high)", DEFAULT_ADDRESS),
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
    simulator = "pibridge.drivers.fakes.bh1750:simulate"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """Everything follows one conversion at the configured resolution and MTreg: a read
        sooner than that (continuous mode) would repeat the previous value."""
        conversion = conversion_time_s(config["resolution"], config["mtreg"])
        return Timing(conversion, conversion, RetryPolicy(attempts=cls.retry.attempts, spacing_s=conversion))

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        self.mtreg: int = self.config["mtreg"]
        self.resolution: str = self.config["resolution"]
        self.continuous = self.config["mode"] == "continuous"
        self.opcode = MODE_OPCODES[(self.config["mode"], self.resolution)]
        self._configured = False
        self._started = False

    @property
    def conversion_time_s(self) -> float:
        """Maximum conversion time for the configured resolution and MTreg, seconds."""
        return conversion_time_s(self.resolution, self.mtreg)

    def _transfer_failed(self) -> None:
        self._configured = False  # power on and MTreg again (the chip may have been power-cycled)

    def _configure(self) -> None:
        """Power on and set MTreg (two opcodes)."""
        self.write_byte(OP_POWER_ON, "power on")
        high, low = mtreg_opcodes(self.mtreg)
        self.write_byte(high, "MTreg write")
        self.write_byte(low, "MTreg write")
        self._configured = True

    def start(self) -> float:
        """Start a conversion (one-time modes, and the first start in continuous mode); returns
        the seconds until its result is in the data register."""
        if not self._configured:
            self._configure()
            if self.continuous:
                self.write_byte(self.opcode, "measurement start")
                self._started = True
                return self.conversion_time_s
        if self.continuous:
            return 0.0
        self.write_byte(self.opcode, "measurement start")
        self._started = True
        return self.conversion_time_s

    def collect(self) -> Sample:
        """The 2-byte result as {illuminance: lx}."""
        if not self._started:
            raise NotReadyError(f"{self.label}: collect() before start()")
        data = self.read_bytes(RESULT_LEN)
        return {"illuminance": raw_to_lux(parse_result(data), self.mtreg, self.resolution)}
