"""SPI for drivers: the interface object is the hardware handle, built with an explicit pin factory.

A driver talks to an *SPI interface*: any object with gpiozero's ``transfer(words) -> words``
(8-bit words, mode 0, MSB first) and ``close()``. `open_spi` gets gpiozero's interface for a
port and chip select from the factory the caller gives (lgpio's drives the hardware SPI
controller). Simulation bit-bangs the same protocol on a mock factory's pins
(`pibridge.drivers.fakes.softspi`).
"""

from __future__ import annotations

from typing import Any

#: SPI0 on the Pi header (BCM): SCLK, MOSI, MISO, and the chip selects CE0/CE1.
SPI0_SCLK, SPI0_MOSI, SPI0_MISO = 11, 10, 9
SPI0_CHIP_SELECTS = (8, 7)


def open_spi(pin_factory: Any, port: int, device: int) -> Any:
    """gpiozero's SPI interface for ``/dev/spidevPORT.DEVICE`` from ``pin_factory``."""
    return pin_factory.spi(port=port, device=device)
