"""The agent client against the real emulator: every operation, FIFO matching under timeouts and
garbage, reconnects, connection failures, pipelining."""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import raw_session, settings_for, stored_sensors

from pibridge import protocol
from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentReplyError,
    AgentSettings,
    ConfigurationError,
    ConnectionErrorKind,
    ConnectionEvent,
    ErrorCode,
    LiveData,
    MetricDefinition,
    ProtocolError,
    RequestTimeout,
    UnknownMetricId,
    UnknownSensorId,
    provision,
)
from pibridge.testing import Emulator, free_port

WAIT_S = 20.0
SHORT_TIMEOUT_S = 0.3
IN_FLIGHT = 64
TIMESTAMP_MS = 1_700_000_000_000


def _stored_sensors(emulator: Emulator, client: AgentClient) -> list[dict[str, Any]]:
    """The client's sensors as the emulator stored them (its dump)."""
    return stored_sensors(emulator, client.client_id)


def _sensor_with_metrics(client: AgentClient) -> tuple[str, dict[str, str]]:
    sid = client.create_sensor("Greenhouse").created_sensor_id
    ids = client.create_metrics(sid, [
        MetricDefinition("Temperature", value_unit="SI.Temperature.CELSIUS"),
        MetricDefinition("Door", value_type="bool", value_annotation="open"),
    ]).metric_ids
    return sid, ids


def test_every_operation_round_trip(client: AgentClient, emulator: Emulator) -> None:
    assert client.ping().value["answer"].startswith("pibridge-")
    assert client.list_sensors().value == []
    created = client.create_sensor("Greenhouse")
    sid = created.created_sensor_id
    assert created.value == {"name": "Greenhouse", "sensorId": sid}
    assert created.raw.startswith(b"{") and created.topic.endswith("/sensor/inbox")
    door_definition = {"name": "Door", "valueType": "bool", "valueAnnotation": "open"}
    ids = client.create_metrics(sid, [MetricDefinition("Temperature", value_unit="SI.Temperature.CELSIUS"),
                                      door_definition]).metric_ids
    assert set(ids) == {"1", "2"}
    temperature, door = ids["1"], ids["2"]
    assert client.describe_metric(sid, temperature).value == {
        "metricId": temperature, "name": "Temperature", "valueUnit": "SI.Temperature.CELSIUS"}
    texts = {op: protocol.OPERATIONS[op].success_text for op in protocol.Op}
    assert client.push(sid, {temperature: 21.5, door: True}, TIMESTAMP_MS).value == texts[protocol.Op.PUSH]
    assert client.update_sensor(sid, "Glasshouse").value == texts[protocol.Op.UPDATE_SENSOR]
    assert client.update_metrics(sid, [{"metricId": door, "valueAnnotation": "closed"}]).value == \
        texts[protocol.Op.UPDATE_METRICS]
    assert client.describe_metric(sid, door).value["valueAnnotation"] == "closed"
    listed = client.list_sensors().value
    assert [(s["sensorId"], s["name"]) for s in listed] == [(sid, "Glasshouse")]
    assert sorted(m["metricId"] for m in listed[0]["metrics"]) == sorted(ids.values())
    client.report_error("sensor unplugged", int(ErrorCode.InternalError), sid)

    [sensor] = _stored_sensors(emulator, client)
    assert sensor["name"] == "Glasshouse"
    values = {m["metricId"]: m["values"] for m in sensor["metrics"]}
    assert values[temperature] == [{"timestamp": TIMESTAMP_MS, "value": 21.5}]
    assert values[door] == [{"timestamp": TIMESTAMP_MS, "value": True}]

    assert client.delete_metrics(sid, [door]).value == texts[protocol.Op.DELETE_METRICS]
    assert client.delete_sensor(sid).value == texts[protocol.Op.DELETE_SENSOR]
    assert client.list_sensors().value == []
    [report] = emulator.error_reports()
    assert (report["clientId"], report["sensorId"], report["metricId"]) == (client.client_id, sid, None)
    assert json.loads(report["payload"]) == {"errorcode": 3, "errorMessage": "sensor unplugged"}
    assert client.deprovision().value == texts[protocol.Op.DEPROVISION]
    assert client.client_id not in {c["clientId"] for c in emulator.dump()["clients"]}


def test_per_metric_timestamps_and_livedata(client: AgentClient, emulator: Emulator) -> None:
    sid, ids = _sensor_with_metrics(client)
    received: list[LiveData] = []
    heard = threading.Event()
    client.on_livedata(lambda data: (received.append(data), heard.set()))
    client.push(sid, [(ids["1"], 20.0, TIMESTAMP_MS + 1), (ids["2"], False, TIMESTAMP_MS + 2)])
    assert heard.wait(WAIT_S)
    assert received[0].sensor_id == sid and received[0].values == {ids["1"]: 20.0, ids["2"]: False}
    [sensor] = _stored_sensors(emulator, client)
    stamps = {m["metricId"]: [v["timestamp"] for v in m["values"]] for m in sensor["metrics"]}
    assert stamps == {ids["1"]: [TIMESTAMP_MS + 1], ids["2"]: [TIMESTAMP_MS + 2]}


def test_livedata_subscription_follows_listeners_across_reconnects(settings: AgentSettings,
                                                                  emulator: Emulator) -> None:
    """Livedata is subscribed only while someone listens, and renewed on every reconnect."""
    heard: queue.SimpleQueue[LiveData] = queue.SimpleQueue()
    client = AgentClient(settings, request_timeout=WAIT_S)
    remove = client.on_livedata(heard.put)  # before connect: subscribed when the link comes up
    client.connect(WAIT_S)
    try:
        sid, ids = _sensor_with_metrics(client)
        client.push(sid, {ids["1"]: 1.0}, TIMESTAMP_MS)
        assert heard.get(timeout=WAIT_S).values == {ids["1"]: 1.0}
        back_up = threading.Event()
        client.on_connection_change(lambda e: e.up and back_up.set())
        emulator.restart_broker()
        assert back_up.wait(WAIT_S)
        client.push(sid, {ids["1"]: 2.0}, TIMESTAMP_MS + 1)
        assert heard.get(timeout=WAIT_S).values == {ids["1"]: 2.0}
        remove()  # the last listener: unsubscribed
        client.push(sid, {ids["1"]: 3.0}, TIMESTAMP_MS + 2)
        # the emulator publishes a push's livedata right after its answer; one more round trip
        # through the same core makes sure that livedata was routed (to nobody) before we listen
        client.list_sensors()
        client.on_livedata(heard.put)  # subscribed again before it returns
        client.push(sid, {ids["1"]: 4.0}, TIMESTAMP_MS + 3)
        assert heard.get(timeout=WAIT_S).values == {ids["1"]: 4.0}
    finally:
        client.close()


def test_nan_and_infinity_are_refused_before_sending(client: AgentClient, emulator: Emulator) -> None:
    sid, ids = _sensor_with_metrics(client)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=ids["1"]):
            client.push(sid, {ids["1"]: bad})
    client.push(sid, {ids["1"]: 1.0}, TIMESTAMP_MS)  # the FIFO is not disturbed
    [sensor] = _stored_sensors(emulator, client)
    assert [m["values"] for m in sensor["metrics"] if m["metricId"] == ids["1"]] == [
        [{"timestamp": TIMESTAMP_MS, "value": 1.0}]]


def test_agent_errors_are_typed(client: AgentClient) -> None:
    sid, ids = _sensor_with_metrics(client)
    with pytest.raises(AgentReplyError) as caught:
        client.create_sensor("x")  # names are 2–64 characters
    assert caught.value.code is ErrorCode.OutOfRange and caught.value.code_name == "OutOfRange"
    with pytest.raises(AgentReplyError) as caught:
        client.create_metrics(sid, [MetricDefinition("Light", value_unit="SI.Illuminance.LUX")])
    assert caught.value.code is ErrorCode.UnknownValueUnit
    assert b'"errorcode":12' in caught.value.raw.replace(b" ", b"")
    with pytest.raises(UnknownMetricId):
        client.describe_metric(sid, "no-such-metric")
    with pytest.raises(UnknownSensorId):
        client.update_sensor("no-such-sensor", "Name")
    with pytest.raises(AgentReplyError) as caught:
        client.push(sid, {ids["2"]: "not a bool"})
    assert caught.value.code is ErrorCode.ParameterisNotABool


def test_strict_ids_push_to_a_stale_sensor(emulator_factory: Callable[..., Emulator], tmp_path: Path) -> None:
    strict = emulator_factory(strict_ids=True)
    settings = settings_for(strict, tmp_path / "certs")
    provision(settings)
    with AgentClient(settings) as client, pytest.raises(UnknownSensorId) as caught:
        client.push("stale-sensor", {"m": 1.0})
    assert caught.value.code == 15 and "stale-sensor" in caught.value.agent_message


def test_timeout_then_late_answer_does_not_shift_the_next(client: AgentClient, emulator: Emulator) -> None:
    emulator.pause_core()
    try:
        late_sensor = client.create_sensor_async("Late", timeout=WAIT_S)
        with pytest.raises(RequestTimeout):
            client.ping(timeout=SHORT_TIMEOUT_S)
        # a timeout drops the connection: everything outstanding fails with a connection error
        with pytest.raises(AgentConnectionError) as caught:
            late_sensor.result(WAIT_S)
        assert caught.value.kind is ConnectionErrorKind.LOST and "no answer within" in str(caught.value)
    finally:
        emulator.resume_core()
    # the late answers arrive before the new connection's barrier echo and are discarded
    assert client.wait_connected(WAIT_S)
    client.ping()
    assert client.create_sensor("OnTime").value["name"] == "OnTime"


def test_garbage_on_reply_topics_never_crashes_the_client(client: AgentClient, settings: AgentSettings,
                                                          emulator: Emulator) -> None:
    base = protocol.BASE.format(cid=client.client_id)
    sentinel = threading.Event()
    client.on_livedata(lambda data: sentinel.set())
    intruder = raw_session(emulator, settings)
    try:
        # nothing waits: ignored; the livedata sentinel (same publisher, so delivered after it)
        # shows the garbage was handled before we go on
        ping_inbox = protocol.topic(protocol.OPERATIONS[protocol.Op.PING].success, client.client_id)
        intruder.publish_and_wait(ping_inbox, b"\xff not json")
        intruder.publish_and_wait(protocol.topic(protocol.LIVEDATA, client.client_id, "s"),
                                  b'{"metrics":[{"metricId":"m","value":1}],"timestamp":1}')
        assert sentinel.wait(WAIT_S)
        client.ping()

        # while the core is paused the forged answers are the first on their keys: they are
        # taken, provisionally (R7 of pibridge.agent.pending), and settle once the core echoes the
        # barrier sent after them; the core's own answers come before that echo and are ignored
        emulator.pause_core()
        try:
            waiting = client.create_sensor_async("Victim")
            wrong_error = client.list_sensors_async()
            intruder.publish_and_wait(f"{base}/sensor/inbox", b"this is not JSON")
            intruder.publish_and_wait(f"{base}/inventory/error/inbox", b'{"errorMessage":"no code"}')
            assert not waiting.done() and not wrong_error.done()
        finally:
            emulator.resume_core()
        with pytest.raises(ProtocolError) as caught:
            waiting.result(WAIT_S)
        assert caught.value.raw == b"this is not JSON"
        with pytest.raises(ProtocolError):
            wrong_error.result(WAIT_S)
    finally:
        intruder.close()
    assert client.ping().value["answer"]  # a different FIFO: unaffected, network thread alive
    assert client.connected


def test_reconnects_and_resubscribes_after_a_broker_restart(client: AgentClient, emulator: Emulator) -> None:
    events: list[ConnectionEvent] = []
    back_up = threading.Event()
    client.on_connection_change(lambda e: (events.append(e), e.up and back_up.set()))
    emulator.restart_broker()
    assert back_up.wait(WAIT_S)
    assert [e.up for e in events] == [False, True]
    assert events[0].error is not None and events[0].error.kind is ConnectionErrorKind.LOST
    client.ping()  # the answer arrives only if the subscriptions were renewed
    sid, ids = _sensor_with_metrics(client)
    client.push(sid, {ids["1"]: 3.0})


def test_outstanding_requests_fail_on_disconnect_and_are_not_resent(
        client: AgentClient, settings: AgentSettings, emulator: Emulator) -> None:
    back_up = threading.Event()
    went_down = threading.Event()
    client.on_connection_change(lambda e: (back_up if e.up else went_down).set())
    emulator.pause_core()
    try:
        pending = client.create_sensor_async("Orphan", timeout=WAIT_S)
        # mosquitto drops the older of two sessions with one MQTT client id: our connection
        usurper = raw_session(emulator, settings, client_id=client.mqtt_client_id)
        assert went_down.wait(WAIT_S)
        usurper.close()
        with pytest.raises(AgentConnectionError) as caught:
            pending.result(WAIT_S)
        assert caught.value.kind is ConnectionErrorKind.LOST
    finally:
        emulator.resume_core()
    assert back_up.wait(WAIT_S) and client.wait_connected(WAIT_S)
    sensors = client.list_sensors().value
    # the create request reached the agent once (before the drop) and was not re-sent
    assert [s["name"] for s in sensors].count("Orphan") <= 1


def test_pipelined_pushes(client: AgentClient, emulator: Emulator) -> None:
    sid, ids = _sensor_with_metrics(client)
    futures = [client.push_async(sid, {ids["1"]: float(i)}, TIMESTAMP_MS + i) for i in range(IN_FLIGHT)]
    assert {f.result(WAIT_S).value for f in futures} == {"Sensor was updated."}
    [sensor] = _stored_sensors(emulator, client)
    [values] = [m["values"] for m in sensor["metrics"] if m["metricId"] == ids["1"]]
    in_time_order = sorted(values, key=lambda v: v["timestamp"])
    assert [v["value"] for v in in_time_order] == [float(i) for i in range(IN_FLIGHT)]


def test_request_timeout_when_the_agent_does_not_answer(client: AgentClient, emulator: Emulator) -> None:
    emulator.pause_core()
    try:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match="no answer"):
            client.list_sensors(timeout=SHORT_TIMEOUT_S)
        assert time.monotonic() - started < WAIT_S
    finally:
        emulator.resume_core()


def test_unreachable_agent_is_refused_with_advice(settings: AgentSettings) -> None:
    port = free_port()
    nowhere = AgentSettings(host="127.0.0.1", port=port, ca_file=settings.ca_file,
                            cert_folder=settings.cert_folder)
    with pytest.raises(AgentConnectionError) as caught:
        AgentClient(nowhere).connect(WAIT_S)
    assert caught.value.kind is ConnectionErrorKind.REFUSED
    assert f"127.0.0.1:{port} (connection refused)" in str(caught.value) and "running?" in str(caught.value)


def test_requests_without_connection_fail_fast(settings: AgentSettings) -> None:
    client = AgentClient(settings)
    with pytest.raises(AgentConnectionError):
        client.ping()


def test_close_from_another_thread_ends_a_waiting_connect(settings: AgentSettings) -> None:
    """connect(persist=True) keeps retrying an agent that is down; close() from another thread
    (TVCMI_client.disconnect_api does this) must end that wait at once, not after its timeout."""
    nowhere = AgentSettings(host="127.0.0.1", port=free_port(), ca_file=settings.ca_file,
                            cert_folder=settings.cert_folder)
    client = AgentClient(nowhere)
    outcome: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def connect() -> None:
        try:
            client.connect(3600.0, persist=True)
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    assert not client.wait_connected(0.2)  # retrying, not connected
    client.close()
    error = outcome.get(timeout=WAIT_S)  # long before the hour-long connect timeout
    assert isinstance(error, AgentConnectionError) and "closed while connecting" in str(error)


def test_unreadable_key_is_a_setting_to_fix_not_a_retry(settings: AgentSettings) -> None:
    key = settings.cert_folder / f"{settings.client_name}-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigurationError, match=r"cannot load certificate \S+-cert\.pem with key \S+-key"):
        AgentClient(settings).connect(WAIT_S)


def test_a_timeout_noticed_after_its_connection_was_replaced_does_not_drop_the_new_one(
        client: AgentClient) -> None:
    """The deadline thread fails a request, then drops the connection; if the connection was
    replaced meanwhile (its requests failed with it), the new one stays up."""
    from concurrent.futures import Future

    from pibridge.agent.pending import PendingRequest

    current = client._pending.generation
    stale = PendingRequest((protocol.Op.PING, "", ""), Future(), 1.0, "ping of a connection gone",
                           generation=current - 1)
    client._timed_out([stale])
    assert client.connected and client.ping().value["answer"]
    went_down = threading.Event()
    client.on_connection_change(lambda e: e.up or went_down.set())
    client._timed_out([PendingRequest((protocol.Op.PING, "", ""), Future(), 1.0, "ping", generation=current)])
    assert went_down.wait(WAIT_S)  # the same generation: dropped (R4)
