"""The agent client: one mutual-TLS MQTT link to the agent's API port and every operation of
agent-api.md §4 as a method, each in a blocking form and an ``*_async`` form returning a
`concurrent.futures.Future` of a `Reply`.

Threads: paho's network thread delivers replies and resolves futures (done-callbacks run there:
keep them short and never block on another request inside one); the link's supervisor thread
reconnects; a deadline thread fails requests that time out and then drops the connection. A
``driven`` client (the bridge's delivery) has no network thread: the supervisor opens and fences
each connection, then the owner's thread does its I/O in `AgentClient.drive` (answers and their
callbacks run there) and in `AgentClient.result`; a request from another thread is written by it.
Replies are matched by the rules of `pibridge.agent.pending` (read its docstring: why no answer
is ever credited to the wrong request): one request per key on the wire, barrier pings, a timeout
drops the connection, a new connection is usable once its session barrier was echoed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from pibridge import protocol
from pibridge.agent.credentials import CredentialFiles, Credentials
from pibridge.agent.errors import (
    AgentConnectionError,
    AgentError,
    AgentReplyError,
    ConfigurationError,
    ConnectionErrorKind,
    ErrorCode,
    ProtocolError,
    ProvisioningError,
    RequestTimeout,
    reply_error,
)
from pibridge.agent.pending import DeadlineWatcher, PendingRequest, PendingTable, settle
from pibridge.agent.settings import AgentSettings, check_seconds
from pibridge.mqtt import (
    Backoff,
    ConnectFailure,
    Endpoint,
    FailureKind,
    MqttError,
    MqttLink,
    MqttSession,
    NotConnected,
    TlsFiles,
    new_client_id,
    tls_context,
)
from pibridge.protocol import OPERATIONS, Op, ReplyKind

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 10.0
#: QoS of the reply and livedata subscriptions. The agent publishes its answers at QoS 1, but the
#: session is clean: an answer lost with its connection is lost at QoS 1 too (the request fails
#: and is not re-sent), and over a live connection TCP already delivers in order. QoS 0 spares
#: one PUBACK per answer, which a Pi Zero feels.
REPLY_QOS = 0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: QoS of requests (agent-api.md §1: QoS 1, QoS 0 accepted). The agent's answer is a request's
#: acknowledgement, not the broker's PUBACK: a request counts as done only once its answer is
#: matched (`pibridge.agent.pending`), and one that gets none times out, drops the connection and
#: fails, so its owner sends it again (delivery does, for pushes). At QoS 1 the PUBACK would add
#: nothing to that: the session is clean and a fresh paho client serves each connection, so a
#: publish lost with its connection is never re-sent by paho either way. QoS 0 spares one packet
#: read, parsed and dispatched per request (about 15 % of the bridge's CPU per value, issue 17).
#: The broker then hands the request to the agent at QoS 0 as well: a broker that drops QoS 0
#: (mosquitto past max_queued_messages, 1,000 by default) or an agent reconnecting to its broker
#: loses the request where QoS 1 might have delayed it. That costs a timeout and a resend, not
#: data; a real agent should show whether it happens.
REQUEST_QOS = 0
#: QoS of error reports: the agent never answers them, so the PUBACK is all there is.
REPORT_QOS = 1
#: Extra seconds a blocking call waits beyond its bound (the deadline thread fires first).
_BLOCKING_GRACE_S = 5.0
#: A blocking call waits this many request timeouts: its request may wait for a barrier before
#: it is published (`pibridge.agent.pending` R2), then for its answer, then for the barrier that
#: confirms it (R7), each bounded by the timeout (past it the connection drops and it fails).
_BLOCKING_TIMEOUTS = 3
#: Bound of the topic → route cache (one entry per sensor/metric reply topic seen).
_ROUTE_CACHE_MAX = 4096
#: Largest payload MQTT can carry (its remaining-length field), checked before a request is queued.
MQTT_MAX_PAYLOAD = 268_435_455 - 65_535
#: Seconds between two looks at a connection whose session barrier is awaited (it may close).
_BARRIER_POLL_S = 0.05
#: Session barrier pings a new connection sends while they are answered with errors (e.g. 3).
_BARRIER_ATTEMPTS = 10

Value = bool | int | float | str
JsonBody = Mapping[str, Any] | bytes | str


# --- replies --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """The agent's answer: ``value`` parsed (dict/list for JSON replies, str for sentences),
    ``raw`` the payload bytes as received, ``topic`` where it came."""

    op: Op
    topic: str
    raw: bytes
    value: Any
    sensor_id: str = ""
    metric_id: str = ""

    @property
    def created_sensor_id(self) -> str:
        """create_sensor: the new sensor's id."""
        return str(self.value["sensorId"])

    @property
    def metric_ids(self) -> dict[str, str]:
        """create_metrics: ``{matchingId: metricId}``."""
        return {str(item["matchingId"]): str(item["metricId"]) for item in self.value}


@dataclass(frozen=True)
class LiveData:
    """A livedata message: ``values`` ``{metricId: value}``, ``timestamp_ms`` (None if absent)."""

    sensor_id: str
    values: dict[str, Any]
    timestamp_ms: int | None
    raw: bytes
    topic: str


@dataclass(frozen=True)
class MetricDefinition:
    """One metric to create: a predefined ``value_unit`` (`protocol.VALUE_UNITS`), or a custom
    ``value_type`` (`protocol.ValueType`) with a ``value_annotation`` (e.g. ``"lx"``).

    The one place that writes an element of the create-metrics request (agent-api.md §4)::

        +-----------------+---------------------------------+--------------------------------+
        | key             | predefined unit                 | custom type                    |
        +-----------------+---------------------------------+--------------------------------+
        | matchingId      | "1", "2", … (or matching_id)    | same                           |
        | name            | name (2–64 characters)          | same                           |
        | valueUnit       | "SI.Temperature.CELSIUS"        | —                              |
        | valueType       | —                               | "bool" "string" "double"       |
        |                 |                                 | "integer"                      |
        | valueAnnotation | —                               | annotation, "" when none       |
        +-----------------+---------------------------------+--------------------------------+
    """

    name: str
    value_unit: str | None = None
    value_type: str | None = None
    value_annotation: str | None = None
    matching_id: str | None = None

    def to_wire(self, default_matching_id: str) -> dict[str, str]:
        """This metric as one element of ``{"metrics": [...]}``; ``matchingId`` is ``matching_id``
        or ``default_matching_id``. A custom type always carries ``valueAnnotation``."""
        body = {"matchingId": self.matching_id or default_matching_id, "name": self.name}
        if self.value_unit is not None:
            body["valueUnit"] = self.value_unit
        if self.value_type is not None:
            body["valueType"] = str(self.value_type)
            body["valueAnnotation"] = self.value_annotation or ""
        elif self.value_annotation is not None:
            body["valueAnnotation"] = self.value_annotation
        return body


@dataclass(frozen=True)
class ConnectionEvent:
    """A change of the connection state: ``up``, and for a drop the error (None for our close).

    On ``up``: ``client_id`` is the clientId this connection speaks for, and ``previous_client_id``
    is set (non-empty) when the credentials on disk changed since the last connection, e.g. after
    ``pibridge provision --override``: everything registered under the old clientId belongs to
    another client now, so an owner of sensors and metrics registers them again."""

    up: bool
    error: AgentConnectionError | None = None
    client_id: str = ""
    previous_client_id: str = ""

    @property
    def client_id_changed(self) -> bool:
        return bool(self.previous_client_id)


# --- failures → user-facing errors ------------------------------------------------------------
_KINDS = {
    FailureKind.REFUSED: ConnectionErrorKind.REFUSED,
    FailureKind.UNRESOLVED: ConnectionErrorKind.UNRESOLVED,
    FailureKind.TLS_FILES: ConnectionErrorKind.CREDENTIALS,
    FailureKind.CERTIFICATE_REQUIRED: ConnectionErrorKind.CERTIFICATE_REQUIRED,
    FailureKind.CERTIFICATE_REJECTED: ConnectionErrorKind.CERTIFICATE_REJECTED,
    FailureKind.SERVER_NOT_TRUSTED: ConnectionErrorKind.SERVER_NOT_TRUSTED,
    FailureKind.TIMEOUT: ConnectionErrorKind.TIMEOUT,
    FailureKind.LOST: ConnectionErrorKind.LOST,
}


#: Failures retrying cannot cure: the link stops and `AgentClient.fatal_error` says why.
_FATAL = (FailureKind.CERTIFICATE_REJECTED, FailureKind.SERVER_NOT_TRUSTED, FailureKind.TLS_FILES,
          FailureKind.CERTIFICATE_REQUIRED)


def connection_error(failure: ConnectFailure, settings: AgentSettings, *,
                     provisioning: bool = False) -> AgentConnectionError:
    """An `AgentConnectionError` saying which host:port failed how, and what to do."""
    address = settings.provision_address if provisioning else settings.api_address
    kind = _KINDS[failure.kind]
    what = "the agent's provisioning port" if provisioning else "the agent"
    if kind is ConnectionErrorKind.REFUSED:
        message = (f"cannot reach {what} at {address} (connection refused): is the TeamViewer IoT Agent "
                   "(or `pibridge emulator serve`) running?")
    elif kind is ConnectionErrorKind.UNRESOLVED:
        message = (f"cannot resolve host {settings.host!r} ({failure.detail}): check --host (or the "
                   "profile's agent.host); the agent normally runs on localhost")
    elif kind is ConnectionErrorKind.CREDENTIALS:
        if failure.tls_file is not None and failure.tls_file == settings.ca_file:
            message = f"{failure.detail}: pass the agent's CA certificate with --ca-file"
        elif failure.tls_file is not None:
            message = f"{failure.detail}: run `pibridge provision --override`"
        else:
            message = failure.detail
    elif kind is ConnectionErrorKind.CERTIFICATE_REQUIRED:
        port_flag = "--provision-port" if provisioning else "--port"
        message = (f"{address} asks for a client certificate, which the provisioning port never does: "
                   f"it is the agent's API port (default {protocol.DEFAULT_API_PORT}), not its provisioning "
                   f"port (default {protocol.DEFAULT_PROVISION_PORT}): check {port_flag}")
    elif kind is ConnectionErrorKind.CERTIFICATE_REJECTED:
        cert = CredentialFiles(settings.cert_folder, settings.client_name).cert
        message = (f"certificate {cert} rejected by the agent at {address} ({failure.detail}): "
                   "run `pibridge provision --override`")
    elif kind is ConnectionErrorKind.SERVER_NOT_TRUSTED:
        message = (f"the agent at {address} is not trusted: its certificate does not verify against "
                   f"CA file {settings.ca_file} ({failure.detail}): pass the agent's CA with --ca-file")
    elif kind is ConnectionErrorKind.TIMEOUT:
        message = (f"no answer from {what} at {address} ({failure.detail}): is the agent running "
                   "and is the address right?")
    else:
        message = f"connection to the agent at {address} lost ({failure.detail})"
    return AgentConnectionError(kind, address, message, failure.detail)


def not_connected(settings: AgentSettings, why: str = "not connected") -> AgentConnectionError:
    return AgentConnectionError(ConnectionErrorKind.NOT_CONNECTED, settings.api_address,
                                f"{why} to the agent at {settings.api_address}: call connect() first"
                                if why == "not connected" else f"{why} ({settings.api_address})")


# --- topic routing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Route:
    op: Op | None  # None: livedata
    sensor_id: str
    metric_id: str
    is_error: bool


class _Router:
    """Maps a received topic to (operation, sensor id, metric id, success/error) or livedata."""

    def __init__(self, cid: str) -> None:
        self._patterns: list[tuple[re.Pattern[str], Op | None, bool]] = []
        for operation in OPERATIONS.values():
            self._patterns.append((protocol.template_regex(operation.success, cid=cid), operation.op, False))
            self._patterns.append((protocol.template_regex(operation.error, cid=cid), operation.op, True))
        self._patterns.append((protocol.template_regex(protocol.LIVEDATA, cid=cid), None, False))
        self._cache: dict[str, _Route | None] = {}

    def route(self, topic: str) -> _Route | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = None
        for pattern, op, is_error in self._patterns:
            match = pattern.match(topic)
            if match:
                groups = match.groupdict()
                found = _Route(op, groups.get("sid") or "", groups.get("mid") or "", is_error)
                break
        if len(self._cache) >= _ROUTE_CACHE_MAX:
            self._cache.clear()
        self._cache[topic] = found
        return found


@dataclass(frozen=True)
class _Addressing:
    """Everything derived from the clientId, replaced as one object when it changes (so a
    request never mixes an old topic with a new clientId)."""

    client_id: str
    router: _Router | None
    topics: dict[tuple[Op, str, str], str]

    @classmethod
    def for_client(cls, client_id: str) -> _Addressing:
        return cls(client_id, _Router(client_id) if client_id else None, {})


# --- reply parsing ----------------------------------------------------------------------------
def _shape_ok(op: Op, value: Any) -> bool:
    if op is Op.PING:
        return isinstance(value, dict) and isinstance(value.get("answer"), str)
    if op is Op.LIST_SENSORS:
        return isinstance(value, list) and all(isinstance(s, dict) and "sensorId" in s for s in value)
    if op is Op.CREATE_SENSOR:
        return isinstance(value, dict) and isinstance(value.get("sensorId"), str)
    if op is Op.CREATE_METRICS:
        return isinstance(value, list) and all(
            isinstance(m, dict) and "matchingId" in m and isinstance(m.get("metricId"), str) for m in value)
    if op is Op.DESCRIBE_METRIC:
        return isinstance(value, dict) and isinstance(value.get("metricId"), str)
    return True


def parse_reply(op: Op, route: _Route, topic: str, raw: bytes) -> Reply:
    """A success reply as a `Reply`; an error reply raised as its typed `AgentReplyError`;
    anything malformed raised as `ProtocolError`."""
    if route.is_error:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        code = body.get("errorcode") if isinstance(body, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError(f"{op}: malformed error reply on {topic}: {raw[:200]!r}",
                                topic=topic, raw=raw)
        raise reply_error(code, str(body.get("errorMessage", "")), raw=raw, topic=topic, request=str(op))
    if OPERATIONS[op].reply is ReplyKind.JSON:
        try:
            value = json.loads(raw)
        except ValueError:
            raise ProtocolError(f"{op}: reply on {topic} is not JSON: {raw[:200]!r}",
                                topic=topic, raw=raw) from None
        if not _shape_ok(op, value):
            raise ProtocolError(f"{op}: reply on {topic} has an unexpected shape: {raw[:200]!r}",
                                topic=topic, raw=raw)
    else:
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{op}: reply on {topic} is not UTF-8 text: {raw[:200]!r}",
                                topic=topic, raw=raw) from None
    return Reply(op, topic, raw, value, route.sensor_id, route.metric_id)


# --- request encoding -------------------------------------------------------------------------
def _compact(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def encode_push(values: Mapping[str, Value] | Iterable[tuple[Any, ...]], timestamp_ms: int | None) -> bytes:
    """The push body ``{"metrics":[{"metricId","value"[,"timestamp"]}…][,"timestamp"]}``, compact.

    ``values``: ``{metricId: value}`` or ``(metricId, value)`` / ``(metricId, value, timestamp_ms)``
    tuples. NaN and ±inf are refused with ValueError before anything is sent.
    """
    if isinstance(values, Mapping):
        metrics = [{"metricId": mid, "value": value} for mid, value in values.items()]
    else:
        metrics = []
        for sample in values:
            item = {"metricId": sample[0], "value": sample[1]}
            if len(sample) > 2 and sample[2] is not None:
                item["timestamp"] = _check_timestamp(sample[2])
            metrics.append(item)
    if not metrics:
        raise ValueError("push needs at least one value")
    body: dict[str, Any] = {"metrics": metrics}
    if timestamp_ms is not None:
        body["timestamp"] = _check_timestamp(timestamp_ms)
    try:
        return _compact(body)
    except ValueError:  # allow_nan=False: the C encoder found NaN/inf; name the culprit
        for item in metrics:
            value = item["value"]
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metric {item['metricId']}: {value} cannot be pushed "
                                 "(the agent accepts finite numbers only)") from None
        raise
    except TypeError as exc:
        raise ValueError(f"push values must be numbers, booleans or strings: {exc}") from None


def _check_timestamp(timestamp_ms: Any) -> int:
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
        raise ValueError(f"timestamp must be integer milliseconds since the epoch, not {timestamp_ms!r}")
    return timestamp_ms


def _check_id(what: str, value: str) -> str:
    if not protocol.is_topic_level(value):
        raise ValueError(f"{what} must be a non-empty id without '/', '+', '#', not {value!r}")
    return value


def _error_code(payload: bytes) -> int | None:
    try:
        code = json.loads(payload).get("errorcode")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _echoed(payload: bytes) -> str | None:
    """The token a ping answer echoes; None when it has none (the oldest ping takes it: R3)."""
    try:
        answer = json.loads(payload).get("answer")
    except (ValueError, AttributeError):
        return None
    return answer if isinstance(answer, str) else None


def _ping_check(token: str) -> Callable[[Reply], None]:
    def check(reply: Reply) -> None:
        if reply.value.get("answer") != token:
            raise ProtocolError(f"ping: answer {reply.value.get('answer')!r} does not echo {token!r}",
                                topic=reply.topic, raw=reply.raw)
    return check


def _metrics_check(matching_ids: list[str]) -> Callable[[Reply], None]:
    def check(reply: Reply) -> None:
        answered = [str(item["matchingId"]) for item in reply.value]
        if sorted(answered) != sorted(matching_ids):
            raise ProtocolError(f"create_metrics: answer for matchingIds {answered} to a request for "
                                f"{matching_ids}", topic=reply.topic, raw=reply.raw)
    return check


# --- the client ---------------------------------------------------------------------------------
class AgentClient:
    """A client of the agent's API port (mutual TLS with the provisioned certificate).

    >>> with AgentClient(settings) as agent:       # connect() on enter, close() on exit
    ...     sid = agent.create_sensor("Greenhouse").created_sensor_id
    """

    def __init__(self, settings: AgentSettings, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
                 backoff: Backoff | None = None, driven: bool = False) -> None:
        self.settings = settings
        #: no network thread: the owner's thread reads answers in `drive` (see its docstring)
        self.driven = driven
        self.request_timeout = check_seconds("request_timeout", request_timeout)
        self._backoff = backoff
        self._files = CredentialFiles(settings.cert_folder, settings.client_name)
        self._pending = PendingTable(self._new_barrier)
        self._send_lock = threading.Lock()  # serializes the table's decisions and their publishing
        self._wire: MqttSession | None = None  # where queued requests and barriers are published
        self._watcher: DeadlineWatcher | None = None
        self._link: MqttLink | None = None
        self._session: MqttSession | None = None
        self._addressing = _Addressing.for_client("")
        self._previous_client_id = ""  # set when the credentials changed: told with the next "up"
        self._mqtt_client_id = new_client_id()
        self._state = threading.Condition()
        self._last_error: AgentConnectionError | None = None
        self._fatal: AgentConnectionError | None = None
        self._was_up = False
        self._events_lock = threading.RLock()  # orders up/down events across the two threads
        self._closed_count = 0  # close() calls, so that a connect() waiting meanwhile notices
        self._persist = False
        self._livedata_listeners: list[Callable[[LiveData], None]] = []
        self._livedata_lock = threading.Lock()  # orders livedata (un)subscribes on the wire
        self._livedata_session: MqttSession | None = None  # the session subscribed to livedata
        self._connection_listeners: list[Callable[[ConnectionEvent], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def client_id(self) -> str:
        """The clientId (CN of the certificate) this client addresses; empty before connect().

        It follows the credentials on disk: every (re)connection reads them afresh, and when
        another certificate was stored meanwhile (``pibridge provision --override``) the client
        connects with it and addresses its clientId; the "up" `ConnectionEvent` then carries
        ``previous_client_id``."""
        return self._addressing.client_id

    @property
    def mqtt_client_id(self) -> str:
        """The random MQTT client identifier of this client object (not the clientId)."""
        return self._mqtt_client_id

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and session.is_open

    def connect(self, timeout: float = DEFAULT_CONNECT_TIMEOUT_S, *, persist: bool = False) -> None:
        """Connect (mutual TLS) and subscribe; afterwards the link reconnects by itself.

        Raises `AgentConnectionError` on the first failed attempt, or with ``persist`` keeps
        retrying transient failures (refused, timeout) until ``timeout`` seconds passed. A rejected
        certificate or an untrusted server always ends it at once. Raises `ProvisioningError`
        (no credentials), `ConfigurationError` (CA, certificate or key unusable) and ValueError
        (``timeout`` not in (0, 1 day]) before trying.
        """
        timeout = check_seconds("timeout", timeout)
        if self._link is not None:
            if self._fatal is None:
                return
            self.close()  # the link was stopped by a rejected certificate: start afresh
        # an unusable CA, certificate or key is a setting to fix, not a reason to retry: checked here
        self.settings.require_ca_file()
        credentials = self._files.snapshot()
        tls = TlsFiles(self.settings.ca_file, credentials.cert_file, credentials.key_file)
        try:
            tls_context(tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigurationError(f"cannot load certificate {self._files.cert} with key {self._files.key} "
                                     f"({getattr(exc, 'reason', None) or exc}): run "
                                     "`pibridge provision --override`") from exc
        self._follow(credentials)
        self._fatal = self._last_error = None
        self._persist = persist
        self._watcher = DeadlineWatcher(self._pending, self._timeout_error, self._timed_out,
                                        self._read_arrived if self.driven else None)
        self._watcher.start()
        self._link = MqttLink(self._endpoint, client_id=self._mqtt_client_id, on_message=self._on_message,
                              on_up=self._on_up, on_down=self._on_down, backoff=self._backoff,
                              connect_timeout=min(timeout, DEFAULT_CONNECT_TIMEOUT_S),
                              threaded=not self.driven)
        self._link.start()
        deadline = time.monotonic() + timeout
        with self._state:
            closed_before = self._closed_count
            while True:
                if self._session is not None:
                    return
                if self._closed_count != closed_before:  # close() from another thread meanwhile
                    raise not_connected(self.settings, "client closed while connecting")
                error = self._fatal or (None if persist else self._last_error)
                remaining = deadline - time.monotonic()
                if error is None and remaining <= 0 and self._wire is not None:
                    error = AgentConnectionError(  # connected, but the session barrier is unanswered
                        ConnectionErrorKind.TIMEOUT, self.settings.api_address,
                        f"no answer from the agent at {self.settings.api_address} within {timeout:g} s: "
                        "connected, but its ping is not answered (is the agent hanging?)")
                elif error is None and remaining <= 0:
                    error = AgentConnectionError(
                        ConnectionErrorKind.TIMEOUT, self.settings.api_address,
                        f"could not connect to the agent at {self.settings.api_address} within {timeout:g} s"
                        + (f" (last failure: {self._last_error})" if self._last_error else "")
                        + ": is the agent running?")
                if error is not None:
                    break
                self._state.wait(remaining)
        self.close()
        raise error

    def _endpoint(self) -> Endpoint:
        """The link calls this before every connection attempt: the credentials as they are on
        disk now. Missing credentials are a `FailureKind.TLS_FILES` failure (fatal, see _on_down)."""
        try:
            credentials = self._files.snapshot()
        except ProvisioningError as exc:
            raise ConnectFailure(FailureKind.TLS_FILES, str(exc)) from exc
        self._follow(credentials)
        tls = TlsFiles(self.settings.ca_file, credentials.cert_file, credentials.key_file)
        return Endpoint(self.settings.host, self.settings.port, tls)

    def _follow(self, credentials: Credentials) -> None:
        """Address the clientId of ``credentials``; remember a change for the next "up" event.
        Runs only while no session is up (in connect() or before a reconnection attempt)."""
        previous = self._addressing.client_id
        if credentials.client_id == previous:
            return
        with self._send_lock:
            self._addressing = _Addressing.for_client(credentials.client_id)
        if previous:
            self._previous_client_id = previous
            log.warning("the credentials in %s changed: now client %s (was %s)", self.settings.cert_folder,
                        credentials.client_id, previous)

    def close(self) -> None:
        """Disconnect; outstanding requests fail with `AgentConnectionError` (idempotent)."""
        link, self._link = self._link, None
        with self._send_lock, self._state:
            self._session = self._wire = None
        # fail before stopping the link: a session barrier awaited on the link's thread ends now
        self._fail_outstanding(not_connected(self.settings, "client closed"))
        if link is not None:
            link.stop()
        with self._state:
            self._session = None
            self._closed_count += 1
            self._state.notify_all()  # a connect() waiting in another thread gives up at once
        self._fail_outstanding(not_connected(self.settings, "client closed"))
        with self._events_lock:  # our own close: a "down" without an error
            if self._was_up:
                self._was_up = False
                self._notify_connection(ConnectionEvent(False))
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def __enter__(self) -> AgentClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def fatal_error(self) -> AgentConnectionError | None:
        """The failure that stopped reconnecting for good, or None: certificate rejected, server
        not trusted, a port that wants a client certificate where none is due, or credentials
        gone from disk or unloadable (kind `ConnectionErrorKind.CREDENTIALS`, e.g. after
        ``pibridge deprovision``). `connect` starts afresh after it, e.g. once re-provisioned."""
        return self._fatal

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the link is up (e.g. after a reconnect); False on timeout or a fatal failure."""
        deadline = time.monotonic() + timeout
        with self._state:
            while not self.connected and self._fatal is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state.wait(remaining)
            return self.connected

    def on_connection_change(self, callback: Callable[[ConnectionEvent], None]) -> Callable[[], None]:
        """Call ``callback(ConnectionEvent)`` on every up/down change; returns a function removing it."""
        self._connection_listeners.append(callback)
        return lambda: self._connection_listeners.remove(callback)

    def on_livedata(self, callback: Callable[[LiveData], None]) -> Callable[[], None]:
        """Call ``callback(LiveData)`` for every livedata message; returns a function removing it.

        The client subscribes to livedata only while a listener exists: the first listener
        subscribes (renewed on every reconnect), removing the last one unsubscribes. Without
        listeners each push brings one message (the answer) instead of two. Livedata the agent
        publishes after this returns (connected) is delivered."""
        self._livedata_listeners.append(callback)
        self._sync_livedata()

        def remove() -> None:
            self._livedata_listeners.remove(callback)
            self._sync_livedata()
        return remove

    # -- generic request -----------------------------------------------------------------------
    def request_async(self, op: Op, body: JsonBody = b"{}", *, sensor_id: str = "", metric_id: str = "",
                      timeout: float | None = None,
                      check: Callable[[Reply], None] | None = None) -> Future[Reply]:
        """Publish one request (`REQUEST_QOS`) and return the future of its answer.

        ``body``: a JSON object, or the payload bytes/str as they are. The future fails with a typed
        `AgentReplyError`, `ProtocolError`, `RequestTimeout` or `AgentConnectionError`. Raised at
        once instead: `AgentConnectionError` before the first connect, ValueError for an id that
        cannot be a topic level or a payload MQTT cannot carry.
        """
        if isinstance(body, bytes):
            payload = body
        else:
            payload = body.encode() if isinstance(body, str) else _compact(body)
        if len(payload) > MQTT_MAX_PAYLOAD:
            raise ValueError(f"{op}: a payload of {len(payload)} bytes is more than MQTT can carry")
        timeout = self.request_timeout if timeout is None else check_seconds("timeout", timeout)
        key = (op, sensor_id, metric_id)
        addressing = self._addressing
        topic = addressing.topics.get(key)
        if topic is None:
            topic = self._request_topic(addressing, key)
        future: Future[Reply] = Future()
        description = f"{op} {sensor_id}{'/' + metric_id if metric_id else ''}".strip()
        token = str(body.get("request", "")) if op is Op.PING and isinstance(body, Mapping) else ""
        error: AgentError | None = None
        failed: list[PendingRequest] = []
        # decided and published under the send lock, so the table's order is the wire order (the
        # network thread publishes requests whose turn came under the same lock)
        with self._send_lock:
            session = self._session
            if session is None:
                error = self._fatal or not_connected(self.settings)
            else:
                if addressing is not self._addressing:  # the clientId changed since the lookup
                    topic = self._request_topic(self._addressing, key)
                request = PendingRequest(key, future, timeout, description, check, topic, payload,
                                         token=token)
                failed = self._publish(session, self._pending.add(request))
        if error is not None:
            settle(future, error=error)
        self._fail_unsent(failed)
        return future

    def _new_barrier(self, number: int) -> PendingRequest:
        """Barrier ping ``number`` (`PendingTable` calls this): a unique token, the request timeout."""
        token = f"pibridge-barrier-{secrets.token_hex(8)}"
        topic = OPERATIONS[Op.PING].request.format(cid=self._addressing.client_id, sid="", mid="")
        return PendingRequest((Op.PING, "", ""), Future(), self.request_timeout, f"barrier ping {number}",
                              _ping_check(token), topic, _compact({"request": token}), token=token,
                              barrier=number)

    def _publish(self, session: MqttSession | None, requests: list[PendingRequest]) -> list[PendingRequest]:
        """Publish ``requests`` in order (call with the send lock held). A publish that fails
        means the connection is going: returns the requests not sent (taken back from the table;
        fail them with `_fail_unsent` once the lock is released), the rest fail with the connection."""
        for index, request in enumerate(requests):
            try:
                if session is None:
                    raise NotConnected("no connection")
                session.publish(request.topic, request.payload, REQUEST_QOS)
            except NotConnected:
                failed = requests[index:]
                self._pending.discard(failed)
                return failed
        return []

    def _fail_unsent(self, failed: list[PendingRequest]) -> None:
        for request in failed:
            settle(request.future, error=not_connected(self.settings, "connection lost"))

    def _request_topic(self, addressing: _Addressing, key: tuple[Op, str, str]) -> str:
        op, sensor_id, metric_id = key
        if not addressing.client_id:
            raise not_connected(self.settings)
        if sensor_id:  # ids become topic levels: checked once per key, before the first publish
            _check_id("sensor id", sensor_id)
        if metric_id:
            _check_id("metric id", metric_id)
        topic = OPERATIONS[op].request.format(cid=addressing.client_id, sid=sensor_id, mid=metric_id)
        if len(addressing.topics) < _ROUTE_CACHE_MAX:
            addressing.topics[key] = topic
        return topic

    def request(self, op: Op, body: JsonBody = b"{}", *, sensor_id: str = "", metric_id: str = "",
                timeout: float | None = None) -> Reply:
        """Blocking `request_async`: the `Reply`, or its error raised."""
        return self._wait(self.request_async(op, body, sensor_id=sensor_id, metric_id=metric_id,
                                             timeout=timeout), timeout)

    def _wait(self, future: Future[Reply], timeout: float | None) -> Reply:
        timeout = self.request_timeout if timeout is None else timeout
        return self.result(future, _BLOCKING_TIMEOUTS * timeout + _BLOCKING_GRACE_S)

    def result(self, future: Future[Reply], timeout: float) -> Reply:
        """``future.result(timeout)`` for a future of this client's; a ``driven`` client reads
        the network meanwhile (its owner's thread waits here, and it is the one that reads)."""
        if not self.driven:
            return future.result(timeout)
        deadline = time.monotonic() + timeout
        while not future.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            session = self._session or self._wire
            # an answer ends the loop's wait, and so does a close from another thread (a timeout)
            if session is None or not session.wait_network(min(left, 1.0)):
                wait([future], min(left, _BARRIER_POLL_S))  # no connection (yet): its end settles it
        return future.result(0)

    def _read_arrived(self) -> None:
        """(The deadline thread, ``driven`` clients.) A deadline passed: read what has arrived if
        the owner is not reading now (it may be blocked elsewhere: a slow disk, a provisioning),
        so that an answer that came in time is no timeout."""
        session = self._wire
        if session is not None:
            session.wait_network(0.0)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """(``driven`` clients, the owner's thread.) Requests sent inside go out together when it
        ends, in one TLS write (`MqttSession.corked`); nothing changes for other clients."""
        session = self._session if self.driven else None
        if session is None:
            yield
            return
        with session.corked():
            yield

    def drive(self, timeout: float, wake: socket.socket | None) -> None:
        """(``driven`` clients, the owner's thread.) Read and write the connection for up to
        ``timeout`` s, or until ``wake`` (a socket another thread writes to) is readable or
        something arrived: answers settle their futures here, on the caller's thread. Without a
        connection handed over yet, only waits for ``wake`` (the link's own thread opens and
        fences a connection; its "up" event says when this one takes over). A keepalive is
        due at least every `MqttSession.network_wait_s`: never wait longer on a connection."""
        session = self._session
        if session is not None and session.is_open:
            session.loop(min(timeout, session.network_wait_s), wake)
        else:
            select.select([wake] if wake is not None else [], [], [], timeout)

    # -- operations (§4) -------------------------------------------------------------------------
    def ping_async(self, *, timeout: float | None = None) -> Future[Reply]:
        """Ping with a unique token; the answer must echo it (else `ProtocolError`)."""
        token = f"pibridge-{secrets.token_hex(8)}"
        return self.request_async(Op.PING, {"request": token}, timeout=timeout, check=_ping_check(token))

    def ping(self, *, timeout: float | None = None) -> Reply:
        return self._wait(self.ping_async(timeout=timeout), timeout)

    def list_sensors_async(self, *, timeout: float | None = None) -> Future[Reply]:
        """``[{"sensorId","name","store","metrics":[{"metricId","link"}]}]``."""
        return self.request_async(Op.LIST_SENSORS, timeout=timeout)

    def list_sensors(self, *, timeout: float | None = None) -> Reply:
        return self._wait(self.list_sensors_async(timeout=timeout), timeout)

    def create_sensor_async(self, name: str, *, timeout: float | None = None) -> Future[Reply]:
        """``{"name","sensorId"}`` (see `Reply.created_sensor_id`)."""
        return self.request_async(Op.CREATE_SENSOR, {"name": name}, timeout=timeout)

    def create_sensor(self, name: str, *, timeout: float | None = None) -> Reply:
        return self._wait(self.create_sensor_async(name, timeout=timeout), timeout)

    def update_sensor_async(self, sensor_id: str, name: str, *,
                            timeout: float | None = None) -> Future[Reply]:
        return self.request_async(Op.UPDATE_SENSOR, {"name": name}, timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id))

    def update_sensor(self, sensor_id: str, name: str, *, timeout: float | None = None) -> Reply:
        return self._wait(self.update_sensor_async(sensor_id, name, timeout=timeout), timeout)

    def delete_sensor_async(self, sensor_id: str, *, timeout: float | None = None) -> Future[Reply]:
        return self.request_async(Op.DELETE_SENSOR, timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id))

    def delete_sensor(self, sensor_id: str, *, timeout: float | None = None) -> Reply:
        return self._wait(self.delete_sensor_async(sensor_id, timeout=timeout), timeout)

    def create_metrics_async(self, sensor_id: str,
                             definitions: Iterable[MetricDefinition | Mapping[str, Any]],
                             *, timeout: float | None = None) -> Future[Reply]:
        """Create metrics; ``matchingId`` defaults to "1", "2", … in order. The reply's
        `Reply.metric_ids` maps matchingId → metricId."""
        wire = []
        for index, definition in enumerate(definitions, start=1):
            if isinstance(definition, MetricDefinition):
                wire.append(definition.to_wire(str(index)))
            else:
                item = dict(definition)
                item.setdefault("matchingId", str(index))
                wire.append(item)
        matching_ids = [str(item["matchingId"]) for item in wire]
        return self.request_async(Op.CREATE_METRICS, {"metrics": wire}, timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id),
                                  check=_metrics_check(matching_ids))

    def create_metrics(self, sensor_id: str, definitions: Iterable[MetricDefinition | Mapping[str, Any]],
                       *, timeout: float | None = None) -> Reply:
        return self._wait(self.create_metrics_async(sensor_id, definitions, timeout=timeout), timeout)

    def describe_metric_async(self, sensor_id: str, metric_id: str, *,
                              timeout: float | None = None) -> Future[Reply]:
        """``{"metricId","name","valueUnit"}`` or ``{"metricId","name","valueType","valueAnnotation"}``."""
        return self.request_async(Op.DESCRIBE_METRIC, timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id),
                                  metric_id=_check_id("metric id", metric_id))

    def describe_metric(self, sensor_id: str, metric_id: str, *, timeout: float | None = None) -> Reply:
        return self._wait(self.describe_metric_async(sensor_id, metric_id, timeout=timeout), timeout)

    def update_metrics_async(self, sensor_id: str, changes: Iterable[Mapping[str, Any]], *,
                             timeout: float | None = None) -> Future[Reply]:
        """``changes``: ``[{"metricId", "name"?, "valueAnnotation"?}, …]``."""
        return self.request_async(Op.UPDATE_METRICS, {"metrics": [dict(c) for c in changes]}, timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id))

    def update_metrics(self, sensor_id: str, changes: Iterable[Mapping[str, Any]], *,
                       timeout: float | None = None) -> Reply:
        return self._wait(self.update_metrics_async(sensor_id, changes, timeout=timeout), timeout)

    def delete_metrics_async(self, sensor_id: str, metric_ids: Iterable[str], *,
                             timeout: float | None = None) -> Future[Reply]:
        body = {"metrics": [{"metricId": mid} for mid in metric_ids]}
        return self.request_async(Op.DELETE_METRICS, body, timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id))

    def delete_metrics(self, sensor_id: str, metric_ids: Iterable[str], *,
                       timeout: float | None = None) -> Reply:
        return self._wait(self.delete_metrics_async(sensor_id, metric_ids, timeout=timeout), timeout)

    def push_async(self, sensor_id: str, values: Mapping[str, Value] | Iterable[tuple[Any, ...]],
                   timestamp_ms: int | None = None, *, timeout: float | None = None) -> Future[Reply]:
        """Push one message for one sensor (see `encode_push`); ValueError for NaN/inf, before sending."""
        return self.request_async(Op.PUSH, encode_push(values, timestamp_ms), timeout=timeout,
                                  sensor_id=_check_id("sensor id", sensor_id))

    def push(self, sensor_id: str, values: Mapping[str, Value] | Iterable[tuple[Any, ...]],
             timestamp_ms: int | None = None, *, timeout: float | None = None) -> Reply:
        return self._wait(self.push_async(sensor_id, values, timestamp_ms, timeout=timeout), timeout)

    def deprovision_async(self, *, timeout: float | None = None) -> Future[Reply]:
        """Delete this client and everything it registered; the agent then revokes its certificate."""
        return self.request_async(Op.DEPROVISION, timeout=timeout)

    def deprovision(self, *, timeout: float | None = None) -> Reply:
        return self._wait(self.deprovision_async(timeout=timeout), timeout)

    def report_error(self, message: str, code: int, sensor_id: str | None = None,
                     metric_id: str | None = None) -> None:
        """Report an error to the agent (client, sensor or metric level); the agent never answers."""
        if metric_id is not None and sensor_id is None:
            raise ValueError("a metric error report needs the sensor id too")
        if metric_id is not None:
            template = protocol.METRIC_ERROR_REPORT
        elif sensor_id is not None:
            template = protocol.SENSOR_ERROR_REPORT
        else:
            template = protocol.CLIENT_ERROR_REPORT
        topic = protocol.topic(template, self._addressing.client_id,
                               _check_id("sensor id", sensor_id) if sensor_id else "",
                               _check_id("metric id", metric_id) if metric_id else "")
        session = self._session
        if session is None:
            raise self._fatal or not_connected(self.settings)
        try:
            session.publish(topic, _compact({"errorcode": int(code), "errorMessage": message}), REPORT_QOS)
        except NotConnected:
            raise not_connected(self.settings, "connection lost") from None

    # -- network-thread callbacks --------------------------------------------------------------
    def _on_up(self, session: MqttSession) -> None:
        client_id = self._addressing.client_id
        with self._livedata_lock:
            livedata = bool(self._livedata_listeners)
            self._livedata_session = session if livedata else None
        session.subscribe(protocol.client_subscriptions(client_id, livedata=livedata), qos=REPLY_QOS)
        self._session_barrier(session)
        with self._send_lock, self._state:
            if not session.is_open or self._wire is not session:
                # dropped while subscribing or fencing: _on_down reports it, the link retries
                return
            self._session = session
            self._last_error = None
            self._persist = True  # from now on the link reconnects by itself: report its failures
            self._state.notify_all()
        self._sync_livedata()  # listeners added or removed meanwhile
        log.info("connected to the agent at %s as client %s", self.settings.api_address, client_id)
        with self._events_lock:  # "up" only for a session still open, and never twice in a row
            if session.is_open and not self._was_up:
                self._was_up = True
                previous, self._previous_client_id = self._previous_client_id, ""
                self._notify_connection(ConnectionEvent(True, client_id=client_id,
                                                        previous_client_id=previous))

    def _session_barrier(self, session: MqttSession) -> None:
        """R5 of `pibridge.agent.pending`: publish barrier pings on the new connection until one is
        echoed; answers arriving meanwhile (late ones of earlier connections) find nothing waiting
        and are ignored. A barrier that times out drops this connection (the link then tries
        again after its backoff); raises `ConnectFailure` when the connection is gone."""
        with self._send_lock:
            stale = self._pending.take_all()  # nothing of an earlier connection may wait here
            self._wire = session
        for request in stale:
            settle(request.future, error=not_connected(self.settings, "connection lost"))
        reason: BaseException | None = None
        for _ in range(_BARRIER_ATTEMPTS):
            with self._send_lock:
                if self._wire is not session:
                    break
                barrier = self._pending.session_barrier()
                failed = self._publish(session, [barrier])
            if failed:
                break
            while not barrier.future.done() and session.is_open:
                session.wait_network(_BARRIER_POLL_S)
            if not barrier.future.done():
                break  # connection gone
            reason = barrier.future.exception()
            if reason is None:
                return
            if isinstance(reason, AgentReplyError) and reason.code is ErrorCode.ForbiddendAccess:
                # the agent refuses this client (deprovisioned, revoked): every request will meet
                # 18, none a success, so nothing can be falsely acknowledged; its owner must see
                # the 18 (and re-provision), so the connection is usable
                return
            if not isinstance(reason, AgentReplyError):
                break  # timed out (the connection was dropped)
            # an error answer (e.g. an injected 3): ping again, an echo is what counts
        with self._send_lock:
            if self._wire is session:
                self._wire = None
        raise ConnectFailure(FailureKind.TIMEOUT if isinstance(reason, RequestTimeout) else FailureKind.LOST,
                             f"no answer to the session barrier ping ({reason or 'connection closed'})",
                             session.endpoint)

    def _sync_livedata(self) -> None:
        """(Un)subscribe livedata on the live session to match whether anyone listens.

        The packet is sent under `_livedata_lock`, so concurrent changes reach the broker in
        the order they were decided; the SUBACK is awaited outside it (not on the network thread,
        which is the one that receives it)."""
        with self._livedata_lock:
            session = self._session
            if session is None or not session.is_open:
                return  # the next _on_up subscribes as needed
            wanted = bool(self._livedata_listeners)
            if wanted == (self._livedata_session is session):
                return
            filters = [protocol.livedata_filter(self._addressing.client_id)]
            try:
                if not wanted:
                    self._livedata_session = None
                    session.unsubscribe(filters)
                    return
                self._livedata_session = session
                wait = session.subscribe_nowait(filters, qos=REPLY_QOS)
            except MqttError as exc:  # connection gone: the reconnect subscribes again
                log.debug("livedata subscription not changed: %s", exc)
                return
        if not session.in_network_thread():
            try:
                wait(DEFAULT_CONNECT_TIMEOUT_S)
            except MqttError as exc:
                log.debug("livedata subscription not confirmed: %s", exc)

    def _on_down(self, failure: ConnectFailure) -> None:
        error = connection_error(failure, self.settings)
        with self._send_lock, self._state:
            self._session = self._wire = None
            changed = self._last_error is None or self._last_error.kind is not error.kind
            self._last_error = error
            if failure.kind in _FATAL:
                self._fatal = error
            self._state.notify_all()
        # a failure that connect() raises to its caller is not logged as well: logged once
        reported_elsewhere = not self._was_up and not self._persist
        (log.warning if changed and not reported_elsewhere else log.debug)("%s", error)
        self._fail_outstanding(error)
        if self._fatal is not None and self._link is not None:
            # retrying a rejected certificate helps nobody: stop the link (not from its own thread)
            threading.Thread(target=self._link.stop, name="agent-link-stop", daemon=True).start()
        with self._events_lock:
            if self._was_up:
                self._was_up = False
                self._notify_connection(ConnectionEvent(False, error))

    def _on_message(self, topic: str, payload: bytes) -> None:
        router = self._addressing.router
        route = router.route(topic) if router is not None else None
        if route is None:
            log.debug("message on unexpected topic %s ignored", topic)
            return
        if route.op is None:
            self._dispatch_livedata(route.sensor_id, topic, payload)
            return
        wire = self._wire
        if wire is None or not wire.in_network_thread():
            # delivered by an earlier connection's network thread while it winds down: its answers
            # must never reach requests of the current one (R5)
            log.debug("answer on %s from a dropped connection ignored", topic)
            return
        key = (route.op, route.sensor_id, route.metric_id)
        too_many_errors = False
        with self._send_lock:
            if route.op is Op.PING:
                refused = route.is_error and _error_code(payload) == ErrorCode.ForbiddendAccess
                decision = self._pending.ping_answered(None if route.is_error else _echoed(payload),
                                                       refused=refused)
                too_many_errors = self._pending.barrier_errors >= _BARRIER_ATTEMPTS
            else:
                decision = self._pending.answered(key)
            failed = self._publish(self._wire, decision.publish)
        self._fail_unsent(failed)
        request = decision.request
        if request is not None:
            outcome = self._outcome(request, route, topic, payload)
            if route.op is Op.PING:
                self._settle(request, outcome)  # a ping's token is its own proof
            else:
                request.outcome = outcome  # settled with a later barrier's echo (R7)
        for confirmed in decision.confirmed:
            self._settle(confirmed, confirmed.outcome)
        for unproven in decision.unproven:
            settle(unproven.future, error=ProtocolError(
                f"{unproven.description}: answered, but the agent refused this client before the "
                "answer could be confirmed as this request's; send it again"))
        if decision.replayed:
            self._drop_connection("an answer the agent had already given came again (it re-sent its "
                                  "answers), so answers since may belong to earlier requests")
        elif too_many_errors:
            self._drop_connection(f"{_BARRIER_ATTEMPTS} barrier pings in a row answered with errors")
        elif request is None and not decision.confirmed:
            log.debug("answer on %s with no outstanding request ignored", topic)

    @staticmethod
    def _outcome(request: PendingRequest, route: _Route, topic: str, payload: bytes) -> Any:
        """The reply an answer carries for ``request``, or the `AgentError` it means."""
        assert route.op is not None
        try:
            reply = parse_reply(route.op, route, topic, payload)
            if request.check is not None:
                request.check(reply)
        except AgentError as exc:
            return exc
        return reply

    @staticmethod
    def _settle(request: PendingRequest, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            settle(request.future, error=outcome)
        else:
            settle(request.future, outcome)

    def _dispatch_livedata(self, sensor_id: str, topic: str, payload: bytes) -> None:
        if not self._livedata_listeners:
            return
        try:
            body = json.loads(payload)
            values = {str(m["metricId"]): m.get("value") for m in body["metrics"]}
            timestamp = body.get("timestamp")
            timestamp_ms = timestamp if isinstance(timestamp, int) else None
            data = LiveData(sensor_id, values, timestamp_ms, payload, topic)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.debug("malformed livedata on %s ignored: %r", topic, payload[:200])
            return
        for listener in list(self._livedata_listeners):
            try:
                listener(data)
            except Exception:
                log.exception("livedata listener failed")

    def _notify_connection(self, event: ConnectionEvent) -> None:
        for listener in list(self._connection_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("connection listener failed")

    def _timed_out(self, expired: list[PendingRequest]) -> None:
        """R4 of `pibridge.agent.pending`: after a timeout the matching cannot be trusted; drop the
        connection, fail everything outstanding, let the link connect afresh (after its backoff).
        Runs on the deadline thread; a timeout of a connection already replaced changes nothing."""
        self._drop_connection(f"{expired[0].description}: no answer within {expired[0].timeout_s:g} s",
                              generation=expired[0].generation)

    def _drop_connection(self, detail: str, generation: int | None = None) -> None:
        """Drop the connection requests go out on: everything outstanding fails with a connection
        error; the link notices the close, waits its backoff and connects afresh. ``generation``:
        only if the requests of that `PendingTable.generation` are still the ones outstanding
        (a timeout noticed as the connection was being replaced must not drop the new one)."""
        with self._send_lock, self._state:
            if generation is not None and generation != self._pending.generation:
                log.debug("%s: the connection was replaced meanwhile; nothing to drop", detail)
                return
            session = self._wire
            self._wire = None
            was_up = self._session is session and session is not None
            if was_up:
                self._session = None
            error = AgentConnectionError(
                ConnectionErrorKind.LOST, self.settings.api_address,
                f"connection to the agent at {self.settings.api_address} dropped ({detail}): answers can "
                "no longer be matched; outstanding requests fail and are sent again on a new connection",
                detail)
            if was_up:
                self._last_error = error
                self._state.notify_all()
        if session is None:
            return
        log.warning("%s", error)
        self._fail_outstanding(error)
        with self._events_lock:
            if was_up and self._was_up:
                self._was_up = False
                self._notify_connection(ConnectionEvent(False, error))
        session.close()  # the link notices, waits its backoff and connects afresh

    def _fail_outstanding(self, error: AgentConnectionError) -> None:
        for request in self._pending.take_all():
            settle(request.future, error=AgentConnectionError(
                error.kind, error.address, f"{request.description}: {error}", error.detail))

    def _timeout_error(self, request: PendingRequest) -> RequestTimeout:
        return RequestTimeout(f"{request.description}: no answer from the agent at "
                              f"{self.settings.api_address} within {request.timeout_s:g} s")


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_REQUEST_TIMEOUT_S", "AgentClient", "ConnectionEvent", "LiveData",
    "MetricDefinition", "Reply", "connection_error", "encode_push", "parse_reply",
]
