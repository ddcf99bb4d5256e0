"""PMS5003: the frame vector and command bytes, and the driver against a fake chip on a real
pseudo-terminal in both modes: the fan's warm-up and sleep on a virtual clock, the SET pin,
configuration written once, every wire fault typed and followed by a good read, a vanished port."""

from __future__ import annotations

import os
import random
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from pibridge.drivers import BadDataError, BusError, NotReadyError, SensorError
from pibridge.drivers import pms5003 as chip
from pibridge.drivers.base import MAX_COLLECT_STEPS, CollectAgain, Sample
from pibridge.drivers.fakes import VirtualClock
from pibridge.drivers.fakes.pms5003 import FakePMS5003, pms_sum
from pibridge.drivers.fakes.serial import input_waiter
from pibridge.drivers.serialport import SerialPortGoneError
from pibridge.drivers.simulation import SimulatedWorld

TIMEOUT_S = 0.5
VECTOR = bytes.fromhex("42 4D 00 1C 00 28 00 3E 00 47 00 1F 00 2D 00 3A 1D 4C 08 98 01 E0 00 28 00 06 00 02 "
                       "97 00 04 8F")
PM = (31.0, 45.0, 58.0)
EXPECTED = {"pm1_0": 31.0, "pm2_5": 45.0, "pm10": 58.0}
WAKE, SLEEP = (chip.CMD_SLEEP, chip.WAKE), (chip.CMD_SLEEP, chip.SLEEP)
READ = (chip.CMD_READ, 0)
PASSIVE, ACTIVE = (chip.CMD_MODE, chip.MODE_PASSIVE), (chip.CMD_MODE, chip.MODE_ACTIVE)


# --- vectors ----------------------------------------------------------------------------------------
def test_the_frame_vector() -> None:
    assert chip.frame_size(VECTOR[:4]) == 32
    assert chip.frame_problem(VECTOR) is None
    assert chip.parse_frame(VECTOR) == {
        "pm1_0": 31, "pm2_5": 45, "pm10": 58,     # atmospheric, not the CF=1 40/62/71
        "particles_0_3": 7500, "particles_0_5": 2200, "particles_1_0": 480, "particles_2_5": 40,
        "particles_5_0": 6, "particles_10": 2}
    assert chip.frame_problem(VECTOR[:-1] + b"\x90") == "checksum 0x0490 != 0x048f"


@pytest.mark.parametrize(("command", "expected"), [
    (chip.READ_REQUEST, "42 4d e2 00 00 01 71"),
    (chip.PASSIVE_MODE, "42 4d e1 00 00 01 70"),
    (chip.ACTIVE_MODE, "42 4d e1 00 01 01 71"),
    (chip.SLEEP_COMMAND, "42 4d e4 00 00 01 73"),
    (chip.WAKE_COMMAND, "42 4d e4 00 01 01 74"),
])
def test_command_bytes(command: bytes, expected: str) -> None:
    assert command.hex(" ") == expected


@pytest.mark.parametrize("ack", ["42 4d 00 04 e1 00 01 74", "42 4d 00 04 e1 01 01 75",
                                 "42 4d 00 04 e4 00 01 77"])
def test_acks_are_frames_of_length_four(ack: str) -> None:
    frame = bytes.fromhex(ack)
    assert chip.frame_size(frame[:4]) == 8 and chip.frame_problem(frame) is None


@pytest.mark.parametrize("length", [0, 3, 20, 27, 29, 0x424D])
def test_other_length_fields_are_impossible(length: int) -> None:
    assert chip.frame_size(b"BM" + length.to_bytes(2, "big")) is None


def test_the_fakes_checksum_is_an_independent_implementation_that_agrees() -> None:
    rng = random.Random(5003)
    for _ in range(300):
        frame = bytes(rng.randrange(256) for _ in range(32))
        assert chip.frame_problem(frame[:30] + pms_sum(frame[:30]).to_bytes(2, "big")) is None


# --- passive mode on a virtual clock ----------------------------------------------------------------
@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake(clock: VirtualClock) -> Iterator[FakePMS5003]:
    chip_ = FakePMS5003(pm=PM, clock=clock)
    yield chip_
    chip_.close()


def input_arrives(driver: chip.PMS5003, count: int) -> bool:
    """Wait until ``count`` bytes are readable at the driver's port: a pty hands written bytes
    over asynchronously, so "sent" at the fake is not yet "arrived" at the driver."""
    port = driver.link._serial
    for _ in range(10_000):
        if port.in_waiting >= count:
            return True
        select.select([port.fileno()], [], [], 0.01)   # returns at once while bytes are waiting
    return False


def commands_are(fake: FakePMS5003, expected: list[tuple[int, int]]) -> bool:
    """Whether the fake received exactly these commands (waiting for them to arrive)."""
    fake.wait_until(lambda: len(fake.commands) >= len(expected))
    return fake.commands == expected


def passive_driver(fake: FakePMS5003, clock: VirtualClock, **options: object) -> chip.PMS5003:
    return chip.PMS5003(fake.device, timeout_s=TIMEOUT_S, clock=clock, mode="passive", **options)


def start_and_wait(driver: chip.PMS5003, fake: FakePMS5003, clock: VirtualClock) -> None:
    """``start()`` and the wait it asks for, on virtual time: the fake sees the wake (a command
    or the SET pin) before the clock jumps, as it would on the wire."""
    wait = driver.start()
    assert caught_up(fake, driver) and fake.wait_until(lambda: fake.awake)
    clock.sleep(wait)


def finish(driver: chip.PMS5003, clock: VirtualClock) -> Sample:
    """``collect()`` until the reading ends, waiting (virtual time for the fake's clock, and real
    time until the bytes arrive: a pty delivers them asynchronously) after each `CollectAgain`."""
    sleep = input_waiter(driver.link, TIMEOUT_S)
    for _ in range(MAX_COLLECT_STEPS):
        result = driver.collect()
        if not isinstance(result, CollectAgain):
            return result
        clock.sleep(result.wait_s)
        sleep(result.wait_s)
    raise AssertionError("no end to the collect steps")


def caught_up(fake: FakePMS5003, driver: chip.PMS5003) -> bool:
    """Wait until the fake has handled every byte the driver wrote to its current port."""
    return fake.wait_until(lambda: fake.received_total >= driver.link.sent_bytes)


def test_passive_read_waits_the_warm_up_reads_and_sleeps(fake: FakePMS5003, clock: VirtualClock) -> None:
    with passive_driver(fake, clock) as driver:
        assert commands_are(fake, [WAKE, PASSIVE]) and not fake.sleeping   # on until the first sample
        wait = driver.start()
        assert caught_up(fake, driver)
        assert wait == pytest.approx(chip.PASSIVE_READ_TIME_S)    # the warm-up since the build
        assert commands_are(fake, [WAKE, PASSIVE]) and not fake.sleeping
        clock.sleep(10.0)
        with pytest.raises(NotReadyError, match=r"fan warming up, 20\.0 s left"):
            driver.collect()  # raised at once: nothing sent
        clock.sleep(wait - 10.0)
        assert finish(driver, clock) == EXPECTED
        assert commands_are(fake, [WAKE, PASSIVE, READ, SLEEP]) and fake.sleeping
        start_and_wait(driver, fake, clock)                     # the next sample wakes it again
        assert finish(driver, clock) == EXPECTED
        assert commands_are(fake, [WAKE, PASSIVE, READ, SLEEP, WAKE, READ, SLEEP])
    assert driver.timing.min_interval_s == pytest.approx(chip.PASSIVE_READ_TIME_S)


def test_configuration_is_written_once_not_per_read(fake: FakePMS5003, clock: VirtualClock) -> None:
    with passive_driver(fake, clock) as driver:
        for _ in range(4):
            start_and_wait(driver, fake, clock)
            assert finish(driver, clock) == EXPECTED
    assert commands_are(fake, [WAKE, PASSIVE, READ, SLEEP] + [WAKE, READ, SLEEP] * 3)


def test_a_retry_while_awake_does_not_wait_the_warm_up_again(fake: FakePMS5003, clock: VirtualClock) -> None:
    with passive_driver(fake, clock) as driver:
        start_and_wait(driver, fake, clock)
        fake.corrupt_next = True
        with pytest.raises(BadDataError, match="checksum"):
            finish(driver, clock)
        assert driver.start() == pytest.approx(chip.FRAME_TIME_S + chip.SENSOR_LATENCY_S)
        assert finish(driver, clock) == EXPECTED         # stayed awake for the retry: no second wake
        assert commands_are(fake, [WAKE, PASSIVE, READ, READ, SLEEP]) and fake.sleeping


def test_counts_option_adds_the_particle_counts(fake: FakePMS5003, clock: VirtualClock) -> None:
    with passive_driver(fake, clock, counts=True) as driver:
        assert [m.key for m in driver.active_metrics()] == [*chip.PM_KEYS, *chip.COUNT_KEYS]
        start_and_wait(driver, fake, clock)
        sample = finish(driver, clock)
    assert set(sample) == {*chip.PM_KEYS, *chip.COUNT_KEYS}
    assert all(isinstance(sample[k], int) for k in chip.COUNT_KEYS) and sample["particles_0_3"] > 0


def test_the_set_pin_sleeps_the_fan_instead_of_commands(clock: VirtualClock) -> None:
    factory = MockFactory()
    pin = factory.pin(22)
    fake = FakePMS5003(pm=PM, clock=clock, set_level=lambda: bool(pin.state))
    try:
        with chip.PMS5003(fake.device, timeout_s=TIMEOUT_S, clock=clock, pin_factory=factory, mode="passive",
                          set_pin=22) as driver:
            assert pin.state == 1 and commands_are(fake, [PASSIVE])
            start_and_wait(driver, fake, clock)
            assert finish(driver, clock) == EXPECTED
            assert pin.state == 0 and fake.awake is False
            start_and_wait(driver, fake, clock)
            assert pin.state == 1
            assert finish(driver, clock) == EXPECTED
            assert pin.state == 0
            assert commands_are(fake, [PASSIVE, READ, READ])        # no sleep/wake commands
        assert chip.PMS5003.resources(driver.config).gpio == (22,)
    finally:
        fake.close()
        factory.close()


# --- active mode --------------------------------------------------------------------------------------
def test_active_mode_takes_the_newest_frame_after_the_start(fake: FakePMS5003, clock: VirtualClock) -> None:
    with chip.PMS5003(fake.device, timeout_s=TIMEOUT_S, clock=clock) as driver:
        assert commands_are(fake, [WAKE, ACTIVE])
        fake.wait_sent(1)                            # the mode's ack
        fake.pm = (1.0, 2.0, 3.0)
        fake.send_frame()                            # buffered before start(): discarded
        assert input_arrives(driver, chip.ACK_FRAME_LEN + chip.DATA_FRAME_LEN)
        wait = driver.start()
        assert wait == pytest.approx(chip.ACTIVE_READ_TIME_S)
        fake.pm = (5.0, 6.0, 7.0)
        fake.send_frame()
        fake.pm = PM
        sent = fake.sent_frames
        clock.sleep(wait)                            # the chip's own cadence sends the next frame
        fake.poke()
        assert fake.wait_sent(sent + 1)
        assert input_arrives(driver, 2 * chip.DATA_FRAME_LEN)
        assert finish(driver, clock) == EXPECTED
    assert fake.commands == [WAKE, ACTIVE]           # nothing is sent per read in active mode


def test_active_mode_with_garbage_and_a_split_frame(fake: FakePMS5003, clock: VirtualClock) -> None:
    with chip.PMS5003(fake.device, timeout_s=TIMEOUT_S, clock=clock) as driver:
        assert fake.wait_sent(1)                     # the mode's ack, before the injected bytes
        driver.start()
        fake.inject(b"\x42\x00BM\x00")
        fake.split_next = True
        fake.send_frame()
        assert finish(driver, clock) == EXPECTED


def test_active_mode_silent_fan_is_a_bus_error(fake: FakePMS5003, clock: VirtualClock) -> None:
    with chip.PMS5003(fake.device, timeout_s=TIMEOUT_S, clock=clock) as driver:
        fake.silent = True
        start_and_wait(driver, fake, clock)
        with pytest.raises(BusError, match="no frame: the sensor is silent"):
            finish(driver, clock)


# --- the wire-fault table (passive: one frame per request) ---------------------------------------------
FAULTS: list[tuple[str, dict[str, object], type[SensorError] | None, str]] = [
    ("leading garbage", {"garbage_before_next": b"\x00\xff\x13"}, None, ""),
    ("a stray 0x42 and BM in the garbage", {"garbage_before_next": b"\x42\x42BM\x00\x1c\x00"}, None, ""),
    ("an ack before the frame", {"garbage_before_next": bytes.fromhex("42 4d 00 04 e1 00 01 74")}, None, ""),
    ("frame split across reads", {"split_next": True}, None, ""),
    ("bad checksum", {"corrupt_next": True}, BadDataError, "checksum 0x"),
    ("wrong length field", {"wrong_length_next": True}, BadDataError, "impossible header 42 4d 00 30"),
    ("truncated frame", {"truncate_next": 20}, BadDataError, "truncated frame: 20 bytes, then silence"),
    ("garbage only", {"truncate_next": 0, "garbage_before_next": b"\x01\x02"}, BadDataError,
     "2 bytes without a frame"),
    ("silent fan", {"silent": True}, BusError, "no frame: the sensor is silent"),
]


@pytest.mark.parametrize(("fault", "error", "message"), [(f, e, m) for _, f, e, m in FAULTS],
                         ids=[case for case, _, _, _ in FAULTS])
def test_wire_faults_are_typed_and_the_next_read_recovers(
        fake: FakePMS5003, clock: VirtualClock, fault: dict[str, object], error: type[SensorError] | None,
        message: str) -> None:
    with passive_driver(fake, clock) as driver:
        start_and_wait(driver, fake, clock)
        for name, value in fault.items():
            setattr(fake, name, value)
        if error is None:
            assert finish(driver, clock) == EXPECTED
        else:
            with pytest.raises(error) as caught:
                finish(driver, clock)
            assert type(caught.value) is error and caught.value.retryable
            assert str(caught.value).startswith(f"PMS5003 on {driver.port}: ")
            assert message in str(caught.value)
            assert "\n" not in str(caught.value)
        fake.silent = False
        start_and_wait(driver, fake, clock)
        assert finish(driver, clock) == EXPECTED
    assert commands_are(fake, [WAKE, PASSIVE, READ] + ([READ] if error else [SLEEP, WAKE, READ]) + [SLEEP])


def test_a_vanished_port_is_typed_and_the_replugged_one_is_configured_again(tmp_path: Path,
                                                                            clock: VirtualClock) -> None:
    link = tmp_path / "ttyUSB0"
    first = FakePMS5003(pm=PM, clock=clock)
    os.symlink(first.device, link)
    driver = chip.PMS5003(timeout_s=TIMEOUT_S, clock=clock, mode="passive", port=str(link))
    second: FakePMS5003 | None = None
    try:
        start_and_wait(driver, first, clock)
        assert finish(driver, clock) == EXPECTED
        first.unplug()
        with pytest.raises(SerialPortGoneError, match="failed, port closed"):
            driver.start()
        with pytest.raises(SerialPortGoneError, match="cannot open: no such port"):
            driver.start()
        second = FakePMS5003(pm=(1.0, 2.0, 3.0), clock=clock)
        os.unlink(link)
        os.symlink(second.device, link)
        start_and_wait(driver, second, clock)
        assert finish(driver, clock) == {"pm1_0": 1.0, "pm2_5": 2.0, "pm10": 3.0}
        assert commands_are(second, [WAKE, PASSIVE, READ, SLEEP])
    finally:
        driver.close()
        first.close()
        if second is not None:
            second.close()


# --- simulation -------------------------------------------------------------------------------------
def fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pibridge-fake-pms5003")]


def test_simulated_passive_driver_on_the_worlds_air_with_a_set_pin() -> None:
    clock = VirtualClock()
    before = fake_threads()
    with SimulatedWorld(clock=clock) as world:
        driver = world.build("pms5003", {"mode": "passive", "set_pin": 22, "counts": True})
        assert len(fake_threads()) == len(before) + 1
        pin = world.pin_factory().pin(22)
        wait = driver.start()
        assert pin.state == 1
        fake = world.shared(("serial-chip", driver.link.path), lambda: None)  # the simulator's fake
        assert isinstance(fake, FakePMS5003) and caught_up(fake, driver)
        assert fake.wait_until(lambda: fake.awake)
        clock.sleep(wait)
        sample = finish(driver, clock)
        assert 0 < sample["pm1_0"] <= sample["pm2_5"] <= sample["pm10"]
        assert world.pin_factory().pin(22).state == 0      # asleep again
        driver.close()
        assert fake_threads() == before                     # its fake chip's thread ended with it
    assert fake_threads() == before


def test_a_stray_bm_inside_the_data_neither_confuses_a_good_frame_nor_a_bad_one(
        fake: FakePMS5003, clock: VirtualClock) -> None:
    """0x424D ("BM") as a value puts a start sequence inside the data (§16.6's stray 0x42): a
    good frame parses from its real header; after a corrupted one the scan tries the stray start,
    rejects it, and the next frame reads cleanly."""
    stray = (float(0x424D), float(0x424D), float(0x424D))
    fake.pm = stray
    with passive_driver(fake, clock) as driver:
        start_and_wait(driver, fake, clock)
        assert finish(driver, clock) == dict(zip(chip.PM_KEYS, stray, strict=True))
        fake.corrupt_next = True
        start_and_wait(driver, fake, clock)
        with pytest.raises(BadDataError, match="checksum"):
            finish(driver, clock)
        fake.pm = PM
        start_and_wait(driver, fake, clock)
        assert finish(driver, clock) == EXPECTED
