"""Maxim MAX31865 RTD-to-digital converter (PT100 / PT1000) on SPI0, CE0 or CE1.

Registers (datasheet Table 1; read address, write address = read | 0x80, power-on value)::

    0x00 / 0x80  configuration            0x00   D7 V_BIAS  D6 auto  D5 1-shot  D4 3-wire
                                                 D3:D2 fault cycle  D1 fault clear  D0 50 Hz
    0x01, 0x02   RTD MSB, LSB (read only) 0x00   code in bits 15:1, bit 0 = fault
    0x03 / 0x83  high fault threshold     0xFF 0xFF
    0x05 / 0x85  low fault threshold      0x00 0x00
    0x07         fault status (read only) 0x00

SPI frames (mode 1: the driver sets ``clock_mode = 1``; the address auto-increments)::

    write   Tx  1AAAAAAA  D[A]  D[A+1] ...
    read    Tx  0AAAAAAA  0x00  0x00   ...
            Rx  xxxxxxxx  R[A]  R[A+1] ...

**One 1-shot per sample, in three steps** (hardware.md §17.3; Adafruit's read, without its
sleeps): ``start()`` clears the fault status and switches V_BIAS on (conversions normally off) and
returns the bias settling time, 10.5 input time constants + 1 ms (`BIAS_SETTLE_S`, Adafruit's
10 ms); the first ``collect()`` writes 1-shot (sampled at the rising CS of that write) and returns
`CollectAgain` for the filter's maximum conversion time (66 ms at 50 Hz, 55 ms at 60 Hz); the
last ``collect()`` reads the result and switches V_BIAS off, so the probe is biased only for
those two waits, never between samples (self-heating). `read_time_s` is their sum per filter.

**Resistance** ``R = code · R_REF / 2^15`` (datasheet; ESPHome divides by 32767, +0.003 %).
**Temperature** by Callendar–Van Dusen (IEC 60751), inverted exactly: the quadratic's closed form
for R ≥ R0 (T ≥ 0), and below 0 °C Newton's method on the quartic (with the C term), started
from the quadratic's root. Adafruit and ESPHome use Analog Devices' AN-709 fifth-order
polynomial below 0 °C instead; it deviates from exact CVD by up to 0.0011 °C over −200…0 °C
(hardware.md §17.5: −0.0166 vs −0.0156 °C for code 7620). We follow the standard.

**Faults.** Bit 0 of the RTD LSB flags a fault: the driver reads the fault status register, clears
it (D1, written with D5, D3:D2 = 0) and raises a typed `RtdFaultError` that names the wiring
fault; the next sample tries again. The driver programs the thresholds to 10 % and 400 % of R0
(a short reads near 0, an open RTD near full scale; CVD at 850 °C is 390 % of R0).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

from .base import CollectAgain, Driver, Metric, Option, OptionProblem, Resources, RetryPolicy, Sample, Timing
from .errors import BusError, DeviceNotFoundError, NotReadyError, SensorError
from .gpio import hardware_pin_factory
from .spi import open_spi

# -- registers and bits -------------------------------------------------------------------------
REG_CONFIG = 0x00
REG_RTD_MSB = 0x01
REG_HIGH_THRESHOLD_MSB = 0x03
REG_FAULT_STATUS = 0x07
WRITE_BIT = 0x80
REGISTER_COUNT = 8

CONFIG_BIAS = 0x80          #: D7 V_BIAS on
CONFIG_AUTO = 0x40          #: D6 automatic (continuous) conversion
CONFIG_ONE_SHOT = 0x20      #: D5 1-shot (self-clearing)
CONFIG_THREE_WIRE = 0x10    #: D4 3-wire RTD
CONFIG_FAULT_CYCLE = 0x0C   #: D3:D2 fault-detection cycle
CONFIG_FAULT_CLEAR = 0x02   #: D1 fault status clear (self-clearing)
CONFIG_FILTER_50HZ = 0x01   #: D0 1 = 50 Hz notch, 0 = 60 Hz

RTD_FAULT_BIT = 0x0001      #: bit 0 of the RTD word
ADC_BITS = 15
ADC_FULL_SCALE = 1 << ADC_BITS   #: 32768: the datasheet's divisor (ESPHome's 32767 reads 0.003 % high)
CODE_MAX = ADC_FULL_SCALE - 1

FAULT_HIGH_THRESHOLD = 0x80  #: D7 RTD above the high threshold
FAULT_LOW_THRESHOLD = 0x40   #: D6 RTD below the low threshold
FAULT_REFIN_HIGH = 0x20      #: D5 REFIN− > 0.85·V_BIAS
FAULT_REFIN_LOW = 0x10       #: D4 REFIN− < 0.85·V_BIAS (FORCE− open)
FAULT_RTDIN_LOW = 0x08       #: D3 RTDIN− < 0.85·V_BIAS (FORCE− open)
FAULT_VOLTAGE = 0x04         #: D2 over- or under-voltage on an input

#: Fault thresholds the driver programs, as multiples of R0 (a short / an open element).
LOW_THRESHOLD_R0 = 0.10
HIGH_THRESHOLD_R0 = 4.00

# -- timing (datasheet §17.3, seconds) ----------------------------------------------------------
#: V_BIAS on → a 1-shot may sample: 10.5 time constants of the board's input filter + 1 ms;
#: Adafruit's board is settled well within its 10 ms, which we take.
BIAS_SETTLE_S = 0.010
ONE_SHOT_MAX_S = {50: 0.066, 60: 0.055}      #: one full filtered conversion, maximum
BUS_TIME_S = 0.001
FILTERS = (50, 60)

SPI_PORT = 0
SPI_DEVICES = (0, 1)  # CE0 / CE1
SPI_MODE = 1          #: CPOL 0, CPHA 1 (the chip does modes 1 and 3 only)

# -- Callendar–Van Dusen (IEC 60751) -------------------------------------------------------------
CVD_A = 3.9083e-3
CVD_B = -5.775e-7
CVD_C = -4.183e-12   #: used only below 0 °C
R0_OHMS = {"pt100": 100.0, "pt1000": 1000.0}
DEFAULT_REFERENCE_OHMS = {"pt100": 430.0, "pt1000": 4300.0}
NEWTON_TOLERANCE_C = 1e-9
NEWTON_MAX_STEPS = 50


def resistance(code: int, reference_ohms: float) -> float:
    """Ω of a 15-bit code: ``code · R_REF / 2^15`` (datasheet)."""
    return code * reference_ohms / ADC_FULL_SCALE


def cvd_resistance(celsius: float, r0: float) -> float:
    """R(T) by Callendar–Van Dusen; the C term only below 0 °C."""
    t = celsius
    c_term = CVD_C * (t - 100.0) * t ** 3 if t < 0 else 0.0
    return r0 * (1.0 + CVD_A * t + CVD_B * t * t + c_term)


def cvd_temperature(ohms: float, r0: float) -> float:
    """°C of a resistance, the exact inverse of `cvd_resistance`.

    R ≥ R0: the quadratic's root ``(−A + √(A² − 4B(1 − R/R0))) / 2B``. Below R0 there is no closed
    form: Newton's method on ``R0(1 + AT + BT² + C(T−100)T³) − R`` from the quadratic's root,
    to 1e-9 °C (2–4 steps). Not AN-709's polynomial (Adafruit, ESPHome; ≤ 0.0011 °C off)."""
    ratio = ohms / r0
    discriminant = CVD_A * CVD_A - 4.0 * CVD_B * (1.0 - ratio)
    if discriminant < 0:
        raise ValueError(f"{ohms:g} Ω is beyond the Callendar–Van Dusen curve of R0 = {r0:g} Ω")
    t = (-CVD_A + math.sqrt(discriminant)) / (2.0 * CVD_B)
    if ohms >= r0:
        return t
    for _ in range(NEWTON_MAX_STEPS):
        f = r0 * (1.0 + CVD_A * t + CVD_B * t * t + CVD_C * (t - 100.0) * t ** 3) - ohms
        slope = r0 * (CVD_A + 2.0 * CVD_B * t + CVD_C * (4.0 * t ** 3 - 300.0 * t * t))
        step = f / slope
        t -= step
        if abs(step) < NEWTON_TOLERANCE_C:
            return t
    raise ValueError(f"Callendar–Van Dusen did not converge for {ohms:g} Ω")  # pragma: no cover


def threshold_code(ohms: float, reference_ohms: float) -> int:
    """The 15-bit code of a resistance, clamped to the ADC's range (for the threshold registers)."""
    return max(0, min(CODE_MAX, round(ohms / reference_ohms * ADC_FULL_SCALE)))


# -- faults ----------------------------------------------------------------------------------------
class RtdFaultError(SensorError):
    """The MAX31865 flagged a fault (bit 0 of the RTD LSB); the status register's bits are in
    ``status`` and named in the message. Cleared on the chip; the next read tries again."""

    retryable = True

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RtdOpenError(RtdFaultError):
    """Open RTD element or an open wire (above the high threshold, REFIN−/RTDIN− faults)."""


class RtdShortError(RtdFaultError):
    """The RTD element or its wires shorted (below the low threshold)."""


class RtdVoltageError(RtdFaultError):
    """An input over V_DD or under GND: a wire shorted to a supply or to ground."""


#: Each status bit: what the chip saw, and the wiring fault it points to.
FAULT_TEXT = {
    FAULT_HIGH_THRESHOLD: "RTD above the high threshold: RTD element open or a wire broken",
    FAULT_LOW_THRESHOLD: "RTD below the low threshold: RTD element or its wires shorted",
    FAULT_REFIN_HIGH: "REFIN− > 0.85·V_BIAS: RTD open, or RTDIN+ shorted high",
    FAULT_REFIN_LOW: "REFIN− < 0.85·V_BIAS: FORCE− open",
    FAULT_RTDIN_LOW: "RTDIN− < 0.85·V_BIAS: FORCE− or RTDIN− open",
    FAULT_VOLTAGE: "over- or under-voltage: an input shorted to a supply or to ground",
}


def fault_error(status: int, label: str) -> RtdFaultError:
    """The typed error for a fault status byte (every set bit named, most specific class first:
    voltage, then open, then short)."""
    named = [text for bit, text in FAULT_TEXT.items() if status & bit]
    detail = "; ".join(named) if named else "fault bit set with an empty status register"
    message = f"{label}: fault status 0x{status:02x}: {detail}"
    if status & FAULT_VOLTAGE:
        return RtdVoltageError(message, status)
    if status & (FAULT_HIGH_THRESHOLD | FAULT_REFIN_HIGH | FAULT_REFIN_LOW | FAULT_RTDIN_LOW):
        return RtdOpenError(message, status)
    if status & FAULT_LOW_THRESHOLD:
        return RtdShortError(message, status)
    return RtdFaultError(message, status)


class MAX31865(Driver):
    """One RTD through a MAX31865: temperature (°C) and the measured resistance (Ω)."""

    name = "max31865"
    description = "Maxim MAX31865 PT100/PT1000 RTD converter (SPI), Callendar–Van Dusen"
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("resistance", "RTD resistance", unit="SI.ElectricResistance.OHM"),
    )
    options = (
        Option("rtd", str, "pt100", "the probe: pt100 or pt1000", choices=tuple(R0_OHMS)),
        Option("wires", int, 4, "RTD connection: 2, 3 or 4 wires (3 sets the chip's 3-wire mode)",
               choices=(2, 3, 4)),
        Option("reference_ohms", float, None,
               "the board's reference resistor in Ω (default 430 for pt100, 4300 for pt1000)",
               minimum=1.0, maximum=100_000.0),
        Option("mains_filter", int, 50, "notch filter for the local mains frequency: 50 or 60 Hz",
               choices=FILTERS),
        Option("spi_device", int, 0, "chip select: 0 = CE0 (GPIO8), 1 = CE1 (GPIO7)", choices=SPI_DEVICES),
    )
    read_time_s = BIAS_SETTLE_S + ONE_SHOT_MAX_S[50] + BUS_TIME_S
    min_interval_s = 0.0
    retry = RetryPolicy(attempts=1, spacing_s=0.05)
    simulator = "pibridge.drivers.fakes.max31865:simulate"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """Bias settling + one full 1-shot conversion of the chosen filter (+ the bus)."""
        hz = config["mains_filter"]
        return Timing(BIAS_SETTLE_S + ONE_SHOT_MAX_S[hz] + BUS_TIME_S,
                      cls.min_interval_s, cls.retry)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """R_REF must exceed R0: codes are ``R/R_REF · 2^15``, so a smaller R_REF cannot even
        measure 0 °C. hardware.md §17.4 asks more: R_REF above the largest resistance measured,
        which depends on the range (850 °C: 3.9·R0; the Adafruit board's 430 Ω is 4.3·R0), so
        it is left to the user; above full scale the chip reports the high-threshold fault."""
        r0 = R0_OHMS[config["rtd"]]
        reference = config["reference_ohms"]
        if reference is not None and reference <= r0:
            return [OptionProblem("reference_ohms", f"option reference_ohms: {reference:g} Ω must exceed "
                                  f"the {config['rtd']}'s R0 of {r0:g} Ω (the Adafruit board: "
                                  f"{DEFAULT_REFERENCE_OHMS[config['rtd']]:g} Ω)")]
        return []

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """SPI0 with the configured chip select (its pins: `pibridge.drivers.base.SPI_BUS_PINS`)."""
        return Resources(spi=((SPI_PORT, config["spi_device"]),))

    def __init__(self, spi: Any = None, *, pin_factory: Any = None, **options: Any) -> None:
        """``spi``: an SPI interface (gpiozero's ``transfer``/``clock_mode``; never closed here);
        otherwise one is opened on SPI0 / ``spi_device`` from ``pin_factory`` (or the Pi's GPIO)."""
        super().__init__(**options)
        config = self.config
        self.r0 = R0_OHMS[config["rtd"]]
        self.reference_ohms = (config["reference_ohms"] if config["reference_ohms"] is not None
                               else DEFAULT_REFERENCE_OHMS[config["rtd"]])
        self.label = f"max31865 on CE{config['spi_device']}"
        # configuration bits kept in every write: wiring and filter (D0 changes only while off)
        self._base = (CONFIG_THREE_WIRE if config["wires"] == 3 else 0) | (
            CONFIG_FILTER_50HZ if config["mains_filter"] == 50 else 0)
        self._owned: list[Any] = []
        if spi is None:
            factory = pin_factory
            if factory is None:
                factory = hardware_pin_factory()
                self._owned.append(factory)
            try:
                spi = open_spi(factory, SPI_PORT, config["spi_device"])
            except SensorError:
                self._close_owned()
                raise
            except Exception as exc:  # gpiozero / lgpio raise assorted errors for a missing SPI
                self._close_owned()
                raise DeviceNotFoundError(f"{self.label}: cannot open SPI {SPI_PORT}.{config['spi_device']}: "
                                          f"{exc} (is SPI enabled?)") from exc
            self._owned.insert(0, spi)
        self._spi = spi
        self._configured = False
        self._started = False      #: the bias may be on (set by start, cleared by the bias-off write)
        self._converting = False   #: the 1-shot was written

    # -- transfers -------------------------------------------------------------------------------
    def _transfer(self, frame: list[int], doing: str) -> list[int]:
        try:
            reply = self._spi.transfer(frame)
        except Exception as exc:  # gpiozero/spidev raise assorted OSError and GPIOZeroError types
            self._configured = False
            raise BusError(f"{self.label}: SPI transfer failed while {doing}: {exc}") from exc
        if len(reply) != len(frame):
            self._configured = False
            raise BusError(f"{self.label}: {len(reply)} bytes back for {len(frame)} sent while {doing}")
        return [int(b) & 0xFF for b in reply]

    def write_registers(self, address: int, data: list[int], doing: str) -> None:
        self._transfer([address | WRITE_BIT, *data], doing)

    def read_registers(self, address: int, count: int, doing: str) -> list[int]:
        return self._transfer([address, *([0] * count)], doing)[1:]

    def _configure(self) -> None:
        """SPI mode 1, then the fault thresholds (10 % and 400 % of R0), chip normally off."""
        if hasattr(self._spi, "clock_mode"):
            try:
                self._spi.clock_mode = SPI_MODE
            except Exception as exc:
                raise BusError(f"{self.label}: cannot set SPI mode {SPI_MODE}: {exc}") from exc
        high = threshold_code(self.r0 * HIGH_THRESHOLD_R0, self.reference_ohms) << 1
        low = threshold_code(self.r0 * LOW_THRESHOLD_R0, self.reference_ohms) << 1
        self.write_registers(REG_CONFIG, [self._base], "configuring")
        self.write_registers(REG_HIGH_THRESHOLD_MSB, [high >> 8, high & 0xFF, low >> 8, low & 0xFF],
                             "writing the fault thresholds")
        self._configured = True

    # -- one reading: bias on, 1-shot, read ----------------------------------------------------
    def start(self) -> float:
        """Fault status cleared, V_BIAS on (conversions normally off); returns the settling time
        before the 1-shot may be written."""
        if not self._configured:
            self._configure()
        self._started = True   # from here on the bias may be on: `_release` switches it off
        self._converting = False
        self.write_registers(REG_CONFIG, [self._base | CONFIG_BIAS | CONFIG_FAULT_CLEAR],
                             "switching the bias on")
        return BIAS_SETTLE_S

    def collect(self) -> Sample | CollectAgain:  # type: ignore[override]
        """After the settling: write 1-shot, `CollectAgain` for the conversion time. After the
        conversion: read the RTD word, switch the bias off (fault status cleared), convert."""
        if not self._started:
            raise NotReadyError(f"{self.label}: collect() before start()")
        if not self._converting:
            self.write_registers(REG_CONFIG, [self._base | CONFIG_BIAS | CONFIG_ONE_SHOT],
                                 "starting a 1-shot conversion")
            self._converting = True
            return CollectAgain(ONE_SHOT_MAX_S[self.config["mains_filter"]] + BUS_TIME_S)
        msb, lsb = self.read_registers(REG_RTD_MSB, 2, "reading the RTD")
        word = (msb << 8) | lsb
        status = 0
        if word & RTD_FAULT_BIT:
            status = self.read_registers(REG_FAULT_STATUS, 1, "reading the fault status")[0]
        self.write_registers(REG_CONFIG, [self._base | CONFIG_FAULT_CLEAR], "switching the bias off")
        self._started = self._converting = False   # only now is the bias off
        if word & RTD_FAULT_BIT:
            if word == 0xFFFF and status == 0xFF:
                raise BusError(f"{self.label}: reads all FF: no chip answers (check MISO, CS and power)")
            raise fault_error(status, self.label)
        if word == 0x0000:
            raise BusError(f"{self.label}: reads all 00: no chip answers, or no conversion ran "
                           "(check wiring and power)")
        code = word >> 1
        ohms = resistance(code, self.reference_ohms)
        try:
            celsius = cvd_temperature(ohms, self.r0)
        except ValueError as exc:
            raise BusError(f"{self.label}: {exc}") from exc
        return {"temperature": celsius, "resistance": ohms}

    def _close_owned(self) -> None:
        for thing in self._owned:
            thing.close()
        self._owned.clear()

    def _release(self) -> None:
        if self._started:  # a reading was begun and its bias-off write not done: leave the probe unbiased
            with contextlib.suppress(SensorError):
                self.write_registers(REG_CONFIG, [self._base], "switching the bias off")
        self._close_owned()
