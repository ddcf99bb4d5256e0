"""The README's demo command stays true: `scripts/demo.py` starts the emulator the profile names,
runs `pibridge run --simulate` for a bounded time, and every sensor of the demo profile reaches
the emulated agent; a second run on what the first left in its state folder works too and
creates nothing twice.

The profile is `profiles/demo.toml` with free ports (other test runs may hold the fixed ones),
its state beside it in a temp folder, and 3 s intervals (the demo's are up to 30 s), or the
driver's own spacing where it needs more (an SCD4x measures every 5 s)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from test_run_operations import poll

from pibridge.drivers import registry
from pibridge.emulator.process import free_port
from pibridge.emulator.store import DB_NAME, dump
from pibridge.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
DEMO_PROFILE = ROOT / "profiles" / "demo.toml"
#: the first run covers an SCD4x's first value: set up at its first 5 s slot, measuring 5 s later,
#: read at the slot after next (≤ 15 s after the start)
FIRST_RUN_S, SECOND_RUN_S = "18", "6"
DEMO_TIMEOUT_S = 120
TEST_INTERVAL_S = 3


def demo_profile(tmp_path: Path) -> Path:
    text = DEMO_PROFILE.read_text()
    port, provision_port = free_port(), free_port()
    while provision_port == port:
        provision_port = free_port()
    text = text.replace("port = 28884", f"port = {port}").replace("provision_port = 28883",
                                                                  f"provision_port = {provision_port}")
    text = "[[sensor]]".join(_faster(block) for block in text.split("[[sensor]]"))
    text = text.replace('http = "127.0.0.1:8080"', f'http = "127.0.0.1:{free_port()}"')
    folder = tmp_path / "profiles"
    folder.mkdir()
    path = folder / "demo.toml"                 # "../.demo/…" in it: tmp_path/.demo
    path.write_text(text)
    return path


def _faster(block: str) -> str:
    """One ``[[sensor]]`` block with its interval at 3 s, or at its driver's spacing if longer."""
    driver = re.search(r'(?m)^driver = "(\w+)"', block)
    if driver is None:
        return block
    spacing = max(TEST_INTERVAL_S, math.ceil(registry.get(driver[1]).min_interval_s))
    return re.sub(r'(?m)^interval = "\d+s"', f'interval = "{spacing}s"', block)


def demo_command(profile: Path, seconds: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "demo.py"), "--profile", str(profile), "--seconds",
            seconds, "--dashboard", f"127.0.0.1:{free_port()}"]


def run_demo(profile: Path, seconds: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(demo_command(profile, seconds), capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200 and bool(json.load(answer))
    except OSError:
        return False


def run_demo_reading_its_pages(profile: Path, seconds: str) -> tuple[subprocess.CompletedProcess[str],
                                                                     list[str]]:
    """The demo, with both pages it prints fetched while it runs (each answers its own API; the
    bridge's once the bridge is up)."""
    proc = subprocess.Popen(demo_command(profile, seconds), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    head, pages = [], []
    for line in proc.stdout:
        head.append(line)
        if found := re.search(r"(dashboard|live page): +(http://\S+/)", line):
            pages.append(found[2])
        if len(pages) == 2:
            break
    for url, api in zip(pages, ("api/inventory", "api/status"), strict=True):
        poll(lambda url=url, api=api: _answers(url + api), DEMO_TIMEOUT_S, f"{url}{api} while the demo runs")
    out, err = proc.communicate(timeout=DEMO_TIMEOUT_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(head) + out, err), pages


def test_the_demo_delivers_every_sensor_and_runs_again_on_its_own_leftovers(tmp_path: Path) -> None:
    profile = demo_profile(tmp_path)
    sensors = load_profile(profile).sensors
    first, pages = run_demo_reading_its_pages(profile, FIRST_RUN_S)
    assert len(pages) == 2
    assert first.returncode == 0, first.stdout + first.stderr
    held = dump(tmp_path / ".demo" / "emulator" / DB_NAME)
    (client,) = held["clients"]
    assert {s["name"] for s in client["sensors"]} == {s.name for s in sensors}
    for sensor in client["sensors"]:
        for metric in sensor["metrics"]:
            assert metric["values"], (sensor["name"], metric["name"])
    # the summary names every sensor with its count and last value
    for sensor in sensors:
        assert f"  {sensor.name}\n" in first.stdout, first.stdout
    assert re.search(r"Canopy temperature\s+\d+ values?, last [-\d.]+ °C", first.stdout), first.stdout
    assert "Traceback" not in first.stderr

    counts = {s["name"]: len(s["metrics"][0]["values"]) for s in client["sensors"]}
    second = run_demo(profile, SECOND_RUN_S)
    assert second.returncode == 0, second.stdout + second.stderr
    (again,) = dump(tmp_path / ".demo" / "emulator" / DB_NAME)["clients"]
    assert again["clientId"] == client["clientId"]
    assert [s["sensorId"] for s in again["sensors"]] == [s["sensorId"] for s in client["sensors"]]
    assert sum(len(s["metrics"][0]["values"]) for s in again["sensors"]) > sum(counts.values())
