"""SHT4x driver and its command-level fake: datasheet maths and vectors, an exact cross-check,
the two phases on virtual time, the heater, every fault, scan and the simulator."""

from __future__ import annotations

import logging
import random
from fractions import Fraction

import pytest
from smbus2 import i2c_msg

from pibridge.cli import driver_commands
from pibridge.drivers import SimulatedWorld, read_with_retries
from pibridge.drivers.base import check_sample
from pibridge.drivers.crc import crc8_sensirion
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    DeviceNotFoundError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.fakes.sensirion import crc8 as fake_crc8
from pibridge.drivers.fakes.sensirion import pack_words
from pibridge.drivers.fakes.sht4x import FakeSHT4x
from pibridge.drivers.sht4x import (
    HEATER_COOLDOWN_S,
    SHT4x,
    convert,
    ticks_to_celsius,
    ticks_to_humidity,
)

ADDR = 0x44


def rig(**fake: object) -> tuple[FakeSMBus, FakeSHT4x, VirtualClock]:
    clock = VirtualClock()
    chip = FakeSHT4x(clock=clock, **fake)  # type: ignore[arg-type]
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    return bus, chip, clock


# --- CRC and the datasheet / hardware.md vectors --------------------------------------------------
@pytest.mark.parametrize("word, crc", [(b"\xbe\xef", 0x92), (b"\x00\x00", 0x81), (b"\xff\xff", 0xAC),
                                       (b"\x66\x66", 0x93), (b"\x80\x00", 0xA2), (b"\x00\x01", 0xB0)])
def test_crc_check_values(word: bytes, crc: int) -> None:
    assert crc8_sensirion(word) == crc == fake_crc8(word)


def test_vector_25_degrees() -> None:
    temperature, humidity = convert(bytes.fromhex("66 66 93 80 00 A2"))
    assert temperature == 25.0
    assert humidity == pytest.approx(56.500954, abs=5e-7)


def test_vector_humidity_below_zero_is_cropped() -> None:
    temperature, humidity = convert(bytes.fromhex("66 66 93 0C 49 80"))
    assert temperature == 25.0 and humidity == 0.0 and isinstance(humidity, float)  # Adafruit: int 0


def test_vector_full_scale_and_floating_bus() -> None:
    assert convert(bytes.fromhex("FF FF AC FF FF AC")) == (130.0, 100.0)
    with pytest.raises(BadDataError, match="CRC"):
        convert(bytes.fromhex("FF FF FF FF FF FF"))  # SDA floating: CRC of FFFF is 0xAC


def exact_celsius(s_t: int) -> Fraction:
    return Fraction(-45) + Fraction(175 * s_t, 65535)


def exact_humidity(s_rh: int) -> Fraction:
    return min(Fraction(100), max(Fraction(0), Fraction(-6) + Fraction(125 * s_rh, 65535)))


def test_cross_check_against_exact_fractions() -> None:
    """The float maths is the datasheet's formula to the last bit that matters: within 1e-12 of
    the exact rational result, on corners and 2000 random raws."""
    rng = random.Random(4)
    raws = [0, 1, 0x0C49, 0x0C4A, 10000, 16852, 0x6666, 0x8000, 0xD916, 0xFFFE, 0xFFFF]
    raws += [rng.randrange(0x10000) for _ in range(2000)]
    for raw in raws:
        assert abs(ticks_to_celsius(raw) - float(exact_celsius(raw))) < 1e-12, raw
        assert abs(ticks_to_humidity(raw) - float(exact_humidity(raw))) < 1e-12, raw
    assert ticks_to_celsius(0) == -45.0
    assert ticks_to_celsius(16851) < 0 < ticks_to_celsius(16852)  # negative temperatures
    assert ticks_to_humidity(0) == 0.0 and ticks_to_humidity(0xFFFF) == 100.0


def test_integer_form_of_sensirion_and_linux_is_within_its_known_bias() -> None:
    """Sensirion C / Linux hwmon divide by 2^16 (``(21875·S) >> 13``) and floor: below the
    datasheet by less than 175000/65536 + 1 m°C and 125000/65536 + 1 m%RH."""
    for raw in range(0, 0x10000, 97):
        milli_c = ((21875 * raw) >> 13) - 45000
        milli_rh = ((15625 * raw) >> 13) - 6000
        assert 0 <= ticks_to_celsius(raw) * 1000 - milli_c < 175000 / 65536 + 1
        assert 0 <= (-6 + 125 * raw / 65535) * 1000 - milli_rh < 125000 / 65536 + 1


# --- the driver on the fake -----------------------------------------------------------------------
def test_read_and_wire_protocol() -> None:
    bus, _chip, clock = rig(celsius=25.0, humidity=56.5)
    driver = SHT4x(bus=bus)
    start = clock()
    assert not bus.transfers  # nothing at construction
    sample = check_sample(driver, driver.read(clock.sleep))
    assert sample == {"temperature": pytest.approx(25.0, abs=0.003),
                      "humidity": pytest.approx(56.5, abs=0.002)}
    # the command, then the result in its own transaction (no repeated START)
    assert list(bus.transfers) == [("write_byte", ADDR, None, 0xFD), ("i2c_rdwr.read", ADDR, None, 6)]
    assert clock() - start == pytest.approx(0.0083 + 0.0005)


@pytest.mark.parametrize("precision, command, wait", [("high", 0xFD, 0.0088), ("medium", 0xF6, 0.005),
                                                      ("low", 0xE0, 0.0022)])
def test_precisions(precision: str, command: int, wait: float) -> None:
    bus, chip, clock = rig()
    driver = SHT4x(bus=bus, precision=precision)
    assert driver.timing.read_time_s == pytest.approx(wait)
    assert driver.start() == pytest.approx(wait)
    clock.sleep(wait)
    driver.collect()
    assert chip.commands == [command]


def test_collecting_too_early_is_not_ready_and_repeated_start_reads_are_nacked() -> None:
    bus, _chip, clock = rig()
    driver = SHT4x(bus=bus)
    driver.read(clock.sleep)
    driver.start()
    clock.sleep(0.003)  # typical high-precision time is 6.9 ms
    with pytest.raises(NotReadyError, match="measurement still running"):
        driver.collect()
    with pytest.raises(NotReadyError, match="before start"):
        driver.collect()
    with pytest.raises(OSError):  # read_i2c_block_data(a, 0xFD, 6): a read right after the command
        bus.read_i2c_block_data(ADDR, 0xFD, 6)


def test_result_is_read_once_unless_the_fake_repeats_it() -> None:
    bus, chip, clock = rig()
    bus.write_byte(ADDR, 0xFD)
    clock.sleep(0.01)
    first = i2c_msg.read(ADDR, 6)
    bus.i2c_rdwr(first)
    with pytest.raises(OSError):
        bus.i2c_rdwr(i2c_msg.read(ADDR, 6))
    chip.reread = "repeat"
    bus.write_byte(ADDR, 0xFD)
    clock.sleep(0.01)
    again = [i2c_msg.read(ADDR, 6), i2c_msg.read(ADDR, 6)]
    bus.i2c_rdwr(*again)
    assert bytes(again[0]) == bytes(again[1]) == bytes(first)


def test_raw_corners_through_the_driver() -> None:
    bus, chip, clock = rig()
    driver = SHT4x(bus=bus)
    middle = (float(exact_celsius(0x2000)), float(exact_humidity(0x8000)))
    for ticks, expected in [((0, 0), (-45.0, 0.0)), ((0xFFFF, 0xFFFF), (130.0, 100.0)),
                            ((0x2000, 0x8000), middle)]:
        chip.raw_ticks = ticks
        sample = driver.read(clock.sleep)
        assert (sample["temperature"], sample["humidity"]) == pytest.approx(expected, abs=1e-12)


def test_serial_number_and_scan() -> None:
    bus, _chip, clock = rig(serial=0x0ABCDEF1)
    assert driver_commands.scan_i2c_bus(bus, sleep=clock.sleep) == [(ADDR, "SHT4x (serial 0x0abcdef1)")]


# --- heater ---------------------------------------------------------------------------------------
def test_heater_duty_cycle_is_a_config_rule() -> None:
    _config, problems = SHT4x.validate({"heater": "200mW-1s", "heater_interval": 5})
    assert [p.key for p in problems] == ["heater_interval"]
    assert "10 % duty cycle (at least 10 s)" in problems[0].message
    assert SHT4x.validate({"heater": "200mW-100ms", "heater_interval": 1})[1] == []
    assert SHT4x.validate({"heater": "20mW-1s", "heater_interval": 10})[1] == []
    _config, problems = SHT4x.validate({"heater": "on", "precision": "ultra"})
    assert {p.key for p in problems} == {"heater", "precision"}


def test_heater_timing() -> None:
    assert SHT4x.timing_for(SHT4x.check_options({"heater": "110mW-1s"})).read_time_s == pytest.approx(1.1005)
    assert SHT4x.timing_for(SHT4x.check_options({})).read_time_s == pytest.approx(0.0088)


def test_heater_runs_only_on_a_wet_sensor_at_most_once_per_interval() -> None:
    bus, chip, clock = rig(celsius=18.0, humidity=60.0)
    driver = SHT4x(bus=bus, clock=clock, heater="200mW-1s", heater_interval=600)
    for _ in range(3):
        driver.read(clock.sleep)
        clock.sleep(30)
    assert chip.commands == [0xFD] * 3  # dry: never heated
    chip.humidity = 100.0               # condensed
    assert driver.read(clock.sleep)["humidity"] == 100.0
    wait = driver.start()
    assert chip.commands[-1] == 0x39 and wait == pytest.approx(1.1005)
    clock.sleep(wait)
    with pytest.raises(NotReadyError, match="not ambient"):  # the hot frame is never a sample
        driver.collect()
    with pytest.raises(NotReadyError, match="cooling down"):
        driver.start()
    clock.sleep(HEATER_COOLDOWN_S)
    sample = driver.read(clock.sleep)
    assert sample["temperature"] == pytest.approx(18.0, abs=0.01)  # cooled: ambient again
    clock.sleep(300)
    driver.read(clock.sleep)
    assert chip.commands.count(0x39) == 1  # still wet, but within the interval
    clock.sleep(600)
    driver.start()
    assert chip.commands[-1] == 0x39


def test_heater_on_request_respects_the_duty_cycle() -> None:
    bus, chip, clock = rig()
    with pytest.raises(NotReadyError, match="no heater"):
        SHT4x(bus=bus).request_heater()
    driver = SHT4x(bus=bus, clock=clock, heater="20mW-100ms", heater_interval=3600)
    driver.request_heater()
    clock.sleep(driver.start())
    assert chip.commands == [0x15]
    with pytest.raises(NotReadyError):
        driver.collect()
    clock.sleep(HEATER_COOLDOWN_S)
    driver.read(clock.sleep)
    assert chip.commands == [0x15, 0xFD]


# --- faults: typed error, then recovery on the next read ------------------------------------------
def fault_crc(bus: FakeSMBus, chip: FakeSHT4x) -> None:
    chip.corrupt_crc = 1


def fault_nack(bus: FakeSMBus, chip: FakeSHT4x) -> None:
    chip.fail_next(1)


def fault_stuck(bus: FakeSMBus, chip: FakeSHT4x) -> None:
    chip.stuck_busy = True


def fault_glitch(bus: FakeSMBus, chip: FakeSHT4x) -> None:
    chip.power_glitch()


def fault_gone(bus: FakeSMBus, chip: FakeSHT4x) -> None:
    bus.detach(ADDR)


def heal(bus: FakeSMBus, chip: FakeSHT4x) -> None:
    chip.stuck_busy = False
    bus.attach(ADDR, chip)


@pytest.mark.parametrize("fault, error, match", [
    (fault_crc, BadDataError, "CRC mismatch"),
    (fault_nack, BusError, "measurement command failed"),
    (fault_stuck, NotReadyError, "still running"),
    (fault_glitch, BusError, "measurement command failed"),
    (fault_gone, BusError, "EREMOTEIO"),
])
def test_fault_table(fault, error, match, caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig(celsius=22.0, humidity=40.0)
    driver = SHT4x(bus=bus)
    driver.read(clock.sleep)
    fault(bus, chip)
    with pytest.raises(error, match=match) as caught:
        driver.read(clock.sleep)
    assert isinstance(caught.value, SensorError) and "\n" not in str(caught.value)
    heal(bus, chip)
    with caplog.at_level(logging.INFO, logger="pibridge.drivers.sht4x"):
        sample = read_with_retries(driver, clock.sleep)   # recovers within one sample's retries
        sample2 = driver.read(clock.sleep)
    assert sample["temperature"] == pytest.approx(22.0, abs=0.003) and sample2 == sample
    resets = [r for r in caplog.records if "soft reset" in r.getMessage()]
    if error is not NotReadyError:
        assert len(resets) == 1  # says so once
        assert 0x94 in chip.commands


def test_absent_chip() -> None:
    bus = FakeSMBus(1)
    with pytest.raises(DeviceNotFoundError, match="nothing answers"):
        SHT4x(bus=bus).read(lambda s: None)


# --- simulation -----------------------------------------------------------------------------------
def test_simulator_reads_the_environment() -> None:
    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world:
        driver = world.build("sht4x", {"precision": "low"})
        sample = read_with_retries(driver, world.clock.sleep)
        assert -10 < sample["temperature"] < 45 and 0 <= sample["humidity"] <= 100


def test_fake_frame_packing_is_independent() -> None:
    assert pack_words(0x6666, 0x8000) == bytes.fromhex("66 66 93 80 00 A2")


def test_a_result_that_never_arrives_gets_a_soft_reset(caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig(celsius=15.0)
    driver = SHT4x(bus=bus)
    chip.stuck_busy = True
    for _ in range(2):
        with pytest.raises(NotReadyError, match="still running"):
            driver.read(clock.sleep)
    chip.stuck_busy = False
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.sht4x"):
        with pytest.raises(NotReadyError, match="soft reset done"):
            driver.read(clock.sleep)
        assert driver.read(clock.sleep)["temperature"] == pytest.approx(15.0, abs=0.003)
    assert chip.commands[-2:] == [0x94, 0xFD]
    assert [r.getMessage() for r in caplog.records] == [
        "SHT4x at 0x44: soft reset after 2 measurements that never arrived"]


def test_scan_names_a_chip_that_acks_the_bare_read_and_refuses_bad_serials() -> None:
    """A pending result makes the bare read succeed: the chip is then named through
    `identify_i2c`; a serial whose CRC fails is not an SHT4x's answer."""
    bus, chip, clock = rig(serial=0x00C0FFEE)
    chip.reread = "repeat"
    bus.write_byte(ADDR, 0xFD)
    clock.sleep(0.01)
    assert driver_commands.scan_i2c_bus(bus, sleep=clock.sleep) == [(ADDR, "SHT4x (serial 0x00c0ffee)")]
    from pibridge.drivers.sht4x import _name_serial

    assert _name_serial(bytes.fromhex("00 C0 1F FF EE 00")) is None
    assert _name_serial(pack_words(0x00C0, 0xFFEE)) == "SHT4x (serial 0x00c0ffee)"


def test_single_shot_steps_shared_by_sht3x_and_sht4x() -> None:
    """`sensirion.SingleShotSteps`: the phase, the reset reason and the not-there count of both
    single-shot drivers (one implementation)."""
    from pibridge.drivers import sensirion
    from pibridge.drivers.errors import NotReadyError as NotReady
    from pibridge.drivers.sht3x import SHT3x

    bus = FakeSMBus(1)
    assert isinstance(SHT4x(bus=bus)._steps, sensirion.SingleShotSteps)
    assert isinstance(SHT3x(bus=bus)._steps, sensirion.SingleShotSteps)
    steps = sensirion.SingleShotSteps(stuck_after=2)
    with pytest.raises(NotReady, match="x: collect\\(\\) before start\\(\\)"):
        steps.take_phase("x")

    def busy() -> bytes:
        raise NotReady("busy")

    for expected in (None, "2 measurements that never arrived"):
        with pytest.raises(NotReady):
            steps.result(busy, "x")
        assert steps.reset_reason == expected
    assert steps.reset_due() == "2 measurements that never arrived" and steps.not_there == 0
    with pytest.raises(BadDataError, match="x: CRC mismatch on word 1"):
        steps.result(lambda: bytes.fromhex("BEEF92 BEEF93"), "x")
    assert steps.reset_due() == "a CRC error" and steps.reset_due() is None
    assert steps.result(lambda: bytes.fromhex("BEEF92 BEEF92"), "x") == (0xBEEF, 0xBEEF)
    steps.phase = "measure"
    steps.transfer_failed()
    assert steps.phase is None and steps.reset_due() == "a failed transfer"
