"""TI INA219 current, voltage and power monitor over I2C (datasheet SBOS448, §8.5 and §8.6).

The chip measures the voltage across a shunt resistor (``shunt_ohms``) and the bus voltage at
IN−, and — once a calibration value is written — computes current and power itself. This
driver runs it in continuous mode at its widest ranges (bus 32 V or 16 V with ``bus_range``,
shunt ±320 mV, 12-bit single samples: the chip's reset configuration 0x399F for 32 V), writes
the configuration and calibration once (first ``start()``, and again after any transfer
failure), then reads the four result registers per sample.

Registers are 16-bit **big-endian** behind a pointer byte (like the ADS1115)::

    write    S addr+W | pointer | REG[15:8] | REG[7:0] | P
    read     S addr+W | pointer | Sr addr+R | REG[15:8] | REG[7:0] | P

    0x00 CONFIG   15 RST | 14 - | 13 BRNG | 12:11 PG | 10:7 BADC | 6:3 SADC | 2:0 MODE
    0x01 SHUNT    signed, 10 µV per LSB (PG only changes how many sign bits extend)
    0x02 BUS      15:3 bus voltage, 4 mV per LSB | 2 - | 1 CNVR | 0 OVF
    0x03 POWER    unsigned, 20 × Current_LSB watts per LSB
    0x04 CURRENT  signed, Current_LSB amperes per LSB
    0x05 CALIB    15:1 calibration | 0 always 0

Calibration (datasheet §8.5, hardware.md §14.3): ``Current_LSB ≥ max_current / 2^15``, picked as
the next round value (1-2-5 series, in whole nanoamps: 100 µA for the default 3.2 A),
``Cal = trunc(0.04096 / (Current_LSB · R_shunt))`` worked out in exact fractions (floats can
land a hair below a whole number and truncate one too low: for 1 µA on 10 Ω, Adafruit's 16V_4mA
preset, ``0.04096 / (1000 * 1e-9 * 10.0)`` is 4095.999…), bit 0 cleared as the chip does.

The chip computes ``CURRENT = SHUNT · Cal / 4096`` with the Cal it holds, so the LSB it really
uses is ``0.04096 / (Cal · R)``, not the round value Cal was derived from whenever the truncation
or the cleared bit 0 moved Cal (0.015 Ω for 10 A: round LSB 0.5 mA, Cal 5461.33 → 5461 → 5460,
so one count is 0.50012… mA; the round LSB would read 0.024 % low). The driver reports
``Current = CURRENT · 0.04096 / (Cal · R)`` and ``Power = POWER · 20 · 0.04096 / (Cal · R)``, in
exact fractions (`effective_current_lsb`), so each float is the exact value correctly rounded
(hardware.md §14.5: Adafruit's float products give 199.99999999999997 mA and 2.3999999999999995 W
where this gives 0.2 A and 2.4 W). Adafruit's presets hard-code their Cal values and report mA;
this driver follows the datasheet for any shunt and reports A. The power
register is unsigned, so ``power`` is never negative; the direction of the flow is the sign of
``current``.

Faults: OVF set (the current or power maths overflowed: beyond ``max_current``) is an
`ImplausibleValueError`; CNVR clear (no conversion since the last reading) a `NotReadyError`
(the next ``start()`` writes the configuration again, in case the chip was left powered down);
a calibration register that reads back other than written (the chip was reset by a power
glitch: current and power read 0) is re-sent at once, said once in the log, and this reading is
a `NotReadyError` (its current and power were computed with Cal 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .base import Metric, Option, OptionProblem, RetryPolicy, Sample
from .errors import ImplausibleValueError, NotReadyError
from .i2c import I2CDriver, RegisterSignature, i2c_address_option, i2c_bus_option

log = logging.getLogger(__name__)

# --- bus and registers (datasheet §8.6) ---------------------------------------------------------
ADDRESSES = tuple(range(0x40, 0x50))   #: A1/A0 each to GND, VS+, SDA or SCL
DEFAULT_ADDRESS = 0x40
REG_CONFIG = 0x00
REG_SHUNT = 0x01
REG_BUS = 0x02
REG_POWER = 0x03
REG_CURRENT = 0x04
REG_CALIBRATION = 0x05
WORD_LEN = 2

CONFIG_RESET = 0x399F
CONFIG_RST = 1 << 15
BRNG_SHIFT = 13
PG_SHIFT = 11
BADC_SHIFT = 7
SADC_SHIFT = 3
BRNG_CODES = {16: 0, 32: 1}
PG_320MV = 0b11               #: ±320 mV shunt range (gain /8): the widest
ADC_12BIT = 0b0011            #: one 12-bit sample, 532 µs
MODE_CONTINUOUS_BOTH = 0b111  #: shunt and bus, continuous
BUS_CNVR = 1 << 1
BUS_OVF = 1 << 0
BUS_SHIFT = 3
CAL_BIT0_MASK = 0xFFFE
CAL_MAX = 0xFFFE

SHUNT_LSB_UV = 10            #: µV per shunt-register LSB
BUS_LSB_MV = 4               #: mV per bus-voltage LSB
POWER_LSB_FACTOR = 20        #: Power_LSB = 20 × Current_LSB
SHUNT_FULL_SCALE_V = 0.32    #: PG /8
CAL_NUMERATOR = Fraction(4096, 100_000)   #: 0.04096, the datasheet's fixed scaling constant
CURRENT_CODES = 1 << 15      #: Current_LSB ≥ max_current / 2^15
NANO = 10**9
MICRO = 10**6
MILLI = 10**3
LSB_SERIES = (1, 2, 5)       #: round current LSBs: 1, 2, 5 × 10^k nA

# --- timing -----------------------------------------------------------------------------------
CONVERSION_MAX_S = 2 * 0.000586   #: one 12-bit shunt + one bus conversion, datasheet maximum
BUS_TIME_S = 0.0012               #: four 2-byte register reads at 100 kHz


def config_word(bus_range: int) -> int:
    """The configuration register: ``bus_range`` V, ±320 mV, 12-bit single samples, continuous."""
    return ((BRNG_CODES[bus_range] << BRNG_SHIFT) | (PG_320MV << PG_SHIFT) | (ADC_12BIT << BADC_SHIFT)
            | (ADC_12BIT << SADC_SHIFT) | MODE_CONTINUOUS_BOTH)


def exact(value: float) -> Fraction:
    """A float option as the decimal the user wrote (0.1 -> 1/10, not 0.1000000000000000055…)."""
    return Fraction(repr(value))


def raw_calibration(current_lsb_na: int, shunt_ohms: float) -> int:
    """``trunc(0.04096 / (Current_LSB · R))`` in exact arithmetic (datasheet equation 1)."""
    return math.floor(CAL_NUMERATOR / (Fraction(current_lsb_na, NANO) * exact(shunt_ohms)))


def calibration_value(current_lsb_na: int, shunt_ohms: float) -> int:
    """The calibration register as written: `raw_calibration` with bit 0 cleared (the chip
    keeps it 0). ValueError when it does not fit the register."""
    raw = raw_calibration(current_lsb_na, shunt_ohms)
    if not 2 <= raw <= CAL_MAX + 1:
        raise ValueError(f"calibration {raw} does not fit the 16-bit register")
    return raw & CAL_BIT0_MASK


def effective_current_lsb(calibration: int, shunt_ohms: float) -> Fraction:
    """Amperes per CURRENT count as the chip computes it with ``calibration`` written:
    ``0.04096 / (Cal · R)`` (from ``CURRENT = SHUNT · Cal / 4096`` and 10 µV per SHUNT count)."""
    return CAL_NUMERATOR / (calibration * exact(shunt_ohms))


def current_lsb_na(max_current: float, shunt_ohms: float) -> int:
    """The current LSB in nanoamps: the smallest 1-2-5 round value ≥ max_current / 2^15 whose
    calibration fits the 16-bit register (a small ``max_current`` on a small shunt needs a
    coarser LSB than its 2^15 share)."""
    need = math.ceil(exact(max_current) * NANO / CURRENT_CODES)
    decade = 1
    while True:
        for step in LSB_SERIES:
            lsb = step * decade
            if lsb >= need and raw_calibration(lsb, shunt_ohms) <= CAL_MAX + 1:
                return lsb
        decade *= 10


def signed(word: int) -> int:
    """A 16-bit register as two's complement."""
    return word - 0x10000 if word & 0x8000 else word


def unpack_word(data: bytes) -> int:
    """Two bytes as read (MSB first) -> the 16-bit register value."""
    return (data[0] << 8) | data[1]


def pack_word(word: int) -> bytes:
    """A 16-bit register value as written: MSB first."""
    return bytes([(word >> 8) & 0xFF, word & 0xFF])


def shunt_volts(shunt_reg: int) -> float:
    """SHUNT -> volts: int16 × 10 µV."""
    return signed(shunt_reg) * SHUNT_LSB_UV / MICRO


def bus_volts(bus_reg: int) -> float:
    """BUS -> volts: bits 15:3 × 4 mV (CNVR and OVF are bits 1 and 0)."""
    return (bus_reg >> BUS_SHIFT) * BUS_LSB_MV / MILLI


def current_amps(current_reg: int, lsb: Fraction) -> float:
    """CURRENT -> amperes: int16 × ``lsb`` (A per count, `effective_current_lsb`; negative: the
    flow runs from IN− to IN+), correctly rounded."""
    return float(signed(current_reg) * lsb)


def power_watts(power_reg: int, lsb: Fraction) -> float:
    """POWER -> watts: the *unsigned* register × 20 × ``lsb`` (never negative)."""
    return float(power_reg * POWER_LSB_FACTOR * lsb)


#: `pibridge scan`: the configuration register at its reset value (or at what this driver
#: writes for a 16 V bus). The other current monitors at 0x40-0x4F reset to other values (INA226
#: 0x4127, INA260 0x6127, INA3221 0x7127); an INA219 configured otherwise is "probable, by address".
INA219_SIGNATURE = RegisterSignature("INA219", {REG_CONFIG: (CONFIG_RESET, config_word(16))})


class INA219(I2CDriver):
    """INA219 in continuous mode. Units: V, V, A, W."""

    name = "ina219"
    chip_name = "INA219"
    description = "TI INA219 bus voltage, shunt voltage, current and power over I2C"
    metrics = (
        Metric("bus_voltage", "Bus voltage", unit="SI.ElectricPotential.VOLT"),
        Metric("shunt_voltage", "Shunt voltage", unit="SI.ElectricPotential.VOLT"),
        Metric("current", "Current", unit="SI.ElectricCurrent.AMPERE"),
        Metric("power", "Power", unit="SI.Power.WATT"),
    )
    options = (
        i2c_address_option(ADDRESSES, "I2C address 0x40–0x4F (0x40 A0/A1 to GND, 0x41 A0 bridged, "
                           "0x44 A1, 0x45 both)", DEFAULT_ADDRESS),
        i2c_bus_option(),
        Option("shunt_ohms", float, 0.1, "the shunt resistor in ohms (0.1 on the usual breakouts)",
               minimum=0.0001, maximum=1000.0),
        Option("max_current", float, 3.2, "the largest current expected, amperes (sets the "
               "calibration: the current LSB is the next round value above max_current / 32768)",
               minimum=0.0001, maximum=400.0),
        Option("bus_range", int, 32, "bus voltage range, volts", choices=tuple(BRNG_CODES)),
    )
    read_time_s = CONVERSION_MAX_S + BUS_TIME_S
    min_interval_s = CONVERSION_MAX_S   #: no new conversion sooner (CNVR would be clear)
    retry = RetryPolicy(attempts=2, spacing_s=0.01)
    simulator = "pibridge.drivers.fakes.ina219:simulate"
    signature = INA219_SIGNATURE

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """``max_current`` through ``shunt_ohms`` must stay within the shunt ADC's ±320 mV."""
        drop = exact(config["max_current"]) * exact(config["shunt_ohms"])
        if drop > exact(SHUNT_FULL_SCALE_V):
            return [OptionProblem("max_current", f"option max_current: {config['max_current']:g} A through "
                                  f"{config['shunt_ohms']:g} Ω is {float(drop) * 1000:g} mV, beyond the "
                                  "shunt input's ±320 mV (use a smaller shunt)")]
        return []

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        self.current_lsb_na = current_lsb_na(self.config["max_current"], self.config["shunt_ohms"])
        self.calibration = calibration_value(self.current_lsb_na, self.config["shunt_ohms"])
        #: A per CURRENT count with that Cal (the round LSB only when Cal came out whole and even)
        self.current_lsb = effective_current_lsb(self.calibration, self.config["shunt_ohms"])
        self.config_word = config_word(self.config["bus_range"])
        self._configured = False
        self._started = False

    def _transfer_failed(self) -> None:
        self._configured = False   # the chip may have been power-cycled: configure again

    def _configure(self) -> None:
        self.write_bytes(bytes([REG_CONFIG]) + pack_word(self.config_word), "configuration write")
        self.write_bytes(bytes([REG_CALIBRATION]) + pack_word(self.calibration), "calibration write")
        self._configured = True

    def _word(self, register: int, doing: str) -> int:
        return unpack_word(self.read_registers(register, WORD_LEN, doing))

    def start(self) -> float:
        """Configure and calibrate when needed (then one conversion's time), else nothing to
        wait for: the chip converts continuously."""
        self._started = True
        if not self._configured:
            self._configure()
            return self.timing.read_time_s
        return 0.0

    def collect(self) -> Sample:
        """{bus_voltage V, shunt_voltage V, current A, power W} of the latest conversion."""
        if not self._started:
            raise NotReadyError(f"{self.label}: collect() before start()")
        bus = self._word(REG_BUS, "bus voltage read")
        if bus & BUS_OVF:
            raise ImplausibleValueError(f"{self.label}: overflow flag set: the current or power is "
                                        "beyond the calibrated range "
                                        f"(max_current {self.config['max_current']:g} A)")
        if not bus & BUS_CNVR:
            self._configured = False
            raise NotReadyError(f"{self.label}: no conversion since the last reading (CNVR clear); "
                                "the next reading configures the chip again")
        shunt = self._word(REG_SHUNT, "shunt voltage read")
        current = self._word(REG_CURRENT, "current read")
        power = self._word(REG_POWER, "power read")   # clears CNVR
        if current == 0:
            calibration = self._word(REG_CALIBRATION, "calibration read")
            if calibration != self.calibration:
                log.warning("%s: calibration register reads 0x%04x, not 0x%04x (the chip was reset: power "
                            "glitch?); configuration and calibration sent again", self.label, calibration,
                            self.calibration)
                self._configure()
                raise NotReadyError(f"{self.label}: calibration lost (reads 0x{calibration:04x}); "
                                    "sent again, the next reading is valid")
        return {"bus_voltage": bus_volts(bus), "shunt_voltage": shunt_volts(shunt),
                "current": current_amps(current, self.current_lsb),
                "power": power_watts(power, self.current_lsb)}
