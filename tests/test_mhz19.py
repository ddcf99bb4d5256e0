"""MH-Z19B/C: the manual's vectors, and the driver against a fake chip on a real pseudo-terminal
(pyserial, termios and the driver run as on a Pi): configuration written once, every wire fault
typed and followed by a good read, a port that vanishes and comes back."""

from __future__ import annotations

import os
import random
import select
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pibridge.drivers import BadDataError, BusError, ImplausibleValueError, NotReadyError, SensorError
from pibridge.drivers import mhz19 as chip
from pibridge.drivers.base import MAX_COLLECT_STEPS, CollectAgain, Sample, read_with_retries
from pibridge.drivers.fakes import VirtualClock
from pibridge.drivers.fakes.mhz19 import FakeMHZ19, mhz19_checksum
from pibridge.drivers.fakes.serial import input_waiter
from pibridge.drivers.serialport import SerialPortGoneError
from pibridge.drivers.simulation import SimulatedWorld

#: reads that must succeed wait this long for a reply (the fake answers at once; a loaded
#: machine must not turn scheduling delays into failures); faults that end in silence cost it
TIMEOUT_S = 0.5


@pytest.fixture
def fake() -> Iterator[FakeMHZ19]:
    chip_ = FakeMHZ19(ppm=812)
    yield chip_
    chip_.close()


def driver_on(fake: FakeMHZ19, **options: object) -> chip.MHZ19:
    return chip.MHZ19(fake.device, timeout_s=TIMEOUT_S, **options)


def waits(driver: chip.MHZ19) -> Callable[[float], None]:
    """The caller's wait: the driver never waits on the port, so the test waits what it asks for
    and, beyond it, for the reply's bytes to arrive (at most `TIMEOUT_S`)."""
    return input_waiter(driver.link, TIMEOUT_S)


# --- the manual's vectors ---------------------------------------------------------------------------
@pytest.mark.parametrize(("frame", "expected"), [
    (chip.READ_CO2_REQUEST, "ff 01 86 00 00 00 00 00 79"),
    (chip.abc_command(True), "ff 01 79 a0 00 00 00 00 e6"),
    (chip.abc_command(False), "ff 01 79 00 00 00 00 00 86"),
    (chip.command(chip.CMD_ZERO_POINT), "ff 01 87 00 00 00 00 00 78"),
    (chip.command(chip.CMD_SPAN_POINT, bytes([0x07, 0xD0])), "ff 01 88 07 d0 00 00 00 a0"),
    (chip.range_command(2000), "ff 01 99 00 00 00 07 d0 8f"),
    (chip.range_command(5000), "ff 01 99 00 00 00 13 88 cb"),
    (chip.range_command(10000), "ff 01 99 00 00 00 27 10 2f"),
])
def test_commands_are_the_manuals_bytes(frame: bytes, expected: str) -> None:
    assert frame.hex(" ") == expected


@pytest.mark.parametrize(("reply", "ppm", "celsius"), [
    ("ff 86 02 20 00 00 00 00 58", 544, -40),   # the manual's example (TT 0)
    ("ff 86 01 f4 41 40 00 00 04", 500, 25),
])
def test_reply_vectors(reply: str, ppm: int, celsius: int) -> None:
    frame = bytes.fromhex(reply)
    assert chip.reply_problem(frame) is None
    assert chip.parse_co2(frame) == ppm
    assert chip.internal_temperature_c(frame) == celsius
    broken = frame[:8] + bytes([frame[8] ^ 1])
    expected = f"checksum 0x{broken[8]:02x} != 0x{frame[8]:02x} in {broken.hex(' ')}"
    assert chip.reply_problem(broken) == expected


def test_the_fakes_checksum_is_an_independent_implementation_that_agrees() -> None:
    rng = random.Random(19)
    for _ in range(500):
        frame = bytes(rng.randrange(256) for _ in range(9))
        assert mhz19_checksum(frame) == chip.checksum(frame)


# --- through a pseudo-terminal ----------------------------------------------------------------------
def read_once_started(driver: chip.MHZ19, wait: float = chip.READ_TIME_S) -> Sample:
    """The rest of a reading `start` began: wait, collect, and again after each `CollectAgain`."""
    sleep = waits(driver)
    for _ in range(MAX_COLLECT_STEPS):
        sleep(wait)
        result = driver.collect()
        if not isinstance(result, CollectAgain):
            return result
        wait = result.wait_s
    raise AssertionError("no end to the collect steps")


def test_a_read_over_the_pty(fake: FakeMHZ19) -> None:
    with driver_on(fake) as driver:
        assert driver.start() == pytest.approx(chip.READ_TIME_S)
        assert read_once_started(driver) == {"co2": 812.0}
        fake.ppm = 1234
        assert driver.read(waits(driver)) == {"co2": 1234.0}
    assert bytes(fake.received[-9:]) == chip.READ_CO2_REQUEST


def test_configuration_is_written_once_not_per_read(fake: FakeMHZ19) -> None:
    with driver_on(fake, range=2000, self_calibration=False) as driver:
        for _ in range(5):
            driver.read(waits(driver))
    assert fake.commands == [chip.CMD_RANGE, chip.CMD_ABC] + [chip.CMD_READ_CO2] * 5
    assert fake.range_ppm == 2000 and fake.abc is False


def test_self_calibration_on_is_written(fake: FakeMHZ19) -> None:
    with driver_on(fake, range=10000, self_calibration=True) as driver:
        driver.read(waits(driver))
    assert fake.range_ppm == 10000 and fake.abc is True


def test_collect_before_start_is_not_ready(fake: FakeMHZ19) -> None:
    with driver_on(fake) as driver, pytest.raises(NotReadyError, match="collect\\(\\) before start"):
        driver.collect()


def test_a_value_above_the_range_is_implausible(fake: FakeMHZ19) -> None:
    fake.stuck_ppm = 2500
    driver = driver_on(fake, range=2000)
    with driver, pytest.raises(ImplausibleValueError, match="2500 ppm is above"):
        driver.read(waits(driver))


REPLY_800 = bytes.fromhex("ff 86 03 20 41 40 00 00 d6")


#: (id, fault set on the fake before one read, expected error or None (the read succeeds))
FAULTS: list[tuple[str, dict[str, object], type[SensorError] | None, str]] = [
    ("leading garbage", {"garbage_before_next": b"\x00\x13\xfe"}, None, ""),
    ("garbage with a stray FF", {"garbage_before_next": b"\xff\x01\xff"}, None, ""),
    ("a reply to another command first", {"garbage_before_next": bytes.fromhex("ff 99 00 00 00 00 00 00 67")},
     None, ""),
    ("a stray FF 86 with a bad checksum first", {"garbage_before_next": b"\xff\x86\x00"}, None, ""),
    ("frame split across reads", {"split_next": True}, None, ""),
    ("bad checksum", {"corrupt_next": True}, BadDataError, "checksum 0x"),
    ("truncated frame", {"truncate_next": 5}, BadDataError, "truncated 0x86 reply: 5 bytes, then silence"),
    ("garbage only", {"truncate_next": 0, "garbage_before_next": b"\x01\x02\x03"}, BadDataError,
     "3 bytes without a 0x86 reply"),
    ("silence", {"silent": True}, BusError, "no 0x86 reply: the sensor is silent"),
]


@pytest.mark.parametrize(("fault", "error", "message"), [(f, e, m) for _, f, e, m in FAULTS],
                         ids=[case for case, _, _, _ in FAULTS])
def test_wire_faults_are_typed_and_the_next_read_recovers(
        fake: FakeMHZ19, fault: dict[str, object], error: type[SensorError] | None, message: str) -> None:
    with driver_on(fake) as driver:
        driver.read(waits(driver))
        for name, value in fault.items():
            setattr(fake, name, value)
        if error is None:
            assert driver.read(waits(driver)) == {"co2": 812.0}
        else:
            with pytest.raises(error) as caught:
                driver.read(waits(driver))
            assert type(caught.value) is error and caught.value.retryable
            assert str(caught.value).startswith(f"MH-Z19 on {driver.port}: ") and message in str(caught.value)
            assert "\n" not in str(caught.value)
        fake.silent = False
        assert driver.read(waits(driver)) == {"co2": 812.0}  # the next frame is read as if nothing happened
    assert fake.commands.count(chip.CMD_RANGE) == 1


def test_a_glitch_is_retried_within_the_sample(fake: FakeMHZ19) -> None:
    with driver_on(fake) as driver:
        fake.corrupt_next = True
        assert read_with_retries(driver, waits(driver)) == {"co2": 812.0}


def test_an_injected_late_reply_is_discarded_before_the_next_request(fake: FakeMHZ19) -> None:
    assert chip.reply_problem(REPLY_800) is None and chip.parse_co2(REPLY_800) == 800
    with driver_on(fake) as driver:
        driver.read(waits(driver))
        fake.inject(REPLY_800)          # an old reply still in the buffer when the next read starts
        fake.ppm = 444
        port = driver.link._serial      # the pty delivers asynchronously: wait until it is there
        assert select.select([port.fileno()], [], [], 5.0)[0] and port.in_waiting == len(REPLY_800)
        assert driver.read(waits(driver)) == {"co2": 444.0}


@pytest.fixture
def usb_link(tmp_path: Path) -> Path:
    """A stable name for a port, as udev's /dev/serial/by-id links are: the test repoints it."""
    return tmp_path / "ttyUSB0"


def test_a_vanished_port_is_a_typed_error_and_the_replugged_one_is_used_again(usb_link: Path) -> None:
    first = FakeMHZ19(ppm=700)
    os.symlink(first.device, usb_link)
    driver = chip.MHZ19(timeout_s=TIMEOUT_S, port=str(usb_link))
    try:
        assert driver.read(waits(driver)) == {"co2": 700.0}
        first.unplug()                                       # the adapter is pulled
        with pytest.raises(SerialPortGoneError, match=f"MH-Z19 on {usb_link}: .* failed, port closed"):
            driver.read(waits(driver))
        with pytest.raises(SerialPortGoneError, match="cannot open: no such port") as caught:
            driver.read(waits(driver))                            # still gone: the node is missing
        assert not caught.value.retryable and "\n" not in str(caught.value)
        second = FakeMHZ19(ppm=900)                          # plugged in again (a new pty behind the link)
        os.unlink(usb_link)
        os.symlink(second.device, usb_link)
        try:
            assert driver.read(waits(driver)) == {"co2": 900.0}
            assert second.commands == [chip.CMD_RANGE, chip.CMD_ABC, chip.CMD_READ_CO2]  # configured again
            assert driver.link.opened == 2
        finally:
            driver.close()
            second.close()
    finally:
        driver.close()
        first.close()


def test_a_missing_port_fails_the_build_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SerialPortGoneError) as caught:
        chip.MHZ19(port=str(tmp_path / "ttyAMA9"))
    assert str(caught.value) == (f"MH-Z19 on {tmp_path / 'ttyAMA9'}: cannot open: no such port (UART not "
                                 "enabled, or USB adapter unplugged?)")


def test_a_port_locked_by_another_program_is_refused(fake: FakeMHZ19) -> None:
    with driver_on(fake), pytest.raises(SerialPortGoneError, match="port in use by another program"):
        driver_on(fake)


def test_closing_closes_the_port_and_is_idempotent(fake: FakeMHZ19) -> None:
    driver = driver_on(fake)
    driver.close()
    driver.close()
    assert not driver.link.is_open
    driver_on(fake).close()  # the port's lock was released


# --- simulation -------------------------------------------------------------------------------------
def fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pibridge-fake-mhz19")]


def test_simulated_driver_reads_the_worlds_co2_and_its_fake_stops_with_it() -> None:
    before = fake_threads()
    with SimulatedWorld(clock=VirtualClock()) as world:
        driver = world.build("mhz19", {"range": 2000})
        assert len(fake_threads()) == len(before) + 1
        sample = read_with_retries(driver, waits(driver))
        assert 380 <= sample["co2"] <= 2000
        driver.close()                                   # the sensor closes: its fake chip's thread ends
        assert fake_threads() == before
        assert not driver.link.is_open
    assert fake_threads() == before


def test_simulation_refuses_bad_options_before_making_a_fake() -> None:
    before = fake_threads()
    with SimulatedWorld(clock=VirtualClock()) as world, pytest.raises(SensorError, match="range"):
        world.build("mhz19", {"range": 3000})
    assert fake_threads() == before


def test_preheat_values_and_real_baud_timing() -> None:
    """The fake answers a fixed 500 ppm during its 3-minute preheat (the driver cannot tell: the
    reply has no documented status) and, paced at 9600 baud, still within the driver's read."""
    clock = VirtualClock()
    fake = FakeMHZ19(ppm=650, preheat_s=180.0, clock=clock, realtime=True)
    try:
        with driver_on(fake) as driver:
            assert driver.read(waits(driver)) == {"co2": 500.0}
            clock.sleep(180.0)
            assert driver.read(waits(driver)) == {"co2": 650.0}
    finally:
        fake.close()


def test_a_stuck_sensor_repeats_its_value(fake: FakeMHZ19) -> None:
    fake.stuck_ppm = 1000
    with driver_on(fake) as driver:
        values = {driver.read(waits(driver))["co2"] for _ in range(3)}
        fake.ppm = 400
        values.add(driver.read(waits(driver))["co2"])
    assert values == {1000.0}
