"""`pibridge check --profile P`: every problem (exit 1) or what would run (exit 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.cli import main

ROOT = Path(__file__).resolve().parent.parent
GREENHOUSE = ROOT / "profiles" / "greenhouse.toml"

GREENHOUSE_SUMMARY = f"""\
{GREENHOUSE}: no problems; 9 sensors
agent:  localhost:18884 (provisioning localhost:18883), client "greenhouse", provisioning smart
        CA /var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt, credentials in /var/lib/pibridge/certs
state:  /var/lib/pibridge
queue:  at most 500000 samples and 30d, durability process; inventory checked every 1h; logs as text
sensor "Air": bme280, every 1m
  temperature → "Air temperature" in °C; offset -0.4, valid -40 to 85 (else left out)
  humidity → "Air humidity" in %
  pressure → "Air pressure" in Pa; sent when it moved by 20, at least every 15m
sensor "Canopy": sht4x, every 1m
  temperature → "Canopy temperature" in °C
  humidity → "Canopy humidity" in %
sensor "CO2": scd4x, every 1m, pressure from "Air"
  co2 → "CO2" in double [ppm]; sent when it moved by 5, at least every 10m
  temperature → "Temperature" in °C
  humidity → "Relative humidity" in %
sensor "Soil temperature bed 1": ds18b20, every 2m
  temperature → "Temperature" in °C; valid -20 to 60 (else left out)
sensor "Soil temperature bed 2": ds18b20, every 2m
  temperature → "Temperature" in °C; valid -20 to 60 (else left out)
sensor "Soil moisture bed 1": ads1115, every 5m
  voltage → "Soil moisture" in %; calibrated through 1.3 → 100, 2.8 → 0, \
valid -30 to 130 (else left out), clamped to 0…100, sent when it moved by 0.5, at least every 1h
sensor "Light": veml7700, every 1m
  illuminance → "Illuminance" in double [lx]; sent when it moved by 100, at least every 10m
sensor "Door": digital_input, every 5m
  state → "Door" in bool [open]
sensor "Pi temperature": cpu_temperature, every 5m
  temperature → "CPU temperature" in °C
pins and buses:
  I2C bus 1 (GPIO 2, 3): "Air" at 0x76, "Canopy" at 0x44, "CO2" at 0x62,\
 "Soil moisture bed 1" at 0x48, "Light" at 0x10
  1-Wire on GPIO 4: "Soil temperature bed 1" (28-000005abb69d), "Soil temperature bed 2" (28-000005abc1f2)
  GPIO 27: "Door"
"""


def test_greenhouse_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--profile", str(GREENHOUSE)]) == 0
    out, err = capsys.readouterr()
    assert out == GREENHOUSE_SUMMARY and err == ""


def test_summary_shows_the_metrics_the_options_leave(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A BME280 with pressure skipped lists no pressure; a door shows its annotation option."""
    path = tmp_path / "shed.toml"
    path.write_text('[[sensor]]\nname = "Air"\ndriver = "bme280"\noptions = { osrs_p = 0 }\n'
                    '[[sensor]]\nname = "Shed door"\ndriver = "digital_input"\n'
                    'options = { pin = 27, annotation = "open" }\n'
                    '[[sensor]]\nname = "Roof"\ndriver = "bme280"\noptions = { address = 0x77, '
                    'metrics = "pressure" }\nmetrics.pressure.name = "Roof pressure"\n')
    assert main(["check", "--profile", str(path)]) == 0
    out, err = capsys.readouterr()
    sensors = out[out.index('sensor "Air"'):out.index("pins and buses:")]
    assert sensors.splitlines() == [
        'sensor "Air": bme280, every 1m',
        '  temperature → "Temperature" in °C',
        '  humidity → "Relative humidity" in %',
        'sensor "Shed door": digital_input, every 1m',
        '  state → "State" in bool [open]',
        'sensor "Roof": bme280, every 1m',
        '  pressure → "Roof pressure" in Pa',
    ]
    assert err == ""


def test_control_characters_never_reach_the_terminal(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The reviewer's forged name is refused (escaped in its problem line); text the profile may
    hold (a state directory's path) is printed escaped in the summary."""
    path = tmp_path / "forged.toml"
    path.write_text('[[sensor]]\nname = "Canopy\\u001b[2J\\nfake.toml:1: all good"\n'
                    'driver = "cpu_temperature"\n')
    assert main(["check", "--profile", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "\x1b" not in err and len(err.splitlines()) == 1 and "Canopy\\u001b[2J\\u000a" in err
    path.write_text('[bridge]\nstate_dir = "st\\u001b[2J\\nfake"\n'
                    '[[sensor]]\nname = "CPU"\ndriver = "cpu_temperature"\n')
    assert main(["check", "--profile", str(path)]) == 0
    out, err = capsys.readouterr()
    assert all(line.isprintable() for line in out.splitlines())
    assert 'st\\u001b[2J\\u000afake' in out


def test_demo_profile_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--profile", str(ROOT / "profiles" / "demo.toml")]) == 0
    assert "no problems; 9 sensors" in capsys.readouterr().out


def test_every_problem_then_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "greenhouse.toml"
    path.write_text('[agnet]\n[[sensor]]\nname = "Canopy"\ndriver = "dht22"\ninterval = 1\noptions.pin = 4\n'
                    '[[sensor]]\nname = "Soil"\ndriver = "ds18b20"\noptions.device_id = "28-000005abb69d"\n')
    assert main(["check", "--profile", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{path}: 3 problems; nothing would run\n"
    assert err.splitlines() == [
        f"{path}:1: agnet: unknown table; did you mean [agent]? "
        "(a profile has [agent], [bridge], [[sensor]])",
        f'{path}:5: sensor "Canopy" → interval: 1 s is below the 2.1 s a dht22 needs between two readings',
        f'{path}:6: sensor "Canopy" → options.pin: GPIO 4 is the 1-Wire pin',
    ]


@pytest.mark.parametrize(("args", "status", "fragment"), [
    (["check"], 2, "--profile"),
    (["check", "--profile"], 2, "--profile"),
    (["check", "--profile", "/nonexistent/greenhouse.toml"], 1, "cannot read the profile"),
    (["check", "--profile", "/"], 1, "cannot read the profile"),
    (["check", "--profile", "~nosuchuser-pibridge/greenhouse.toml"], 1, "cannot read the profile"),
])
def test_bad_arguments_are_one_line_without_traceback(args: list[str], status: int, fragment: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pibridge", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == status
    assert "Traceback" not in result.stderr and fragment in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ("" if status == 2 else f"{args[-1]}: 1 problem; nothing would run\n")
