"""SHT3x driver and its command-level fake: datasheet maths and vectors, an exact cross-check,
the two phases on virtual time, periodic mode left by someone else, every fault, scan telling
SHT3x and SHT4x apart, and the simulator."""

from __future__ import annotations

import logging
import random
from fractions import Fraction

import pytest
from smbus2 import i2c_msg

from pibridge.cli import driver_commands
from pibridge.drivers import SimulatedWorld, read_with_retries
from pibridge.drivers.base import CollectAgain, check_sample
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    DeviceNotFoundError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.fakes.sensirion import pack_words
from pibridge.drivers.fakes.sht3x import FakeSHT3x
from pibridge.drivers.fakes.sht4x import FakeSHT4x
from pibridge.drivers.sht3x import SHT3x, convert, ticks_to_celsius, ticks_to_humidity

ADDR = 0x44


def rig(**fake: object) -> tuple[FakeSMBus, FakeSHT3x, VirtualClock]:
    clock = VirtualClock()
    chip = FakeSHT3x(clock=clock, **fake)  # type: ignore[arg-type]
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    return bus, chip, clock


# --- maths ----------------------------------------------------------------------------------------
def test_vector_25_degrees_50_percent() -> None:
    temperature, humidity = convert(bytes.fromhex("66 66 93 80 00 A2"))
    assert temperature == 25.0
    assert humidity == pytest.approx(50.000763, abs=5e-7)   # Adafruit: 50.000762951094835


def test_corners_and_bad_frames() -> None:
    assert convert(pack_words(0, 0)) == (-45.0, 0.0)
    assert convert(pack_words(0xFFFF, 0xFFFF)) == (130.0, 100.0)
    with pytest.raises(BadDataError, match="CRC mismatch on word 0"):
        convert(b"\xff" * 6)     # 0xFFFF fill (floating SDA)
    with pytest.raises(BadDataError, match="short read"):
        convert(b"\x66\x66\x93")


def test_cross_check_against_exact_fractions() -> None:
    rng = random.Random(3)
    raws = [0, 1, 0x3FFF, 0x4000, 16851, 16852, 0x8000, 0xFFFE, 0xFFFF]
    raws += [rng.randrange(0x10000) for _ in range(2000)]
    for raw in raws:
        exact_t = Fraction(-45) + Fraction(175 * raw, 65535)
        exact_rh = Fraction(100 * raw, 65535)
        assert abs(ticks_to_celsius(raw) - float(exact_t)) < 1e-12, raw
        assert abs(ticks_to_humidity(raw) - float(exact_rh)) < 1e-12, raw
    assert ticks_to_celsius(16851) < 0 < ticks_to_celsius(16852)


def test_one_temperature_formula_for_the_sensirion_chips_correctly_rounded() -> None:
    """SHT3x, SHT4x and SCD4x share ``T = -45 + 175·S/65535`` (`sensirion.ticks_to_celsius`):
    every one of the 65536 words gives the float nearest the exact fraction."""
    from pibridge.drivers import scd4x, sensirion, sht4x

    assert ticks_to_celsius is sensirion.ticks_to_celsius is sht4x.ticks_to_celsius
    for raw in range(0x10000):
        exact = float(Fraction(-45) + Fraction(175 * raw, 65535))
        assert sensirion.ticks_to_celsius(raw) == exact, raw
        assert scd4x.convert_measurement(0, raw, 0)[1] == exact, raw


def test_integer_form_is_within_its_known_bias() -> None:
    for raw in range(0, 0x10000, 89):
        assert 0 <= ticks_to_humidity(raw) * 1000 - ((12500 * raw) >> 13) < 100000 / 65536 + 1


# --- the driver on the fake -----------------------------------------------------------------------
def test_read_and_wire_protocol() -> None:
    bus, _chip, clock = rig(celsius=25.0, humidity=50.0)
    driver = SHT3x(bus=bus)
    assert not bus.transfers
    start = clock()
    sample = check_sample(driver, driver.read(clock.sleep))
    assert sample == {"temperature": pytest.approx(25.0, abs=0.003),
                      "humidity": pytest.approx(50.0, abs=0.001)}
    assert list(bus.transfers) == [("i2c_rdwr.write", ADDR, None, [0x24, 0x00]),
                                   ("i2c_rdwr.read", ADDR, None, 6)]
    assert clock() - start == pytest.approx(0.0155 + 0.0006)


@pytest.mark.parametrize("repeatability, command", [("high", 0x2400), ("medium", 0x240B), ("low", 0x2416)])
def test_repeatabilities(repeatability: str, command: int) -> None:
    bus, chip, clock = rig()
    driver = SHT3x(bus=bus, repeatability=repeatability)
    driver.read(clock.sleep)
    assert chip.commands == [command]


def test_too_early_is_not_ready() -> None:
    bus, _chip, clock = rig()
    driver = SHT3x(bus=bus)
    driver.read(clock.sleep)
    driver.start()
    clock.sleep(0.005)
    with pytest.raises(NotReadyError, match="still running"):
        driver.collect()


def test_fake_status_register_and_commands() -> None:
    bus, chip, _clock = rig()

    def status() -> int:
        bus.i2c_rdwr(i2c_msg.write(ADDR, [0xF3, 0x2D]))
        msg = i2c_msg.read(ADDR, 3)
        bus.i2c_rdwr(msg)
        data = bytes(msg)
        assert data == pack_words((data[0] << 8) | data[1])
        return (data[0] << 8) | data[1]

    assert status() == 0x8010
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x30, 0x41]))
    assert status() == 0x0000
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x30, 0x6D]))
    assert status() == 0x2000
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x27, 0x3A]))   # Sensirion's embedded 10 mps/low code
    assert status() & 0x0002 and chip.periodic_period_s is None


def test_periodic_mode_fetch() -> None:
    bus, _chip, clock = rig(celsius=30.0)
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x21, 0x30]))   # 1 mps high
    clock.sleep(1.01)
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0xE0, 0x00]))
    msg = i2c_msg.read(ADDR, 6)
    bus.i2c_rdwr(msg)
    assert convert(bytes(msg))[0] == pytest.approx(30.0, abs=0.003)
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0xE0, 0x00]))   # the fetch cleared it: no new data
    with pytest.raises(OSError):
        bus.i2c_rdwr(i2c_msg.read(ADDR, 6))


def test_chip_left_in_periodic_mode_is_stopped_by_the_driver(caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig(celsius=19.0)
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x27, 0x37]))   # another program: 10 mps high
    driver = SHT3x(bus=bus)
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.sht3x"):
        for _ in range(2):   # the single-shot command is refused, so nothing arrives
            with pytest.raises(NotReadyError):
                driver.read(clock.sleep)
        with pytest.raises(NotReadyError, match="break sent"):
            driver.read(clock.sleep)
        assert driver.read(clock.sleep)["temperature"] == pytest.approx(19.0, abs=0.003)
    assert chip.periodic_period_s is None and 0x3093 in chip.commands
    assert [r.getMessage() for r in caplog.records] == [
        "SHT3x at 0x44: break (stop periodic mode) after 2 measurements that never arrived"]


def test_after_a_crc_error_break_then_soft_reset_with_its_wait() -> None:
    bus, chip, clock = rig(celsius=18.0)
    driver = SHT3x(bus=bus)
    driver.read(clock.sleep)
    chip.corrupt_crc = 1
    with pytest.raises(BadDataError):
        driver.read(clock.sleep)
    sent = len(chip.commands)
    clock.sleep(driver.start())                                   # the break
    step = driver.collect()
    assert step == CollectAgain(0.001)                            # the status command's reply
    clock.sleep(step.wait_s)
    step = driver.collect()
    assert step == CollectAgain(0.0015)                           # the soft reset's 1.5 ms
    assert chip.commands[sent:] == [0x3093, 0xF32D, 0x30A2]       # no heater-off: it was off
    clock.sleep(step.wait_s)
    with pytest.raises(NotReadyError, match="break sent, then soft reset"):
        driver.collect()
    assert driver.read(clock.sleep)["temperature"] == pytest.approx(18.0, abs=0.003)
    assert chip.status == 0x8010                                  # the reset's power-on status


def test_a_heater_left_on_is_switched_off_in_the_recovery(caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig()
    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x30, 0x6D]))              # another program: heater on
    assert chip.status & 0x2000
    driver = SHT3x(bus=bus)
    chip.corrupt_crc = 1
    with pytest.raises(BadDataError):
        driver.read(clock.sleep)
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.sht3x"), \
            pytest.raises(NotReadyError, match="soft reset"):
        driver.read(clock.sleep)
    assert chip.commands[-4:] == [0x3093, 0xF32D, 0x3066, 0x30A2]
    assert not chip.status & 0x2000
    assert [r.getMessage() for r in caplog.records] == [
        "SHT3x at 0x44: break (stop periodic mode) after a CRC error",
        "SHT3x at 0x44: the heater was on (status 0xa010): switched off"]
    assert read_with_retries(driver, clock.sleep)["humidity"] == pytest.approx(50.0, abs=0.001)


# --- faults ---------------------------------------------------------------------------------------
def fault_crc(bus: FakeSMBus, chip: FakeSHT3x) -> None:
    chip.corrupt_crc = 1


def fault_ffff(bus: FakeSMBus, chip: FakeSHT3x) -> None:
    chip.fill_ffff = True


def fault_nack(bus: FakeSMBus, chip: FakeSHT3x) -> None:
    chip.fail_next(1)


def fault_stuck(bus: FakeSMBus, chip: FakeSHT3x) -> None:
    chip.stuck_busy = True


def fault_glitch(bus: FakeSMBus, chip: FakeSHT3x) -> None:
    chip.power_glitch()


def fault_gone(bus: FakeSMBus, chip: FakeSHT3x) -> None:
    bus.detach(ADDR)


@pytest.mark.parametrize("fault, error, match", [
    (fault_crc, BadDataError, "CRC mismatch on word 1"),
    (fault_ffff, BadDataError, "CRC mismatch on word 0"),
    (fault_nack, BusError, "measurement command failed"),
    (fault_stuck, NotReadyError, "still running"),
    (fault_glitch, BusError, "measurement command failed"),
    (fault_gone, BusError, "EREMOTEIO"),
])
def test_fault_table(fault, error, match) -> None:
    bus, chip, clock = rig(celsius=22.0, humidity=40.0)
    driver = SHT3x(bus=bus)
    driver.read(clock.sleep)
    fault(bus, chip)
    with pytest.raises(error, match=match) as caught:
        driver.read(clock.sleep)
    assert isinstance(caught.value, SensorError) and "\n" not in str(caught.value)
    chip.stuck_busy = chip.fill_ffff = False
    bus.attach(ADDR, chip)
    assert read_with_retries(driver, clock.sleep)["humidity"] == pytest.approx(40.0, abs=0.001)
    assert driver.read(clock.sleep)["temperature"] == pytest.approx(22.0, abs=0.003)


def test_absent_chip() -> None:
    with pytest.raises(DeviceNotFoundError, match="nothing answers"):
        SHT3x(bus=FakeSMBus(1)).read(lambda s: None)


# --- scan: SHT3x and SHT4x share 0x44/0x45 and are told apart by how they answer ------------------
def test_scan_tells_sht3x_from_sht4x() -> None:
    clock = VirtualClock()
    bus = FakeSMBus(1)
    bus.attach(0x44, FakeSHT4x(clock=clock, serial=0x11112222))
    bus.attach(0x45, FakeSHT3x(clock=clock, serial=0x33334444))
    assert driver_commands.scan_i2c_bus(bus, sleep=clock.sleep) == [(0x44, "SHT4x (serial 0x11112222)"),
                                                              (0x45, "SHT3x (serial 0x33334444)")]
    swapped = FakeSMBus(1)
    swapped.attach(0x44, FakeSHT3x(clock=clock, serial=0x55556666))
    swapped.attach(0x45, FakeSHT4x(clock=clock, serial=0x77778888))
    assert driver_commands.scan_i2c_bus(swapped, sleep=clock.sleep) == [(0x44, "SHT3x (serial 0x55556666)"),
                                                                  (0x45, "SHT4x (serial 0x77778888)")]


def test_simulator_reads_the_environment() -> None:
    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world:
        sample = read_with_retries(world.build("sht3x", {"repeatability": "medium"}), world.clock.sleep)
        assert -10 < sample["temperature"] < 45 and 0 <= sample["humidity"] <= 100
