"""A fake MCP3008 on gpiozero's mock SPI (software SPI over MockFactory pins 11/10/9/8).

The MCP3008 driver clocks out (MCP3008 datasheet §5, Figure 6-1; the frame gpiozero's
``MCP3xxx._send`` uses too)::

    byte   0         1         2
    Tx     00000001  MCCCxxxx  xxxxxxxx     start bit, M = 1 single-ended / 0 differential,
    Rx     xxxxxxxx  xxxxx0RR  RRRRRRRR     CCC = channel; reply: null bit 0, then 10 bits MSB first

The chip waits for the start bit, reads M and the 3 channel bits, then shifts out a 12-bit word:
one sample bit and the null bit (both 0) followed by the 10-bit code. Code = int(V / Vref × 1023)
(1.65 V at 3.3 V → 511). Differential: IN+ = channel, IN− = channel ^ 1, negative → 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero.pins.mock import MockFactory, MockSPIDevice

from ..errors import ConfigurationError
from ..spi import SPI0_CHIP_SELECTS, SPI0_MISO, SPI0_MOSI, SPI0_SCLK
from .softspi import SoftwareSPIBus

if TYPE_CHECKING:
    from ..mcp3008 import MCP3008
    from ..simulation import SimulatedWorld

SCLK_PIN, MOSI_PIN, MISO_PIN, CE0_PIN = SPI0_SCLK, SPI0_MOSI, SPI0_MISO, SPI0_CHIP_SELECTS[0]
CHANNELS = 8
CHANNEL_BITS = 3
ADC_BITS = 10
ADC_MAX = (1 << ADC_BITS) - 1
REPLY_BITS = ADC_BITS + 2  # sample + null bit, then the code
DEFAULT_VREF = 3.3

Voltage = float | Callable[[], float]


class FakeMCP3008(MockSPIDevice):
    """An MCP3008 answering gpiozero's SPI frames; ``set_voltage(ch, v)`` with volts or a callable
    giving volts (read at each conversion). ``conversions`` counts answered frames."""

    def __init__(self, pin_factory: MockFactory, vref: float = DEFAULT_VREF,
                 select_pin: int = CE0_PIN) -> None:
        super().__init__(SCLK_PIN, MOSI_PIN, MISO_PIN, select_pin, pin_factory=pin_factory)
        self.vref = vref
        self.voltages: list[Voltage] = [0.0] * CHANNELS
        self.state = "idle"
        self.conversions = 0
        self.rx_buf: list[bool] = []
        self.select_gpio = select_pin

    def set_voltage(self, channel: int, volts: Voltage) -> None:
        self.voltages[channel] = volts

    def _volts(self, channel: int) -> float:
        v = self.voltages[channel]
        return float(v() if callable(v) else v)

    def code_for(self, differential: bool, channel: int) -> int:
        """The 10-bit conversion result for the current inputs."""
        volts = self._volts(channel) - (self._volts(channel ^ 1) if differential else 0.0)
        volts = min(max(volts, 0.0), self.vref)
        return int(volts / self.vref * ADC_MAX)

    def on_start(self) -> None:
        super().on_start()
        self.state = "idle"

    def on_bit(self) -> None:
        if self.state == "idle":  # leading zeros until the start bit
            if self.rx_buf[-1]:
                self.state = "mode"
                self.rx_buf = []
        elif self.state == "mode":
            self.state = "single" if self.rx_buf[-1] else "diff"
            self.rx_buf = []
        elif self.state in ("single", "diff"):
            if len(self.rx_buf) == CHANNEL_BITS:
                channel = self.rx_word()
                self.conversions += 1
                self.tx_word(self.code_for(self.state == "diff", channel), REPLY_BITS)
                self.state = "result"
        elif self.state == "result" and not self.tx_buf:
            self.state = "idle"
            self.rx_buf = []


def spi_for(chip: FakeMCP3008, bus: SoftwareSPIBus) -> Any:
    """The SPI interface that reaches ``chip`` on ``bus`` (its chip select)."""
    return bus.device(chip.select_gpio)


def simulate(world: SimulatedWorld, cls: type[MCP3008], options: dict[str, Any]) -> MCP3008:
    """An MCP3008 channel on the world's mock SPI0: one `FakeMCP3008` per chip select (every
    channel driver of it shares the chip), the configured channel fed by ``soil_volts()``."""
    config = cls.check_options(options)
    device = config["spi_device"]
    factory = world.pin_factory()
    chip = world.shared(("mcp3008", device), lambda: FakeMCP3008(
        factory, vref=config["max_voltage"], select_pin=SPI0_CHIP_SELECTS[device]))
    if chip.vref != config["max_voltage"]:
        raise ConfigurationError(f"mcp3008: the simulated chip on CE{device} has VREF {chip.vref} V; "
                                 f"max_voltage={config['max_voltage']} differs")
    chip.set_voltage(config["channel"], world.environment.soil_volts)
    bus = world.shared("spi0", lambda: SoftwareSPIBus(factory))
    spi = world.shared(("spi0", device), lambda: spi_for(chip, bus))
    return cls(spi=spi, **options)
