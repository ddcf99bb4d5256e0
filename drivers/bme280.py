"""Bosch BME280 (temperature, pressure, humidity) and BMP280 (no humidity) over I2C, forced mode.

One attempt in two phases (the caller owns the wait): ``start()`` writes ctrl_hum, then
ctrl_meas (forced mode; ctrl_hum only latches on that write) and returns the datasheet *maximum*
measurement time; ``collect()`` checks status bit 3 is clear (else `NotReadyError`: collected too
early) and does ONE burst read of the data registers so P/T/H come from the same conversion.

The compensation maths are the datasheet's integer formulas (rev 1.1 §4.2.3 / §8.2), written as
pure functions of the raw ADC counts and a `Calibration`; ``>>`` is Python's floor shift, which is
the datasheet convention (Bosch's BME280_driver C code truncates instead, which differs for negative values).

Error mapping:

* errno 121 (NACK) while reading the chip id -> `DeviceNotFoundError` (nothing at the address);
  any later OSError -> `BusError` (retryable; the next start re-writes the configuration).
* chip id other than 0x60 (BME280) or 0x58/0x56/0x57 (BMP280) -> `DeviceNotFoundError` naming it.
* calibration all 0xFF / all 0x00, or a zero dig_T1/dig_P1 -> `BadDataError` (not cached).
* measuring bit still set at ``collect()`` -> `NotReadyError`.
* a measured channel still at its reset value 0x80000 / 0x8000 -> `NotReadyError`.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Metric, Option, OptionProblem, RetryPolicy, Sample, Timing
from .errors import (
    BadDataError,
    ConfigurationError,
    DeviceNotFoundError,
    NotReadyError,
)
from .i2c import ChipId, I2CDriver, i2c_address_option, i2c_bus_option
from .intmath import c_div

# --- bus and registers (datasheet §5.3) --------------------------------------------------------
ADDRESSES = (0x76, 0x77)
DEFAULT_ADDRESS = 0x76

REG_CALIB_TP = 0x88      #: calib00..calib25: T/P trim words, 0xA0 reserved, dig_H1 at 0xA1
CALIB_TP_LEN = 26
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
RESET_COMMAND = 0xB6
REG_CALIB_H = 0xE1       #: calib26..calib32: humidity trim (BME280 only)
CALIB_H_LEN = 7
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7          #: press_msb .. hum_lsb
DATA_LEN_BME280 = 8      #: 0xF7..0xFE
DATA_LEN_BMP280 = 6      #: 0xF7..0xFC

BUS_TIME_S = 0.0017      #: the few short transfers of one read at 100 kHz, roughly
STATUS_MEASURING = 0x08  #: status bit 3
STATUS_IM_UPDATE = 0x01  #: status bit 0

MODE_SLEEP = 0b00
MODE_FORCED = 0b01
MODE_NORMAL = 0b11
CTRL_MEAS_OSRS_T_SHIFT = 5
CTRL_MEAS_OSRS_P_SHIFT = 2
CONFIG_FILTER_SHIFT = 2

CHIP_ID_BME280 = 0x60
CHIP_IDS_BMP280 = (0x58, 0x56, 0x57)  #: production part, then two engineering samples
CHIP_ID_BME680 = 0x61  #: same register and addresses, another chip (no driver here)
CHIP_ID_BMP180 = 0x55

ADC_SKIPPED_20BIT = 0x80000  #: P/T reset value: channel skipped or never converted
ADC_SKIPPED_16BIT = 0x8000   #: H reset value

#: oversampling factor -> 3-bit osrs code (0 = channel skipped)
OVERSAMPLING_CODES = {0: 0b000, 1: 0b001, 2: 0b010, 4: 0b011, 8: 0b100, 16: 0b101}
#: IIR filter coefficient -> 3-bit filter code (0 = off)
FILTER_CODES = {0: 0b000, 2: 0b001, 4: 0b010, 8: 0b011, 16: 0b100}

# --- timing (datasheet §9.1, in ms) -------------------------------------------------------------
T_MEAS_BASE_MAX_MS = 1.25
T_MEAS_PER_OS_MAX_MS = 2.3
T_MEAS_PH_OFFSET_MAX_MS = 0.575
T_MEAS_BASE_TYP_MS = 1.0
T_MEAS_PER_OS_TYP_MS = 2.0
T_MEAS_PH_OFFSET_TYP_MS = 0.5

# --- compensation constants (datasheet integer formulas) ----------------------------------------
T_FINE_P_OFFSET = 128000
T_FINE_H_OFFSET = 76800
P_DIVIDEND = 1048576          #: 2^20: p = 2^20 - adc_P
H_Q_MAX = 419430400           #: 100 %RH in the internal Q format, the datasheet's upper clamp
PRESSURE_Q = 256              #: Q24.8 -> Pa
HUMIDITY_Q = 1024             #: Q22.10 -> %RH
CENTI = 100                   #: 0.01 °C -> °C


@dataclass(frozen=True)
class Calibration:
    """The trim parameters of one part (datasheet Table 16). H* are 0 on a BMP280."""

    T1: int
    T2: int
    T3: int
    P1: int
    P2: int
    P3: int
    P4: int
    P5: int
    P6: int
    P7: int
    P8: int
    P9: int
    H1: int = 0
    H2: int = 0
    H3: int = 0
    H4: int = 0
    H5: int = 0
    H6: int = 0


def parse_calibration(tp: bytes, h: bytes | None = None) -> Calibration:
    """Decode calibration registers: ``tp`` = 0x88..0xA1 (26 bytes; 24 suffice on a BMP280),
    ``h`` = 0xE1..0xE7 (7 bytes) or None for a BMP280.

    ::

        0x88 T1 u16 | 0x8A T2 s16 | 0x8C T3 s16 | 0x8E P1 u16 | 0x90..0x9E P2..P9 s16 (all LE)
        0xA1 H1 u8
        0xE1 H2 s16 LE | 0xE3 H3 u8 | 0xE4 [H4 11:4] | 0xE5 [H5 3:0 | H4 3:0] | 0xE6 [H5 11:4]
        0xE7 H6 s8
    """
    words = struct.unpack("<HhhHhhhhhhhh", bytes(tp[:24]))
    base = Calibration(*words)
    if h is None:
        return base
    h = bytes(h)
    h1 = tp[25]
    h2, h3 = struct.unpack("<hB", h[0:3])
    e4, e5, e6 = struct.unpack("<bBb", h[3:6])   # E4 and E6 sign-extend from the whole byte
    h4 = (e4 << 4) | (e5 & 0x0F)
    h5 = (e6 << 4) | (e5 >> 4)
    (h6,) = struct.unpack("<b", h[6:7])
    return dataclasses.replace(base, H1=h1, H2=h2, H3=h3, H4=h4, H5=h5, H6=h6)


def compensate_temperature(adc_t: int, c: Calibration) -> tuple[int, int]:
    """Raw 20-bit temperature -> (t_fine, temperature in 0.01 °C). Datasheet int32 formula."""
    v1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    d = (adc_t >> 4) - c.T1
    v2 = (((d * d) >> 12) * c.T3) >> 14
    t_fine = v1 + v2
    return t_fine, (t_fine * 5 + 128) >> 8


def compensate_pressure(adc_p: int, t_fine: int, c: Calibration) -> int:
    """Raw 20-bit pressure -> Pa in Q24.8 (divide by 256). Datasheet int64 formula; returns 0
    when the formula would divide by zero (as the datasheet does)."""
    v1 = t_fine - T_FINE_P_OFFSET
    v2 = v1 * v1 * c.P6
    v2 = v2 + ((v1 * c.P5) << 17)
    v2 = v2 + (c.P4 << 35)
    v1 = ((v1 * v1 * c.P3) >> 8) + ((v1 * c.P2) << 12)
    v1 = (((1 << 47) + v1) * c.P1) >> 33
    if v1 == 0:
        return 0
    p = P_DIVIDEND - adc_p
    p = c_div(((p << 31) - v2) * 3125, v1)
    v1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    v2 = (c.P8 * p) >> 19
    return ((p + v1 + v2) >> 8) + (c.P7 << 4)


def compensate_humidity(adc_h: int, t_fine: int, c: Calibration) -> int:
    """Raw 16-bit humidity -> %RH in Q22.10 (divide by 1024), clamped to 0..100 % exactly as
    the datasheet int32 formula does."""
    x = t_fine - T_FINE_H_OFFSET
    x = ((((adc_h << 14) - (c.H4 << 20) - (c.H5 * x)) + 16384) >> 15) * (
        ((((((x * c.H6) >> 10) * (((x * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192) >> 14)
    x = x - (((((x >> 15) * (x >> 15)) >> 7) * c.H1) >> 4)
    x = min(max(x, 0), H_Q_MAX)
    return x >> 12


def parse_data(raw: bytes) -> tuple[int, int, int | None]:
    """Burst 0xF7.. -> (adc_P, adc_T, adc_H or None when only 6 bytes were read).

    ::

        0xF7 press_msb  0xF8 press_lsb  0xF9 press_xlsb[7:4]   adc_P = msb<<12 | lsb<<4 | xlsb>>4
        0xFA temp_msb   0xFB temp_lsb   0xFC temp_xlsb[7:4]    adc_T = (same packing)
        0xFD hum_msb    0xFE hum_lsb                           adc_H = msb<<8 | lsb
    """
    adc_p = (raw[0] << 12) | (raw[1] << 4) | (raw[2] >> 4)
    adc_t = (raw[3] << 12) | (raw[4] << 4) | (raw[5] >> 4)
    adc_h = (raw[6] << 8) | raw[7] if len(raw) >= DATA_LEN_BME280 else None
    return adc_p, adc_t, adc_h


def measurement_time_s(os_t: int, os_p: int, os_h: int, *, maximum: bool = True) -> float:
    """Datasheet §9.1 measurement time in seconds for oversampling factors (0 = skipped)."""
    if maximum:
        base, per_os, offset = T_MEAS_BASE_MAX_MS, T_MEAS_PER_OS_MAX_MS, T_MEAS_PH_OFFSET_MAX_MS
    else:
        base, per_os, offset = T_MEAS_BASE_TYP_MS, T_MEAS_PER_OS_TYP_MS, T_MEAS_PH_OFFSET_TYP_MS
    ms = base + per_os * os_t
    ms += per_os * os_p + offset if os_p else 0.0
    ms += per_os * os_h + offset if os_h else 0.0
    return ms / 1000.0


def converted_oversampling(config: Mapping[str, Any], wanted: Collection[str],
                           has_humidity: bool = True) -> tuple[int, int, int]:
    """(osrs_t, osrs_p, osrs_h) one forced conversion uses: the configured factors, 0 for a channel
    not wanted (and for humidity on a chip without it). Temperature is always converted (P and H
    need it)."""
    os_p = config["osrs_p"] if "pressure" in wanted else 0
    os_h = config["osrs_h"] if "humidity" in wanted and has_humidity else 0
    return config["osrs_t"], os_p, os_h


def chip_name(chip_id: int) -> str:
    """"BME280" / "BMP280" for a chip id; DeviceNotFoundError for anything else."""
    if chip_id == CHIP_ID_BME280:
        return "BME280"
    if chip_id in CHIP_IDS_BMP280:
        return "BMP280"
    raise DeviceNotFoundError(
        f"chip id 0x{chip_id:02x} is neither a BME280 (0x60) nor a BMP280 (0x58/0x56/0x57)")


def _is_blank(block: bytes) -> bool:
    return all(b == 0xFF for b in block) or all(b == 0x00 for b in block)


_OVERSAMPLING = tuple(OVERSAMPLING_CODES)
_ALL_METRICS = ("temperature", "humidity", "pressure")


class BME280(I2CDriver):
    """BME280 / BMP280 in forced mode. Units: °C, %RH, Pa.

    ``BME280(bus=None, **options)``: ``bus`` is an smbus2.SMBus-like object (never closed by the
    driver); without one the driver opens ``smbus2.SMBus(i2c_bus)`` on the first transfer and
    closes it in ``close()``. The chip is detected on the first ``start()`` (or ``detect()``);
    until then ``active_metrics()`` is `metrics_for` the configuration (a BME280's).
    """

    name = "bme280"
    description = "Bosch BME280/BMP280 temperature, pressure (and humidity) over I2C, forced mode"
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
        Metric("pressure", "Air pressure", unit="SI.Pressure.PASCAL"),
    )
    options = (
        i2c_address_option(ADDRESSES, "I2C address (0x76 SDO low, 0x77 SDO high)", DEFAULT_ADDRESS),
        i2c_bus_option(),
        Option("osrs_t", int, 1, "temperature oversampling (always measured: P and H need it)",
               choices=_OVERSAMPLING[1:]),
        Option("osrs_p", int, 1, "pressure oversampling; 0 skips pressure", choices=_OVERSAMPLING),
        Option("osrs_h", int, 1, "humidity oversampling; 0 skips humidity", choices=_OVERSAMPLING),
        Option("iir_filter", int, 0, "IIR filter coefficient for T and P (0 = off)",
               choices=tuple(FILTER_CODES)),
        Option("metrics", str, "", "comma-separated subset of temperature,humidity,pressure "
               "(empty = all the chip has)"),
    )
    #: all channels x1 (9.3 ms max conversion) plus four short bus transfers
    read_time_s = measurement_time_s(1, 1, 1) + BUS_TIME_S
    min_interval_s = 0.1
    retry = RetryPolicy(attempts=2, spacing_s=0.1)
    simulator = "pibridge.drivers.fakes.bme280:simulate"
    chip_id = ChipId(REG_CHIP_ID,
                     {CHIP_ID_BME280: "BME280", CHIP_IDS_BMP280[0]: "BMP280",
                      CHIP_IDS_BMP280[1]: "BMP280 (sample)", CHIP_IDS_BMP280[2]: "BMP280 (sample)"},
                     others={CHIP_ID_BME680: "BME680", CHIP_ID_BMP180: "BMP180"})

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """The conversion time follows the oversampling of the channels measured (datasheet
        maximum, as for a BME280; a BMP280 found later only converts faster)."""
        wanted = {m.key for m in cls.metrics_for(config)}
        return Timing(measurement_time_s(*converted_oversampling(config, wanted)) + BUS_TIME_S,
                      cls.min_interval_s, cls.retry)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """The ``metrics`` list names known metrics, none of which oversampling 0 skips."""
        try:
            wanted = cls._wanted_metrics(config)
        except ValueError as exc:
            return [OptionProblem("metrics", f"option metrics: {exc}")]
        return [OptionProblem(osrs, f"option {osrs}: {osrs}=0 skips {key}, which option metrics asks for")
                for key, osrs in (("pressure", "osrs_p"), ("humidity", "osrs_h"))
                if key in wanted and config[osrs] == 0]

    @classmethod
    def metrics_for(cls, config: Mapping[str, Any]) -> tuple[Metric, ...]:
        """The channels a configuration measures: the ``metrics`` list, or every channel whose
        oversampling is not 0 (temperature always). A BMP280 found at run time drops humidity
        too (`active_metrics`)."""
        wanted = cls._wanted_metrics(config)
        return tuple(m for m in cls.metrics if m.key in wanted)

    @staticmethod
    def _wanted_metrics(config: Mapping[str, Any]) -> set[str]:
        """The metric keys a configuration asks for: the ``metrics`` list, or every channel whose
        oversampling is not 0. ValueError names unknown keys."""
        explicit = BME280._parse_metrics(config["metrics"])
        if explicit is not None:
            return explicit
        return {key for key in _ALL_METRICS
                if not ((key == "pressure" and config["osrs_p"] == 0)
                        or (key == "humidity" and config["osrs_h"] == 0))}

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(bus, **options)
        self._wanted = frozenset(m.key for m in super().active_metrics())
        self.chip: str | None = None
        self._calibration: Calibration | None = None
        self._configured = False

    @staticmethod
    def _parse_metrics(text: str) -> set[str] | None:
        keys = {k.strip() for k in text.split(",") if k.strip()}
        if not keys:
            return None
        unknown = sorted(keys - set(_ALL_METRICS))
        if unknown:
            raise ValueError(f"unknown metric {', '.join(unknown)} (known: {', '.join(_ALL_METRICS)})")
        return keys

    # -- what this instance reports ----------------------------------------------------------
    def _measures_humidity(self) -> bool:
        return "humidity" in self._wanted and self.chip != "BMP280"

    def active_metrics(self) -> tuple[Metric, ...]:
        """`metrics_for` the configuration, without humidity once the chip is known to be a
        BMP280."""
        configured = super().active_metrics()
        if self.chip == "BMP280":
            return tuple(m for m in configured if m.key != "humidity")
        return configured

    @property
    def conversion_time_s(self) -> float:
        """Datasheet maximum measurement time for the configured oversampling, in seconds."""
        return measurement_time_s(*self._oversampling())

    def _oversampling(self) -> tuple[int, int, int]:
        """(osrs_t, osrs_p, osrs_h) of this instance's conversions (no humidity on a BMP280)."""
        return converted_oversampling(self.config, self._wanted, has_humidity=self.chip != "BMP280")

    # -- bus handling ------------------------------------------------------------------------
    def _transfer_failed(self) -> None:
        self._configured = False  # the next start writes the configuration again

    # -- detection and setup -----------------------------------------------------------------
    def detect(self) -> str:
        """Read the chip id and the calibration (once); returns "BME280" or "BMP280"."""
        if self.chip is None:
            chip_id = self.read_register(REG_CHIP_ID, "chip id read")
            try:
                chip = chip_name(chip_id)
            except DeviceNotFoundError as exc:
                raise DeviceNotFoundError(f"{self.label}: {exc}") from None
            explicit = self._parse_metrics(self.config["metrics"]) is not None
            if chip == "BMP280" and explicit and "humidity" in self._wanted:
                raise ConfigurationError(
                    f"{self.label}: the chip is a BMP280 (id 0x{chip_id:02x}), "
                    "which has no humidity sensor; drop humidity from metrics")
            self.chip = chip
        if self._calibration is None:
            self._calibration = self._read_calibration()
        return self.chip

    def _read_calibration(self) -> Calibration:
        tp = self.read_registers(REG_CALIB_TP, CALIB_TP_LEN, "calibration read")
        h = (self.read_registers(REG_CALIB_H, CALIB_H_LEN, "calibration read")
             if self.chip == "BME280" else None)
        if _is_blank(tp[:24]) or (h is not None and _is_blank(h)):
            raise BadDataError(f"{self.label}: calibration registers are blank "
                               f"({tp[:4].hex(' ')} ...); NVM not loaded or bus floating")
        calib = parse_calibration(tp, h)
        if calib.T1 == 0 or calib.P1 == 0:
            raise BadDataError(f"{self.label}: calibration has dig_T1/dig_P1 = 0")
        return calib

    def _configure(self) -> None:
        """Sleep mode first (config writes may be ignored in normal mode), then the IIR filter."""
        self.write_register(REG_CTRL_MEAS, MODE_SLEEP, "configuration write")
        self.write_register(REG_CONFIG, FILTER_CODES[self.config["iir_filter"]] << CONFIG_FILTER_SHIFT,
                            "configuration write")
        self._configured = True

    def _ctrl_values(self) -> tuple[int, int]:
        """(ctrl_hum, ctrl_meas) for one forced conversion.

        ::

            ctrl_hum  0xF2: [7:3 -] [2:0 osrs_h]
            ctrl_meas 0xF4: [7:5 osrs_t] [4:2 osrs_p] [1:0 mode = 01 forced]
        """
        os_t, os_p, os_h = self._oversampling()
        ctrl_hum = OVERSAMPLING_CODES[os_h]
        ctrl_meas = ((OVERSAMPLING_CODES[os_t] << CTRL_MEAS_OSRS_T_SHIFT)
                     | (OVERSAMPLING_CODES[os_p] << CTRL_MEAS_OSRS_P_SHIFT) | MODE_FORCED)
        return ctrl_hum, ctrl_meas

    # -- one reading, in two phases -------------------------------------------------------------
    def start(self) -> float:
        """Detect (once), configure (after power-on or a bus error) and start one forced
        conversion; returns its datasheet maximum duration in seconds."""
        self.detect()
        if not self._configured:
            self._configure()
        ctrl_hum, ctrl_meas = self._ctrl_values()
        if self.chip == "BME280":
            self.write_register(REG_CTRL_HUM, ctrl_hum, "measurement start")  # latched by the next write
        self.write_register(REG_CTRL_MEAS, ctrl_meas, "measurement start")
        return self.conversion_time_s

    def collect(self) -> Sample:
        """The conversion `start` began: {temperature °C, humidity %RH, pressure Pa} (active
        ones). `NotReadyError` while the chip still measures (collected too early)."""
        calib = self._calibration
        if calib is None:
            raise NotReadyError(f"{self.label}: collect() before start()")
        if self.read_register(REG_STATUS, "status read") & STATUS_MEASURING:
            raise NotReadyError(f"{self.label}: still measuring (status bit 3 set); collected before "
                                f"the {self.conversion_time_s * 1000:.1f} ms conversion time")
        raw = self.read_registers(REG_DATA, DATA_LEN_BME280 if self.chip == "BME280" else DATA_LEN_BMP280,
                                  "data read")
        return self._convert(raw, calib)

    def _convert(self, raw: bytes, calib: Calibration) -> Sample:
        adc_p, adc_t, adc_h = parse_data(raw)
        if adc_t == ADC_SKIPPED_20BIT:
            self._configured = False
            raise NotReadyError(f"{self.label}: temperature at its reset value "
                                "0x80000 (no conversion happened)")
        t_fine, centi = compensate_temperature(adc_t, calib)
        sample: Sample = {}
        if "temperature" in self._wanted:
            sample["temperature"] = centi / CENTI
        if "pressure" in self._wanted:
            if adc_p == ADC_SKIPPED_20BIT:
                self._configured = False
                raise NotReadyError(f"{self.label}: pressure at its reset value "
                                    "0x80000 (channel skipped)")
            p = compensate_pressure(adc_p, t_fine, calib)
            if p == 0:
                raise BadDataError(f"{self.label}: pressure compensation "
                                   "undefined for this calibration")
            sample["pressure"] = p / PRESSURE_Q
        if self._measures_humidity():
            if adc_h is None or adc_h == ADC_SKIPPED_16BIT:
                self._configured = False
                raise NotReadyError(f"{self.label}: humidity at its reset value "
                                    "0x8000 (ctrl_hum not latched or channel skipped)")
            sample["humidity"] = compensate_humidity(adc_h, t_fine, calib) / HUMIDITY_Q
        return sample
