"""Software SPI over any gpiozero pin factory, for simulation: the fake chips (`FakeMCP3008`) sit
on a ``MockFactory``'s pins and this bus clocks the real frames through them.

Why our own software SPI: gpiozero 2.0.1's ``SPISoftwareBus`` calls ``Device.__init__()``
without the pin factory it was given, so building it initialises gpiozero's *global* default
factory (``BadPinFactory`` on a PC unless ``GPIOZERO_PIN_FACTORY`` is set), and it is shared
between all factories by pin number. `SoftwareSPIBus` claims its four pins through the given
factory only, so a ``MockFactory`` per simulated world works with nothing set process-wide
(``SoftwareSPIBus(factory).device(8)`` is the interface of the chip on CE0). Production drivers
use the hardware SPI controller (`pibridge.drivers.spi.open_spi`).
"""

from __future__ import annotations

from typing import Any

from ..spi import SPI0_CHIP_SELECTS, SPI0_MISO, SPI0_MOSI, SPI0_SCLK

WORD_BITS = 8


class SoftwareSPIBus:
    """Bit-banged SPI bus (mode 0 or 1, MSB first): clock, MOSI and MISO claimed on
    ``pin_factory``. `device` gives one chip select's interface; several share the bus."""

    def __init__(self, pin_factory: Any, clock_pin: int = SPI0_SCLK, mosi_pin: int = SPI0_MOSI,
                 miso_pin: int = SPI0_MISO) -> None:
        from gpiozero import InputDevice, OutputDevice

        self.pin_factory = pin_factory
        self._devices: list[Any] = []
        try:
            self._clock = self._claim(OutputDevice(clock_pin, initial_value=False, pin_factory=pin_factory))
            self._mosi = self._claim(OutputDevice(mosi_pin, initial_value=False, pin_factory=pin_factory))
            self._miso = self._claim(InputDevice(miso_pin, pin_factory=pin_factory))
        except Exception:
            self.close()
            raise

    def _claim(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def device(self, select_pin: int = SPI0_CHIP_SELECTS[0]) -> SoftwareSPI:
        """The interface of the chip on ``select_pin`` (active low)."""
        return SoftwareSPI(self, select_pin)

    def exchange(self, data: list[int], clock_mode: int = 0) -> list[int]:
        """Clock out ``data`` (8-bit words). Mode 0 (CPHA 0) reads MISO on each rising edge;
        mode 1 (CPHA 1: the MAX31865) on each falling edge."""
        sample_on_falling = clock_mode == 1
        result = []
        for word in data:
            read = 0
            for bit in range(WORD_BITS - 1, -1, -1):
                self._mosi.value = bool(word >> bit & 1)
                self._clock.on()
                if not sample_on_falling and self._miso.value:
                    read |= 1 << bit
                self._clock.off()
                if sample_on_falling and self._miso.value:
                    read |= 1 << bit
            result.append(read)
        return result

    def close(self) -> None:
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()


class SoftwareSPI:
    """One chip select on a `SoftwareSPIBus`: gpiozero's SPI interface API (``transfer``,
    ``clock_mode`` 0 or 1, ``close``; closing releases the select pin, not the bus)."""

    SUPPORTED_MODES = (0, 1)

    def __init__(self, bus: SoftwareSPIBus, select_pin: int) -> None:
        from gpiozero import OutputDevice

        self._bus = bus
        self._clock_mode = 0
        self._select = OutputDevice(select_pin, active_high=False, initial_value=False,
                                    pin_factory=bus.pin_factory)

    def transfer(self, data: list[int]) -> list[int]:
        """One transaction: select held low while ``data`` is exchanged."""
        self._select.on()
        try:
            return self._bus.exchange(data, self._clock_mode)
        finally:
            self._select.off()

    @property
    def clock_mode(self) -> int:
        """SPI mode (gpiozero's name): 0 (CPOL 0, CPHA 0) or 1 (CPOL 0, CPHA 1)."""
        return self._clock_mode

    @clock_mode.setter
    def clock_mode(self, value: int) -> None:
        if value not in self.SUPPORTED_MODES:
            raise ValueError(f"software SPI supports modes 0 and 1, not {value}")
        self._clock_mode = value

    def close(self) -> None:
        self._select.close()
