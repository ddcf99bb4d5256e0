"""What every I2C chip driver shares: the bus handle, the ``address``/``i2c_bus`` options, and the
mapping of Linux I2C errors to typed sensor errors.

The bus is an smbus2.SMBus-like object handed in (tests, the bridge sharing one bus) or, when
none is given, ``smbus2.SMBus(i2c_bus)`` opened on first use and closed by ``close()``. A bus
that was handed in is never closed by the driver.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import Driver, Option, Resources
from .errors import BusError, DeviceNotFoundError

DEFAULT_I2C_BUS = 1  #: /dev/i2c-1: the Pi's header pins 3 and 5
I2C_BUS_MAX = 255


def i2c_bus_option() -> Option:
    """The ``i2c_bus`` option every I2C driver declares."""
    return Option("i2c_bus", int, DEFAULT_I2C_BUS, "I2C bus number (/dev/i2c-N)",
                  minimum=0, maximum=I2C_BUS_MAX)


class I2CDriver(Driver):
    """Base class of I2C chip drivers. Subclasses declare an ``address`` option (with the chip's
    possible addresses as choices) and `i2c_bus_option()` among their ``options``."""

    chip_name: ClassVar[str] = ""  #: for messages; defaults to the registry name

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self._bus = bus
        self._owns_bus = False
        self.address: int = self.config["address"]

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """The (bus, address) slot, plus any GpioPin options."""
        base = super().resources(config)
        return Resources(gpio=base.gpio, i2c=((config["i2c_bus"], config["address"]),))

    @property
    def label(self) -> str:
        return self.chip_name or self.name

    def _open_bus(self) -> Any:
        """The bus: the injected one, or ``smbus2.SMBus(i2c_bus)`` opened now (imported lazily)."""
        if self._bus is None:
            import smbus2

            number = self.config["i2c_bus"]
            try:
                self._bus = smbus2.SMBus(number)
            except OSError as exc:
                raise DeviceNotFoundError(
                    f"{self.label}: cannot open I2C bus /dev/i2c-{number}: {exc.strerror or exc} "
                    "(is I2C enabled?)") from exc
            self._owns_bus = True
        return self._bus

    def _release(self) -> None:
        if self._owns_bus and self._bus is not None:
            self._bus.close()
            self._bus = None
            self._owns_bus = False

    def _absent(self) -> DeviceNotFoundError:
        """Nothing acknowledges the address (errno 121 EREMOTEIO, an I2C NACK)."""
        return DeviceNotFoundError(f"{self.label}: nothing answers at 0x{self.address:02x} "
                                   f"(I2C NACK on bus {self.config['i2c_bus']})")

    def _bus_error(self, exc: OSError, doing: str) -> BusError:
        """A failed transfer as a retryable `BusError` naming the errno."""
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return BusError(f"{self.label} at 0x{self.address:02x}: I2C {doing} failed "
                        f"({code}: {exc.strerror or exc})")
