"""VEML7700 driver and its register-level fake: resolution for every gain/IT pair, the app note's
correction, an exact cross-check, app-note ranging across reads, saturation, every fault, options
and the simulator."""

from __future__ import annotations

import logging
import math
import random
from fractions import Fraction

import pytest

from pibridge.drivers import SimulatedWorld, read_with_retries
from pibridge.drivers.base import check_sample
from pibridge.drivers.errors import (
    BusError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.fakes.veml7700 import FakeVEML7700, linear_illuminance
from pibridge.drivers.veml7700 import (
    APP_NOTE_LADDER,
    GAINS,
    INTEGRATION_TIMES_MS,
    VEML7700,
    conf_word,
    correct,
    count_to_lux,
    ladder_for,
    resolution,
)

ADDR = 0x10
PAIRS = [(g, t) for g in GAINS for t in INTEGRATION_TIMES_MS]


def rig(lux: float = 0.0) -> tuple[FakeSMBus, FakeVEML7700, VirtualClock]:
    clock = VirtualClock()
    chip = FakeVEML7700(lux=lux, clock=clock)
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    return bus, chip, clock


# --- maths ----------------------------------------------------------------------------------------
#: hardware.md §13.3 (datasheet rev 1.7 table): IT -> lx/count at gains 2, 1, 1/4, 1/8
TABLE = {800: (0.0042, 0.0084, 0.0336, 0.0672), 400: (0.0084, 0.0168, 0.0672, 0.1344),
         200: (0.0168, 0.0336, 0.1344, 0.2688), 100: (0.0336, 0.0672, 0.2688, 0.5376),
         50: (0.0672, 0.1344, 0.5376, 1.0752), 25: (0.1344, 0.2688, 1.0752, 2.1504)}


@pytest.mark.parametrize("it_ms", INTEGRATION_TIMES_MS)
def test_resolution_table(it_ms: int) -> None:
    for gain, expected in zip((2.0, 1.0, 0.25, 0.125), TABLE[it_ms], strict=True):
        assert resolution(gain, it_ms) == pytest.approx(expected, rel=1e-14)
    assert 0xFFFF * resolution(0.125, 25) == pytest.approx(140926, abs=1)


def test_application_note_vector() -> None:
    """Count 10000 (register 0x04 = ``10 27``) at gain 1/8, 100 ms: 5376.0 lx linear, corrected
    6786.45 lx (Adafruit's compute_lux(10000, True): 6786.448634701519)."""
    assert 10000 * resolution(0.125, 100) == pytest.approx(5376.0, rel=1e-14)
    assert count_to_lux(10000, 0.125, 100) == pytest.approx(6786.448634701519, rel=1e-12)
    # the old 0.0036 base (Adafruit Arduino, ESPHome 2024-10) reads 14.3 % low: 4608.0 / 5701.02
    old = 10000 * resolution(0.125, 100) * 0.0036 / 0.0042
    assert old == pytest.approx(4608.0) and correct(old) == pytest.approx(5701.02, abs=0.01)


def exact_lux(count: int, gain: float, it_ms: int) -> Fraction:
    """Straight from the datasheet and app note, in exact arithmetic."""
    linear = count * Fraction("0.0042") * Fraction(800, it_ms) * Fraction(2) / Fraction(gain)
    if linear <= 1000:
        return linear
    a4, a3, a2, a1 = (Fraction(c) for c in ("6.0135e-13", "-9.3924e-9", "8.1488e-5", "1.0023"))
    return a4 * linear ** 4 + a3 * linear ** 3 + a2 * linear ** 2 + a1 * linear


@pytest.mark.parametrize("gain, it_ms", PAIRS)
def test_cross_check_every_pair_against_exact_fractions(gain: float, it_ms: int) -> None:
    rng = random.Random(f"{gain}-{it_ms}")
    threshold = math.floor(1000 / resolution(gain, it_ms))
    counts = {0, 1, 100, 101, 10000, 10001, 0xFFFE, 0xFFFF, threshold, threshold + 1}
    counts |= {rng.randrange(0x10000) for _ in range(200)}
    for count in sorted(counts):
        exact = exact_lux(count, gain, it_ms)
        value = count_to_lux(count, gain, it_ms)
        assert math.isclose(value, float(exact), rel_tol=1e-12, abs_tol=1e-12), count


def test_correction_applies_above_1000_linear_lux_only() -> None:
    below = math.floor(1000 / resolution(0.125, 100))   # 1860 counts = 999.9 lx
    assert count_to_lux(below, 0.125, 100) == below * resolution(0.125, 100)
    assert count_to_lux(below + 1, 0.125, 100) == correct((below + 1) * resolution(0.125, 100))


def test_configuration_words() -> None:
    assert conf_word(0.125, 100) == 0x1000   # Adafruit's init value
    assert conf_word(2.0, 800) == 0x08C0
    assert conf_word(0.25, 25) == 0x1B00
    assert conf_word(1.0, 50) == 0x0200


# --- ranging: the ladder ends where the app note's procedure ends ---------------------------------
def app_note_procedure(lux: float) -> tuple[float, int]:
    """Application note 84323's ranging as written (Adafruit's autolux order), stepping one
    setting at a time with a re-read after each step."""
    gains, times = [0.125, 0.25, 1.0, 2.0], [100, 200, 400, 800]
    gain, it_ms = 0.125, 100

    def counts() -> float:
        return lux / resolution(gain, it_ms)

    if counts() <= 100:
        for gain in gains[1:]:
            if counts() > 100:
                return gain, it_ms
        gain = 2.0
        for it_ms in times:
            if counts() > 100:
                return gain, it_ms
        return 2.0, 800
    while counts() > 10000 and it_ms > 25:
        it_ms //= 2
    return gain, it_ms


def test_ladder_target_equals_the_app_note_procedure() -> None:
    ladder = ladder_for("auto", "auto")
    for exponent in range(-300, 560):
        lux = 10 ** (exponent / 100)
        assert ladder.target(lux) == app_note_procedure(lux), lux


def test_ladder_keeps_a_count_inside_the_window() -> None:
    ladder = ladder_for("auto", "auto")
    assert ladder.next_setting(101, (0.25, 100)) is None
    assert ladder.next_setting(10000, (2.0, 800)) is None
    assert ladder.next_setting(100, (2.0, 800)) is None      # darkest end
    assert ladder.next_setting(50000, (0.125, 25)) is None   # brightest end, not saturated
    assert ladder.next_setting(0xFFFF, (2.0, 800)) == (0.125, 25)
    assert ladder.next_setting(20000, (0.125, 100)) == (0.125, 50)
    assert ladder.next_setting(40, (0.125, 100)) == (1.0, 100)
    assert [s for s in ladder_for("auto", 400).steps] == [(0.125, 400), (0.25, 400), (1.0, 400), (2.0, 400)]
    assert ladder_for(1.0, "auto").steps[ladder_for(1.0, "auto").start] == (1.0, 100)
    assert ladder_for(0.25, 50).steps == ((0.25, 50),)
    assert APP_NOTE_LADDER[0] == (0.125, 25) and APP_NOTE_LADDER[-1] == (2.0, 800)


# --- the driver on the fake -----------------------------------------------------------------------
def test_fixed_setting_read_and_wire_protocol() -> None:
    bus, chip, clock = rig(lux=300.0)
    driver = VEML7700(bus=bus, gain=0.125, integration_time=100)
    assert not bus.transfers and chip.registers[0] == 0x0001   # power-on: shut down
    wait = driver.start()
    assert wait == pytest.approx(0.0025 + 0.2 + 0.001)
    clock.sleep(wait)
    sample = check_sample(driver, driver.collect())
    assert sample["illuminance"] == pytest.approx(300.0, abs=resolution(0.125, 100))
    assert list(bus.transfers) == [
        ("i2c_rdwr.write", ADDR, None, [0x03, 0x00, 0x00]),          # PSM off
        ("i2c_rdwr.write", ADDR, None, [0x00, 0x00, 0x10]),          # ALS_CONF 0x1000, LSB first
        ("read_i2c_block_data", ADDR, 0x00, 2),                      # ALS_CONF check
        ("read_i2c_block_data", ADDR, 0x04, 2)]                      # ALS count
    assert driver.start() == 0.0   # configured: the chip converts continuously


def test_collecting_before_the_first_integration_gets_the_power_on_count() -> None:
    bus, chip, clock = rig(lux=300.0)
    hasty = VEML7700(bus=bus, gain=0.25, integration_time=100)
    hasty.start()
    assert hasty.collect() == {"illuminance": 0.0}   # what the chip holds then
    clock.sleep(0.2035)
    assert hasty.collect()["illuminance"] == pytest.approx(300.0, abs=0.3)
    assert chip.integrations >= 1


def test_auto_ranging_from_dark_night_to_full_sun() -> None:
    bus, chip, clock = rig()
    driver = VEML7700(bus=bus)
    assert driver.timing.retry.attempts == 3 and driver.timing.read_time_s == pytest.approx(1.6035)
    for lux, setting in [(0.0, (2.0, 800)), (0.05, (2.0, 800)), (3.0, (2.0, 800)), (20.0, (2.0, 800)),
                         (60.0, (0.125, 100)), (800.0, (0.125, 100)), (20000.0, (0.125, 25)),
                         (100000.0, (0.125, 25)),
                         (12.0, (1.0, 100)), (0.2, (2.0, 800))]:
        chip.lux = lux
        clock.sleep(driver.timing.min_interval_s)
        value = read_with_retries(driver, clock.sleep)["illuminance"]
        assert driver.setting == setting, lux
        step = resolution(*setting)
        assert value == pytest.approx(lux, abs=2 * step, rel=2e-4), lux


def test_one_range_change_costs_one_attempt() -> None:
    bus, chip, clock = rig(lux=400.0)
    driver = VEML7700(bus=bus)
    clock.sleep(driver.start())
    driver.collect()                    # 744 counts at 1/8, 100 ms: a reading
    chip.lux = 30.0
    clock.sleep(0.1)
    with pytest.raises(NotReadyError, match=r"count 56 at gain 0.125, 100 ms; re-ranged to gain 0.25, 100"):
        driver.collect()
    wait = driver.start()               # the new setting, and its settle time
    assert chip.conf_writes[-1] == conf_word(0.25, 100) and wait == pytest.approx(0.2035)
    clock.sleep(wait)
    assert driver.collect()["illuminance"] == pytest.approx(30.0, abs=0.3)


def test_saturation_is_an_out_of_range_error_not_a_number() -> None:
    # the photodiode's linear range ends at 65535 counts x 2.1504 lx (140926 lx linear), which the
    # app note's correction maps far beyond daylight: only an absurd light saturates gain 1/8, 25 ms
    bus, chip, clock = rig(lux=1e9)
    driver = VEML7700(bus=bus)
    with pytest.raises(ImplausibleValueError, match=r"saturated \(65535\) at gain 0.125, 25 ms: above"):
        read_with_retries(driver, clock.sleep)
    fixed = VEML7700(bus=bus, gain=2, integration_time=800)
    chip.lux = 1000.0
    with pytest.raises(ImplausibleValueError, match="use a lower gain"):
        read_with_retries(fixed, clock.sleep)


@pytest.mark.parametrize("given, problem", [
    ({"gain": 0.3}, "option gain: 0.3 is not one of 0.125, 0.25, 1, 2, 'auto'"),
    ({"gain": "bright"}, "option gain: 'bright' is not a number or 'auto'"),
    ({"gain": True}, "option gain: True is not a number or 'auto'"),
    ({"integration_time": 30}, "option integration_time: 30 is not one of 25, 50, 100, 200, 400, 800, 'au"),
    ({"integration_time": 100.5}, "option integration_time: 100.5 is not one of"),
    ({"address": 0x11}, "option address: 0x11 is not one of 0x10"),
])
def test_option_problems(given: dict, problem: str) -> None:
    _config, problems = VEML7700.validate(given)
    assert len(problems) == 1 and problems[0].message.startswith(problem), problems


@pytest.mark.parametrize("given, expected", [
    ({"gain": "0.25", "integration_time": "200"}, (0.25, 200)),
    ({"gain": 1, "integration_time": 100.0}, (1.0, 100)),
    ({"gain": "AUTO", "integration_time": 50}, ("auto", 50)), ({}, ("auto", "auto"))])
def test_options_accept_numbers_text_and_auto(given: dict, expected: tuple) -> None:
    config, problems = VEML7700.validate(given)
    assert problems == [] and (config["gain"], config["integration_time"]) == expected


def test_timing_follows_the_options() -> None:
    fixed = VEML7700.timing_for(VEML7700.check_options({"gain": 1, "integration_time": 25}))
    assert fixed.read_time_s == pytest.approx(0.0535) and fixed.min_interval_s == 0.025
    assert fixed.retry.attempts == 2


# --- faults ---------------------------------------------------------------------------------------
def test_lost_configuration_is_said_once_and_restored(caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig(lux=500.0)
    driver = VEML7700(bus=bus)
    read_with_retries(driver, clock.sleep)
    chip.power_glitch()
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.veml7700"):
        with pytest.raises(NotReadyError, match=r"lost its configuration \(ALS_CONF 0x0001\)"):
            driver.read(clock.sleep)
        assert driver.read(clock.sleep)["illuminance"] == pytest.approx(500.0, abs=0.6)
        clock.sleep(0.2)
        driver.read(clock.sleep)
    assert [r.getMessage() for r in caplog.records] == [
        "VEML7700 at 0x10: configuration register reads 0x0001, not 0x1000 (power glitch?); "
        "configuring again"]


def fault_nack(bus: FakeSMBus, chip: FakeVEML7700) -> None:
    chip.fail_next(1)


def fault_gone(bus: FakeSMBus, chip: FakeVEML7700) -> None:
    bus.detach(ADDR)


def fault_glitch(bus: FakeSMBus, chip: FakeVEML7700) -> None:
    chip.power_glitch()


@pytest.mark.parametrize("fault, error, match", [
    (fault_nack, BusError, "configuration read failed"),
    (fault_gone, BusError, "EREMOTEIO"),
    (fault_glitch, NotReadyError, "lost its configuration"),
])
def test_fault_table(fault, error, match) -> None:
    bus, chip, clock = rig(lux=2000.0)
    driver = VEML7700(bus=bus)
    read_with_retries(driver, clock.sleep)
    fault(bus, chip)
    with pytest.raises(error, match=match) as caught:
        driver.read(clock.sleep)
    assert isinstance(caught.value, SensorError) and "\n" not in str(caught.value)
    bus.attach(ADDR, chip)
    assert read_with_retries(driver, clock.sleep)["illuminance"] == pytest.approx(2000.0, rel=1e-3)
    assert chip.registers[0] == conf_word(*driver.setting)


def test_absent_chip() -> None:
    with pytest.raises(DeviceNotFoundError, match="nothing answers"):
        VEML7700(bus=FakeSMBus(1)).read(lambda s: None)


def test_fake_threshold_flags_clear_on_read() -> None:
    bus, _chip, clock = rig(lux=1000.0)
    bus.write_i2c_block_data(ADDR, 0x01, [0x10, 0x00])                      # ALS_WH = 16
    bus.write_i2c_block_data(ADDR, 0x00, list(conf_word(0.125, 100).to_bytes(2, "little")))
    bus.write_i2c_block_data(ADDR, 0x00, [0x02, 0x10])                      # + ALS_INT_EN
    clock.sleep(0.11)
    assert bus.read_word_data(ADDR, 0x06) == 0x4000
    assert bus.read_word_data(ADDR, 0x06) == 0x0000


def test_fake_inverts_the_correction() -> None:
    for lux in (1100.0, 5000.0, 60000.0):
        count = round(linear_illuminance(lux) / resolution(0.125, 25))
        one_count = correct(linear_illuminance(lux) + resolution(0.125, 25)) - lux
        assert count_to_lux(count, 0.125, 25) == pytest.approx(lux, abs=one_count)


def test_simulator_reads_the_environment() -> None:
    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world:
        driver = world.build("veml7700")
        value = read_with_retries(driver, world.clock.sleep)["illuminance"]
        expected = world.environment.illuminance()
        assert value >= 0 and (expected == 0 or value == pytest.approx(expected, rel=0.2))
