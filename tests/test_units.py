"""What the screens say: one display-unit mapping (`pibridge.units`) for the live view,
``pibridge status``, ``pibridge read`` and ``pibridge drivers``; doors read closed/open; a sensor
is "starting" until its first reading; a deadband's held-back values say when they were read;
an error is shown once and never loses its end."""

from __future__ import annotations

import re
import threading
from typing import ClassVar

import pytest

from pibridge import units
from pibridge.bridge.clock import SystemClock
from pibridge.bridge.liveview import render, shorten_error, shorten_middle, wrap
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
from pibridge.bridge.operations import feed_status
from pibridge.bridge.scheduler import Scheduler, SensorPlan
from pibridge.bridge.status import StatusTracker, TrackedSensor
from pibridge.drivers.base import Driver, Metric, Sample
from pibridge.profile import SensorConfig

T0 = 1_700_000_000.0
WAIT_S = 10.0


@pytest.mark.parametrize(("value", "unit", "annotation", "shown"), [
    (21.4, "SI.Temperature.CELSIUS", None, "21.4 °C"),
    (101_325.0, "SI.Pressure.PASCAL", None, "1013 hPa"),       # pascals read as hPa
    (101_325, "SI.Pressure.PASCAL", None, "1013 hPa"),
    (48.25, "NoSI.Dimensionless.PERCENT", None, "48.25 %"),
    (312.0, None, "lux", "312 lx"),
    (12.0, None, "ug/m3", "12 µg/m³"),
    (415, None, "ppm", "415 ppm"),
    (3.3, "SI.ElectricPotential.VOLT", None, "3.3 V"),
    (4700.0, "SI.ElectricResistance.OHM", None, "4700 Ω"),
    (2.5, "SI.Velocity.METERS_PER_SECOND", None, "2.5 m/s"),
    (True, None, "open", "open"),
    (False, None, "open", "closed"),                           # never "off open"
    (False, None, "closed/open", "closed"),
    (True, None, "pump", "pump"),
    (False, None, "pump", "not pump"),
    (False, None, None, "off"),
    (None, "SI.Temperature.CELSIUS", None, "–"),
    (21.4, "°C", None, "21.4 °C"),                             # a symbol from an older status file
    ("fault", None, "", "fault"),
])
def test_display(value: object, unit: str | None, annotation: str | None, shown: str) -> None:
    assert units.display(value, unit, annotation) == shown


def test_display_unit_and_every_agent_unit_has_a_symbol() -> None:
    from pibridge.protocol import VALUE_UNITS

    assert units.display_unit("SI.Pressure.PASCAL", None) == ("hPa", 0.01)
    assert units.display_unit(None, "hPa") == ("hPa", 1.0)
    assert units.display_unit(None, None) == ("", 1.0)
    assert set(units.AGENT_UNITS) == set(VALUE_UNITS)
    assert all("." not in symbol for symbol, _ in units.AGENT_UNITS.values())


def test_profile_unit() -> None:
    from pibridge.protocol import VALUE_UNITS

    agent = set(VALUE_UNITS)
    assert units.profile_unit("%", agent) == units.ProfileUnit(agent_unit="NoSI.Dimensionless.PERCENT")
    assert units.profile_unit("°C", agent) == units.ProfileUnit(agent_unit="SI.Temperature.CELSIUS")
    assert units.profile_unit("degC", agent) == units.ProfileUnit(agent_unit="SI.Temperature.CELSIUS")
    assert units.profile_unit("Pa", agent) == units.ProfileUnit(agent_unit="SI.Pressure.PASCAL")
    assert units.profile_unit("hPa", agent) == units.ProfileUnit(annotation="hPa")
    assert units.profile_unit("ppm", agent) == units.ProfileUnit(annotation="ppm")
    with pytest.raises(ValueError, match=r"did you mean hPa\?"):
        units.profile_unit("hpa", agent)
    assert units.conversion_factor("Pa", "hPa") == 0.01
    assert units.conversion_factor("Pa", "%") is None


def _tracker(clock: list[float]) -> StatusTracker:
    tracker = StatusTracker("greenhouse.toml", "/var/lib/pibridge", clock=lambda: clock[0])
    tracker.set_sensors([
        TrackedSensor.from_spec(SensorConfig("Air", "bme280", 60.0), SensorSpec("Air", (
            MetricSpec("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
            MetricSpec("pressure", "Pressure", unit="SI.Pressure.PASCAL")))),
        TrackedSensor.from_spec(SensorConfig("Door", "digital_input", 5.0), SensorSpec("Door", (
            MetricSpec("state", "Door", value_type="bool", annotation="open"),))),
        TrackedSensor("Soil", "ds18b20", 60.0, (("temperature", "Temperature", "SI.Temperature.CELSIUS"),)),
    ])
    tracker.agent_state(connected=True, host="localhost", port=18884)
    tracker.clock_state(True, "timesyncd")
    return tracker


def _stats(state: str, values: dict[str, object], read_at: float | None, sample_ms: int | None
           ) -> dict[str, object]:
    return {"state": state, "taken": 1 if sample_ms else 0, "failed": 0, "skipped": 0,
            "last_values": values, "last_read_at": read_at, "last_timestamp_ms": sample_ms}


def test_live_view_reads_units_doors_starting_and_deadband() -> None:
    from types import SimpleNamespace

    delivery = SimpleNamespace(pushed_by_sensor={}, dead_by_sensor={}, connected=True, connected_since=T0,
                               client_id="c", last_ack=None, problem="", oldest_timestamp_ms=None,
                               queue_depth=0, waiting_for_clock=0, dropped=0, dead_lettered={})
    clock = [T0]
    tracker = _tracker(clock)
    # Air: read now, but its last sample is 3 min old (a deadband held the unchanged values back);
    # Door: a fresh sample; Soil: built, not read yet (the scheduler says "building")
    feed_status(tracker, {
        "Air": _stats("ok", {"temperature": 21.5, "pressure": 101_325.0}, T0, int((T0 - 180) * 1000)),
        "Door": _stats("ok", {"state": False}, T0, int(T0 * 1000)),
        "Soil": _stats("building", {}, None, None),
    }, delivery, host="localhost", port=18884, clock_synchronised=True,  # type: ignore[arg-type]
                clock_source="test")
    lines = render(tracker.snapshot(), 100, now=T0 + 5)
    assert re.match(r"Air +ok +21\.5 °C  1013 hPa  \(read 5 s ago, changed 3 min ago\)$", lines[1]), lines
    assert re.match(r"Door +ok +closed  \(5 s ago\)$", lines[2]), lines
    assert re.match(r"Soil +starting *$", lines[3]), lines


def test_status_page_reads_the_same_as_the_live_view() -> None:
    """`pibridge status` shows units, door states, "starting" and a deadband's last read like the
    live view (one mapping), from the status file's agent unit names."""
    import dataclasses
    from pathlib import Path
    from types import SimpleNamespace

    from pibridge.bridge.status import BridgeStatus, Health, StatusReading
    from pibridge.cli.status_commands import render_text

    clock = [T0]
    tracker = _tracker(clock)
    delivery = SimpleNamespace(pushed_by_sensor={}, dead_by_sensor={}, connected=True, connected_since=T0,
                               client_id="c", last_ack=None, problem="", oldest_timestamp_ms=None,
                               queue_depth=0, waiting_for_clock=0, dropped=0, dead_lettered={})
    feed_status(tracker, {
        "Air": _stats("ok", {"temperature": 21.5, "pressure": 101_325.0}, T0, int((T0 - 180) * 1000)),
        "Door": _stats("ok", {"state": True}, T0, int(T0 * 1000)),
        "Soil": _stats("building", {}, None, None),
    }, delivery, host="localhost", port=18884, clock_synchronised=True,  # type: ignore[arg-type]
                clock_source="test")
    snapshot = BridgeStatus.from_json(dataclasses.replace(tracker.snapshot(), written_at=T0 + 5).to_json())
    page = render_text(StatusReading(Path("status.json"), snapshot, True, 5.0), Health(0))
    air = next(line for line in page if line.startswith("Air "))
    assert air.endswith("21.5 °C  1013 hPa  (read 5 s ago, changed 3 min ago)"), air
    assert next(line for line in page if line.startswith("Door ")).endswith("open  (5 s ago)")
    assert next(line for line in page if line.startswith("Soil ")).split()[1] == "starting"


class _Gate(Driver):
    """Built at once; its first collect says it has begun, then waits for the test's gate."""

    name = "gate"
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("t", "T", unit="SI.Temperature.CELSIUS"),)
    entered = threading.Event()
    gate = threading.Event()

    def collect(self) -> Sample:
        type(self).entered.set()
        assert type(self).gate.wait(WAIT_S)
        return {"t": 20.0}


def test_scheduler_says_building_until_the_first_reading() -> None:
    """The scheduler's "ok" means "a reading came", not "the driver was built" (the live view
    showed "ok" for a sensor never read)."""
    arrived = threading.Event()

    class Sink:
        def put(self, sample: TakenSample) -> None:
            arrived.set()

    class Synced:
        def synchronized(self) -> bool:
            return True

    clock = SystemClock(Synced(), boot_id="b", floor_s=0.0)
    scheduler = Scheduler([SensorPlan("p", 0.2, _Gate)], Sink(), clock=clock)
    scheduler.start()
    try:
        assert _Gate.entered.wait(WAIT_S)          # built, first read under way
        stats = scheduler.stats()["p"]
        assert stats["state"] == "building" and stats["last_read_at"] is None
        _Gate.gate.set()
        assert arrived.wait(WAIT_S)
        stats = scheduler.stats()["p"]
        assert stats["state"] == "ok" and stats["last_read_at"] is not None
    finally:
        _Gate.gate.set()
        scheduler.stop(5.0)


def test_a_long_error_wraps_keeps_its_end_and_shows_once() -> None:
    clock = [T0]
    tracker = _tracker(clock)
    advice = "add dtoverlay=w1-gpio to /boot/firmware/config.txt and reboot"
    error = ("28-000005abb69d: 1-Wire is not enabled (/sys/bus/w1/devices not found): " + "x" * 300
             + " " + advice)
    tracker.read_failed("Soil", error)
    logged = f"12:00:00 WARNING sensor Soil: failing: {error}"
    lines = render(tracker.snapshot(), 60, now=T0, log_lines=[logged])
    assert all(len(line) <= 60 for line in lines)
    soil = [line for line in lines if line.startswith("Soil") or line.startswith(" " * 20)]
    assert 1 < len(soil) <= 3 and soil[-1].endswith("reboot")
    assert "…" in "".join(soil)
    assert sum("28-000005abb69d" in line for line in lines) == 1    # not in recent errors, not in log
    assert "recent errors:" not in lines and "log:" not in lines


def test_shorten_and_wrap() -> None:
    assert shorten_middle("abcdefghij", 5) == "ab…ij"
    # the advice after the last ": " stays whole; the start gives way
    error = "28-000005abb69d: 1-Wire is not enabled (/sys/bus/w1/devices not found): add dtoverlay=w1-gpio"
    assert shorten_error(error, 60) == "28-000005abb69d: 1…devices not found): add dtoverlay=w1-gpio"
    assert len(shorten_error(error, 60)) <= 60 and shorten_error("short", 10) == "short"
    assert shorten_middle("short", 10) == "short"
    assert wrap("one two three", 7, 2) == ["one two", "three"]
    lines = wrap("start " + "m" * 100 + " end", 10, 2)
    assert len(lines) <= 2 and lines[0].startswith("start") and lines[-1].endswith("end")


def test_the_advice_of_an_error_survives_whole_on_an_ordinary_terminal() -> None:
    clock = [T0]
    tracker = _tracker(clock)
    advice = "add dtoverlay=w1-gpio to /boot/firmware/config.txt and reboot"
    tracker.read_failed("Soil", f"28-000005abb69d: 1-Wire is not enabled ({'/very/long/path' * 8} "
                                f"not found): {advice}")
    lines = render(tracker.snapshot(), 79, now=T0)
    start = next(i for i, line in enumerate(lines) if line.startswith("Soil"))
    words = " ".join(line.strip() for line in lines[start:start + 3]).split("FAILING 0 s", 1)[1].strip()
    assert words.startswith("28-000005abb69d: 1-Wire") and words.endswith(advice), lines
