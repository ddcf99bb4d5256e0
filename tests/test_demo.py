"""The README's demo command stays true: the demo script runs end to end against a real emulator
and leaves one value per metric of every profile sensor in the emulated agent."""

import json
import subprocess
import sys
from pathlib import Path

from pibridge.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent


def test_demo_pushes_every_greenhouse_sensor(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--rounds", "1", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    dump = json.loads(subprocess.run(
        [sys.executable, "-m", "pibridge", "emulator", "dump", "--state-dir", str(tmp_path / "emulator")],
        check=True, capture_output=True, text=True).stdout)
    (client,) = dump["clients"]
    names = {s["name"] for s in client["sensors"]}
    assert names == {s.name for s in load_profile(ROOT / "profiles" / "greenhouse.toml").sensors}
    for sensor in client["sensors"]:
        for metric in sensor["metrics"]:
            assert len(metric["values"]) == 1, (sensor["name"], metric)
