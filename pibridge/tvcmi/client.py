"""`TVCMI_client`: the TeamViewer IoT Python SDK's API as a thin layer over pibridge's agent client.

Every SDK call maps onto one call of `pibridge.agent` (no second MQTT client, no topic spelled
here); results come back through the SDK's callbacks:

=============================================  ==================================================
SDK call                                       pibridge call → callback
=============================================  ==================================================
``provision()``                                `provision_async` (OverrideCerts → keep/override/
                                               smart) → ``on_api_response(msg=<str>)``: "Client
                                               is successfully provisioned." (0) / "Client is
                                               already provisioned." (1)
``deprovision()``                              `AgentClient.deprovision_async`; on success the
                                               key, CSR and certificate are removed
``connect_api()`` / ``disconnect_api()``       `AgentClient.connect` (worker thread) / ``close``
``check_connection()``                         ``ping_async`` (a unique token; the agent echoes it)
``create_sensor`` ``update_sensor_description``  ``create_sensor_async`` ``update_sensor_async``
``list_sensors`` ``delete_sensor``             ``list_sensors_async`` ``delete_sensor_async``
``create_metric`` ``describe_metric``          ``create_metrics_async`` ``describe_metric_async``
``update_metrics`` ``delete_metric``           ``update_metrics_async`` ``delete_metrics_async``
``push_metrics``                               ``request_async(Op.PUSH, body)`` (body as given)
``listen_live_data(sensor_id)``                `AgentClient.on_livedata`, filtered by sensor
``client_error`` ``sensor_error``              `AgentClient.report_error` (agent-api.md §4
``metric_error``                               topics; the agent never answers)
=============================================  ==================================================

Successful answers: ``on_api_response(user_data=, msg=<payload bytes>, error_code=0)``.
Failures: ``on_api_error(user_data=, error_str=, error_code=)`` where ``error_code`` is the
agent's code (agent-api.md §5), an MQTT code for connection problems (3 unreachable or timed
out, 4 not connected, 5 certificate rejected or server not trusted, 7 connection lost), an
errno for a certificate that cannot be written, ``errno.ETIMEDOUT`` for an unanswered request.
Bad local input (parameters, ids, JSON, files, CA) raises the SDK's errors synchronously.

All callbacks run on one dispatcher thread per client, in order, never on the network thread,
so a callback may block or call the API. An exception in a callback is logged through
``on_api_log`` and the client carries on.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import math
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pibridge import protocol
from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentError,
    AgentReplyError,
    AgentSettings,
    ConnectionErrorKind,
    ConnectionEvent,
    CredentialFiles,
    LiveData,
    Op,
    ProvisioningError,
    ProvisionResult,
    Reply,
    RequestTimeout,
    check_client_name,
    provision_async,
)
from pibridge.mqtt import TlsFiles, tls_context
from pibridge.tvcmi.config import PROVISIONING_MODE, TvcmiParameters, parse_parameters
from pibridge.tvcmi.errors import (
    CallbackError,
    ConnectionError,  # the SDK's class, not the builtin
    ConnectionParamError,
    DirectoryError,
    FileError,
    InputError,
    KeyCertificateError,
    KeyGenerationError,
    TLSError,
)

log = logging.getLogger(__name__)

CONNECTION_SUCCESSFUL = 0
CONNACK_SERVER_UNAVAILABLE = 3
MQTT_ERR_NO_CONN = 4
CONNACK_NOT_AUTHORIZED = 5
MQTT_ERR_CONN_LOST = 7

#: The manual's texts for the MQTT codes this layer reports.
MQTT_CODE_TEXT = {
    CONNECTION_SUCCESSFUL: "Connection successful",
    CONNACK_SERVER_UNAVAILABLE: "Connection refused - server unavailable",
    MQTT_ERR_NO_CONN: "Not connected",
    CONNACK_NOT_AUTHORIZED: "Connection refused - not authorized",
    MQTT_ERR_CONN_LOST: "Connection lost",
}

_KIND_CODES = {
    ConnectionErrorKind.REFUSED: CONNACK_SERVER_UNAVAILABLE,
    ConnectionErrorKind.UNRESOLVED: CONNACK_SERVER_UNAVAILABLE,
    ConnectionErrorKind.TIMEOUT: CONNACK_SERVER_UNAVAILABLE,
    ConnectionErrorKind.NOT_CONNECTED: MQTT_ERR_NO_CONN,
    ConnectionErrorKind.CERTIFICATE_REJECTED: CONNACK_NOT_AUTHORIZED,
    ConnectionErrorKind.CERTIFICATE_REQUIRED: CONNACK_NOT_AUTHORIZED,
    ConnectionErrorKind.CREDENTIALS: CONNACK_NOT_AUTHORIZED,
    ConnectionErrorKind.SERVER_NOT_TRUSTED: CONNACK_NOT_AUTHORIZED,
    ConnectionErrorKind.LOST: MQTT_ERR_CONN_LOST,
}

DISCONNECTED_TEXT = "Client successfully disconnected."
CERT_WRITE_ERROR_TEXT = "Error writing the certificate to file."

#: Keyword arguments each callback is called with (``on_api_log`` takes one positional ``msg``).
CALLBACK_KWARGS: dict[str, tuple[str, ...]] = {
    "on_api_connect": ("user_data", "error_str", "error_code"),
    "on_api_response": ("user_data", "msg", "error_code"),
    "on_api_error": ("user_data", "error_str", "error_code"),
    "on_api_disconnect": ("user_data", "error_str", "error_code"),
}
_CALLBACKS = (*CALLBACK_KWARGS, "on_api_log")


def _check_callback(name: str, callback: Any) -> None:
    """CallbackError unless ``callback`` is None or can be called the way ``name`` is called."""
    if callback is None:
        return
    if not callable(callback):
        raise CallbackError(f"{name} must be a function, not {callback!r}")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        if name == "on_api_log":
            signature.bind("text")
        else:
            signature.bind(**dict.fromkeys(CALLBACK_KWARGS[name]))
    except TypeError as exc:
        usage = f"{name}(msg)" if name == "on_api_log" else (
            f"{name}({', '.join(f'{k}=…' for k in CALLBACK_KWARGS[name])})")
        raise CallbackError(f"{name} = {getattr(callback, '__qualname__', callback)!r} cannot be "
                            f"called as {usage}: {exc}") from None


class _Dispatcher:
    """Runs queued calls (the user's callbacks) in order on one thread at a time, off the network
    thread. The thread lives only while calls are queued: a client that is dropped leaves no
    thread behind."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, call: Callable[[], None]) -> None:
        with self._lock:
            self._calls.append(call)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    self._running = False  # the next submit starts a new thread
                    return
                call = self._calls.popleft()
            try:
                call()
            except Exception:  # the callers catch user errors; this is a last resort
                log.exception("TVCMI callback dispatch failed")


class TVCMI_client:
    """The SDK's client. ``parameters``: a JSON string, a dict or a config file path (see
    `pibridge.tvcmi.config`); ``user_data`` is passed to every callback.

    Raises `InputError`, `ConfigError`, `ConnectionParamError` for bad parameters and
    `DirectoryError` when ``CertFolder`` cannot be created.
    """

    on_api_connect: Callable[..., Any] | None
    on_api_response: Callable[..., Any] | None
    on_api_error: Callable[..., Any] | None
    on_api_disconnect: Callable[..., Any] | None
    on_api_log: Callable[[str], Any] | None

    def __init__(self, parameters: str | Mapping[str, Any] | Path, user_data: Any = None) -> None:
        for name in _CALLBACKS:
            object.__setattr__(self, name, None)
        self._user_data = user_data
        self._params: TvcmiParameters = parse_parameters(parameters)
        _make_folder(self._params.cert_folder)
        try:
            self._settings = AgentSettings(
                host=self._params.host, port=self._params.port, provision_port=self._params.provision_port,
                ca_file=self._params.ca_file, cert_folder=self._params.cert_folder,
                client_name=self._params.client_name, provisioning=PROVISIONING_MODE[self._params.override])
        except ValueError as exc:
            raise ConnectionParamError(f"{exc} (in {self._params.source})") from None
        self._files = CredentialFiles(self._settings.cert_folder, self._settings.client_name)
        self._agent = AgentClient(self._settings)
        self._agent.on_connection_change(self._on_connection_change)
        self._live_sensors: set[str] = set()  # livedata is subscribed from the first listen_live_data()
        self._lock = threading.Lock()
        self._connecting = False
        self._wanted = False  # connect_api() called and not disconnected since
        self._dispatcher = _Dispatcher(f"tvcmi-callbacks {self._params.client_name}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLBACKS:
            _check_callback(name, value)
        object.__setattr__(self, name, value)

    @property
    def agent(self) -> AgentClient:
        """The pibridge agent client underneath (for pibridge-specific needs)."""
        return self._agent

    def set_user_data(self, user_data: Any) -> None:
        """Data passed as ``user_data`` to every later callback."""
        self._user_data = user_data

    # -- provisioning ------------------------------------------------------------------------------
    def provision(self) -> None:
        """Get a certificate unless one is stored (per ``OverrideCerts``); the outcome arrives through
        ``on_api_response`` (0 newly provisioned, 1 already provisioned) or ``on_api_error``.

        Raises `TLSError` (CaFile unusable), `ConnectionParamError` (MqttHost unknown),
        `KeyGenerationError` (no CSR possible for ClientName), `KeyCertificateError` (a key or
        certificate path in CertFolder is not a regular file).
        """
        self._check_host(self._params.provision_port)
        self._check_ca()
        mode = self._settings.provisioning
        if mode != "keep" or not self._files.stored():
            self._check_new_credentials()
        self._log(f"Provisioning client {self._params.client_name!r} at {self._settings.provision_address} "
                  f"(certificates: {mode}).")
        provision_async(self._settings, mode).add_done_callback(self._provisioned)

    def deprovision(self) -> None:
        """Delete this client at the agent; its answer arrives through ``on_api_response``. Once it
        succeeded, the local key, CSR and certificate are removed, so `provision` starts afresh."""
        self._request("deprovision", self._agent.deprovision_async, after=self._deprovisioned)

    def removing_certificates(self) -> None:
        """Delete the stored key, CSR and certificate (`FileError` if one cannot be removed)."""
        try:
            removed = self._files.remove()
        except OSError as exc:
            where = str(exc.filename or self._files.folder)
            raise FileError(where, exc.strerror or str(exc), exc.errno) from exc
        self._log(f"Removed {', '.join(p.name for p in removed) or 'nothing'} from {self._files.folder}.")

    def get_connector_id(self) -> str:
        """The clientId: the CN of the stored certificate."""
        if not self._files.cert.is_file():
            raise FileError(str(self._files.cert), "No such file: the client is not provisioned",
                            errno.ENOENT)
        try:
            return self._files.client_id()
        except (ProvisioningError, OSError) as exc:
            raise KeyCertificateError(f"cannot read the clientId from {self._files.cert}: {exc}") from exc

    # -- connection --------------------------------------------------------------------------------
    def connect_api(self) -> None:
        """Connect with the stored certificate; ``on_api_connect`` follows (again after every
        automatic reconnect), or ``on_api_error`` with the MQTT code.

        Raises `ConnectionParamError` (MqttHost unknown), `TLSError` (CA, key or certificate
        unusable), `KeyCertificateError` (not provisioned: no key or certificate).
        """
        self._check_host(self._params.port)
        self._check_tls()
        with self._lock:
            self._wanted = True
            if self._connecting:
                self._log("Already connecting.")
                return
            if self._agent.connected and self._agent.client_id == self._stored_client_id():
                self._log("Already connected.")
                return
            self._connecting = True
        threading.Thread(target=self._connect, name="tvcmi-connect", daemon=True).start()

    def disconnect_api(self) -> None:
        """Disconnect; ``on_api_disconnect`` follows. Requests still unanswered fail (``on_api_error``)."""
        with self._lock:
            self._wanted = False
        self._agent.close()
        self._log(f"Disconnected from the agent at {self._settings.api_address}.")
        self._emit("on_api_disconnect", error_str=DISCONNECTED_TEXT, error_code=CONNECTION_SUCCESSFUL)

    def check_connection(self) -> None:
        """Ping the agent; its answer ``{"answer": <token>}`` arrives through ``on_api_response``."""
        self._request("check_connection", self._agent.ping_async)

    # -- sensors -----------------------------------------------------------------------------------
    def create_sensor(self, sensor_name: str) -> None:
        """``{"name","sensorId"}`` arrives through ``on_api_response``."""
        self._request("create_sensor", functools.partial(self._agent.create_sensor_async, sensor_name))

    def update_sensor_description(self, sensor_id: str, sensor_name: str) -> None:
        """Rename the sensor; the agent's ``Sensor was changed.`` arrives through ``on_api_response``."""
        sid = _id("update_sensor_description", "sensor_id", sensor_id)
        self._request("update_sensor_description",
                      functools.partial(self._agent.update_sensor_async, sid, sensor_name))

    def list_sensors(self) -> None:
        """The sensors with their metric ids (a JSON array) arrive through ``on_api_response``."""
        self._request("list_sensors", self._agent.list_sensors_async)

    def delete_sensor(self, sensor_id: str) -> None:
        """Delete the sensor with its metrics and values."""
        sid = _id("delete_sensor", "sensor_id", sensor_id)
        self._request("delete_sensor", functools.partial(self._agent.delete_sensor_async, sid))

    # -- metrics -----------------------------------------------------------------------------------
    def create_metric(self, metric_def: str | Mapping[str, Any], sensor_id: str) -> None:
        """``metric_def``: ``{"metrics": [def, …]}`` (defs may be JSON strings) or one def; the answer
        ``[{"matchingId","metricId"}, …]`` arrives through ``on_api_response``."""
        sid = _id("create_metric", "sensor_id", sensor_id)
        body = _json_object(metric_def, "create_metric", "metric_def")
        definitions = _metric_items(body, "create_metric", "metric_def") if "metrics" in body or (
            "name" not in body) else [body]
        self._request("create_metric", functools.partial(self._agent.create_metrics_async, sid, definitions))

    def describe_metric(self, metric_id: str, sensor_id: str) -> None:
        """The metric's definition (JSON) arrives through ``on_api_response``."""
        mid = _id("describe_metric", "metric_id", metric_id)
        sid = _id("describe_metric", "sensor_id", sensor_id)
        self._request("describe_metric", functools.partial(self._agent.describe_metric_async, sid, mid))

    def update_metrics(self, sensor_id: str, metric_info: str | Mapping[str, Any]) -> None:
        """``metric_info``: ``{"metrics": [{"metricId", "name"?, "valueAnnotation"?}, …]}``."""
        sid = _id("update_metrics", "sensor_id", sensor_id)
        changes = _metric_items(_json_object(metric_info, "update_metrics", "metric_info"),
                                "update_metrics", "metric_info")
        self._request("update_metrics", functools.partial(self._agent.update_metrics_async, sid, changes))

    def delete_metric(self, msg: str | Mapping[str, Any], sensor_id: str) -> None:
        """``msg``: ``{"metrics": [{"metricId"}, …]}``; all metrics of one sensor."""
        sid = _id("delete_metric", "sensor_id", sensor_id)
        items = _metric_items(_json_object(msg, "delete_metric", "msg"), "delete_metric", "msg")
        metric_ids = []
        for index, item in enumerate(items):
            if "metricId" not in item:
                raise InputError("delete_metric()", f"msg.metrics[{index}].metricId")
            metric_ids.append(item["metricId"])
        self._request("delete_metric", functools.partial(self._agent.delete_metrics_async, sid, metric_ids))

    def push_metrics(self, sensor_id: str, metric_data: str | Mapping[str, Any],
                     timestamp: int | float | None = None) -> None:
        """Push ``{"metrics": [{"metricId","value"}, …], "timestamp"?}`` as given. ``timestamp``
        (milliseconds since the epoch; a float is truncated) replaces the payload's; ``None`` keeps
        the payload's (or none: the agent then uses the time of receipt)."""
        sid = _id("push_metrics", "sensor_id", sensor_id)
        body = _json_object(metric_data, "push_metrics", "metric_data")
        body["metrics"] = _metric_items(body, "push_metrics", "metric_data")
        if timestamp is not None:
            if (isinstance(timestamp, bool) or not isinstance(timestamp, int | float)
                    or not math.isfinite(timestamp)):
                raise InputError("push_metrics()", "timestamp", f"is not milliseconds since the epoch: "
                                 f"{timestamp!r}")
            body["timestamp"] = int(timestamp)
        self._request("push_metrics", functools.partial(self._agent.request_async, Op.PUSH, body,
                                                         sensor_id=sid), field="metric_data")

    def listen_live_data(self, sensor_id: str) -> None:
        """From now on, the agent's livedata of this sensor (sent after every accepted push) arrives
        through ``on_api_response`` as payload bytes ``{"metrics":[…],"timestamp":…}``."""
        sensor_id = _id("listen_live_data", "sensor_id", sensor_id)
        with self._lock:
            first = not self._live_sensors
            self._live_sensors.add(sensor_id)
        if first:  # the client subscribes to livedata only while someone listens
            self._agent.on_livedata(self._on_livedata)

    # -- error reports -----------------------------------------------------------------------------
    def client_error(self, error_message: str, error_code: int = 0) -> None:
        """Report an error of this client to the agent (no answer comes)."""
        self._report("client_error", error_message, error_code)

    def sensor_error(self, error_message: str, sensor_id: str, error_code: int = 0) -> None:
        """Report an error of a sensor to the agent (no answer comes)."""
        self._report("sensor_error", error_message, error_code, _id("sensor_error", "sensor_id", sensor_id))

    def metric_error(self, error_message: str, metric_id: str, sensor_id: str, error_code: int = 0) -> None:
        """Report an error of a metric to the agent (no answer comes)."""
        self._report("metric_error", error_message, error_code, _id("metric_error", "sensor_id", sensor_id),
                     _id("metric_error", "metric_id", metric_id))

    # -- files -------------------------------------------------------------------------------------
    def get_cert_path(self) -> str:
        return str(self._files.cert)

    def get_key_path(self) -> str:
        return str(self._files.key)

    def get_ca_path(self) -> str:
        return str(self._params.ca_file)

    def read_cert_from_file(self) -> str:
        """The certificate PEM (`FileError` if it cannot be read)."""
        return _read(self._files.cert)

    def read_key_from_file(self) -> str:
        """The private key PEM (`FileError` if it cannot be read)."""
        return _read(self._files.key)

    def read_ca_from_file(self) -> str:
        """The CA PEM (`FileError` if it cannot be read)."""
        return _read(self._params.ca_file)

    # -- internals: requests and answers ---------------------------------------------------------
    def _request(self, method: str, send: Callable[[], Future[Reply]],
                 after: Callable[[Reply], None] | None = None, field: str = "") -> None:
        if not self._wanted or not self._agent.client_id:
            raise ConnectionError(MQTT_ERR_NO_CONN, f"{method}(): not connected to the agent at "
                                  f"{self._settings.api_address}: call connect_api() and wait for "
                                  "on_api_connect first")
        try:
            future = send()
        except (ValueError, TypeError, RecursionError) as exc:  # e.g. NaN or a set in a push: refused
            # before anything is sent (TypeError: a value JSON cannot carry)
            raise InputError(f"{method}()", field or "the request", f"cannot be sent: {exc}") from None
        except AgentConnectionError as exc:
            raise ConnectionError(_KIND_CODES.get(exc.kind, MQTT_ERR_NO_CONN), str(exc)) from exc
        future.add_done_callback(functools.partial(self._answered, method, after))

    def _answered(self, method: str, after: Callable[[Reply], None] | None, future: Future[Reply]) -> None:
        error = future.exception()
        if error is not None:
            self._report_failure(method, error)
            return
        reply = future.result()
        if after is None:
            self._emit("on_api_response", msg=reply.raw, error_code=0)
            return

        def finish() -> None:  # on the dispatcher: `after` may wait (e.g. for the credentials lock)
            try:
                after(reply)
            except Exception as exc:
                self._log(f"{method}: {exc}")
            self._emit("on_api_response", msg=reply.raw, error_code=0)
        self._dispatcher.submit(finish)

    def _deprovisioned(self, reply: Reply) -> None:
        removed = self._files.remove()
        self._log(f"Deprovisioned; removed {', '.join(p.name for p in removed) or 'nothing'} "
                  f"from {self._files.folder}.")

    def _provisioned(self, future: Future[ProvisionResult]) -> None:
        error = future.exception()
        if error is not None:
            self._report_failure("provision", error)
            return
        result = future.result()
        if result.check_failure:
            self._log(f"Kept the stored certificate unchecked: {result.check_failure}")
        self._log(f"{result.message} clientId {result.client_id}")
        self._emit("on_api_response", msg=result.message, error_code=0 if result.newly_provisioned else 1)

    def _report_failure(self, method: str, error: BaseException) -> None:
        """``on_api_error`` with the agent's, MQTT or errno code (see the module doc)."""
        cause = error.__cause__
        if isinstance(error, AgentReplyError):
            text, code = error.agent_message, int(error.code)
        elif isinstance(error, AgentConnectionError):
            code = _KIND_CODES.get(error.kind, CONNACK_SERVER_UNAVAILABLE)
            text = f"{MQTT_CODE_TEXT[code]}: {error}"
        elif isinstance(error, RequestTimeout):
            text, code = str(error), errno.ETIMEDOUT
        elif isinstance(error, ProvisioningError) and isinstance(cause, OSError):
            text, code = CERT_WRITE_ERROR_TEXT, cause.errno or 0
        elif isinstance(error, ProvisioningError) and isinstance(cause, AgentReplyError):
            text, code = str(error), int(cause.code)
        else:
            text, code = str(error) or type(error).__name__, 0
        self._log(f"{method} failed: {error}")
        self._emit("on_api_error", error_str=text, error_code=code)

    def _report(self, method: str, message: str, code: int, sensor_id: str | None = None,
                metric_id: str | None = None) -> None:
        try:
            if isinstance(code, str | bytes):
                code = code.strip()
            number = int(code)  # whatever int() takes; anything else is refused
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{method}()", "error_code", f"is not an integer: {code!r}") from None
        if not self._wanted:
            raise ConnectionError(MQTT_ERR_NO_CONN, f"{method}(): not connected: call connect_api() first")
        try:
            self._agent.report_error(str(message), number, sensor_id, metric_id)
        except AgentConnectionError as exc:
            raise ConnectionError(_KIND_CODES.get(exc.kind, MQTT_ERR_NO_CONN), str(exc)) from exc
        self._log(f"{method}: reported {message!r}.")

    # -- internals: connection ---------------------------------------------------------------------
    def _connect(self) -> None:
        try:
            if not self._agent.connected:
                self._agent.close()  # an explicit connect_api() is a fresh attempt, not a wait
            elif self._agent.client_id != self._stored_client_id():
                self._log("New credentials: reconnecting with the new certificate.")
                self._agent.close()
            self._log(f"Connecting to the agent at {self._settings.api_address}.")
            self._agent.connect()
        except (AgentError, OSError) as exc:
            self._report_failure("connect_api", exc)
        finally:
            with self._lock:
                self._connecting = False

    def _stored_client_id(self) -> str:
        try:
            return self._files.client_id()
        except (AgentError, OSError):
            return ""

    def _on_connection_change(self, event: ConnectionEvent) -> None:
        if event.up:
            self._log(f"Connected to the agent at {self._settings.api_address} as {self._agent.client_id}.")
            self._emit("on_api_connect", error_str=MQTT_CODE_TEXT[CONNECTION_SUCCESSFUL],
                       error_code=CONNECTION_SUCCESSFUL)
        elif event.error is not None:
            code = _KIND_CODES.get(event.error.kind, MQTT_ERR_CONN_LOST)
            self._log(f"Unexpected disconnection: {event.error}")
            self._emit("on_api_error", error_str=f"Unexpected disconnection: {event.error}", error_code=code)

    def _on_livedata(self, data: LiveData) -> None:
        if data.sensor_id in self._live_sensors:
            self._emit("on_api_response", msg=data.raw, error_code=0)

    # -- internals: checks -------------------------------------------------------------------------
    def _check_host(self, port: int) -> None:
        try:
            socket.getaddrinfo(self._params.host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ConnectionParamError(f"MqttHost {self._params.host!r} cannot be resolved: {exc}") from None

    def _check_ca(self) -> None:
        ca = self._params.ca_file
        try:
            tls_context(TlsFiles(ca))
        except OSError as exc:  # ssl.SSLError is an OSError
            raise TLSError(f"Cannot use CaFile {ca}: {exc.strerror or exc}") from None

    def _check_tls(self) -> None:
        self._check_ca()
        for what, path in (("certificate", self._files.cert), ("key", self._files.key)):
            if not path.is_file():
                raise KeyCertificateError(f"no {what} at {path}: call provision() and wait for "
                                          "on_api_response first", errno.ENOENT)
        try:
            tls_context(TlsFiles(self._params.ca_file, self._files.cert, self._files.key))
        except OSError as exc:
            raise TLSError(f"Cannot use certificate {self._files.cert} with key {self._files.key}: "
                           f"{exc.strerror or exc}") from None

    def _check_new_credentials(self) -> None:
        """What makes generating and storing a new key and certificate fail, checked up front."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        try:
            check_client_name(self._params.client_name)  # the one rule (length: cryptography < 42 has none)
            x509.NameAttribute(NameOID.COMMON_NAME, self._params.client_name)
        except ValueError as exc:
            raise KeyGenerationError(f"ClientName {self._params.client_name!r} cannot be the common name of "
                                     f"the certificate signing request: {exc}") from None
        for path in (self._files.key, self._files.csr, self._files.cert):
            if path.exists() and not path.is_file():
                raise KeyCertificateError(f"{path} exists and is not a regular file: cannot write the "
                                          "key or certificate there", errno.EISDIR if path.is_dir() else None)

    # -- internals: callbacks ----------------------------------------------------------------------
    def _emit(self, name: str, **kwargs: Any) -> None:
        self._dispatcher.submit(functools.partial(self._call, name, kwargs))

    def _call(self, name: str, kwargs: dict[str, Any]) -> None:
        callback = getattr(self, name, None)
        if callback is None:
            if name == "on_api_error":
                log.warning("agent error (no on_api_error set): %s (%s)", kwargs["error_str"],
                            kwargs["error_code"])
            return
        try:
            callback(user_data=self._user_data, **kwargs)
        except Exception as exc:
            self._call_log(f"{name} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    def _log(self, text: str) -> None:
        log.info("%s", text)
        self._dispatcher.submit(functools.partial(self._call_log, text))

    def _call_log(self, text: str) -> None:
        callback = self.on_api_log
        if callback is None:
            return
        try:
            callback(text)
        except Exception:
            log.exception("on_api_log raised")


# -- helpers ---------------------------------------------------------------------------------------
def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DirectoryError(str(folder), exc.strerror or str(exc), exc.errno) from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FileError(str(path), reason, getattr(exc, "errno", None)) from None


def _id(method: str, field: str, value: Any) -> str:
    if not protocol.is_topic_level(value):
        raise InputError(f"{method}()", field, f"is not an id (a non-empty string without '/', '+', '#'): "
                         f"{value!r}")
    return value


def _json_object(value: Any, method: str, field: str) -> dict[str, Any]:
    """``value`` (a JSON string, bytes or a mapping) as a dict."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InputError(f"{method}()", field, f"is not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise InputError(f"{method}()", field, f"is not a JSON object: {value!r}")
    return dict(value)


def _metric_items(body: Mapping[str, Any], method: str, field: str) -> list[dict[str, Any]]:
    """``body["metrics"]`` as a list of dicts; elements given as JSON strings (as in the manual's
    create_metric example) are decoded."""
    if "metrics" not in body:
        raise InputError(f"{method}()", f"{field}.metrics")
    metrics = body["metrics"]
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError as exc:
            raise InputError(f"{method}()", f"{field}.metrics", f"is not valid JSON ({exc})") from None
    if not isinstance(metrics, list):
        raise InputError(f"{method}()", f"{field}.metrics", f"is not a list: {metrics!r}")
    return [_json_object(item, method, f"{field}.metrics[{i}]") for i, item in enumerate(metrics)]


__all__ = ["CALLBACK_KWARGS", "CERT_WRITE_ERROR_TEXT", "DISCONNECTED_TEXT", "MQTT_CODE_TEXT", "TVCMI_client"]
