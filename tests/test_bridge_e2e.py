"""``pibridge run`` end to end (issue 10 §8): the bridge as a subprocess (``python -m pibridge -v
run --profile P --simulate``) on simulated hardware against the real emulator, each test with a
small profile of its own (1–2 s intervals, state in tmp).

What the bridge took is read from its JSON log (``-v``: one ``sample NAME at TS: {values}`` line
per sample, written once the sample is committed to the queue); what the agent holds from the
emulator's dump; every push the bridge sends from a spy on the emulator's private broker socket
(re-sent pushes counted). Waiting is polling with timeouts that allow for reconnect backoff; the
only fixed waits are the outages themselves (a core hung 10 s, an emulator down 20 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pibridge import mqtt
from pibridge.bridge.queue import SampleQueue
from pibridge.bridge.service import sensor_specs
from pibridge.emulator.process import EmulatorProcess
from pibridge.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
DRIVER_PKG = Path(__file__).resolve().parent / "data" / "e2e_driver_pkg"
#: Generous: connect + provision (a child process) + reconcile, and reconnect backoff (≤ 3 s).
ARRIVAL_S = 60.0
EXIT_S = 10.0  # the bridge itself stops within 5 s
SAMPLE_RE = re.compile(r"^sample (?P<sensor>.+?) at (?:(?P<ts>\d+)|mono (?P<mono>[\d.]+))"
                       r"(?P<edge> \(edge\))?: (?P<values>\{.*\})$")
#: a door that opens every 1.5 s for 0.5 s: edges between the 2 s slots
DOOR_SIMULATION = json.dumps({"door_period_s": 1.5, "door_open_s": 0.5, "door_open_probability": 1.0,
                              "seed": 7})
PUSH_FILTERS = ["/v1.0/+/sensor/+/metric/pushValues", "/v1.0/+/sensor/+"]
POLL_S = 0.1


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = ARRIVAL_S) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        pause.wait(POLL_S)


# -- what the bridge took --------------------------------------------------------------------------
@dataclass(frozen=True)
class Taken:
    sensor: str
    timestamp_ms: int | None   #: None: taken before the clock was set
    monotonic_s: float | None
    edge: bool
    values: dict[str, Any]


class BridgeRun:
    """One ``pibridge -v run --log-format json`` child against ``emulator``; its log is read on a
    thread into `messages` and `taken`."""

    def __init__(self, profile: Path, state_dir: Path, emulator: EmulatorProcess, cert_folder: Path, *,
                 clock: tuple[str, ...] = ("--trust-clock",), env: dict[str, str] | None = None,
                 ca_file: Path | None = None) -> None:
        command = [sys.executable, "-m", "pibridge", "-v", "run", "--profile", str(profile), "--simulate",
                   "--state-dir", str(state_dir), "--log-format", "json", *clock,
                   "--host", emulator.host, "--port", str(emulator.port),
                   "--provision-port", str(emulator.provision_port),
                   "--ca-file", str(ca_file or emulator.ca_file), "--cert-folder", str(cert_folder)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.messages: list[str] = []
        self.taken: list[Taken] = []
        self.garbage: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                message = str(json.loads(line)["message"])
            except (ValueError, KeyError, TypeError):
                with self._lock:
                    self.garbage.append(line)
                continue
            match = SAMPLE_RE.match(message)
            with self._lock:
                self.messages.append(message)
                if match:
                    self.taken.append(Taken(
                        match["sensor"], int(match["ts"]) if match["ts"] else None,
                        float(match["mono"]) if match["mono"] else None, bool(match["edge"]),
                        json.loads(match["values"])))

    def samples(self, sensor: str | None = None) -> list[Taken]:
        with self._lock:
            return [t for t in self.taken if sensor is None or t.sensor == sensor]

    def logged(self, text: str) -> bool:
        with self._lock:
            return any(text in message for message in self.messages)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(EXIT_S)
        self._reader.join(EXIT_S)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(EXIT_S)
        self._reader.join(EXIT_S)


@pytest.fixture
def bridges() -> Iterator[list[BridgeRun]]:
    started: list[BridgeRun] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


# -- what the agent holds and what was pushed ------------------------------------------------------
@dataclass
class AgentView:
    """The emulator's dump of the one client: sensors by name, metric ids and values."""

    sensor_ids: dict[str, list[str]]              #: name → every sensorId of that name
    metrics: dict[str, dict[str, list[str]]]      #: sensor name → metric name → metricIds
    values: dict[tuple[str, str], dict[int, Any]]  #: (sensor, metric name) → timestamp → value
    metric_count: int

    @classmethod
    def of(cls, emulator: EmulatorProcess) -> AgentView:
        clients = emulator.dump()["clients"]
        assert len(clients) <= 1, [c["clientId"] for c in clients]
        view = cls({}, {}, {}, 0)
        for sensor in (clients[0]["sensors"] if clients else []):
            view.sensor_ids.setdefault(sensor["name"], []).append(sensor["sensorId"])
            for metric in sensor["metrics"]:
                view.metric_count += 1
                view.metrics.setdefault(sensor["name"], {}).setdefault(metric["name"], []).append(
                    metric["metricId"])
                stored = view.values.setdefault((sensor["name"], metric["name"]), {})
                stored.update({v["timestamp"]: v["value"] for v in metric["values"]})
        return view


class PushSpy:
    """Every push the bridge sends, heard on the emulator's private broker socket (no ACL):
    ``(sensorId, timestamp) → count``. Re-opened after the emulator restarts."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        self.emulator = emulator
        self.pushes: Tally[tuple[str, int]] = Tally()
        self.metric_sets: dict[str, set[frozenset[str]]] = {}
        self._lock = threading.Lock()
        self.session: mqtt.MqttSession | None = None
        self.open()

    def _heard(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if "sensor" not in parts:
            return
        sensor_id = parts[parts.index("sensor") + 1]
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if not isinstance(body, dict) or "metrics" not in body:
            return
        # a backlog push carries several samples, each element with its own timestamp (§4)
        samples: dict[int, set[str]] = {}
        for element in body["metrics"]:
            stamp = int(element.get("timestamp", body.get("timestamp", -1)))
            samples.setdefault(stamp, set()).add(str(element["metricId"]))
        with self._lock:
            for stamp, metric_ids in samples.items():
                self.pushes[(sensor_id, stamp)] += 1
                self.metric_sets.setdefault(sensor_id, set()).add(frozenset(metric_ids))

    def open(self) -> None:
        self.session = mqtt.MqttSession(self.emulator.private_endpoint(), on_message=self._heard,
                                        client_id=mqtt.new_client_id("pibridge-e2e-spy"))
        self.session.open()
        self.session.subscribe(PUSH_FILTERS)

    def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                self.session.close()
            self.session = None

    def resent(self) -> int:
        with self._lock:
            return sum(count - 1 for count in self.pushes.values())


@pytest.fixture
def spies() -> Iterator[list[PushSpy]]:
    made: list[PushSpy] = []
    yield made
    for spy in made:
        spy.close()


# -- comparing both --------------------------------------------------------------------------------
def metric_names(profile: Path) -> dict[str, dict[str, str]]:
    """sensor → metric key → the agent metric's name, as the profile asks for it."""
    specs = sensor_specs(load_profile(profile).sensors)
    return {name: {m.key: m.name for m in spec.metrics} for name, spec in specs.items()}


def missing(view: AgentView, taken: list[Taken], names: dict[str, dict[str, str]]) -> list[str]:
    """Every metric value of every stamped sample that the agent does not hold exactly."""
    out = []
    for sample in taken:
        assert sample.timestamp_ms is not None
        for key, value in sample.values.items():
            stored = view.values.get((sample.sensor, names[sample.sensor][key]), {})
            if stored.get(sample.timestamp_ms, object()) != value:
                out.append(f"{sample.sensor}.{key}@{sample.timestamp_ms}={value!r} "
                           f"(agent: {stored.get(sample.timestamp_ms)!r})")
    return out


def all_arrived(emulator: EmulatorProcess, taken: Callable[[], list[Taken]],
                names: dict[str, dict[str, str]], minimum: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        samples = taken()
        return len(samples) >= minimum and not missing(AgentView.of(emulator), samples, names)
    return check


def settled(emulator: EmulatorProcess, run: BridgeRun, names: dict[str, dict[str, str]], what: str,
            select: Callable[[Taken], bool] = lambda t: True, minimum: int = 1) -> list[Taken]:
    """Wait (the bridge running) until every sample taken so far (that ``select`` picks) is at the
    agent; returns that snapshot (the agent keeps what it acknowledged: they stay there)."""
    snapshot: list[list[Taken]] = []

    def check() -> bool:
        samples = [t for t in run.samples() if select(t)]
        if len(samples) >= minimum and not missing(AgentView.of(emulator), samples, names):
            snapshot.append(samples)
            return True
        return False
    wait_until(check, what)
    return snapshot[-1]


def assert_nothing_lost(emulator: EmulatorProcess, state_dir: Path, taken: list[Taken],
                        names: dict[str, dict[str, str]]) -> None:
    """After a stop: each sample taken is at the agent, or still queued (never acknowledged,
    sent at the next start)."""
    view = AgentView.of(emulator)
    with SampleQueue(state_dir) as queue:
        queued = {(row.sensor, row.timestamp_ms) for row in queue.fetch(0, 1_000_000)}
    lost = [f for t in taken if (f := missing(view, [t], names)) and (t.sensor, t.timestamp_ms) not in queued]
    assert lost == []


def assert_no_duplicates(view: AgentView, names: dict[str, dict[str, str]]) -> None:
    """One agent sensor per profile sensor and one metric per metric name: nothing created twice,
    no orphan (a sensor or metric the profile does not have)."""
    assert sorted(view.sensor_ids) == sorted(names), view.sensor_ids
    for sensor, ids in view.sensor_ids.items():
        assert len(ids) == 1, f"{sensor} exists {len(ids)} times"
        assert sorted(view.metrics.get(sensor, {})) == sorted(names[sensor].values()), view.metrics
        for metric, metric_ids in view.metrics[sensor].items():
            assert len(metric_ids) == 1, f"{sensor}.{metric} exists {len(metric_ids)} times"


def assert_on_grid_and_ordered(taken: list[Taken], intervals: dict[str, float]) -> None:
    """Each sensor's grid samples sit in distinct, increasing slots k·interval (nearest slot within
    half an interval), and each sensor's timestamps (edges included) strictly increase."""
    for sensor, interval in intervals.items():
        stamps = [t.timestamp_ms or 0 for t in taken if t.sensor == sensor]
        assert 0 not in stamps and stamps == sorted(set(stamps)), (sensor, stamps)
        interval_ms = interval * 1000
        slots = []
        for t in taken:
            if t.sensor == sensor and not t.edge:
                assert t.timestamp_ms is not None
                slot = round(t.timestamp_ms / interval_ms)
                assert abs(t.timestamp_ms - slot * interval_ms) < interval_ms / 2
                slots.append(slot)
        assert slots == sorted(set(slots)), (sensor, slots)


def write_profile(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def sensor_id(view: AgentView, name: str) -> str:
    return view.sensor_ids[name][0]


# -- 1. values, timestamps, one message per sample, the grid, DS18B20 group, door edges, restart ----
GREENHOUSE = """\
[[sensor]]
name = "Air"
driver = "bme280"
interval = 1

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1
[sensor.metrics.temperature]
name = "{soc_metric}"

[[sensor]]
name = "Soil A"
driver = "ds18b20"
interval = 2
[sensor.options]
device_id = "28-00000000000a"

[[sensor]]
name = "Soil B"
driver = "ds18b20"
interval = 2
[sensor.options]
device_id = "28-00000000000b"

[[sensor]]
name = "Door"
driver = "digital_input"
interval = 2
[sensor.options]
pin = 17
"""
INTERVALS = {"Air": 1.0, "Pi SoC": 1.0, "Soil A": 2.0, "Soil B": 2.0, "Door": 2.0}


def test_values_arrive_exactly_one_message_per_sample_on_the_grid_and_a_restart_creates_nothing(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun], spies: list[PushSpy]) -> None:
    profile = write_profile(tmp_path / "p.toml", GREENHOUSE.format(soc_metric="SoC temperature"))
    names = metric_names(profile)
    env = {**os.environ, "PIBRIDGE_SIMULATION": DOOR_SIMULATION}
    spy = PushSpy(emulator)
    spies.append(spy)
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs", env=env)
    bridges.append(run)

    def enough() -> bool:
        soil_a, soil_b = run.samples("Soil A"), run.samples("Soil B")
        soil = {t.timestamp_ms for t in soil_a} & {t.timestamp_ms for t in soil_b}
        return (len(soil) >= 2 and shared_conversion() and any(t.edge for t in run.samples("Door"))
                and len(run.samples("Air")) >= 4)

    def shared_conversion() -> bool:
        return any(run.logged(f"one DS18B20.start_group for {names}")
                   for names in ("Soil A, Soil B", "Soil B, Soil A"))
    wait_until(enough, "DS18B20 samples of two slots in one conversion, a door edge and 4 Air samples")
    taken = settled(emulator, run, names, "every sample at the agent")
    pushes = dict(spy.pushes)
    view = AgentView.of(emulator)
    assert missing(view, taken, names) == []   # every value, at its timestamp, exactly
    assert_no_duplicates(view, names)
    assert_on_grid_and_ordered(taken, INTERVALS)
    # the agent holds nothing the bridge did not take: the same timestamps per sensor and metric
    took = {t.timestamp_ms for t in taken}
    for sensor, keys in names.items():
        mine = {t.timestamp_ms for t in taken if t.sensor == sensor}
        for metric in keys.values():
            assert set(view.values[(sensor, metric)]) & took == mine, (sensor, metric)
    # every sample in one message holding all its metrics, pushed once (no outage: nothing re-sent)
    by_id = {sensor_id(view, name): name for name in names}
    sent: dict[tuple[str, int | None], int] = {
        (by_id[sid], stamp): count for (sid, stamp), count in pushes.items()}
    assert all(sent.get((t.sensor, t.timestamp_ms)) == 1 for t in taken), sent
    for sid, sets in spy.metric_sets.items():
        assert sets == {frozenset(i for ids in view.metrics[by_id[sid]].values() for i in ids)}, by_id[sid]
    # the two probes on one 1-Wire master share one conversion per slot, and one timestamp
    # (a slot before both probes' drivers were built converts the built one alone)
    assert shared_conversion()
    soil_a = {t.timestamp_ms for t in taken if t.sensor == "Soil A"}
    soil_b = {t.timestamp_ms for t in taken if t.sensor == "Soil B"}
    first_shared = min(soil_a & soil_b)
    assert {ts for ts in soil_a if ts >= first_shared} == {ts for ts in soil_b if ts >= first_shared}
    # a door edge is a sample of its own, stamped at the edge, off the grid's timestamps
    edges = [t for t in taken if t.sensor == "Door" and t.edge]
    grid = {t.timestamp_ms for t in taken if t.sensor == "Door" and not t.edge}
    assert edges and all(t.timestamp_ms not in grid for t in edges)
    assert all(isinstance(t.values["state"], bool) for t in edges)
    assert run.stop() == 0                    # SIGTERM: exit status 0, nothing lost
    assert_nothing_lost(emulator, tmp_path / "state", run.samples(), names)

    # restart with one metric renamed: the same ids, the name updated, nothing created anew
    profile.write_text(GREENHOUSE.format(soc_metric="Processor temperature"))
    renamed = metric_names(profile)
    again = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs", env=env)
    bridges.append(again)
    wait_until(lambda: len(again.samples("Pi SoC")) >= 2, "samples after the restart")
    later = settled(emulator, again, renamed, "the restarted bridge's samples at the agent")
    after = AgentView.of(emulator)
    assert_no_duplicates(after, renamed)
    assert after.sensor_ids == view.sensor_ids
    assert after.metrics["Pi SoC"] == {"Processor temperature": view.metrics["Pi SoC"]["SoC temperature"]}
    assert after.metric_count == view.metric_count
    assert missing(after, run.samples() + later, renamed) == []  # what the first left queued too
    assert again.stop() == 0


# -- 2. outages: the core hangs 10 s; the whole emulator is down 20 s -------------------------------
OUTAGE = """\
[[sensor]]
name = "Air"
driver = "bme280"
interval = 1

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1
"""
CORE_HANG_S = 10.0
EMULATOR_DOWN_S = 20.0


def check_outage(emulator: EmulatorProcess, run: BridgeRun, state_dir: Path, profile: Path) -> None:
    """After an outage: every sample taken arrived exactly, in order, on the grid, nothing twice,
    nothing the bridge did not take."""
    names = metric_names(profile)
    count = len(run.samples())
    wait_until(lambda: len(run.samples()) >= count + 2, "sampling going on after the outage")
    taken = settled(emulator, run, names, "the backlog drained to the agent")
    view = AgentView.of(emulator)
    assert missing(view, taken, names) == []
    assert_no_duplicates(view, names)
    assert_on_grid_and_ordered(taken, {"Air": 1.0, "Pi SoC": 1.0})
    took = {t.timestamp_ms for t in taken}
    for sensor, keys in names.items():
        mine = {t.timestamp_ms for t in taken if t.sensor == sensor}
        for metric in keys.values():
            assert set(view.values[(sensor, metric)]) & took == mine
    assert run.stop() == 0
    assert_nothing_lost(emulator, state_dir, run.samples(), names)


def test_core_hung_10_s_with_the_broker_up_loses_nothing(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun], spies: list[PushSpy]) -> None:
    profile = write_profile(tmp_path / "p.toml", OUTAGE)
    names = metric_names(profile)
    spy = PushSpy(emulator)
    spies.append(spy)
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs")
    bridges.append(run)
    wait_until(all_arrived(emulator, run.samples, names, minimum=2), "delivery running")
    with emulator.paused_core():
        taken_before = len(run.samples())
        threading.Event().wait(CORE_HANG_S)  # the scenario: the core answers nothing for 10 s
        during = len(run.samples()) - taken_before
    assert during >= CORE_HANG_S  # two sensors at 1 s: sampling went on meanwhile
    check_outage(emulator, run, tmp_path / "state", profile)
    # pushes sent into the hang went unanswered and were sent again: each at most a few times
    assert spy.pushes and max(spy.pushes.values()) <= 3, spy.pushes.most_common(3)
    print(f"core hung {CORE_HANG_S:g} s: {during} samples taken meanwhile, {spy.resent()} pushes re-sent")


def test_emulator_down_20_s_and_back_on_the_same_state_and_ports_loses_nothing(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun], spies: list[PushSpy]) -> None:
    profile = write_profile(tmp_path / "p.toml", OUTAGE)
    names = metric_names(profile)
    spy = PushSpy(emulator)
    spies.append(spy)
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs")
    bridges.append(run)
    wait_until(all_arrived(emulator, run.samples, names, minimum=2), "delivery running")
    ports = (emulator.port, emulator.provision_port)
    spy.close()
    emulator.stop()
    taken_before = len(run.samples())
    threading.Event().wait(EMULATOR_DOWN_S)  # the scenario: no agent for 20 s
    during = len(run.samples()) - taken_before
    assert during >= EMULATOR_DOWN_S  # two sensors at 1 s: queued on disk meanwhile
    emulator.start()
    assert (emulator.port, emulator.provision_port) == ports
    spy.open()
    check_outage(emulator, run, tmp_path / "state", profile)
    assert max(spy.pushes.values()) <= 3, spy.pushes.most_common(3)
    print(f"emulator down {EMULATOR_DOWN_S:g} s: {during} samples queued, {spy.resent()} pushes re-sent")


# -- 3. SIGKILL mid-run: everything queued arrives after a restart ----------------------------------
def test_sigkill_mid_run_then_restart_delivers_everything_queued(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun]) -> None:
    profile = write_profile(tmp_path / "p.toml", OUTAGE)
    names = metric_names(profile)
    first = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs")
    bridges.append(first)
    wait_until(all_arrived(emulator, first.samples, names, minimum=2), "delivery running")
    emulator.stop()  # what is taken from now on can only be queued
    count = len(first.samples())
    wait_until(lambda: len(first.samples()) >= count + 4, "samples queued while the agent is away")
    first.kill()
    taken = first.samples()
    emulator.start()
    second = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs")
    bridges.append(second)
    wait_until(lambda: not missing(AgentView.of(emulator), taken, names), "the killed bridge's samples")
    later = settled(emulator, second, names, "the new bridge's samples")
    view = AgentView.of(emulator)
    assert_no_duplicates(view, names)
    assert missing(view, taken + later, names) == []
    assert second.stop() == 0


# -- 4. an inventory wiped while the emulator is stopped: re-reconciled, no orphan -------------------
@pytest.mark.parametrize("strict_ids", [False, True], ids=["implicit-creation", "strict-ids"])
def test_inventory_wiped_while_the_emulator_is_stopped_is_reconciled_again_without_orphans(
        tmp_path: Path, emulator_factory: Callable[..., EmulatorProcess], bridges: list[BridgeRun],
        strict_ids: bool) -> None:
    emulator = emulator_factory(strict_ids=strict_ids)
    profile = write_profile(tmp_path / "p.toml", OUTAGE)
    names = metric_names(profile)
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs")
    bridges.append(run)
    wait_until(all_arrived(emulator, run.samples, names, minimum=2), "delivery running")
    old = AgentView.of(emulator)
    emulator.stop()
    before = AgentView.of(emulator)
    delivered = {(t.sensor, t.timestamp_ms) for t in run.samples() if not missing(before, [t], names)}
    emulator.wipe()  # every sensor, metric and value gone; the client stays
    assert AgentView.of(emulator).sensor_ids == {}
    count = len(run.samples())
    wait_until(lambda: len(run.samples()) >= count + 2, "samples queued while the agent is away")
    emulator.start()
    taken = settled(emulator, run, names, "every sample not delivered before the wipe",
                    select=lambda t: (t.sensor, t.timestamp_ms) not in delivered,
                    minimum=count - len(delivered) + 2)
    view = AgentView.of(emulator)
    assert_no_duplicates(view, names)  # no orphan: only the profile's sensors and metrics, each once
    assert set(view.sensor_ids) == set(old.sensor_ids)
    assert missing(view, taken, names) == []
    assert run.stop() == 0


# -- 5. misbehaving drivers and a rejected sample ----------------------------------------------------
@pytest.fixture(scope="module")
def driver_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test-only drivers (tests/data/e2e_driver_pkg) pip-installed offline into a throwaway
    site dir, found through the ``pibridge.drivers`` entry point."""
    site = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / DRIVER_PKG.name
    shutil.copytree(DRIVER_PKG, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)],
                   check=True, capture_output=True, text=True, timeout=120)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


MISBEHAVING = """\
[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1

[[sensor]]
name = "Broken chip"
driver = "e2e_failing"
interval = 1

[[sensor]]
name = "Wedged bus"
driver = "e2e_hanging"
interval = 1

[[sensor]]
name = "Pulses"
driver = "e2e_counter"
interval = 1
[sensor.options]
bad_at = 2
"""


def test_failing_and_hanging_drivers_delay_no_one_and_a_rejected_sample_is_a_dead_letter(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun],
        driver_env: dict[str, str]) -> None:
    profile = write_profile(tmp_path / "p.toml", MISBEHAVING)
    # metric names by hand: the test drivers are installed for the bridge, not in this process
    names = {"Pi SoC": {"temperature": "CPU temperature"}, "Broken chip": {"value": "Value"},
             "Wedged bus": {"value": "Value"}, "Pulses": {"count": "Pulse count"}}
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs", env=driver_env)
    bridges.append(run)
    wait_until(lambda: len(run.samples("Pulses")) >= 5 and len(run.samples("Pi SoC")) >= 5, "5 samples each")
    good = settled(emulator, run, names, "every good sample at the agent",
                   select=lambda t: t.values != {"count": "2.5"})
    wait_until(lambda: any(b"does not answer" in r["payload"] for r in emulator.error_reports()),
               "the failing sensor's error reported to the agent")
    assert run.stop() == 0
    taken = run.samples()
    assert {t.sensor for t in taken} == {"Pi SoC", "Pulses"}  # the failing and the hung one gave nothing
    # the others kept every slot: consecutive, none skipped
    for sensor in ("Pi SoC", "Pulses"):
        slots = [round(t.timestamp_ms / 1000) for t in taken if t.sensor == sensor and t.timestamp_ms]
        assert slots == list(range(slots[0], slots[0] + len(slots))), (sensor, slots)
    # the rejected sample went to the dead letters with its reason; the queue moved on
    bad = [t for t in taken if t.values == {"count": "2.5"}]
    assert len(bad) == 1
    view = AgentView.of(emulator)
    assert missing(view, good, names) == []
    assert good[-1].timestamp_ms is not None and bad[0].timestamp_ms is not None
    assert max(t.timestamp_ms for t in good if t.sensor == "Pulses" and t.timestamp_ms) > bad[0].timestamp_ms
    assert bad[0].timestamp_ms not in view.values[("Pulses", "Pulse count")]
    with SampleQueue(tmp_path / "state") as queue:
        dead = queue.dead_letters()
    assert [(d["sensor"], d["timestamp_ms"]) for d in dead] == [("Pulses", bad[0].timestamp_ms)]
    assert "11" in dead[0]["reason"] or "integer" in dead[0]["reason"], dead
    assert_nothing_lost(emulator, tmp_path / "state", [t for t in taken if t not in bad], names)
    assert sorted(view.sensor_ids) == sorted(names)  # the failing and hung sensors exist at the agent


# -- 6. the clock not set: queued unstamped, stamped once it is set, never pushed wrong -------------
CLOCK = """\
[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 1
"""


def test_clock_not_set_samples_wait_unstamped_and_arrive_stamped_from_their_monotonic_time(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun]) -> None:
    profile = write_profile(tmp_path / "p.toml", CLOCK)
    names = metric_names(profile)
    synced = tmp_path / "synchronized"  # the sync source: the clock counts as set once it exists
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs",
                    clock=("--clock-sync-file", str(synced)))
    bridges.append(run)
    wait_until(lambda: len(run.samples()) >= 3, "three samples taken")
    metric = names["Pi SoC"]["temperature"]
    wait_until(lambda: "Pi SoC" in AgentView.of(emulator).sensor_ids, "the sensor reconciled at the agent")
    count = len(run.samples())
    wait_until(lambda: len(run.samples()) >= count + 2, "two more samples with delivery running")
    assert all(t.timestamp_ms is None and t.monotonic_s is not None for t in run.samples())
    assert AgentView.of(emulator).values.get(("Pi SoC", metric), {}) == {}  # nothing pushed
    synced.touch()
    wait_until(lambda: run.logged("system clock set"), "the clock declared set")
    wait_until(lambda: any(t.timestamp_ms is not None for t in run.samples()), "a stamped sample")
    unstamped = [t for t in run.samples() if t.timestamp_ms is None]
    wait_until(lambda: len(AgentView.of(emulator).values.get(("Pi SoC", metric), {})) >= len(unstamped) + 1,
               "the unstamped samples at the agent")
    assert run.stop() == 0
    stored = AgentView.of(emulator).values[("Pi SoC", metric)]
    stamps = sorted(stored)
    # each waiting sample got round(monotonic ms) + one offset: consecutive ones keep their spacing
    early = stamps[:len(unstamped)]
    offsets = [stamp - round(t.monotonic_s * 1000) for stamp, t in zip(early, unstamped, strict=True)
               if t.monotonic_s is not None]
    assert max(offsets) - min(offsets) <= 1, offsets  # the log shows monotonic time to 1 ms
    assert [stored[s] for s in early] == [t.values["temperature"] for t in unstamped]
    # …and the offset is the wall clock's: stamped near when they were taken, before the later ones
    later = [t for t in run.samples() if t.timestamp_ms is not None]
    assert early[-1] < min(t.timestamp_ms for t in later if t.timestamp_ms is not None)
    assert abs(offsets[0] - (time.time() - time.monotonic()) * 1000) < 5_000
    assert missing(AgentView.of(emulator), later, names) == []


# -- 7. booted before the agent: no agent, no CA file yet — no sample lost ---------------------------
def test_a_bridge_started_before_the_agent_and_its_ca_file_loses_no_sample(
        tmp_path: Path, emulator: EmulatorProcess, bridges: list[BridgeRun]) -> None:
    profile = write_profile(tmp_path / "p.toml", CLOCK)
    names = metric_names(profile)
    emulator.stop()  # the agent is not up yet at boot …
    ca_file = tmp_path / "agent-ca.crt"  # … and its CA file not installed yet
    run = BridgeRun(profile, tmp_path / "state", emulator, tmp_path / "certs", ca_file=ca_file)
    bridges.append(run)
    wait_until(lambda: len(run.samples()) >= 3, "samples taken with neither agent nor CA file")
    shutil.copyfile(emulator.ca_file, ca_file)
    emulator.start()
    taken = settled(emulator, run, names, "every sample since boot at the agent", minimum=4)
    assert taken[0] == run.samples()[0]
    assert run.stop() == 0
