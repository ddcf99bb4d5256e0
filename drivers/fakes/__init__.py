"""Fake hardware that behaves like the real parts on the wire, for tests and ``--simulate``.

- `pibridge.drivers.fakes.i2c`: `FakeSMBus` (a duck-typed smbus2.SMBus that routes every transfer to the
  fake chips attached at their addresses) and the chips (`FakeBME280`, `FakeBH1750`);
- `pibridge.drivers.fakes.w1`: `FakeW1Bus`, a w1 sysfs tree in the kernel's text format, with scripted
  reads, conversion time and the bulk-read trigger;
- `pibridge.drivers.fakes.dht`: `FakeDHT`, an object behaving like adafruit_dht's sensor class;
- `pibridge.drivers.fakes.spi`: `FakeMCP3008` on gpiozero's mock SPI (imports gpiozero);
- `pibridge.drivers.fakes.clock`: `VirtualClock`, time that moves only when something sleeps on it.

Fakes model register files, opcodes, sysfs text and SPI frames, never a driver's own methods,
and inject faults only when asked.
"""
