"""The status snapshot: JSON round trip, the atomic writer, fresh vs stale, and `pibridge status`
run as a subprocess against files the writer wrote."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pibridge.bridge.model import MetricSpec, SensorSpec
from pibridge.bridge.status import (
    DEGRADED,
    FAILING,
    HEALTHY,
    NOT_RUNNING,
    OK,
    SCHEMA_VERSION,
    BridgeStatus,
    StatusFileError,
    StatusSummary,
    StatusTracker,
    StatusWriter,
    TrackedSensor,
    assess,
    boot_id,
    find_status_files,
    read_status,
    status_path,
)
from pibridge.profile import SensorConfig

STATE_DIR = "/var/lib/pibridge-test"


def _tracker(clock: list[float]) -> StatusTracker:
    tracker = StatusTracker("/etc/pibridge/greenhouse.toml", STATE_DIR, clock=lambda: clock[0])
    tracker.set_sensors([
        TrackedSensor.from_spec(SensorConfig("Air (BME280)", "bme280", 60.0), SensorSpec("Air (BME280)", (
            MetricSpec("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
            MetricSpec("pressure", "Pressure", unit="SI.Pressure.PASCAL")))),
        TrackedSensor.from_spec(SensorConfig("Door", "digital_input", 60.0), SensorSpec("Door", (
            MetricSpec("open", "Open", value_type="bool"),))),
        TrackedSensor.from_spec(SensorConfig("Soil", "mcp3008", 300.0), SensorSpec("Soil", (
            MetricSpec("moisture", "Moisture", value_type="double", annotation="% vol"),))),
    ])
    tracker.agent_state(connected=True, host="localhost", port=18884, client_id="c0ffee")
    tracker.clock_state(True, "timesyncd")
    tracker.sample_taken("Air (BME280)", {"temperature": 21.25, "pressure": 101_325}, at=clock[0])
    tracker.sample_taken("Door", {"open": False}, at=clock[0])
    tracker.sample_taken("Soil", {"moisture": None}, at=clock[0])
    tracker.samples_pushed("Air (BME280)", 1)
    return tracker


def test_round_trip_keeps_every_field_and_type() -> None:
    clock = [1_700_000_000.0]
    tracker = _tracker(clock)
    tracker.read_failed("Soil", "SPI frame all zeros: is the MCP3008 powered?")
    tracker.slot_skipped("Door", 2)
    tracker.samples_dead_lettered("Air (BME280)", "agent error 11: wrong value type")
    tracker.queue_state(5, clock[0] - 60, unstamped=1, dropped=3)
    tracker.restart_pending(["bridge.state_dir"])
    snapshot = tracker.snapshot()
    data = json.loads(snapshot.to_json())
    assert data["schema"] == SCHEMA_VERSION
    back = BridgeStatus.from_json(snapshot.to_json())
    assert back == snapshot
    air = back.sensor("Air (BME280)")
    # the agent's unit names in the file (and in --json); the symbols only on screens
    assert [(v.key, v.value, v.unit) for v in air.values] == [
        ("temperature", 21.25, "SI.Temperature.CELSIUS"), ("pressure", 101_325, "SI.Pressure.PASCAL")]
    assert [v.shown for v in air.values] == ["21.25 °C", "1013 hPa"]
    soil = back.sensor("Soil").values[0]
    assert (soil.unit, soil.annotation) == ("", "% vol") and back.sensor("Door").values[0].unit == ""
    assert type(air.values[1].value) is int and type(back.sensor("Door").values[0].value) is bool
    assert (air.taken, air.pushed, air.dead_lettered) == (1, 1, 1)
    assert back.sensor("Door").skipped == 2
    soil = back.sensor("Soil")
    assert soil.state == FAILING and soil.failing_since == clock[0] and soil.failed == 1
    assert back.queue.depth == 5 and back.queue.dropped == 3 and back.queue.dead_letters == 1
    assert [e.message for e in back.recent_errors] == [
        "SPI frame all zeros: is the MCP3008 powered?", "dead letter: agent error 11: wrong value type"]


def test_tracker_logs_failures_once_per_change_and_recovers() -> None:
    clock = [1_000.0]
    tracker = _tracker(clock)
    for _ in range(3):
        clock[0] += 60
        tracker.read_failed("Air (BME280)", "no ACK at 0x76")
    sensor = tracker.snapshot().sensor("Air (BME280)")
    assert sensor.state == FAILING and sensor.failing_since == 1_060.0 and sensor.failed == 3
    assert len(tracker.snapshot().recent_errors) == 1
    tracker.sample_taken("Air (BME280)", {"temperature": 20.0})
    sensor = tracker.snapshot().sensor("Air (BME280)")
    assert sensor.state == OK and sensor.failing_since is None and sensor.last_error is None
    # a reload keeps the counters of sensors that stay, drops removed ones
    tracker.set_sensors([TrackedSensor("Air (BME280)", "bme280", 30.0,
                                       (("temperature", "Temperature", "°C"),))])
    snapshot = tracker.snapshot()
    assert [s.name for s in snapshot.sensors] == ["Air (BME280)"]
    assert snapshot.sensors[0].taken == 2 and snapshot.sensors[0].interval_s == 30.0


@pytest.mark.parametrize("text, message", [
    ("", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"profile": "p"}', "no schema version"),
    (json.dumps({"schema": SCHEMA_VERSION + 1}), "newer than this pibridge reads"),
    (json.dumps({"schema": 1, "profile": "p", "state_dir": "s"}), "started_at: missing"),
    (json.dumps({"schema": 1, "profile": "p", "state_dir": "s", "started_at": "now"}),
     "started_at: expected float"),
    (json.dumps({"schema": 1, "profile": "p", "state_dir": "s", "started_at": 1,
                 "sensors": [{"name": "x", "driver": "d", "interval_s": 1, "taken": 1.5}]}),
     "sensors[0].taken: expected int"),
    (json.dumps({"schema": 1, "profile": "p", "state_dir": "s", "started_at": 1, "queue": []}),
     "queue: expected an object"),
])
def test_schema_violations_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(StatusFileError, match=re.escape(message)):
        BridgeStatus.from_json(text)


def test_unknown_keys_from_a_newer_writer_are_ignored() -> None:
    data = BridgeStatus("p", "s", 1.0).to_dict()
    data["sensors"] = [{"name": "x", "driver": "d", "interval_s": 1, "humour": "dry"}]
    data["web_port"] = 8080
    assert BridgeStatus.from_dict(data).sensors[0].name == "x"


def test_writer_is_atomic_and_rate_limited(tmp_path: Path) -> None:
    now = [50.0]
    writer = StatusWriter(status_path(tmp_path, STATE_DIR), monotonic=lambda: now[0])
    snapshot = _tracker([1_000.0]).snapshot()
    assert writer.publish(snapshot)
    assert (writer.path.stat().st_mode & 0o777) == 0o644
    built = []
    now[0] += 4.9
    assert not writer.publish(lambda: built.append(1) or snapshot)   # not due: not even built
    assert built == []
    now[0] += 0.1
    assert writer.publish(lambda: built.append(1) or snapshot)
    assert built == [1]
    assert [p.name for p in tmp_path.iterdir()] == [writer.path.name]   # no temp file left behind
    written = BridgeStatus.from_json(writer.path.read_text())
    assert written.pid == os.getpid() and written.written_monotonic == 55.0 and written.boot_id
    assert find_status_files([tmp_path, tmp_path / "absent"]) == [writer.path]
    writer.remove()
    assert not writer.path.exists()


def test_writer_skips_an_unchanged_snapshot_until_it_would_age(tmp_path: Path) -> None:
    """A due write whose tracker reports no change (`StatusTracker.changes`) is skipped, but the
    file is rewritten `heartbeat_s` after its last write, so a reader never finds it stale."""
    now = [50.0]
    writer = StatusWriter(status_path(tmp_path, STATE_DIR), monotonic=lambda: now[0], heartbeat_s=10.0)
    tracker = _tracker([1_000.0])
    built: list[int] = []

    def snapshot() -> BridgeStatus:
        built.append(1)
        return tracker.snapshot()

    assert writer.publish(snapshot, changes=tracker.changes)
    now[0] += 5.0
    assert writer.due() and not writer.publish(snapshot, changes=tracker.changes)   # unchanged: skipped
    assert built == [1] and not writer.due() and writer.due_in() == 5.0              # ... and checked
    now[0] += 5.0
    assert writer.publish(snapshot, changes=tracker.changes)            # 10 s old: written again
    assert BridgeStatus.from_json(writer.path.read_text()).written_monotonic == 60.0
    now[0] += 5.0
    tracker.sample_taken("Air (BME280)", {"temperature": 22.0})
    assert writer.publish(snapshot, changes=tracker.changes)            # changed: written when due
    assert len(built) == 3


def test_a_status_file_that_cannot_be_written_is_tried_again_a_heartbeat_later(tmp_path: Path) -> None:
    """An unwritable status directory must not turn the main loop into a busy loop: the failed
    write counts for the heartbeat, so the loop sleeps as long as after a good one."""
    now = [50.0]
    (tmp_path / "file").write_text("")
    writer = StatusWriter(tmp_path / "file" / "status.json", min_interval_s=5.0, heartbeat_s=10.0,
                          monotonic=lambda: now[0])
    tracker = _tracker([1_000.0])
    assert not writer.publish(tracker.snapshot, changes=tracker.changes)   # ENOTDIR: logged, not raised
    assert writer.heartbeat_in() == 10.0 and writer.due_in() == 5.0
    now[0] += 10.0
    assert writer.heartbeat_in() == 0.0 and not writer.publish(tracker.snapshot, changes=tracker.changes)
    assert writer.heartbeat_in() == 10.0


def test_tracker_changes_move_only_when_the_feed_changes() -> None:
    tracker = _tracker([1_000.0])
    feed = {"state": OK, "taken": 3, "failed": 0, "skipped": 0, "pushed": 2, "dead_lettered": 0,
            "values": {"temperature": 21.5}, "last_sample_at": 990.0, "last_read_at": 990.0}
    tracker.sensor_totals("Air (BME280)", **feed)
    before = tracker.changes
    tracker.sensor_totals("Air (BME280)", **feed)                    # the same totals again
    tracker.queue_totals(depth=0, oldest_sample_at=None, unstamped=0, dropped=0, dead_letters=0)
    after_queue = tracker.changes
    tracker.queue_totals(depth=0, oldest_sample_at=None, unstamped=0, dropped=0, dead_letters=0)
    tracker.clock_state(True, "test")
    tracker.clock_state(True, "test")
    assert after_queue == before + 1 and tracker.changes == after_queue + 1
    tracker.sensor_totals("Air (BME280)", **{**feed, "pushed": 3})   # one count moved
    assert tracker.changes == after_queue + 2
    tracker.error("something happened")                               # an event is a change
    assert tracker.changes == after_queue + 3
    summary = tracker.summary()
    assert summary == StatusSummary.of(tracker.snapshot())


def test_writer_failure_is_logged_once_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = StatusWriter(blocker / "status.json")        # its directory is a file
    snapshot = BridgeStatus("p", "s", 1.0)
    assert not writer.publish(snapshot, force=True)
    assert not writer.publish(snapshot, force=True)
    assert len([r for r in caplog.records if "cannot write the status file" in r.message]) == 1


def test_fresh_and_stale(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path / "status-a.json")
    writer.publish(BridgeStatus("p", "s", time.time()), force=True)
    reading = read_status(writer.path)
    assert reading.fresh and reading.age_s < 30
    # our own process, but the file is older than the limit: a hung writer
    old = StatusWriter(tmp_path / "status-b.json", monotonic=lambda: time.monotonic() - 100)
    old.publish(BridgeStatus("p", "s", time.time()), force=True)
    reading = read_status(old.path)
    assert not reading.fresh and "not updated for" in reading.stale_reason
    # a recycled PID: same number, another start time
    data = json.loads(writer.path.read_text())
    data["pid_start"] = (data["pid_start"] or 0) + 1
    writer.path.write_text(json.dumps(data))
    assert "is not running" in read_status(writer.path).stale_reason
    # written during an earlier boot
    data["boot_id"] = "00000000-0000-0000-0000-000000000000"
    writer.path.write_text(json.dumps(data))
    assert read_status(writer.path).stale_reason == "written during an earlier boot"
    with pytest.raises(FileNotFoundError):
        read_status(tmp_path / "status-none.json")


def test_assess_grades_failing_sensors_and_an_absent_agent() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)
    assert assess(_written(tracker.snapshot(), clock[0])).level == HEALTHY
    tracker.agent_state(connected=False, host="localhost", port=18884, error="connection refused")
    clock[0] += 119
    assert assess(_written(tracker.snapshot(), clock[0])).level == HEALTHY    # within the grace
    clock[0] += 2
    health = assess(_written(tracker.snapshot(), clock[0]))
    assert health.level == DEGRADED
    assert health.reasons == ("agent localhost:18884 not connected for 2 min: connection refused",)
    tracker.agent_state(connected=True, host="localhost", port=18884)
    tracker.read_failed("Door", "GPIO17 busy")
    health = assess(_written(tracker.snapshot(), clock[0]))
    assert health.level == DEGRADED and health.reasons == ("sensor 'Door' failing for 0 s: GPIO17 busy",)


def _written(snapshot: BridgeStatus, at: float) -> BridgeStatus:
    from dataclasses import replace

    return replace(snapshot, written_at=at)


# --- `pibridge status` as a subprocess -----------------------------------------------------------

def _pibridge_status(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", "status", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def _write_live(runtime_dir: Path, tracker: StatusTracker) -> Path:
    writer = StatusWriter.for_bridge(STATE_DIR, runtime_dir)
    assert writer.publish(tracker.snapshot, force=True)
    return writer.path


def test_cli_healthy(tmp_path: Path) -> None:
    _write_live(tmp_path, _tracker([time.time()]))
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == HEALTHY, result.stderr
    assert result.stdout.startswith("pibridge: healthy — /etc/pibridge/greenhouse.toml")
    assert "21.25 °C  1013 hPa" in result.stdout and "localhost:18884 connected" in result.stdout
    result = _pibridge_status("--runtime-dir", tmp_path, "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 0 and data["exit"] == 0 and data["health"] == "healthy"
    assert data["bridges"][0]["fresh"] is True
    assert BridgeStatus.from_dict(data["bridges"][0]["status"]).sensor("Door").values[0].value is False


def test_cli_degraded(tmp_path: Path) -> None:
    tracker = _tracker([time.time()])
    tracker.read_failed("Soil", "SPI frame all zeros")
    _write_live(tmp_path, tracker)
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == DEGRADED
    assert "pibridge: degraded" in result.stdout and "sensor 'Soil' failing" in result.stdout
    data = json.loads(_pibridge_status("--runtime-dir", tmp_path, "--json").stdout)
    assert data["exit"] == DEGRADED and data["bridges"][0]["reasons"][0].startswith("sensor 'Soil' failing")


def test_cli_not_running(tmp_path: Path) -> None:
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == NOT_RUNNING
    assert result.stderr.strip() == f"pibridge: not running (no status file in {tmp_path})"
    data = json.loads(_pibridge_status("--runtime-dir", tmp_path, "--json").stdout)
    assert data["exit"] == NOT_RUNNING and data["bridges"] == []


def test_cli_stale_after_the_writer_died(tmp_path: Path) -> None:
    # a bridge process that wrote its status and then died without removing it (kill -9)
    script = textwrap.dedent(f"""
        import time
        from pibridge.bridge.status import BridgeStatus, StatusWriter
        StatusWriter.for_bridge({STATE_DIR!r}, {str(tmp_path)!r}).publish(
            BridgeStatus("/etc/pibridge/greenhouse.toml", {STATE_DIR!r}, time.time()), force=True)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == NOT_RUNNING
    assert "stale status file: its bridge (pid" in result.stdout and "is not running" in result.stdout
    data = json.loads(_pibridge_status("--runtime-dir", tmp_path, "--json").stdout)
    assert data["exit"] == NOT_RUNNING and data["bridges"][0]["fresh"] is False


def test_cli_stale_when_not_updated(tmp_path: Path) -> None:
    writer = StatusWriter.for_bridge(STATE_DIR, tmp_path, monotonic=lambda: time.monotonic() - 120)
    writer.publish(_tracker([time.time()]).snapshot(), force=True)
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == NOT_RUNNING and "not updated for 2 min" in result.stdout


def test_cli_profile_selects_the_bridge_of_its_state_dir(tmp_path: Path) -> None:
    _write_live(tmp_path, _tracker([time.time()]))
    profile = tmp_path / "other.toml"
    profile.write_text('[agent]\nhost = "localhost"\n'    # default state dir: not the running one
                       '[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\n')
    result = _pibridge_status("--runtime-dir", tmp_path, "--profile", profile)
    assert result.returncode == NOT_RUNNING and "not running (no status file in" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\n")
    result = _pibridge_status("--runtime-dir", tmp_path, "--profile", broken)
    assert result.returncode == NOT_RUNNING and "broken.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unreadable_status_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "status-0123456789ab.json").write_text("{half a file")
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == NOT_RUNNING and "not JSON" in result.stderr
    assert result.stderr.startswith("pibridge: status unreadable (") and len(result.stderr.splitlines()) == 1


def test_status_cost_benchmark_runs() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench" / "status_cost.py"
    result = subprocess.run([sys.executable, str(script), "--rounds", "20"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode in (0, 1), result.stderr             # 1: a target missed, not a crash
    assert "snapshot + JSON + atomic write:" in result.stdout and "% of one core" in result.stdout
    assert "import RSS:" in result.stdout


# --- hostile input: `pibridge status` never shows a traceback ----------------------------------

def _valid(**changes: object) -> str:
    data = BridgeStatus("p.toml", STATE_DIR, time.time(), pid=os.getpid(), written_at=time.time(),
                        written_monotonic=time.monotonic(), boot_id=boot_id()).to_dict()
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("content, expected", [
    ("", "not JSON"),
    ("{half", "not JSON"),
    (b"\xff\xfe\x00junk", "cannot read"),
    ("[1, 2]", "not a JSON object"),
    ('{"schema": "1"}', "no schema version"),
    ('{"schema": 99}', "schema 99 is newer than this pibridge reads"),
    ('{"schema": 1, "profile": 5, "state_dir": "s", "started_at": 1}', "profile: expected str"),
    (dict(sensors=[{"name": "x"}]), "sensors[0].driver: missing"),
    (dict(sensors="all"), "sensors: expected a list"),
    (dict(pid=-1), "stale status file: its bridge (pid -1) is not running"),
    (dict(pid=0), "stale status file: its bridge (pid 0) is not running"),
    (dict(pid=2 ** 40), "stale status file: its bridge (pid 1099511627776) is not running"),
    (dict(written_at=float("nan")), "written_at: expected float, not nan"),
    (dict(started_at=1e300), "healthy"),                 # a time no calendar holds: shown as a number
    (dict(profile="x" * 100_000), "x" * 1000),
    ("DIRECTORY", "cannot read"),
])
def test_cli_hostile_status_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  content: str | bytes | dict[str, object], expected: str) -> None:
    from pibridge.cli import main

    path = tmp_path / "status-0123456789ab.json"
    if isinstance(content, dict):                      # changes to a valid, fresh status
        content = _valid(**content)
    if content == "DIRECTORY":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code = HEALTHY if expected == "healthy" or expected.startswith("xxx") else NOT_RUNNING
    assert main(["status", "--runtime-dir", str(tmp_path)]) == code
    out = capsys.readouterr()
    assert expected in out.out + out.err and "Traceback" not in out.err
    assert main(["status", "--runtime-dir", str(tmp_path), "--json"]) == code
    assert json.loads(capsys.readouterr().out)["exit"] == code


@pytest.mark.parametrize("args, expected", [
    (["--runtime-dir", "/nonexistent/pibridge"], "not running (no status file in /nonexistent/pibridge)"),
    (["--runtime-dir", "FILE"], "not running (no status file in"),
    (["--profile", "/nonexistent/p.toml"], "cannot read the profile"),
])
def test_cli_hostile_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               args: list[str], expected: str) -> None:
    from pibridge.cli import main

    (tmp_path / "file").write_text("")
    args = [str(tmp_path / "file") if a == "FILE" else a for a in args]
    assert main(["status", *args]) == NOT_RUNNING
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("args", [["--agent-grace", "soon"], ["--stale-after"], ["--bogus"]])
def test_cli_bad_options_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from pibridge.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["status", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--help" in err and err.count("\n") == 1


def test_a_clock_step_does_not_stretch_durations() -> None:
    """NTP sets the clock 50 years forward after boot: "failing for 60 s" stays 60 s."""
    wall, mono = [86_400.0], [1_000.0]                  # a Pi that booted believing it is 1970
    tracker = StatusTracker("p.toml", STATE_DIR, clock=lambda: wall[0], monotonic=lambda: mono[0])
    tracker.set_sensors([TrackedSensor("Door", "digital_input", 60.0)])
    tracker.agent_state(connected=False, host="localhost", port=18884, error="connection refused")
    tracker.read_failed("Door", "GPIO17 busy")
    mono[0] += 60
    wall[0] = 1_700_000_000.0 + 60                      # the step
    snapshot = dataclasses.replace(tracker.snapshot(), written_at=wall[0])
    assert snapshot.sensor("Door").failing_since == 1_700_000_000.0
    assert snapshot.agent.since == 1_700_000_000.0 and snapshot.started_at == 1_700_000_000.0
    assert snapshot.recent_errors[0].at == 1_700_000_000.0
    health = assess(snapshot)
    assert health.reasons == ("sensor 'Door' failing for 60 s: GPIO17 busy",)


# --- issue 20 §4: the status tells the truth ------------------------------------------------------

def _fresh(tracker: StatusTracker, at: float) -> BridgeStatus:
    return _written(tracker.snapshot(), at)


def test_non_finite_values_are_written_and_read_back() -> None:
    """``scale = 1e308`` gives inf: the file stays writable (it was "stale … hung?" before)."""
    clock = [10_000.0]
    tracker = _tracker(clock)
    tracker.sample_taken("Air (BME280)", {"temperature": math.inf, "pressure": -math.inf}, at=clock[0])
    tracker.sample_taken("Soil", {"moisture": float("nan")}, at=clock[0])
    snapshot = tracker.snapshot()
    text = snapshot.to_json()
    assert "Infinity" not in text and "NaN" not in text          # strict JSON for any reader
    back = BridgeStatus.from_json(text)
    assert [v.value for v in back.sensor("Air (BME280)").values] == [float("inf"), float("-inf")]
    assert math.isnan(back.sensor("Soil").values[0].value)  # type: ignore[arg-type]
    assert back.sensor("Door").values[0].value is False
    data = json.loads(text)
    data["sensors"][0]["values"][0]["value"] = {"$float": "lots"}  # not one of ours: refused
    with pytest.raises(StatusFileError, match="value"):
        BridgeStatus.from_dict(data)


def test_writer_writes_an_infinite_value(tmp_path: Path) -> None:
    tracker = _tracker([time.time()])
    tracker.sample_taken("Air (BME280)", {"temperature": float("inf"), "pressure": 1.0}, at=time.time())
    writer = StatusWriter(tmp_path / "status-a.json")
    assert writer.publish(tracker.snapshot, force=True)
    assert read_status(writer.path).fresh


def test_samples_that_cannot_be_stored_are_degraded_until_they_can() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)
    tracker.store_state("database or disk is full")
    health = assess(_fresh(tracker, clock[0]))
    assert health.level == DEGRADED and health.reasons == ("cannot store samples: database or disk is full",)
    tracker.store_state(None)
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY


def test_nothing_acknowledged_while_samples_wait_is_degraded_after_the_ack_grace() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)                      # connected, one push acknowledged at 10 000
    clock[0] += 200
    tracker.queue_totals(depth=40, oldest_sample_at=10_001.0, unstamped=0, dropped=0, dead_letters=0)
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY
    clock[0] += 102                                # 302 s without an acknowledgement
    health = assess(_fresh(tracker, clock[0]))
    assert health.level == DEGRADED
    assert health.reasons == ("samples not delivered: 40 waiting, the oldest for 5 min; last acknowledgement "
                              "5 min ago (--ack-grace 300 s)",)
    assert assess(_fresh(tracker, clock[0]), ack_grace_s=600).level == HEALTHY
    tracker.samples_pushed("Air (BME280)")         # delivery moves again
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY


def test_one_sensor_stuck_behind_while_others_are_acknowledged_is_degraded() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)
    oldest = clock[0]
    for _ in range(30):                          # acknowledgements all along, for other sensors
        clock[0] += 30
        tracker.samples_pushed("Air (BME280)")
        tracker.queue_totals(depth=5, oldest_sample_at=oldest, unstamped=0, dropped=0, dead_letters=0)
    assert clock[0] - oldest == 900 and assess(_fresh(tracker, clock[0])).level == HEALTHY   # 3 graces
    clock[0] += 30
    tracker.samples_pushed("Air (BME280)")
    health = assess(_fresh(tracker, clock[0]))
    assert health.level == DEGRADED
    assert health.reasons[0].startswith("samples not delivered: the oldest of 5 waiting has waited 16 min")


def test_a_delivery_step_failing_repeatedly_is_degraded() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)
    tracker.delivery_state("OSError: [Errno 28] No space left on device")
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY         # once: retried at once
    clock[0] += 31
    tracker.delivery_state("OSError: [Errno 28] No space left on device")
    health = assess(_fresh(tracker, clock[0]))
    assert health.level == DEGRADED
    assert health.reasons == ("delivery failing for 31 s: OSError: [Errno 28] No space left on device",)
    tracker.delivery_state(None)
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY


def test_dead_letters_or_drops_growing_are_degraded_for_an_hour() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)
    tracker.queue_totals(depth=0, oldest_sample_at=None, unstamped=0, dropped=0, dead_letters=0)
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY
    tracker.queue_totals(depth=0, oldest_sample_at=None, unstamped=0, dropped=0, dead_letters=3)
    clock[0] += 60
    health = assess(_fresh(tracker, clock[0]))
    assert health.level == DEGRADED
    assert health.reasons == ("samples lost: 3 moved to the dead letters and 0 dropped since the start, the "
                              "last 60 s ago",)
    clock[0] += 3600
    tracker.queue_totals(depth=0, oldest_sample_at=None, unstamped=0, dropped=0, dead_letters=3)
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY          # not growing any more
    tracker.queue_totals(depth=0, oldest_sample_at=None, unstamped=0, dropped=7, dead_letters=3)
    assert "7 dropped" in assess(_fresh(tracker, clock[0])).reasons[0]


def test_a_refused_reload_is_degraded_until_a_reload_succeeds() -> None:
    clock = [10_000.0]
    tracker = _tracker(clock)
    tracker.reload_handled(applied=False, problems=("p.toml:3: x", "p.toml:4: y"))
    snapshot = BridgeStatus.from_json(_fresh(tracker, clock[0]).to_json())
    health = assess(snapshot)
    assert health.level == DEGRADED and health.reasons[0].startswith(
        f"profile reload refused: {snapshot.profile} has 2 problems (first: p.toml:3: x)")
    tracker.reload_handled(applied=True)
    assert assess(_fresh(tracker, clock[0])).level == HEALTHY


def _leftover(runtime_dir: Path, state_dir: str) -> Path:
    """A status file written by a process that then died (kill -9 leaves it behind)."""
    script = textwrap.dedent(f"""
        import time
        from pibridge.bridge.status import BridgeStatus, StatusWriter
        StatusWriter.for_bridge({state_dir!r}, {str(runtime_dir)!r}).publish(
            BridgeStatus("/etc/pibridge/old.toml", {state_dir!r}, time.time()), force=True)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    return status_path(runtime_dir, state_dir)


def test_a_leftover_status_file_never_hides_a_live_bridge(tmp_path: Path) -> None:
    _leftover(tmp_path, "/var/lib/pibridge-killed")
    _write_live(tmp_path, _tracker([time.time()]))
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == HEALTHY, result.stdout
    assert "pibridge: healthy" in result.stdout and "(ignored: " in result.stdout
    # alone, the leftover is what there is: not running
    (status_path(tmp_path, STATE_DIR)).unlink()
    assert _pibridge_status("--runtime-dir", tmp_path).returncode == NOT_RUNNING


def test_a_stale_file_in_another_runtime_dir_never_hides_the_live_one(tmp_path: Path) -> None:
    """Same state directory, two runtime directories (a bridge killed under a login session, the
    service now under systemd): ``--profile`` reports the live one, whichever is found first."""
    first, second = tmp_path / "run", tmp_path / "xdg"
    (second / "pibridge").mkdir(parents=True)
    first.mkdir()
    _leftover(first, STATE_DIR)
    _write_live(second / "pibridge", _tracker([time.time()]))
    profile = tmp_path / "p.toml"
    profile.write_text(f'[bridge]\nstate_dir = "{STATE_DIR}"\n')
    env = {**os.environ, "RUNTIME_DIRECTORY": str(first), "XDG_RUNTIME_DIR": str(second)}
    result = subprocess.run([sys.executable, "-m", "pibridge", "status", "--profile", str(profile)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == HEALTHY, result.stdout + result.stderr
    assert "pibridge: healthy" in result.stdout


@pytest.mark.parametrize("make, expected", [
    ("fifo", "a FIFO, not a regular file"),
    ("nested", "larger than 8 MiB"),
    ("nested-small", "nested too deeply"),
])
def test_unreadable_status_files_are_one_line_exit_2_never_a_hang(tmp_path: Path, make: str,
                                                                   expected: str) -> None:
    path = tmp_path / "status-0123456789ab.json"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "nested":
        path.write_text("[" * 10_000_000)
    else:
        path.write_text("[" * 100_000 + "]" * 100_000)
    result = _pibridge_status("--runtime-dir", tmp_path)
    assert result.returncode == NOT_RUNNING
    assert result.stderr.startswith("pibridge: status unreadable (") and expected in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
