"""TI ADS1115 (16-bit) and ADS1015 (12-bit) ADCs over I2C, single-shot conversions
(ADS111x datasheet SBAS444E §8.5 and §9.6; ADS101x the same register map).

One sensor reads one input: single-ended AIN\\ *n* against GND (``channel``), or one of the four
differential pairs (``differential = "0-1"``). Several sensors may read the channels of one chip
(a grower's four soil probes on one ADS1115): each claims only its inputs (`resources`), and
the sensors of one chip take their conversions one at a time (`exclusive_key`), because they
share the one config register.

One attempt in two phases (the caller owns the wait):

* ``start()`` writes the whole config register with OS = 1 (start one conversion from
  power-down), the input, the range and the rate, and returns 1/DR plus the internal
  oscillator's 10 % tolerance plus bus time;
* ``collect()`` reads the config register back: OS = 0 means still converting
  (`NotReadyError`); any other field that differs from what was written means the chip was reset
  between the two phases (power glitch: it reads its power-on 0x8583) and the result belongs to
  another input (`NotReadyError`; the next ``start()`` writes the whole register again). Then it
  reads the conversion register and converts it. A code at either end of the range (0x7FFF,
  0x8000) is a clipped input, not a voltage: `ImplausibleValueError` naming a larger range
  (a dry soil probe's 3 V reads as 2.0479 V at ±2.048 V otherwise).

Registers are 16-bit **big-endian**, behind a pointer byte (smbus2's word calls are little-endian,
so block calls are used)::

    write    S addr+W | 0x01 | CONFIG[15:8] | CONFIG[7:0] | P
    read     S addr+W | pointer | Sr addr+R | REG[15:8] | REG[7:0] | P

    CONFIG   15  OS       write 1: start a conversion; read 0: converting, 1: idle
             14:12 MUX    000 AIN0-AIN1 … 011 AIN2-AIN3, 100 + n: AINn-GND
             11:9  PGA    full scale ±6.144 … ±0.256 V
             8   MODE     1 single-shot / power-down
             7:5 DR       data rate (each chip its own table)
             4:2 COMP_*   0 (traditional, active low, non-latching)
             1:0 COMP_QUE 11 comparator off (ALERT/RDY high impedance)

The maths (issue 15 convention, datasheet §9.3.3): ADS1115 ``V = int16(reg) · FS / 2^15``;
ADS1015 ``V = (int16(reg) >> 4) · FS / 2^11`` (left-justified 12 bits, sign-extending shift).
Both are computed as ``code × LSB_pV / 10^12`` with the LSB an exact integer of picovolts, so
the float is the exact datasheet value correctly rounded (no accumulated error). ESPHome's
12-bit path shifts the *unsigned* register and corrupts every negative code (hardware.md §10.5:
``FF F0`` becomes −61.4 V); here negative codes are sign-extended, as the datasheet's two's
complement says. Adafruit writes OS = 1 on every config write, even gain-only changes (a race
PR #109 fixed); this driver writes the config only to start a conversion.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

from .base import ChipInput, Metric, Option, OptionProblem, Resources, RetryPolicy, Sample, Timing
from .errors import ImplausibleValueError, NotReadyError
from .i2c import I2CDriver, RegisterSignature, i2c_address_option, i2c_bus_option

# --- bus and registers (datasheet §9.5, §9.6) --------------------------------------------------
ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)   #: ADDR pin to GND, VDD, SDA, SCL
REG_CONVERSION = 0x00
REG_CONFIG = 0x01
REG_LO_THRESH = 0x02
REG_HI_THRESH = 0x03
CONFIG_RESET = 0x8583      #: power-on config: idle, AIN0-AIN1, ±2.048 V, single-shot, DR 100, comp off
LO_THRESH_RESET = 0x8000
HI_THRESH_RESET = 0x7FFF
WORD_LEN = 2

CONFIG_OS = 1 << 15        #: write: start one conversion; read: 1 = idle (no conversion running)
MUX_SHIFT = 12
PGA_SHIFT = 9
CONFIG_MODE_SINGLE_SHOT = 1 << 8
DR_SHIFT = 5
COMP_QUE_DISABLE = 0b11    #: bits 1:0 (comparator off); COMP_MODE/POL/LAT bits 4:2 stay 0
MUX_SINGLE_ENDED = 0b100   #: MUX 100 + n: AINn against GND

#: ``differential`` option -> MUX code (datasheet Table 8)
DIFFERENTIAL_MUX = {"0-1": 0b000, "0-3": 0b001, "1-3": 0b010, "2-3": 0b011}
CHANNELS = 4
#: full scale in volts (the option) -> (PGA code, full scale in µV, exact)
FULL_SCALES = {6.144: (0b000, 6_144_000), 4.096: (0b001, 4_096_000), 2.048: (0b010, 2_048_000),
               1.024: (0b011, 1_024_000), 0.512: (0b100, 512_000), 0.256: (0b101, 256_000)}
DEFAULT_FULL_SCALE = 4.096  #: hardware.md §10.7: a soil probe's dry 2.3–3.0 V clips at ±2.048 V
#: samples per second -> DR code (datasheet Table 9 / ADS101x Table 8)
ADS1115_DATA_RATES = {8: 0b000, 16: 0b001, 32: 0b010, 64: 0b011, 128: 0b100, 250: 0b101,
                      475: 0b110, 860: 0b111}
ADS1015_DATA_RATES = {128: 0b000, 250: 0b001, 490: 0b010, 920: 0b011, 1600: 0b100, 2400: 0b101,
                      3300: 0b110}     #: DR 111 is 3300 SPS too; 110 is written
PICO_PER_MICRO = 10**6
PICOVOLTS_PER_VOLT = 1e12

#: an "ADS1115" whose codes changed by steps of 16 this many readings in a row is an ADS1015 (hardware.md
#: §10.5: counterfeit boards, marking BRPI); a genuine part does that with probability 16^-8
COARSE_READINGS_TO_WARN = 8
LOW_NIBBLE = 0x000F

log = logging.getLogger(__name__)

# --- timing -----------------------------------------------------------------------------------
OSCILLATOR_MARGIN = 1.10   #: the internal oscillator is ±10 % (datasheet §7.5): wait 1.1/DR
BUS_TIME_S = 0.0006        #: config write (3 bytes) + two 2-byte register reads at 100 kHz


def config_word(mux: int, pga: int, dr: int) -> int:
    """The config register that starts one single-shot conversion (table in the module doc)."""
    return (CONFIG_OS | (mux << MUX_SHIFT) | (pga << PGA_SHIFT) | CONFIG_MODE_SINGLE_SHOT
            | (dr << DR_SHIFT) | COMP_QUE_DISABLE)


def pack_word(word: int) -> bytes:
    """A 16-bit register value as it goes on the wire: MSB first."""
    return bytes([(word >> 8) & 0xFF, word & 0xFF])


def unpack_word(data: bytes) -> int:
    """Two bytes as read (MSB first) -> the unsigned 16-bit register value."""
    return (data[0] << 8) | data[1]


def conversion_code(data: bytes, bits: int) -> int:
    """The conversion register -> the signed ADC code: int16 for the ADS1115 (``bits = 16``);
    for the ADS1015 (``bits = 12``) the left-justified 12 bits, sign-extended (arithmetic
    shift by 4: ``FF F0`` is −1, ``80 00`` is −2048)."""
    value = unpack_word(data)
    if value & 0x8000:
        value -= 0x10000
    return value >> (16 - bits)


def lsb_picovolts(full_scale_uv: int, bits: int) -> int:
    """One LSB in picovolts: ``FS / 2^(bits-1)``, an exact integer for every range (7 812 500 pV
    = 7.8125 µV at ±0.256 V on the ADS1115)."""
    lsb, remainder = divmod(full_scale_uv * PICO_PER_MICRO, 1 << (bits - 1))
    assert remainder == 0, "every ADS1x15 range has an exact picovolt LSB"
    return lsb


def code_to_volts(code: int, full_scale: float, bits: int) -> float:
    """Signed ADC code -> volts: ``code · FS / 2^(bits-1)`` (datasheet), correctly rounded."""
    _, full_scale_uv = FULL_SCALES[full_scale]
    return code * lsb_picovolts(full_scale_uv, bits) / PICOVOLTS_PER_VOLT


def conversion_time_s(data_rate: int) -> float:
    """The longest a single-shot conversion takes at ``data_rate`` SPS: 1/DR, oscillator +10 %."""
    return OSCILLATOR_MARGIN / data_rate


def inputs_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The AIN pins a configuration reads: ``("AIN0",)`` single-ended, ``("AIN0", "AIN1")`` for
    differential "0-1"."""
    pair = config.get("differential") or ""
    if pair:
        return tuple(f"AIN{n}" for n in pair.split("-"))
    return (f"AIN{effective_channel(config)}",)


def effective_channel(config: Mapping[str, Any]) -> int:
    """The single-ended channel: the ``channel`` option, 0 when neither it nor a pair is given."""
    channel = config.get("channel")
    return 0 if channel is None else int(channel)


def mux_of(config: Mapping[str, Any]) -> int:
    """The MUX code of a configuration: a differential pair, or 100 + n for AINn vs GND."""
    pair = config.get("differential") or ""
    if pair:
        return DIFFERENTIAL_MUX[pair]
    return MUX_SINGLE_ENDED + effective_channel(config)


def ads_options(data_rates: Mapping[int, int], default_rate: int) -> tuple[Option, ...]:
    """The options of one chip of the family (its own data-rate table)."""
    return (
        i2c_address_option(ADDRESSES, "I2C address (0x48 ADDR to GND, 0x49 VDD, 0x4A SDA, 0x4B SCL)"),
        i2c_bus_option(),
        Option("channel", int, None, "single-ended input AIN0–AIN3 against GND (0 when neither "
               "this nor differential is given)", minimum=0, maximum=CHANNELS - 1),
        Option("differential", str, "", "a differential pair instead of channel (AINp − AINn; "
               "none by default)", choices=tuple(DIFFERENTIAL_MUX)),
        Option("full_scale", float, DEFAULT_FULL_SCALE, "full-scale range ±volts (the PGA); no "
               "input may exceed VDD + 0.3 V whatever the range", choices=tuple(FULL_SCALES)),
        Option("data_rate", int, default_rate, "samples per second (a conversion takes "
               "1/data_rate)", choices=tuple(data_rates)),
    )


#: what `pibridge scan` reads: the comparator thresholds keep their power-on values unless a
#: program sets up the ALERT pin (this driver never writes them); no other chip at 0x48-0x4B
#: (INA219, TMP102, LM75, PCF8591) reads 0x8000 / 0x7FFF there. ADS1115 and ADS1015 share the
#: register map, so scan cannot tell them apart (hardware.md §10.5: an ADS1015's codes step by 16).
ADS1X15_SIGNATURE = RegisterSignature("ADS1115 or ADS1015",
                                      {REG_LO_THRESH: (LO_THRESH_RESET,), REG_HI_THRESH: (HI_THRESH_RESET,)})


class _ADS1x15(I2CDriver):
    """One input of an ADS1x15, single-shot. Unit: V. Subclasses set the resolution and rates."""

    bits = 16
    data_rates: dict[int, int] = ADS1115_DATA_RATES

    metrics = (Metric("voltage", "Voltage", unit="SI.ElectricPotential.VOLT"),)
    min_interval_s = 0.0
    signature = ADS1X15_SIGNATURE

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """``channel`` and ``differential`` exclude each other."""
        if config.get("differential") and config.get("channel") is not None:
            return [OptionProblem("differential", "option differential: give either channel "
                                  "(single-ended) or differential (a pair), not both")]
        return []

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """One conversion at the configured rate (+10 %) plus bus time; a failed attempt is
        retried one conversion later."""
        read = conversion_time_s(config["data_rate"]) + BUS_TIME_S
        return Timing(read, cls.min_interval_s, RetryPolicy(attempts=2, spacing_s=read))

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """The chip's (bus, address) slot, shared with the other sensors of this chip (same
        driver), and the AIN pins this configuration reads, each its own."""
        slot = (config["i2c_bus"], config["address"])
        option = "differential" if config.get("differential") else "channel"
        return Resources(i2c=(slot,), i2c_shared_by=cls.name,
                         inputs=tuple(ChipInput(slot[0], slot[1], pin, option) for pin in inputs_of(config)))

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        pga, _ = FULL_SCALES[self.config["full_scale"]]
        self.config_word = config_word(mux_of(self.config), pga, self.data_rates[self.config["data_rate"]])
        self._started = False
        self._coarse_in_a_row = 0
        self._last_code: int | None = None

    def exclusive_key(self) -> Hashable | None:
        """Every sensor of this chip shares its config register: one conversion at a time."""
        return ("ads1x15", self.config["i2c_bus"], self.address)

    @property
    def input_label(self) -> str:
        pair = self.config.get("differential")
        return f"AIN{pair.replace('-', '−AIN')}" if pair else f"AIN{effective_channel(self.config)}"

    def _transfer_failed(self) -> None:
        self._started = False

    def start(self) -> float:
        """Write the config register (OS = 1: one conversion of this input); returns its time."""
        self._started = False
        self.write_bytes(bytes([REG_CONFIG]) + pack_word(self.config_word), "conversion start")
        self._started = True
        return self.timing.read_time_s

    def collect(self) -> Sample:
        """{voltage: V} of the conversion `start` began."""
        if not self._started:
            raise NotReadyError(f"{self.label}: collect() before start()")
        status = unpack_word(self.read_registers(REG_CONFIG, WORD_LEN, "config read"))
        if not status & CONFIG_OS:
            raise NotReadyError(f"{self.label}: conversion of {self.input_label} still running "
                                "(config OS bit 0)")
        if status & ~CONFIG_OS != self.config_word & ~CONFIG_OS:
            self._started = False
            raise NotReadyError(f"{self.label}: config reads 0x{status:04x}, not the "
                                f"0x{self.config_word:04x} written (the chip was reset: power glitch?); "
                                "the next reading sets it again")
        data = self.read_registers(REG_CONVERSION, WORD_LEN, "conversion read")
        self._started = False
        code = conversion_code(data, self.bits)
        limit = 1 << (self.bits - 1)
        if code in (limit - 1, -limit):
            raise ImplausibleValueError(
                f"{self.label}: {self.input_label} is at the end of the "
                f"±{self.config['full_scale']:g} V range (code {code}): the input is clipped; "
                "a larger full_scale reads it")
        self._check_resolution(code)
        return {"voltage": code_to_volts(code, self.config["full_scale"], self.bits)}


    def _check_resolution(self, code: int) -> None:
        """A 16-bit part whose changing codes keep a zero low nibble is a 12-bit ADS1015 sold as an
        ADS1115: said once in the log (its voltages stay right, 16× coarser). A code equal to the
        last one proves nothing (a steady input on a quiet genuine part) and is not counted."""
        last, self._last_code = self._last_code, code
        if self.bits != 16 or self._coarse_in_a_row > COARSE_READINGS_TO_WARN or code == last:
            return
        self._coarse_in_a_row = self._coarse_in_a_row + 1 if code & LOW_NIBBLE == 0 else 0
        if self._coarse_in_a_row == COARSE_READINGS_TO_WARN:
            self._coarse_in_a_row += 1   # never again for this driver
            log.warning("%s: %d readings in a row step by 16 codes: the chip is probably an ADS1015 sold "
                        "as an ADS1115 (marking BRPI, not BOGI); use driver ads1015", self.label,
                        COARSE_READINGS_TO_WARN)


class ADS1115(_ADS1x15):
    """TI ADS1115: 16 bits, 8–860 samples/s."""

    name = "ads1115"
    chip_name = "ADS1115"
    description = "TI ADS1115 16-bit ADC over I2C: one input (single-ended or a pair) as volts"
    bits = 16
    data_rates = ADS1115_DATA_RATES
    options = ads_options(ADS1115_DATA_RATES, 128)
    read_time_s = conversion_time_s(128) + BUS_TIME_S
    retry = RetryPolicy(attempts=2, spacing_s=read_time_s)
    simulator = "pibridge.drivers.fakes.ads1x15:simulate"


class ADS1015(_ADS1x15):
    """TI ADS1015: 12 bits, 128–3300 samples/s."""

    name = "ads1015"
    chip_name = "ADS1015"
    description = "TI ADS1015 12-bit ADC over I2C: one input (single-ended or a pair) as volts"
    bits = 12
    data_rates = ADS1015_DATA_RATES
    options = ads_options(ADS1015_DATA_RATES, 1600)
    read_time_s = conversion_time_s(1600) + BUS_TIME_S
    retry = RetryPolicy(attempts=2, spacing_s=read_time_s)
    simulator = "pibridge.drivers.fakes.ads1x15:simulate"
    #: beside the ADS1115's default 0x48 (benchmarks build every driver in one simulated world)
    example_options: ClassVar[Mapping[str, Any]] = {"address": 0x49}
