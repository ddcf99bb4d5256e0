"""The service's operations loop: READY, watchdog only while alive, SIGHUP reloads (valid and
refused) with RELOADING/READY around them, the status file, the view, STOPPING."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_reload import wait_pending

from pibridge.agent.settings import AgentSettings
from pibridge.bridge.liveview import LogLinesView, TerminalView
from pibridge.bridge.notify import SystemdNotifier
from pibridge.bridge.operations import Operations
from pibridge.bridge.reload import ProfileReloader, ReloadResult, ReloadSignal
from pibridge.bridge.status import (
    HEALTHY,
    BridgeStatus,
    StatusTracker,
    StatusWriter,
    TrackedSensor,
    assess,
    read_status,
)
from pibridge.profile import BridgeSettings, Profile, ProfileError, SensorConfig

AIR = SensorConfig("Air", "bme280", 60.0, {"address": 0x76})
DOOR = SensorConfig("Door", "digital_input", 60.0, {"pin": 17})


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="pbo-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def _messages(sock: socket.socket) -> list[dict[str, str]]:
    found = []
    while True:
        try:
            data = sock.recv(4096).decode()
        except BlockingIOError:
            return found
        found.append(dict(line.split("=", 1) for line in data.split("\n")))


def test_lifecycle_watchdog_reload_and_stop(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    path = tmp_path / "p.toml"
    running = Profile(path, AgentSettings(), bridge=BridgeSettings(state_dir=tmp_path / "state"),
                      sensors=(AIR, DOOR))
    on_disk: list[Profile | ProfileError] = [dataclasses.replace(
        running, sensors=(AIR, dataclasses.replace(DOOR, interval_s=5.0)))]

    def loader(p: Path) -> Profile:
        if isinstance(on_disk[0], ProfileError):
            raise on_disk[0]
        return on_disk[0]

    now = [time.monotonic()]
    tracker = StatusTracker(path, running.bridge.state_dir)
    tracker.set_sensors([TrackedSensor("Air", "bme280", 60.0), TrackedSensor("Door", "digital_input", 60.0)])
    writer = StatusWriter.for_bridge(running.bridge.state_dir, tmp_path / "run", monotonic=lambda: now[0])
    reload_signal = ReloadSignal()
    reload_signal.install()
    ops = Operations(tracker, SystemdNotifier(address, 10.0, monotonic=lambda: now[0]), writer,
                     LogLinesView(), ProfileReloader(running, loader=loader), reload_signal)
    try:
        ops.started("sampling 2 sensors")
        assert _messages(sock) == [{"READY": "1", "STATUS": "sampling 2 sensors"}]
        assert read_status(writer.path).fresh

        assert ops.tick(alive=True) is None
        assert _messages(sock) == [{"WATCHDOG": "1"}]
        now[0] += 6.0
        ops.tick(alive=False)                               # a dead thread: no keep-alive
        assert _messages(sock) == []
        ops.tick(alive=True)
        assert _messages(sock) == [{"WATCHDOG": "1"}]

        applied: list[ReloadResult] = []
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_pending(reload_signal)
        result = ops.tick(alive=True, on_reload=applied.append)
        assert result is not None and result.applied and applied == [result]
        assert result.change is not None and result.change.sensors.changed == ("Door",)
        messages = _messages(sock)
        assert [m.get("RELOADING") for m in messages] == ["1", None]
        assert "MONOTONIC_USEC" in messages[0] and messages[1] == {"READY": "1", "STATUS": "profile reloaded"}

        on_disk[0] = ProfileError(path, "unknown driver 'bme290'", line=3, key="sensor.driver")
        now[0] += 6.0                                       # the status file is due again
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_pending(reload_signal)
        result = ops.tick(alive=True, on_reload=applied.append)
        assert result is not None and not result.applied and len(applied) == 1
        assert _messages(sock)[-1] == {"READY": "1",
                                       "STATUS": "profile refused; the running configuration stays in force"}
        assert ops.reloader.current.sensors[1].interval_s == 5.0       # the last valid one stays
        written = BridgeStatus.from_json(writer.path.read_text())
        assert written.recent_errors[-1].message.startswith("profile refused: ")
        assert "unknown driver 'bme290'" in written.recent_errors[-1].message
    finally:
        ops.stopping()
    assert _messages(sock) == [{"STOPPING": "1", "STATUS": "stopping"}]
    assert not writer.path.exists()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_a_failing_apply_does_not_stop_the_loop(tmp_path: Path) -> None:
    profile = Profile(tmp_path / "p.toml", AgentSettings(), bridge=BridgeSettings(state_dir=tmp_path))
    tracker = StatusTracker(profile.path, tmp_path)
    reload_signal = ReloadSignal()
    ops = Operations(tracker, SystemdNotifier(None), StatusWriter(tmp_path / "status-x.json"), LogLinesView(),
                     ProfileReloader(profile, loader=lambda p: profile), reload_signal)

    def broken_apply(result: ReloadResult) -> None:
        raise RuntimeError("grid exploded")

    reload_signal.request()
    result = ops.tick(alive=True, on_reload=broken_apply)
    assert result is not None and result.applied
    message = tracker.snapshot().recent_errors[-1].message
    assert message == "applying the reloaded profile failed (see the log)"
    ops.stopping()


def test_capture_logging_moves_terminal_logging_under_the_frame(tmp_path: Path) -> None:
    master, slave = os.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    logger = logging.getLogger("pibridge.test.capture")
    logger.propagate = False
    on_terminal = logging.StreamHandler(terminal)
    elsewhere = logging.StreamHandler(io.StringIO())
    logger.addHandler(on_terminal)
    logger.addHandler(elsewhere)
    profile = Profile(tmp_path / "p.toml", AgentSettings(), bridge=BridgeSettings(state_dir=tmp_path))
    tracker = StatusTracker(profile.path, tmp_path)
    ops = Operations.for_service(profile, tracker, runtime_dir=tmp_path / "run", stream=terminal,
                                 environ={}, install_signal=False)
    try:
        assert isinstance(ops.view, TerminalView)
        ops.capture_logging(logger)
        assert on_terminal not in logger.handlers and elsewhere in logger.handlers
        logger.warning("agent unreachable")
        ops.view.update(tracker.snapshot, force=True)
        assert any("WARNING agent unreachable" in line for line in ops.view.frame)
    finally:
        ops.stopping()
        logger.propagate = True
    assert on_terminal in logger.handlers and elsewhere in logger.handlers and len(logger.handlers) == 2
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    terminal.close()
    os.close(master)


CHILD = """
import signal, sys, threading
from pibridge.bridge.operations import Operations
from pibridge.bridge.status import StatusTracker, TrackedSensor
from pibridge.profile import load_profile

profile = load_profile(sys.argv[1])
tracker = StatusTracker(profile.path, profile.bridge.state_dir)
tracker.set_sensors([TrackedSensor("Air", "bme280", 60.0, (("temperature", "Temperature", "°C"),))])
tracker.agent_state(connected=True, host="localhost", port=18884)
tracker.clock_state(True, "test")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: stop.set())
ops = Operations.for_service(profile, tracker, runtime_dir=sys.argv[2])
tracker.sample_taken("Air", {"temperature": 20.0})
ops.started("sampling 1 sensor")
n = 0
while not stop.wait(0.05):
    n += 1
    tracker.sample_taken("Air", {"temperature": 20.0 + n / 100})
    ops.tick(alive=True)
ops.stopping()
"""


def _receive(sock: socket.socket, wanted: dict[str, str], timeout_s: float = 30.0) -> list[dict[str, str]]:
    """Messages until one contains ``wanted`` (every message seen, in order)."""
    seen = []
    sock.settimeout(timeout_s)
    while True:
        data = sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.split("\n"))
        seen.append(message)
        if all(message.get(k) == v for k, v in wanted.items()):
            return seen


def test_as_systemd_sees_it(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    """The operations loop in its own process, driven like systemd drives the service: READY,
    watchdog pings, `systemctl reload` (SIGHUP) with a valid and a broken profile, `pibridge
    status` while it runs, `systemctl stop` (SIGTERM)."""
    import subprocess
    import sys

    sock, address = notify_socket
    profile = tmp_path / "greenhouse.toml"
    sensor = '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'          # a profile needs a sensor
    profile.write_text('[agent]\nhost = "localhost"\n' + sensor)
    runtime = tmp_path / "run"
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(profile), str(runtime)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _receive(sock, {"READY": "1"})[-1] == {"READY": "1", "STATUS": "sampling 1 sensor"}
        _receive(sock, {"WATCHDOG": "1"})
        _receive(sock, {"WATCHDOG": "1"})                 # again, a ping interval later
        status = subprocess.run([sys.executable, "-m", "pibridge", "status", "--runtime-dir", str(runtime)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "20 °C" in status.stdout, status.stdout

        profile.write_text('[agent]\nhost = "10.0.0.7"\n' + sensor)
        child.send_signal(signal.SIGHUP)
        seen = _receive(sock, {"READY": "1"})
        assert any(m.get("RELOADING") == "1" for m in seen)
        assert seen[-1]["STATUS"] == "profile reloaded"

        profile.write_text('[agent]\nport = "eighteen"\n' + sensor)
        child.send_signal(signal.SIGHUP)
        assert _receive(sock, {"READY": "1"})[-1]["STATUS"] == (
            "profile refused; the running configuration stays in force")

        child.send_signal(signal.SIGTERM)
        assert _receive(sock, {"STOPPING": "1"})
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stderr = child.stderr.read() if child.stderr else ""
    assert "agent.host changed; it applies at the next restart" in stderr
    assert "refused (1 problem)" in stderr and "agent.port" in stderr
    status = subprocess.run([sys.executable, "-m", "pibridge", "status", "--runtime-dir", str(runtime)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 2 and "not running" in status.stderr


def test_a_refused_reload_degrades_until_a_reload_succeeds_or_the_file_is_fixed_back(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("as running\n")
    running = Profile(path, AgentSettings(), bridge=BridgeSettings(state_dir=tmp_path), sensors=(AIR,))
    on_disk: list[Profile | ProfileError] = [ProfileError(path, "unknown driver 'bme290'", line=3)]

    def loader(p: Path) -> Profile:
        if isinstance(on_disk[0], ProfileError):
            raise on_disk[0]
        return on_disk[0]

    now = [time.monotonic()]
    tracker = StatusTracker(path, tmp_path)
    writer = StatusWriter(tmp_path / "status-x.json", monotonic=lambda: now[0])
    reload_signal = ReloadSignal()
    ops = Operations(tracker, SystemdNotifier(None), writer, LogLinesView(),
                     ProfileReloader(running, loader=loader), reload_signal)
    reload_signal.request()
    ops.tick(alive=True)
    snapshot = tracker.snapshot()
    assert snapshot.reload.refused and snapshot.reload.problem_count == 1 and snapshot.reload.count == 1
    assert any("running an older profile" in r for r in assess(snapshot).reasons)

    now[0] += 6.0
    ops.tick(alive=True)                     # the file did not change: still degraded, not re-read
    assert tracker.reload_refused
    on_disk[0] = running                     # fixed back: the same as what runs
    path.write_text("as running again\n")   # (a changed file is what makes it look again)
    now[0] += 6.0
    ops.tick(alive=True)
    snapshot = tracker.snapshot()
    assert not snapshot.reload.refused and assess(snapshot).level == HEALTHY
    assert not any(e.message.startswith("profile refused") for e in snapshot.recent_errors)

    on_disk[0] = ProfileError(path, "unknown driver 'bme290'", line=3)
    reload_signal.request()
    ops.tick(alive=True)
    assert tracker.reload_refused
    on_disk[0] = dataclasses.replace(running, sensors=(dataclasses.replace(AIR, interval_s=5.0),))
    reload_signal.request()
    result = ops.tick(alive=True)
    assert result is not None and result.applied
    snapshot = tracker.snapshot()
    assert snapshot.reload.count == 3 and snapshot.reload.applied and not snapshot.reload.refused
    assert assess(snapshot).level == HEALTHY
    ops.stopping()


def test_the_main_loop_sleeps_until_the_next_due_work(tmp_path: Path,
                                                      notify_socket: tuple[socket.socket, str]) -> None:
    """An idle bridge wakes when the watchdog, the status file's heartbeat or a frame is due, not
    every second (issue 17: wake-ups of an idle bridge); a turn for another reason writes the
    file once its minimum interval passed."""
    _, address = notify_socket
    profile = Profile(tmp_path / "p.toml", AgentSettings(), bridge=BridgeSettings(state_dir=tmp_path))
    now = [1000.0]
    tracker = StatusTracker(profile.path, tmp_path)
    writer = StatusWriter(tmp_path / "status-x.json", min_interval_s=5.0, heartbeat_s=8.0,
                          monotonic=lambda: now[0])
    ops = Operations(tracker, SystemdNotifier(address, 20.0, monotonic=lambda: now[0]), writer,
                     LogLinesView(), ProfileReloader(profile, loader=lambda p: profile), ReloadSignal())
    assert ops.next_turn_in() == 0.0                     # nothing written, no keep-alive sent yet
    ops.tick(alive=True)
    assert ops.next_turn_in() == 8.0                     # the status file's heartbeat (the watchdog: 10 s)
    now[0] += 7.0
    assert ops.next_turn_in() == pytest.approx(1.0)
    now[0] += 1.0
    ops.tick(alive=True)                                 # the heartbeat write
    assert ops.next_turn_in() == pytest.approx(2.0)      # the watchdog
    now[0] += 2.0
    ops.tick(alive=True)
    assert not writer.due() and ops.next_turn_in() == pytest.approx(6.0)
    now[0] += 3.0
    assert writer.due() and ops.next_turn_in() == pytest.approx(3.0)   # due, but not worth a turn
    def written_at() -> float:
        return float(json.loads(writer.path.read_text())["written_monotonic"])

    ops.tick(alive=True)                                 # a turn for another reason: nothing changed,
    assert written_at() == 1008.0                        # so nothing is written before the heartbeat
    assert ops.next_turn_in() == pytest.approx(3.0)
    tracker.set_sensors([])                              # a change, written by the next due turn
    now[0] += 3.0
    ops.tick(alive=True)
    assert written_at() == 1016.0
    assert not writer.due() and ops.next_turn_in() == pytest.approx(4.0)  # the watchdog again
    no_watchdog = Operations(tracker, SystemdNotifier(None), StatusWriter(tmp_path / "status-y.json",
                             min_interval_s=30.0, monotonic=lambda: now[0]), LogLinesView(),
                             ProfileReloader(profile, loader=lambda p: profile), ReloadSignal())
    no_watchdog.tick(alive=True)
    assert no_watchdog.next_turn_in() == 30.0
    view = TerminalView(io.StringIO(), min_interval_s=1.0, monotonic=lambda: now[0])
    view.update(tracker.snapshot)
    now[0] += 0.25
    assert view.due_in() == pytest.approx(0.75)
