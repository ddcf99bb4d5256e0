"""Inventory reconciliation against the real emulator: the mapping file, finding by name, never
adopting a mismatched definition, a lost create, updates only when different, and
``pibridge inventory --prune``."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import stored_sensors

from pibridge.agent import AgentClient, AgentSettings, MetricDefinition, Reply
from pibridge.bridge.inventory import (
    InventoryMapping,
    ReconcileAborted,
    Reconciler,
    mapping_path,
    prune_candidates,
)
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
from pibridge.bridge.queue import SampleQueue
from pibridge.cli import main
from pibridge.testing import Emulator

WAIT_S = 20.0
AIR = SensorSpec("Air", (MetricSpec("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
                         MetricSpec("light", "Light", value_type="double", annotation="lx")))
SPECS = {"Air": AIR}


def held(emulator: Emulator, client: AgentClient) -> list[dict[str, Any]]:
    return stored_sensors(emulator, client.client_id)


def shape(sensors: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(s["name"], [(m["name"], m.get("valueUnit") or f"{m['valueType']}:{m['valueAnnotation']}")
                         for m in s["metrics"]]) for s in sensors]


def test_creates_once_writes_the_mapping_and_a_restart_creates_nothing(
        client: AgentClient, emulator: Emulator, tmp_path: Path) -> None:
    mapping = InventoryMapping(tmp_path, client.client_id)
    first = Reconciler(client, mapping)
    first_saves: list[int] = []
    original_first_save = mapping.save
    mapping.save = lambda: first_saves.append(1) or original_first_save()  # type: ignore[method-assign]
    resolved = first.reconcile(SPECS, {}, generation=1)
    assert (first.created_sensors, first.created_metrics, first.updates) == (1, 2, 0)
    assert first_saves == [1]   # one sensor and two metrics created: the file written once
    stored = json.loads(mapping_path(tmp_path, client.client_id).read_text())
    sid = resolved.sensors["Air"]
    assert stored["sensors"]["Air"]["sensorId"] == sid
    celsius = "unit:SI.Temperature.CELSIUS"
    assert stored["sensors"]["Air"]["metrics"]["temperature"] == {
        celsius: resolved.metrics[("Air", "temperature", celsius)]}
    again = Reconciler(client, InventoryMapping(tmp_path, client.client_id))  # a restart: read from disk
    saves: list[int] = []
    original_save = again.mapping.save
    again.mapping.save = lambda: saves.append(1) or original_save()  # type: ignore[method-assign]
    assert again.reconcile(SPECS, {}, generation=2).metrics == resolved.metrics
    assert (again.created_sensors, again.created_metrics, again.updates) == (0, 0, 0)
    assert saves == []          # nothing changed: the file is not rewritten
    assert shape(held(emulator, client)) == [("Air", [("Temperature", "SI.Temperature.CELSIUS"),
                                                      ("Light", "double:lx")])]


def test_found_by_name_without_a_mapping(client: AgentClient, emulator: Emulator, tmp_path: Path) -> None:
    sid = client.create_sensor("Air").created_sensor_id
    ids = client.create_metrics(sid, [MetricDefinition("Temperature", value_unit="SI.Temperature.CELSIUS"),
                                      MetricDefinition("Light", value_type="double", value_annotation="lx")])
    reconciler = Reconciler(client, InventoryMapping(tmp_path, client.client_id))
    resolved = reconciler.reconcile(SPECS, {}, generation=1)
    assert resolved.sensors == {"Air": sid}
    assert sorted(resolved.metrics.values()) == sorted(ids.metric_ids.values())
    assert reconciler.created_sensors == reconciler.created_metrics == 0


def test_never_adopts_an_id_whose_definition_does_not_match(client: AgentClient, emulator: Emulator,
                                                            tmp_path: Path) -> None:
    sid = client.create_sensor("Air").created_sensor_id
    wrong = client.create_metrics(sid, [MetricDefinition("Temperature", value_type="bool",
                                                         value_annotation="x")]).metric_ids["1"]
    mapping = InventoryMapping(tmp_path, client.client_id)
    mapping.set_sensor("Air", sid)
    mapping.set_metrics("Air", {("temperature", "unit:SI.Temperature.CELSIUS"): wrong})  # a stale mapping
    resolved = Reconciler(client, mapping).reconcile(SPECS, {}, generation=1)
    mid = resolved.metrics[("Air", "temperature", "unit:SI.Temperature.CELSIUS")]
    assert mid != wrong
    assert mapping.metric_id("Air", ("temperature", "unit:SI.Temperature.CELSIUS")) == mid
    assert shape(held(emulator, client)) == [("Air", [("Temperature", "bool:x"),
                                                      ("Temperature", "SI.Temperature.CELSIUS"),
                                                      ("Light", "double:lx")])]


def test_a_mapped_sensor_gone_from_the_agent_is_created_again(client: AgentClient, emulator: Emulator,
                                                              tmp_path: Path) -> None:
    mapping = InventoryMapping(tmp_path, client.client_id)
    old = Reconciler(client, mapping).reconcile(SPECS, {}, generation=1).sensors["Air"]
    client.delete_sensor(old)
    new = Reconciler(client, mapping).reconcile(SPECS, {}, generation=2).sensors["Air"]
    assert new != old and mapping.sensor_id("Air") == new
    assert len(held(emulator, client)) == 1


class LosingCreates(AgentClient):
    """A real client whose sensor creates time out: the core is paused right before each is sent,
    so the agent carries it out later, after the client gave up on the answer."""

    def __init__(self, settings: AgentSettings, emulator: Emulator) -> None:
        super().__init__(settings, request_timeout=0.5)
        self.emulator = emulator

    def create_sensor_async(self, name: str, *, timeout: float | None = None) -> Future[Reply]:
        self.emulator.pause_core()
        return super().create_sensor_async(name, timeout=timeout)


def test_a_create_that_timed_out_is_never_repeated_blindly(settings: AgentSettings, emulator: Emulator,
                                                           tmp_path: Path) -> None:
    mapping_dir = tmp_path / "state"
    losing = LosingCreates(settings, emulator)
    losing.connect(WAIT_S)
    try:
        with pytest.raises(ReconcileAborted):
            Reconciler(losing, InventoryMapping(mapping_dir, losing.client_id)).reconcile(SPECS, {}, 1)
    finally:
        emulator.resume_core()
        losing.close()
    with AgentClient(settings, request_timeout=WAIT_S) as client:
        reconciler = Reconciler(client, InventoryMapping(mapping_dir, client.client_id))
        reconciler.reconcile(SPECS, {}, generation=2)  # lists first: the lost create is found by name
        assert reconciler.created_sensors == 0 and reconciler.created_metrics == 2
        assert [s["name"] for s in held(emulator, client)] == ["Air"]


def test_name_and_annotation_changes_are_updates_only_when_different(client: AgentClient, emulator: Emulator,
                                                                     tmp_path: Path) -> None:
    mapping = InventoryMapping(tmp_path, client.client_id)
    before = Reconciler(client, mapping).reconcile(SPECS, {}, generation=1)
    changed = SensorSpec("Air", (MetricSpec("temperature", "Air temperature", unit="SI.Temperature.CELSIUS"),
                                 MetricSpec("light", "Light", value_type="double", annotation="klx")))
    reconciler = Reconciler(client, mapping)
    after = reconciler.reconcile({"Air": changed}, {}, generation=2)
    assert after.metrics == before.metrics and reconciler.updates == 2 and reconciler.created_metrics == 0
    assert shape(held(emulator, client)) == [("Air", [("Air temperature", "SI.Temperature.CELSIUS"),
                                                      ("Light", "double:klx")])]
    unchanged = Reconciler(client, mapping)
    unchanged.reconcile({"Air": changed}, {}, generation=3)
    assert unchanged.updates == 0


def test_a_unit_change_keeps_the_old_metric_for_queued_samples(client: AgentClient, emulator: Emulator,
                                                               tmp_path: Path) -> None:
    mapping = InventoryMapping(tmp_path, client.client_id)
    before = Reconciler(client, mapping).reconcile(SPECS, {}, generation=1)
    old_identity = ("temperature", "unit:SI.Temperature.CELSIUS")
    kelvin = SensorSpec("Air", (MetricSpec("temperature", "Temperature", value_type="double", annotation="K"),
                                AIR.metrics[1]))
    after = Reconciler(client, mapping).reconcile({"Air": kelvin}, {"Air": {old_identity}}, generation=2)
    assert after.metrics[("Air", *old_identity)] == before.metrics[("Air", *old_identity)]
    assert ("Air", "temperature", "type:double") in after.metrics
    assert len(held(emulator, client)[0]["metrics"]) == 3


def test_concurrent_mapping_writers_never_tear_the_file(tmp_path: Path) -> None:
    """The bridge and ``inventory --prune`` save one mapping at once: every read sees a whole
    file, no writer fails, no temporary file stays behind."""
    client_id = "c" * 32
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def writer(name: str) -> None:
        mapping = InventoryMapping(tmp_path, client_id)
        try:
            start.wait(WAIT_S)
            for i in range(150):
                mapping.set_sensor(name, f"{name}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("bridge", "prune")]
    for thread in threads:
        thread.start()
    start.wait(WAIT_S)
    reads = 0
    while any(t.is_alive() for t in threads):
        with contextlib.suppress(FileNotFoundError):
            document = json.loads(mapping_path(tmp_path, client_id).read_text())
            assert document["clientId"] == client_id
            reads += 1
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(mapping_path(tmp_path, client_id).read_text())["clientId"] == client_id
    assert [p.name for p in tmp_path.iterdir()] == [mapping_path(tmp_path, client_id).name]


def test_a_stale_temporary_does_not_block_saving(tmp_path: Path) -> None:
    client_id = "d" * 32
    path = mapping_path(tmp_path, client_id)
    path.with_name(path.name + ".new").mkdir()  # left by an older version, or anything else
    mapping = InventoryMapping(tmp_path, client_id)
    mapping.set_sensor("Air", "s1")
    assert InventoryMapping(tmp_path, client_id).sensor_id("Air") == "s1"


def test_prune_candidates_are_unmapped_sensors_not_in_the_profile(tmp_path: Path) -> None:
    mapping = InventoryMapping(tmp_path, "c")
    mapping.set_sensor("Air", "s1")
    listing = [{"sensorId": "s1", "name": "Air renamed at the agent"}, {"sensorId": "s2", "name": "Door"},
               {"sensorId": "s3", "name": "Soil"}]
    assert prune_candidates(listing, mapping, ["Air", "Soil"]) == [("s2", "Door")]


def _profile_with(path: Path, state_dir: Path, names: list[str]) -> Path:
    """A real profile file, as `--prune` reads it: its [[sensor]] names and [bridge] state_dir."""
    sensors = "".join(f'\n[[sensor]]\nname = "{name}"\ndriver = "cpu_temperature"\ninterval = "1m"\n'
                      for name in names)
    path.write_text(f'[agent]\nclient_name = "pibridge"\n\n[bridge]\nstate_dir = "{state_dir}"\n{sensors}')
    return path


def test_prune_refuses_while_samples_wait_then_deletes(settings: AgentSettings, emulator: Emulator,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    door = SensorSpec("Door", (MetricSpec("open", "Open", value_type="bool", annotation="open"),))
    with AgentClient(settings, request_timeout=WAIT_S) as client:
        mapping = InventoryMapping(state, client.client_id)
        Reconciler(client, mapping).reconcile({"Air": AIR, "Door": door}, {}, 1)
        cid = client.client_id
    with SampleQueue(state) as queue:
        queue.put(TakenSample("Door", {"open": True}, 1_700_000_000_000, 0.0, queue.boot_id))
    profile_file = _profile_with(tmp_path / "greenhouse.toml", state, ["Air"])
    flags = ["--profile", str(profile_file), "--cert-folder", str(settings.cert_folder), "--host",
             settings.host, "--port", str(settings.port), "--ca-file", str(settings.ca_file)]
    assert main(["inventory", "--prune", "--yes", *flags]) == 1
    assert "refusing to prune: 1 sample of sensor 'Door'" in capsys.readouterr().err
    with SampleQueue(state) as queue:
        queue.ack([r.id for r in queue.fetch(0, 10)])
    assert main(["inventory", "--prune", *flags]) == 1  # no terminal and no --yes
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Terminal(""))  # Ctrl-D at the prompt
    assert main(["inventory", "--prune", *flags]) == 1
    out = capsys.readouterr()
    assert "nothing deleted" in out.out and "Traceback" not in out.err
    assert main(["inventory", "--prune", "--yes", *flags]) == 0
    assert "deleted sensor 'Door'" in capsys.readouterr().out
    sensors = next(c for c in emulator.dump()["clients"] if c["clientId"] == cid)["sensors"]
    assert [s["name"] for s in sensors] == ["Air"]
    assert InventoryMapping(state, cid).sensor_names() == ["Air"]
    assert main(["inventory", "--prune", "--yes", *flags]) == 0
    assert "nothing to prune" in capsys.readouterr().out


class _Terminal(io.StringIO):
    """stdin as a terminal the user types ``text`` into."""

    def isatty(self) -> bool:
        return True


def test_prune_needs_a_profile(settings: AgentSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "--prune", "--yes", "--cert-folder", str(settings.cert_folder)]) == 1
    assert "--prune needs --profile" in capsys.readouterr().err


def test_prune_refuses_when_the_queue_cannot_be_read(settings: AgentSettings, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    with AgentClient(settings, request_timeout=WAIT_S) as client:
        Reconciler(client, InventoryMapping(state, client.client_id)).reconcile(SPECS, {}, 1)
    (state / "queue.sqlite3").write_bytes(b"this is not a database" * 100)
    profile_file = _profile_with(tmp_path / "greenhouse.toml", state, ["Soil"])  # a profile needs a sensor
    flags = ["--profile", str(profile_file), "--cert-folder", str(settings.cert_folder), "--host",
             settings.host, "--port", str(settings.port), "--ca-file", str(settings.ca_file)]
    assert main(["inventory", "--prune", "--yes", *flags]) == 1
    assert "cannot read the queue" in capsys.readouterr().err
