"""``pibridge run`` (`pibridge.bridge.service`, `pibridge.cli.run_commands`): the bridge as a real
subprocess on simulated hardware — starts sampling at once, one bridge per state directory,
SIGTERM/SIGINT stop it with status 0, logs one line (or one JSON object) per change of state."""

from __future__ import annotations

import ctypes
import io
import json
import logging
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pibridge.agent.settings import AgentSettings
from pibridge.bridge.clock import SystemClock
from pibridge.bridge.queue import SampleQueue
from pibridge.bridge.service import (
    LOCAL_RECONNECT_CAP_S,
    BridgeError,
    JournalFormatter,
    JsonLogFormatter,
    StateDirLock,
    configure_logging,
    reconnect_cap_s,
)
from pibridge.bridge.service import Bridge as BridgeService
from pibridge.emulator.process import free_port
from pibridge.profile import BridgeSettings, Profile, SensorConfig, load_profile

LINE_WAIT_S = 30.0
EXIT_WAIT_S = 10.0  # generous: the bridge itself stops within 5 s
SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268, "armv6l": 268}[platform.machine()]

PROFILE = """\
[agent]
host = "127.0.0.1"
port = {port}
ca_file = "missing-ca.crt"
cert_folder = "certs"

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


class Bridge:
    """``pibridge -v run`` as a child; its stderr lines are read on a thread."""

    def __init__(self, profile: Path, state_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pibridge", "-v", "run", "--profile", str(profile), "--simulate",
             "--state-dir", str(state_dir), "--trust-clock", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, predicate: Callable[[str], bool]) -> str:
        while True:
            line = self._queue.get(timeout=LINE_WAIT_S)
            assert line is not None, "the bridge exited:\n" + "\n".join(self.lines)
            self.lines.append(line)
            if predicate(line):
                return line

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(EXIT_WAIT_S)
        while (line := self._queue.get(timeout=LINE_WAIT_S)) is not None:
            self.lines.append(line)
        return code


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(PROFILE.format(port=1))
    return path


@pytest.fixture
def bridges() -> Iterator[list[Bridge]]:
    started: list[Bridge] = []
    yield started
    for bridge in started:
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()


def test_run_samples_at_once_without_an_agent_and_stops_on_sigterm_with_status_0(
        profile: Path, tmp_path: Path, bridges: list[Bridge]) -> None:
    bridge = Bridge(profile, tmp_path / "state")
    bridges.append(bridge)
    bridge.wait_line(lambda line: "bridge running: 2 sensors (simulated hardware)" in line)
    sample = bridge.wait_line(lambda line: "sample Pi SoC at" in line)
    assert '"temperature"' in sample
    bridge.wait_line(lambda line: "sample Door at" in line)
    assert bridge.stop(signal.SIGTERM) == 0
    assert any("SIGTERM received" in line for line in bridge.lines)
    assert bridge.lines[-1].endswith("pibridge.bridge: stopped")
    assert not any("Traceback" in line for line in bridge.lines)


def test_sigint_stops_it_too(profile: Path, tmp_path: Path, bridges: list[Bridge]) -> None:
    bridge = Bridge(profile, tmp_path / "state")
    bridges.append(bridge)
    bridge.wait_line(lambda line: "bridge running" in line)
    assert bridge.stop(signal.SIGINT) == 0


def _tgkill(pid: int, tid: int, signum: int) -> None:
    """A signal to one thread of another process (``tgkill(2)``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_delivered_to_another_thread_stops_it_at_once(
        signum: int, profile: Path, tmp_path: Path, bridges: list[Bridge]) -> None:
    """The kernel hands a process's signal to any thread; the main loop, asleep up to
    `MAIN_IDLE_TURN_S` (10 s), must wake at once whichever got it (it once waited the 10 s out)."""
    from pibridge.bridge.service import MAIN_IDLE_TURN_S, STOP_TIMEOUT_S

    bridge = Bridge(profile, tmp_path / "state")
    bridges.append(bridge)
    bridge.wait_line(lambda line: "sample Pi SoC at" in line)  # every thread has started
    pid = bridge.proc.pid
    others = sorted(int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if int(t.name) != pid)
    assert others, "a bridge runs several threads"
    _tgkill(pid, others[-1], signum)
    # the stop itself takes at most STOP_TIMEOUT_S; a main loop that slept its turn out would
    # take MAIN_IDLE_TURN_S more
    code = bridge.proc.wait(MAIN_IDLE_TURN_S - 1.0)
    assert code == 0 and STOP_TIMEOUT_S < MAIN_IDLE_TURN_S - 1.0


def test_one_bridge_per_state_directory_the_second_names_the_holder(
        profile: Path, tmp_path: Path, bridges: list[Bridge]) -> None:
    first = Bridge(profile, tmp_path / "state")
    bridges.append(first)
    first.wait_line(lambda line: "bridge running" in line)
    second = subprocess.run(
        [sys.executable, "-m", "pibridge", "run", "--profile", str(profile), "--simulate",
         "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"pibridge: another bridge (PID {first.proc.pid}) is running on state directory {tmp_path / 'state'} "
        f"(lock {tmp_path / 'state' / 'pibridge.lock'})"]
    # another state directory is another bridge
    other = Bridge(profile, tmp_path / "other-state")
    bridges.append(other)
    other.wait_line(lambda line: "bridge running" in line)
    assert other.stop() == 0 and first.stop() == 0


def test_a_killed_bridge_leaves_no_lock_behind(profile: Path, tmp_path: Path, bridges: list[Bridge]) -> None:
    first = Bridge(profile, tmp_path / "state")
    bridges.append(first)
    first.wait_line(lambda line: "bridge running" in line)
    first.proc.kill()
    first.proc.wait(EXIT_WAIT_S)
    again = Bridge(profile, tmp_path / "state")
    bridges.append(again)
    again.wait_line(lambda line: "bridge running" in line)
    assert again.stop() == 0


def test_json_log_format_gives_one_object_per_line(
        profile: Path, tmp_path: Path, bridges: list[Bridge]) -> None:
    bridge = Bridge(profile, tmp_path / "state", "--log-format", "json")
    bridges.append(bridge)
    bridge.wait_line(lambda line: "bridge running" in line)
    bridge.wait_line(lambda line: "sample Pi SoC" in line)
    assert bridge.stop() == 0
    entries = [json.loads(line) for line in bridge.lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert entries[-1]["message"] == "stopped"


@pytest.mark.parametrize(("args", "expected"), [
    (["--profile", "{tmp}/missing.toml"], "missing.toml: cannot read the profile"),
    (["--profile", "{tmp}/bad.toml"], "bad.toml:3: TOML syntax error"),
    (["--profile", "{tmp}/unknown-driver.toml"], 'unknown driver "no_such_chip"'),
    (["--profile", "{tmp}/bridge.toml", "--state-dir", "/proc/pibridge-state"],
     "cannot create the state directory"),
])
def test_bad_input_is_one_line_and_status_1(
        profile: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "bad.toml").write_text('[agent]\nhost = "x"\nport = = 3\n')
    (tmp_path / "unknown-driver.toml").write_text(
        '[[sensor]]\nname = "Xylo"\ndriver = "no_such_chip"\ninterval = 5\n')
    command = [sys.executable, "-m", "pibridge", "run", "--simulate",
               *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    if "--state-dir" not in args:
        command += ["--state-dir", str(tmp_path / "state")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pibridge:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "status", "expected"), [
    ([], 2, "the following arguments are required: --profile"),
    (["--profile", "{tmp}/bridge.toml", "--port", "0"], 1, "port must be a TCP port number"),
    (["--profile", "{tmp}/bridge.toml", "--port", "x"], 2, "invalid int value: 'x'"),
    (["--profile", "{tmp}/bridge.toml", "--log-format", "xml"], 2, "invalid choice: 'xml'"),
    (["--profile", "{tmp}/bridge.toml", "--provisioning", "override"], 2, "invalid choice: 'override'"),
])
def test_bad_flags(profile: Path, tmp_path: Path, args: list[str], status: int, expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pibridge", "run", "--state-dir", str(tmp_path / "state"),
                             *(a.replace("{tmp}", str(tmp_path)) for a in args)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == status and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


# -- the service's parts, in process -------------------------------------------------------------
def test_state_dir_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    first, second = StateDirLock(tmp_path), StateDirLock(tmp_path)
    first.acquire()
    with pytest.raises(BridgeError, match=f"another bridge \\(PID {os.getpid()}\\)"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_log_formats() -> None:
    record = logging.LogRecord("pibridge.bridge", logging.WARNING, __file__, 1, "sensor %s: failing",
                               ("Air",), None)
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["level"] == "warning" and entry["message"] == "sensor Air: failing"
    assert JournalFormatter().format(record) == "<4>WARNING pibridge.bridge: sensor Air: failing"
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", logging.INFO, stream)
        logging.getLogger("pibridge.test").info("hello")
        assert json.loads(stream.getvalue())["message"] == "hello"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_a_local_agent_gets_a_short_reconnect_cap() -> None:
    assert reconnect_cap_s(AgentSettings(host="localhost")) == LOCAL_RECONNECT_CAP_S
    assert reconnect_cap_s(AgentSettings(host="127.0.0.1")) == LOCAL_RECONNECT_CAP_S
    assert reconnect_cap_s(AgentSettings(host="agent.example")) is None


def test_sensor_configs_from_the_profile(profile: Path) -> None:
    configs = load_profile(profile).sensors
    assert [(c.name, c.driver, c.interval_s) for c in configs] == [
        ("Pi SoC", "cpu_temperature", 1.0), ("Door", "digital_input", 1.0)]
    assert configs[1].options["pin"] == 17


# -- the glue, in process: the real queue and delivery (no agent reachable) ----------------------
class Flag:
    """An injectable sync source: the clock is "set" once ``value`` is True."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def synchronized(self) -> bool:
        return self.value


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = LINE_WAIT_S) -> None:
    event = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        event.wait(0.05)


def test_the_service_wires_samples_clock_and_errors_to_the_real_queue(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("45000\n")
    sensors = (SensorConfig("SoC", "cpu_temperature", 0.05, {"sensor_file": str(zone)}),)
    agent = AgentSettings(host="127.0.0.1", port=free_port(), ca_file=tmp_path / "missing-ca.crt",
                          cert_folder=tmp_path / "certs")
    profile = Profile(tmp_path / "p.toml", agent, sensors=sensors)
    sync = Flag(False)
    bridge = BridgeService(profile, agent, bridge=BridgeSettings(state_dir=tmp_path / "state"),
                           clock=SystemClock(sync, boot_id="boot-1", floor_s=0.0))
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(bridge.run(stop)))
    runner.start()
    try:
        wait_for(lambda: bridge.queue is not None and bridge.delivery is not None
                 and bridge.queue.stats().unstamped >= 2, "unstamped samples in the queue")
        assert bridge.queue is not None and bridge.scheduler is not None
        assert bridge.queue.fetch(0, 100) == []  # nothing stamped, nothing deliverable
        assert bridge.queue.boot_id == "boot-1"
        sync.value = True
        wait_for(lambda: bridge.queue is not None and bridge.queue.stats().unstamped == 0
                 and len(bridge.queue.fetch(0, 1000)) >= 3, "the queue stamped them")
        rows = bridge.queue.fetch(0, 1000)
        assert all(row.values == {"temperature": 45.0} for row in rows)
        stamps = [row.timestamp_ms for row in rows]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert abs(stamps[-1] - time.time() * 1000) < 60_000
        zone.unlink()
        wait_for(lambda: bridge.scheduler is not None
                 and bridge.scheduler.stats()["SoC"]["state"] == "failing", "the sensor failing")
        assert "does not exist" in str(bridge.scheduler.stats()["SoC"]["last_error"])
        zone.write_text("46000\n")
        wait_for(lambda: any(row.values == {"temperature": 46.0}
                             for row in bridge.queue.fetch(0, 100_000)) if bridge.queue else False,
                 "the sensor recovered")
        status = bridge.delivery.status() if bridge.delivery else None
        assert status is not None and not status.connected and status.queue_depth > 0
    finally:
        stop.set()
        runner.join(LINE_WAIT_S)
    assert result == [0]
    StateDirLock(tmp_path / "state").acquire()  # released
    with SampleQueue(tmp_path / "state", boot_id="boot-1") as reopened:  # nothing acknowledged: all kept
        assert reopened.stats().depth >= len(rows)


def test_a_part_whose_thread_died_stops_the_bridge_with_status_1(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """No part dies silently: the main loop names it, stops feeding the watchdog and exits 1
    (under systemd: restarted); what was queued stays on disk."""
    zone = tmp_path / "temp"
    zone.write_text("45000\n")
    sensors = (SensorConfig("SoC", "cpu_temperature", 0.05, {"sensor_file": str(zone)}),)
    agent = AgentSettings(host="127.0.0.1", port=free_port(), ca_file=tmp_path / "missing-ca.crt",
                          cert_folder=tmp_path / "certs")
    profile = Profile(tmp_path / "p.toml", agent, sensors=sensors)
    bridge = BridgeService(profile, agent, bridge=BridgeSettings(state_dir=tmp_path / "state"),
                           clock=SystemClock(Flag(True), boot_id="boot-1", floor_s=0.0))
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(bridge.run(stop)))
    runner.start()
    try:
        wait_for(lambda: bridge.delivery is not None and bridge.alive, "the bridge running")
        assert bridge.delivery is not None
        bridge.delivery.stop(5.0)  # its thread ends as if it had died
        runner.join(LINE_WAIT_S)
    finally:
        stop.set()
        runner.join(LINE_WAIT_S)
    assert result == [1] and bridge.dead_part == "delivery"
    assert "the delivery thread died" in caplog.text


# -- the benchmarks stay runnable (their figures are not asserted) ------------------------------
BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench"


@pytest.mark.parametrize(("script", "seconds", "expected"), [
    ("scheduler_jitter.py", "3", "p99"),
    ("footprint.py", "3", "peak RSS"),
])
def test_benchmark_scripts_run(script: str, seconds: str, expected: str) -> None:
    result = subprocess.run([sys.executable, str(BENCH / script), "--seconds", seconds],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout and "target" in result.stdout
