"""BH1750 driver and its opcode-level fake: conversion maths, modes, MTreg, timing, faults."""

from __future__ import annotations

import pytest
from smbus2 import i2c_msg

from pibridge.drivers import bh1750
from pibridge.drivers.base import check_sample
from pibridge.drivers.bh1750 import BH1750, conversion_time_s, mtreg_opcodes, parse_result, raw_to_lux
from pibridge.drivers.errors import BusError, ConfigurationError, DeviceNotFoundError, NotReadyError
from pibridge.drivers.fakes.bh1750 import FakeBH1750
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.simulation import Environment, SimulatedWorld

ADDR = 0x23


def rig(lux: float = 1000.0, address: int = ADDR):
    clock = VirtualClock()
    chip = FakeBH1750(lux=lux, clock=clock)
    bus = FakeSMBus(1)
    bus.attach(address, chip)
    return bus, chip, clock


# --- pure maths -----------------------------------------------------------------------------------
def test_datasheet_example() -> None:
    assert parse_result(bytes([0x83, 0x90])) == 0x8390
    assert round(raw_to_lux(0x8390)) == 28067


def test_mtreg_and_h2_scaling() -> None:
    assert raw_to_lux(1200, mtreg=138) == pytest.approx(500.0)
    assert raw_to_lux(1200, resolution="high2") == pytest.approx(500.0)
    assert raw_to_lux(1200, resolution="low") == pytest.approx(1000.0)
    assert raw_to_lux(0) == 0.0
    assert raw_to_lux(0xFFFF) == pytest.approx(54612.5)


def test_mtreg_opcodes() -> None:
    assert mtreg_opcodes(69) == (0x42, 0x65)
    assert mtreg_opcodes(31) == (0x40, 0x7F)
    assert mtreg_opcodes(254) == (0x47, 0x7E)


def test_conversion_time_scales_with_mtreg() -> None:
    assert conversion_time_s("high") == pytest.approx(0.180)
    assert conversion_time_s("low") == pytest.approx(0.024)
    assert conversion_time_s("high2", 138) == pytest.approx(0.360)


# --- the driver on the fake -----------------------------------------------------------------------
def test_one_time_high_read_and_wire_protocol() -> None:
    bus, chip, clock = rig(lux=1000.0)
    driver = BH1750(bus=bus)
    assert not bus.transfers  # nothing at construction
    sample = check_sample(driver, driver.read(clock.sleep))
    assert sample == {"illuminance": pytest.approx(1000.0)}
    methods = [t[0] for t in bus.transfers]
    assert set(methods) == {"write_byte", "i2c_rdwr.read"}  # never read_i2c_block_data
    assert [t[3] for t in bus.transfers if t[0] == "write_byte"] == [0x01, 0x42, 0x65, 0x20]
    assert not chip.powered  # one-time mode powers down after the conversion
    assert clock() >= 0.180


@pytest.mark.parametrize("resolution, opcode, lux, expected", [
    ("high", 0x20, 300.4, 300.0), ("high2", 0x21, 300.4, 300.4167), ("low", 0x23, 300.4, 300.0)])
def test_resolutions(resolution: str, opcode: int, lux: float, expected: float) -> None:
    bus, chip, clock = rig(lux=lux)
    driver = BH1750(bus=bus, resolution=resolution)
    value = driver.read(clock.sleep)["illuminance"]
    assert chip.conversions == 1
    assert bus.transfers[-2][3] == opcode
    assert value == pytest.approx(expected, abs=1e-4)


def test_mtreg_changes_sensitivity_and_wait() -> None:
    bus, chip, clock = rig(lux=1000.0)
    driver = BH1750(bus=bus, mtreg=138)
    assert driver.read(clock.sleep)["illuminance"] == pytest.approx(1000.0)
    assert chip.mtreg == 138
    assert chip.data == 2400  # twice the counts of MTreg 69
    assert clock() >= 0.360


def test_fake_conversion_time_reflects_mtreg() -> None:
    bus, _chip, clock = rig(lux=1000.0)
    for op in mtreg_opcodes(254):
        bus.write_byte(ADDR, op)
    bus.write_byte(ADDR, 0x20)
    clock.sleep(0.180)  # enough at MTreg 69, not at 254 (typ. 442 ms)
    msg = i2c_msg.read(ADDR, 2)
    bus.i2c_rdwr(msg)
    assert parse_result(bytes(msg)) == 0
    clock.sleep(0.300)
    bus.i2c_rdwr(msg)
    assert parse_result(bytes(msg)) == round(1000 * 1.2 * 254 / 69)


def test_read_i2c_block_data_returns_the_previous_value() -> None:
    """The §6 gotcha: sending the opcode and reading at once gets the last result."""
    bus, chip, clock = rig(lux=100.0)
    bus.write_byte(ADDR, 0x20)
    clock.sleep(0.2)
    first = bus.read_i2c_block_data(ADDR, 0x20, 2)  # opcode + immediate read
    chip.lux = 500.0
    second = bus.read_i2c_block_data(ADDR, 0x20, 2)
    assert first == second == [0x00, 120]
    clock.sleep(0.2)
    msg = i2c_msg.read(ADDR, 2)
    bus.i2c_rdwr(msg)
    assert parse_result(bytes(msg)) == 600


def test_driver_that_does_not_wait_gets_stale_values() -> None:
    bus, chip, clock = rig(lux=100.0)
    BH1750(bus=bus).read(clock.sleep)
    chip.lux = 800.0
    hasty = BH1750(bus=bus)
    assert hasty.read(lambda s: None)["illuminance"] == pytest.approx(100.0)
    careful = BH1750(bus=bus)
    assert careful.read(clock.sleep)["illuminance"] == pytest.approx(800.0)


def test_continuous_mode_starts_once() -> None:
    bus, chip, clock = rig(lux=250.0)
    driver = BH1750(bus=bus, mode="continuous", resolution="low")
    assert driver.read(clock.sleep)["illuminance"] == pytest.approx(250.0, abs=4 / 1.2)
    chip.lux = 2000.0
    clock.sleep(driver.conversion_time_s)
    assert driver.read(clock.sleep)["illuminance"] == pytest.approx(2000.0, abs=4 / 1.2)
    opcodes = [t[3] for t in bus.transfers if t[0] == "write_byte"]
    assert opcodes == [0x01, 0x42, 0x65, 0x13]
    assert chip.powered


def test_raw_zero_is_a_reading_and_saturation() -> None:
    bus, chip, clock = rig(lux=0.0)
    driver = BH1750(bus=bus)
    assert driver.read(clock.sleep) == {"illuminance": 0.0}
    chip.lux = 120_000.0
    assert driver.read(clock.sleep)["illuminance"] == pytest.approx(raw_to_lux(0xFFFF))


def test_reset_and_power_down_opcodes() -> None:
    bus, chip, clock = rig(lux=100.0)
    bus.write_byte(ADDR, 0x10)
    clock.sleep(0.2)
    assert chip.data == 120
    bus.write_byte(ADDR, 0x00)
    bus.write_byte(ADDR, 0x07)  # reset is ignored while powered down
    assert chip.data == 120
    bus.write_byte(ADDR, 0x01)
    bus.write_byte(ADDR, 0x07)
    assert chip.data == 0


def test_address_0x5c_and_options() -> None:
    bus, _chip, clock = rig(lux=50.0, address=0x5C)
    assert BH1750(bus=bus, address="0x5c").read(clock.sleep)["illuminance"] == pytest.approx(50.0)
    for bad in ({"mtreg": 30}, {"mtreg": 255}, {"mode": "sometimes"}, {"address": 0x24}):
        with pytest.raises(ConfigurationError):
            BH1750(bus=bus, **bad)


# --- faults ---------------------------------------------------------------------------------------
def test_absent_chip_is_device_not_found() -> None:
    with pytest.raises(DeviceNotFoundError, match="0x23"):
        BH1750(bus=FakeSMBus()).read(lambda s: None)


def test_nack_later_is_bus_error_then_recovers() -> None:
    bus, chip, clock = rig(lux=10.0)
    driver = BH1750(bus=bus, mtreg=100)
    driver.read(clock.sleep)
    chip.fail_next(1)
    with pytest.raises(BusError, match="EREMOTEIO"):
        driver.read(clock.sleep)
    chip.mtreg = bh1750.MTREG_DEFAULT  # as after a power cycle
    bus.transfers.clear()
    assert driver.read(clock.sleep)["illuminance"] == pytest.approx(10.0, abs=0.6)
    assert [t[3] for t in bus.transfers if t[0] == "write_byte"][:3] == [0x01, 0x43, 0x64]


def test_device_gone_is_bus_error() -> None:
    bus, _chip, clock = rig()
    driver = BH1750(bus=bus)
    driver.read(clock.sleep)
    bus.detach(ADDR)
    with pytest.raises(BusError):
        driver.read(clock.sleep)


def test_stuck_values_fault() -> None:
    bus, chip, clock = rig(lux=100.0)
    driver = BH1750(bus=bus)
    driver.read(clock.sleep)
    chip.stuck_values = True
    chip.lux = 900.0
    assert driver.read(clock.sleep)["illuminance"] == pytest.approx(100.0)


def test_driver_opens_and_closes_its_own_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    import smbus2

    clock = VirtualClock()
    opened: list[FakeSMBus] = []

    def fake_smbus(number: int) -> FakeSMBus:
        bus = FakeSMBus(number)
        bus.attach(ADDR, FakeBH1750(lux=5.0, clock=clock))
        opened.append(bus)
        return bus

    monkeypatch.setattr(smbus2, "SMBus", fake_smbus)
    with BH1750(i2c_bus=0) as driver:
        assert driver.read(clock.sleep)["illuminance"] == pytest.approx(5.0, abs=0.5)
    assert opened[0].bus == 0 and opened[0].closed


def test_simulated_follows_the_environment() -> None:
    env = Environment(seed=1, noise=0.0, clock=lambda: 13 * 3600.0)
    clock = VirtualClock()
    with SimulatedWorld(env, clock=clock) as world:
        driver = world.build("bh1750", {"mtreg": 31})  # 31: no saturation at noon
        assert driver.read(clock.sleep)["illuminance"] == pytest.approx(env.illuminance(), abs=2.0)


def test_two_phases_on_virtual_time() -> None:
    """start() returns the MTreg-scaled maximum; collecting earlier gives the previous result,
    exactly as the chip does (it only updates its data register when a conversion completes)."""
    bus, chip, clock = rig(lux=100.0)
    driver = BH1750(bus=bus, mtreg=138)
    wait = driver.start()
    assert wait == pytest.approx(conversion_time_s("high", 138))
    assert driver.collect() == {"illuminance": 0.0}  # power-on data register: stale
    clock.sleep(wait)
    assert driver.collect()["illuminance"] == pytest.approx(100.0, abs=0.5)
    chip.lux = 300.0
    driver.start()
    clock.sleep(wait / 4)
    assert driver.collect()["illuminance"] == pytest.approx(100.0, abs=0.5)  # stale again
    with pytest.raises(NotReadyError, match="before start"):
        BH1750(bus=bus).collect()


def test_continuous_mode_starts_once_then_returns_no_wait() -> None:
    bus, _chip, _clock = rig(lux=250.0)
    driver = BH1750(bus=bus, mode="continuous")
    assert driver.start() == pytest.approx(conversion_time_s("high"))
    assert driver.start() == 0.0


def test_timing_follows_mtreg_and_resolution_per_instance() -> None:
    """A caller pacing continuous reads by ``min_interval_s`` must never get the previous value:
    the instance's timing scales with MTreg (254: 0.66 s); the class keeps its 0.18 s defaults."""
    slow = BH1750(bus=FakeSMBus(1), mode="continuous", mtreg=254)
    timing = slow.timing
    assert timing.read_time_s == timing.min_interval_s == timing.retry.spacing_s
    assert timing.read_time_s == conversion_time_s("high", 254)
    assert timing.min_interval_s > BH1750.min_interval_s == conversion_time_s("high")
    fast = BH1750(bus=FakeSMBus(1), resolution="low")
    assert fast.timing.min_interval_s == conversion_time_s("low") < BH1750.min_interval_s
    assert "min_interval_s" not in vars(fast) and "retry" not in vars(fast)
