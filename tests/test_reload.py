"""Profile reload: the sensor diff, restart-only keys, refusal of a broken profile, SIGHUP."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pibridge.agent.settings import AgentSettings
from pibridge.bridge.reload import (
    ProfileReloader,
    ReloadSignal,
    diff_profiles,
    diff_sensors,
)
from pibridge.profile import BridgeSettings, Calibration, MetricConfig, Profile, ProfileError, SensorConfig

AIR = SensorConfig("Air", "bme280", 60.0, {"address": 0x76}, line=10)
TWO_POINTS = Calibration(points=((0.2, 0), (2.8, 100)))
SOIL = SensorConfig("Soil", "mcp3008", 300.0, {"channel": 0},
                    {"moisture": MetricConfig("moisture", calibration=TWO_POINTS)}, line=20)
DOOR = SensorConfig("Door", "digital_input", 60.0, {"pin": 17}, line=30)


def _profile(path: Path, *sensors: SensorConfig, **bridge: object) -> Profile:
    return Profile(path, AgentSettings(), bridge=BridgeSettings(**bridge), sensors=sensors)  # type: ignore[arg-type]


def test_diff_sensors_classifies_by_name_ignoring_order_and_position() -> None:
    moved_air = dataclasses.replace(AIR, line=99)
    slower_door = dataclasses.replace(DOOR, interval_s=120.0)
    recalibrated = dataclasses.replace(SOIL, metrics={"moisture": MetricConfig(
        "moisture", calibration=Calibration(points=((0.3, 0), (2.8, 100))))})
    light = SensorConfig("Light", "bh1750", 30.0, {"address": 0x23})
    diff = diff_sensors([AIR, SOIL, DOOR], [slower_door, light, moved_air, recalibrated])
    assert diff.unchanged == ("Air",)
    assert diff.changed == ("Door", "Soil")
    assert diff.changed_fields == {"Door": ("interval_s",), "Soil": ("metrics",)}
    assert diff.added == ("Light",) and diff.removed == ()
    assert diff.to_start == ("Door", "Soil", "Light")
    assert diff.describe() == "sensors: 2 changed (Door, Soil), 1 added (Light), 1 unchanged"


def test_a_renamed_sensor_is_removed_and_added() -> None:
    renamed = dataclasses.replace(DOOR, name="Greenhouse door")
    diff = diff_sensors([AIR, DOOR], [AIR, renamed])
    assert diff.removed == ("Door",) and diff.added == ("Greenhouse door",) and diff.unchanged == ("Air",)
    assert not diff_sensors([AIR, DOOR], [DOOR, AIR])                  # reordered only: no change


def test_diff_profiles_splits_live_and_restart_keys(tmp_path: Path) -> None:
    old = _profile(tmp_path / "p.toml", AIR)
    new = dataclasses.replace(_profile(tmp_path / "p.toml", AIR, queue_max_samples=1000,
                                       state_dir=tmp_path / "elsewhere"),
                              agent=AgentSettings(host="10.0.0.2"))
    change = diff_profiles(old, new)
    assert change.live == ("bridge.queue_max_samples",)
    assert change.restart_required == ("bridge.state_dir", "agent.host")
    assert not change.sensors


def test_reloader_applies_a_valid_profile_and_keeps_restart_only_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.toml"
    running = _profile(path, AIR, DOOR)
    on_disk = [_profile(path, AIR, dataclasses.replace(DOOR, interval_s=5.0), SOIL,
                        queue_max_samples=1000, state_dir=tmp_path / "new-state")]
    reloader = ProfileReloader(running, loader=lambda p: on_disk[0])
    caplog.set_level(logging.INFO, logger="pibridge.bridge.reload")
    result = reloader.reload()
    assert result.applied and reloader.current is result.profile
    assert result.change is not None
    assert result.change.sensors.changed == ("Door",) and result.change.sensors.added == ("Soil",)
    assert result.change.live == ("bridge.queue_max_samples",)
    assert result.profile.bridge.queue_max_samples == 1000
    assert result.profile.bridge.state_dir == running.bridge.state_dir       # waits for the restart
    assert result.restart_pending == ("bridge.state_dir",) == reloader.restart_pending
    messages = [r.getMessage() for r in caplog.records]
    assert any("bridge.state_dir changed; it applies at the next restart" in m for m in messages)
    assert any("sensors: 1 changed (Door), 1 added (Soil), 1 unchanged" in m for m in messages)

    # the same file again: nothing changes, the pending key is not warned about twice
    caplog.clear()
    result = reloader.reload()
    assert result.applied and result.change is not None and not result.change
    assert [r.getMessage() for r in caplog.records] == [f"profile {path} reloaded: nothing changed"]

    # state_dir set back: nothing pending any more
    on_disk[0] = dataclasses.replace(on_disk[0], bridge=dataclasses.replace(
        on_disk[0].bridge, state_dir=running.bridge.state_dir))
    assert reloader.reload().restart_pending == ()


def test_reloader_refuses_a_broken_profile_logging_every_problem(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.toml"
    running = _profile(path, AIR, DOOR)

    def broken(p: Path) -> Profile:
        error = ProfileError(p, "unknown driver 'bme290'", line=3, key="sensor.driver")
        error.args = (f"{p}:3: sensor \"Air\" → driver: unknown driver 'bme290'\n"
                      f"{p}:9: sensor \"Door\" → options.pin: GPIO 4 is the 1-Wire pin",)
        raise error

    reloader = ProfileReloader(running, loader=broken)
    result = reloader.reload()
    assert not result.applied and result.profile is running and reloader.current is running
    assert result.problems == (f"{path}:3: sensor \"Air\" → driver: unknown driver 'bme290'",
                               f"{path}:9: sensor \"Door\" → options.pin: GPIO 4 is the 1-Wire pin")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0] == f"profile {path} refused (2 problems); the running configuration stays in force:"
    assert errors[1:] == [f"  {line}" for line in result.problems]


def test_reloader_with_the_real_loader(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    sensor = '[[sensor]]\nname = "Air"\ndriver = "bme280"\n'
    path.write_text('[agent]\nhost = "localhost"\n' + sensor)
    from pibridge.profile import load_profile

    reloader = ProfileReloader(load_profile(path))
    path.write_text('[agent]\nhost = "localhost"\nport = "eighteen"\n' + sensor)
    result = reloader.reload()
    assert not result.applied and result.problems[0].startswith(f"{path}:3: agent.port:")
    path.write_text('[agent]\nhost = "10.0.0.9"\n' + sensor)
    result = reloader.reload()
    assert result.applied and result.restart_pending == ("agent.host",)
    assert result.profile.agent.host == "localhost"
    path.write_bytes(b"")                                      # emptied before a SIGHUP: not "no sensors"
    emptied = reloader.reload()
    assert not emptied.applied and "no [[sensor]]" in emptied.problems[0]
    assert [s.name for s in reloader.current.sensors] == ["Air"]
    path.unlink()
    assert not reloader.reload().applied                       # a vanished file is refused too


def test_an_unexpected_loader_error_does_not_escape(tmp_path: Path) -> None:
    def buggy(p: Path) -> Profile:
        raise RuntimeError("registry exploded")

    running = _profile(tmp_path / "p.toml", AIR)
    result = ProfileReloader(running, loader=buggy).reload()
    assert not result.applied and "registry exploded" in result.problems[0]


def test_a_reload_that_could_not_be_applied_is_rolled_back(tmp_path: Path) -> None:
    """After a failed apply the next reload is compared with what really runs, so it starts the
    sensor the failed one did not."""
    running = _profile(tmp_path / "p.toml", AIR)
    wanted = _profile(tmp_path / "p.toml", AIR, DOOR)
    reloader = ProfileReloader(running, loader=lambda p: wanted)
    assert reloader.reload().change.sensors.added == ("Door",)
    reloader.rollback()                      # the service could not start Door
    assert reloader.reload().change.sensors.added == ("Door",)
    assert reloader.reload().change.sensors.added == ()  # applied this time: nothing new


def test_sighup_sets_the_flag_once() -> None:
    reload_signal = ReloadSignal()
    reload_signal.install()
    try:
        assert not reload_signal.take()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_pending(reload_signal)
        assert reload_signal.take() and not reload_signal.take()
    finally:
        reload_signal.uninstall()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def wait_pending(reload_signal: ReloadSignal, timeout: float = 5.0) -> bool:
    """Whether the SIGHUP just sent was taken by the handler (Python runs it in the main thread at
    the next bytecode boundary: at once, but asked again until ``timeout`` to be safe)."""
    deadline = time.monotonic() + timeout
    while not reload_signal.pending:
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True
