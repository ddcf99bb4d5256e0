"""What every I2C chip driver shares: the bus handle, the ``address``/``i2c_bus`` options, what a
chip declares so that ``pibridge scan`` can name it, and transfers with the error mapping built in.

The bus is an smbus2.SMBus-like object handed in (tests, the bridge sharing one bus, a fake) or,
when none is given, ``smbus2.SMBus(i2c_bus)`` opened on first use and closed by ``close()``. A bus
that was handed in is never closed by the driver.

Error mapping of the transfer helpers (Linux reports an I2C NACK as errno 121, EREMOTEIO):

==========================================================  ==========================
what happened                                               error
==========================================================  ==========================
NACK before the chip ever answered                          `DeviceNotFoundError`
NACK of a plain read (`read_bytes`) right after a command   `NotReadyError` (busy chip)
any other failure once the chip has answered                `BusError` (retryable)
==========================================================  ==========================
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import Driver, Option, Resources
from .errors import BusError, DeviceNotFoundError, NotReadyError, SensorError

DEFAULT_I2C_BUS = 1  #: /dev/i2c-1: the Pi's header pins 3 and 5
I2C_BUS_MAX = 255


def i2c_bus_option() -> Option:
    """The ``i2c_bus`` option every I2C driver declares."""
    return Option("i2c_bus", int, DEFAULT_I2C_BUS, "I2C bus number (/dev/i2c-N)",
                  minimum=0, maximum=I2C_BUS_MAX)


def i2c_address_option(addresses: tuple[int, ...], help: str, default: int | None = None) -> Option:
    """The ``address`` option: one of the chip's possible 7-bit addresses, shown in hex."""
    return Option("address", int, addresses[0] if default is None else default, help,
                  choices=addresses, hex=True)


@dataclass(frozen=True)
class ChipId:
    """An identification register: ``pibridge scan`` reads ``register`` at each address the
    driver declares and names what it finds. ``chips``: id -> part this driver reads;
    ``others``: ids of related parts it does not read (named by scan, refused by the driver)."""

    register: int
    chips: Mapping[int, str]
    others: Mapping[int, str] = field(default_factory=dict)

    def name(self, chip_id: int) -> str | None:
        return self.chips.get(chip_id) or self.others.get(chip_id)


@dataclass(frozen=True)
class CommandId:
    """Identification of a chip without registers that answers a command (a Sensirion serial
    number): ``pibridge scan`` writes ``command`` in its own transaction, waits ``wait_s``, does a
    plain read of ``length`` bytes, and ``decode`` names the part from them, or returns None when
    they are not this chip's answer (CRCs that do not hold). Another kind of chip NACKs the
    command or the read (nothing pending): also "not this chip". Two chips that share an
    address (SHT3x and SHT4x at 0x44) are told apart this way, by how they answer::

        S addr+W command... P   (wait_s)   S addr+R b0 .. b[length-1] P
    """

    command: bytes
    length: int
    wait_s: float
    decode: Callable[[bytes], str | None]

    def identify(self, bus: Any, address: int, sleep: Callable[[float], None]) -> str | None:
        """The part's name with its serial, or None (no answer, or not this chip)."""
        from smbus2 import i2c_msg

        try:
            bus.i2c_rdwr(i2c_msg.write(address, self.command))
            sleep(self.wait_s)
            reply = i2c_msg.read(address, self.length)
            bus.i2c_rdwr(reply)
        except OSError:
            return None
        return self.decode(bytes(reply))


@dataclass(frozen=True)
class RegisterSignature:
    """For chips without an id register: 16-bit registers (read big-endian: pointer, then two
    bytes) whose values name the part. ``pibridge scan`` names the chip ``name`` when every
    register in ``words`` reads one of its values; otherwise the chip stays "probable, by
    address"."""

    name: str
    words: Mapping[int, tuple[int, ...]]

    def matches(self, bus: Any, address: int) -> bool:
        """Whether the chip at ``address`` shows this signature (OSError: a failed read)."""
        for register, accepted in self.words.items():
            data = bus.read_i2c_block_data(address, register, 2)
            if (data[0] << 8) | data[1] not in accepted:
                return False
        return True


class I2CDriver(Driver):
    """Base class of I2C chip drivers. Subclasses declare an ``address`` option
    (`i2c_address_option`, its choices are the chip's addresses) and `i2c_bus_option()` among
    their ``options``, and optionally ``chip_id`` (a `ChipId` register, or a `CommandId` for a
    chip that answers an identification command) and ``chip_name``."""

    chip_name: ClassVar[str] = ""  #: for messages and ``pibridge scan``; defaults to the registry name
    chip_id: ClassVar[ChipId | CommandId | None] = None
    signature: ClassVar[RegisterSignature | None] = None  #: when there is no chip id (scan)

    def __init__(self, bus: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self._bus = bus
        self._owns_bus = False
        self.address: int = self.config["address"]
        self._seen = False        # has the chip ever acknowledged a transfer?
        self._commanded = False   # was the last successful transfer a write?

    @classmethod
    def i2c_addresses(cls) -> tuple[int, ...]:
        """Every address the chip can answer on: the ``address`` option's choices."""
        for option in cls.options:
            if option.key == "address":
                return tuple(option.choices or (option.default,))
        return ()

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """The (bus, address) slot, plus any GpioPin options."""
        base = super().resources(config)
        return Resources(gpio=base.gpio, i2c=((config["i2c_bus"], config["address"]),))

    @property
    def label(self) -> str:
        """``"bme280 at 0x76"``: how messages name this chip."""
        return f"{self.chip_name or self.name} at 0x{self.address:02x}"

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

    # -- transfers with the error mapping -----------------------------------------------------
    # Each helper inlines its call (no closure per transfer: these run on every read of a Pi Zero).
    def _failed(self, exc: OSError, doing: str, busy_nack: bool = False) -> SensorError:
        """The typed error for a failed transfer (table in the module docstring)."""
        self._transfer_failed()
        if exc.errno == errno.EREMOTEIO:
            if not self._seen:
                return self._absent()
            if busy_nack and self._commanded:
                return NotReadyError(f"{self.label}: the chip refused the read after a command "
                                     "(measurement still running)")
        return self._bus_error(exc, doing)

    def _transfer_failed(self) -> None:
        """Hook: a transfer failed. Drivers that keep chip state (configuration written, mode
        started) forget it here so the next attempt starts over."""

    def write_byte(self, value: int, doing: str = "command") -> None:
        """One byte (an opcode or a register pointer): ``S addr+W value P``."""
        bus = self._bus if self._bus is not None else self._open_bus()
        try:
            bus.write_byte(self.address, value)
        except OSError as exc:
            raise self._failed(exc, doing) from exc
        self._seen = self._commanded = True

    def write_bytes(self, data: bytes, doing: str = "command") -> None:
        """A write of several bytes (e.g. a 16-bit command): ``S addr+W d0 d1 … P``."""
        from smbus2 import i2c_msg  # lazily: only when building messages

        bus = self._bus if self._bus is not None else self._open_bus()
        try:
            bus.i2c_rdwr(i2c_msg.write(self.address, bytes(data)))
        except OSError as exc:
            raise self._failed(exc, doing) from exc
        self._seen = self._commanded = True

    def write_register(self, register: int, value: int, doing: str = "register write") -> None:
        """``S addr+W register value P``."""
        bus = self._bus if self._bus is not None else self._open_bus()
        try:
            bus.write_byte_data(self.address, register, value)
        except OSError as exc:
            raise self._failed(exc, doing) from exc
        self._seen = self._commanded = True

    def read_register(self, register: int, doing: str = "register read") -> int:
        """One register: ``S addr+W register Sr addr+R value P``."""
        bus = self._bus if self._bus is not None else self._open_bus()
        try:
            value: int = bus.read_byte_data(self.address, register)
        except OSError as exc:
            raise self._failed(exc, doing) from exc
        self._seen, self._commanded = True, False
        return value

    def read_registers(self, register: int, length: int, doing: str = "register read") -> bytes:
        """``length`` (≤ 32) registers from ``register`` on, in one burst (auto-increment)."""
        bus = self._bus if self._bus is not None else self._open_bus()
        try:
            data = bytes(bus.read_i2c_block_data(self.address, register, length))
        except OSError as exc:
            raise self._failed(exc, doing) from exc
        self._seen, self._commanded = True, False
        return data

    def read_bytes(self, length: int, doing: str = "result read") -> bytes:
        """A plain read with no register pointer: ``S addr+R b0 … P``. A chip that NACKs it right
        after a command is still measuring: `NotReadyError`."""
        from smbus2 import i2c_msg

        bus = self._bus if self._bus is not None else self._open_bus()
        msg = i2c_msg.read(self.address, length)
        try:
            bus.i2c_rdwr(msg)
        except OSError as exc:
            raise self._failed(exc, doing, busy_nack=True) from exc
        self._seen, self._commanded = True, False
        return bytes(msg)

    def _absent(self) -> DeviceNotFoundError:
        """Nothing acknowledges the address (errno 121 EREMOTEIO, an I2C NACK)."""
        return DeviceNotFoundError(f"{self.label}: nothing answers "
                                   f"(I2C NACK on bus {self.config['i2c_bus']})")

    def _bus_error(self, exc: OSError, doing: str) -> BusError:
        """A failed transfer as a retryable `BusError` naming the errno."""
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return BusError(f"{self.label}: I2C {doing} failed ({code}: {exc.strerror or exc})")
