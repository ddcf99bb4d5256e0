"""MCP3008 8-channel 10-bit ADC on SPI0.

One driver instance reads one channel (single-ended, or differential against its pair channel
^ 1) and reports it as volts and as a 0–1 fraction of the reference voltage, scaled as gpiozero's
``MCP3008.value``/``voltage`` do. The frame is packed here; the hardware handle is an SPI
interface (`pibridge.drivers.spi`): injected (``spi=``), or opened from the given
``pin_factory`` (or from `pibridge.drivers.gpio.hardware_pin_factory`) and closed with the driver.

::

    byte   0         1         2
    Tx     00000001  MCCCxxxx  xxxxxxxx     start bit, M = 1 single-ended / 0 differential,
    Rx     xxxxxxxx  xxxxx0RR  RRRRRRRR     CCC = channel; reply: null bit 0, then 10 bits MSB first
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pibridge.protocol import ValueType

from .base import Driver, Metric, Option, Resources, RetryPolicy, Sample
from .errors import BusError, DeviceNotFoundError, SensorError
from .gpio import hardware_pin_factory
from .spi import open_spi

ADC_BITS = 10
ADC_MAX = (1 << ADC_BITS) - 1
GPIOZERO_MIN_CODE = -(1 << ADC_BITS)  # gpiozero scales every MCP3xxx on a signed (bits+1) range
GPIOZERO_RANGE = (1 << (ADC_BITS + 1)) - 1
CHANNELS = 8
VREF_DEFAULT_V = 3.3
VREF_MIN_V, VREF_MAX_V = 0.25, 5.5  # MCP3008 datasheet: VREF 0.25 V .. VDD (≤ 5.5 V)
SPI_PORT = 0
SPI_DEVICES = (0, 1)  # CE0 / CE1
READ_TIME_S = 0.001  # one 3-byte transfer
START_BIT = 0x01
SINGLE_ENDED_BIT = 0x80
CHANNEL_SHIFT = 4
RESULT_HIGH_MASK = 0x03
FRAME_LEN = 3


def command_frame(channel: int, differential: bool) -> list[int]:
    """The 3 bytes sent for one conversion (table above)."""
    mode = 0 if differential else SINGLE_ENDED_BIT
    return [START_BIT, mode | (channel << CHANNEL_SHIFT), 0]


def parse_reply(reply: list[int]) -> int:
    """The 10-bit code from the 3 bytes clocked back (table above)."""
    if len(reply) != FRAME_LEN:
        raise ValueError(f"MCP3008 reply has {len(reply)} bytes, expected {FRAME_LEN}")
    return ((reply[1] & RESULT_HIGH_MASK) << 8) | reply[2]


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
    simulator = "pibridge.drivers.fakes.spi:simulate"
    #: several sensors (one per channel) read the one chip on a chip select (`pibridge check`)
    shares_chip_select = True

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """SPI0 with the configured chip select (its pins: `pibridge.drivers.base.SPI_BUS_PINS`)."""
        return Resources(spi=((SPI_PORT, config["spi_device"]),))

    def __init__(self, spi: Any = None, *, pin_factory: Any = None, **options: Any) -> None:
        """``spi``: an SPI interface to use (never closed by the driver); otherwise one is opened
        on SPI0 / ``spi_device`` from ``pin_factory`` (or the machine's own GPIO)."""
        super().__init__(**options)
        self._owned: list[Any] = []
        if spi is None:
            factory = pin_factory
            if factory is None:
                factory = hardware_pin_factory()
                self._owned.append(factory)
            try:
                spi = open_spi(factory, SPI_PORT, self.config["spi_device"])
            except SensorError:
                self._close_owned()
                raise
            except Exception as exc:  # gpiozero / lgpio raise assorted errors for a missing SPI
                self._close_owned()
                raise DeviceNotFoundError(f"mcp3008: cannot open SPI {SPI_PORT}.{self.config['spi_device']}: "
                                          f"{exc} (is SPI enabled?)") from exc
            self._owned.insert(0, spi)
        self._spi = spi
        self._frame = command_frame(self.config["channel"], self.config["differential"])

    def collect(self) -> Sample:
        """One SPI conversion: volts and fraction of Vref."""
        try:
            reply = self._spi.transfer(list(self._frame))
        except Exception as exc:  # gpiozero/spidev raise assorted OSError and GPIOZeroError types
            raise BusError(f"mcp3008: SPI transfer failed: {exc}") from exc
        try:
            volts, fraction = code_to_values(parse_reply(reply), self.config["max_voltage"])
        except ValueError as exc:
            raise BusError(f"mcp3008: {exc}") from exc
        return {"voltage": volts, "fraction": fraction}

    def _close_owned(self) -> None:
        for thing in self._owned:
            thing.close()
        self._owned.clear()

    def _release(self) -> None:
        self._close_owned()
