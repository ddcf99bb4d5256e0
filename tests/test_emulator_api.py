"""The emulator's API against the real process: every operation, alias and error code."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from emulator_helpers import ApiClient, error_of, make_metrics, make_sensor, new_client, ok, t

from pibridge import protocol as p
from pibridge.protocol import ErrorCode as E
from pibridge.protocol import Op
from pibridge.testing import Emulator

TS = 1_700_000_000_000


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("shared-emulator"))
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def client(shared: Emulator, tmp_path: Path) -> Iterator[ApiClient]:
    c = new_client(shared, tmp_path)
    yield c
    c.close()


def test_round_trip_of_every_operation(client: ApiClient) -> None:
    b = client.base()
    assert json.loads(ok(client, Op.PING, b + "/ping", {"request": "tok-1"})) == {"answer": "tok-1"}
    assert json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {})) == []
    created = json.loads(ok(client, Op.CREATE_SENSOR, t(client, Op.CREATE_SENSOR), {"name": "Kitchen"}))
    sid = created["sensorId"]
    assert created["name"] == "Kitchen" and p.CLIENT_ID_RE.match(sid)
    assert ok(client, Op.UPDATE_SENSOR, t(client, Op.UPDATE_SENSOR, sid=sid), {"name": "Cellar"}, sid) \
        == b"Sensor was changed."
    answer = json.loads(ok(client, Op.CREATE_METRICS, t(client, Op.CREATE_METRICS, sid=sid), {"metrics": [
        {"matchingId": "b", "name": "Temperature", "valueUnit": "SI.Temperature.CELSIUS"},
        {"matchingId": 7, "name": "Door", "valueType": "bool", "valueAnnotation": "open"}]}, sid))
    assert [a["matchingId"] for a in answer] == ["b", "7"]
    temp, door = (a["metricId"] for a in answer)
    describe = t(client, Op.DESCRIBE_METRIC, sid=sid, mid=door)
    assert json.loads(ok(client, Op.DESCRIBE_METRIC, describe, {}, sid, door)) == {
        "metricId": door, "name": "Door", "valueType": "bool", "valueAnnotation": "open"}
    assert json.loads(ok(client, Op.DESCRIBE_METRIC, t(client, Op.DESCRIBE_METRIC, sid=sid, mid=temp), {},
                         sid, temp)) == {"metricId": temp, "name": "Temperature",
                                         "valueUnit": "SI.Temperature.CELSIUS"}
    assert ok(client, Op.UPDATE_METRICS, t(client, Op.UPDATE_METRICS, sid=sid),
              {"metrics": [{"metricId": door, "name": "Front door", "valueAnnotation": "closed"}]}, sid) \
        == b"All metrics were successfully modified."
    assert json.loads(ok(client, Op.DESCRIBE_METRIC, describe, {}, sid, door))["valueAnnotation"] == "closed"
    assert ok(client, Op.PUSH, t(client, Op.PUSH, sid=sid),
              {"metrics": [{"metricId": temp, "value": 21.5}, {"metricId": door, "value": True}],
               "timestamp": TS}, sid) == b"Sensor was updated."
    listing = json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {}))
    assert listing == [{"sensorId": sid, "name": "Cellar", "store": True, "metrics": [
        {"metricId": temp, "link": t(client, Op.DESCRIBE_METRIC, sid=sid, mid=temp)},
        {"metricId": door, "link": describe}]}]
    assert ok(client, Op.DELETE_METRICS, t(client, Op.DELETE_METRICS, sid=sid),
              {"metrics": [{"metricId": door}]}, sid) == b"All metrics were successfully deleted."
    deleted = ok(client, Op.DELETE_SENSOR, t(client, Op.DELETE_SENSOR, sid=sid), {}, sid)
    assert deleted == b"Sensor was deleted."
    assert json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {})) == []


def test_every_alias(client: ApiClient) -> None:
    assert json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS, "alias0"), {})) == []
    sid = make_sensor(client)
    answer = json.loads(ok(client, Op.CREATE_METRICS, t(client, Op.CREATE_METRICS, "alias0", sid=sid),
                           {"metrics": [{"matchingId": "1", "name": "Lux", "valueType": "double",
                                         "valueAnnotation": "lx"}]}, sid))
    mid = answer[0]["metricId"]
    assert ok(client, Op.PUSH, t(client, Op.PUSH, "alias0", sid=sid),
              {"metrics": [{"metricId": mid, "value": 3}], "timestamp": TS}, sid) == b"Sensor was updated."
    assert all(len(o.aliases) <= 1 for o in p.OPERATIONS.values())


def _setup(client: ApiClient) -> tuple[str, str, str, str, str]:
    sid = make_sensor(client)
    dbl, flag, count, text = make_metrics(
        client, sid, {"name": "Temp", "valueUnit": "SI.Temperature.CELSIUS"},
        {"name": "Flag", "valueType": "bool"}, {"name": "Count", "valueType": "integer"},
        {"name": "Text", "valueType": "string"})
    return sid, dbl, flag, count, text


def test_error_codes_4_to_19(client: ApiClient) -> None:
    sid, dbl, flag, count, text = _setup(client)
    ping, create_s = t(client, Op.PING), t(client, Op.CREATE_SENSOR)
    cm, push, um = (t(client, o, sid=sid) for o in (Op.CREATE_METRICS, Op.PUSH, Op.UPDATE_METRICS))
    assert error_of(client, Op.PING, ping, b"{not json") == E.InvalidJson
    assert error_of(client, Op.PING, ping, b"[1, 2]") == E.JsonIsNotAObject
    assert error_of(client, Op.CREATE_SENSOR, create_s, {}) == E.MissingParameter
    assert error_of(client, Op.CREATE_SENSOR, create_s, {"name": 5}) == E.ParameterIsNotAString
    assert error_of(client, Op.PUSH, push, {"metrics": [{"metricId": dbl, "value": "warm"}]}, sid) \
        == E.ParameterIsNotANumber
    assert error_of(client, Op.PUSH, push, {"metrics": [{"metricId": flag, "value": 1}]}, sid) \
        == E.ParameterisNotABool
    assert error_of(client, Op.CREATE_METRICS, cm, {"metrics": {"a": 1}}, sid) == E.ParameterIsNotAnArray
    assert error_of(client, Op.PUSH, push, {"metrics": [{"metricId": count, "value": 1.5}]}, sid) \
        == E.ParameterIsNotAnInteger
    assert error_of(client, Op.CREATE_METRICS, cm, {"metrics": [
        {"matchingId": "1", "name": "X1", "valueUnit": "SI.Temperature.KELVIN"}]}, sid) == E.UnknownValueUnit
    assert error_of(client, Op.CREATE_METRICS, cm, {"metrics": [
        {"matchingId": "1", "name": "X1", "valueType": "boolean"}]}, sid) == E.UnknownMetricType
    assert error_of(client, Op.CREATE_METRICS, cm, {"metrics": [{"matchingId": "1", "name": "X1"}]}, sid) \
        == E.ValueUnitOrValueTypeHasToBeProvided
    assert error_of(client, Op.UPDATE_SENSOR, t(client, Op.UPDATE_SENSOR, sid="nosuch"), {"name": "Abc"},
                    "nosuch") == E.UnknownSensorId
    assert error_of(client, Op.DESCRIBE_METRIC, t(client, Op.DESCRIBE_METRIC, sid=sid, mid="nosuch"), {},
                    sid, "nosuch") == E.UnknownMetricId
    assert error_of(client, Op.UPDATE_METRICS, um, {"metrics": [{"metricId": dbl}]}, sid) \
        == E.NoMetricsUpdated
    assert error_of(client, Op.CREATE_SENSOR, create_s, {"name": "x"}) == E.OutOfRange
    assert error_of(client, Op.PUSH, push, {"metrics": [{"metricId": text, "value": 1}]}, sid) \
        == E.ParameterIsNotAString
    assert error_of(client, Op.PUSH, push, {"metrics": [{"metricId": dbl, "value": 1}], "timestamp": 5},
                    sid) \
        == E.OutOfRange
    assert error_of(client, Op.PUSH, push, b'{"metrics":[{"metricId":"%s","value":NaN}]}' % dbl.encode(),
                    sid) == E.OutOfRange
    # 18 is in test_emulator_clients (deprovisioned client); order: 6 beats a type error elsewhere
    assert error_of(client, Op.PUSH, push, {"metrics": [{"metricId": 5, "value": 1}, {"metricId": dbl}]},
                    sid) == E.MissingParameter
    # 15 (unknown sensor) beats 12 (bad unit), 16 beats a bad value, value type beats 19
    assert error_of(client, Op.CREATE_METRICS, t(client, Op.CREATE_METRICS, sid="gone0"), {"metrics": [
        {"matchingId": "1", "name": "X", "valueUnit": "nope"}]}, "gone0") == E.UnknownSensorId


def test_multi_item_requests_are_all_or_nothing(client: ApiClient) -> None:
    sid, dbl, flag, count, _ = _setup(client)
    assert error_of(client, Op.PUSH, t(client, Op.PUSH, sid=sid), {"metrics": [
        {"metricId": dbl, "value": 1.0}, {"metricId": flag, "value": "no"}], "timestamp": TS}, sid) \
        == E.ParameterisNotABool
    assert error_of(client, Op.DELETE_METRICS, t(client, Op.DELETE_METRICS, sid=sid), {"metrics": [
        {"metricId": dbl}, {"metricId": "nosuch"}]}, sid) == E.UnknownMetricId
    assert error_of(client, Op.UPDATE_METRICS, t(client, Op.UPDATE_METRICS, sid=sid), {"metrics": [
        {"metricId": dbl, "name": "Fine"}, {"metricId": count, "name": "x"}]}, sid) == E.OutOfRange
    listing = json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {}))
    assert len(listing[0]["metrics"]) == 4
    describe = t(client, Op.DESCRIBE_METRIC, sid=sid, mid=dbl)
    assert json.loads(ok(client, Op.DESCRIBE_METRIC, describe, {}, sid, dbl))["name"] == "Temp"


def test_describe_errors_go_to_both_topics(client: ApiClient) -> None:
    sid = make_sensor(client)
    aliases = p.OPERATIONS[Op.DESCRIBE_METRIC].error_aliases
    client.session.subscribe([p.topic(o, client.cid, sid) for o in aliases])
    client.send(t(client, Op.DESCRIBE_METRIC, sid=sid, mid="nosuch"), {})
    got = {client.next()[0], client.next()[0]}
    assert got == {t(client, Op.DESCRIBE_METRIC, "error", sid, "nosuch"),
                   p.topic(p.OPERATIONS[Op.DESCRIBE_METRIC].error_aliases[0], client.cid, sid)}


def test_implicit_creation_values_keyed_by_metric_and_timestamp_and_livedata(
        shared: Emulator, client: ApiClient) -> None:
    push = t(client, Op.PUSH, sid="room-1")
    client.send(push, {"metrics": [{"metricId": "temp", "value": 20.0},
                                   {"metricId": "open", "value": False},
                                   {"metricId": "label", "value": "a", "timestamp": TS + 5}],
                       "timestamp": TS})
    assert client.next() == (t(client, Op.PUSH, "success", "room-1"), b"Sensor was updated.")
    topic, body = client.next()
    assert topic == p.topic(p.LIVEDATA, client.cid, "room-1")
    assert json.loads(body) == {"metrics": [{"metricId": "temp", "value": 20.0}, {"metricId": "open",
                                "value": False}, {"metricId": "label", "value": "a"}], "timestamp": TS}
    ok(client, Op.PUSH, push, {"metrics": [{"metricId": "temp", "value": 21.0}], "timestamp": TS}, "room-1")
    ok(client, Op.PUSH, push, {"metrics": [{"metricId": "temp", "value": 22}], "timestamp": TS + 1}, "room-1")
    before = int(time.time() * 1000)
    ok(client, Op.PUSH, push, {"metrics": [{"metricId": "open", "value": True}]}, "room-1")
    mine = next(c for c in shared.dump()["clients"] if c["clientId"] == client.cid)
    sensor = mine["sensors"][0]
    assert (sensor["sensorId"], sensor["name"]) == ("room-1", "room-1")
    metrics = {m["metricId"]: m for m in sensor["metrics"]}
    assert metrics["temp"]["valueType"] == "double" and metrics["open"]["valueType"] == "bool"
    assert metrics["temp"]["values"] == [{"timestamp": TS, "value": 21.0}, {"timestamp": TS + 1, "value": 22}]
    assert metrics["label"]["values"] == [{"timestamp": TS + 5, "value": "a"}]
    opened = metrics["open"]["values"]
    assert opened[0] == {"timestamp": TS, "value": False}
    assert opened[1]["value"] is True and before <= opened[1]["timestamp"] <= int(time.time() * 1000)
    # ids a user may not choose are never created implicitly
    assert error_of(client, Op.PUSH, t(client, Op.PUSH, sid="room-1"),
                    {"metrics": [{"metricId": "bad id", "value": 1}]}, "room-1") == E.UnknownMetricId
    assert error_of(client, Op.PUSH, t(client, Op.PUSH, sid="inventory"),
                    {"metrics": [{"metricId": "x", "value": 1}]}, "inventory") == E.UnknownSensorId


def test_error_reports_are_stored_and_never_answered(shared: Emulator, client: ApiClient) -> None:
    sid = make_sensor(client)
    report = {"errorcode": 3, "errorMessage": "sensor broke"}
    client.send(p.topic(p.CLIENT_ERROR_REPORT, client.cid), report)
    client.send(p.topic(p.SENSOR_ERROR_REPORT, client.cid, sid), report)
    client.send(p.topic(p.METRIC_ERROR_REPORT, client.cid, sid, "m1"), report)
    token = "sentinel-after-reports"
    assert client.request(t(client, Op.PING), {"request": token}) == (
        t(client, Op.PING, "success"), json.dumps({"answer": token}, separators=(",", ":")).encode())
    reports = [r for r in shared.error_reports() if r["clientId"] == client.cid]
    assert [(r["sensorId"], r["metricId"]) for r in reports] == [(None, None), (sid, None), (sid, "m1")]
    assert json.loads(reports[0]["payload"]) == report
    with pytest.raises(queue.Empty):
        client.messages.get_nowait()


def test_strict_ids(emulator_factory: Callable[..., Emulator], tmp_path: Path) -> None:
    emu = emulator_factory(strict_ids=True)
    client = new_client(emu, tmp_path)
    assert error_of(client, Op.PUSH, t(client, Op.PUSH, sid="s1"),
                    {"metrics": [{"metricId": "m", "value": 1}]}, "s1") == E.UnknownSensorId
    sid = make_sensor(client)
    assert error_of(client, Op.PUSH, t(client, Op.PUSH, sid=sid),
                    {"metrics": [{"metricId": "m", "value": 1}]}, sid) == E.UnknownMetricId
    assert emu.dump()["clients"][0]["sensors"][0]["metrics"] == []


def test_injected_errors_share_is_seeded(emulator_factory: Callable[..., Emulator],
                                         tmp_path: Path) -> None:
    emu = emulator_factory(inject_errors=[(1, 0.2), (3, 0.1)], seed=42)
    client = new_client(emu, tmp_path)
    codes = []
    for i in range(120):
        topic, body = client.request(t(client, Op.PING), {"request": f"p{i}"})
        codes.append(json.loads(body).get("errorcode") if topic.endswith("/error/inbox") else None)
    import random
    rng = random.Random(42)
    expected = []
    for _ in range(120):
        r = rng.random()
        expected.append(1 if r < 0.2 else 3 if r < 0.3 else None)
    assert codes == expected
    assert 10 <= codes.count(1) <= 40 and 3 <= codes.count(3) <= 25


def test_replies_in_order_per_operation(client: ApiClient) -> None:
    sid = make_sensor(client)
    push = t(client, Op.PUSH, sid=sid)
    ok(client, Op.PUSH, push, {"metrics": [{"metricId": "m", "value": 0.5}], "timestamp": TS}, sid)
    client.next()  # livedata
    for i in range(50):
        value = "bad" if i % 7 == 0 else i
        client.session.publish(push, json.dumps({"metrics": [{"metricId": "m", "value": value}],
                                                 "timestamp": TS + i}))
    answers: list[bool] = []
    while len(answers) < 50:
        topic, body = client.next()
        if not topic.endswith("/livedata"):
            answers.append(body == b"Sensor was updated.")
    assert answers == [i % 7 != 0 for i in range(50)]
