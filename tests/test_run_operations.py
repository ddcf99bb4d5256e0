"""`pibridge run` as the operator meets it, as a real subprocess: systemd hears READY (before any
agent answered), watchdog keep-alives and STOPPING on its notify socket; the status file follows
the running parts and `pibridge status` reads it; SIGHUP reloads a valid profile without losing
or re-stamping a queued sample and without touching an unchanged sensor's grid, and refuses an
invalid one; on a terminal the live view redraws in place, without one plain log lines."""

from __future__ import annotations

import json
import math
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pibridge.bridge.status import read_status, status_path
from pibridge.emulator.process import EmulatorProcess, free_port

LINE_WAIT_S = 30.0
EXIT_WAIT_S = 10.0
#: the status file is rewritten every 5 s: two rounds and some
STATUS_WAIT_S = 20.0
#: How often `poll` looks again at another process's state.
POLL_S = 0.2
#: delivery after the emulator is back: its start, the bridge's reconnect backoff (≤ 3 s), the drain
DRAIN_WAIT_S = 60.0
SAMPLE = re.compile(r"sample (?P<sensor>.+?) at (?P<ts>\d+)(?P<edge> \(edge\))?: ")

AWAY_PROFILE = """\
[agent]
host = "127.0.0.1"
port = {port}
ca_file = "missing-ca.crt"
cert_folder = "certs"

[bridge]
state_dir = "state"

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1

[[sensor]]
name = "Door"
driver = "digital_input"
interval = 1
[sensor.options]
pin = 17
"""


def run_command(profile: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pibridge", "-v", "run", "--profile", str(profile), "--simulate",
            "--trust-clock", *extra]


class Running:
    """``pibridge -v run`` as a child; its stderr lines are read on a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = LINE_WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, "the bridge exited:\n" + "\n".join(self.lines[-40:])
            self.lines.append(line)
            if predicate(line):
                return line

    def samples(self, sensor: str) -> list[int]:
        """Timestamps (ms) of every sample of ``sensor`` the bridge logged so far."""
        return [int(m["ts"]) for line in self.lines if (m := SAMPLE.search(line)) and m["sensor"] == sensor]

    def wait_samples(self, sensor: str, count: int) -> None:
        have = len(self.samples(sensor))
        self.wait_line(lambda line: bool((m := SAMPLE.search(line)) and m["sensor"] == sensor)
                       and len(self.samples(sensor)) >= have + count)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(EXIT_WAIT_S)
        while (line := self._queue.get(timeout=LINE_WAIT_S)) is not None:
            self.lines.append(line)
        return code


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def bridge_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env.update(RUNTIME_DIRECTORY=str(runtime_dir), **extra)
    return env


# -- systemd and the status file ---------------------------------------------------------------
@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="pbn-")   # short: a socket path has at most 107 bytes
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    shutil.rmtree(directory)


def next_message(sock: socket.socket, timeout: float = LINE_WAIT_S) -> dict[str, str]:
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """``check()``'s first truthy result, asked every `POLL_S` until ``timeout``: for state kept
    by another process (a file it rewrites, a database it fills), which sends no event."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its wait is the pause between two looks
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(POLL_S)
    return result


def status_json(runtime_dir: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "pibridge", "status", "--json", "--runtime-dir",
                           str(runtime_dir)], capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


def test_systemd_hears_ready_watchdog_and_stopping_and_the_status_file_follows(
        tmp_path: Path, notify_socket: tuple[socket.socket, str],
        children: list[subprocess.Popen[Any]]) -> None:
    sock, address = notify_socket
    profile = tmp_path / "bridge.toml"
    profile.write_text(AWAY_PROFILE.format(port=free_port()))    # no agent: READY must not wait for one
    runtime = tmp_path / "run"
    env = bridge_env(runtime, NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
    bridge = Running(run_command(profile), env)
    children.append(bridge.proc)

    ready = next_message(sock)
    assert ready.get("READY") == "1" and ready["STATUS"] == "sampling 2 sensors"
    assert next_message(sock) == {"WATCHDOG": "1"}    # every WatchdogSec/2 = 1 s, from the main loop
    assert next_message(sock) == {"WATCHDOG": "1"}

    path = status_path(runtime, tmp_path / "state")
    def sampled() -> Any:  # the file is rewritten every 5 s: until it shows both sensors sampled
        status = read_status(path).status
        return status if all(s.taken > 0 and s.values for s in status.sensors) else None
    status = poll(sampled, STATUS_WAIT_S, "a status file showing both sensors sampled")
    soc = status.sensor("Pi SoC")
    assert soc.state == "ok" and soc.values[0].key == "temperature" and soc.values[0].unit == "°C"
    assert isinstance(soc.values[0].value, float) and soc.last_sample_at is not None
    assert status.agent.connected is False and status.agent.port > 0
    assert status.clock.synchronised and "trust" in status.clock.source
    assert status.queue.depth >= 2   # nothing delivered: everything waits on disk
    code, shown = status_json(runtime)
    assert code == 0, shown           # agent away for less than the grace period: healthy
    assert shown["bridges"][0]["status"]["sensors"][0]["name"] == "Pi SoC"

    assert bridge.stop() == 0
    messages = []
    while (message := next_message(sock)).get("STOPPING") != "1":
        messages.append(message)
    assert not path.exists()
    assert status_json(runtime)[0] == 2  # not running


def test_without_a_terminal_the_view_is_plain_log_lines(tmp_path: Path,
                                                        children: list[subprocess.Popen[Any]]) -> None:
    profile = tmp_path / "bridge.toml"
    profile.write_text(AWAY_PROFILE.format(port=free_port()))
    bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
    children.append(bridge.proc)
    line = bridge.wait_line(lambda line: "status: 2/2 sensors ok" in line)
    assert "agent not connected" in line and "\x1b" not in line
    assert bridge.stop() == 0
    assert not any("\x1b" in line for line in bridge.lines)


# -- on a terminal -----------------------------------------------------------------------------
def test_on_a_terminal_the_live_view_redraws_in_place(tmp_path: Path,
                                                      children: list[subprocess.Popen[Any]]) -> None:
    profile = tmp_path / "bridge.toml"
    profile.write_text(AWAY_PROFILE.format(port=free_port()))
    master, slave = os.openpty()
    env = bridge_env(tmp_path / "run", TERM="xterm", NO_COLOR="1")
    proc = subprocess.Popen(run_command(profile), stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    children.append(proc)
    os.close(slave)
    drawn = b""

    def read_until(predicate: Callable[[str], bool], timeout: float = LINE_WAIT_S) -> str:
        nonlocal drawn
        deadline = time.monotonic() + timeout
        while not predicate(drawn.decode(errors="replace")):
            remaining = deadline - time.monotonic()
            assert remaining > 0, drawn.decode(errors="replace")[-2000:]
            if select.select([master], [], [], remaining)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    break
                drawn += chunk
        return drawn.decode(errors="replace")

    try:
        # the frame shows each sensor with a value and its unit, then is redrawn in place
        text = read_until(lambda t: re.search(r"Pi SoC\s+ok\s+[-\d.]+ °C", t) is not None
                          and re.search(r"\x1b\[\d+A\r", t) is not None)
        assert "\x1b[2K" in text and "pibridge " in text and "agent 127.0.0.1:" in text
        assert "Door" in text and "queue " in text
        # the log lines do not tear the frame: none of the INFO/DEBUG stream is written across it
        assert "sample Pi SoC at" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WAIT_S) == 0
        assert "Traceback" not in drawn.decode(errors="replace")
    finally:
        os.close(master)


# -- reload without loss -----------------------------------------------------------------------
RELOAD_PROFILE = """\
[agent]
host = "127.0.0.1"
port = {port}
provision_port = {provision_port}
ca_file = "{ca_file}"
cert_folder = "certs"
provisioning = "smart"

[bridge]
state_dir = "state"

[[sensor]]
name = "Steady"
driver = "cpu_temperature"
interval = 1
{more}
"""
GONE = """
[[sensor]]
name = "Gone"
driver = "digital_input"
interval = 1
[sensor.options]
pin = 17
"""
NEW = """
[[sensor]]
name = "New"
driver = "bh1750"
interval = 1
[sensor.options]
address = 0x23
"""
INVALID = """
[[sensor]]
name = "New"
driver = "bh1750"
interval = "soon"
"""


def held_timestamps(emulator: EmulatorProcess) -> dict[str, set[int]]:
    """{sensor name: timestamps the agent holds for any of its metrics}; sensor names unique."""
    (client,) = emulator.dump()["clients"]
    names = [s["name"] for s in client["sensors"]]
    assert len(names) == len(set(names)), f"duplicate sensors: {names}"
    return {s["name"]: {v["timestamp"] for m in s["metrics"] for v in m["values"]} for s in client["sensors"]}


def wait_held(emulator: EmulatorProcess, expected: dict[str, list[int]],
              timeout: float = DRAIN_WAIT_S) -> None:
    def delivered() -> bool:
        held = held_timestamps(emulator) if emulator.running else {}
        return all(set(stamps) <= held.get(name, set()) for name, stamps in expected.items())
    poll(delivered, timeout, f"every taken sample at the agent: {expected}")


def test_sighup_reloads_without_losing_a_queued_sample_or_touching_an_unchanged_grid(
        tmp_path: Path, emulator: EmulatorProcess, children: list[subprocess.Popen[Any]]) -> None:
    profile = tmp_path / "bridge.toml"

    def write(more: str) -> None:
        profile.write_text(RELOAD_PROFILE.format(port=emulator.port, provision_port=emulator.provision_port,
                                                 ca_file=emulator.ca_file, more=more))

    write(GONE)
    bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
    children.append(bridge.proc)
    bridge.wait_samples("Gone", 2)
    wait_held(emulator, {"Steady": bridge.samples("Steady")[:1], "Gone": bridge.samples("Gone")[:1]})

    emulator.stop()                                   # the agent goes away: samples wait on disk
    bridge.wait_samples("Steady", 2)
    bridge.wait_samples("Gone", 1)

    write(INVALID)
    bridge.proc.send_signal(signal.SIGHUP)
    bridge.wait_line(lambda line: "refused" in line and "running configuration stays" in line)
    bridge.wait_line(lambda line: "interval" in line)  # every problem is logged
    bridge.wait_samples("Gone", 1)                    # the running configuration keeps going

    write(NEW)                                        # Gone removed, New added, Steady unchanged
    bridge.proc.send_signal(signal.SIGHUP)
    bridge.wait_line(lambda line: "reloaded: sensors: 1 added (New), 1 removed (Gone), 1 unchanged"
                     in line)
    bridge.wait_samples("New", 2)
    bridge.wait_samples("Steady", 1)
    gone = bridge.samples("Gone")
    taken = {"Steady": bridge.samples("Steady"), "Gone": gone, "New": bridge.samples("New")}

    emulator.start()                                  # back on the same ports and state
    wait_held(emulator, taken)                        # nothing lost, nothing re-stamped
    assert bridge.stop() == 0
    assert not any("Traceback" in line for line in bridge.lines), "\n".join(bridge.lines)
    assert bridge.samples("Gone") == gone             # removed: no sample after the reload
    assert not any("sensor Steady" in line for line in bridge.lines)  # never failing, never rebuilt
    steady = bridge.samples("Steady")
    # on its 1 s grid throughout (each sample near the start of its own slot, one per slot); a slot
    # a loaded machine skipped is counted by the bridge, not a moved grid, so gaps are not asserted
    slots = [math.floor(ts / 1000) for ts in steady]
    assert slots == sorted(set(slots)), "Steady took two samples in one slot or went backwards"
    assert all(ts - slot * 1000 < 500 for ts, slot in zip(steady, slots, strict=True)), "Steady left its grid"


# -- pibridge reload: the verdict, and a status that tells the truth about it -------------------
def reload_command(profile: Path, runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", "reload", "--profile", str(profile),
                           "--runtime-dir", str(runtime), "--timeout", "30"],
                          capture_output=True, text=True, timeout=60)


def status_of(profile: Path, runtime: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "pibridge", "status", "--json", "--profile", str(profile),
                           "--runtime-dir", str(runtime)], capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


def test_reload_command_fails_on_a_refused_profile_and_status_stays_degraded_until_fixed(
        tmp_path: Path, children: list[subprocess.Popen[Any]]) -> None:
    profile = tmp_path / "bridge.toml"
    good = AWAY_PROFILE.format(port=free_port())
    profile.write_text(good)
    runtime = tmp_path / "run"
    bridge = Running(run_command(profile), bridge_env(runtime))
    children.append(bridge.proc)
    path = status_path(runtime, tmp_path / "state")
    poll(lambda: path.exists(), STATUS_WAIT_S, "the status file")

    broken = good.replace('driver = "cpu_temperature"', 'driver = "cpu_temprature"')
    profile.write_text(broken)
    refused = reload_command(profile, runtime)
    assert refused.returncode == 1, refused.stderr
    assert "refused (1 problem)" in refused.stderr and "cpu_temprature" in refused.stderr
    assert "Traceback" not in refused.stderr
    # status finds the bridge through the broken profile's [bridge] alone, and says degraded
    code, shown = status_of(profile, runtime)
    assert code == 1, shown
    assert any("running an older profile" in reason for reason in shown["bridges"][0]["reasons"])
    assert shown["bridges"][0]["status"]["reload"]["problem_count"] == 1

    profile.write_text(good)          # put back as it was, without a reload: no longer degraded
    poll(lambda: status_of(profile, runtime)[0] == 0, STATUS_WAIT_S, "the fixed-back file noticed")

    profile.write_text(broken)
    assert reload_command(profile, runtime).returncode == 1
    profile.write_text(good.replace("interval = 1", "interval = 2", 1))   # a valid change
    applied = reload_command(profile, runtime)
    assert applied.returncode == 0, applied.stderr
    assert "applied" in applied.stdout
    code, shown = status_of(profile, runtime)
    assert code == 0, shown
    reload = shown["bridges"][0]["status"]["reload"]
    assert reload["applied"] and not reload["refused"] and reload["count"] == 3
    assert not any(e["message"].startswith("profile refused")
                   for e in shown["bridges"][0]["status"]["recent_errors"])
    assert bridge.stop() == 0
    gone = reload_command(profile, runtime)
    assert gone.returncode == 2 and "no running bridge" in gone.stderr
