"""Profiles: the schema's values, lines right wherever a key is written, hostile files, the
agent-only mode, and the shipped profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.agent import AgentSettings, ProvisioningMode
from pibridge.profile import (
    BridgeSettings,
    Calibration,
    MetricConfig,
    ProfileError,
    SensorConfig,
    duration,
    load_profile,
    resolve_path,
    schema,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "profiles").glob("*.toml"))


def _write(tmp_path: Path, text: str, name: str = "profile.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


#: a valid sensor, for cases about [agent] or [bridge] (a profile needs at least one sensor)
ONE_SENSOR = '[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\n'


def _problems(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    return list(caught.value.lines)


# --- values ---------------------------------------------------------------------------------------
def test_agent_table_with_paths_relative_to_the_profile(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _write(tmp_path, '[agent]\nhost = "127.0.0.1"\nport = 28884\nprovision_port = 28883\n'
                            'ca_file = "~/ca.crt"\ncert_folder = "certs"\nclient_name = "green house"\n'
                            'provisioning = "smart"\n' + ONE_SENSOR)
    profile = load_profile(path)
    assert profile.agent == AgentSettings(host="127.0.0.1", port=28884, provision_port=28883,
                                          ca_file=tmp_path / "home" / "ca.crt",
                                          cert_folder=tmp_path / "certs",
                                          client_name="green house", provisioning=ProvisioningMode.SMART)
    assert profile.bridge == BridgeSettings() and [s.name for s in profile.sensors] == ["SoC"]


def test_profile_without_tables_gives_the_real_agents_defaults(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, "# a sensor, nothing else\n" + ONE_SENSOR))
    assert profile.agent == AgentSettings() and profile.bridge == BridgeSettings()


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"# nothing yet\n", b"[agent]\n[bridge]\n",
                                     b"sensor = []\n"], ids=["0 bytes", "BOM only", "comment", "tables",
                                                             "empty list"])
def test_a_profile_without_sensors_is_a_problem(tmp_path: Path, content: bytes) -> None:
    """An empty profile (or one emptied before a SIGHUP) would run, or reload to, nothing at all."""
    path = tmp_path / "empty.toml"
    path.write_bytes(content)
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}: no [[sensor]]: a profile needs at least one sensor")


def test_dev_null_is_a_problem() -> None:
    (problem,) = _problems(Path("/dev/null"))
    assert "no [[sensor]]" in problem


def test_bridge_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _write(tmp_path, '[bridge]\nstate_dir = "../state"\nqueue_max_samples = 1000\n'
                            'queue_max_age = "2d"\ndurability = "power"\ninventory_check = 90\n'
                            'w1_gpio = 22\nlog_format = "json"\n' + ONE_SENSOR)
    assert load_profile(path).bridge == BridgeSettings(tmp_path / ".." / "state", 1000, 2 * 86400.0, "power",
                                                       90.0, 22, "json")
    path = _write(tmp_path, '[bridge]\nstate_dir = "~/pibridge"\n' + ONE_SENSOR)
    assert load_profile(path).bridge.state_dir == tmp_path / "home" / "pibridge"


@pytest.mark.parametrize(("raw", "seconds"), [
    (30, 30.0), (0.5, 0.5), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1.5h", 5400.0), (" 2 m ", 120.0),
])
def test_one_duration_format(raw: object, seconds: float) -> None:
    assert duration(raw) == seconds


@pytest.mark.parametrize("raw", ["30", "5 min", "1w", "-1s", 0, -2, True, float("inf"), "1h30m", [1],
                                 "3651d"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        duration(raw)


def test_sensor_with_inline_options_and_metrics(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Soil moisture"\ndriver = "mcp3008"\ninterval = "5m"\n'
                            'options = { channel = 2, max_voltage = 5 }\n'
                            'metrics.voltage = { name = "Moisture", points = [[2.8, 0], [1.2, 100]], '
                            'median = 5, '
                            'unit = "NoSI.Dimensionless.PERCENT", valid_range = [0, 100], deadband = 1, '
                            'max_silence = "1h" }\n'
                            'metrics.fraction.enabled = false\n'
                            '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
                            '[sensor.metrics.temperature]\nscale = 1.01\noffset = -0.4\n'
                            'type = "double"\nannotation = "°C (calibrated)"\n')
    first, second = load_profile(path).sensors
    assert first == SensorConfig(
        "Soil moisture", "mcp3008", 300.0,
        {"channel": 2, "differential": False, "max_voltage": 5.0, "spi_device": 0},
        {"voltage": MetricConfig("voltage", True, "Moisture", Calibration(points=((1.2, 100.0), (2.8, 0.0))),
                                 5, (0.0, 100.0), 1.0, 3600.0, "NoSI.Dimensionless.PERCENT"),
         "fraction": MetricConfig("fraction", enabled=False)},
        line=1)
    assert second.interval_s == 60.0 and second.line == 8  # the default interval
    assert second.metrics["temperature"] == MetricConfig("temperature", calibration=Calibration(-0.4, 1.01),
                                                         value_type="double", annotation="°C (calibrated)")


# --- lines ------------------------------------------------------------------------------------------
LINES = '''# tables before the sensors hold text that looks like TOML
[agent]
ca_file = """
[[sensor]]
name = "not a sensor"
"""
client_name = 'x = [[sensor]]'

[bridge]
state_dir = "/tmp/s" # [[sensor]]

[[sensor]]
name = "First"
driver = "cpu_temperature"

[[sensor]]
"name" = "Second"
'driver' = "digital_input"
options = { pull = "up", "pin" = 40 }

[[sensor]]
name = "Third"
driver = "dht22"
[sensor . "options"]
read_twice = true
pin = "GPIO 99"

[[ sensor ]]
name = "Fourth"
driver = "bme280"
options.address = 0x75
metrics."temperature".points = [
  [0, 0],
  [0, 1],
]
'''


def test_lines_are_right_wherever_a_key_is_written(tmp_path: Path) -> None:
    path = _write(tmp_path, LINES, "greenhouse.toml")
    assert _problems(path) == [
        f'{path}:19: sensor "Second" → options.pin: GPIO 40 does not exist (BCM numbering, 0–27)',
        f'{path}:26: sensor "Third" → options.pin: GPIO 99 does not exist (BCM numbering, 0–27)',
        f'{path}:31: sensor "Fourth" → options.address: 0x75 is not one of 0x76, 0x77',
        f'{path}:34: sensor "Fourth" → metrics.temperature.points[1]: raw values must rise (or fall) '
        "strictly from pair to pair: 0 after 0",
    ]


def test_a_missing_key_points_at_its_table(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "bme280"\n\n[[sensor]]\nname = "Canopy"\n'
                            'driver = "dht22"\n[sensor.options]\nuse_pulseio = false\n')
    assert _problems(path) == [
        f'{path}:8: sensor "Canopy" → options.pin: option pin is required (data pin (BCM))']


# --- hostile files (issue 8) ----------------------------------------------------------------------
def test_nested_100000_deep_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert _problems(path) == [f"{path}: nested too deeply: arrays or inline tables inside each other "
                               "beyond what a profile needs"]


def test_nesting_tomllib_accepts_is_reported_in_one_short_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "bme280"\noptions = { address = '
                  + "[" * 300 + "]" * 300 + " }\n")
    (line,) = _problems(path)
    assert line.startswith(f'{path}:4: sensor "Air" → options.address: ') and len(line) < 400


def test_unknown_user_in_a_path_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[agent]\ncert_folder = "~nosuchuser-pibridge/certs"\n[bridge]\n'
                            'state_dir = "~nosuchuser-pibridge"\n' + ONE_SENSOR)
    assert _problems(path) == [
        f'{path}:2: agent.cert_folder: cannot expand "~nosuchuser-pibridge/certs": no user '
        '"nosuchuser-pibridge" on this machine',
        f'{path}:4: bridge.state_dir: cannot expand "~nosuchuser-pibridge": no user "nosuchuser-pibridge" '
        "on this machine",
    ]
    with pytest.raises(ValueError, match="no user"):
        resolve_path("~nosuchuser-pibridge/x", tmp_path)


def test_ten_megabyte_key_and_value_are_reported_in_short_lines(tmp_path: Path) -> None:
    """Line finding is one linear pass (scripts/bench/profile_check.py measures it); the
    messages quote at most 40 characters of a key."""
    path = _write(tmp_path, '[agent]\n"' + "k" * 10_000_000 + '" = 1\n'
                            '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
                            'note = """\n' + "x" * 10_000_000 + '\n"""\n')
    lines = _problems(path)
    assert lines == [
        f'{path}:2: agent."{"k" * 38}…: unknown key (known: host, port, provision_port, ca_file, '
        "cert_folder, client_name, provisioning)",
        f'{path}:6: sensor "Air" → note: unknown key (known: name, driver, interval, options, metrics, '
        'pressure_from)',
    ]


def test_unknown_top_level_table_suggests_agent(tmp_path: Path) -> None:
    path = _write(tmp_path, '[agnet]\nhost = "h"\n' + ONE_SENSOR)
    assert _problems(path) == [f"{path}:1: agnet: unknown table; did you mean [agent]? "
                               "(a profile has [agent], [bridge], [[sensor]])"]


def test_utf8_bom_is_accepted_and_lines_stay_right(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    sensor = ONE_SENSOR.encode()
    path.write_bytes(b"\xef\xbb\xbf[agent]\nport = 0\n" + sensor)
    assert _problems(path) == [f"{path}:2: agent.port: must be a port number between 1 and 65535, not 0"]
    path.write_bytes(b'\xef\xbb\xbf[agent]\nhost = "pi"\n' + sensor)
    assert load_profile(path).agent.host == "pi"


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[agent]\nhost = "gew\xe4chshaus"\n')
    assert _problems(path) == [f"{path}:2: not UTF-8 text: invalid continuation byte (column 12)"]


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir()], ids=["missing", "directory"])
def test_unreadable_profile(tmp_path: Path, make: object) -> None:
    path = tmp_path / "profile.toml"
    make(path)  # type: ignore[operator]
    (line,) = _problems(path)
    assert line.startswith(f"{path}: cannot read the profile: ")


# --- agent-only mode --------------------------------------------------------------------------------
def test_agent_mode_ignores_bridge_and_sensors(tmp_path: Path) -> None:
    path = _write(tmp_path, '[agent]\nport = 28884\n[bridge]\nw1_gpio = 99\n[[sensor]]\ndriver = "bme2800"\n')
    profile = load_profile(path, sections="agent")
    assert profile.agent.port == 28884 and profile.sensors == () and profile.sections == "agent"
    assert len(_problems(path)) == 3  # the full check sees w1_gpio, the name and the driver


def test_agent_mode_still_reports_agent_problems_and_a_misspelt_agent_table(tmp_path: Path) -> None:
    path = _write(tmp_path, '[agnet]\nport = 1\n[agent]\nport = "x"\n[[sensor]]\nname = 1\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path, sections="agent")
    assert [p.key for p in caught.value.problems] == ["agnet", "agent.port"]


def test_ping_reads_only_the_agent_table(tmp_path: Path) -> None:
    """A broken [[sensor]] does not stop `pibridge ping`: it fails on the (absent) agent instead."""
    path = _write(tmp_path, '[agent]\nca_file = "ca.crt"\n[[sensor]]\ndriver = "bme2800"\n')
    command = [sys.executable, "-m", "pibridge", "ping", "--profile", str(path), "--timeout", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert str(tmp_path / "ca.crt") in result.stderr and "bme2800" not in result.stderr
    assert "Traceback" not in result.stderr


# --- the shipped profiles -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_profiles_pass(path: Path) -> None:
    profile = load_profile(path)
    if path.name == "weather.toml":  # rain gauge, anemometer, air, particulates
        assert [s.driver for s in profile.sensors] == ["pulse_counter", "pulse_counter", "bme280", "pms5003"]
        return
    assert len(profile.sensors) == 9
    assert {s.driver for s in profile.sensors} == {"bme280", "sht4x", "scd4x", "ds18b20", "ads1115",
                                                   "veml7700", "digital_input", "cpu_temperature"}
    co2 = next(s for s in profile.sensors if s.driver == "scd4x")
    assert co2.pressure_from == "Air" and not co2.options["self_calibration"]
    soil = next(s for s in profile.sensors if s.driver == "ads1115").metrics["voltage"]
    assert (soil.clamp, soil.unit) == ((0.0, 100.0), "NoSI.Dimensionless.PERCENT")


def test_demo_profile_is_the_greenhouse_on_the_demo_emulator() -> None:
    greenhouse = load_profile(ROOT / "profiles" / "greenhouse.toml")
    demo = load_profile(ROOT / "profiles" / "demo.toml")
    def wiring(sensor: SensorConfig) -> tuple[object, ...]:
        """What the sensor is and how its values are named and converted (intervals may differ)."""
        return (sensor.name, sensor.driver, sensor.options,
                {k: (m.enabled, m.name, m.calibration, m.unit, m.value_type, m.annotation)
                 for k, m in sensor.metrics.items()})

    assert [wiring(s) for s in demo.sensors] == [wiring(s) for s in greenhouse.sensors]
    assert (demo.agent.host, demo.agent.port, demo.agent.provision_port) == ("localhost", 28884, 28883)
    demo_dir = (ROOT / ".demo").resolve()
    for path in (demo.agent.ca_file, demo.agent.cert_folder, demo.bridge.state_dir):
        assert path.resolve().is_relative_to(demo_dir)


@pytest.mark.parametrize("lux", [0.01, 110_000.0])
def test_greenhouse_light_sensor_reads_a_dark_night_and_full_sun(lux: float) -> None:
    """The profile's VEML7700, on its wire-level fake, ranges itself to a night and to a sunlit
    greenhouse (about 100 klx) and reads both without saturating."""
    from pibridge.drivers import read_with_retries
    from pibridge.drivers.fakes.clock import VirtualClock
    from pibridge.drivers.fakes.i2c import FakeSMBus
    from pibridge.drivers.fakes.veml7700 import FakeVEML7700
    from pibridge.drivers.veml7700 import VEML7700, resolution

    sensors = load_profile(ROOT / "profiles" / "greenhouse.toml").sensors
    light = next(s for s in sensors if s.driver == "veml7700")
    clock, bus = VirtualClock(), FakeSMBus(light.options["i2c_bus"])
    bus.attach(light.options["address"], FakeVEML7700(lux=lux, clock=clock))
    driver = VEML7700(bus=bus, **light.options)
    value = 0.0
    for _ in range(3):          # the first reads pick the range (the ladder moves across reads)
        clock.sleep(driver.timing.min_interval_s)
        value = read_with_retries(driver, clock.sleep)["illuminance"]
    assert value == pytest.approx(lux, abs=2 * resolution(*driver.setting), rel=2e-3)


CHECK_WITHOUT_HARDWARE = """
import json, os, sys
from pibridge.profile import load_profile
profile = load_profile(sys.argv[1])
hardware = [m for m in ("gpiozero", "smbus2", "adafruit_dht", "board", "lgpio", "spidev") if m in sys.modules]
print(json.dumps({"hardware": hardware, "state_dir_exists": os.path.exists(profile.bridge.state_dir)}))
"""


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_checking_touches_no_hardware_and_writes_nothing(path: Path) -> None:
    """The same check on a Pi and a PC: no hardware library is even imported."""
    env = {k: val for k, val in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    result = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_HARDWARE, str(path)], capture_output=True,
                            text=True, timeout=60, env=env, check=True)
    report = json.loads(result.stdout)
    assert report["hardware"] == []
    if path.name == "demo.toml":
        assert report["state_dir_exists"] == (ROOT / ".demo" / "bridge").exists()  # not created by the check


def _readme_keys(heading: str) -> list[str]:
    """The first column of the table under ``### heading`` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return [line.split("|")[1].strip().strip("`") for line in section.splitlines()
            if line.startswith("| `")]


@pytest.mark.parametrize(("heading", "keys"), [
    ("`[agent]`", schema.AGENT_KEYS), ("`[bridge]`", schema.BRIDGE_KEYS),
    ("`[[sensor]]`", schema.SENSOR_KEYS), ("`[sensor.metrics.KEY]`", schema.METRIC_KEYS),
])
def test_readme_documents_every_key(heading: str, keys: tuple[str, ...]) -> None:
    assert _readme_keys(heading) == list(keys)


def test_sensors_as_an_inline_array_of_tables(tmp_path: Path) -> None:
    path = _write(tmp_path, 'sensor = [\n  { name = "Air", driver = "bme280" },\n'
                            '  { name = "Door", driver = "digital_input", options = { pin = 2 } },\n]\n')
    assert _problems(path) == [f'{path}:3: sensor "Door" → options.pin: GPIO 2 is a pin of I2C bus 1 '
                               '(GPIO 2 and GPIO 3), which sensor "Air" uses']


def test_profile_error_points_at_the_nth_table(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[sensor]]\nname = "Air"\ndriver = "bme280"\n[[sensor]]\nname = "Pi"\n'
                            'driver = "cpu_temperature"\ninterval = 30\n')
    profile = load_profile(path)
    error = profile.error("too often for this", "sensor", "interval", index=1)
    assert (error.line, error.key) == (7, "sensor.interval")
    assert str(error) == f"{path}:7: sensor.interval: too often for this"


def test_benchmark_script_runs() -> None:
    """scripts/bench/profile_check.py stays runnable (tiny sizes here; the figures are its job)."""
    script = ROOT / "scripts" / "bench" / "profile_check.py"
    result = subprocess.run([sys.executable, str(script), "--repeat", "1", "--sizes", "0.01"],
                            capture_output=True, text=True, timeout=120, check=True)
    assert "greenhouse.toml" in result.stdout and "0.01MB" in result.stdout


def test_windows_line_ends_and_tabs_keep_lines_right(tmp_path: Path) -> None:
    path = tmp_path / "crlf.toml"
    path.write_bytes(b'[agent]\r\nhost = "h"\r\n\r\n[[sensor]]\r\nname = "Air"\r\ndriver = "bme280"\r\n'
                     b"\t[sensor.options]\r\n\taddress = 0x99 # 0x76 or 0x77\r\n")
    assert _problems(path) == [f'{path}:8: sensor "Air" → options.address: 0x99 is not one of 0x76, 0x77']


def test_a_driver_that_cannot_be_imported_is_one_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pibridge.drivers import registry

    monkeypatch.setitem(registry.builtin(), "broken", "pibridge_no_such_module:Broken")
    path = _write(tmp_path, '[[sensor]]\nname = "Pump"\ndriver = "broken"\n[[sensor]]\nname = "Fan"\n'
                            'driver = "broken"\n')
    cannot = "cannot be loaded: No module named 'pibridge_no_such_module'"
    assert _problems(path) == [f'{path}:3: sensor "Pump" → driver: driver "broken" {cannot}',
                               f'{path}:6: sensor "Fan" → driver: driver "broken" {cannot}']


def test_a_driver_whose_own_checks_raise_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party driver's check that raises instead of reporting does not become a traceback."""
    from collections.abc import Mapping
    from typing import Any

    from pibridge.drivers import registry
    from pibridge.drivers.base import Driver, Metric, Option, OptionProblem, Resources

    class Careless(Driver):
        name = "careless"
        options = (Option("channel", int, 0, "a channel"),)

        @classmethod
        def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
            if config["channel"] == 1:
                raise KeyError("mux")
            return []

        @classmethod
        def resources(cls, config: Mapping[str, Any]) -> Resources:
            if config["channel"] == 3:
                return Resources()
            raise RuntimeError("no pins today")

        @classmethod
        def metrics_for(cls, config: Mapping[str, Any]) -> tuple[Metric, ...]:
            raise ValueError("metrics unknown")

    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda name: Careless if name == "careless" else real_get(name))
    path = _write(tmp_path, '[[sensor]]\nname = "One"\ndriver = "careless"\noptions.channel = 1\n'
                            '[[sensor]]\nname = "Two"\ndriver = "careless"\n[sensor.options]\nchannel = 2\n'
                            '[[sensor]]\nname = "Three"\ndriver = "careless"\noptions = { channel = 3 }\n')
    metrics = "careless could not work out its metrics: ValueError: metrics unknown"
    assert _problems(path) == [
        f"{path}:4: sensor \"One\" → options: careless could not check its options: KeyError: 'mux'",
        f'{path}:8: sensor "Two" → options: careless could not work out its timing or pins: RuntimeError: '
        "no pins today",
        f'{path}:8: sensor "Two" → options: {metrics}',
        f'{path}:13: sensor "Three" → options: {metrics}',
    ]


def test_an_endless_file_is_refused_after_a_bounded_read() -> None:
    assert _problems(Path("/dev/zero")) == [
        "/dev/zero: larger than 32 MiB: not a profile (a profile is a few kilobytes)"]


def test_agent_settings_own_rules_name_their_key(tmp_path: Path) -> None:
    """AgentSettings' own checks (client_name's, issue 8) reach the user with file, line and key."""
    path = _write(tmp_path, '[agent]\nhost = "h"\nclient_name = "../../tmp/evil"\n[[sensor]]\nname = "Pi"\n'
                            'driver = "cpu_temperature"\n')
    assert _problems(path) == [f"{path}:3: agent.client_name: names files in the cert folder, so it cannot "
                               "contain '/', '\\' or '..': '../../tmp/evil'"]


def test_greenhouse_queue_comment_is_the_profile_s_own_arithmetic() -> None:
    """The comment beside queue_max_samples says how many days it holds: computed, not guessed."""
    import re

    path = ROOT / "profiles" / "greenhouse.toml"
    profile = load_profile(path)
    per_day = sum(86_400 / s.interval_s for s in profile.sensors)
    line = next(x for x in path.read_text().splitlines() if x.startswith("queue_max_samples"))
    days = re.search(r"~(\d+) days of these sensors \((\d+) samples a day", line)
    assert days is not None, line
    assert int(days[2]) == round(per_day)
    assert int(days[1]) == round(profile.bridge.queue_max_samples / per_day)
