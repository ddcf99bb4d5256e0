"""AHT20/AHT10 driver and its byte-level fake: captured frames, an exact cross-check, the
calibration sequence, the two phases on virtual time, every fault, and the simulator."""

from __future__ import annotations

import logging
import random
from fractions import Fraction

import pytest

from pibridge.drivers import SimulatedWorld, read_with_retries
from pibridge.drivers.aht20 import AHT20, frame_crc_ok, parse_frame, ticks_to_celsius, ticks_to_humidity
from pibridge.drivers.base import check_sample
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.aht20 import FakeAHT20
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus

ADDR = 0x38
INIT, TRIGGER, PROBE = b"\xbe\x08\x00", b"\xac\x33\x00", b"\xe1\x08\x00"


def rig(address: int = ADDR, **fake: object) -> tuple[FakeSMBus, FakeAHT20, VirtualClock]:
    clock = VirtualClock()
    chip = FakeAHT20(clock=clock, **fake)  # type: ignore[arg-type]
    bus = FakeSMBus(1)
    bus.attach(address, chip)
    return bus, chip, clock


# --- maths: real captured frames (hardware.md §9.5) -----------------------------------------------
@pytest.mark.parametrize("frame, s_rh, s_t, humidity, celsius", [
    ("1C 26 9A 76 42 E7 76", 158119, 410343, 15.079403, 28.266716),
    ("18 93 AC 95 2A C5 B3", 604873, 338629, 57.685184, 14.588356),
])
def test_captured_frames(frame: str, s_rh: int, s_t: int, humidity: float, celsius: float) -> None:
    data = bytes.fromhex(frame)
    assert frame_crc_ok(data)
    status, raw_rh, raw_t = parse_frame(data)
    assert (raw_rh, raw_t) == (s_rh, s_t) and status & 0x08 and not status & 0x80
    assert ticks_to_humidity(raw_rh) == pytest.approx(humidity, abs=5e-7)
    assert ticks_to_celsius(raw_t) == pytest.approx(celsius, abs=5e-7)
    assert not frame_crc_ok(data[:6] + bytes([data[6] ^ 1]))


def test_cross_check_against_exact_fractions() -> None:
    rng = random.Random(20)
    raws = [0, 1, 0x3FFFF, 0x40000, 262143, 262144, 0x80000, 0xFFFFE, 0xFFFFF]
    raws += [rng.randrange(1 << 20) for _ in range(2000)]
    for raw in raws:
        assert ticks_to_humidity(raw) == float(Fraction(raw * 100, 1 << 20)), raw   # exact in binary
        assert abs(ticks_to_celsius(raw) - float(Fraction(raw * 200, 1 << 20) - 50)) < 1e-12, raw
    assert ticks_to_celsius(0) == -50.0 and ticks_to_celsius(262143) < 0 == ticks_to_celsius(262144)
    assert ticks_to_humidity(0xFFFFF) == pytest.approx(99.9999, abs=1e-4)


# --- the driver on the fake -----------------------------------------------------------------------
def test_first_read_calibrates_then_measures() -> None:
    bus, chip, clock = rig(celsius=28.266716, humidity=15.079403)
    driver = AHT20(bus=bus)
    assert not bus.transfers
    with pytest.raises(NotReadyError, match="measuring on the next attempt"):
        driver.read(clock.sleep)
    assert chip.calibrated and chip.writes == [INIT]   # at 0x38 an AHT20: its own command, no E1 probe
    assert driver.variant == "AHT20"
    start = clock()
    sample = check_sample(driver, driver.read(clock.sleep))
    assert clock() - start == pytest.approx(0.081)
    assert sample == {"temperature": pytest.approx(28.266716, abs=1e-4),
                      "humidity": pytest.approx(15.079403, abs=1e-4)}
    assert chip.writes == [INIT, TRIGGER]
    assert [t[0] for t in bus.transfers] == ["i2c_rdwr.read", "i2c_rdwr.write",
                                             "i2c_rdwr.read", "i2c_rdwr.write", "i2c_rdwr.read"]
    assert bus.transfers[-1][3] == 7   # status, 5 data bytes, CRC
    driver.read(clock.sleep)
    assert chip.writes == [INIT, TRIGGER, TRIGGER]  # the status is checked once, not every read


def test_calibrated_at_power_on_measures_at_once() -> None:
    bus, chip, clock = rig(calibrated_at_power_on=True)
    assert AHT20(bus=bus).read(clock.sleep)["humidity"] == pytest.approx(50.0, abs=1e-4)
    assert chip.writes == [TRIGGER]


def test_an_aht20_that_accepts_e1_is_still_an_aht20() -> None:
    """hardware.md §9.6: the NACK of E1 is variable; an AHT20 that takes it must not be read as
    an AHT10 (6 bytes, no CRC check): at 0x38 the driver sends the AHT20's own command."""
    bus, chip, clock = rig(accepts_e1=True, celsius=14.588356, humidity=57.685184)
    driver = AHT20(bus=bus)
    sample = read_with_retries(driver, clock.sleep)
    assert driver.variant == "AHT20" and PROBE not in chip.writes and chip.writes[0] == INIT
    assert bus.transfers[-1][3] == 7                                  # with its CRC byte
    assert sample == {"temperature": pytest.approx(14.588356, abs=1e-4),
                      "humidity": pytest.approx(57.685184, abs=1e-4)}


def test_a_corrupted_status_byte_is_bad_data_not_busy() -> None:
    """The CRC covers the status byte and is checked first: a flipped busy bit is `BadDataError`
    (retried at once), not "still measuring" (which would count towards a soft reset)."""
    bus, chip, clock = rig(calibrated_at_power_on=True)
    driver = AHT20(bus=bus)
    driver.read(clock.sleep)
    for _ in range(2):
        chip.corrupt_status = 1
        with pytest.raises(BadDataError, match="CRC mismatch"):
            driver.read(clock.sleep)
    assert driver.read(clock.sleep)["humidity"] == pytest.approx(50.0, abs=1e-4)
    assert b"\xba" not in chip.writes                                  # no soft reset


def test_an_aht10_at_0x38_by_the_option_and_a_hint_without_it() -> None:
    bus, _chip, clock = rig(aht10=True, calibrated_at_power_on=True)
    with pytest.raises(BadDataError, match='an AHT10 sends no CRC: set variant = "aht10"'):
        read_with_retries(AHT20(bus=bus), clock.sleep)       # auto: 0x38 is an AHT20
    driver = AHT20(bus=bus, variant="aht10")
    assert read_with_retries(driver, clock.sleep)["humidity"] == pytest.approx(50.0, abs=1e-4)
    assert driver.variant == "AHT10"


def test_an_aht20_at_0x39_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="an AHT20 is always at 0x38"):
        AHT20(bus=FakeSMBus(1), address=0x39, variant="aht20")


def test_too_early_is_busy() -> None:
    bus, _chip, clock = rig(calibrated_at_power_on=True)
    driver = AHT20(bus=bus)
    driver.start()
    clock.sleep(0.04)
    with pytest.raises(NotReadyError, match="busy bit set"):
        driver.collect()


@pytest.mark.parametrize("address, calibrated", [(0x38, False), (0x38, True), (0x39, False)])
def test_aht10(address: int, calibrated: bool) -> None:
    bus, chip, clock = rig(address, aht10=True, celsius=-12.5, humidity=80.0,
                           calibrated_at_power_on=calibrated)
    driver = AHT20(bus=bus, address=address, **({"variant": "aht10"} if address == 0x38 else {}))
    sample = read_with_retries(driver, clock.sleep)
    assert sample == {"temperature": pytest.approx(-12.5, abs=1e-3),
                      "humidity": pytest.approx(80.0, abs=1e-4)}
    assert driver.variant == "AHT10" and bus.transfers[-1][3] == 6   # no CRC byte
    assert chip.writes[-2:] == [b"\xe1\x08\x00", TRIGGER]


# --- faults ---------------------------------------------------------------------------------------
def fault_crc(bus: FakeSMBus, chip: FakeAHT20) -> None:
    chip.corrupt_crc = 1


def fault_zero(bus: FakeSMBus, chip: FakeAHT20) -> None:
    chip.zero_humidity = True


def fault_nack(bus: FakeSMBus, chip: FakeAHT20) -> None:
    chip.fail_next(1)


def fault_stuck(bus: FakeSMBus, chip: FakeAHT20) -> None:
    chip.stuck_busy = True


def fault_glitch(bus: FakeSMBus, chip: FakeAHT20) -> None:
    chip.calibrated_at_power_on = False   # a part that powers up uncalibrated
    chip.power_glitch()


def fault_gone(bus: FakeSMBus, chip: FakeAHT20) -> None:
    bus.detach(ADDR)


@pytest.mark.parametrize("fault, error, match", [
    (fault_crc, BadDataError, "CRC mismatch"),
    (fault_zero, ImplausibleValueError, "all zero"),
    (fault_nack, BusError, "measurement trigger failed"),
    (fault_stuck, NotReadyError, "busy bit set"),
    (fault_glitch, NotReadyError, "calibration bit cleared"),
    (fault_gone, BusError, "EREMOTEIO"),
])
def test_fault_table(fault, error, match) -> None:
    bus, chip, clock = rig(celsius=22.0, humidity=40.0, calibrated_at_power_on=True)
    driver = AHT20(bus=bus)
    driver.read(clock.sleep)
    fault(bus, chip)
    with pytest.raises(error, match=match) as caught:
        driver.read(clock.sleep)
    assert isinstance(caught.value, SensorError) and "\n" not in str(caught.value)
    chip.stuck_busy = chip.zero_humidity = False
    bus.attach(ADDR, chip)
    assert read_with_retries(driver, clock.sleep)["humidity"] == pytest.approx(40.0, abs=1e-4)
    assert driver.read(clock.sleep)["temperature"] == pytest.approx(22.0, abs=1e-3)


def test_lost_calibration_is_restored_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig(calibrated_at_power_on=False)
    driver = AHT20(bus=bus)
    read_with_retries(driver, clock.sleep)
    chip.power_glitch()
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.aht20"):
        with pytest.raises(NotReadyError, match="calibration bit cleared"):
            driver.read(clock.sleep)
        read_with_retries(driver, clock.sleep)
        driver.read(clock.sleep)
    assert [r.getMessage() for r in caplog.records] == [
        "AHT20 at 0x38: calibration bit cleared (power glitch?); calibrated again"]
    assert chip.writes.count(INIT) == 2


def test_stuck_busy_gets_a_soft_reset(caplog: pytest.LogCaptureFixture) -> None:
    bus, chip, clock = rig(calibrated_at_power_on=True)
    driver = AHT20(bus=bus)
    chip.stuck_busy = True
    for _ in range(2):
        with pytest.raises(NotReadyError, match="busy"):
            driver.read(clock.sleep)
    chip.stuck_busy = False
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.aht20"):
        assert read_with_retries(driver, clock.sleep)["humidity"] == pytest.approx(50.0, abs=1e-4)
    assert b"\xba" in chip.writes
    assert [r.getMessage() for r in caplog.records] == [
        "AHT20 at 0x38: soft reset after 2 busy frames in a row"]


def test_absent_chip() -> None:
    with pytest.raises(DeviceNotFoundError, match="nothing answers"):
        AHT20(bus=FakeSMBus(1)).read(lambda s: None)


def test_simulator_reads_the_environment() -> None:
    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world:
        sample = read_with_retries(world.build("aht20"), world.clock.sleep)
        assert -10 < sample["temperature"] < 45 and 0 < sample["humidity"] <= 100
