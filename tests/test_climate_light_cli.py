"""The SHT4x, SHT3x, AHT20 and VEML7700 drivers through the commands: `pibridge drivers` lists
them, `pibridge read NAME --simulate` reads each, and `pibridge check` names file, line and key
for every bad option (a hostile table per option) and for two chips at one address."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pibridge.cli import main

DRIVERS = ("sht4x", "sht3x", "aht20", "veml7700")


def test_drivers_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    listed = {line.split(":")[0] for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(DRIVERS) <= listed
    assert "gain (float or 'auto'), default 'auto'" in out


@pytest.mark.parametrize("name, options, keys", [
    ("sht4x", [], {"temperature", "humidity"}),
    ("sht4x", ["-o", "precision=low", "-o", "heater=20mW-100ms", "-o", "heater_interval=60"],
     {"temperature", "humidity"}),
    ("sht3x", ["-o", "repeatability=low", "-o", "address=0x45"], {"temperature", "humidity"}),
    ("aht20", [], {"temperature", "humidity"}),
    ("aht20", ["-o", "address=0x39"], {"temperature", "humidity"}),
    ("veml7700", [], {"illuminance"}),
    ("veml7700", ["-o", "gain=0.25", "-o", "integration_time=50"], {"illuminance"}),
])
def test_read_simulated(name: str, options: list[str], keys: set[str],
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", name, "--simulate", "--json", *options]) == 0
    assert set(json.loads(capsys.readouterr().out)["values"]) == keys


@pytest.mark.parametrize("driver, line, problem", [
    ("sht4x", 'precision = "ultra"', "options.precision: 'ultra' is not one of 'high', 'medium', 'low'"),
    ("sht4x", "precision = 1", "options.precision: 1 is not a valid str"),
    ("sht4x", 'heater = "on"', "options.heater: 'on' is not one of 'off', '200mW-1s'"),
    ("sht4x", "heater_interval = 0", "options.heater_interval: 0 is below the minimum 1"),
    ("sht4x", "address = 0x40", "options.address: 0x40 is not one of 0x44, 0x45, 0x46"),
    ("sht3x", 'repeatability = "max"', "options.repeatability: 'max' is not one of 'high', 'medium'"),
    ("sht3x", "address = 0x46", "options.address: 0x46 is not one of 0x44, 0x45"),
    ("aht20", "address = 0x40", "options.address: 0x40 is not one of 0x38, 0x39"),
    ("aht20", "heater = true", "options.heater: unknown option of aht20 (known: address, i2c_bus, variant)"),
    ("veml7700", "gain = 3", "options.gain: 3 is not one of 0.125, 0.25, 1, 2, 'auto'"),
    ("veml7700", 'gain = "high"', "options.gain: 'high' is not a number or 'auto'"),
    ("veml7700", "integration_time = 30", "options.integration_time: 30 is not one of 25, 50, 100"),
    ("veml7700", 'integration_time = "fast"', "options.integration_time: 'fast' is not a number or 'auto'"),
    ("veml7700", "integration_time = [100]", "options.integration_time: [100] is not a number or 'auto'"),
])
def test_check_names_file_line_and_key(driver: str, line: str, problem: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'[[sensor]]\nname = "Sx"\ndriver = "{driver}"\n[sensor.options]\n{line}\n')
    assert main(["check", "--profile", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f'{path}:5: sensor "Sx" → {problem}'), err


def test_check_heater_duty_cycle_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[sensor]]\nname = "Leaf"\ndriver = "sht4x"\n[sensor.options]\n'
                    'heater = "110mW-1s"\nheater_interval = 9\n')
    assert main(["check", "--profile", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f'{path}:6: sensor "Leaf" → options.heater_interval: 9 s puts heater '
        "110mW-1s above the datasheet's 10 % duty cycle (at least 10 s)"]


def test_check_refuses_sht3x_and_sht4x_at_one_address(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[sensor]]\nname = "Bench"\ndriver = "sht3x"\n'
                    '[[sensor]]\nname = "Leaf"\ndriver = "sht4x"\n')
    assert main(["check", "--profile", str(path)]) == 1
    err = capsys.readouterr().err
    assert "I2C address 0x44 on bus 1 is already used by sensor \"Bench\"" in err


def test_check_accepts_a_full_climate_and_light_profile(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[sensor]]\nname = "Leaf"\ndriver = "sht4x"\n'
                    'options = { address = 0x45, heater = "20mW-1s" }\n'
                    '[[sensor]]\nname = "Bench"\ndriver = "sht3x"\n'
                    '[[sensor]]\nname = "Box"\ndriver = "aht20"\n'
                    '[[sensor]]\nname = "Sun"\ndriver = "veml7700"\n'
                    'options = { gain = "auto", integration_time = 100 }\n')
    assert main(["check", "--profile", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "no problems; 4 sensors" in out and '"Sun" at 0x10' in out


def test_scan_asks_every_candidate_at_a_shared_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A register-id chip declared at 0x44 too (an INA219, say) whose id read the SHT4x refuses
    does not hide the SHT4x: the candidates that answer their own identification win."""
    import sys
    import types

    from pibridge.cli import driver_commands
    from pibridge.drivers import ChipId, I2CDriver, Metric, i2c_address_option, i2c_bus_option, registry
    from pibridge.drivers.fakes import FakeSMBus, VirtualClock
    from pibridge.drivers.fakes.sht4x import FakeSHT4x

    class RegisterChip(I2CDriver):
        name = "aa_register_chip"
        metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)
        options = (i2c_address_option((0x40, 0x44), "address"), i2c_bus_option())
        chip_id = ChipId(0x00, {0x39: "REG"})

    module = types.ModuleType("aa_register_chip_module")
    module.RegisterChip = RegisterChip  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aa_register_chip_module", module)
    monkeypatch.setitem(registry.builtin(), "aa_register_chip", "aa_register_chip_module:RegisterChip")
    clock = VirtualClock()
    bus = FakeSMBus(1)
    chip = bus.attach(0x44, FakeSHT4x(clock=clock, serial=0xABCDEF01))
    chip.reread = "repeat"            # a pending result: the bare read is acknowledged
    bus.write_byte(0x44, 0xFD)
    clock.sleep(0.01)
    table = driver_commands.i2c_drivers_by_address()
    assert table[0x44][0].name == "aa_register_chip"   # asked first, refused by the SHT4x
    assert driver_commands.identify_i2c(bus, 0x44, table, clock.sleep) == "SHT4x (serial 0xabcdef01)"
    chip.nack = True                  # now nobody answers their identification
    assert driver_commands.identify_i2c(bus, 0x44, table, clock.sleep) == (
        "unknown (no answer at chip-id register 0x00)")
