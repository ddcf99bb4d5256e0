"""The serial sensors through the command line: `pibridge read … --simulate` as a subprocess
(pyserial on the fake's pseudo-terminal, as on a Pi), one-line errors for a missing port,
`pibridge drivers`, `pibridge check` and `pibridge scan`'s serial lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pibridge.cli import driver_commands, main
from pibridge.drivers import serialport
from pibridge.drivers.fakes.mhz19 import FakeMHZ19
from pibridge.drivers.fakes.pms5003 import FakePMS5003
from pibridge.drivers.fakes.serial import FakeSerialChip
from pibridge.drivers.mhz19 import READ_CO2_REQUEST
from pibridge.drivers.pms5003 import ACTIVE_READ_TIME_S, READ_REQUEST

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


def pibridge(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=TIMEOUT_S, check=False)


def test_read_mhz19_simulated_in_a_subprocess() -> None:
    result = pibridge("read", "mhz19", "--simulate", "--json", "--option", "range=2000")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["simulated"] is True and doc["units"] == {"co2": "double [ppm]"}
    assert 380.0 <= doc["values"]["co2"] <= 2000.0


def test_read_pms5003_simulated_in_a_subprocess() -> None:
    result = pibridge("read", "pms5003", "--simulate", "--option", "counts=true")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [
        "pm1_0", "pm2_5", "pm10", "particles_0_3", "particles_0_5", "particles_1_0", "particles_2_5",
        "particles_5_0", "particles_10"]
    assert lines[0].endswith(" µg/m³") and lines[3].endswith(" /0.1L")   # display units
    assert float(lines[1].split()[1]) > 0          # warm fan, the world's particulates
    assert f"read time {ACTIVE_READ_TIME_S * 1000:g} ms" in lines[-1]


@pytest.mark.parametrize(("driver", "chip"), [("mhz19", "MH-Z19"), ("pms5003", "PMS5003")])
def test_a_missing_port_is_one_line(tmp_path: Path, driver: str, chip: str) -> None:
    port = tmp_path / "ttyUSB7"
    result = pibridge("read", driver, "--option", f"port={port}")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"pibridge: {driver}: {chip} on {port}: cannot open: no such port (UART not "
        "enabled, or USB adapter unplugged?)"]


def test_drivers_lists_both_with_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "mhz19" in out and "pms5003" in out
    for text in ("self_calibration", "set_pin", "µg/m³", "ppm", "/dev/serial0"):
        assert text in out


PROFILE = '''
[agent]
host = "localhost"

[[sensor]]
name = "Dust"
driver = "pms5003"
interval = "2m"
options = { port = "/dev/ttyUSB0", mode = "passive", set_pin = 22, counts = true }

[[sensor]]
name = "CO2"
driver = "mhz19"
interval = "30s"
options = { range = 2000 }
'''


def test_check_accepts_a_profile_with_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=tty1 root=PARTUUID=0-02\n")
    monkeypatch.setattr(serialport, "CMDLINE_FILES", (cmdline,))
    profile = tmp_path / "air.toml"
    profile.write_text(PROFILE)
    assert main(["check", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    pins = out[out.index("pins and buses:"):].splitlines()[1:]
    assert pins == ['  serial /dev/serial0 (GPIO 14, 15): "CO2"', '  serial /dev/ttyUSB0: "Dust"',
                    '  GPIO 22: "Dust"']


def test_scan_lists_serial_ports_and_the_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    dev, sys_tty = tmp_path / "dev", tmp_path / "sys-tty"
    dev.mkdir()
    (sys_tty / "ttyS0").mkdir(parents=True)
    (sys_tty / "ttyS1").mkdir(parents=True)
    uart = tmp_path / "soc" / "fe215040.serial"
    uart.mkdir(parents=True)
    placeholder = tmp_path / "platform" / "serial8250"
    placeholder.mkdir(parents=True)
    os.symlink(uart, sys_tty / "ttyS0" / "device")
    os.symlink(placeholder, sys_tty / "ttyS1" / "device")
    for name in ("ttyS0", "ttyS1", "ttyAMA0", "ttyUSB0"):
        (dev / name).touch()
    os.symlink("ttyS0", dev / "serial0")
    os.symlink("ttyAMA0", dev / "serial1")
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=serial0,115200 console=tty1 root=PARTUUID=0-02 rootwait\n")
    monkeypatch.setattr(serialport, "CMDLINE_FILES", (cmdline,))
    monkeypatch.setattr(driver_commands, "I2C_DEV_ROOT", dev)
    monkeypatch.setattr(driver_commands, "W1_DEVICES_ROOT", tmp_path / "absent")
    monkeypatch.setattr(driver_commands, "SYS_TTY_ROOT", sys_tty)
    assert main(["scan"]) == 0
    serial = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Serial")]
    console = " (the serial console: sudo raspi-config nonint do_serial_cons 1, then reboot)"
    plain_file = ": not asked: not a serial port"     # empty files here, not terminals
    assert serial == [
        f"Serial {dev}/serial0 -> ttyS0{console}",
        f"Serial {dev}/serial1 -> ttyAMA0{plain_file}",
        f"Serial {dev}/ttyAMA0{plain_file}",
        f"Serial {dev}/ttyS0{console}",
        f"Serial {dev}/ttyUSB0{plain_file}",
    ]


@pytest.fixture
def serial_fakes() -> Iterator[dict[str, FakeSerialChip]]:
    """An MH-Z19, an active PMS5003 (its first frame in 0.3 s, unasked), a passive PMS5003, a
    silent port, and an MH-Z19 on the console's port (it would answer if asked)."""
    passive = FakePMS5003(cadence_s=0.3)
    passive.active = False
    fakes: dict[str, FakeSerialChip] = {
        "ttyUSB0": FakeMHZ19(ppm=612.0), "ttyUSB1": FakePMS5003(cadence_s=0.3), "ttyUSB2": passive,
        "ttyACM0": FakeSerialChip(), "ttyS0": FakeMHZ19()}
    yield fakes
    for fake in fakes.values():
        fake.close()


def _scan_dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              fakes: dict[str, FakeSerialChip]) -> Path:
    """A /dev with links to the fakes' pty slaves, serial0 -> ttyS0 the console (cmdline.txt)."""
    dev, sys_tty = tmp_path / "dev", tmp_path / "sys-tty"
    dev.mkdir()
    (sys_tty / "ttyS0").mkdir(parents=True)
    uart = tmp_path / "soc" / "fe215040.serial"
    uart.mkdir(parents=True)
    os.symlink(uart, sys_tty / "ttyS0" / "device")
    for name, fake in fakes.items():
        os.symlink(fake.device, dev / name)
    os.symlink("ttyS0", dev / "serial0")
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=serial0,115200 console=tty1 root=PARTUUID=0-02 rootwait\n")
    monkeypatch.setattr(serialport, "CMDLINE_FILES", (cmdline,))
    monkeypatch.setattr(driver_commands, "I2C_DEV_ROOT", dev)
    monkeypatch.setattr(driver_commands, "W1_DEVICES_ROOT", tmp_path / "absent")
    monkeypatch.setattr(driver_commands, "SYS_TTY_ROOT", sys_tty)
    return dev


def test_scan_names_the_serial_sensors_and_writes_them_into_a_profile_that_passes_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        serial_fakes: dict[str, FakeSerialChip]) -> None:
    dev = _scan_dev(tmp_path, monkeypatch, serial_fakes)
    target = tmp_path / "found.toml"
    assert main(["scan", "--profile-out", str(target)]) == 0
    out = capsys.readouterr().out
    serial = [line for line in out.splitlines() if line.startswith("Serial")]
    pty = {name: os.path.basename(fake.device) for name, fake in serial_fakes.items()}
    console = " (the serial console: sudo raspi-config nonint do_serial_cons 1, then reboot)"
    assert serial == [
        f"Serial {dev}/serial0 -> {pty['ttyS0']}{console}",   # the link, resolved to the end
        f"Serial {dev}/ttyS0 -> {pty['ttyS0']}{console}",
        f"Serial {dev}/ttyUSB0 -> {pty['ttyUSB0']}: MH-Z19 (CO2)",
        f"Serial {dev}/ttyUSB1 -> {pty['ttyUSB1']}: PMS5003 (particulates)",
        f"Serial {dev}/ttyUSB2 -> {pty['ttyUSB2']}: PMS5003 (particulates)",
        f"Serial {dev}/ttyACM0 -> {pty['ttyACM0']}: no known sensor answered",
    ]
    assert "wrote " in out and "3 sensors found" in out
    # what scan sent: the two read commands, once, to every port but the console's
    assert serial_fakes["ttyS0"].received == b""
    for name in ("ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyACM0"):
        fake = serial_fakes[name]
        assert fake.wait_until(lambda f=fake: f.received_total >= 16)
        assert bytes(fake.received) == READ_CO2_REQUEST + READ_REQUEST
    assert serial_fakes["ttyUSB2"].active is False            # no setting changed
    text = target.read_text()
    assert 'driver = "mhz19"' in text and f'port = "{dev}/ttyUSB0"' in text
    assert text.count('driver = "pms5003"') == 2 and f'port = "{dev}/ttyUSB2"' in text
    assert "ttyACM0" not in text and "ttyS0" not in text
    assert main(["check", "--profile", str(target)]) == 0, capsys.readouterr().out


def _corrupt_mhz19() -> FakeSerialChip:
    fake = FakeMHZ19()
    fake.corrupt_next = True
    return fake


def _garbage_then_truncated_mhz19() -> FakeSerialChip:
    fake = FakeMHZ19()
    fake.garbage_before_next = b"\xff\x86\x42\x4d"
    fake.truncate_next = 5
    return fake


def _corrupt_passive_pms5003() -> FakeSerialChip:
    fake = FakePMS5003()
    fake.active = False
    fake.corrupt_next = True
    return fake


def _asleep_pms5003() -> FakeSerialChip:
    fake = FakePMS5003(cadence_s=0.1)
    fake.sleeping = True
    return fake


@pytest.mark.parametrize("make", [_corrupt_mhz19, _garbage_then_truncated_mhz19, _corrupt_passive_pms5003,
                                  _asleep_pms5003, FakeSerialChip])
def test_a_port_without_a_valid_answer_names_no_sensor(make: Callable[[], FakeSerialChip]) -> None:
    fake = make()
    try:
        answer = driver_commands.ask_serial_sensor(fake.device, listen_s=0.5)
        assert answer == driver_commands.NO_SERIAL_SENSOR
    finally:
        fake.close()


def test_a_port_that_cannot_be_asked_says_why(tmp_path: Path) -> None:
    assert driver_commands.ask_serial_sensor(str(tmp_path / "ttyUSB9")) == (
        "not asked: cannot open: no such port (UART not enabled, or USB adapter unplugged?)")
    (tmp_path / "file").write_bytes(b"")
    assert driver_commands.ask_serial_sensor(str(tmp_path / "file")) == "not asked: not a serial port"
