"""SCD30 driver and its command-level fake: the interface description's vectors, the float32
decoding against an independent IEEE-754 decoder, the ≥ 3 ms rule, settings written only when
they differ, pressure compensation, the Pi clock-stretching hint, every fault."""

from __future__ import annotations

import logging
import random
import struct
from fractions import Fraction

import pytest

from pibridge.drivers import CollectAgain, read_once
from pibridge.drivers.base import check_sample
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
from pibridge.drivers.fakes.scd30 import FakeSCD30, measurement_frame
from pibridge.drivers.scd30 import (
    CMD_ALTITUDE,
    CMD_FIRMWARE_VERSION,
    CMD_GET_DATA_READY,
    CMD_MEASUREMENT_INTERVAL,
    CMD_READ_MEASUREMENT,
    CMD_SELF_CALIBRATION,
    CMD_SOFT_RESET,
    CMD_START_CONTINUOUS,
    SCD30,
    DataReadyStuckError,
    MeasurementStoppedError,
    command_bytes,
    decode_measurement,
    firmware_version,
    pressure_argument,
    words_from_frame,
)
from pibridge.drivers.simulation import Environment, SimulatedWorld

ADDR = 0x61
VECTOR = bytes.fromhex("43DBCB8C2E8F41D970E7FFF54243BF3A1B74")
CO2 = 612.25


class Air:
    """Each measurement a little different, as a real module's always are (the driver refuses a
    frame identical to the last one as a stuck data-ready flag)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> tuple[float, float, float]:
        self.count += 1
        return CO2 + self.count / 64, 21.5, 48.0


def rig(**options):
    clock = VirtualClock()
    chip = FakeSCD30(source=Air(), clock=clock)
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    return bus, chip, clock, SCD30(bus=bus, clock=clock, **options)


def read(driver: SCD30, clock: VirtualClock) -> dict:
    return check_sample(driver, read_once(driver, clock.sleep))


def running(**options):
    """Set up (the first reading: not ready yet), then one interval later."""
    bus, chip, clock, driver = rig(**options)
    with pytest.raises(NotReadyError, match="continuous measurement started"):
        read(driver, clock)
    clock.sleep(driver.interval_s)
    return bus, chip, clock, driver


# --- the interface description's vectors (hardware.md §12.4) ----------------------------------------
def test_measurement_vector() -> None:
    co2, temperature, humidity = decode_measurement(VECTOR)
    assert (co2, temperature, humidity) == (439.09515380859375, 27.238279342651367, 48.80674362182617)


def test_command_vectors() -> None:
    assert command_bytes(CMD_MEASUREMENT_INTERVAL, 2) == bytes.fromhex("46000002E3")
    assert command_bytes(CMD_START_CONTINUOUS, pressure_argument(None)) == bytes.fromhex("0010000081")
    assert words_from_frame(bytes.fromhex("0001B0"), 1) == [1]
    assert firmware_version(0x0342) == "3.66"
    assert pressure_argument(98_712.0) == 987


def test_crc_mismatch_names_the_word() -> None:
    broken = VECTOR[:8] + bytes((VECTOR[8] ^ 1,)) + VECTOR[9:]
    with pytest.raises(BadDataError, match="word 2"):
        decode_measurement(broken)


# --- the float decoding against an independent implementation --------------------------------------
def ieee754_single(bits: int) -> Fraction | None:
    """IEEE-754 binary32 by hand (sign, biased exponent, fraction); None for inf/NaN."""
    sign = -1 if bits >> 31 else 1
    exponent = (bits >> 23) & 0xFF
    fraction = bits & 0x7FFFFF
    if exponent == 0xFF:
        return None
    if exponent == 0:   # subnormal
        return sign * Fraction(fraction, 1 << 23) * Fraction(1, 1 << 126)
    return sign * (1 + Fraction(fraction, 1 << 23)) * Fraction(2) ** (exponent - 127)


def frame_of(bits: list[int]) -> bytes:
    return measurement_frame(*struct.unpack(">fff", b"".join(b.to_bytes(4, "big") for b in bits)))


def test_decoding_agrees_with_a_hand_written_ieee754_decoder() -> None:
    rng = random.Random(30)
    corners = [0x00000000, 0x80000000, 0x00000001, 0x3F800000, 0xC1200000, 0x43DBCB8C, 0x7F7FFFFF,
               0x41D970E7, 0x4243BF3A, 0xC2200000]   # 0, -0, tiny, 1, -10 °C, vector, max, -40 °C
    cases = [corners[i:i + 3] for i in range(len(corners) - 2)]
    cases += [[rng.getrandbits(32) & 0x7F7FFFFF for _ in range(3)] for _ in range(3000)]
    for bits in cases:
        decoded = decode_measurement(frame_of(bits))
        for value, raw in zip(decoded, bits, strict=True):
            expected = ieee754_single(raw)
            assert expected is not None and Fraction(value) == expected, hex(raw)


# --- set-up and reading on the wire ----------------------------------------------------------------
def test_set_up_reads_back_and_writes_only_what_differs() -> None:
    bus, chip, clock, driver = rig(measurement_interval=5, self_calibration=True, altitude=420)
    assert chip.commands == [] and not bus.transfers
    with pytest.raises(NotReadyError, match="first measurement is due within 5 s"):
        read(driver, clock)
    assert chip.commands == [CMD_FIRMWARE_VERSION, CMD_MEASUREMENT_INTERVAL, CMD_MEASUREMENT_INTERVAL,
                             CMD_SELF_CALIBRATION, CMD_SELF_CALIBRATION, CMD_ALTITUDE, CMD_ALTITUDE,
                             CMD_START_CONTINUOUS, CMD_GET_DATA_READY]
    assert (chip.interval_s, chip.asc, chip.altitude, chip.measuring) == (5, 1, 420, True)
    assert driver.firmware == "3.66" and driver.writes == 3
    # a restart of the bridge: a new driver finds the stored settings and writes none of them
    again = SCD30(bus=bus, clock=clock, measurement_interval=5, self_calibration=True, altitude=420)
    flash = chip.flash_writes
    clock.sleep(5.0)
    assert read(again, clock)["co2"] == pytest.approx(CO2, abs=1)
    assert again.writes == 0 and chip.flash_writes == flash


def test_each_reply_is_read_3_ms_after_its_command_in_its_own_transaction() -> None:
    bus, chip, clock, driver = running()
    chip.commands.clear()
    wait = driver.start()
    assert wait == 0.003 and chip.commands == [CMD_GET_DATA_READY]
    with pytest.raises(NotReadyError):   # read at once (a repeated START would do this): NACK
        driver.collect()
    assert chip.early_reads == 1
    clock.sleep(0.003)
    driver.start()
    clock.sleep(0.003)
    step = driver.collect()
    assert step == CollectAgain(0.003) and chip.commands[-1] == CMD_READ_MEASUREMENT
    clock.sleep(0.003)
    assert driver.collect()["co2"] == pytest.approx(CO2, abs=1)
    writes_then_reads = [t[0] for t in list(bus.transfers)[-4:]]
    assert writes_then_reads == ["i2c_rdwr.write", "i2c_rdwr.read"] * 2


def test_settings_are_not_rewritten_on_every_read() -> None:
    _bus, chip, clock, driver = running(measurement_interval=2, self_calibration=False)
    chip.commands.clear()
    flash = chip.flash_writes
    for _ in range(20):
        read(driver, clock)
        clock.sleep(2.0)
    assert chip.commands == [CMD_GET_DATA_READY, CMD_READ_MEASUREMENT] * 20
    assert chip.flash_writes == flash


def test_a_stale_reading_is_never_returned_twice() -> None:
    _bus, chip, clock, driver = running()
    first = read(driver, clock)
    with pytest.raises(NotReadyError, match="no new measurement since the last one"):
        read(driver, clock)
    clock.sleep(1.0)
    with pytest.raises(NotReadyError):
        read(driver, clock)
    clock.sleep(1.0)
    second = read(driver, clock)
    assert second["co2"] != first["co2"] and chip.measurements == 2


# --- pressure ----------------------------------------------------------------------------------------
def test_ambient_pressure_option_starts_with_compensation() -> None:
    bus, chip, _clock, _driver = running(ambient_pressure=98_700)
    assert chip.pressure_mbar == 987
    assert ("i2c_rdwr.write", ADDR, None, list(command_bytes(CMD_START_CONTINUOUS, 987))) in bus.transfers


def test_handed_pressure_restarts_only_when_it_moved() -> None:
    _bus, chip, clock, driver = running()
    assert chip.pressure_mbar == 0
    driver.set_ambient_pressure(101_325.0)
    read(driver, clock)
    assert chip.pressure_mbar == 1013
    starts = chip.commands.count(CMD_START_CONTINUOUS)
    for pascal in (101_300.0, 101_400.0):
        clock.sleep(2.0)
        driver.set_ambient_pressure(pascal)
        read(driver, clock)
    assert chip.commands.count(CMD_START_CONTINUOUS) == starts
    clock.sleep(2.0)
    driver.set_ambient_pressure(101_500.0)
    read(driver, clock)
    assert chip.commands.count(CMD_START_CONTINUOUS) == starts + 1 and chip.pressure_mbar == 1015


# --- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, key, text", [
    ({"measurement_interval": 1}, "measurement_interval", "below the minimum 2"),
    ({"measurement_interval": 1801}, "measurement_interval", "above the maximum 1800"),
    ({"measurement_interval": 2.5}, "measurement_interval", "not a valid int"),
    ({"altitude": 10, "ambient_pressure": 100_000}, "ambient_pressure", "not both"),
    ({"ambient_pressure": 150_000}, "ambient_pressure", "above the maximum 140000"),
    ({"self_calibration": 2}, "self_calibration", "not a valid bool"),
])
def test_option_problems(options: dict, key: str, text: str) -> None:
    _config, problems = SCD30.validate(options)
    assert [p.key for p in problems] == [key] and text in problems[0].message
    with pytest.raises(ConfigurationError):
        SCD30(bus=FakeSMBus(1), **options)


def test_timing_follows_the_interval() -> None:
    assert SCD30.timing_for(SCD30.check_options({"measurement_interval": 60})).min_interval_s == 60.0


# --- faults --------------------------------------------------------------------------------------------
def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_one_crc_error_is_retried_without_a_hint(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running()
    chip.corrupt_crc = 1
    with caplog.at_level(logging.WARNING), pytest.raises(BadDataError, match="data-ready read: CRC"):
        read(driver, clock)
    assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)
    assert not driver.stretch_hint_given and warnings(caplog) == []


def test_crc_errors_in_bursts_name_the_software_i2c_fix_once(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            chip.corrupt_crc = 3
            for _ in range(3):
                with pytest.raises(BadDataError):
                    read(driver, clock)
            assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)
            clock.sleep(2.0)
    hints = [m for m in warnings(caplog) if "CRC errors in bursts" in m]
    assert len(hints) == 1 and "\n" not in hints[0]
    assert "dtoverlay=i2c-gpio" in hints[0] and "i2c_bus = 3" in hints[0]


def test_errno_121_burst_then_recovery() -> None:
    _bus, chip, clock, driver = running()
    chip.fail_next(3)
    for _ in range(3):
        with pytest.raises(BusError):
            read(driver, clock)
    assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)


def test_lost_measurement_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running()
    read(driver, clock)
    chip.measuring, chip.next_measurement_at = False, None     # it stopped (the fake's state)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            clock.sleep(2.0)
            with pytest.raises(NotReadyError) as not_ready:
                read(driver, clock)
    assert isinstance(not_ready.value, MeasurementStoppedError)
    assert len([m for m in warnings(caplog) if "stopped measuring" in m]) == 1
    with pytest.raises(NotReadyError, match="started"):
        read(driver, clock)
    assert chip.measuring and driver.setups == 2
    clock.sleep(2.0)
    assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)


def test_a_power_cycle_keeps_the_settings_and_the_reading_resumes() -> None:
    _bus, chip, clock, driver = running(measurement_interval=5, altitude=100)
    read(driver, clock)
    chip.power_cycle()
    with pytest.raises(BusError):        # booting: deaf for 2 s
        read(driver, clock)
    clock.sleep(7.0)
    assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)
    assert (chip.interval_s, chip.altitude) == (5, 100)


def test_stuck_data_ready_never_sends_the_same_frame_twice(caplog: pytest.LogCaptureFixture) -> None:
    _bus, chip, clock, driver = running()
    first = read(driver, clock)
    chip.stuck_data_ready = True
    with caplog.at_level(logging.WARNING), pytest.raises(DataReadyStuckError):
        read(driver, clock)
    assert chip.commands[-1] == CMD_SOFT_RESET
    assert len([m for m in warnings(caplog) if "stuck data-ready" in m]) == 1
    clock.sleep(2.0)
    with pytest.raises(NotReadyError):
        read(driver, clock)               # set up again after the reset
    clock.sleep(2.0)
    assert read(driver, clock)["co2"] > first["co2"]


def test_after_a_soft_reset_the_driver_waits_the_boot_before_talking_to_the_module() -> None:
    """The module is deaf for 2 s after 0xD304 (the fake too): a reading within them is
    `NotReadyError` without bus traffic, not a NACK; after them it is set up again."""
    _bus, chip, clock, driver = running()
    read(driver, clock)
    chip.stuck_data_ready = True
    with pytest.raises(DataReadyStuckError):
        read(driver, clock)
    chip.stuck_data_ready = False
    sent = len(chip.commands)
    clock.sleep(0.1)                                        # a retry 0.1 s later
    with pytest.raises(NotReadyError, match=r"soft reset sent; the module boots, ready in 1\.9 s") as caught:
        read(driver, clock)
    assert type(caught.value) is NotReadyError and len(chip.commands) == sent
    clock.sleep(1.9)
    with pytest.raises(NotReadyError, match="continuous measurement started"):
        read(driver, clock)                                 # set up again: the module answers
    assert chip.soft_reset_s == 2.0


def test_nothing_at_the_address_is_device_not_found() -> None:
    clock = VirtualClock()
    with pytest.raises(DeviceNotFoundError):
        read(SCD30(bus=FakeSMBus(1), clock=clock), clock)


@pytest.mark.parametrize("fault", ["crc", "crc_burst", "busy_nack", "lost", "stuck_ready", "gone"])
def test_fault_table_typed_error_then_recovery(fault: str) -> None:
    bus, chip, clock, driver = running()
    read(driver, clock)
    clock.sleep(2.0)
    if fault == "crc":
        chip.corrupt_crc = 1
    elif fault == "crc_burst":
        chip.corrupt_crc = 4
    elif fault == "busy_nack":
        chip.fail_next(2)
    elif fault == "lost":
        chip.measuring, chip.next_measurement_at = False, None
        clock.sleep(6.0)
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
            assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)
            return
        except SensorError:
            clock.sleep(1.0)
    pytest.fail(f"no recovery from {fault}")


# --- scan, simulation ------------------------------------------------------------------------------
def test_scan_names_the_firmware() -> None:
    from pibridge.cli.driver_commands import identify_i2c

    bus, _chip, clock, driver = running()
    assert identify_i2c(bus, ADDR, sleep=clock.sleep) == "SCD30 (CO2, firmware 3.66)"
    assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)


def test_scan_of_something_else_at_0x61() -> None:
    from pibridge.cli.driver_commands import identify_i2c

    class Mute(FakeSCD30):
        def i2c_read(self, length: int) -> bytes:
            return b"\x00" * length   # answers, but not with Sensirion words

    bus = FakeSMBus(1)
    bus.attach(ADDR, Mute(clock=VirtualClock()))
    assert identify_i2c(bus, ADDR, sleep=lambda s: None) == "unknown (does not answer as an SCD30)"


def test_simulated_reads_the_greenhouse_co2() -> None:
    clock = VirtualClock()
    afternoon = Environment(seed=3, clock=lambda: 15 * 3600.0)
    with SimulatedWorld(afternoon, clock=clock, door_timer=False) as world:
        driver = world.build("scd30", {"measurement_interval": 5})
        with pytest.raises(NotReadyError):
            read_once(driver, clock.sleep)
        clock.sleep(5.0)
        sample = check_sample(driver, read_once(driver, clock.sleep))
    assert 400 <= sample["co2"] <= 600


def test_struct_decoding_is_big_endian() -> None:
    assert struct.unpack(">f", bytes.fromhex("43DB8C2E"))[0] == pytest.approx(439.09515)


def test_forced_recalibration_is_an_explicit_checked_command() -> None:
    _bus, chip, clock, driver = running()
    driver.forced_recalibration(450)
    assert chip.frc_ppm == 450 and chip.commands[-1] == 0x5204 and chip.measuring
    with pytest.raises(ConfigurationError, match="outside 400–2000 ppm"):
        driver.forced_recalibration(3000)
    clock.sleep(2.0)
    assert read(driver, clock)["co2"] == pytest.approx(CO2, abs=1)
