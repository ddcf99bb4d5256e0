"""SCD40/SCD41 driver and its command-level fake: the datasheet's vectors, the maths against exact
fractions, the set-up and reading sequences on the wire, pressure compensation, every fault."""

from __future__ import annotations

import logging
import random
from fractions import Fraction

import pytest

from pibridge.drivers import CollectAgain, read_once
from pibridge.drivers.base import check_sample
from pibridge.drivers.crc import crc8_sensirion
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.fakes.scd4x import FakeSCD4x, encode_words
from pibridge.drivers.scd4x import (
    CMD_GET_DATA_READY,
    CMD_GET_SENSOR_VARIANT,
    CMD_GET_SERIAL_NUMBER,
    CMD_MEASURE_SINGLE_SHOT,
    CMD_READ_MEASUREMENT,
    CMD_REINIT,
    CMD_SET_ALTITUDE,
    CMD_SET_AMBIENT_PRESSURE,
    CMD_SET_ASC_ENABLED,
    CMD_SET_TEMPERATURE_OFFSET,
    CMD_START_LOW_POWER_PERIODIC,
    CMD_START_PERIODIC,
    CMD_STOP_PERIODIC,
    DataReadyStuckError,
    MeasurementStoppedError,
    SCD4x,
    convert_measurement,
    data_ready,
    frc_correction,
    pressure_word,
    temperature_offset_celsius,
    temperature_offset_word,
    variant_name,
    words_from_frame,
    write_frame,
)
from pibridge.drivers.simulation import Environment, SimulatedWorld

ADDR = 0x62
SETTINGS = {CMD_SET_TEMPERATURE_OFFSET, CMD_SET_ALTITUDE, CMD_SET_ASC_ENABLED, CMD_STOP_PERIODIC,
            CMD_START_PERIODIC, CMD_GET_SERIAL_NUMBER}


def rig(variant: str = "SCD41", values: tuple[float, float, float] = (612.0, 21.5, 48.0), **options):
    clock = VirtualClock()
    chip = FakeSCD4x(source=lambda: values, clock=clock, variant=variant)
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    driver = SCD4x(bus=bus, clock=clock, **options)
    return bus, chip, clock, driver


def read(driver: SCD4x, clock: VirtualClock) -> dict:
    return check_sample(driver, read_once(driver, clock.sleep))


def running(**options):
    """A driver whose set-up reading is done and whose first measurement is in the chip."""
    bus, chip, clock, driver = rig(**options)
    with pytest.raises(NotReadyError, match="first measurement is due in 5 s"):
        read(driver, clock)
    clock.sleep(5.0)
    return bus, chip, clock, driver


# --- the datasheet's vectors (hardware.md §7.4, §11.6) ---------------------------------------------
@pytest.mark.parametrize("word, crc", [(b"\xbe\xef", 0x92), (b"\x00\x00", 0x81), (b"\xff\xff", 0xAC),
                                       (b"\x66\x66", 0x93), (b"\x80\x00", 0xA2), (b"\x00\x01", 0xB0)])
def test_crc_vectors(word: bytes, crc: int) -> None:
    assert crc8_sensirion(word) == crc


def test_read_measurement_vector() -> None:
    words = words_from_frame(bytes.fromhex("01F4336667A25EB93C"), 3)
    co2, temperature, humidity = convert_measurement(*words)
    assert co2 == 500.0
    assert temperature == pytest.approx(25.002670, abs=5e-7)
    assert humidity == pytest.approx(37.001602, abs=5e-7)
    # Adafruit's figures (65535 divisor) agree to well below a float's resolution of the datasheet value
    assert temperature == pytest.approx(25.002670328831925, rel=1e-15)
    assert humidity == pytest.approx(37.00160219729916, rel=1e-15)


def test_data_ready_vectors() -> None:
    assert data_ready(words_from_frame(bytes.fromhex("800604"), 1)[0])
    assert not data_ready(words_from_frame(bytes.fromhex("8000A2"), 1)[0])
    assert data_ready(0x0001) and data_ready(0x07FF) and not data_ready(0xF800)


def test_write_vectors() -> None:
    offset = temperature_offset_word(5.4)
    assert write_frame(CMD_SET_TEMPERATURE_OFFSET, offset) == bytes.fromhex("241D07E648")
    assert write_frame(0x362F, 400) == bytes.fromhex("362F01904C")
    assert write_frame(CMD_SET_AMBIENT_PRESSURE, pressure_word(98_700)) == bytes.fromhex("E00003DB42")
    assert temperature_offset_celsius(0x07E6) == pytest.approx(5.4, abs=0.003)


def test_frc_reply_vectors() -> None:
    assert frc_correction(words_from_frame(bytes.fromhex("7FCE7B"), 1)[0]) == -50
    assert frc_correction(words_from_frame(bytes.fromhex("FFFFAC"), 1)[0]) is None


def test_variant_codes() -> None:
    assert variant_name(0x0440) == "SCD40" and variant_name(0x1440) == "SCD41"
    assert variant_name(0x5000) == "SCD43" and variant_name(0xF000) is None


def test_crc_mismatch_is_bad_data() -> None:
    with pytest.raises(BadDataError, match="word 1"):
        words_from_frame(bytes.fromhex("01F4336667A35EB93C"), 3)
    with pytest.raises(BadDataError, match="9 expected"):
        words_from_frame(bytes.fromhex("01F433"), 3)


# --- the maths against an independent implementation ----------------------------------------------
def exact(t_word: int, rh_word: int) -> tuple[Fraction, Fraction]:
    """The datasheet formulas (v1.3 §3.6) in exact rational arithmetic."""
    return Fraction(-45) + Fraction(175) * Fraction(t_word, 2 ** 16 - 1), \
        Fraction(100) * Fraction(rh_word, 2 ** 16 - 1)


def test_maths_agree_with_exact_fractions_to_the_last_bit() -> None:
    rng = random.Random(4)
    corners = [0, 1, 0x4000, 16851, 16852, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
    cases = [(t, rh) for t in corners for rh in corners]
    cases += [(rng.randrange(0x10000), rng.randrange(0x10000)) for _ in range(5000)]
    for t_word, rh_word in cases:
        co2, temperature, humidity = convert_measurement(t_word, t_word, rh_word)
        t_exact, rh_exact = exact(t_word, rh_word)
        assert temperature == float(t_exact), t_word   # float(Fraction) is the correctly rounded value
        assert humidity == float(rh_exact), rh_word
        assert co2 == t_word
    assert convert_measurement(0, 0, 0)[1:] == (-45.0, 0.0)
    assert convert_measurement(0, 0xFFFF, 0xFFFF)[1:] == (130.0, 100.0)
    assert convert_measurement(0, 16851, 0)[1] < 0 < convert_measurement(0, 16852, 0)[1]   # 0 °C = 16851.4


def test_fake_encodes_what_the_driver_decodes() -> None:
    for celsius in (-10.0, 0.0, 21.5, 60.0):
        words = words_from_frame(encode_words([700, round((celsius + 45) * 65535 / 175), 32768]), 3)
        assert convert_measurement(*words)[1] == pytest.approx(celsius, abs=175 / 65535)


# --- set-up and reading on the wire ----------------------------------------------------------------
def test_set_up_then_one_reading_per_period_on_the_wire() -> None:
    bus, chip, clock, driver = rig(temperature_offset=5.4, altitude=420, self_calibration=False)
    assert not bus.transfers and chip.commands == []          # nothing at construction
    with pytest.raises(NotReadyError, match="periodic measurement started"):
        read(driver, clock)
    assert chip.commands == [CMD_STOP_PERIODIC, CMD_GET_SERIAL_NUMBER, CMD_GET_SENSOR_VARIANT,
                             CMD_SET_TEMPERATURE_OFFSET, CMD_SET_ALTITUDE, CMD_SET_ASC_ENABLED,
                             CMD_START_PERIODIC]
    assert chip.temperature_offset == temperature_offset_word(5.4)
    assert (chip.altitude, chip.asc_enabled) == (420, 0)
    assert driver.serial == chip.serial and driver.variant == "SCD41"
    assert ("i2c_rdwr.write", ADDR, None, list(bytes.fromhex("241D07E648"))) in bus.transfers
    clock.sleep(5.0)
    chip.commands.clear()
    sample = read(driver, clock)
    assert sample == {"co2": 612.0, "temperature": pytest.approx(21.5, abs=0.002),
                      "humidity": pytest.approx(48.0, abs=0.001)}
    assert chip.commands == [CMD_GET_DATA_READY, CMD_READ_MEASUREMENT]
    # each reply is read in its own transaction after the command: no combined write+read
    assert [t[0] for t in list(bus.transfers)[-4:]] == ["i2c_rdwr.write", "i2c_rdwr.read"] * 2


def test_settings_are_not_rewritten_on_every_read() -> None:
    _bus, chip, clock, driver = running(temperature_offset=4.0, altitude=100)
    chip.commands.clear()
    for _ in range(20):
        read(driver, clock)
        clock.sleep(5.0)
    assert not SETTINGS & set(chip.commands)
    assert chip.commands == [CMD_GET_DATA_READY, CMD_READ_MEASUREMENT] * 20


def test_a_stale_reading_is_never_returned_twice() -> None:
    _bus, chip, clock, driver = running()
    first = read(driver, clock)
    for wait in (0.0, 1.0, 2.0):   # before the next measurement: no new data, never the old one
        clock.sleep(wait)
        with pytest.raises(NotReadyError, match="no new measurement since the last one"):
            read(driver, clock)
    assert chip.buffer is None
    clock.sleep(2.0)
    assert read(driver, clock) == first   # a new measurement (the fake's values are constant)
    assert chip.measurements == 2


def test_steps_hand_their_waits_to_the_caller() -> None:
    _bus, chip, clock, driver = running()
    assert driver.start() == pytest.approx(0.001)            # get_data_ready sent
    with pytest.raises(NotReadyError, match="refused the read"):
        driver.collect()                                     # read at once: the chip NACKs
    clock.sleep(0.001)
    assert driver.start() == pytest.approx(0.001)
    clock.sleep(0.001)
    step = driver.collect()
    assert step == CollectAgain(0.001) and chip.commands[-1] == CMD_READ_MEASUREMENT
    clock.sleep(step.wait_s)
    assert set(driver.collect()) == {"co2", "temperature", "humidity"}
    with pytest.raises(NotReadyError, match="before start"):
        driver.collect()


def test_low_power_mode_reads_every_30_s() -> None:
    _bus, chip, clock, driver = rig(mode="low_power")
    assert driver.timing.min_interval_s == 30.0
    with pytest.raises(NotReadyError, match=r"low-power measurement started; the first .* due in 30 s"):
        read(driver, clock)
    assert chip.commands[-1] == CMD_START_LOW_POWER_PERIODIC and chip.mode == "low_power"
    clock.sleep(5.0)
    with pytest.raises(NotReadyError):
        read(driver, clock)
    clock.sleep(25.0)
    assert read(driver, clock)["co2"] == 612.0


def test_single_shot_on_an_scd41_is_two_phase() -> None:
    _bus, chip, clock, driver = rig(mode="single_shot")
    assert driver.timing.read_time_s > 5.0
    first = read(driver, clock)                      # set-up, then the shot, in one reading
    assert first["co2"] == 612.0 and chip.mode == "idle"
    assert CMD_START_PERIODIC not in chip.commands
    chip.commands.clear()
    assert driver.start() == 5.0 and chip.commands == [CMD_MEASURE_SINGLE_SHOT]
    clock.sleep(5.0)
    step = driver.collect()
    assert isinstance(step, CollectAgain)
    while isinstance(step, CollectAgain):
        clock.sleep(step.wait_s)
        step = driver.collect()
    assert step["co2"] == 612.0
    assert chip.commands == [CMD_MEASURE_SINGLE_SHOT, CMD_GET_DATA_READY, CMD_READ_MEASUREMENT]


def test_single_shot_on_an_scd40_is_refused_in_one_line() -> None:
    _bus, chip, clock, driver = rig(variant="SCD40", mode="single_shot")
    with pytest.raises(ConfigurationError) as refused:
        read(driver, clock)
    message = str(refused.value)
    assert "\n" not in message and "SCD40" in message and "single_shot needs an SCD41" in message
    assert not refused.value.retryable
    assert CMD_MEASURE_SINGLE_SHOT not in chip.commands


def test_an_scd40_reads_periodically() -> None:
    _bus, _chip, clock, driver = running(variant="SCD40")
    assert driver.variant == "SCD40" and read(driver, clock)["co2"] == 612.0


def test_firmware_without_the_variant_command_still_reads() -> None:
    clock = VirtualClock()
    chip = FakeSCD4x(clock=clock, knows_variant_command=False)
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    driver = SCD4x(bus=bus, clock=clock)
    with pytest.raises(NotReadyError, match="started"):
        read(driver, clock)
    clock.sleep(5.0)
    assert driver.variant is None and read(driver, clock)["co2"] == 600.0


# --- pressure compensation -------------------------------------------------------------------------
def test_ambient_pressure_option_is_sent_at_set_up() -> None:
    _bus, chip, _clock, _driver = running(ambient_pressure=98_700)
    assert chip.pressure_hpa == 987 and CMD_SET_ALTITUDE not in chip.commands


def test_handed_pressure_is_sent_during_periodic_measurement_only_when_it_moved() -> None:
    bus, chip, clock, driver = running()
    driver.set_ambient_pressure(98_700.0)          # records only: no bus traffic
    assert chip.commands[-1] == CMD_START_PERIODIC
    read(driver, clock)
    assert chip.pressure_hpa == 987 and chip.mode == "periodic"
    assert ("i2c_rdwr.write", ADDR, None, list(bytes.fromhex("E00003DB42"))) in bus.transfers
    sent = chip.commands.count(CMD_SET_AMBIENT_PRESSURE)
    for pascal in (98_750.0, 98_650.0, 98_790.0):   # < 1 hPa from the value sent: not sent
        clock.sleep(5.0)
        driver.set_ambient_pressure(pascal)
        read(driver, clock)
    assert chip.commands.count(CMD_SET_AMBIENT_PRESSURE) == sent
    clock.sleep(5.0)
    driver.set_ambient_pressure(98_800.0)
    read(driver, clock)
    assert chip.commands.count(CMD_SET_AMBIENT_PRESSURE) == sent + 1 and chip.pressure_hpa == 988


def test_an_impossible_handed_pressure_is_ignored_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running()
    with caplog.at_level(logging.WARNING):
        driver.set_ambient_pressure(12.0)
        driver.set_ambient_pressure(500_000.0)
    assert len([r for r in caplog.records if "outside the chip's" in r.getMessage()]) == 1
    read(driver, clock)
    assert CMD_SET_AMBIENT_PRESSURE not in chip.commands


# --- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, key, text", [
    ({"altitude": 100, "ambient_pressure": 98_000}, "ambient_pressure", "not both"),
    ({"mode": "continuous"}, "mode", "is not one of"),
    ({"altitude": 3001}, "altitude", "above the maximum 3000"),
    ({"altitude": -1}, "altitude", "below the minimum 0"),
    ({"ambient_pressure": 60_000}, "ambient_pressure", "below the minimum 70000"),
    ({"temperature_offset": 25}, "temperature_offset", "above the maximum 20"),
    ({"self_calibration": "sometimes"}, "self_calibration", "not a valid bool"),
    ({"address": 0x61}, "address", "is not one of 0x62"),
])
def test_option_problems_before_any_io(options: dict, key: str, text: str) -> None:
    _config, problems = SCD4x.validate(options)
    assert [p.key for p in problems] == [key] and text in problems[0].message
    with pytest.raises(ConfigurationError):
        SCD4x(bus=FakeSMBus(1), **options)


def test_timing_follows_the_mode() -> None:
    periodic = SCD4x.timing_for(SCD4x.check_options({}))
    assert (periodic.min_interval_s, periodic.read_time_s) == (5.0, pytest.approx(0.54))
    assert SCD4x.timing_for(SCD4x.check_options({"mode": "low_power"})).min_interval_s == 30.0
    assert SCD4x.timing_for(SCD4x.check_options({"mode": "single_shot"})).read_time_s > 5.5


# --- faults: a typed error, recovery on the next reading, said once -----------------------------------
def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_crc_error_single_and_in_a_burst() -> None:
    _bus, chip, clock, driver = running()
    chip.corrupt_crc = 1
    with pytest.raises(BadDataError, match="data-ready status read: CRC mismatch"):
        read(driver, clock)
    assert read(driver, clock)["co2"] == 612.0     # the buffer was not touched: read at once
    clock.sleep(5.0)
    chip.corrupt_crc = 3
    for _ in range(3):
        with pytest.raises(BadDataError):
            read(driver, clock)
    assert read(driver, clock)["co2"] == 612.0


def test_nack_while_busy_then_a_glitch_then_the_device_gone() -> None:
    bus, chip, clock, driver = running()
    driver.start()
    with pytest.raises(NotReadyError):            # too early: the chip still executes
        driver.collect()
    clock.sleep(0.001)
    chip.fail_next(1)                             # one NACKed transfer on a chip that answered before
    with pytest.raises(BusError):
        read(driver, clock)
    assert read(driver, clock)["co2"] == 612.0
    bus.detach(ADDR)
    clock.sleep(5.0)
    with pytest.raises(BusError, match="I2C"):
        read(driver, clock)
    bus.attach(ADDR, chip)
    assert read(driver, clock)["co2"] == 612.0


def test_nothing_at_the_address_is_device_not_found() -> None:
    clock = VirtualClock()
    driver = SCD4x(bus=FakeSMBus(1), clock=clock)
    with pytest.raises(DeviceNotFoundError, match="nothing answers"):
        read(driver, clock)


def test_power_glitch_lost_periodic_mode_is_noticed_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running(altitude=420)
    read(driver, clock)
    chip.power_cycle()                             # idle, settings at defaults, deaf for 1 s
    assert chip.altitude == 0
    clock.sleep(5.0)
    errors = []
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with pytest.raises(NotReadyError) as not_ready:
                read(driver, clock)
            errors.append(not_ready.value)
            clock.sleep(5.0)
    assert isinstance(errors[-1], MeasurementStoppedError)
    assert len([m for m in warnings(caplog) if "stopped measuring" in m]) == 1
    with pytest.raises(NotReadyError, match="started"):   # the next reading sets it up again
        read(driver, clock)
    assert chip.mode == "periodic" and chip.altitude == 420 and driver.setups == 2
    clock.sleep(5.0)
    assert read(driver, clock)["co2"] == 612.0


def test_stuck_data_ready_is_typed_and_re_initialises(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running()
    read(driver, clock)
    chip.stuck_data_ready = True
    with caplog.at_level(logging.WARNING), pytest.raises(DataReadyStuckError):
        read(driver, clock)
    assert len([m for m in warnings(caplog) if "stuck data-ready" in m]) == 1
    with pytest.raises(NotReadyError, match="started"):
        read(driver, clock)
    assert CMD_REINIT in chip.commands and not chip.stuck_data_ready
    clock.sleep(5.0)
    assert read(driver, clock)["co2"] == 612.0


@pytest.mark.parametrize("fault", ["crc", "crc_burst", "busy_nack", "lost_periodic", "stuck_ready", "gone"])
def test_fault_table_typed_error_then_recovery(fault: str) -> None:
    """Every fault: a SensorError subclass (no bare exception), then a reading again within two
    periods without any help from outside."""
    bus, chip, clock, driver = running()
    read(driver, clock)
    clock.sleep(5.0)
    if fault == "crc":
        chip.corrupt_crc = 1
    elif fault == "crc_burst":
        chip.corrupt_crc = 4
    elif fault == "busy_nack":
        chip.fail_next(2)
    elif fault == "lost_periodic":
        chip.power_cycle()
        clock.sleep(15.0)
    elif fault == "stuck_ready":
        read(driver, clock)
        chip.stuck_data_ready = True
    elif fault == "gone":
        bus.detach(ADDR)
    with pytest.raises(SensorError):
        read(driver, clock)
    if fault == "gone":
        bus.attach(ADDR, chip)
    for _ in range(10):
        try:
            assert read(driver, clock)["co2"] == 612.0
            return
        except SensorError:
            clock.sleep(driver.timing.retry.spacing_s)
    pytest.fail(f"no recovery from {fault}")


# --- scan, simulation ------------------------------------------------------------------------------
def test_scan_names_it_without_disturbing_a_running_measurement() -> None:
    from pibridge.cli.driver_commands import identify_i2c, scan_i2c_bus

    bus, chip, clock, driver = running()
    assert identify_i2c(bus, ADDR, sleep=clock.sleep).startswith("SCD4x")
    assert chip.mode == "periodic" and chip.buffer is not None
    assert chip.commands[-1] == CMD_GET_DATA_READY
    assert read(driver, clock)["co2"] == 612.0          # the measurement is still there
    assert [a for a, _ in scan_i2c_bus(bus)] == [ADDR]


def test_simulated_reads_the_greenhouse_co2() -> None:
    clock = VirtualClock()
    dawn = Environment(seed=3, clock=lambda: 6 * 3600.0)
    with SimulatedWorld(dawn, clock=clock, door_timer=False) as world:
        driver = world.build("scd4x", {"altitude": 300})
        with pytest.raises(NotReadyError):
            read_once(driver, clock.sleep)
        clock.sleep(5.0)
        sample = check_sample(driver, read_once(driver, clock.sleep))
    assert 400 <= sample["co2"] <= 1250 and 10 < sample["temperature"] < 35


def test_environment_co2_follows_the_day() -> None:
    hour = 3600.0
    dawn = Environment(seed=1, noise=0.0, clock=lambda: 4 * hour).co2()
    afternoon = Environment(seed=1, noise=0.0, clock=lambda: 16 * hour).co2()
    assert 1100 <= dawn <= 1200 and 400 <= afternoon <= 500
    values = [Environment(seed=1, clock=lambda h=h: h * hour).co2() for h in range(24)]
    assert min(values) >= 400 and max(values) <= 1200


# --- explicit commands -----------------------------------------------------------------------------
def test_forced_recalibration_after_three_minutes_and_its_failure() -> None:
    bus, chip, clock, driver = running()
    with pytest.raises(SensorError, match="forced recalibration failed"):   # only 5 s of measuring
        driver.forced_recalibration(400, clock.sleep)
    assert chip.mode == "idle"
    with pytest.raises(NotReadyError, match="started"):   # the next reading starts it again
        read(driver, clock)
    clock.sleep(185.0)
    assert driver.forced_recalibration(400, clock.sleep) == 400 - 612   # target − what it read
    assert ("i2c_rdwr.write", ADDR, None, list(bytes.fromhex("362F01904C"))) in bus.transfers


def test_persist_settings_is_explicit() -> None:
    _bus, chip, clock, driver = running()
    chip.commands.clear()
    driver.persist_settings(clock.sleep)
    assert chip.commands == [CMD_STOP_PERIODIC, 0x3615]
