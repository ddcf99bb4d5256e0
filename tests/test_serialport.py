"""The serial foundation: frame resynchronisation as a table, bounded searches, the port helper on
a real pseudo-terminal, the Pi's serial console from cmdline.txt, and the ports scan lists."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pibridge.drivers import BadDataError, BusError, SensorError
from pibridge.drivers import serialport as sp
from pibridge.drivers.base import MAX_COLLECT_STEPS, CollectAgain, Resources
from pibridge.drivers.fakes import VirtualClock
from pibridge.drivers.fakes.mhz19 import FakeMHZ19
from pibridge.drivers.fakes.pms5003 import FakePMS5003
from pibridge.drivers.fakes.serial import FakeSerialChip, input_waiter
from pibridge.drivers.mhz19 import MHZ19
from pibridge.drivers.pms5003 import PMS5003

START = b"\xaa\x55"
FRAME_LEN = 6


def check(frame: bytes) -> str | None:
    """A toy checksum for the table: the last byte is the sum of the others."""
    return None if sum(frame[:-1]) & 0xFF == frame[-1] else "bad sum"


def size_of(head: bytes) -> int | None:
    return head[2] if head[2] in (FRAME_LEN, 4) else None


def frame(*payload: int) -> bytes:
    body = START + bytes([len(START) + 1 + len(payload) + 1, *payload])
    return body + bytes([sum(body) & 0xFF])


def scanner() -> sp.FrameScanner:
    return sp.FrameScanner(start=START, head_len=3, size_of=size_of, check=check)


GOOD = frame(1, 2)
OTHER = frame(9, 9)

#: (id, chunks fed in order, frames expected, bytes left pending, last problem)
SCAN: list[tuple[str, list[bytes], list[bytes], int, str | None]] = [
    ("one frame", [GOOD], [GOOD], 0, None),
    ("two frames", [GOOD + OTHER], [GOOD, OTHER], 0, None),
    ("leading garbage", [b"\x00\x01\xaa" + GOOD], [GOOD], 0, None),
    ("split across feeds", [GOOD[:2], GOOD[2:4], GOOD[4:]], [GOOD], 0, None),
    ("start bytes split", [b"\x13\xaa", GOOD[1:]], [GOOD], 0, None),
    ("truncated, then a good one", [GOOD[:4], GOOD], [GOOD], 0, "bad sum"),
    ("bad checksum, then a good one", [GOOD[:-1] + b"\x00" + OTHER], [OTHER], 0, "bad sum"),
    ("wrong length field", [START + b"\x09\x00" + GOOD], [GOOD], 0, "impossible header aa 55 09"),
    ("a stray start inside garbage", [b"\xaa\x55\xaa" + GOOD], [GOOD], 0, "impossible header aa 55 aa"),
    ("a partial frame stays pending", [GOOD + GOOD[:4]], [GOOD], 2, None),
    ("only garbage", [b"\x01\x02\x03"], [], 0, None),
]


@pytest.mark.parametrize(("chunks", "frames", "pending", "problem"),
                         [(c, f, p, q) for _, c, f, p, q in SCAN], ids=[case for case, *_ in SCAN])
def test_frame_scanner_resynchronises(chunks: list[bytes], frames: list[bytes], pending: int,
                                      problem: str | None) -> None:
    found: list[bytes] = []
    scan = scanner()
    for chunk in chunks:
        scan.feed(chunk)
        found += scan.frames()
    assert found == frames
    assert scan.missing() == pending
    assert (scan.problems[-1] if scan.problems else None) == problem


def test_the_scan_buffer_is_bounded() -> None:
    scan = sp.FrameScanner(start=START, head_len=3, size_of=size_of, check=check, max_buffer=64)
    for _ in range(100):
        scan.feed(b"\x01" * 50)
        assert list(scan.frames()) == []
        assert len(scan.buffer) <= 64
    assert scan.skipped == 5000


@pytest.fixture
def chip() -> Iterator[FakeSerialChip]:
    fake = FakeSerialChip()
    yield fake
    fake.close()


def test_endless_garbage_ends_in_a_typed_error_within_the_bound(chip: FakeSerialChip) -> None:
    link = sp.SerialLink(chip.device, timeout_s=0.5, label="toy")
    link.open()                                   # pyserial discards what came before it opened
    chip.inject(b"\x01" * 1000)
    try:
        with pytest.raises(BadDataError, match="toy: 258 bytes without a frame"):
            sp.read_frame(link, scanner(), FRAME_LEN, "frame")   # stops at the bound, not at the end
    finally:
        link.close()


def test_silence_is_a_bus_error_after_one_timeout(chip: FakeSerialChip) -> None:
    link = sp.SerialLink(chip.device, timeout_s=0.05, label="toy")
    try:
        with pytest.raises(BusError, match="toy: no frame: the sensor is silent"):
            sp.read_frame(link, scanner(), FRAME_LEN, "frame")
    finally:
        link.close()


def test_the_link_sends_and_reads_through_pyserial_on_the_pty(chip: FakeSerialChip) -> None:
    link = sp.SerialLink(chip.device, timeout_s=2.0)
    try:
        link.open()
        chip.inject(b"stale")
        assert select.select([link._serial.fileno()], [], [], 5.0)[0]   # delivered: now unread input
        link.send(b"hello", "greeting")            # unread input is discarded first
        assert chip.wait_until(lambda: bytes(chip.received) == b"hello")
        chip.inject(GOOD)
        assert sp.read_frame(link, scanner(), FRAME_LEN, "frame") == GOOD
        assert link.opened == 1 and link.sent_bytes == 5
    finally:
        link.close()
    assert not link.is_open


def test_importing_the_drivers_does_not_import_pyserial() -> None:
    code = ("import sys; import pibridge.drivers.serialport, pibridge.drivers.mhz19, "
            "pibridge.drivers.pms5003, pibridge.drivers.fakes.mhz19, pibridge.drivers.fakes.pms5003; "
            "from pibridge.drivers import registry; registry.names(); sys.exit('serial' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --- resources --------------------------------------------------------------------------------------
def test_a_serial_driver_claims_its_port_and_its_set_pin() -> None:
    assert MHZ19.resources(MHZ19.check_options({})) == Resources(serial=("/dev/serial0",))
    config = PMS5003.check_options({"port": "/dev/ttyUSB0", "set_pin": "GPIO22"})
    assert PMS5003.resources(config) == Resources(gpio=(22,), serial=("/dev/ttyUSB0",))


# --- the serial console -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "consoles"), [
    ("console=serial0,115200 console=tty1 root=PARTUUID=1-02 rootfstype=ext4 rootwait", ["/dev/serial0"]),
    ("console=ttyAMA0,115200 kgdboc=ttyAMA0,115200 console=tty1", ["/dev/ttyAMA0"]),
    ("console=ttyS0", ["/dev/ttyS0"]),
    ("console=tty1 root=/dev/mmcblk0p2 rootwait", []),
    ("", []),
    ("\x00\xff console=serial1,9600\n", ["/dev/serial1"]),
])
def test_console_devices_from_cmdline(tmp_path: Path, text: str, consoles: list[str]) -> None:
    path = tmp_path / "cmdline.txt"
    path.write_text(text, encoding="latin-1")
    assert sp.console_devices((tmp_path / "absent", path)) == (path, consoles)


def test_no_cmdline_visible_means_no_console_problem(tmp_path: Path) -> None:
    assert sp.console_devices((tmp_path / "absent",)) is None
    assert sp.console_problem("/dev/serial0", (tmp_path / "absent",)) is None


def test_links_are_resolved_when_they_exist(tmp_path: Path) -> None:
    tty = tmp_path / "ttyS0"
    tty.touch()
    link = tmp_path / "serial0"
    os.symlink("ttyS0", link)
    assert sp.same_device(str(link), str(tty))
    assert sp.same_device(str(tmp_path / "x" / ".." / "ttyS0"), str(tty))
    assert not sp.same_device(str(link), str(tmp_path / "ttyAMA0"))
    assert sp.same_device("/dev/serial0", "/dev/./serial0")    # not there: compared as names


# --- the ports scan lists ---------------------------------------------------------------------------
def make_tty_tree(tmp_path: Path) -> tuple[Path, Path]:
    dev, sys_tty = tmp_path / "dev", tmp_path / "sys-tty"
    dev.mkdir()
    sys_tty.mkdir()
    placeholder = tmp_path / "devices" / "platform" / "serial8250"
    real_uart = tmp_path / "devices" / "platform" / "soc" / "fe215040.serial"
    placeholder.mkdir(parents=True)
    real_uart.mkdir(parents=True)
    for name in ("ttyS0", "ttyS1", "ttyS2", "ttyAMA10", "ttyUSB0", "ttyACM0", "ttyAMA0", "tty1", "ttyprintk"):
        (dev / name).touch()
    for name, device in (("ttyS0", real_uart), ("ttyS1", placeholder), ("ttyS2", placeholder)):
        (sys_tty / name).mkdir()
        os.symlink(device, sys_tty / name / "device")
    os.symlink("ttyS0", dev / "serial0")
    return dev, sys_tty


def test_serial_ports_lists_only_real_uarts(tmp_path: Path) -> None:
    dev, sys_tty = make_tty_tree(tmp_path)
    assert sp.serial_ports(dev, sys_tty) == [str(dev / name) for name in (
        "serial0", "ttyAMA0", "ttyAMA10", "ttyS0", "ttyUSB0", "ttyACM0")]


class RecordingLink(sp.SerialLink):
    """A real link that notes how many bytes each blocking read asked for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.wants: list[int] = []

    def read(self, size: int, doing: str) -> bytes:
        self.wants.append(size)
        return super().read(size, doing)


def test_a_frame_behind_an_ack_is_completed_with_the_missing_bytes_only(chip: FakeSerialChip) -> None:
    """An ack and a data frame arrive together: the second search asks for the 8 bytes still
    missing, not a whole frame more (which would wait out the timeout)."""
    from pibridge.drivers import pms5003

    vector = bytes.fromhex("42 4D 00 1C 00 28 00 3E 00 47 00 1F 00 2D 00 3A 1D 4C 08 98 01 E0 00 28 00 06 "
                           "00 02 97 00 04 8F")
    ack = bytes.fromhex("42 4d 00 04 e4 00 01 77")
    link = RecordingLink(chip.device, timeout_s=30.0, label="pms")
    link.open()
    try:
        chip.inject(ack + vector)
        scan = pms5003.frame_scanner()
        assert sp.read_frame(link, scan, 32, "frame") == ack
        assert sp.read_frame(link, scan, 32, "frame") == vector
        assert link.wants == [32, 8]
    finally:
        link.close()


@pytest.mark.parametrize("port", ["", "serial0", "ttyUSB0", "/dev/tty\nS0", "/dev/\x7f", "/" + "x" * 300])
def test_a_port_that_is_not_a_device_path_is_refused_before_any_io(port: str) -> None:
    for cls in (MHZ19, PMS5003):
        _, problems = cls.validate({"port": port})
        assert [p.key for p in problems] == ["port"]
        assert problems[0].message.startswith("option port: must be a device path such as /dev/serial0")
        assert "\n" not in problems[0].message


def test_a_path_that_is_not_a_tty_fails_to_open_in_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-tty"
    plain.write_bytes(b"")
    with pytest.raises(sp.SerialPortGoneError) as caught:
        MHZ19(port=str(plain))
    assert str(caught.value).startswith(f"MH-Z19 on {plain}: cannot open: ")
    assert "\n" not in str(caught.value)


# --- drivers never block in collect() -------------------------------------------------------------------
#: A port timeout no collect() may sit out: a driver that reads blockingly would take this long.
BLOCKING_TIMEOUT_S = 30.0
#: Far above a non-blocking collect() on a loaded machine, far below `BLOCKING_TIMEOUT_S`.
NEVER_BLOCKED_S = 2.0


def timed_collects(driver: MHZ19 | PMS5003, first_wait: float,
                   sleep: Callable[[float], None]) -> tuple[list[float], object]:
    """Run one reading's collect() steps; each step's wall time, and how the reading ended."""
    spent: list[float] = []
    wait = first_wait
    for _ in range(MAX_COLLECT_STEPS):
        sleep(wait)
        began = time.monotonic()
        try:
            result = driver.collect()
        except SensorError as exc:
            spent.append(time.monotonic() - began)
            return spent, exc
        spent.append(time.monotonic() - began)
        if not isinstance(result, CollectAgain):
            return spent, result
        wait = result.wait_s
    raise AssertionError("no end to the collect steps")


def test_a_silent_sensor_never_blocks_collect_and_ends_in_a_bus_error_after_the_promised_waits() -> None:
    """The PMS5003 woken in start() sends its read request in collect(), the MH-Z19's reply is
    awaited in collect(): against silence each collect() returns at once (a blocking read would
    sit out the 30 s timeout), a bounded number of `CollectAgain` steps, then `BusError`."""
    clock = VirtualClock()
    pms = FakePMS5003(pm=(1.0, 2.0, 3.0), clock=clock)
    mhz = FakeMHZ19(ppm=600)
    try:
        with PMS5003(pms.device, timeout_s=BLOCKING_TIMEOUT_S, clock=clock, mode="passive") as driver:
            pms.silent = True
            wait = driver.start()                       # the warm-up: the request is still to send
            clock.sleep(wait)
            spent, ended = timed_collects(driver, 0.0, time.sleep)
            assert max(spent) < NEVER_BLOCKED_S
            assert isinstance(ended, BusError) and "the sensor is silent" in str(ended)
            assert len(spent) == 1 + 1 + sp.MAX_POLLS   # request, polls, the failing poll
        with MHZ19(mhz.device, timeout_s=BLOCKING_TIMEOUT_S) as co2:
            mhz.silent = True
            spent, ended = timed_collects(co2, co2.start(), time.sleep)
            assert max(spent) < NEVER_BLOCKED_S
            assert isinstance(ended, BusError) and "the sensor is silent" in str(ended)
            assert len(spent) == 1 + sp.MAX_POLLS
    finally:
        pms.close()
        mhz.close()


def test_a_paced_reply_is_collected_in_steps_without_blocking() -> None:
    """A fake paced at 9600 baud: the reply completes over several non-blocking collect() steps."""
    mhz = FakeMHZ19(ppm=700, realtime=True)
    try:
        with MHZ19(mhz.device, timeout_s=BLOCKING_TIMEOUT_S) as co2:
            for _ in range(3):
                spent, ended = timed_collects(co2, co2.start(), input_waiter(co2.link, 0.5))
                assert ended == {"co2": 700.0} and max(spent) < NEVER_BLOCKED_S
    finally:
        mhz.close()
