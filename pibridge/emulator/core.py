"""The emulator's core: the agent's API semantics (agent-api.md §3–§6) over the private channel.

`Core.handle(topic, payload)` is the whole behaviour as a function: it returns the messages to
publish and changes the `Store`; it does not touch MQTT, so it is unit-testable. `Core.process`
handles a batch of received messages, commits once and only then publishes the answers (an
acknowledged value is always committed). One thread (`pibridge.emulator.channel`, which also
runs the MQTT connection) handling everything in arrival order is what keeps the replies of
each operation in request order.

Validation follows the [choice] order of §4; the first failure answers:
18 → 4 → 5 → 6 → 7/8/9/10/11 (request fields) → 15 → 16 → 7/8/9/11 (pushed values) →
12/13/14 → 19 → 17. Within a multi-item request every item passes one stage before any item
is checked at the next (so a missing field anywhere wins over a wrong type anywhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pibridge import protocol as p
from pibridge.emulator.pki import Authority, CsrRejected, CsrUnparsable
from pibridge.emulator.store import Client, Metric, Sensor, Store
from pibridge.protocol import ErrorCode as E

log = logging.getLogger(__name__)

#: Most received messages handled per commit.
BATCH_MAX = 2000
#: Integers outside SQLite's 64-bit range are stored as floats.
INT64_MAX = 2**63 - 1
#: Answers (and certificates) go out at QoS 1 (agent-api.md §1).
REPLY_QOS = 1
#: Livedata is a notification the agent API fixes no QoS for: QoS 0 saves the acknowledgements.
LIVEDATA_QOS = 0
#: Bound of the topic → route cache (one entry per request topic seen).
ROUTE_CACHE_MAX = 4096

Out = list[tuple[str, bytes, int]]
"""Messages to publish: (topic, payload, QoS)."""


class ApiError(Exception):
    """An error answer: ``code`` and the agent-style message."""

    def __init__(self, code: E, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(obj: object) -> bytes:
    """Compact JSON, UTF-8, non-ASCII kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --- routing ------------------------------------------------------------------------------------
REPORT = "report"  # pseudo-operation of the error-report topics


@dataclass(frozen=True)
class Route:
    op: p.Op | str
    regex: re.Pattern[str]
    filter: str
    placeholders: int


def _compile(template: str) -> tuple[re.Pattern[str], str, int]:
    return p.template_regex(template), p.template_filter(template), p.placeholder_count(template)


def _routes() -> list[Route]:
    routes = []
    for operation in p.OPERATIONS.values():
        for template in operation.request_topics:
            routes.append(Route(operation.op, *_compile(template)))
    for template in p.ERROR_REPORTS:
        routes.append(Route(REPORT, *_compile(template)))
    # Literal segments win over placeholders (/sensor/create is not a push to sensor "create").
    routes.sort(key=lambda r: r.placeholders)
    return routes


ROUTES = _routes()
#: What the core subscribes to: every request and report topic, plus provisioning.
CORE_FILTERS = tuple(dict.fromkeys([r.filter for r in ROUTES] + list(p.PROVISION_TOPICS)))


_route_cache: dict[str, tuple[p.Op | str, dict[str, str]] | None] = {}


def route(topic: str) -> tuple[p.Op | str, dict[str, str]] | None:
    """The operation a topic addresses and its ids; None for replies and unknown topics.
    (The returned dict is shared through a cache: do not change it.)"""
    try:
        return _route_cache[topic]
    except KeyError:
        pass
    found = None
    if not topic.endswith("/inbox"):  # our own answers come back through '+' filters
        for r in ROUTES:
            m = r.regex.match(topic)
            if m:
                found = r.op, m.groupdict()
                break
    if len(_route_cache) >= ROUTE_CACHE_MAX:
        _route_cache.clear()
    _route_cache[topic] = found
    return found


# --- value checks ---------------------------------------------------------------------------
def is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_whole(v: object) -> bool:
    """A JSON integer or a float without fraction; non-finite numbers pass (19 catches them)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and (not math.isfinite(v) or v.is_integer())


def is_finite(v: object) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def parse_object(payload: bytes) -> dict[str, Any]:
    """Stages 4 and 5: JSON, and a JSON object."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ApiError(E.InvalidJson, f"Invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(E.JsonIsNotAObject, "JSON is not an object.")
    return data


def _present(obj: dict[str, Any], key: str) -> bool:
    return obj.get(key) is not None


def require(obj: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if not _present(obj, key):
            raise ApiError(E.MissingParameter, f"Missing parameter '{key}'.")


def require_str(obj: dict[str, Any], *keys: str, optional: bool = False) -> None:
    for key in keys:
        if _present(obj, key) and not isinstance(obj[key], str):
            raise ApiError(E.ParameterIsNotAString, f"Parameter '{key}' is not a string.")


def items(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """``metrics`` of a multi-item request: 6 if missing, 10 if not an array (non-object items are
    `check_items_are_objects`'s: 5)."""
    require(obj, "metrics")
    metrics = obj["metrics"]
    if not isinstance(metrics, list):
        raise ApiError(E.ParameterIsNotAnArray, "Parameter 'metrics' is not an array.")
    return metrics


def check_items_are_objects(metrics: list[Any]) -> None:
    if any(not isinstance(m, dict) for m in metrics):
        raise ApiError(E.JsonIsNotAObject, "An element of 'metrics' is not an object.")


def check_timestamp_type(value: object, where: str) -> None:
    if value is None:
        return
    if not is_number(value):
        raise ApiError(E.ParameterIsNotANumber, f"Parameter '{where}' is not a number.")
    if not is_whole(value):
        raise ApiError(E.ParameterIsNotAnInteger, f"Parameter '{where}' is not an integer.")


def check_name_range(name: str) -> None:
    if not p.NAME_MIN_LEN <= len(name) <= p.NAME_MAX_LEN:
        raise ApiError(E.OutOfRange, f"Name must have {p.NAME_MIN_LEN} to {p.NAME_MAX_LEN} characters.")


def user_id_ok(ident: str) -> bool:
    """May a push create this id implicitly (agent-api.md §4)?"""
    return bool(p.USER_ID_RE.match(ident)) and ident not in p.RESERVED_IDS


def type_of(value: object) -> str | None:
    """The type an implicitly created metric gets from its first JSON value (JSON has one number type)."""
    if isinstance(value, bool):
        return p.ValueType.BOOL
    if isinstance(value, str):
        return p.ValueType.STRING
    if is_number(value):
        return p.ValueType.DOUBLE
    return None


def check_value(metric_type: str | None, value: object, mid: str) -> None:
    """Stage 7/8/9/11 for a pushed value; ``metric_type`` None means a unit metric (a number)."""
    if metric_type == p.ValueType.BOOL:
        if not isinstance(value, bool):
            raise ApiError(E.ParameterisNotABool, f"Value of metric '{mid}' is not a bool.")
    elif metric_type == p.ValueType.STRING:
        if not isinstance(value, str):
            raise ApiError(E.ParameterIsNotAString, f"Value of metric '{mid}' is not a string.")
    elif metric_type == p.ValueType.INTEGER:
        if not is_whole(value):
            raise ApiError(E.ParameterIsNotAnInteger, f"Value of metric '{mid}' is not an integer.")
    elif not is_number(value):
        raise ApiError(E.ParameterIsNotANumber, f"Value of metric '{mid}' is not a number.")


def storable(value: Any, metric_type: str | None) -> Any:
    """The value as SQLite stores it: bool → 0/1 (dump turns it back), whole float → int for integer."""
    if isinstance(value, bool):
        return int(value)
    if metric_type == p.ValueType.INTEGER and isinstance(value, float):
        return int(value)
    if isinstance(value, int) and abs(value) > INT64_MAX:
        return float(value)
    return value


def matching_id(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- the core -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Injection:
    """Answer ``share`` (0..1) of the API requests with error ``code`` (1 or 3)."""

    code: E
    share: float


class Core:
    """The agent's behaviour. ``publish(topic, payload, qos)`` sends; ``on_revoked()`` is
    called after a deprovisioning wrote the CRL and before its answer goes out: it makes the
    broker reload the CRL and returns once the broker did (False: it could not tell)."""

    def __init__(self, store: Store, authority: Authority, *, strict_ids: bool = False,
                 injections: Sequence[Injection] = (), seed: int | None = None,
                 publish: Callable[[str, bytes, int], None] | None = None,
                 on_revoked: Callable[[], bool | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.authority = authority
        self.strict_ids = strict_ids
        self.injections = list(injections)
        self.rng = random.Random(seed)
        self.publish = publish or (lambda topic, payload, qos: None)
        self.on_revoked = on_revoked or (lambda: None)
        self.clock = clock
        self.clients: dict[str, Client] = store.load()
        self._revoked_pending = False
        self._handlers: dict[p.Op, Callable[[Client, dict[str, str], bytes], bytes | Any]] = {
            p.Op.PING: self._ping, p.Op.LIST_SENSORS: self._list, p.Op.CREATE_SENSOR: self._create_sensor,
            p.Op.UPDATE_SENSOR: self._update_sensor, p.Op.DELETE_SENSOR: self._delete_sensor,
            p.Op.CREATE_METRICS: self._create_metrics, p.Op.DESCRIBE_METRIC: self._describe_metric,
            p.Op.UPDATE_METRICS: self._update_metrics, p.Op.DELETE_METRICS: self._delete_metrics,
            p.Op.DEPROVISION: self._deprovision,
        }

    # -- batches (all on one thread) ----------------------------------------------------------
    def process(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Handle received messages in order, commit once, then publish every answer."""
        out: Out = []
        for topic, payload in messages:
            try:
                out.extend(self.handle(topic, payload))
            except Exception:
                log.exception("handling %s failed", topic)
        self._flush(out)

    def wipe(self) -> None:
        """Delete every sensor, metric and value; clients stay (call on the core's thread)."""
        self.store.wipe_inventory()
        self.store.commit()
        for client in self.clients.values():
            client.sensors.clear()

    def _flush(self, out: Out) -> None:
        try:
            self.store.commit()
        except Exception:  # nothing of the batch is stored: acknowledge none of it
            log.exception("commit failed; %d answers dropped", len(out))
            with contextlib.suppress(Exception):
                self.store.rollback()
                # the batch also changed the in-memory inventory and maybe the revocation list:
                # make both what the database says again
                self.clients = self.store.load()
                self.authority.write_crl(self.store.revoked_serials())
            out = []
        if self._revoked_pending:  # revoke before answering: a reconnect right after is refused
            self._revoked_pending = False
            try:
                if self.on_revoked() is False:
                    log.warning("the broker did not confirm reloading the revocation list")
            except Exception:
                log.exception("reloading the revocation list failed")
        for topic, payload, qos in out:
            try:
                self.publish(topic, payload, qos)
            except Exception as exc:  # broker down: the client's request times out
                log.warning("cannot publish to %s: %s", topic, exc)

    # -- dispatch ------------------------------------------------------------------------------
    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def handle(self, topic: str, payload: bytes) -> Out:
        """Everything one received message causes: changes in the store and the messages to send."""
        if topic in p.PROVISION_TOPICS:
            return self._provision(payload)
        found = route(topic)
        if found is None:
            return []
        op, ids = found
        cid, sid, mid = ids["cid"], ids.get("sid", ""), ids.get("mid", "")
        client = self.clients.get(cid)
        if op == REPORT:
            if client is not None and not client.revoked:
                self.store.add_error_report(cid, sid or None, mid or None, self.now_ms(), payload)
            return []
        assert isinstance(op, p.Op)
        operation = p.OPERATIONS[op]
        try:
            if client is None or client.revoked:
                raise ApiError(E.ForbiddendAccess, "Access forbidden: unknown or deprovisioned client.")
            self._inject()
            if op is p.Op.PUSH:
                body, extra = self._push(client, sid, payload)
            else:
                body, extra = self._handlers[op](client, ids, payload), []
        except ApiError as err:
            body = encode(p.error_payload(err.code, err.message))
            return [(p.topic(t, cid, sid, mid), body, REPLY_QOS)
                    for t in (operation.error, *operation.error_aliases)]
        if operation.reply is p.ReplyKind.TEXT:
            body = (operation.success_text or "").encode()
        return [(p.topic(operation.success, cid, sid, mid), body, REPLY_QOS), *extra]

    def _inject(self) -> None:
        if not self.injections:
            return
        r = self.rng.random()
        for injection in self.injections:
            if r < injection.share:
                code = injection.code
                raise ApiError(code, f"Injected error {int(code)} ({code.name}).")
            r -= injection.share

    # -- provisioning (§3) ---------------------------------------------------------------------
    def _provision(self, payload: bytes) -> Out:
        digest = hashlib.sha256(payload).hexdigest()
        try:
            cid, serial, pem = self.authority.sign_csr(payload)
        except (CsrUnparsable, CsrRejected) as exc:
            code = E.InvalidJson if isinstance(exc, CsrUnparsable) else E.InternalError
            return [(p.CERT_BACK_ERROR_TOPIC.format(hash=digest), encode(p.error_payload(code, str(exc))),
                     REPLY_QOS)]
        self.store.add_client(cid, serial, self.now_ms())
        self.clients[cid] = Client(cid, serial, False)
        return [(p.CERT_BACK_TOPIC.format(hash=digest), pem, REPLY_QOS)]

    # -- operations (§4) -----------------------------------------------------------------------
    @staticmethod
    def _sensor(client: Client, sid: str) -> Sensor:
        sensor = client.sensors.get(sid)
        if sensor is None:
            raise ApiError(E.UnknownSensorId, f"Unknown sensor '{sid}'.")
        return sensor

    def _ping(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        obj = parse_object(payload)
        require(obj, "request")
        require_str(obj, "request")
        return encode({"answer": obj["request"]})

    def _list(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        parse_object(payload)
        describe = p.OPERATIONS[p.Op.DESCRIBE_METRIC].request
        return encode([
            {"sensorId": s.sid, "name": s.name, "store": True,
             "metrics": [{"metricId": m.mid, "link": p.topic(describe, client.cid, s.sid, m.mid)}
                         for m in s.metrics.values()]}
            for s in client.sensors.values()])

    def _create_sensor(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        obj = parse_object(payload)
        require(obj, "name")
        require_str(obj, "name")
        check_name_range(obj["name"])
        sid = uuid.uuid4().hex
        client.sensors[sid] = self.store.add_sensor(client.cid, sid, obj["name"])
        return encode({"name": obj["name"], "sensorId": sid})

    def _update_sensor(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        obj = parse_object(payload)
        require(obj, "name")
        require_str(obj, "name")
        sensor = self._sensor(client, ids["sid"])
        check_name_range(obj["name"])
        self.store.rename_sensor(sensor, obj["name"])
        return b""

    def _delete_sensor(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        parse_object(payload)
        sensor = self._sensor(client, ids["sid"])
        self.store.delete_sensor(sensor)
        del client.sensors[sensor.sid]
        return b""

    def _create_metrics(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        obj = parse_object(payload)
        defs = items(obj)
        check_items_are_objects(defs)
        for d in defs:
            require(d, "matchingId", "name")
        for d in defs:
            require_str(d, "name", "valueUnit", "valueType", "valueAnnotation")
            if not (isinstance(d["matchingId"], str) or is_number(d["matchingId"])):
                raise ApiError(E.ParameterIsNotAString, "Parameter 'matchingId' is not a string.")
        sensor = self._sensor(client, ids["sid"])
        for d in defs:
            if _present(d, "valueUnit"):
                if d["valueUnit"] not in p.VALUE_UNITS:
                    raise ApiError(E.UnknownValueUnit, f"Unknown value unit '{d['valueUnit']}'.")
            elif _present(d, "valueType"):
                if d["valueType"] not in set(p.ValueType):
                    raise ApiError(E.UnknownMetricType, f"Unknown metric type '{d['valueType']}'.")
            else:
                raise ApiError(E.ValueUnitOrValueTypeHasToBeProvided,
                               "valueUnit or valueType has to be provided.")
        for d in defs:
            check_name_range(d["name"])
        answer = []
        for d in defs:
            mid = uuid.uuid4().hex
            if _present(d, "valueUnit"):
                self.store.add_metric(sensor, mid, d["name"], d["valueUnit"], None, None)
            else:
                self.store.add_metric(sensor, mid, d["name"], None, d["valueType"],
                                      d.get("valueAnnotation") or "")
            answer.append({"matchingId": matching_id(d["matchingId"]), "metricId": mid})
        return encode(answer)

    def _describe_metric(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        parse_object(payload)
        sensor = self._sensor(client, ids["sid"])
        metric = sensor.metrics.get(ids["mid"])
        if metric is None:
            raise ApiError(E.UnknownMetricId, f"Unknown metric '{ids['mid']}'.")
        return encode(metric.describe())

    def _metric_items(self, client: Client, ids: dict[str, str], payload: bytes,
                      fields: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[Metric]]:
        obj = parse_object(payload)
        entries = items(obj)
        check_items_are_objects(entries)
        for e in entries:
            require(e, "metricId")
        for e in entries:
            require_str(e, "metricId", *fields)
        sensor = self._sensor(client, ids["sid"])
        metrics = []
        for e in entries:
            metric = sensor.metrics.get(e["metricId"])
            if metric is None:
                raise ApiError(E.UnknownMetricId, f"Unknown metric '{e['metricId']}'.")
            metrics.append(metric)
        return entries, metrics

    def _update_metrics(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        entries, metrics = self._metric_items(client, ids, payload, ("name", "valueAnnotation"))
        for e in entries:
            if _present(e, "name"):
                check_name_range(e["name"])
        changes = []
        for e, metric in zip(entries, metrics, strict=True):
            name = e.get("name")
            annotation = e.get("valueAnnotation") if metric.unit is None else None
            if name is not None or annotation is not None:
                changes.append((metric, name, annotation))
        if not changes:
            raise ApiError(E.NoMetricsUpdated, "No metrics were updated.")
        for metric, name, annotation in changes:
            self.store.update_metric(metric, name, annotation)
        return b""

    def _delete_metrics(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        _, metrics = self._metric_items(client, ids, payload, ())
        if not metrics:
            raise ApiError(E.NoMetricsUpdated, "No metrics were deleted.")
        unique = list({m.row: m for m in metrics}.values())
        self.store.delete_metrics(unique)
        sensor = client.sensors[ids["sid"]]
        for metric in unique:
            sensor.metrics.pop(metric.mid, None)
        return b""

    def _push(self, client: Client, sid: str, payload: bytes) -> tuple[bytes, Out]:
        obj = parse_object(payload)
        entries = items(obj)
        check_timestamp_type(obj.get("timestamp"), "timestamp")
        check_items_are_objects(entries)
        for e in entries:
            require(e, "metricId")
            if "value" not in e:
                raise ApiError(E.MissingParameter, "Missing parameter 'value'.")
        for e in entries:
            require_str(e, "metricId")
            check_timestamp_type(e.get("timestamp"), "timestamp")
        # 15 / 16: unknown ids, or implicit creation
        sensor = client.sensors.get(sid)
        if sensor is None and (self.strict_ids or not user_id_ok(sid)):
            raise ApiError(E.UnknownSensorId, f"Unknown sensor '{sid}'.")
        types: dict[str, str | None] = {}  # metricId → type (None: unit metric)
        new: dict[str, str | None] = {}  # implicitly created: metricId → inferred type
        for e in entries:
            mid = e["metricId"]
            if mid in types or mid in new:
                continue
            metric = sensor.metrics.get(mid) if sensor is not None else None
            if metric is not None:
                types[mid] = metric.vtype
            elif self.strict_ids or not user_id_ok(mid):
                raise ApiError(E.UnknownMetricId, f"Unknown metric '{mid}'.")
            else:
                new[mid] = type_of(e["value"])
        # pushed values against their metric's type
        for e in entries:
            mid = e["metricId"]
            if mid in new:
                if new[mid] is None:
                    raise ApiError(E.ParameterIsNotANumber, f"Value of metric '{mid}' is not a number.")
                check_value(new[mid], e["value"], mid)
            else:
                check_value(types[mid], e["value"], mid)
        # 19: ranges
        now = self.now_ms()
        top = obj.get("timestamp")
        rows_ts = []
        for e in entries:
            ts = e.get("timestamp")
            ts = top if ts is None else ts
            if ts is None:
                ts = now
            elif not (is_finite(ts) and p.TIMESTAMP_MIN_MS <= ts <= now + p.TIMESTAMP_MAX_AHEAD_MS):
                raise ApiError(E.OutOfRange, f"Timestamp {ts} is out of range.")
            if is_number(e["value"]) and not is_finite(e["value"]):
                raise ApiError(E.OutOfRange, f"Value of metric '{e['metricId']}' is out of range.")
            rows_ts.append(int(ts))
        # accepted: create what is implicit, store, answer, livedata
        if sensor is None:
            sensor = self.store.add_sensor(client.cid, sid, sid)
            client.sensors[sid] = sensor
        for mid, vtype in new.items():
            self.store.add_metric(sensor, mid, mid, None, vtype, "")
        metrics = sensor.metrics
        self.store.put_values(
            (metrics[e["metricId"]].row, ts, storable(e["value"], metrics[e["metricId"]].vtype))
            for e, ts in zip(entries, rows_ts, strict=True))
        if top is not None:
            live_ts = int(top)
        elif entries and all(e.get("timestamp") is not None for e in entries):
            live_ts = max(rows_ts)
        else:
            live_ts = now
        livedata = encode({"metrics": [{"metricId": e["metricId"], "value": e["value"]} for e in entries],
                           "timestamp": live_ts})
        return b"", [(p.topic(p.LIVEDATA, client.cid, sid), livedata, LIVEDATA_QOS)]

    def _deprovision(self, client: Client, ids: dict[str, str], payload: bytes) -> bytes:
        parse_object(payload)
        self.store.wipe_inventory(client.cid)
        client.sensors.clear()
        client.revoked = True
        self.authority.write_crl(self.store.revoke_client(client.cid, self.now_ms()))
        self._revoked_pending = True
        return b""
