"""`pibridge status` against a real `pibridge run` subprocess (issue 20 §4): a metric scaled to
infinity keeps the status file fresh and readable, and a refused reload is degraded until a
reload succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_bridge_run import Bridge as BridgeProcess

STATUS_WAIT_S = 30.0  # the status file is rewritten every 5 s (at once after a reload)
POLL_S = 0.2

PROFILE = """\
[bridge]
state_dir = "{state_dir}"

[agent]
host = "127.0.0.1"
port = 1
ca_file = "missing-ca.crt"
cert_folder = "certs"

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = {interval}
[sensor.metrics.temperature]
scale = 1e308
unit = "°C"
"""


def status(profile: Path) -> tuple[int, dict[str, Any]]:
    """`pibridge status --json` in the runtime directory the bridge writes to (conftest gives each
    test its own); not ``--profile``, which must read the profile, refused or not."""
    done = subprocess.run([sys.executable, "-m", "pibridge", "status", "--json", "--runtime-dir",
                           os.environ["RUNTIME_DIRECTORY"]], capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


def poll(check: Callable[[], Any], what: str) -> Any:
    """``check()``'s first truthy result (another process's file: no event to wait on)."""
    deadline = time.monotonic() + STATUS_WAIT_S
    pause = threading.Event()
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(POLL_S)
    return result


def test_an_infinite_value_and_a_refused_reload_through_a_running_bridge(tmp_path: Path) -> None:
    profile = tmp_path / "bridge.toml"
    state = tmp_path / "state"  # the same in the profile and on the command line: it names the file

    def write(interval: object) -> None:
        profile.write_text(PROFILE.format(interval=interval, state_dir=state))
    write(1)
    bridge = BridgeProcess(profile, state)
    try:
        bridge.wait_line(lambda line: "sample Pi SoC" in line)

        def infinite_and_fresh() -> tuple[int, dict[str, Any]] | None:
            code, data = status(profile)
            if not data["bridges"] or not data["bridges"][0]["fresh"]:
                return None
            values = data["bridges"][0]["status"]["sensors"][0]["values"]
            return (code, data) if values and values[0]["value"] == {"$float": "inf"} else None
        code, data = poll(infinite_and_fresh, "a fresh status with the infinite value")
        assert code == 0, data["bridges"][0]["reasons"]

        write('"soon"')
        bridge.proc.send_signal(signal.SIGHUP)
        bridge.wait_line(lambda line: "refused" in line)

        def refused() -> tuple[int, dict[str, Any]] | None:
            code, data = status(profile)
            return (code, data) if code == 1 else None
        code, data = poll(refused, "degraded after the refused reload")
        reasons = data["bridges"][0]["reasons"]
        assert len(reasons) == 1 and reasons[0].startswith(f"profile reload refused: {profile} has 1 problem")

        write(2)
        bridge.proc.send_signal(signal.SIGHUP)
        bridge.wait_line(lambda line: "reloaded" in line)
        poll(lambda: status(profile)[0] == 0, "healthy after a reload succeeded")
        assert bridge.stop() == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()
    assert not any("Traceback" in line for line in bridge.lines), "\n".join(bridge.lines)


def test_a_disk_that_fills_up_under_a_running_bridge_is_degraded_until_it_has_room(tmp_path: Path) -> None:
    """The state directory on a 1 MiB tmpfs: filled while the bridge runs, `pibridge status` says
    "cannot store samples"; emptied again, it is healthy. Skipped where mounting is not allowed."""
    state = tmp_path / "state"
    state.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): a full disk needs one")
    profile = tmp_path / "bridge.toml"
    profile.write_text(PROFILE.format(interval=1, state_dir=state).replace("scale = 1e308", "scale = 1"))
    bridge = BridgeProcess(profile, state)
    filler = state / "filler"
    try:
        bridge.wait_line(lambda line: "sample Pi SoC" in line)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # full
            pass
        finally:
            os.close(fd)
        bridge.wait_line(lambda line: "cannot write" in line)

        def full() -> tuple[int, dict[str, Any]] | None:
            code, data = status(profile)
            return (code, data) if code == 1 else None
        _, data = poll(full, "degraded while the disk is full")
        assert any(reason.startswith("cannot store samples: database or disk is full")
                   for reason in data["bridges"][0]["reasons"]), data["bridges"][0]["reasons"]

        filler.unlink()
        bridge.wait_line(lambda line: "storing again" in line)
        poll(lambda: status(profile)[0] == 0, "healthy once samples are stored again")
        assert bridge.stop() == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert not any("Traceback" in line for line in bridge.lines), "\n".join(bridge.lines)
