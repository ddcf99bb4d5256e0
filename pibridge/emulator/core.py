"""The emulator's core: the agent's API semantics (agent-api.md §3–§6) over the private channel.

`Core.handle(topic, payload)` is the whole behaviour as a function: it returns the messages to
publish and changes the `Store`; it does not touch MQTT, so it is unit-testable. `Core.process`
handles a batch of received messages in one transaction, commits once and only then publishes
the answers (an acknowledged value is always committed). One thread (`pibridge.emulator.channel`,
which also runs the MQTT connection) handling everything in arrival order is what keeps the
replies of each operation in request order.

Every request is checked whole before it changes anything, memory or database, and is then
undoable on its own (a savepoint opened at its first write: `Store.begin_request`). A request
that still fails (a database error, a bug) is rolled back alone, the in-memory inventory is
reloaded from the database, it is answered 3 and the other requests of the batch keep their
changes and answers (`Core.process` tells how failures SQLite pins on no single request are
handled). If the batch cannot be committed (a full
disk), nothing of it is stored and EVERY request of it is answered 3 (InternalError), never left
without an answer; the next batch tries again, so the emulator recovers once space is freed.
Unexpected failures are logged as one line each, rate-limited (`LogLimiter`), never a traceback
per request (``-vv`` adds the traceback at debug level).

Validation follows the [choice] order of §4; the first failure answers:
18 → 19 (request larger than `MAX_REQUEST_BYTES`) → 4 → 5 → 6 → 7/8/9/10/11 (request fields) →
15 → 16 → 7/8/9/11 (pushed values) → 12/13/14 → 19 → 17. Within a multi-item request every item
passes one stage before any item is checked at the next (so a missing field anywhere wins over a
wrong type anywhere).

Values the agent cannot keep ([choice], agent-api.md §4):

    input                                                    code
    text anywhere holding a lone UTF-16 surrogate ("\ud800")  4  InvalidJson (not valid Unicode)
    payload bytes that are not UTF-8                          4  InvalidJson
    integer metric: a whole number outside -2**63 .. 2**63-1  19 OutOfRange (1e300 included)
    number metric: a number beyond a finite double            19 OutOfRange (a 400-digit literal)
    NaN / Infinity anywhere a number is stored                19 OutOfRange

The emulator's own limits ([choice]: one client's huge request must not slow everyone; the agent
documents none)::

    limit                                                     value       beyond it
    request payload (API and provisioning)                    256 KiB     19 OutOfRange, before parsing
    MQTT packet (mosquitto ``max_packet_size``)               16 MiB      mosquitto disconnects the client
    characters of one pushed string value                     4096        19 OutOfRange
    values in one push                                        1000        19 OutOfRange
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pibridge import protocol as p
from pibridge.emulator.faults import AnswerFault, AnswerFaults
from pibridge.emulator.pki import Authority, CsrRejected, CsrUnparsable
from pibridge.emulator.store import BatchLost, Client, Metric, Sensor, Store, StoreCorrupt
from pibridge.protocol import ErrorCode as E

log = logging.getLogger(__name__)

#: Most received messages handled per commit.
BATCH_MAX = 2000
#: Passes over one batch when a failure cannot be pinned on one request (`Core.process`).
BATCH_ATTEMPTS = 3
#: `Core._attempt`: handle the batch again with values written request by request.
RETRY_UNBUFFERED = -1
#: SQLite's INTEGER range: an `integer` metric's values must lie in it; other numbers outside it
#: are stored as floats.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: A text that may hold a lone surrogate: one written as an escape, or any non-ASCII byte (json
#: decodes bytes with 'surrogatepass'). Pure-ASCII payloads without escapes skip the walk.
_ESCAPE = b"\\u"
#: Largest request payload handled (bytes); larger ones are answered 19 before parsing.
MAX_REQUEST_BYTES = 256 * 1024
#: Longest string value a push may store (characters).
MAX_STRING_VALUE_CHARS = 4096
#: Most values one push may carry.
MAX_VALUES_PER_PUSH = 1000
#: Answers (and certificates) go out at QoS 1 (agent-api.md §1).
REPLY_QOS = 1
#: Livedata is a notification the agent API fixes no QoS for: QoS 0 saves the acknowledgements.
LIVEDATA_QOS = 0
#: Bound of the topic → route cache (one entry per request topic seen).
ROUTE_CACHE_MAX = 4096
#: Unexpected request failures: at most LOG_BURST lines per LOG_WINDOW_S seconds, then a count.
LOG_BURST = 10
LOG_WINDOW_S = 60.0

Out = list[tuple[str, bytes, int]]
"""Messages to publish: (topic, payload, QoS)."""


INTERNAL_ERROR_BODY = json.dumps(
    p.error_payload(E.InternalError, "Internal error: the request could not be stored."),
    separators=(",", ":")).encode()
"""The answer of a request that could not be stored (error 3)."""


class ApiError(Exception):
    """An error answer: ``code`` and the agent-style message."""

    def __init__(self, code: E, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChangedBeforeRefusal(Exception):
    """A request wrote to the store and was then refused (a check placed after a change: a bug).
    `Core` undoes the request and still sends ``answer``, its refusal."""

    def __init__(self, answer: list[tuple[str, bytes, int]]) -> None:
        super().__init__("the request changed the store before it was refused")
        self.answer = answer


def encode(obj: object) -> bytes:
    """Compact JSON, UTF-8, non-ASCII kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class LogLimiter:
    """One line per event, at most ``burst`` per ``window_s`` seconds; the next line after a quiet
    spell says how many were left out (so 10,000 hostile requests make a few lines, not 12 MB)."""

    def __init__(self, burst: int = LOG_BURST, window_s: float = LOG_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._window_start = -math.inf
        self._in_window = 0
        self.suppressed = 0

    def log(self, logger: logging.Logger, message: str, *args: object) -> None:
        now = self.clock()
        if now - self._window_start >= self.window_s:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return
        self._in_window += 1
        if self.suppressed:
            message += f" ({self.suppressed} similar lines left out)"
            self.suppressed = 0
        logger.warning(message, *args)


def _describe(exc: BaseException) -> str:
    """An exception as one line: its type and message, no traceback."""
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    """Stages 4 and 5: JSON whose every text is valid Unicode, and a JSON object."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ApiError(E.InvalidJson, f"Invalid JSON: {exc}") from None
    if (_ESCAPE in payload or not payload.isascii()) and not _valid_text(data):
        raise ApiError(E.InvalidJson, "Invalid JSON: a text is not valid Unicode (lone surrogate).")
    if not isinstance(data, dict):
        raise ApiError(E.JsonIsNotAObject, "JSON is not an object.")
    return data


def _valid_text(data: object) -> bool:
    """No string (key or value) anywhere in ``data`` holds a surrogate code point: such text
    cannot be stored or sent as UTF-8. Iterative: nesting depth is json's to bound."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


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


def check_storable(metric_type: str | None, value: object, mid: str) -> None:
    """Stage 19 for a pushed value of the right type: can SQLite keep it as that type?
    (On every pushed value: the common cases, a float or a small int, are the first tests.)"""
    kind = type(value)
    if kind is float:
        assert isinstance(value, float)
        if not math.isfinite(value):
            raise ApiError(E.OutOfRange, f"Value of metric '{mid}' is out of range.")
        if metric_type == p.ValueType.INTEGER and not INT64_MIN <= value <= INT64_MAX:
            raise ApiError(E.OutOfRange, f"Value of metric '{mid}' is out of the 64-bit integer range.")
    elif kind is int:
        assert isinstance(value, int)
        if INT64_MIN <= value <= INT64_MAX:
            return
        if metric_type == p.ValueType.INTEGER:
            raise ApiError(E.OutOfRange, f"Value of metric '{mid}' is out of the 64-bit integer range.")
        try:
            float(value)
        except OverflowError:
            raise ApiError(E.OutOfRange, f"Value of metric '{mid}' is too large for a double.") from None


def storable(value: Any, metric_type: str | None) -> Any:
    """The value as SQLite stores it: bool → 0/1 (dump turns it back), whole float → int for integer."""
    if isinstance(value, bool):
        return int(value)
    if metric_type == p.ValueType.INTEGER and isinstance(value, float):
        return int(value)
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
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
                 answer_faults: Sequence[AnswerFault] = (),
                 publish: Callable[[str, bytes, int], None] | None = None,
                 on_revoked: Callable[[], bool | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.authority = authority
        self.strict_ids = strict_ids
        self.injections = list(injections)
        self.rng = random.Random(seed)
        self.answer_faults = AnswerFaults(answer_faults, self.rng) if answer_faults else None
        #: Answers that could not be published (the core's connection was down or full): counted
        #: here and logged (rate-limited), never dropped silently.
        self.unpublished = 0
        self.publish = publish or (lambda topic, payload, qos: None)
        self.on_revoked = on_revoked or (lambda: None)
        self.clock = clock
        self.clients: dict[str, Client] = store.load()
        self._revoked_pending = False
        self._crl_stale = False  # the CRL file may differ from the database (a failed batch)
        self._failed_batches = 0  # consecutive batches that could not be committed
        self.failures = LogLimiter()
        self._handlers: dict[p.Op, Callable[[Client, dict[str, str], bytes], bytes | Any]] = {
            p.Op.PING: self._ping, p.Op.LIST_SENSORS: self._list, p.Op.CREATE_SENSOR: self._create_sensor,
            p.Op.UPDATE_SENSOR: self._update_sensor, p.Op.DELETE_SENSOR: self._delete_sensor,
            p.Op.CREATE_METRICS: self._create_metrics, p.Op.DESCRIBE_METRIC: self._describe_metric,
            p.Op.UPDATE_METRICS: self._update_metrics, p.Op.DELETE_METRICS: self._delete_metrics,
            p.Op.DEPROVISION: self._deprovision,
        }

    # -- batches (all on one thread) ----------------------------------------------------------
    def process(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Handle received messages in order in one transaction, commit, then publish the answers:
        each request's own answer if the commit succeeded, else error 3 for every request.

        A failing request is normally undone alone (its savepoint). Two failures cannot be pinned
        on one request at once: the batch's buffered value rows failing to be written (`BatchLost`),
        and SQLite rolling the whole transaction back (SQLITE_FULL). Then the batch is handled
        again from its start, values written request by request (`Store.buffer_values` off) and
        without the request that lost the transaction (answered 3), at most `BATCH_ATTEMPTS`
        times in all; when failures go on the environment is failing, and every request of the
        batch is answered 3. Nothing is published before the final attempt commits."""
        self._retry_crl()
        refused: dict[int, Out] = {}  # requests whose failure cost the transaction: answered 3
        try:
            for attempt in range(BATCH_ATTEMPTS):
                self.store.buffer_values = attempt == 0
                lost_at = self._attempt(messages, refused)
                if lost_at is None:
                    return
                if lost_at != RETRY_UNBUFFERED:
                    topic, payload = messages[lost_at]
                    refused[lost_at] = self.internal_error(topic, payload)
        finally:
            self.store.buffer_values = True
        self._batch_failed(sqlite3.OperationalError("SQLite rolled back every attempt of the batch"),
                           len(messages))
        self._publish_all([m for topic, payload in messages for m in self.internal_error(topic, payload)])

    def _attempt(self, messages: Sequence[tuple[str, bytes]], refused: dict[int, Out]) -> int | None:
        """One pass over the batch. None: done (committed and answered, or failed and answered 3).
        Else nothing was published, memory is reloaded, and the batch must be handled again:
        without the request at the returned index (its failure made SQLite roll the transaction
        back), or, for `RETRY_UNBUFFERED`, with values written request by request."""
        answers: list[Out] = []
        changes_before = self.store.total_changes
        try:
            self.store.begin()
        except sqlite3.Error as exc:
            self._batch_failed(exc, len(messages))
            self._publish_all([m for topic, payload in messages for m in self.internal_error(topic, payload)])
            return None
        for index, (topic, payload) in enumerate(messages):
            if index in refused:
                answers.append(refused[index])
                continue
            try:
                answer = self._handle_alone(topic, payload)
            except BatchLost:  # earlier requests' buffered values: try again, unbuffered
                self._rolled_back()
                return RETRY_UNBUFFERED
            if not self.store.in_transaction:  # SQLite rolled everything back (e.g. SQLITE_FULL)
                self._rolled_back()
                return index
            answers.append(answer)
        try:
            self.store.commit()
        except BatchLost:
            self._rolled_back()
            return RETRY_UNBUFFERED
        except sqlite3.Error as exc:
            self._batch_failed(exc, len(messages))
            self._publish_all([m for topic, payload in messages for m in self.internal_error(topic, payload)])
            return None
        if self._failed_batches and self.store.total_changes != changes_before:
            log.warning("database writes succeed again (%d batches were answered with error 3)",
                        self._failed_batches)
            self._failed_batches = 0
        if self._revoked_pending:  # revoke before answering: a reconnect right after is refused
            self._revoked_pending = False
            try:
                if self.on_revoked() is False:
                    log.warning("the front did not confirm reloading the revocation list")
            except Exception as exc:
                log.warning("reloading the revocation list failed: %s", exc)
        self._publish_all([m for answer in answers for m in answer])
        return None

    def _handle_alone(self, topic: str, payload: bytes) -> Out:
        """One request, undoable on its own (`Store.begin_request`): its answer (error 3 when it
        failed and was undone). `BatchLost` goes to the caller: the batch, not this request, failed."""
        self.store.begin_request()
        try:
            answer = self.handle(topic, payload)
            self.store.end_request()
        except BatchLost:
            raise
        except ChangedBeforeRefusal as exc:  # a bug: the refusal stands, its changes go
            self.failures.log(log, "request on %s: %s; undone", topic, exc)
            self._undo_request()
            return exc.answer
        except Exception as exc:  # a database error or a bug: this request alone is undone
            self.failures.log(log, "request on %s failed, answered error 3: %s", topic, _describe(exc))
            log.debug("request on %s failed", topic, exc_info=True)
            self._undo_request()
            return self.internal_error(topic, payload)
        return answer

    def _undo_request(self) -> None:
        """Roll the current request back and make memory what the database says again."""
        with contextlib.suppress(sqlite3.Error):
            if self.store.in_transaction:
                self.store.undo_request()
        self._reload()

    def _batch_failed(self, exc: BaseException, count: int) -> None:
        """Nothing of the batch is stored: roll back, reload memory and CRL from the database."""
        if self._failed_batches == 0:
            log.warning("cannot write the database (%s): answering error 3 until writes succeed again",
                        _describe(exc))
        self._failed_batches += 1
        log.debug("batch of %d requests not committed: %s", count, exc)
        self._rolled_back()

    def _rolled_back(self) -> None:
        """After the transaction ended without a commit: memory and CRL as the database says."""
        with contextlib.suppress(sqlite3.Error):
            self.store.rollback()
        self._reload()
        if self._revoked_pending:  # the CRL file lists a revocation the database does not hold
            self._revoked_pending = False
            self._crl_stale = True
            self._retry_crl()

    def _reload(self) -> None:
        try:
            self.clients = self.store.load()
        except (sqlite3.Error, StoreCorrupt) as exc:  # keep the old view; the next failure retries
            log.warning("cannot reload the inventory from the database: %s", _describe(exc))

    def _retry_crl(self) -> None:
        """After a failed batch the CRL file may list a revocation the database does not hold:
        rewrite it from the database (again at every batch until it works)."""
        if not self._crl_stale:
            return
        try:
            self.authority.write_crl(self.store.revoked_serials())
        except (sqlite3.Error, StoreCorrupt, OSError) as exc:
            self.failures.log(log, "cannot rewrite the revocation list: %s", _describe(exc))
            return
        self._crl_stale = False

    @staticmethod
    def internal_error(topic: str, payload: bytes) -> Out:
        """The error-3 answer of a request ([] for reports and unknown topics)."""
        body = INTERNAL_ERROR_BODY
        if topic in p.PROVISION_TOPICS:
            digest = hashlib.sha256(payload).hexdigest()
            return [(p.CERT_BACK_ERROR_TOPIC.format(hash=digest), body, REPLY_QOS)]
        found = route(topic)
        if found is None or found[0] == REPORT:
            return []
        op, ids = found
        assert isinstance(op, p.Op)
        operation = p.OPERATIONS[op]
        cid, sid, mid = ids["cid"], ids.get("sid", ""), ids.get("mid", "")
        return [(p.topic(t, cid, sid, mid), body, REPLY_QOS)
                for t in (operation.error, *operation.error_aliases)]

    def wipe(self) -> None:
        """Delete every sensor, metric and value; clients stay (call on the core's thread)."""
        self.store.begin()
        try:
            self.store.wipe_inventory()
            self.store.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.store.rollback()
            raise
        for client in self.clients.values():
            client.sensors.clear()

    def _publish_all(self, out: Out) -> None:
        if self.answer_faults is not None:
            self.answer_faults.publish(out, self._publish_one)
            return
        for topic, payload, qos in out:
            self._publish_one(topic, payload, qos)

    def _publish_one(self, topic: str, payload: bytes, qos: int) -> None:
        try:
            self.publish(topic, payload, qos)
        except Exception as exc:  # broker down: the client's request times out
            self.unpublished += 1
            self.failures.log(log, "answer on %s not published (%d so far): %s", topic, self.unpublished, exc)

    def release_answers(self) -> float | None:
        """Publish answers an injected delay held whose time has come; returns when the next
        held ones are due (monotonic seconds), None when nothing is held."""
        if self.answer_faults is None:
            return None
        self.answer_faults.release(self._publish_one)
        return self.answer_faults.next_release()

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
            if len(payload) > MAX_REQUEST_BYTES:
                raise ApiError(E.OutOfRange, f"Request of {len(payload)} bytes is larger than the "
                               f"{MAX_REQUEST_BYTES} bytes accepted.")
            self._inject()
            if op is p.Op.PUSH:
                body, extra = self._push(client, sid, payload)
            else:
                body, extra = self._handlers[op](client, ids, payload), []
        except ApiError as err:
            body = encode(p.error_payload(err.code, err.message))
            refusal: Out = [(p.topic(t, cid, sid, mid), body, REPLY_QOS)
                            for t in (operation.error, *operation.error_aliases)]
            if self.store.request_wrote:  # checks must all come before changes
                raise ChangedBeforeRefusal(refusal) from None
            return refusal
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
        if len(payload) > MAX_REQUEST_BYTES:
            return [(p.CERT_BACK_ERROR_TOPIC.format(hash=digest), encode(p.error_payload(
                E.OutOfRange, f"Request of {len(payload)} bytes is larger than the {MAX_REQUEST_BYTES} "
                "bytes accepted.")), REPLY_QOS)]
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
        if len(entries) > MAX_VALUES_PER_PUSH:
            raise ApiError(E.OutOfRange, f"A push may carry at most {MAX_VALUES_PER_PUSH} values, "
                           f"not {len(entries)}.")
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
            mid = e["metricId"]
            value = e["value"]
            if isinstance(value, str) and len(value) > MAX_STRING_VALUE_CHARS:
                raise ApiError(E.OutOfRange, f"Value of metric '{mid}' is longer than "
                               f"{MAX_STRING_VALUE_CHARS} characters.")
            check_storable(new[mid] if mid in new else types[mid], value, mid)
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
        revoked = self.store.revoke_client(client.cid, self.now_ms())
        self.authority.write_crl(revoked)  # atomic: a failure leaves the former list
        client.sensors.clear()
        client.revoked = True
        self._revoked_pending = True
        return b""
