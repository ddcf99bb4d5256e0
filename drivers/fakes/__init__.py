"""Fake hardware that behaves like the real parts on the wire, for tests and ``--simulate``.

`drivers.fakes.i2c` holds `FakeSMBus` (a duck-typed smbus2.SMBus that routes every transfer to
the fake chips attached at their addresses) and the chips themselves (`FakeBME280`,
`FakeBH1750`). Fakes model register files and opcodes, never a driver's own methods, and
inject faults only when asked.
"""
