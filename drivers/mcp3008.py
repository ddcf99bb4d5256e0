"""MCP3008 8-channel 10-bit ADC on SPI, through gpiozero's ``MCP3008`` device.

One driver instance reads one channel (single-ended, or differential against its pair channel
^ 1) and reports it as volts and as a 0–1 fraction of the reference voltage. The gpiozero device
is given the injected ``pin_factory`` (never the global ``Device.pin_factory``); gpiozero is
imported only when the device is built.

gpiozero 2.0.1 quirk: its software SPI bus (``SPISoftwareBus``, what MockFactory and a Pi without
spidev use) is built *without* the caller's pin factory, so gpiozero initialises its default
factory as a side effect. On a Pi that loads lgpio and is harmless; on a PC it fails with
``BadPinFactory`` unless ``GPIOZERO_PIN_FACTORY=mock`` is set (tests do; ``simulated()`` sets it
for the process if unset, since a simulated bridge builds no real devices).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pibridge.protocol import ValueType

from .base import Driver, Metric, Option, Resources, RetryPolicy, Sample
from .errors import BusError, ConfigurationError, DeviceNotFoundError

ADC_BITS = 10
ADC_MAX = (1 << ADC_BITS) - 1
GPIOZERO_MIN_CODE = -(1 << ADC_BITS)  # gpiozero scales every MCP3xxx on a signed (bits+1) range
GPIOZERO_RANGE = (1 << (ADC_BITS + 1)) - 1
CHANNELS = 8
VREF_DEFAULT_V = 3.3
VREF_MIN_V, VREF_MAX_V = 0.25, 5.5  # MCP3008 datasheet: VREF 0.25 V .. VDD (≤ 5.5 V)
SPI_PORT = 0
SPI_DEVICES = (0, 1)  # CE0 / CE1
GPIOZERO_FACTORY_ENV = "GPIOZERO_PIN_FACTORY"
READ_TIME_S = 0.001  # one 3-byte transfer; software SPI under mock pins is slower but still fast


def code_to_values(raw: int, vref: float) -> tuple[float, float]:
    """(volts, fraction 0..1) for a 10-bit code, as gpiozero's ``value``/``voltage`` compute it:
    fraction = (2·raw + 1) / 2047 (the middle of the code's step on gpiozero's signed 11-bit
    scale; 511 → 0.49976, 1023 → 1.0), volts = fraction × Vref."""
    if not 0 <= raw <= ADC_MAX:
        raise ValueError(f"MCP3008 code {raw} outside 0..{ADC_MAX}")
    fraction = (2 * (raw - GPIOZERO_MIN_CODE) / GPIOZERO_RANGE) - 1
    return fraction * vref, fraction


class MCP3008(Driver):
    """One MCP3008 channel: volts and fraction of the reference."""

    name = "mcp3008"
    description = "MCP3008 10-bit ADC channel (SPI, gpiozero) as volts and fraction of Vref"
    metrics = (
        Metric("voltage", "Voltage", unit="SI.ElectricPotential.VOLT"),
        Metric("fraction", "Fraction of reference", value_type=ValueType.DOUBLE, annotation="fraction"),
    )
    options = (
        Option("channel", int, 0, "input channel 0–7 (differential: IN+ channel, IN− channel^1)",
               minimum=0, maximum=CHANNELS - 1),
        Option("differential", bool, False, "read channel minus its pair instead of channel vs ground"),
        Option("max_voltage", float, VREF_DEFAULT_V, "reference voltage VREF in volts",
               minimum=VREF_MIN_V, maximum=VREF_MAX_V),
        Option("spi_device", int, 0, "chip select: 0 = CE0 (GPIO8), 1 = CE1 (GPIO7)", choices=SPI_DEVICES),
    )
    read_time_s = READ_TIME_S
    retry = RetryPolicy(attempts=1, spacing_s=0.01)

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """SPI0 with the configured chip select."""
        return Resources(spi=((SPI_PORT, config["spi_device"]),))

    def __init__(self, pin_factory: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self._owned: list[Any] = []
        try:
            from gpiozero import MCP3008 as GpiozeroMCP3008
            from gpiozero import GPIOZeroError
        except ImportError as exc:
            raise ConfigurationError(f"gpiozero is not installed: {exc}") from exc
        try:
            self._device = GpiozeroMCP3008(
                channel=self.config["channel"], differential=self.config["differential"],
                max_voltage=self.config["max_voltage"], port=SPI_PORT, device=self.config["spi_device"],
                pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise BusError(f"mcp3008: cannot open SPI {SPI_PORT}.{self.config['spi_device']}: {exc} "
                           f"(off a Pi, set {GPIOZERO_FACTORY_ENV}=mock)") from exc
        except OSError as exc:
            raise DeviceNotFoundError(f"mcp3008: SPI device not available: {exc}") from exc

    def read(self) -> Sample:
        """One SPI conversion: volts and fraction of Vref."""
        try:
            raw = self._device.raw_value
        except Exception as exc:  # gpiozero/spidev raise assorted OSError and GPIOZeroError types
            raise BusError(f"mcp3008: SPI transfer failed: {exc}") from exc
        try:
            volts, fraction = code_to_values(raw, self.config["max_voltage"])
        except ValueError as exc:
            raise BusError(f"mcp3008: {exc}") from exc
        return {"voltage": volts, "fraction": fraction}

    def _release(self) -> None:
        self._device.close()
        for thing in self._owned:
            thing.close()

    @classmethod
    def simulated(cls, environment: Any, **options: Any) -> MCP3008:
        """The process's simulated chip (a `FakeMCP3008` on a MockFactory), the chosen channel fed
        by ``environment.soil_volts()``."""
        config = cls.check_options(options)
        os.environ.setdefault(GPIOZERO_FACTORY_ENV, "mock")  # see the module docstring
        lease = _SimulatedChip.acquire(config["max_voltage"])
        lease.chip.set_voltage(config["channel"], environment.soil_volts)
        try:
            driver = cls(pin_factory=lease.factory, **{**options, "spi_device": 0})
        except Exception:
            lease.close()
            raise
        driver._owned = [lease]
        return driver


class _SimulatedChip:
    """One MockFactory + `FakeMCP3008` shared by every simulated MCP3008 of the process: gpiozero
    keys its software SPI buses by pin *names*, so a second mock factory on pins 11/10/9/8 would
    be routed to the first one's pins. Reference-counted; the last ``close()`` tears it down."""

    _current: _SimulatedChip | None = None

    def __init__(self, vref: float) -> None:
        from gpiozero.pins.mock import MockFactory

        from .fakes.spi import FakeMCP3008

        self.factory = MockFactory()
        self.chip = FakeMCP3008(self.factory, vref=vref)
        self.users = 0

    @classmethod
    def acquire(cls, vref: float) -> _SimulatedChip:
        """The shared chip; one chip has one VREF, so every simulated sensor must agree on it."""
        if cls._current is None:
            cls._current = cls(vref)
        elif cls._current.chip.vref != vref:
            raise ConfigurationError(
                f"mcp3008: simulated sensors share one chip, whose VREF is {cls._current.chip.vref} V; "
                f"max_voltage={vref} differs")
        cls._current.users += 1
        return cls._current

    def close(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.chip.close()
            self.factory.close()
            if _SimulatedChip._current is self:
                _SimulatedChip._current = None
