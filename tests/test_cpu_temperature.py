"""SoC temperature from a thermal-zone file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.cpu_temperature import CPUTemperature, parse_thermal_zone
from pibridge.drivers.errors import BadDataError, BusError, DeviceNotFoundError, ImplausibleValueError
from pibridge.drivers.simulation import Environment


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
    cpu = CPUTemperature.simulated(env)
    try:
        assert cpu.read()["temperature"] == pytest.approx(env.cpu_temperature(), abs=0.001)
    finally:
        cpu.close()
