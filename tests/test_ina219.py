"""INA219 driver and its register-level fake: calibration (datasheet §8.5), conversions
(hardware.md §14.5 vectors and an exact cross-check), the wire, faults, options, simulation."""

from __future__ import annotations

import logging
import random
import re
from fractions import Fraction

import pytest

from pibridge.drivers import ina219
from pibridge.drivers.base import check_sample, read_with_retries
from pibridge.drivers.errors import (
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.fakes.ina219 import FakeINA219
from pibridge.drivers.ina219 import (
    INA219,
    bus_volts,
    calibration_value,
    config_word,
    current_amps,
    current_lsb_na,
    power_watts,
    shunt_volts,
)
from pibridge.drivers.simulation import Environment, SimulatedWorld

ADDR = 0x40


def rig(volts: float = 12.0, amps: float = 0.2, shunt_ohms: float = 0.1, **options):
    clock = VirtualClock()
    state = {"volts": volts, "amps": amps}
    chip = FakeINA219(shunt_ohms=shunt_ohms, clock=clock, source=lambda: (state["volts"], state["amps"]))
    bus = FakeSMBus(1)
    bus.attach(options.get("address", ADDR), chip)
    return INA219(bus=bus, shunt_ohms=shunt_ohms, **options), bus, chip, clock, state


# --- datasheet maths (hardware.md §14.3, §14.5) --------------------------------------------------
def test_hardware_md_vectors() -> None:
    lsb = current_lsb_na(3.2, 0.1)
    assert lsb == 100_000                        # 0.1 mA: 3.2 A / 2^15 = 97.7 µA, rounded up
    assert calibration_value(lsb, 0.1) == 4096   # written as 05 10 00
    assert config_word(32) == 0x399F == ina219.CONFIG_RESET
    assert shunt_volts(0x07D0) == 0.02
    assert shunt_volts(0xF830) == -0.02
    assert current_amps(0x07D0, Fraction(lsb, 10**9)) == 0.2
    assert bus_volts(0x5DC2) == 12.0             # 3000 × 4 mV, CNVR set
    assert power_watts(0x04B0, Fraction(lsb, 10**9)) == 2.4       # 1200 × 2 mW
    assert shunt_volts(0x7D00) == 0.32 and shunt_volts(0x8300) == -0.32


@pytest.mark.parametrize("max_current, shunt, lsb, cal", [
    (3.2, 0.1, 100_000, 4096), (0.4, 0.1, 20_000, 20480), (2.0, 0.01, 100_000, 40960),
    (15.0, 0.02, 500_000, 4096), (0.32, 1.0, 10_000, 4096),
    (0.001, 0.1, 10_000, 40960),   # 31 nA would need Cal 8 192 000: the LSB steps up until it fits
    (1.0, 0.1, 50_000, 8192), (0.5, 0.05, 20_000, 40960), (3.0, 0.1, 100_000, 4096),
    (0.03, 1.0, 1_000, 40960),
    (0.1, 0.33, 5_000, 24824),    # trunc(24824.24…): the datasheet truncates
    (0.03, 10.0, 1_000, 4096),    # Adafruit's 16V_4mA preset: 0.04096 / (1000 * 1e-9 * 10.0) is 4095.999…
])
def test_calibration_choice(max_current: float, shunt: float, lsb: int, cal: int) -> None:
    assert current_lsb_na(max_current, shunt) == lsb
    assert calibration_value(lsb, shunt) == cal
    assert lsb * 1e-9 >= max_current / 32768      # fine enough for max_current
    exact = Fraction(4096, 100_000) / (Fraction(lsb, 10**9) * Fraction(repr(shunt)))
    assert cal == int(exact) & 0xFFFE             # trunc, bit 0 clear
    assert cal <= 0xFFFE


def exact_reading(shunt: int, bus: int, current: int, power: int, lsb_na: int) -> dict[str, Fraction]:
    """An independent reading of datasheet §8.6: two's complement by hand, exact fractions."""
    def s16(word: int) -> int:
        return word - (1 << 16) if word >> 15 else word
    lsb = Fraction(lsb_na, 10**9)
    return {"shunt_voltage": s16(shunt) * Fraction(1, 100_000), "bus_voltage": (bus >> 3) * Fraction(4, 1000),
            "current": s16(current) * lsb, "power": power * 20 * lsb}


def test_cross_check_against_exact_fractions() -> None:
    """Generated registers with the corners (0, ±1, full scale both ways, negative current):
    every value is the exact datasheet value correctly rounded; power is never negative."""
    rng = random.Random(219)
    corners = [0x0000, 0x0001, 0xFFFF, 0x7FFF, 0x8000, 0x7D00, 0x8300, 0x07D0, 0xF830]
    words = corners + [rng.randrange(0x10000) for _ in range(150)]
    for lsb in (100_000, 20_000, 500_000, 10_000, 5):
        for word in words:
            got = {"shunt_voltage": shunt_volts(word), "bus_voltage": bus_volts(word),
                   "current": current_amps(word, Fraction(lsb, 10**9)),
                   "power": power_watts(word, Fraction(lsb, 10**9))}
            want = exact_reading(word, word, word, word, lsb)
            assert got == {k: float(v) for k, v in want.items()}, (lsb, hex(word))
            assert got["power"] >= 0


def test_current_and_power_use_the_lsb_of_the_calibration_the_chip_holds() -> None:
    """0.015 Ω for 10 A: round LSB 0.5 mA, Cal trunc(5461.33) = 5461, bit 0 cleared: 5460. The
    chip's count is then 0.04096 / (5460 · 0.015) A, which the driver reports (the round 0.5 mA
    would read 0.024 % low); checked against an independent exact computation."""
    driver, _bus, chip, clock, _state = rig(volts=24.0, amps=9.5, shunt_ohms=0.015, max_current=10.0)
    assert driver.current_lsb_na == 500_000 and driver.calibration == 5460
    sample = driver.read(clock.sleep)
    assert chip.calibration == 5460
    lsb = Fraction(4096, 100_000) / (5460 * Fraction(15, 1000))        # A per count, by hand
    current_reg, power_reg = chip.current, chip.power                  # the registers the driver read
    assert current_reg > 0 and power_reg > 0
    assert sample["current"] == float(current_reg * lsb)
    assert sample["power"] == float(power_reg * 20 * lsb)
    assert sample["current"] == pytest.approx(9.5, abs=float(lsb))   # what flows, to one count
    assert sample["current"] != float(current_reg * Fraction(5, 10_000))


# --- the driver on the fake -------------------------------------------------------------------
def test_read_and_wire() -> None:
    driver, bus, chip, clock, _ = rig()
    assert not bus.transfers
    wait = driver.start()
    assert wait == driver.timing.read_time_s > ina219.CONVERSION_MAX_S
    assert list(bus.transfers) == [("i2c_rdwr.write", ADDR, None, [0x00, 0x39, 0x9F]),
                                   ("i2c_rdwr.write", ADDR, None, [0x05, 0x10, 0x00])]
    clock.sleep(wait)
    sample = check_sample(driver, driver.collect())
    assert sample == {"bus_voltage": 12.0, "shunt_voltage": 0.02, "current": 0.2, "power": 2.4}
    assert [t[2] for t in list(bus.transfers)[2:]] == [0x02, 0x01, 0x04, 0x03]   # power last: clears CNVR
    assert chip.calibration == 4096
    clock.sleep(0.01)
    assert driver.start() == 0.0          # configured once; continuous mode
    driver.collect()
    assert len(bus.transfers) == 10


def test_negative_current_positive_power() -> None:
    """A solar panel charging the battery: the flow reverses, current is negative, power not."""
    driver, _, _, clock, _ = rig(volts=13.1, amps=-1.5)
    sample = driver.read(clock.sleep)
    assert sample["current"] == pytest.approx(-1.5) and sample["shunt_voltage"] == pytest.approx(-0.15)
    assert sample["power"] == pytest.approx(13.1 * 1.5, rel=0.001) and sample["power"] > 0


def test_16_volt_range_and_zero_current() -> None:
    driver, bus, chip, clock, _ = rig(volts=5.0, amps=0.0, bus_range=16)
    sample = driver.read(clock.sleep)
    assert chip.config == 0x199F
    assert sample == {"bus_voltage": 5.0, "shunt_voltage": 0.0, "current": 0.0, "power": 0.0}
    assert bus.transfers[-1][2] == ina219.REG_CALIBRATION   # zero current: the calibration is checked


def test_collect_too_early_is_not_ready_then_reconfigures() -> None:
    driver, bus, _, clock, _ = rig()
    driver.read(clock.sleep)
    with pytest.raises(NotReadyError, match="CNVR"):   # no conversion since the power read
        driver.collect()
    wait = driver.start()
    assert wait > 0 and bus.transfers[-1][3][0] == ina219.REG_CALIBRATION   # configured again
    clock.sleep(wait)
    assert driver.collect()["current"] == pytest.approx(0.2)


# --- faults ----------------------------------------------------------------------------------------
def test_nothing_at_the_address() -> None:
    with pytest.raises(DeviceNotFoundError, match="INA219 at 0x40: nothing answers"):
        INA219(bus=FakeSMBus(1)).read(VirtualClock().sleep)


def test_nack_then_recovery() -> None:
    driver, _, chip, clock, _ = rig()
    driver.read(clock.sleep)
    clock.sleep(0.01)
    chip.fail_next(1)
    with pytest.raises(BusError):
        driver.read(clock.sleep)
    clock.sleep(0.01)
    assert driver.read(clock.sleep)["current"] == pytest.approx(0.2)


def test_device_gone_and_back_power_cycled() -> None:
    driver, bus, chip, clock, _ = rig()
    driver.read(clock.sleep)
    bus.detach(ADDR)
    with pytest.raises(BusError):
        driver.read(clock.sleep)
    chip.brownout()            # it comes back from a power cycle: Cal 0
    bus.attach(ADDR, chip)
    assert driver.read(clock.sleep)["current"] == pytest.approx(0.2)   # configured again after the error
    assert chip.calibration == 4096


def test_lost_calibration_is_resent_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """A brown-out zeroes Cal: current and power read 0. The driver sees it, re-sends config and
    calibration, says so in one log line, and the retry reads the right values."""
    driver, _, chip, clock, _ = rig()
    driver.read(clock.sleep)
    chip.brownout()
    clock.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.ina219"):
        with pytest.raises(NotReadyError, match="calibration lost"):
            driver.read(clock.sleep)
        assert chip.calibration == 4096
        clock.sleep(driver.timing.retry.spacing_s)
        assert driver.read(clock.sleep)["current"] == pytest.approx(0.2)
    assert len([r for r in caplog.records if "calibration register reads 0x0000" in r.message]) == 1
    chip.brownout()
    clock.sleep(1.0)
    assert read_with_retries(driver, clock.sleep)["power"] == pytest.approx(2.4)


def test_overflow_is_a_typed_error_then_recovers() -> None:
    driver, _, chip, clock, state = rig(max_current=1.0)   # LSB 50 µA: ±1.6 A fits
    state["amps"] = 2.5
    with pytest.raises(ImplausibleValueError, match="overflow"):
        driver.read(clock.sleep)
    state["amps"] = 0.5
    clock.sleep(0.01)
    assert driver.read(clock.sleep)["current"] == pytest.approx(0.5)
    chip.force_overflow = True
    clock.sleep(0.01)
    with pytest.raises(ImplausibleValueError):
        driver.read(clock.sleep)


def test_conversion_never_ready_then_recovers() -> None:
    driver, _, chip, clock, _ = rig()
    chip.stalled = True
    with pytest.raises(NotReadyError, match="CNVR"):
        read_with_retries(driver, clock.sleep)
    chip.stalled = False
    assert read_with_retries(driver, clock.sleep)["bus_voltage"] == 12.0


def test_chip_reset_by_rst_bit_restores_power_on_values() -> None:
    clock = VirtualClock()
    chip = FakeINA219(clock=clock)
    chip.i2c_write(bytes([0x05, 0x10, 0x01]))
    assert chip.calibration == 0x1000          # bit 0 is always 0
    chip.i2c_write(bytes([0x00, 0x80, 0x00]))
    assert chip.config == 0x399F and chip.calibration == 0


# --- options ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, needle", [
    ({"max_current": 5.0},
     "option max_current: 5 A through 0.1 Ω is 500 mV, beyond the shunt input's ±320 mV"),
    ({"shunt_ohms": 0.0}, "option shunt_ohms: 0 is below the minimum 0.0001"),
    ({"bus_range": 24}, "option bus_range: '24' is not one of 16, 32"),
    ({"address": 0x50}, "option address: 0x50 is not one of 0x40"),
])
def test_bad_options(options: dict, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(needle)):
        INA219.check_options({k: str(v) if k == "bus_range" else v for k, v in options.items()})


# --- simulation ----------------------------------------------------------------------------------
def test_simulated_pump_and_solar_panel() -> None:
    t = [100 * 86400 + 12 * 3600 + 60.0]   # noon, the pump's 10 minutes
    env = Environment(seed=5, clock=lambda: t[0])
    with SimulatedWorld(env, clock=VirtualClock()) as world:
        meter = world.build("ina219")
        noon = check_sample(meter, meter.read(world.clock.sleep))
        assert 11.5 < noon["bus_voltage"] < 13.5
        t[0] += 1200.0    # pump off, sun: charging
        world.clock.sleep(0.01)
        charging = meter.read(world.clock.sleep)
        assert charging["current"] < 0 < charging["power"]
        assert noon["current"] > charging["current"]
        t[0] = 100 * 86400 + 1 * 3600 + 60.0   # night, pump on
        world.clock.sleep(0.01)
        night = meter.read(world.clock.sleep)
        assert night["current"] == pytest.approx(1.2, abs=0.05) and night["power"] > 0
        for key in ("bus_voltage", "current", "power"):
            assert isinstance(night[key], float)
