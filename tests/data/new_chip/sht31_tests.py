"""The SHT31 example chip against its fake (tests/test_new_chip.py copies it to tests/test_sht31.py
of a pibridge copy holding the driver and its fake; named so that pytest does not collect it here)."""

from __future__ import annotations

import pytest

from pibridge.drivers import BadDataError, DeviceNotFoundError, NotReadyError, SimulatedWorld, crc8_sensirion
from pibridge.drivers.fakes import FakeSMBus, VirtualClock
from pibridge.drivers.fakes.sht31 import FakeSHT31
from pibridge.drivers.sht31 import SHT31, convert


def rig():
    clock = VirtualClock()
    chip = FakeSHT31(source=lambda: (23.5, 41.0), clock=clock)
    bus = FakeSMBus(1)
    bus.attach(0x44, chip)
    return SHT31(bus=bus), chip, clock


def test_datasheet_maths() -> None:
    assert crc8_sensirion(b"\xbe\xef") == 0x92
    assert convert(0, 65535) == (-45.0, 100.0)


def test_two_phases() -> None:
    driver, chip, clock = rig()
    wait = driver.start()
    with pytest.raises(NotReadyError, match="refused the read"):
        driver.collect()  # NACK while measuring
    clock.sleep(wait)
    sample = driver.collect()
    assert sample["temperature"] == pytest.approx(23.5, abs=0.01)
    assert sample["humidity"] == pytest.approx(41.0, abs=0.01)


def test_faults() -> None:
    driver, chip, clock = rig()
    chip.corrupt_crc = True
    with pytest.raises(BadDataError, match="CRC"):
        driver.read(clock.sleep)
    with pytest.raises(DeviceNotFoundError, match="0x45"):
        SHT31(bus=FakeSMBus(1), address=0x45).read(clock.sleep)


def test_simulated() -> None:
    clock = VirtualClock()
    with SimulatedWorld(clock=clock) as world:
        driver = world.build("sht31")
        assert set(driver.read(clock.sleep)) == {"temperature", "humidity"}
