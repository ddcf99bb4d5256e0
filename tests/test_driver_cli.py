"""`pibridge drivers`, `pibridge read` and `pibridge scan`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.cli import driver_commands, main
from pibridge.drivers import registry
from pibridge.drivers.base import Driver, Metric, RetryPolicy, describe_timing, read_with_retries
from pibridge.drivers.bme280 import BME280
from pibridge.drivers.errors import BusError, DeviceNotFoundError
from pibridge.drivers.fakes.ads1x15 import FakeADS1x15
from pibridge.drivers.fakes.bh1750 import FakeBH1750
from pibridge.drivers.fakes.bme280 import VECTOR_A_CALIBRATION, FakeBME280
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.fakes.ina219 import FakeINA219

ROOT = Path(__file__).resolve().parent.parent


class Flaky(Driver):
    """Fails ``failures`` times with ``error``, then reads 1.0."""

    name = "flaky"
    description = "test driver"
    metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)
    retry = RetryPolicy(attempts=2, spacing_s=0.5)
    min_interval_s = 0.75
    failures = 0
    error: type[Exception] = BusError

    def __init__(self, **options):
        super().__init__(**options)
        self.calls = 0
        self.closed_count = 0

    def read(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"flaky: attempt {self.calls} failed")
        return {"v": 1.0}

    def _release(self) -> None:
        self.closed_count += 1


# --- drivers ---------------------------------------------------------------------------------------
def test_drivers_lists_metrics_units_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "bme280: Bosch BME280/BMP280" in out
    assert "pressure: Air pressure [hPa; values in Pa]" in out
    assert "address (int), default 0x76, one of 0x76, 0x77" in out
    assert "mtreg (int), default 69, range 31..254" in out
    assert "illuminance: Illuminance [double, lx]" in out
    for name in registry.names():
        assert f"\n{name}: " in "\n" + out


def test_drivers_survives_a_broken_module(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(registry.builtin(), "zz_broken", "pibridge.drivers.does_not_exist:Nope")
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "zz_broken: not available (No module named" in out and "bme280:" in out


# --- read ------------------------------------------------------------------------------------------
def test_read_simulated_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "bme280", "--simulate", "--option", "osrs_p=16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["temperature", "pressure", "humidity"]
    assert lines[-1] == f"({describe_timing(BME280.timing_for(BME280.check_options({'osrs_p': 16})))})"
    assert lines[1].endswith(" hPa")          # a person reads pascals as hPa
    assert 900 < float(lines[1].split()[1]) < 1100


def test_read_simulated_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "bh1750", "--simulate", "--json", "-o", "resolution=low"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["driver"] == "bh1750" and doc["simulated"] is True
    assert doc["units"] == {"illuminance": "double [lx]"}
    assert doc["values"]["illuminance"] >= 0.0


def test_read_real_without_bus_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import smbus2

    def no_bus(number: int) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(smbus2, "SMBus", no_bus)
    assert main(["read", "bme280", "-o", "i2c_bus=7"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    # the problem, not the exception's class
    assert err.startswith("pibridge: bme280 at 0x76: cannot open I2C bus /dev/i2c-7")


def test_read_real_on_a_fake_bus(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import smbus2

    def fake_bus(number: int) -> FakeSMBus:  # real time: the driver really waits ~10 ms
        bus = FakeSMBus(number)
        bus.attach(0x77, FakeBME280(variant="BMP280", calibration=VECTOR_A_CALIBRATION))
        return bus

    monkeypatch.setattr(smbus2, "SMBus", fake_bus)
    assert main(["read", "bme280", "-o", "address=0x77", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["values"]) == {"temperature", "pressure"}


@pytest.mark.parametrize("argv, message", [
    (["read", "nope"], "unknown driver 'nope'; known drivers: "),  # every name, sorted
    (["read", "bme280", "--simulate", "-o", "colour=red"], "unknown option colour"),
    (["read", "bme280", "--simulate", "-o", "osrs_p=3"], "option osrs_p: '3' is not one of"),
    (["read", "bme280", "-o", "address"], "expected KEY=VALUE"),
    (["read", "bh1750", "--simulate", "-o", "mtreg=300"], "300 is above the maximum 254"),
])
def test_read_errors_are_one_line(argv, message, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_retries_follow_the_policy() -> None:
    slept: list[float] = []
    flaky = Flaky()
    flaky.failures = 2
    assert read_with_retries(flaky, slept.append) == {"v": 1.0}
    assert flaky.calls == 3 and slept == [0.75, 0.75]  # spacing at least min_interval_s

    flaky = Flaky()
    flaky.failures = 3
    with pytest.raises(BusError, match="attempt 3"):
        read_with_retries(flaky, slept.append)


def test_non_retryable_error_stops_at_once() -> None:
    flaky = Flaky()
    flaky.failures, flaky.error = 5, DeviceNotFoundError
    slept: list[float] = []
    with pytest.raises(DeviceNotFoundError):
        read_with_retries(flaky, slept.append)
    assert flaky.calls == 1 and slept == []


def test_read_command_retries_and_closes(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    made: list[Flaky] = []

    class Once(Flaky):
        failures = 1
        retry = RetryPolicy(attempts=1, spacing_s=0.0)
        min_interval_s = 0.0

        def __init__(self, **options):
            super().__init__(**options)
            made.append(self)

    monkeypatch.setattr(registry, "get", lambda name: Once)
    assert main(["read", "flaky"]) == 0
    assert capsys.readouterr().out == ("v  1 V\n"
                                       "(read time 0 ms, min interval 0 s, retries 1 x 0 s)\n")
    assert made[0].calls == 2 and made[0].closed_count == 1


def test_subprocess_read_bme280_simulated_json() -> None:
    result = subprocess.run([sys.executable, "-m", "pibridge", "read", "bme280", "--simulate", "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc["values"]) == {"temperature", "humidity", "pressure"}
    assert doc["units"]["pressure"] == "SI.Pressure.PASCAL"
    assert 0.0 <= doc["values"]["humidity"] <= 100.0


# --- scan ------------------------------------------------------------------------------------------
def test_scan_names_chips_and_w1_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "i2c-1").touch()
    (dev / "i2c-20").touch()
    (dev / "i2c-dev").touch()  # not a bus
    w1 = tmp_path / "w1"
    w1.mkdir()
    for name in ("w1_bus_master1", "28-000005abb69d", "10-000802b4e2e1", "3b-0000001a2b3c",
                 "ee-000000000001", "notes"):
        (w1 / name).mkdir()
    clock = VirtualClock()
    buses: dict[int, FakeSMBus] = {}

    def opener(number: int) -> FakeSMBus:
        bus = FakeSMBus(number)
        if number == 1:
            bus.attach(0x76, FakeBME280(clock=clock))
            bus.attach(0x77, FakeBME280(clock=clock, variant="BMP280"))
            bus.attach(0x23, FakeBH1750(clock=clock))
            bus.attach(0x48, FakeBH1750(clock=clock))
            bus.attach(0x49, FakeADS1x15(clock=clock))
            bus.attach(0x40, FakeINA219(clock=clock))
            configured = bus.attach(0x41, FakeINA219(clock=clock))
            configured.i2c_write(bytes([0x00, 0x3F, 0xFF]))    # 128-sample averaging (ESPHome's)
            bus.attach(0x4A, FakeINA219(clock=clock))          # an INA219 at an ADS1x15 address
        buses[number] = bus
        return bus

    monkeypatch.setattr(driver_commands, "I2C_DEV_ROOT", dev)
    monkeypatch.setattr(driver_commands, "W1_DEVICES_ROOT", w1)
    monkeypatch.setattr(driver_commands, "open_smbus", opener)
    assert main(["scan"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "I2C bus 1 0x23: BH1750 (probable, by address)",
        "I2C bus 1 0x40: INA219 (register signature)",
        "I2C bus 1 0x41: INA219 (probable, by address)",
        "I2C bus 1 0x48: ADS1015 or ADS1115 or INA219 (probable, by address)",
        "I2C bus 1 0x49: ADS1115 or ADS1015 (register signature)",
        "I2C bus 1 0x4a: INA219 (register signature)",
        "I2C bus 1 0x76: BME280 (chip id 0x60)",
        "I2C bus 1 0x77: BMP280 (chip id 0x58)",
        "I2C bus 20: no devices",
        "1-Wire 10-000802b4e2e1: DS18S20",
        "1-Wire 28-000005abb69d: DS18B20",
        "1-Wire 3b-0000001a2b3c: DS1825",
        "1-Wire ee-000000000001: unknown family 0xee",
        f"Serial: no ports ({dev}/serial0, ttyAMA*, ttyUSB*, ttyACM* not found; on a Pi enable the UART: "
        "sudo raspi-config nonint do_serial_hw 0)",
    ]
    assert buses[1].closed and buses[20].closed
    probed = {t[1] for t in buses[20].transfers}
    assert min(probed) == 0x03 and max(probed) == 0x77 and len(probed) == 0x75


def test_scan_on_a_pc_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(driver_commands, "I2C_DEV_ROOT", tmp_path)
    monkeypatch.setattr(driver_commands, "W1_DEVICES_ROOT", tmp_path / "absent")
    assert main(["scan"]) == 0
    out = capsys.readouterr().out
    assert "I2C: no buses" in out and "1-Wire: no bus" in out


def test_scan_bus_that_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "i2c-1").touch()

    def opener(number: int) -> None:
        raise PermissionError(13, "Permission denied")

    lines = driver_commands.scan(tmp_path, tmp_path, opener)
    assert lines[0] == f"I2C bus 1: cannot open {tmp_path}/i2c-1: Permission denied"
    assert lines[1] == "1-Wire: no devices"


# --- off a Pi, one line ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["read", "digital_input", "--option", "pin=17"], "pibridge[pi]"),
    (["read", "mcp3008"], "pibridge[pi]"),
    (["read", "cpu_temperature", "--option", "sensor_file=/dev/zero"], "not a thermal zone file"),
    (["read", "ds18b20", "--option", "device_id=28-000000000000", "--option", "w1_root=/nonexistent"],
     "dtoverlay=w1-gpio"),                 # no w1 bus at all: 1-Wire is not enabled
])
def test_real_reads_off_a_pi_are_one_line_without_warnings(argv: list[str], needle: str) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    result = subprocess.run([sys.executable, "-W", "default", "-m", "pibridge", *argv], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr
    assert "Warning" not in result.stderr and result.stdout == ""


def test_drivers_shows_default_timing_and_read_the_instances(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "read time 180 ms, min interval 0.18 s, retries 2 x 0.18 s (defaults" in out  # bh1750
    assert main(["read", "bh1750", "--simulate", "-o", "resolution=low", "--json"]) == 0
    timing = json.loads(capsys.readouterr().out)["timing"]
    assert timing == {"read_time_s": 0.024, "min_interval_s": 0.024, "retry_attempts": 2,
                      "retry_spacing_s": 0.024}


def test_scan_table_comes_from_the_drivers_declarations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every built-in I2C driver's addresses are in scan's table, and a new I2C driver (here one
    registered on the fly) is named by its own declaration with no edit to the scan code."""
    from pibridge.drivers.i2c import ChipId, I2CDriver, i2c_address_option, i2c_bus_option

    table = driver_commands.i2c_drivers_by_address()
    for name in registry.names():
        cls = registry.get(name)
        if issubclass(cls, I2CDriver):
            assert all(cls in table[a] for a in cls.i2c_addresses())

    class FakeChipDriver(I2CDriver):
        name = "zz_chip"
        chip_name = "ZZ9000"
        metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)
        options = (i2c_address_option((0x48,), "address"), i2c_bus_option())
        chip_id = ChipId(0x0F, {0x33: "ZZ9000"})

    import types

    module = types.ModuleType("zz_chip_module")
    module.FakeChipDriver = FakeChipDriver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zz_chip_module", module)
    monkeypatch.setitem(registry.builtin(), "zz_chip", "zz_chip_module:FakeChipDriver")

    from pibridge.drivers.fakes.i2c import FakeI2CDevice

    class Answering(FakeI2CDevice):
        def __init__(self) -> None:
            super().__init__()
            self.pointer = 0

        def i2c_write(self, data: bytes) -> None:
            self.pointer = data[0]

        def i2c_read(self, length: int) -> bytes:
            return bytes([0x33 if self.pointer == 0x0F else 0]) * length

    bus = FakeSMBus(1)
    bus.attach(0x48, Answering())
    assert driver_commands.scan_i2c_bus(bus) == [(0x48, "ZZ9000 (chip id 0x33)")]
