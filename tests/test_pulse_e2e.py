"""End to end against the real emulator (``pibridge run --simulate`` as a child process):

- ``profiles/weather.toml`` (rain gauge, anemometer, BME280; intervals shortened) runs and every
  metric of every sensor arrives at the agent;
- a SIGKILL between two pulse samples, then a restart: the rain total continues from the last
  stored sample, and the pulses of the lost interval are the only difference from the truth,
  counted exactly from the simulated pulse train (steady 2 Hz: pulse k at (k + ½)/2 s of the
  epoch, so the pulses between any two sample timestamps on the 1 s grid are known).

What a power cut (or SIGKILL) between two samples loses: the pulses counted since the last
committed sample (at most one interval's), plus whatever arrives while no bridge runs. The total
itself is never lost or double-counted: it is committed with each sample and resumed from there.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sqlite3
import threading
import time
from pathlib import Path

from test_bridge_e2e import (  # the e2e helpers: a bridge child, the agent's view, waiting
    AgentView,
    BridgeRun,
    Taken,
    bridges,  # noqa: F401 (fixture)
    metric_names,
    missing,
    settled,
    wait_until,
)

from pibridge.bridge.queue import QUEUE_FILE
from pibridge.emulator.process import EmulatorProcess

ROOT = Path(__file__).resolve().parent.parent
WEATHER = ROOT / "profiles" / "weather.toml"
PULSE_HZ = 2.0
PER_PULSE = 0.2794


def pulses_between(start_s: float, end_s: float, hz: float = PULSE_HZ) -> int:
    """Pulses of the steady simulated train (pulse k at (k + ½)/hz s) in [start_s, end_s)."""
    return math.ceil(end_s * hz - 0.5) - math.ceil(start_s * hz - 0.5)


def test_weather_profile_runs_simulated_and_every_metric_arrives(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun]) -> None:  # noqa: F811
    # the PMS5003 in active mode (its fan on) every 3 s: passive mode's 30 s warm-up would
    # hold its first sample back half a minute
    text = (WEATHER.read_text().replace('interval = "1m"', "interval = 1")
            .replace('interval = "5m"', "interval = 3").replace('mode = "passive"', 'mode = "active"'))
    profile = tmp_path / "weather.toml"
    profile.write_text(text)
    names = metric_names(profile)
    assert set(names) == {"Rain", "Wind", "Air", "Particulates"}
    # a shower and wind all the time, so every rate is non-zero
    env = {**os.environ, "PIBRIDGE_SIMULATION": json.dumps({
        "seed": 4, "shower_probability": 1.0, "shower_period_s": 60, "shower_s": 60,
        "shower_peak_mm_h": 200.0, "wind_mean_m_s": 8.0})}
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs", env=env)
    bridges.append(run)
    wait_until(lambda: {t.sensor for t in run.samples()} == set(names), "a sample of every sensor")
    taken = settled(emulator, run, names, "every metric of the weather profile",
                    minimum=12)
    for sensor, metrics in names.items():
        keys = set().union(*(t.values for t in taken if t.sensor == sensor))
        assert keys == set(metrics), (sensor, keys)
    view = AgentView.of(emulator)
    assert missing(view, taken, names) == []
    assert any(t.values.get("count", 0) > 0 for t in taken if t.sensor == "Wind")
    assert all(t.values["gust"] >= 0 for t in taken if t.sensor == "Wind")
    assert run.stop() == 0


RAIN_ONLY = """\
[[sensor]]
name = "Rain"
driver = "pulse_counter"
interval = 1
[sensor.options]
pin = 6
per_pulse = 0.2794
unit = "mm"
debounce = "50ms"
"""


def stored_total(state_dir: Path) -> tuple[float, int]:
    """The resume table's (total, timestamp_ms) of "Rain" after the kill: the newest stored."""
    db = sqlite3.connect(state_dir / QUEUE_FILE)
    try:
        value, timestamp = db.execute("SELECT value, timestamp_ms FROM resume WHERE sensor = 'Rain' "
                                      "AND metric = 'total'").fetchone()
    finally:
        db.close()
    return float(json.loads(value)), int(timestamp)


def rain(run: BridgeRun) -> list[Taken]:
    return [t for t in run.samples("Rain") if not t.edge]


def test_sigkill_between_two_pulse_samples_loses_only_that_interval(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun]) -> None:  # noqa: F811
    profile = tmp_path / "rain.toml"
    profile.write_text(RAIN_ONLY)
    state = tmp_path / "state"
    env = {**os.environ, "PIBRIDGE_SIMULATION": json.dumps({"seed": 3, "steady_pulse_hz": PULSE_HZ})}
    first = BridgeRun(profile, state, emulator, tmp_path / "certs", env=env)
    bridges.append(first)
    wait_until(lambda: len(rain(first)) >= 4, "four rain samples")
    # kill half-way between two samples (the grid is on whole seconds, pulses at .25 and .75)
    last_seen = rain(first)[-1].timestamp_ms
    assert last_seen is not None
    kill_at = last_seen / 1000 + 1.5
    threading.Event().wait(max(0.0, kill_at - time.time()))
    killed_s = time.time()
    first.kill()
    before = rain(first)
    stored, stored_ms = stored_total(state)
    assert stored_ms >= before[-1].timestamp_ms  # type: ignore[operator]
    # the first bridge's own counts are exact: its totals are the running sum of its counts
    running = 0
    for previous, sample in itertools.pairwise(before):
        assert previous.timestamp_ms is not None and sample.timestamp_ms is not None
        assert sample.values["count"] == pulses_between(previous.timestamp_ms / 1000,
                                                        sample.timestamp_ms / 1000)
    for sample in before:
        running += sample.values["count"]
        assert sample.values["total"] == 0.0 + running * PER_PULSE

    second = BridgeRun(profile, state, emulator, tmp_path / "certs", env=env)
    bridges.append(second)
    wait_until(lambda: len(rain(second)) >= 4, "four rain samples after the restart")
    after = rain(second)

    # 1. the total continues from the last stored sample
    first_after = after[0]
    assert first_after.values["total"] == stored + first_after.values["count"] * PER_PULSE
    # 2. the pulses lost: those after the last stored sample that the new driver did not see
    lost = pulses_between(stored_ms / 1000, first_after.timestamp_ms / 1000) - first_after.values["count"]  # type: ignore[operator]
    lost_while_running = pulses_between(stored_ms / 1000, killed_s)
    assert 0 <= lost_while_running <= PULSE_HZ * 1, "at most one interval's pulses were in flight"
    assert lost_while_running <= lost <= pulses_between(stored_ms / 1000, first_after.timestamp_ms / 1000)  # type: ignore[operator]
    # 3. …and they are the only difference from the truth, at every sample after the restart
    counted = 0
    previous_ms = None
    for sample in after:
        assert sample.timestamp_ms is not None
        if previous_ms is not None:
            assert sample.values["count"] == pulses_between(previous_ms / 1000, sample.timestamp_ms / 1000)
        counted += sample.values["count"]
        truth = pulses_between(stored_ms / 1000, sample.timestamp_ms / 1000)
        assert counted + lost == truth
        assert sample.values["total"] == stored + counted * PER_PULSE
        previous_ms = sample.timestamp_ms
    # everything taken reached the agent, the killed bridge's samples included
    names = metric_names(profile)
    wait_until(lambda: not missing(AgentView.of(emulator), [t for t in before + after
                                                            if t.timestamp_ms <= stored_ms or t in after],  # type: ignore[operator]
                                   names), "both bridges' samples at the agent")
    assert second.stop() == 0
