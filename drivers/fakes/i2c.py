"""A fake I2C bus and fake I2C chips that behave like the real parts on the wire.

Every smbus2 call is reduced to what the wire carries: an optional *write phase* (bytes sent
after the address) and an optional *read phase* (bytes clocked back), each handed to the chip
at that address. The chip alone decides what the bytes mean: the BME280 treats the first
written byte as its register pointer and further bytes as (register, value) pairs; the BH1750
treats a written byte as an opcode. So the SMBus idioms map as:

======================================  ========================  ===============
smbus2 call                             write phase               read phase
======================================  ========================  ===============
``read_byte(a)``                        --                        1 byte
``write_byte(a, v)``                    ``[v]``                   --
``read_byte_data(a, r)``                ``[r]``                   1 byte
``write_byte_data(a, r, v)``            ``[r, v]``                --
``read_word_data(a, r)``                ``[r]``                   2 bytes, LSB first
``read_i2c_block_data(a, r, n)``        ``[r]``                   n bytes (n <= 32)
``write_i2c_block_data(a, r, data)``    ``[r, *data]`` (<= 32)    --
``i2c_rdwr(msg, ...)``                  each write msg            each read msg
======================================  ========================  ===============

A missing address (or a chip told to NACK) raises ``OSError(121, "Remote I/O error")`` as Linux
does. Chips keep time with a ``clock`` callable (seconds): the simulated world's clock for
``--simulate``, a `VirtualClock` in tests so that no test sleeps for real.

This module knows no chip: each fake chip lives in its own module (``fakes/bme280.py``,
``fakes/bh1750.py``), subclasses `FakeI2CDevice` and imports its driver's constants, so the
dependency runs one way (fake -> chip) and a new chip edits nothing here.

The fake device protocol (what a new chip implements)::

    class FakeMyChip(FakeI2CDevice):
        def i2c_write(self, data: bytes) -> None: ...   # bytes after the address byte
        def i2c_read(self, length: int) -> bytes: ...   # bytes clocked back

A chip NACKs by raising `nack_error()` from either method (e.g. a read while it converts);
``nack = True`` / `FakeI2CDevice.fail_next` NACK every / the next n transfers before the chip
sees them.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections import deque
from collections.abc import Iterable
from typing import Any

I2C_SMBUS_BLOCK_MAX = 32  #: smbus2's block-transfer limit
I2C_M_RD = 0x0001         #: i2c_msg flag of a read message


def nack_error() -> OSError:
    """What Linux reports for an address nobody acknowledges."""
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


class FakeI2CDevice:
    """Base of the fake chips: one write phase, one read phase per transfer.

    Fault injection (off unless asked): ``nack = True`` makes every transfer fail with errno
    121; `fail_next` makes only the next *n* transfers fail.
    """

    def __init__(self) -> None:
        self.nack = False
        self._nack_next = 0

    def fail_next(self, count: int = 1) -> None:
        """NACK the next ``count`` transfers (a glitch), then answer again."""
        self._nack_next = count

    def check_ack(self) -> None:
        """Raise the NACK OSError if a fault says so."""
        if self._nack_next > 0:
            self._nack_next -= 1
            raise nack_error()
        if self.nack:
            raise nack_error()

    def i2c_write(self, data: bytes) -> None:
        """The bytes of a write phase (after the address byte)."""
        raise NotImplementedError

    def i2c_read(self, length: int) -> bytes:
        """Bytes clocked out in a read phase."""
        raise NotImplementedError


#: calls `FakeSMBus.transfers` remembers (the newest): enough for any test, bounded for long runs
TRANSFER_LOG_MAX = 1024


class FakeSMBus:
    """Duck-typed ``smbus2.SMBus`` holding fake chips by 7-bit address.

    ``transfers`` logs each call as ``(method, address, register-or-None, payload)`` so tests can
    check what went over the wire (e.g. one burst read per sample). It keeps the last
    `TRANSFER_LOG_MAX` calls only: a simulated run lasts months (~52k transfers a day).
    """

    def __init__(self, bus: int | None = None, devices: dict[int, FakeI2CDevice] | None = None) -> None:
        self.bus = bus
        self.devices: dict[int, FakeI2CDevice] = dict(devices or {})
        self.transfers: deque[tuple[str, int, int | None, Any]] = deque(maxlen=TRANSFER_LOG_MAX)
        self.closed = False

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, address: int, device: FakeI2CDevice) -> FakeI2CDevice:
        self.devices[address] = device
        return device

    def detach(self, address: int) -> None:
        """The chip is gone (unplugged): its address NACKs from now on."""
        self.devices.pop(address, None)

    def _device(self, address: int) -> FakeI2CDevice:
        if self.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        device = self.devices.get(address)
        if device is None:
            raise nack_error()
        device.check_ack()
        return device

    def _log(self, method: str, address: int, register: int | None, payload: Any) -> None:
        self.transfers.append((method, address, register, payload))

    # -- smbus2 API --------------------------------------------------------------------------
    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        self._log("read_byte", i2c_addr, None, 1)
        return self._device(i2c_addr).i2c_read(1)[0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._log("write_byte", i2c_addr, None, value)
        self._device(i2c_addr).i2c_write(bytes([value]))

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._log("read_byte_data", i2c_addr, register, 1)
        device = self._device(i2c_addr)
        device.i2c_write(bytes([register]))
        return device.i2c_read(1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        self._log("write_byte_data", i2c_addr, register, value)
        self._device(i2c_addr).i2c_write(bytes([register, value]))

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._log("read_word_data", i2c_addr, register, 2)
        device = self._device(i2c_addr)
        device.i2c_write(bytes([register]))
        low, high = device.i2c_read(2)
        return low | (high << 8)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {I2C_SMBUS_BLOCK_MAX} bytes")
        self._log("read_i2c_block_data", i2c_addr, register, length)
        device = self._device(i2c_addr)
        device.i2c_write(bytes([register]))
        return list(device.i2c_read(length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Iterable[int],
                             force: bool | None = None) -> None:
        data = list(data)
        if len(data) > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._log("write_i2c_block_data", i2c_addr, register, data)
        self._device(i2c_addr).i2c_write(bytes([register, *data]))

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        """Combined transfer of smbus2 ``i2c_msg`` objects; read messages are filled in place."""
        for msg in i2c_msgs:
            device = self._device(msg.addr)
            if msg.flags & I2C_M_RD:
                self._log("i2c_rdwr.read", msg.addr, None, msg.len)
                data = bytes(device.i2c_read(msg.len))
                ctypes.memmove(msg.buf, data, msg.len)
            else:
                payload = bytes(list(msg)[: msg.len])
                self._log("i2c_rdwr.write", msg.addr, None, list(payload))
                device.i2c_write(payload)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeSMBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
