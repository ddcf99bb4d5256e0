"""The delivery thread against the real emulator: drain, outages (core paused, broker restarted,
emulator stopped and wiped), restarts, renames, unit changes, rejections and dead letters,
re-provisioning, sensor error reports, and the failure classification table."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import core_spy, raw_session, settings_for

from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentSettings,
    ConnectionErrorKind,
    CredentialFiles,
    ProtocolError,
    RequestTimeout,
    provision,
    reply_error,
)
from pibridge.agent.credentials import CLIENT_ID_FILE
from pibridge.bridge.delivery import Delivery, Outcome, classify
from pibridge.bridge.inventory import InventoryMapping, ResolvedInventory, mapping_path
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample, Value
from pibridge.bridge.queue import QueuedSample, SampleQueue
from pibridge.mqtt import Backoff
from pibridge.profile import BridgeSettings
from pibridge.testing import Emulator

WAIT_S = 30.0
REQUEST_TIMEOUT_S = 1.0
FAST = Backoff(initial=0.05, cap=0.5)
T0_MS = 1_700_000_000_000
BOOT = "boot-test"

AIR = SensorSpec("Air", (MetricSpec("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
                         MetricSpec("humidity", "Humidity", unit="NoSI.Dimensionless.PERCENT")))
DOOR = SensorSpec("Door", (MetricSpec("open", "Door open", value_type="bool", annotation="open"),))
COUNTER = SensorSpec("Counter", (MetricSpec("count", "Count", value_type="integer", annotation="pulses"),))
SPECS = {s.name: s for s in (AIR, DOOR)}


def air(i: int) -> TakenSample:
    return TakenSample("Air", {"temperature": 20.0 + i / 10, "humidity": 40.0 + i % 7}, T0_MS + i * 1000,
                       float(i), BOOT)


def door(i: int) -> TakenSample:
    return TakenSample("Door", {"open": i % 2 == 0}, T0_MS + i * 1000 + 1, float(i), BOOT, event=True)


class Bridge:
    """A queue + delivery in one state directory, restartable like the bridge process."""

    def __init__(self, emulator: Emulator, base: Path, specs: dict[str, SensorSpec], **agent: Any) -> None:
        self.emulator = emulator
        self.base = base
        self.settings = settings_for(emulator, base / "certs", **agent)
        self.bridge_settings = BridgeSettings(state_dir=base / "state", inventory_check_s=3600.0)
        self.specs = specs
        self.queue: SampleQueue | None = None
        self.delivery: Delivery | None = None

    def start(self, specs: dict[str, SensorSpec] | None = None) -> Delivery:
        self.specs = specs or self.specs
        self.queue = SampleQueue(self.bridge_settings.state_dir, boot_id=BOOT)
        self.delivery = Delivery(self.settings, self.bridge_settings, self.queue, specs=self.specs,
                                 request_timeout=REQUEST_TIMEOUT_S, retry_backoff=FAST, connect_backoff=FAST)
        self.delivery.start()
        return self.delivery

    def stop(self) -> None:
        if self.delivery is not None:
            self.delivery.stop(5.0)
        if self.queue is not None:
            self.queue.close()
        self.delivery = self.queue = None

    def put(self, samples: list[TakenSample]) -> None:
        assert self.queue is not None
        for sample in samples:
            self.queue.put(sample)

    def drained(self) -> None:
        assert self.delivery is not None
        assert self.delivery.wait_drained(WAIT_S), self.delivery.status()
        assert self.queue is not None
        stats = self.queue.stats()
        assert stats.depth == stats.unstamped  # all that has a wall-clock time went out

    def held(self) -> dict[str, Any]:
        """The client's sensors as the emulator holds them: {sensor name: [sensor dicts]}."""
        client_id = self.delivery.client.client_id if self.delivery and self.delivery.client else None
        out: dict[str, Any] = {}
        for client in self.emulator.dump()["clients"]:
            if client_id is None or client["clientId"] == client_id:
                for sensor in client["sensors"]:
                    out.setdefault(sensor["name"], []).append(sensor)
        return out


@pytest.fixture
def make_bridge(emulator: Emulator, tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    made: list[Bridge] = []

    def make(specs: dict[str, SensorSpec] = SPECS, emulator_: Emulator | None = None, **agent: Any) -> Bridge:
        bridge = Bridge(emulator_ or emulator, tmp_path / f"bridge{len(made)}", specs, **agent)
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        bridge.stop()


def values_of(sensor: dict[str, Any], metric_name: str) -> list[tuple[int, Any]]:
    metric = next(m for m in sensor["metrics"] if m["name"] == metric_name)
    return [(v["timestamp"], v["value"]) for v in metric["values"]]


def test_drain_delivers_every_sample_once_with_its_timestamp(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    bridge.start()
    bridge.put([air(i) for i in range(200)] + [door(i) for i in range(10)])
    bridge.drained()
    held = bridge.held()
    assert sorted(held) == ["Air", "Door"] and len(held["Air"]) == 1 and len(held["Door"]) == 1
    assert values_of(held["Air"][0], "Temperature") == [(T0_MS + i * 1000, 20.0 + i / 10) for i in range(200)]
    assert values_of(held["Air"][0], "Humidity") == [(T0_MS + i * 1000, 40.0 + i % 7) for i in range(200)]
    assert values_of(held["Door"][0], "Door open") == [(T0_MS + i * 1000 + 1, i % 2 == 0) for i in range(10)]
    status = bridge.delivery.status() if bridge.delivery else None
    assert status is not None and status.pushed == 210 and status.queue_depth == 0 and status.connected


def test_restart_creates_nothing_new_and_delivers_what_was_queued(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    before = bridge.held()
    bridge.stop()
    # queued while the bridge is down: delivered by the next run
    bridge.queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)
    bridge.put([air(i) for i in range(1, 50)])
    bridge.queue.close()
    bridge.start()
    bridge.drained()
    after = bridge.held()
    ids = lambda held: {(s["sensorId"], tuple(m["metricId"] for m in s["metrics"]))  # noqa: E731
                        for sensors in held.values() for s in sensors}
    assert ids(after) == ids(before)
    assert len(values_of(after["Air"][0], "Temperature")) == 50


def test_core_paused_then_resumed_loses_nothing(make_bridge: Callable[..., Bridge],
                                                emulator: Emulator) -> None:
    bridge = make_bridge()
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    emulator.pause_core()
    try:
        bridge.put([air(i) for i in range(1, 100)])
        assert delivery.wait_until(lambda: delivery.resent > 0, WAIT_S)  # pushes timed out meanwhile
    finally:
        emulator.resume_core()
    bridge.put([air(i) for i in range(100, 120)])
    bridge.drained()
    held = bridge.held()
    assert len(held["Air"]) == 1 and len(held["Air"][0]["metrics"]) == 2
    assert [t for t, _ in values_of(held["Air"][0], "Temperature")] == [T0_MS + i * 1000 for i in range(120)]


def test_broker_restart_loses_nothing_and_duplicates_nothing(make_bridge: Callable[..., Bridge],
                                                             emulator: Emulator) -> None:
    bridge = make_bridge()
    delivery = bridge.start()
    bridge.put([air(i) for i in range(100)])
    emulator.restart_broker()
    bridge.put([air(i) for i in range(100, 200)])
    bridge.drained()
    held = bridge.held()
    assert len(held["Air"]) == 1 and len(held["Air"][0]["metrics"]) == 2 and "Door" in held
    assert [t for t, _ in values_of(held["Air"][0], "Humidity")] == [T0_MS + i * 1000 for i in range(200)]
    assert delivery.reconciliations >= 1


@pytest.mark.parametrize("strict_ids", [False, True], ids=["implicit-creation", "strict-ids"])
def test_inventory_wiped_while_away_is_reconciled_without_orphans(
        make_bridge: Callable[..., Bridge], emulator_factory: Callable[..., Emulator],
        strict_ids: bool) -> None:
    emulator = emulator_factory(strict_ids=strict_ids)
    bridge = make_bridge(emulator_=emulator)
    delivery = bridge.start()
    bridge.put([air(0), door(0)])
    bridge.drained()
    old_ids = {s[0]["sensorId"] for s in bridge.held().values()}
    emulator.stop()
    emulator.wipe()
    bridge.put([air(i) for i in range(1, 30)] + [door(i) for i in range(1, 5)])
    emulator.start()
    bridge.drained()
    held = bridge.held()
    assert sorted(held) == ["Air", "Door"] and all(len(s) == 1 for s in held.values())  # no orphans
    assert {s[0]["sensorId"] for s in held.values()}.isdisjoint(old_ids)
    assert [len(m["values"]) for m in held["Air"][0]["metrics"]] == [29, 29]
    assert len(held["Door"][0]["metrics"]) == 1 and len(held["Door"][0]["metrics"][0]["values"]) == 4
    assert delivery.reconciliations >= 2


def test_renamed_metric_is_updated_not_duplicated(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    metric_ids = [m["metricId"] for m in bridge.held()["Air"][0]["metrics"]]
    bridge.stop()
    renamed = SensorSpec("Air", (MetricSpec("temperature", "Air temperature", unit="SI.Temperature.CELSIUS"),
                                 AIR.metrics[1]))
    bridge.start({"Air": renamed, "Door": DOOR})
    bridge.put([air(1)])
    bridge.drained()
    metrics = bridge.held()["Air"][0]["metrics"]
    assert [m["metricId"] for m in metrics] == metric_ids
    assert [m["name"] for m in metrics] == ["Air temperature", "Humidity"]
    assert len(metrics[0]["values"]) == 2


def test_unit_change_creates_a_new_metric_and_old_samples_go_to_the_old_one(
        make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    bridge.stop()
    bridge.queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)
    bridge.queue.set_specs(SPECS)
    bridge.put([air(1), air(2)])  # taken with the old unit, queued
    bridge.queue.close()
    kelvin = MetricSpec("temperature", "Temperature", value_type="double", annotation="K")
    changed = SensorSpec("Air", (kelvin, AIR.metrics[1]))
    bridge.start({"Air": changed, "Door": DOOR})
    bridge.put([air(3)])
    bridge.drained()
    metrics = bridge.held()["Air"][0]["metrics"]
    assert [(m["name"], m.get("valueUnit") or m.get("valueType"), len(m["values"])) for m in metrics] == [
        ("Temperature", "SI.Temperature.CELSIUS", 3), ("Humidity", "NoSI.Dimensionless.PERCENT", 4),
        ("Temperature", "double", 1)]


def test_rejected_and_refused_samples_go_to_dead_letters_and_the_queue_moves_on(
        make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge({"Counter": COUNTER, "Air": AIR})
    delivery = bridge.start()
    bridge.put([TakenSample("Counter", {"count": 1}, T0_MS, 0.0, BOOT),
                TakenSample("Counter", {"count": 2.5}, T0_MS + 1, 1.0, BOOT),          # → 11
                TakenSample("Air", {"temperature": math.nan, "humidity": 1.0}, T0_MS + 2, 2.0, BOOT),  # NaN
                TakenSample("Counter", {"count": 3}, T0_MS + 3, 3.0, BOOT),
                TakenSample("Air", {"temperature": 1.0, "humidity": 2.0}, T0_MS + 4, 4.0, BOOT)])
    bridge.drained()
    held = bridge.held()
    assert values_of(held["Counter"][0], "Count") == [(T0_MS, 1), (T0_MS + 3, 3)]
    assert values_of(held["Air"][0], "Temperature") == [(T0_MS + 4, 1.0)]
    assert bridge.queue is not None
    dead = bridge.queue.dead_letters()
    assert sorted((d["sensor"], d["timestamp_ms"]) for d in dead) == [("Air", T0_MS + 2),
                                                                       ("Counter", T0_MS + 1)]
    kinds = {d["kind"] for d in dead}
    assert kinds == {"agent error 11 ParameterIsNotAnInteger", "value refused by the client"}
    assert delivery.status().dead_lettered == {"agent error 11 ParameterIsNotAnInteger": 1,
                                               "value refused by the client": 1}


def test_a_backlog_goes_in_pushes_of_several_samples_and_a_refused_one_goes_alone(
        make_bridge: Callable[..., Bridge]) -> None:
    """Samples of one sensor waiting in the queue share pushes (a timestamp per value), and
    every one is stored under its own timestamp; a push the agent refuses for good is sent
    again sample by sample, so only the refused sample becomes a dead letter."""
    from pibridge.bridge.pushes import MAX_SAMPLES_PER_PUSH

    bridge = make_bridge({"Counter": COUNTER, "Air": AIR})
    bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    bridge.stop()
    count = 300
    queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)  # queued while stopped
    for i in range(1, count):
        queue.put(air(i))
        queue.put(TakenSample("Counter", {"count": 2.5 if i == 77 else i}, T0_MS + i * 1000, float(i), BOOT))
    queue.close()
    delivery = bridge.start()
    bridge.drained()
    held = bridge.held()
    stamps = [T0_MS + i * 1000 for i in range(count)]
    assert values_of(held["Air"][0], "Temperature") == [(t, 20.0 + i / 10) for i, t in enumerate(stamps)]
    assert values_of(held["Air"][0], "Humidity") == [(t, 40.0 + i % 7) for i, t in enumerate(stamps)]
    counted = [(t, i) for i, t in enumerate(stamps) if i not in (0, 77)]  # 0: never queued; 77: 2.5
    assert values_of(held["Counter"][0], "Count") == counted
    assert bridge.queue is not None
    dead = [(d["sensor"], d["timestamp_ms"]) for d in bridge.queue.dead_letters()]
    assert dead == [("Counter", T0_MS + 77_000)]
    assert delivery.pushed == 2 * (count - 1) - 1
    # a push per MAX_SAMPLES_PER_PUSH samples and sensor, give or take partial ones, plus the
    # refused push's samples sent alone
    assert delivery.pushes_sent <= 2 * (count // MAX_SAMPLES_PER_PUSH + 4) + MAX_SAMPLES_PER_PUSH


def test_sample_of_a_sensor_without_id_goes_to_dead_letters(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    bridge.start()
    bridge.put([TakenSample("Gone", {"x": 1.0}, T0_MS, 0.0, BOOT), air(1)])
    bridge.drained()
    assert bridge.queue is not None
    assert [d["kind"] for d in bridge.queue.dead_letters()] == ["no agent id after reconciliation"]
    assert "Gone" not in bridge.held()


def test_sensor_removed_from_the_profile_still_delivers_its_queued_samples(
        make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    bridge.start()
    bridge.put([door(0)])
    bridge.drained()
    bridge.stop()
    bridge.queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)
    bridge.queue.set_specs(SPECS)
    bridge.put([door(1), door(2)])
    bridge.queue.close()
    bridge.start({"Air": AIR})  # Door gone from the profile
    bridge.drained()
    assert len(bridge.held()["Door"][0]["metrics"][0]["values"]) == 3


def test_injected_transient_errors_are_retried(make_bridge: Callable[..., Bridge],
                                               emulator_factory: Callable[..., Emulator]) -> None:
    emulator = emulator_factory(inject_errors=[(1, 0.2), (3, 0.1)], seed=7)
    bridge = make_bridge(emulator_=emulator)
    delivery = bridge.start()
    bridge.put([air(i) for i in range(100)])
    bridge.drained()
    assert delivery.resent > 0
    assert len(values_of(bridge.held()["Air"][0], "Temperature")) == 100


def test_forbidden_with_smart_reprovisions_and_delivers_under_the_new_client(
        make_bridge: Callable[..., Bridge], emulator: Emulator) -> None:
    bridge = make_bridge(provisioning="smart")
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    assert delivery.client is not None
    old_client = delivery.client.client_id
    _deprovision_behind_its_back(emulator, bridge.settings, old_client)
    bridge.put([air(i) for i in range(1, 20)])
    assert delivery.wait_until(lambda: delivery.client is not None and delivery.client.client_id != old_client
                               and delivery.client.connected, WAIT_S * 2)
    bridge.drained()
    clients = {c["clientId"]: c for c in emulator.dump()["clients"]}
    assert old_client not in clients
    new = clients[delivery.client.client_id]
    assert [s["name"] for s in new["sensors"]] == ["Air", "Door"]
    assert len(new["sensors"][0]["metrics"][0]["values"]) == 19


def test_forbidden_with_keep_keeps_samples_queued_and_says_what_to_do(
        make_bridge: Callable[..., Bridge], emulator: Emulator) -> None:
    bridge = make_bridge(provisioning="keep")
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    assert delivery.client is not None
    _deprovision_behind_its_back(emulator, bridge.settings, delivery.client.client_id)
    bridge.put([air(i) for i in range(1, 10)])
    assert delivery.wait_until(lambda: "provision --override" in delivery._problem, WAIT_S)
    assert bridge.queue is not None and bridge.queue.stats().depth == 9
    assert bridge.queue.dead_letters() == []


def _deprovision_behind_its_back(emulator: Emulator, settings: AgentSettings, client_id: str) -> None:
    """Another process deprovisions the client (the agent revokes its certificate)."""
    answers: list[str] = []
    session = raw_session(emulator, settings, on_message=lambda t, m: answers.append(t))
    try:
        base = f"/v1.0/{client_id}"
        session.subscribe([f"{base}/delete/info/inbox"])
        session.publish_and_wait(f"{base}/delete", b"{}")
    finally:
        session.close()


def test_sensor_errors_are_reported_at_sensor_or_client_level(make_bridge: Callable[..., Bridge],
                                                              emulator: Emulator) -> None:
    bridge = make_bridge()
    delivery = bridge.start()
    assert not delivery.report_sensor_error("Air", "before connecting")  # not connected: dropped
    bridge.put([air(0)])
    bridge.drained()
    assert delivery.client is not None
    cid = delivery.client.client_id
    sensor_id = bridge.held()["Air"][0]["sensorId"]
    spy, seen, event = core_spy(emulator, [f"/v1.0/{cid}/error", f"/v1.0/{cid}/sensor/+/error"])
    try:
        assert delivery.report_sensor_error("Air", "DHT22: checksum mismatch")
        assert delivery.report_sensor_error("Unregistered", "no such chip")
        deadline = time.monotonic() + WAIT_S
        while len(seen) < 2 and event.wait(max(0.0, deadline - time.monotonic())):
            event.clear()
    finally:
        spy.close()
    reports = {topic: json.loads(payload)["errorMessage"] for topic, payload in seen}
    assert reports == {f"/v1.0/{cid}/sensor/{sensor_id}/error": "DHT22: checksum mismatch",
                       f"/v1.0/{cid}/error": "Unregistered: no such chip"}


def test_stop_is_quick_and_leaves_unacknowledged_samples_queued(make_bridge: Callable[..., Bridge],
                                                                emulator: Emulator) -> None:
    bridge = make_bridge()
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    emulator.pause_core()
    try:
        bridge.put([air(i) for i in range(1, 30)])
        delivery.stop(5.0)
        assert delivery._thread is not None and not delivery._thread.is_alive()
        assert bridge.queue is not None and bridge.queue.stats().depth == 29
    finally:
        emulator.resume_core()


@pytest.mark.parametrize(("error", "outcome"), [
    *[(reply_error(code, "x"), Outcome.RETRY) for code in (0, 1, 2, 3, 42, 99)],
    *[(reply_error(code, "x"), Outcome.RECONCILE) for code in (15, 16)],
    (reply_error(18, "x"), Outcome.FORBIDDEN),
    *[(reply_error(code, "x"), Outcome.DEAD) for code in (*range(4, 15), 17, 19)],
    (RequestTimeout("no answer"), Outcome.RETRY),
    (ProtocolError("garbled"), Outcome.RETRY),
    *[(AgentConnectionError(kind, "localhost:1", "down"), Outcome.RECONNECT)
      for kind in (ConnectionErrorKind.LOST, ConnectionErrorKind.NOT_CONNECTED, ConnectionErrorKind.REFUSED,
                   ConnectionErrorKind.TIMEOUT)],
])
def test_classification(error: BaseException, outcome: Outcome) -> None:
    assert classify(error) is outcome


def test_the_bridge_process_never_imports_cryptography(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)  # here, in the test process; the bridge only reads the stored files
    caches = list(settings.cert_folder.rglob(CLIENT_ID_FILE))
    assert caches
    for cache in caches:  # as an SDK-provisioned or read-only folder: no client-id cache
        cache.unlink()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pibridge.agent import AgentSettings
        from pibridge.bridge.delivery import Delivery
        from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
        from pibridge.bridge.queue import SampleQueue
        from pibridge.profile import BridgeSettings
        settings = AgentSettings(host={settings.host!r}, port={settings.port},
                                 provision_port={settings.provision_port},
                                 ca_file=Path({str(settings.ca_file)!r}),
                                 cert_folder=Path({str(settings.cert_folder)!r}))
        spec = SensorSpec("Air", (MetricSpec("t", "Temperature", unit="SI.Temperature.CELSIUS"),))
        queue = SampleQueue(Path({str(tmp_path / "state")!r}))
        delivery = Delivery(settings, BridgeSettings(state_dir=Path({str(tmp_path / "state")!r})), queue,
                            specs={{"Air": spec}})
        delivery.start()
        queue.put(TakenSample("Air", {{"t": 1.5}}, {T0_MS}, 0.0, queue.boot_id))
        assert delivery.wait_drained(30), delivery.status()
        delivery.stop()
        queue.close()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_samples_taken_before_the_clock_was_set_go_out_once_stamped(
        make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    delivery = bridge.start()
    unstamped: dict[str, Value] = {"temperature": 1.0, "humidity": 2.0}
    bridge.put([TakenSample("Air", unstamped, None, 10.0 + i, BOOT) for i in range(3)])
    bridge.put([air(100)])  # taken after the clock was set: goes out at once
    bridge.drained()  # everything that has a wall-clock time
    assert values_of(bridge.held()["Air"][0], "Temperature") == [(T0_MS + 100_000, 30.0)]
    assert bridge.queue is not None and bridge.queue.stats().unstamped == 3
    assert delivery.status().waiting_for_clock == 3
    offset = T0_MS - 5_000_000
    assert bridge.queue.resolve_timestamps(BOOT, offset) == 3
    bridge.drained()
    assert [t for t, _ in values_of(bridge.held()["Air"][0], "Temperature")] == [
        offset + 10_000, offset + 11_000, offset + 12_000, T0_MS + 100_000]


def test_unknown_ids_from_a_strict_agent_trigger_a_reconciliation(
        make_bridge: Callable[..., Bridge], emulator_factory: Callable[..., Emulator]) -> None:
    emulator = emulator_factory(strict_ids=True)
    bridge = make_bridge(emulator_=emulator)
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    emulator.wipe()  # behind the connected bridge's back: its ids are now unknown (15)
    bridge.put([air(i) for i in range(1, 20)])
    bridge.drained()
    held = bridge.held()
    assert len(held["Air"]) == 1 and len(values_of(held["Air"][0], "Temperature")) == 19
    assert delivery.reconciliations >= 2 and delivery.resent >= 1


def test_a_sensor_added_by_a_profile_reload_is_registered_and_delivered(
        make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge({"Air": AIR})
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    delivery.update_specs(SPECS)
    bridge.put([door(i) for i in range(3)])
    bridge.drained()
    assert len(bridge.held()["Door"][0]["metrics"][0]["values"]) == 3
    assert bridge.queue is not None and bridge.queue.dead_letters() == []


def test_credentials_removed_while_the_agent_is_down_are_provisioned_anew(
        make_bridge: Callable[..., Bridge], emulator: Emulator) -> None:
    """A reconnect attempt that fails for good (credentials gone: the link stops without a "down"
    event, it was down already) is noticed: the bridge provisions again and delivers."""
    bridge = make_bridge(provisioning="smart")
    delivery = bridge.start()
    bridge.put([air(0)])
    bridge.drained()
    emulator.stop()
    assert delivery.wait_until(lambda: delivery.client is None or not delivery.client.connected, WAIT_S)
    CredentialFiles(bridge.settings.cert_folder, bridge.settings.client_name).remove()
    # the link's next attempt cannot load the credentials: a fatal failure, no event
    assert delivery.wait_until(lambda: delivery.client is None or delivery.client.fatal_error is not None,
                               WAIT_S)
    emulator.start()
    bridge.put([air(1)])
    bridge.drained()
    assert delivery.client is not None
    held = {c["clientId"]: c for c in emulator.dump()["clients"]}
    assert values_of(held[delivery.client.client_id]["sensors"][0], "Temperature") == [(T0_MS + 1000, 20.1)]


def test_a_mapping_that_cannot_be_written_is_retried_and_the_thread_survives(
        make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    client_id = provision(bridge.settings).client_id
    blocked = mapping_path(bridge.bridge_settings.state_dir, client_id)
    blocked.mkdir(parents=True)  # the mapping cannot be replaced: as on a full or read-only disk
    delivery = bridge.start()
    bridge.put([air(0)])
    assert delivery.wait_until(lambda: "inventory mapping not written" in delivery.status().problem, WAIT_S)
    assert delivery._thread is not None and delivery._thread.is_alive()
    blocked.rmdir()  # space is back
    bridge.drained()
    assert delivery.status().problem == ""
    assert len(values_of(bridge.held()["Air"][0], "Temperature")) == 1


def test_smart_provisioning_that_keeps_the_certificate_does_not_spin(
        make_bridge: Callable[..., Bridge], emulator: Emulator) -> None:
    """The agent refuses the client, but the provisioning keeps its certificate (as the child
    does when the agent accepts it over TLS): the same clientId → wait, said once; no loop of
    provisionings."""
    bridge = make_bridge(provisioning="smart")
    client_id = provision(bridge.settings).client_id
    calls: list[str] = []

    def keeps_the_certificate(settings: AgentSettings) -> str:
        calls.append(settings.client_name)
        return "Client is already provisioned."

    bridge.queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)
    delivery = bridge.delivery = Delivery(
        bridge.settings, bridge.bridge_settings, bridge.queue, specs=bridge.specs,
        provisioner=keeps_the_certificate, request_timeout=REQUEST_TIMEOUT_S, retry_backoff=FAST,
        connect_backoff=FAST)
    _deprovision_behind_its_back(emulator, bridge.settings, client_id)  # its certificate is revoked
    delivery.start()
    bridge.put([air(0)])
    assert delivery.wait_until(lambda: "provisioning kept it" in delivery.status().problem, WAIT_S), \
        (calls, delivery.status())
    assert len(calls) == 1
    assert delivery.rejection.forbidden_until > 0  # waits FORBIDDEN_RETRY_S before trying again
    assert bridge.queue.stats().depth == 1


def test_a_reconciliation_never_writes_into_the_previous_clients_mapping(
        make_bridge: Callable[..., Bridge]) -> None:
    """The client reconnected under another clientId but its "up" has not reached the delivery
    thread yet: the reconciliation follows the client's id, not the mapping it still holds."""
    bridge = make_bridge()
    bridge.queue = SampleQueue(bridge.bridge_settings.state_dir, boot_id=BOOT)
    delivery = bridge.delivery = Delivery(bridge.settings, bridge.bridge_settings, bridge.queue,
                                          specs=bridge.specs, request_timeout=REQUEST_TIMEOUT_S)
    provision(bridge.settings)
    client = AgentClient(bridge.settings, request_timeout=REQUEST_TIMEOUT_S)
    try:
        client.connect(WAIT_S)
        old_id = "0" * 32
        delivery._mapping = InventoryMapping(bridge.bridge_settings.state_dir, old_id)
        delivery._connection.client = client
        delivery._connection._up = True  # as the link thread sets it, before the "up" message is handled
        delivery._reconcile()
        assert delivery._mapping is not None and delivery._mapping.client_id == client.client_id
        assert not mapping_path(bridge.bridge_settings.state_dir, old_id).exists()
        assert mapping_path(bridge.bridge_settings.state_dir, client.client_id).exists()
        assert delivery.reconciliations == 1
    finally:
        delivery._connection.client = None
        client.close()


def test_per_sample_bookkeeping_is_forgotten_once_a_sample_is_settled(
        make_bridge: Callable[..., Bridge]) -> None:
    """A sample whose ids were missing and then found, and one dead-lettered for another reason
    after meeting 15/16, leave nothing behind in the delivery's per-sample tables."""
    bridge = make_bridge()
    first = bridge.start()
    bridge.put([air(0), door(0)])
    bridge.drained()
    full = first._resolved
    assert full is not None
    first.stop(5.0)
    queue = bridge.queue
    assert queue is not None
    delivery = Delivery(bridge.settings, bridge.bridge_settings, queue, specs=bridge.specs,
                        request_timeout=REQUEST_TIMEOUT_S)
    client = AgentClient(bridge.settings, request_timeout=REQUEST_TIMEOUT_S)
    try:
        client.connect(WAIT_S)
        delivery._connection.client = client
        queue.put(door(1))
        without_door = ResolvedInventory(full.client_id, full.generation, dict(full.sensors),
                                         {k: v for k, v in full.metrics.items() if k[0] != "Door"})
        delivery._send(without_door)  # the inventory is older than the sample: no id yet
        assert len(delivery._ledger.missing_id_at) == 1
        delivery._send(full)  # found after the next reconciliation: pushed
        assert delivery._ledger.missing_id_at == {}
        while delivery._ledger.in_flight:
            message = delivery._inbox.get(timeout=WAIT_S)
            assert message is not None, "no answer to the push"
            delivery._handle(message)
        assert delivery.pushed == 1
        queue.put(TakenSample("Air", {"temperature": math.nan, "humidity": 1.0}, T0_MS + 9000, 9.0, BOOT))
        (row,) = [r for r in queue.fetch(0, 100) if r.timestamp_ms == T0_MS + 9000]
        delivery._ledger.unknown_id_hits[row.id] = 1  # it met a 15 before
        delivery._backlog.rewind()
        delivery._send(full)  # the client refuses NaN: dead letter
        delivery._flush()
        assert delivery._ledger.unknown_id_hits == {} and delivery._ledger.missing_id_at == {}
        assert [d["kind"] for d in queue.dead_letters()] == ["value refused by the client"]
    finally:
        delivery._connection.client = None
        client.close()


def test_samples_committed_after_catching_up_are_sent_without_reading_the_disk(
        make_bridge: Callable[..., Bridge]) -> None:
    """The queue hands each commit to delivery in memory: once delivery found nothing more on
    disk, it does not read back the rows it was just told about (issue 17)."""
    bridge = make_bridge()
    bridge.start()
    bridge.put([air(0), door(0)])
    bridge.drained()
    assert bridge.queue is not None
    fetches: list[int] = []
    fetch = bridge.queue.fetch

    def counted(after_id: int, limit: int) -> list[QueuedSample]:
        fetches.append(after_id)
        return fetch(after_id, limit)
    bridge.queue.fetch = counted  # type: ignore[method-assign]
    for i in range(1, 6):
        bridge.queue.put_many([air(i), door(i)])
        bridge.drained()
    held = bridge.held()
    assert [len(m["values"]) for m in held["Air"][0]["metrics"]] == [6, 6]
    assert len(held["Door"][0]["metrics"][0]["values"]) == 6
    assert fetches == []


@pytest.fixture
def unstarted_delivery(tmp_path: Path) -> Iterator[Delivery]:
    """A delivery that is never started, on a fresh queue: its steps driven by hand."""
    queue = SampleQueue(tmp_path / "state", boot_id=BOOT)
    try:
        yield Delivery(AgentSettings(cert_folder=tmp_path / "certs"),
                       BridgeSettings(state_dir=tmp_path / "state"), queue, specs={})
    finally:
        queue.close()


class RecordingInbox:
    """Stands in for the delivery's inbox: records how long the thread would wait, nothing comes."""

    timeout: float | None = None

    def waiting(self) -> int:
        return 0

    def wait(self, timeout: float, waiter: object = None) -> tuple[Any, ...] | None:
        self.timeout = timeout
        return None


def test_a_failing_reconciliation_does_not_make_the_delivery_thread_spin(
        unstarted_delivery: Delivery) -> None:
    """While a reconciliation keeps failing (a full disk: the mapping cannot be written) the
    verified inventory of the last good one stays, with its check and probe deadlines past: the
    thread must sleep until the reconciliation's retry, not wake at once for deadlines its step
    will not act on (it did: 100 % of a core until the disk had room)."""
    delivery = unstarted_delivery
    inbox = RecordingInbox()
    delivery._inbox = inbox  # type: ignore[assignment]
    delivery._connection.client = object()  # type: ignore[assignment]
    delivery._connection._up = True
    delivery._resolved = ResolvedInventory("c0ffee", generation=1)
    delivery._next_check = delivery.probe.due_at = 0.0   # both long past
    delivery.probe.acknowledged("Air")
    delivery._reconcile_failed("inventory mapping not written: No space left on device")
    assert delivery._next_message() == ("wake",)
    assert inbox.timeout is not None and inbox.timeout > 0.01


def test_an_unknown_id_answer_to_a_push_of_several_samples_sends_each_again_alone(
        unstarted_delivery: Delivery) -> None:
    """Error 15/16 to a push of several samples does not say whose id is unknown: each sample
    goes alone after the reconciliation, so only the culprit can run out of retries (all of
    them were dead-lettered together before)."""
    from concurrent.futures import Future

    from pibridge.agent import ErrorCode
    from pibridge.agent.errors import AgentReplyError

    delivery = unstarted_delivery
    samples = [QueuedSample(i, "Air", (), {"temperature": 20.0}, T0_MS + i, False) for i in (1, 2)]
    for sample in samples:
        delivery._ledger.carry(sample, 7)
    answer: Future[Any] = Future()
    answer.set_exception(AgentReplyError(ErrorCode.UnknownMetricId, "no such metric"))
    delivery._on_result(7, (1, 2), object(), answer)  # type: ignore[arg-type]
    assert delivery._ledger.alone == {1, 2} and delivery._need_reconcile
    assert delivery._backlog.again_ids() == {1, 2}


def test_a_push_that_fails_to_go_out_waits_for_the_backoff_instead_of_looping(
        unstarted_delivery: Delivery) -> None:
    """A push the client cannot even send (an unforeseen error, not a refused value) puts its
    samples back for the retry backoff: the fill stops there (it popped them again at once and
    spun in one `_send` for ever), and nothing stays in flight."""
    class Unsendable:
        calls = 0

        @contextlib.contextmanager
        def corked(self) -> Iterator[None]:
            yield

        def request_async(self, *args: Any, **kwargs: Any) -> Any:
            Unsendable.calls += 1
            raise RuntimeError("the client broke")

    delivery = unstarted_delivery
    delivery._connection.client = Unsendable()  # type: ignore[assignment]
    resolved = ResolvedInventory("c0ffee", 1, sensors={"Air": "s1"},
                                 metrics={("Air", "temperature", "unit:x"): "m1"})
    for i in range(1, 41):
        sample = QueuedSample(i, "Air", (("temperature", "unit:x"),), {"temperature": 20.0}, T0_MS + i,
                              False)
        delivery._backlog.again(sample)
    assert delivery._send(resolved) is False
    assert Unsendable.calls <= 2 and not delivery._ledger.in_flight   # (32 + 8 in the push being filled)
    assert delivery._backlog.again_count == 40 and delivery._retry_at > time.monotonic()


def test_a_failing_step_pauses_the_delivery_thread_instead_of_spinning(unstarted_delivery: Delivery) -> None:
    """While `_safe_step` waits after an unforeseen error, deadlines that are past (connect,
    reconcile) must not make the inbox wait return at once."""
    delivery = unstarted_delivery
    inbox = RecordingInbox()
    delivery._inbox = inbox  # type: ignore[assignment]
    delivery._connection.connect_at = 0.0                       # no client: connecting is long due
    delivery._step_error = "PermissionError: [Errno 13] Permission denied: 'certs'"
    delivery._step_retry_at = time.monotonic() + 2.0
    assert delivery._next_message() == ("wake",)
    assert inbox.timeout is not None and inbox.timeout > 1.0


def test_an_answer_settles_only_the_samples_its_own_push_still_carries(unstarted_delivery: Delivery) -> None:
    """A sample sent again (its first push's samples were put back, e.g. it failed to go out) is
    settled by its current push's answer only: a late answer of the earlier push, failed or not,
    must neither requeue it while it is in flight (it would be sent a third time and counted
    acknowledged twice) nor acknowledge it for the push still out."""
    from concurrent.futures import Future

    from pibridge.agent import AgentConnectionError, ConnectionErrorKind, Reply
    from pibridge.protocol import Op

    delivery = unstarted_delivery
    sample = QueuedSample(1, "Air", (), {"temperature": 20.0}, T0_MS, False)
    delivery._ledger.carry(sample, 2)          # carried by push 2 now
    stale: Future[Any] = Future()
    stale.set_exception(AgentConnectionError(ConnectionErrorKind.LOST, "agent", "dropped"))
    delivery._on_result(1, (1,), object(), stale)  # type: ignore[arg-type]
    assert delivery._ledger.in_flight == {1: (sample, 2)} and not delivery._backlog.again_count
    assert delivery.pushed == 0
    answered: Future[Any] = Future()
    answered.set_result(Reply(Op.PUSH, "topic", b"", None))
    delivery._on_result(2, (1,), object(), answered)  # type: ignore[arg-type]
    assert delivery._ledger.in_flight == {} and delivery.pushed == 1 and delivery._ledger.acked == [1]
