"""BME280/BMP280 driver: datasheet vectors bit-exact, detection, round trips through the fake
register file, wire order, and the error mapping of every fault."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pibridge.drivers import bme280
from pibridge.drivers.base import check_sample
from pibridge.drivers.bme280 import (
    BME280,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    measurement_time_s,
    parse_calibration,
    parse_data,
)
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    NotReadyError,
)
from pibridge.drivers.fakes.bme280 import FakeBME280
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.simulation import Environment, SimulatedWorld

# register images of real parts (vector A: a BME280, vector B: a BMP280)
VECTOR_A_TP = bytes.fromhex("696D3664320 0E99802D6D00B231688FFF9FF8C3CF8C67017004B".replace(" ", ""))
VECTOR_A_H = bytes.fromhex("7801001 12E031E".replace(" ", ""))
VECTOR_A_DATA = bytes.fromhex("4FCA008132707649")
VECTOR_B_TP = bytes.fromhex("706B436718FC7D8E43D6D00B270B8C00F9FF8C3CF8C67017")
VECTOR_B_DATA = bytes.fromhex("655AC07EED00")
VECTOR_B_CALIB = bme280.Calibration(T1=27504, T2=26435, T3=-1000, P1=36477, P2=-10685, P3=3024,
                                    P4=2855, P5=140, P6=-7, P7=15500, P8=-14600, P9=6000)
FULL_RES = {"osrs_t": 16, "osrs_p": 16, "osrs_h": 16}  # 20-bit P/T: raw values pass unchanged


def rig(*, address: int = 0x76, **chip_kwargs):
    """A fake chip on a fake bus, on virtual time."""
    clock = VirtualClock()
    chip = FakeBME280(clock=clock, **chip_kwargs)
    bus = FakeSMBus(1)
    bus.attach(address, chip)
    return bus, chip, clock


def driver_on(bus, clock, **options) -> BME280:
    return BME280(bus=bus, **options)


# --- pure maths -----------------------------------------------------------------------------------
def test_vector_a_bit_exact() -> None:
    calib = parse_calibration(VECTOR_A_TP, VECTOR_A_H)
    assert (calib.T1, calib.T2, calib.T3) == (28009, 25654, 50)
    assert (calib.P1, calib.P2, calib.P9) == (39145, -10750, 6000)
    assert (calib.H1, calib.H2, calib.H3, calib.H4, calib.H5, calib.H6) == (75, 376, 0, 286, 50, 30)
    adc_p, adc_t, adc_h = parse_data(VECTOR_A_DATA)
    assert (adc_t, adc_p, adc_h) == (529191, 326816, 30281)
    t_fine, centi = compensate_temperature(adc_t, calib)
    assert (t_fine, centi) == (126911, 2479)
    assert compensate_pressure(adc_p, t_fine, calib) == 25769253
    assert compensate_humidity(adc_h, t_fine, calib) == 70317


def test_vector_b_bit_exact_with_floor_shift() -> None:
    calib = parse_calibration(VECTOR_B_TP)
    assert calib == VECTOR_B_CALIB
    adc_p, adc_t, adc_h = parse_data(VECTOR_B_DATA)
    assert (adc_t, adc_p, adc_h) == (519888, 415148, None)
    t_fine, centi = compensate_temperature(adc_t, calib)
    assert (t_fine, centi) == (128422, 2508)  # Bosch's truncating API would give 128423
    assert compensate_pressure(adc_p, t_fine, calib) == 25767233


def test_h4_h5_sign_extend_from_whole_byte() -> None:
    h = bytes([0x78, 0x01, 0x00, 0xF1, 0x2E, 0xF3, 0x1E])  # E4 = 0xF1, E6 = 0xF3 negative
    calib = parse_calibration(VECTOR_A_TP, h)
    assert calib.H4 == (-15 << 4) | 0xE
    assert calib.H5 == (-13 << 4) | 0x2


def test_humidity_clamped_to_0_and_100_percent() -> None:
    calib = parse_calibration(VECTOR_A_TP, VECTOR_A_H)
    t_fine = 126911
    assert compensate_humidity(0, t_fine, calib) == 0
    assert compensate_humidity(0xFFFF, t_fine, calib) == 102400


def test_pressure_formula_guards_division_by_zero() -> None:
    calib = parse_calibration(VECTOR_B_TP)
    zero_p1 = bme280.Calibration(**{**calib.__dict__, "P1": 0})
    assert compensate_pressure(415148, 128422, zero_p1) == 0


def test_negative_temperature_uses_floor_shift() -> None:
    calib = parse_calibration(VECTOR_A_TP, VECTOR_A_H)
    chip = FakeBME280(calibration=calib)
    adc = chip.adc_for_temperature(-10.0)
    t_fine, centi = compensate_temperature(adc, calib)
    assert t_fine < 0 and centi == (t_fine * 5 + 128) >> 8 and centi == -1000


def test_measurement_times_match_datasheet_examples() -> None:
    assert measurement_time_s(1, 4, 0) == pytest.approx(0.013325)
    assert measurement_time_s(1, 4, 0, maximum=False) == pytest.approx(0.0115)
    assert measurement_time_s(1, 1, 1) == pytest.approx(0.0093)
    assert measurement_time_s(1, 1, 1, maximum=False) == pytest.approx(0.008)
    assert measurement_time_s(16, 16, 16) == pytest.approx(0.1128)


# --- the driver on the fake bus ---------------------------------------------------------------------
def test_read_vector_a_through_the_registers() -> None:
    bus, chip, clock = rig()
    assert bytes(chip.regs[0x88:0xA2]) == VECTOR_A_TP and bytes(chip.regs[0xE1:0xE8]) == VECTOR_A_H
    with driver_on(bus, clock, **FULL_RES) as driver:
        sample = driver.read(clock.sleep)
    assert sample == {"temperature": 24.79, "pressure": 25769253 / 256, "humidity": 70317 / 1024}
    assert driver.chip == "BME280"
    assert check_sample(driver, sample) == sample


def test_no_io_at_construction_and_one_burst_per_sample() -> None:
    bus, _chip, clock = rig()
    driver = driver_on(bus, clock)
    assert not bus.transfers
    driver.read(clock.sleep)
    bus.transfers.clear()
    driver.read(clock.sleep)
    ops = [(op, reg) for op, _addr, reg, _payload in bus.transfers]
    # ctrl_hum strictly before ctrl_meas (it only latches on the ctrl_meas write)
    assert ops[:2] == [("write_byte_data", 0xF2), ("write_byte_data", 0xF4)]
    bursts = [t for t in bus.transfers if t[0] == "read_i2c_block_data"]
    assert bursts == [("read_i2c_block_data", 0x76, 0xF7, 8)]


def test_calibration_read_once_within_block_limit() -> None:
    bus, _chip, clock = rig()
    driver = driver_on(bus, clock)
    for _ in range(3):
        driver.read(clock.sleep)
    calib_reads = [t for t in bus.transfers if t[0] == "read_i2c_block_data" and t[2] in (0x88, 0xE1)]
    assert calib_reads == [("read_i2c_block_data", 0x76, 0x88, 26), ("read_i2c_block_data", 0x76, 0xE1, 7)]


def test_oversampling_and_filter_reach_the_chip() -> None:
    bus, chip, clock = rig(address=0x77)
    driver = driver_on(bus, clock, address="0x77", osrs_t=2, osrs_p=16, osrs_h=4, iir_filter=4)
    start = clock()
    driver.read(clock.sleep)
    assert chip.osrs_codes == (0b010, 0b101, 0b011)
    assert (chip.regs[0xF5] >> 2) & 0b111 == 0b010
    assert chip.mode == 0  # forced conversion finished: back to sleep
    # waited the maximum time (to float precision: the virtual clock does not start at 0)
    assert clock() - start >= measurement_time_s(2, 16, 4) - 1e-9


@pytest.mark.parametrize("celsius, pascal, percent", [
    (-40.0, 30_000.0, 0.0), (-10.0, 90_000.0, 35.0), (0.0, 101_325.0, 50.0), (24.5, 100_000.0, 73.2),
    (85.0, 110_000.0, 100.0)])
def test_physical_round_trip(celsius: float, pascal: float, percent: float) -> None:
    bus, _chip, clock = rig(source=lambda: (celsius, pascal, percent))
    sample = driver_on(bus, clock, **FULL_RES).read(clock.sleep)
    assert sample["temperature"] == pytest.approx(celsius, abs=0.01)
    assert sample["pressure"] == pytest.approx(pascal, abs=1.0)
    assert sample["humidity"] == pytest.approx(percent, abs=0.01)


def test_x1_oversampling_is_16_bit() -> None:
    bus, chip, clock = rig(source=lambda: (21.37, 98_765.4, 44.4))
    sample = driver_on(bus, clock).read(clock.sleep)
    assert chip.regs[0xF9] == 0 and chip.regs[0xFC] == 0  # xlsb nibble zero at x1 without filter
    assert sample["temperature"] == pytest.approx(21.37, abs=0.01)
    assert sample["pressure"] == pytest.approx(98_765.4, abs=3.0)  # 2.6 Pa steps at 16 bit


def test_bmp280_detected_and_humidity_dropped() -> None:
    bus, _chip, clock = rig(variant="BMP280", calibration=VECTOR_B_CALIB, raw=(519888, 415148, 0))
    driver = driver_on(bus, clock, **FULL_RES)
    assert {m.key for m in driver.active_metrics()} == {"temperature", "humidity", "pressure"}
    sample = driver.read(clock.sleep)
    assert driver.chip == "BMP280"
    assert sample == {"temperature": 25.08, "pressure": 25767233 / 256}
    assert {m.key for m in driver.active_metrics()} == {"temperature", "pressure"}
    assert check_sample(driver, sample) == sample
    assert ("read_i2c_block_data", 0x76, 0xF7, 6) in bus.transfers
    assert not any(t[2] in (0xF2, 0xE1) for t in bus.transfers)  # no ctrl_hum, no H calibration


@pytest.mark.parametrize("chip_id", [0x58, 0x56, 0x57])
def test_bmp280_ids(chip_id: int) -> None:
    bus, _chip, clock = rig(variant="BMP280", chip_id=chip_id, calibration=VECTOR_B_CALIB)
    driver = driver_on(bus, clock)
    assert driver.detect() == "BMP280"


def test_humidity_asked_explicitly_on_bmp280_names_the_chip() -> None:
    bus, _chip, clock = rig(variant="BMP280", calibration=VECTOR_B_CALIB)
    driver = driver_on(bus, clock, metrics="temperature,humidity")
    with pytest.raises(ConfigurationError, match="BMP280") as info:
        driver.read(clock.sleep)
    assert not info.value.retryable


@pytest.mark.parametrize(("options", "keys"), [
    ({}, ["temperature", "humidity", "pressure"]),
    ({"osrs_p": 0}, ["temperature", "humidity"]),
    ({"osrs_h": 0, "osrs_p": 0}, ["temperature"]),
    ({"metrics": "temperature"}, ["temperature"]),
    ({"metrics": "pressure, temperature", "osrs_h": 0}, ["temperature", "pressure"]),
])
def test_metrics_for_a_configuration_without_hardware(options: dict[str, object], keys: list[str]) -> None:
    """What a configuration reports is known at class level, and an instance starts from it."""
    config = BME280.check_options(options)
    assert [m.key for m in BME280.metrics_for(config)] == keys
    bus, _chip, clock = rig()
    driver = driver_on(bus, clock, **options)
    assert driver.active_metrics() == BME280.metrics_for(config)
    assert list(driver.read(clock.sleep)) == [k for k in ("temperature", "pressure", "humidity") if k in keys]


def test_bmp280_narrows_the_configured_metrics_further() -> None:
    bus, _chip, clock = rig(variant="BMP280", calibration=VECTOR_B_CALIB, raw=(519888, 415148, 0))
    driver = driver_on(bus, clock, osrs_p=0)
    driver.detect()
    assert [m.key for m in driver.active_metrics()] == ["temperature"]


def test_metrics_subset() -> None:
    bus, chip, clock = rig()
    driver = driver_on(bus, clock, metrics="pressure")
    assert [m.key for m in driver.active_metrics()] == ["pressure"]
    assert set(driver.read(clock.sleep)) == {"pressure"}
    assert chip.osrs_codes[2] == 0  # humidity not converted at all


def test_skipped_channel_is_not_reported() -> None:
    bus, chip, clock = rig()
    driver = driver_on(bus, clock, osrs_h=0, osrs_p=0)
    assert set(driver.read(clock.sleep)) == {"temperature"}
    assert chip.regs[0xF7:0xFA] == bytes([0x80, 0, 0]) and chip.regs[0xFD:0xFF] == bytes([0x80, 0])


def test_option_errors_before_any_io() -> None:
    with pytest.raises(ConfigurationError, match="osrs_t"):
        BME280(bus=FakeSMBus(), osrs_t=0)
    with pytest.raises(ConfigurationError, match="osrs_p"):
        BME280(bus=FakeSMBus(), osrs_p=3)
    with pytest.raises(ConfigurationError, match="address"):
        BME280(bus=FakeSMBus(), address=0x75)
    with pytest.raises(ConfigurationError, match="unknown metric colour"):
        BME280(bus=FakeSMBus(), metrics="temperature,colour")
    with pytest.raises(ConfigurationError, match="osrs_h=0"):
        BME280(bus=FakeSMBus(), metrics="humidity", osrs_h=0)


# --- faults -------------------------------------------------------------------------------------
def test_humidity_stuck_at_reset_value_is_not_ready() -> None:
    bus, chip, clock = rig()
    chip.humidity_stuck = True
    with pytest.raises(NotReadyError, match="0x8000"):
        driver_on(bus, clock).read(clock.sleep)


def test_data_never_converted_is_not_ready() -> None:
    bus, chip, clock = rig()
    chip.stuck_values = True  # data registers keep their reset values
    with pytest.raises(NotReadyError, match="0x80000"):
        driver_on(bus, clock).read(clock.sleep)


def test_nack_at_detection_is_device_not_found() -> None:
    bus = FakeSMBus(1)
    with pytest.raises(DeviceNotFoundError, match="0x76") as info:
        BME280(bus=bus).read(VirtualClock().sleep)
    assert not info.value.retryable


def test_nack_after_detection_is_bus_error_and_recovers() -> None:
    bus, chip, clock = rig()
    driver = driver_on(bus, clock)
    driver.read(clock.sleep)
    chip.fail_next(1)
    with pytest.raises(BusError, match="EREMOTEIO") as info:
        driver.read(clock.sleep)
    assert info.value.retryable
    bus.transfers.clear()
    assert set(driver.read(clock.sleep)) == {"temperature", "humidity", "pressure"}
    assert bus.transfers[0][:3] == ("write_byte_data", 0x76, 0xF4)  # re-configured after the error


def test_device_gone_is_bus_error() -> None:
    bus, _chip, clock = rig()
    driver = driver_on(bus, clock)
    driver.read(clock.sleep)
    bus.detach(0x76)
    with pytest.raises(BusError):
        driver.read(clock.sleep)


@pytest.mark.parametrize("chip_id", [0x61, 0x55, 0xFF])
def test_wrong_chip_id(chip_id: int) -> None:
    bus, _chip, clock = rig(chip_id=chip_id)
    with pytest.raises(DeviceNotFoundError, match=f"0x{chip_id:02x}"):
        driver_on(bus, clock).read(clock.sleep)


def test_stuck_measuring_bit_is_not_ready() -> None:
    bus, chip, clock = rig()
    chip.stuck_measuring = True
    start = clock()
    with pytest.raises(NotReadyError, match="still measuring"):
        driver_on(bus, clock).read(clock.sleep)
    polls = [t for t in bus.transfers if t[0] == "read_byte_data" and t[2] == 0xF3]
    assert len(polls) == 1  # one look; retrying is the caller's
    assert clock() - start < 0.05


def test_collect_too_early_is_not_ready_like_the_chip() -> None:
    """Two phases on virtual time: collecting before the returned wait sees the status bit set
    (the fake converts for the datasheet typical time, the driver waits the maximum)."""
    bus, chip, clock = rig()
    driver = driver_on(bus, clock)
    wait = driver.start()
    assert wait == pytest.approx(measurement_time_s(1, 1, 1))
    with pytest.raises(NotReadyError, match="still measuring"):
        driver.collect()
    clock.sleep(wait)
    assert driver.collect()["temperature"] == pytest.approx(24.79, abs=0.01)
    assert chip.conversions == 1


def test_driver_that_does_not_wait_is_caught_by_the_fake() -> None:
    bus, _chip, _clock = rig()
    driver = BME280(bus=bus)
    with pytest.raises(NotReadyError):
        driver.read(lambda s: None)  # virtual time never advances


def test_blank_calibration_is_bad_data_and_not_cached() -> None:
    bus, chip, clock = rig()
    chip.blank_calibration = True
    driver = driver_on(bus, clock)
    with pytest.raises(BadDataError, match="calibration") as info:
        driver.read(clock.sleep)
    assert info.value.retryable
    chip.blank_calibration = False
    assert driver.read(clock.sleep)["temperature"] == pytest.approx(24.79, abs=0.01)


# --- bus ownership ------------------------------------------------------------------------------
def test_driver_opens_and_closes_its_own_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    import smbus2

    clock = VirtualClock()
    opened: list[FakeSMBus] = []

    def fake_smbus(number: int) -> FakeSMBus:
        bus = FakeSMBus(number)
        bus.attach(0x76, FakeBME280(clock=clock))
        opened.append(bus)
        return bus

    monkeypatch.setattr(smbus2, "SMBus", fake_smbus)
    driver = BME280(i2c_bus=3)
    assert opened == []
    driver.read(clock.sleep)
    assert [b.bus for b in opened] == [3]
    driver.close()
    driver.close()
    assert opened[0].closed


def test_driver_never_closes_a_handed_bus() -> None:
    bus, _chip, clock = rig()
    with driver_on(bus, clock) as driver:
        driver.read(clock.sleep)
    assert not bus.closed


def test_missing_bus_is_device_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    import smbus2

    def no_bus(number: int) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(smbus2, "SMBus", no_bus)
    with pytest.raises(DeviceNotFoundError, match="/dev/i2c-1"):
        BME280().read(lambda s: None)


def test_simulated_reads_the_environment() -> None:
    env = Environment(seed=3, noise=0.0, clock=lambda: 14 * 3600.0)
    clock = VirtualClock()
    with SimulatedWorld(env, clock=clock) as world:
        driver = world.build("bme280", FULL_RES)
        sample = check_sample(driver, driver.read(clock.sleep))
        assert isinstance(driver, BME280) and driver._bus is world.i2c_bus(1)
    assert sample["temperature"] == pytest.approx(env.air_temperature(), abs=0.01)
    assert sample["humidity"] == pytest.approx(env.relative_humidity(), abs=0.01)
    assert sample["pressure"] == pytest.approx(env.pressure(), abs=1.0)


def test_importing_drivers_and_fakes_does_not_import_smbus2() -> None:
    code = ("import sys, pibridge.drivers.bme280, pibridge.drivers.bh1750, pibridge.drivers.fakes.i2c; "
            "sys.exit('smbus2' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_timing_follows_oversampling_per_instance() -> None:
    """The conversion wait grows with oversampling (all x16: 112.8 ms datasheet maximum); it is
    the instance's own timing, computed from its configuration, and the class keeps its x1
    defaults."""
    assert BME280(bus=FakeSMBus(1)).timing.read_time_s == pytest.approx(BME280.read_time_s)
    heavy = BME280(bus=FakeSMBus(1), osrs_t=16, osrs_p=16, osrs_h=16)
    assert heavy.timing.read_time_s > measurement_time_s(16, 16, 16) >= 0.1128 - 1e-9
    assert BME280.read_time_s == pytest.approx(0.0093 + bme280.BUS_TIME_S)  # untouched
    config = BME280.check_options({"osrs_t": 16, "osrs_p": 0, "osrs_h": 0})
    assert BME280.timing_for(config).read_time_s == pytest.approx(
        measurement_time_s(16, 0, 0) + bme280.BUS_TIME_S)


def test_one_oversampling_rule_for_timing_and_control_registers() -> None:
    """timing_for, conversion_time_s and the ctrl registers all use `converted_oversampling`."""
    from pibridge.drivers.bme280 import BUS_TIME_S, converted_oversampling, measurement_time_s

    config = BME280.check_options({"osrs_t": 2, "osrs_p": 4, "osrs_h": 8, "metrics": "temperature,humidity"})
    assert converted_oversampling(config, {"temperature", "humidity"}) == (2, 0, 8)
    assert converted_oversampling(config, {"temperature", "humidity"}, has_humidity=False) == (2, 0, 0)
    assert BME280.timing_for(config).read_time_s == measurement_time_s(2, 0, 8) + BUS_TIME_S
    assert BME280.read_time_s == measurement_time_s(1, 1, 1) + BUS_TIME_S


def _bisection_reference(f, target: float, lo: int, hi: int) -> int:
    """The plain bisection the fake used before its interpolation search: the answer to match."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        if f(mid) >= target:
            b = mid
        else:
            a = mid + 1
    if a > lo and abs(f(a - 1) - target) < abs(f(a) - target):
        return a - 1
    return a


def test_fake_inversion_is_exactly_the_bisections_answer() -> None:
    """The fake's secant search finds the same ADC counts as bisection on all three compensation
    curves (targets across and beyond the chip's range; from no hint, from the previous answer
    as the fake does, and from a wild hint), in fewer evaluations."""
    import random

    from pibridge.drivers.fakes.bme280 import (
        ADC_16BIT_MAX,
        ADC_20BIT_MAX,
        VECTOR_A_CALIBRATION,
        VECTOR_A_RAW,
        _smallest_at_least,
    )

    rng = random.Random(280)
    calib = VECTOR_A_CALIBRATION
    t_fine = bme280.compensate_temperature(VECTOR_A_RAW[0], calib)[0]
    curves = [
        (lambda a: bme280.compensate_temperature(a, calib)[0], lambda: rng.uniform(-60, 100) * 5120.0,
         ADC_20BIT_MAX),
        (lambda a: -bme280.compensate_pressure(a, t_fine, calib), lambda: -rng.uniform(20_000, 130_000)
         * bme280.PRESSURE_Q, ADC_20BIT_MAX),
        (lambda a: bme280.compensate_humidity(a, t_fine, calib),
         lambda: rng.uniform(-5, 105) * bme280.HUMIDITY_Q, ADC_16BIT_MAX),
    ]
    for f, draw, top in curves:
        calls = 0

        def counted(a: int, f=f) -> float:
            nonlocal calls
            calls += 1
            return f(a)
        previous = None
        for _ in range(400):
            target = draw()
            expected = _bisection_reference(f, target, 0, top)
            assert _smallest_at_least(counted, target, 0, top, hint=previous) == expected, target
            assert _smallest_at_least(f, target, 0, top) == expected, target
            wild = rng.randrange(-10, top + 10)
            assert _smallest_at_least(f, target, 0, top, hint=wild) == expected, target
            previous = expected
        assert calls < 400 * 12  # bisection: 20 evaluations (16 for humidity) plus the neighbour check
