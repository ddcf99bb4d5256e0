"""Profiles and commands as a new user meets them (issue 19 §4–§6, issue 20 §5): units that say
what a converted value is, every problem at once, durations, driver names, a floor under the
interval, a capped problem list, help with examples and exit codes, ``read --profile``,
``scan --profile-out``, the driver guide from the package, and a quiet end into ``| head``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.cli import COMMAND_HELP, build_parser, driver_commands, main, subcommands
from pibridge.drivers.fakes.bh1750 import FakeBH1750
from pibridge.drivers.fakes.bme280 import FakeBME280
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.profile import ProfileError, load_profile
from pibridge.profile.errors import PROBLEMS_SHOWN_MAX

ROOT = Path(__file__).resolve().parents[1]
AIR = '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'


def _write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    return [line.removeprefix(f"{path}:") for line in caught.value.lines]


def _pibridge(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False, **kwargs)  # type: ignore[call-overload]


# --- units ----------------------------------------------------------------------------------------
def test_a_unit_the_agent_has_no_name_for_is_a_custom_metric(tmp_path: Path) -> None:
    path = _write(tmp_path, AIR + '[sensor.metrics.pressure]\nscale = 0.01\nunit = "hPa"\n'
                                  '[sensor.metrics.humidity]\nunit = "%"\n')
    (sensor,) = load_profile(path).sensors
    pressure, humidity = sensor.metrics["pressure"], sensor.metrics["humidity"]
    assert (pressure.unit, pressure.value_type, pressure.annotation) == (None, "double", "hPa")
    assert (humidity.unit, humidity.value_type) == ("NoSI.Dimensionless.PERCENT", None)


@pytest.mark.parametrize(("table", "expected"), [
    # scale = 0.01 on pascals sent as "Pa" would be wrong: the result's unit must be stated
    ('[sensor.metrics.pressure]\nscale = 0.01\n',
     '5: sensor "Air" → metrics.pressure.scale: converts pressure (scale): say which unit the result is in '
     '(unit = "Pa" if it is still in Pa; a converted value sent as "Pa" would be wrong)'),
    ('[sensor.metrics.pressure]\npoints = [[0, 0], [100000, 1000]]\n',
     '5: sensor "Air" → metrics.pressure.points: converts pressure (points): say which unit the result is in '
     '(unit = "Pa" if it is still in Pa; a converted value sent as "Pa" would be wrong)'),
    # hPa without the scale that gets there
    ('[sensor.metrics.pressure]\nunit = "hPa"\n',
     '5: sensor "Air" → metrics.pressure.unit: pressure is measured in Pa: to send hPa add scale = 0.01'),
    ('[sensor.metrics.pressure]\nscale = 0.01\nunit = "hpa"\n',
     '6: sensor "Air" → metrics.pressure.unit: "hpa" is not one of the agent\'s units nor a unit pibridge '
     'knows; did you mean hPa? (a unit such as "°C", "%", "hPa", "ppm", "lx", an agent unit name, or type = '
     '"double" with annotation = "…" for any other)'),
])
def test_a_conversion_states_its_unit(tmp_path: Path, table: str, expected: str) -> None:
    assert _problems(_write(tmp_path, AIR + table)) == [expected]


def test_an_offset_alone_keeps_the_unit(tmp_path: Path) -> None:
    (sensor,) = load_profile(_write(tmp_path, AIR + "[sensor.metrics.temperature]\noffset = -0.4\n")).sensors
    assert sensor.metrics["temperature"].unit is None


# --- every problem at once; interval floor; durations; driver names; no sensors -----------------------
def test_a_bad_option_and_a_short_interval_are_reported_together(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Canopy"\ndriver = "dht22"\ninterval = "1s"\n'
                            'options = { pin = 17, read_twice = "maybe" }\n')
    assert _problems(path) == [
        '4: sensor "Canopy" → interval: 1 s is below the 2.1 s a dht22 needs between two readings',
        "5: sensor \"Canopy\" → options.read_twice: 'maybe' is not a valid bool"]


@pytest.mark.parametrize("interval", ["1e-9", '"1ms"', "0.05"])
def test_an_interval_below_the_floor_is_refused(tmp_path: Path, interval: str) -> None:
    path = _write(tmp_path, f'[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\ninterval = {interval}\n')
    (problem,) = _problems(path)
    assert problem.startswith('4: sensor "SoC" → interval: ') and problem.endswith(
        "is below 100 ms, the shortest interval pibridge samples any sensor at")


def test_driver_names_are_case_insensitive(tmp_path: Path) -> None:
    (sensor,) = load_profile(_write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "BME280"\n')).sensors
    assert sensor.driver == "bme280"


@pytest.mark.parametrize(("raw", "seconds"), [('"50ms"', 0.05), ("0.05", 0.05), ('"1s"', 1.0)])
def test_a_duration_option_takes_a_duration(tmp_path: Path, raw: str, seconds: float) -> None:
    path = _write(tmp_path, f'[[sensor]]\nname = "Door"\ndriver = "digital_input"\n'
                            f'options = {{ pin = 17, debounce = {raw} }}\n')
    assert load_profile(path).sensors[0].options["debounce"] == seconds


def test_a_duration_option_refuses_words(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Door"\ndriver = "digital_input"\n'
                            'options = { pin = 17, debounce = "soon" }\n')
    (problem,) = _problems(path)
    assert "options.debounce" in problem and "soon" in problem


def test_run_and_check_cap_a_pathological_list(tmp_path: Path) -> None:
    count = 300
    text = "".join(f'[[sensor]]\nname = "S{i:03d}"\ndriver = "nosuch"\n' for i in range(count))
    path = _write(tmp_path, text)
    run = _pibridge("run", "--profile", path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == PROBLEMS_SHOWN_MAX + 1
    assert lines[-1].endswith(f"… and {count - PROBLEMS_SHOWN_MAX} more problems (`pibridge check --all "
                              f"--profile {path}` lists every one)")
    check = _pibridge("check", "--profile", path)
    assert len(check.stderr.splitlines()) == PROBLEMS_SHOWN_MAX + 1 and check.stdout.endswith(
        f"{count} problems; nothing would run\n")
    assert len(_pibridge("check", "--all", "--profile", path).stderr.splitlines()) == count


# --- commands -------------------------------------------------------------------------------------
def _every_command() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []

    def walk(parser: object, words: tuple[str, ...]) -> None:
        for name, child in subcommands(parser).items():  # type: ignore[arg-type]
            found.append((*words, name))
            walk(child, (*words, name))

    walk(build_parser(), ())
    return found


def test_every_command_has_a_description_an_example_and_exit_codes() -> None:
    commands = _every_command()
    named = {" ".join(words) for words in commands}
    missing = sorted(named - set(COMMAND_HELP))
    assert not missing, f"add to pibridge.cli.COMMAND_HELP: {missing}"
    assert not set(COMMAND_HELP) - named, f"no such command: {sorted(set(COMMAND_HELP) - named)}"
    for words in commands:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*words, "--help"])
        assert done.value.code == 0


def test_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["read", "--help"])
    text = capsys.readouterr().out
    assert COMMAND_HELP["read"].summary.split(":")[0] in text.replace("\n", " ")
    assert "example:\n  pibridge read --profile my.toml" in text and "exit status:\n  0 " in text
    assert "-v, --verbose" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    top = capsys.readouterr().out
    listed = [line.split()[0] for line in top.split("COMMAND\n", 1)[1].split("\n\n")[0].splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert listed[:4] == ["profile", "check", "read", "run"]
    assert top.index("pibridge profile example") < top.index("pibridge check") < top.index("pibridge run")


def test_version_and_verbose_everywhere() -> None:
    from pibridge import __version__

    done = _pibridge("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"pibridge {__version__}"
    for argv in (["-v", "check", "--profile", "x"], ["check", "-v", "--profile", "x"],
                 ["drivers", "-vv"], ["emulator", "dump", "-v"], ["run", "-v", "--profile", "x"]):
        assert build_parser().parse_args(argv).verbose >= 1, argv


@pytest.mark.parametrize("argv", [["drivers"], ["drivers", "--guide"], ["profile", "example"],
                                  ["check", "--profile", "profiles/greenhouse.toml"],
                                  ["read", "--profile", "profiles/demo.toml", "--simulate"]])
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """``pibridge … | head``: a real pipe whose reader has gone before pibridge writes."""
    with subprocess.Popen([sys.executable, "-m", "pibridge", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()                      # the reader (head) is done
        err = process.stderr.read()
        status = process.wait(60)
    assert status == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_profile_example_names_its_file_and_says_check_first(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "my greenhouse.toml"
    assert main(["profile", "example", "-o", str(target)]) == 0
    said = capsys.readouterr().out
    assert said.index("pibridge check --profile") < said.index("pibridge run --profile")
    head = target.read_text(encoding="utf-8").splitlines()[:3]
    assert head[0] == f"# {target}: written by `pibridge profile example greenhouse -o '{target}'`."
    assert "pibridge check --profile" in head[1]
    load_profile(target)           # still a valid profile


def test_read_profile_reads_every_sensor_once_in_display_units(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
                            '[sensor.metrics.pressure]\nname = "Air pressure"\n'
                            '[[sensor]]\nname = "Door"\ndriver = "digital_input"\n'
                            'options = { pin = 27, annotation = "open" }\n'
                            '[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\n')
    assert main(["read", "--profile", str(path), "--simulate"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and err == ""
    assert re.match(r"Air   Temperature [\d.]+ °C, Relative humidity [\d.]+ %, Air pressure \d+ hPa$",
                    lines[0])
    assert re.match(r"Door  State (open|closed)$", lines[1])
    assert re.match(r"SoC   CPU temperature [\d.]+ °C$", lines[2])


def test_read_profile_a_failing_sensor_is_one_line_and_the_others_print(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real reads without hardware: a thermal zone file that exists, a 1-Wire bus that does not."""
    zone = tmp_path / "temp"
    zone.write_text("41234\n")
    path = _write(tmp_path, '[[sensor]]\nname = "Probe"\ndriver = "ds18b20"\n'
                            'options = { device_id = "28-00000000dead", w1_root = "/nonexistent" }\n'
                            '[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\n'
                            f'options = {{ sensor_file = "{zone}" }}\n'
                            '[sensor.metrics.temperature]\noffset = -1.234\n')
    assert main(["read", "--profile", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "Probe  FAILED: ds18b20: 28-00000000dead: 1-Wire is not enabled (/nonexistent not found): add "
        "dtoverlay=w1-gpio to /boot/firmware/config.txt and reboot",
        "SoC    CPU temperature 40 °C"]                     # processed as run would: the offset applied
    assert err == "1 of 2 sensors failed\n"


def test_read_profile_json_keeps_the_agent_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "bme280"\n')
    assert main(["read", "--profile", str(path), "--simulate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (air,) = doc["sensors"]
    assert air["units"]["Air pressure"] == "SI.Pressure.PASCAL" and air["values"]["Air pressure"] > 50_000


def test_scan_writes_a_starting_profile_that_passes_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "i2c-1").touch()
    w1 = tmp_path / "w1"
    w1.mkdir()
    for name in ("w1_bus_master1", "28-000005abb69d", "28-000005abb69e", "ee-000000000001"):
        (w1 / name).mkdir()
    clock = VirtualClock()

    def opener(number: int) -> FakeSMBus:
        bus = FakeSMBus(number)
        bus.attach(0x76, FakeBME280(clock=clock))
        bus.attach(0x77, FakeBME280(clock=clock, variant="BMP280"))
        bus.attach(0x23, FakeBH1750(clock=clock))
        bus.attach(0x48, FakeBH1750(clock=clock))       # unknown chip: no sensor for it
        return bus

    monkeypatch.setattr(driver_commands, "I2C_DEV_ROOT", dev)
    monkeypatch.setattr(driver_commands, "W1_DEVICES_ROOT", w1)
    monkeypatch.setattr(driver_commands, "open_smbus", opener)
    target = tmp_path / "found.toml"
    assert main(["scan", "--profile-out", str(target)]) == 0
    assert f"wrote {target}: 5 sensors found" in capsys.readouterr().out
    profile = load_profile(target)
    assert [(s.name, s.driver) for s in profile.sensors] == [
        ("BH1750 0x23", "bh1750"), ("BME280 0x76", "bme280"), ("BMP280 0x77", "bme280"),
        ("Probe 28-000005abb69d", "ds18b20"), ("Probe 28-000005abb69e", "ds18b20")]
    assert profile.sensors[2].options["metrics"] == "temperature,pressure"   # a BMP280 has no humidity
    assert profile.sensors[3].options["w1_root"] == str(w1)
    assert main(["scan", "--profile-out", str(target)]) == 1                 # never overwrites


def test_scan_with_nothing_found_still_writes_a_valid_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(driver_commands, "I2C_DEV_ROOT", tmp_path)
    monkeypatch.setattr(driver_commands, "W1_DEVICES_ROOT", tmp_path / "absent")
    target = tmp_path / "empty.toml"
    assert main(["scan", "--profile-out", str(target)]) == 0
    assert [s.driver for s in load_profile(target).sensors] == ["cpu_temperature"]


def test_drivers_guide_ships_with_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    from pibridge.guide import EXAMPLE_FILES, guide_files

    assert main(["drivers", "--guide"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ") and "The worked example package" in out
    files = guide_files()
    assert all((files.example / name).is_file() for name in EXAMPLE_FILES)


def test_readme_links_point_nowhere_into_a_checkout() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert target.startswith(("http://", "https://")), target


# --- driver authors -------------------------------------------------------------------------------
def test_the_crc_helpers_work_on_any_length() -> None:
    """What their docstrings promise: the catalogue's 9-byte check values, and nothing at all."""
    from pibridge.drivers.crc import crc8_maxim, crc8_sensirion

    assert crc8_maxim(b"123456789") == 0xA1 and crc8_sensirion(b"123456789") == 0xF7
    assert crc8_sensirion(b"\xbe\xef") == 0x92 and crc8_sensirion(b"") == 0xFF and crc8_maxim(b"") == 0x00
    assert "any number of bytes" in (crc8_sensirion.__doc__ or "")


def test_a_shadowed_plugin_is_reported_once_and_listed_names_are_the_profiles(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pibridge.drivers import registry

    info = tmp_path / "pibridge_shadow_test-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pibridge_shadow_test\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pibridge.drivers]\nBME280 = pibridge.drivers.bh1750:BH1750\n"
                                           "zz_light = pibridge.drivers.bh1750:BH1750\n")
    sys.path.insert(0, str(tmp_path))
    registry.reset()
    try:
        with caplog.at_level("WARNING", logger="pibridge.drivers.registry"):
            registry.names()
            registry.names()
            registry.get("bme280")
        warned = [r for r in caplog.records if "not used" in r.getMessage()]
        assert len(warned) == 1 and "'BME280'" in warned[0].getMessage()
        assert registry.shadowed() == [
            "installed driver 'BME280' (pibridge.drivers.bh1750:BH1750) is not used: "
            "a built-in driver has that name; rename its entry point"]
        listing = "\n".join(driver_commands.describe_driver(registry.get("zz_light"), "zz_light"))
        assert listing.startswith("zz_light: ") and "profiles use 'zz_light'" in listing
    finally:
        sys.path.remove(str(tmp_path))
        registry.reset()
