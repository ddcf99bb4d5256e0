"""Fake hardware that behaves like the real parts on the wire, for tests and ``--simulate``.

The building blocks, importable from here:

- `FakeSMBus`, `FakeI2CDevice`, `nack_error` (`.i2c`): a duck-typed smbus2.SMBus routing every
  transfer to the fake chip at its address; the base class a new fake I2C chip subclasses;
- `FakeW1Bus`, `FakeProbe`, `W1Outcome` (`.w1`): a w1 sysfs tree in the kernel's text format,
  scripted reads, conversion time and the bulk-read trigger;
- `FakeDHT` (`.dht`): an object behaving like adafruit_dht's sensor class;
- `VirtualClock`, `WallClock` (`.clock`): time that moves only when something sleeps on it;
  real time whose inner waits cost nothing;
- `MCP3008Chip` (`.spi`): an MCP3008 answering whole SPI frames (what ``--simulate`` uses);
  `FakeMCP3008` (`.mockspi`, imports gpiozero: loaded on first use), the same chip on
  `SoftwareSPIBus` (`.softspi`): SPI bit-banged over a mock factory's pins.

One module per chip holds its fake and its simulator: `.bme280`, `.bh1750`, `.w1` (DS18B20),
`.dht`, `.spi` (MCP3008), `.gpio` (digital input), `.thermal` (CPU temperature), `.sht4x`,
`.sht3x`, `.aht20`, `.veml7700`; `.sensirion` is the Sensirion word framing and CRC-8 written
again for the fakes; `.mhz19` and `.pms5003` are UART chips on `.serial`'s `FakeSerialChip` (a
real pseudo-terminal served by a thread). Fakes model register files, opcodes, sysfs text, SPI
frames and UART bytes, never a driver's own methods, and inject faults only when asked.
"""

from typing import Any

from .clock import VirtualClock, WallClock
from .dht import FakeDHT
from .i2c import FakeI2CDevice, FakeSMBus, nack_error
from .w1 import FakeProbe, FakeW1Bus
from .w1 import Outcome as W1Outcome

__all__ = ["FakeDHT", "FakeI2CDevice", "FakeMCP3008", "FakeProbe", "FakeSMBus", "FakeW1Bus",
           "VirtualClock", "W1Outcome", "WallClock", "nack_error"]


def __getattr__(name: str) -> Any:
    if name == "FakeMCP3008":
        from .mockspi import FakeMCP3008

        return FakeMCP3008
    raise AttributeError(name)
