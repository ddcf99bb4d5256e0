"""The MCP3008 fake on gpiozero's mock pins, bit by bit: `FakeMCP3008` is the same chip as
`pibridge.drivers.fakes.spi.MCP3008Chip` (its inputs and conversion) answering each clock edge of
a `SoftwareSPIBus` as a ``MockSPIDevice`` (the frame is drawn in `pibridge.drivers.fakes.spi`).
Tests use it to drive the driver through real pin edges; ``--simulate`` answers whole frames
with `MCP3008Chip`, which costs no pins and no gpiozero (a bench checks both answer alike).
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory, MockSPIDevice

from ..spi import SPI0_CHIP_SELECTS, SPI0_MISO, SPI0_MOSI, SPI0_SCLK
from .softspi import SoftwareSPIBus
from .spi import CHANNEL_BITS, DEFAULT_VREF, REPLY_BITS, AnalogInputs

SCLK_PIN, MOSI_PIN, MISO_PIN, CE0_PIN = SPI0_SCLK, SPI0_MOSI, SPI0_MISO, SPI0_CHIP_SELECTS[0]


class FakeMCP3008(AnalogInputs, MockSPIDevice):
    """An MCP3008 answering gpiozero's SPI clock edges; ``set_voltage(ch, v)`` with volts or a
    callable giving volts (read at each conversion). ``conversions`` counts answered frames."""

    def __init__(self, pin_factory: MockFactory, vref: float = DEFAULT_VREF,
                 select_pin: int = CE0_PIN) -> None:
        MockSPIDevice.__init__(self, SCLK_PIN, MOSI_PIN, MISO_PIN, select_pin, pin_factory=pin_factory)
        AnalogInputs.__init__(self, vref)
        self.state = "idle"
        self.rx_buf: list[bool] = []
        self.select_gpio = select_pin

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
