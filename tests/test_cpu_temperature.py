"""SoC temperature from a thermal-zone file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.cpu_temperature import CPUTemperature, parse_thermal_zone
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
)
from pibridge.drivers.files import FileTimeoutError, FileTooLargeError, read_small_text
from pibridge.drivers.simulation import Environment, SimulatedWorld


def test_reads_millidegrees(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("47236\n")
    cpu = CPUTemperature(sensor_file=str(zone))
    assert check_sample(cpu, cpu.read()) == {"temperature": 47.236}
    zone.write_text("-1500\n")
    assert cpu.read() == {"temperature": -1.5}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceNotFoundError) as info:
        CPUTemperature(sensor_file=str(tmp_path / "nope")).read()
    assert not info.value.retryable


@pytest.mark.parametrize("text", ["", "\n", "abc\n", "47.2\n"])
def test_empty_or_garbage(tmp_path: Path, text: str) -> None:
    zone = tmp_path / "temp"
    zone.write_text(text)
    with pytest.raises(BadDataError):
        CPUTemperature(sensor_file=str(zone)).read()


def test_implausible() -> None:
    with pytest.raises(ImplausibleValueError):
        parse_thermal_zone("250000\n")


def test_other_os_error_is_bus_error() -> None:
    def failing(path: Path) -> str:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(BusError):
        CPUTemperature(read_text=failing).read()


def test_simulated() -> None:
    env = Environment(seed=4, noise=0.0, clock=lambda: 8 * 3600.0)
    with SimulatedWorld(env) as world:
        cpu = world.build("cpu_temperature")
        assert cpu.read()["temperature"] == pytest.approx(env.cpu_temperature(), abs=0.001)


# -- bounded reads: a wrong sensor_file ends in one error, never a hang ----------------------------
def test_dev_zero_is_refused_after_a_few_bytes() -> None:
    with pytest.raises(ConfigurationError, match=r"not a thermal zone file \(more than 64 bytes") as info:
        CPUTemperature(sensor_file="/dev/zero").read()
    assert not info.value.retryable


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a thermal zone file"):
        CPUTemperature(sensor_file=str(tmp_path)).read()


def test_fifo_nobody_writes_times_out(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileTimeoutError):
        read_small_text(fifo, timeout_s=0.05)
    with pytest.raises(ConfigurationError, match=r"no data within 1 s"):
        CPUTemperature(sensor_file=str(fifo)).read()


def test_fifo_with_a_writer_is_read_to_its_end(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until the reader has opened its end
        opened.set()
        os.write(fd, b"51234\n")
        os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert CPUTemperature(sensor_file=str(fifo)).read() == {"temperature": 51.234}
    finally:
        thread.join(timeout=5)
    assert opened.is_set()


def test_endless_fifo_is_cut_at_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        try:
            while not stop.is_set():
                os.write(fd, b"1" * 512)
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with pytest.raises(FileTooLargeError):
            read_small_text(fifo, max_bytes=1000, timeout_s=5.0)
    finally:
        stop.set()
        thread.join(timeout=5)


def test_small_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "attr"
    path.write_text("x" * 100)
    assert read_small_text(path, max_bytes=100) == "x" * 100
    with pytest.raises(FileTooLargeError):
        read_small_text(path, max_bytes=99)
