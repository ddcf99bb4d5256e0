"""The one module that talks to paho-mqtt. Everything above it sees pibridge's own types.

Two layers:

- `MqttSession` is exactly one MQTT connection (one paho client). It never reconnects: when it
  drops, it is finished. A fresh paho client per connection is what guarantees that nothing of
  an old connection is re-sent after a reconnect (paho 2 re-sends unacknowledged QoS-1
  publishes on a reused client), as the agent API requires (agent-api.md §1).
- `MqttLink` keeps a session alive: it reconnects with capped exponential backoff and jitter
  and calls ``on_up(session)`` after every (re)connect so the owner can subscribe again.

A session normally runs paho's network loop on a thread of its own, which sleeps until there is
traffic, a packet to send (paho's wake-up byte) or keepalive work (`network_wait_s`): an idle
connection costs a few wake-ups a minute, not paho's one a second. With ``threaded=False`` its
owner drives the network itself with `MqttSession.loop` (the emulator's core does, to read,
handle and answer requests on one thread; so does the bridge's delivery thread): one thread at a
time does a connection's I/O, a packet from any other thread is queued for it and wakes it, and
`MqttSession.corked` joins a burst of publishes into one TLS write.

Connection failures are classified (`FailureKind`), including the TLS 1.3 case where a broker
that rejects the client certificate completes the handshake and drops the connection right
after: paho then only reports an unspecified disconnect, and the TLS alert shows up in its log
callback, which is why every session keeps the log lines of its opening.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import random
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import pibridge.lazy_urllib  # noqa: F401  (first: paho's urllib.request loads only if paho uses it)

# isort: split
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from pibridge.wakeup import WakePair

log = logging.getLogger(__name__)

#: MQTT 3.1.1, as the agent speaks (agent-api.md §1).
PROTOCOL = paho.MQTTv311
DEFAULT_KEEPALIVE_S = 60
DEFAULT_TIMEOUT_S = 10.0
#: QoS-1 publishes paho sends before it holds further ones back until PUBACKs arrive (paho's
#: default is 20, which throttles a burst: the emulator core's answers, the QoS-1 publishes of
#: tools and tests; the broker acknowledges each at once).
MAX_INFLIGHT_MESSAGES = 1000

#: paho's network thread waits in select() at most this share of the keepalive (paho's own loop
#: thread waits 1 s): everything else wakes it at once (traffic in; a publish, subscribe or
#: disconnect from another thread writes paho's wake-up byte), so this bounds only how late the
#: keepalive work is done. A PINGREQ due one keepalive after the last packet goes at most a quarter
#: keepalive late, well within the 1.5 keepalives the broker waits; a missing PINGRESP is noticed
#: at most as late.
KEEPALIVE_WAIT_SHARE = 0.25
#: The network thread's longest wait in select() without a keepalive (seconds).
NETWORK_WAIT_MAX_S = 60.0
#: Bytes of whole PUBLISH packets a non-threaded session joins into one TLS write (a burst of
#: pushes goes as one record and one system call, not one each); within one 16 KiB TLS record.
COALESCE_MAX_BYTES = 16_000
#: Seconds `MqttSession.loop` waits at least for another thread to hand over the connection (it
#: is woken first, and lets go within one turn of its loop).
TAKE_MIN_S = 0.5
#: The MQTT packet type of PUBLISH, in a fixed header's high nibble (paho's constant).
_PUBLISH = paho.PUBLISH

#: Fragments of OpenSSL alert texts a server sends when it refuses our client certificate.
_CERT_REJECTION_MARKERS = (
    "alert certificate required", "alert bad certificate", "alert unknown ca",
    "alert certificate revoked", "alert certificate expired", "alert certificate unknown",
    "alert unsupported certificate", "alert access denied", "alert handshake failure",
)


class FailureKind(enum.StrEnum):
    """Why a connection could not be made or was lost."""

    REFUSED = "refused"  # nothing listens, or the broker said no in its CONNACK
    UNRESOLVED = "host not resolved"  # the host name has no address (DNS, /etc/hosts)
    TLS_FILES = "unusable TLS files"  # our own CA, certificate or key cannot be loaded
    CERTIFICATE_REJECTED = "certificate rejected"  # the broker refused our client certificate
    CERTIFICATE_REQUIRED = "client certificate required"  # the port wants one and we sent none
    SERVER_NOT_TRUSTED = "server not trusted"  # the server's certificate failed our checks
    TIMEOUT = "timeout"
    LOST = "connection lost"  # an established connection dropped


class MqttError(Exception):
    """Base of this module's errors."""


class ConnectFailure(MqttError):
    """A classified connection failure; ``kind`` is a `FailureKind`, ``detail`` the low-level text,
    ``tls_file`` (kind `FailureKind.TLS_FILES`) the file that could not be loaded when known."""

    def __init__(self, kind: FailureKind, detail: str, endpoint: Endpoint | None = None,
                 tls_file: Path | None = None) -> None:
        where = f" ({endpoint.describe()})" if endpoint else ""
        super().__init__(f"{kind}{where}: {detail}")
        self.kind = kind
        self.detail = detail
        self.endpoint = endpoint
        self.tls_file = tls_file


class NotConnected(MqttError):
    """Publishing or subscribing without an open connection."""


@dataclass(frozen=True)
class TlsFiles:
    """CA to verify the server against; with ``cert_file``/``key_file``: mutual TLS."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: TCP ``host:port`` or a Unix socket, with TLS when ``tls`` is given. On a
    Unix socket the server's chain is verified but no host name (a socket path names no host)."""

    host: str = "localhost"
    port: int = 0
    tls: TlsFiles | None = None
    unix_socket: str | None = None

    def describe(self) -> str:
        if self.unix_socket:
            return f"unix:{self.unix_socket}"
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls else "")


def new_client_id(prefix: str = "pibridge") -> str:
    """A random MQTT client identifier: mosquitto drops the older of two sessions with one id."""
    return f"{prefix}-{secrets.token_hex(8)}"


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS ≥ 1.2 client context: chain and hostname verified, always (never switched off)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca_file))
    return _verifying(context, files, check_hostname=True)


def _verifying(context: ssl.SSLContext, files: TlsFiles, *, check_hostname: bool) -> ssl.SSLContext:
    """``context`` at TLS ≥ 1.2, the server's chain verified (its CA loaded by the caller), with
    ``files``' client certificate if it has one."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if files.cert_file is not None:
        context.load_cert_chain(str(files.cert_file), str(files.key_file) if files.key_file else None)
    return context


class _SocketPathContext(ssl.SSLContext):
    """A client context for TLS over a Unix socket. paho hands the socket's path to
    ``wrap_socket`` as the server name; a path is no host name (SNI refuses a long one, and paho's
    fallback then reuses a consumed socket), so it is dropped. The chain is still verified."""

    def wrap_socket(self, sock: socket.socket, server_side: bool = False,
                    do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                    server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None,
                    ) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                                   None, session)


def socket_path_tls_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS ≥ 1.2 client context for a Unix socket: the server's chain verified against
    ``files.ca_file``, no host name (the socket's path, in a private directory, names the server)."""
    context = _SocketPathContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(files.ca_file))
    return _verifying(context, files, check_hostname=False)


def tls_files_failure(files: TlsFiles, exc: BaseException,
                      endpoint: Endpoint | None = None) -> ConnectFailure:
    """A `FailureKind.TLS_FILES` failure naming which of ``files`` could not be loaded, and why."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    try:
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca_file))
    except (OSError, ValueError):
        return ConnectFailure(FailureKind.TLS_FILES, f"cannot load CA file {files.ca_file} ({reason})",
                              endpoint, files.ca_file)
    return ConnectFailure(FailureKind.TLS_FILES, f"cannot load certificate {files.cert_file} with key "
                          f"{files.key_file} ({reason})", endpoint, files.cert_file)


def demands_client_certificate(endpoint: Endpoint, timeout: float) -> bool | None:
    """Does the TLS server at ``endpoint`` require a client certificate (None: cannot tell)?
    Asked only to explain a failure: with TLS 1.3 such a server completes the handshake without
    one and hangs up after, often with no alert at all (agent-api.md §1), which looks like any
    other refusal. Capped at TLS 1.2, the same server fails the handshake itself, with an alert."""
    if endpoint.tls is None or endpoint.unix_socket:
        return False
    try:
        context = tls_context(TlsFiles(endpoint.tls.ca_file))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection((endpoint.host, endpoint.port), timeout) as raw, \
                context.wrap_socket(raw, server_hostname=endpoint.host):
            return False
    except ssl.SSLError as exc:
        text = str(exc).lower()
        return True if "handshake failure" in text or "certificate required" in text else None
    except OSError:
        return None


def classify(exc: BaseException, log_lines: Sequence[str] = ()) -> FailureKind:
    """Map a low-level exception (plus paho log lines seen meanwhile) to a `FailureKind`."""
    text = " ".join([str(exc), *log_lines]).lower()
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FailureKind.SERVER_NOT_TRUSTED
    if any(marker in text for marker in _CERT_REJECTION_MARKERS):
        return FailureKind.CERTIFICATE_REJECTED
    if isinstance(exc, socket.gaierror):
        return FailureKind.UNRESOLVED
    if isinstance(exc, TimeoutError | socket.timeout):
        return FailureKind.TIMEOUT
    if isinstance(exc, ConnectionRefusedError | FileNotFoundError) or (
        isinstance(exc, OSError)
        and exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.EHOSTUNREACH, errno.ENETUNREACH)
    ):
        return FailureKind.REFUSED
    if isinstance(exc, ssl.SSLError):
        return FailureKind.CERTIFICATE_REJECTED if "certificate" in text else FailureKind.REFUSED
    return FailureKind.LOST


def network_wait_s(keepalive: int) -> float:
    """The network thread's longest wait in select() for a connection with ``keepalive`` (s)."""
    if keepalive <= 0:
        return NETWORK_WAIT_MAX_S
    return min(NETWORK_WAIT_MAX_S, KEEPALIVE_WAIT_SHARE * keepalive)


class _PahoClient(paho.Client):
    """paho's client whose network thread (`loop_start`) waits up to ``network_wait`` seconds in
    select() instead of paho's fixed 1 s (paho has no parameter for it: its thread's entry point
    is overridden, otherwise as paho's own: ``loop_forever``, then the thread is forgotten).

    Without a network thread (``io``, a `_DrivenIo`, set): a packet is written at once only by
    the thread inside `MqttSession.loop` (paho's own path); from anywhere else it is queued, in
    order, and the loop's thread woken to write it (or the caller's next `loop` writes it). So
    two threads never use one TLS connection at once; nobody waits for another's turn; and a
    write that fails never runs the connection-lost callbacks on a thread that holds a lock of
    its own (a request's publish runs under the agent client's send lock, which they take)."""

    network_wait = 1.0
    io: _DrivenIo | None = None

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: paho.MQTTMessageInfo | None = None) -> paho.MQTTErrorCode:
        io = self.io
        if io is None:
            return super()._packet_queue(command, packet, mid, qos, info)
        me = threading.get_ident()
        if io.owner == me and io.corked_by != me:  # inside `loop`: paho's own path
            return super()._packet_queue(command, packet, mid, qos, info)
        self._queue_only(command, packet, mid, qos, info)
        if io.corked_by != me:
            io.wake()  # for the thread inside `loop`; else the caller's next `loop` writes it
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _queue_only(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                    info: paho.MQTTMessageInfo | None) -> paho.MQTTErrorCode:
        """Queue a packet for the next write without writing it: paho's own queue entry
        (`_OutPacket`, paho 2.1 and 2.2)."""
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                 "to_process": len(packet), "packet": packet, "info": info})
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> paho.MQTTErrorCode:
        """paho's, except that a non-threaded session writes the whole PUBLISH packets at the head
        of the queue (up to `COALESCE_MAX_BYTES`) in one TLS write:

            queue:  PUBLISH a | PUBLISH b | PUBLISH c | PINGREQ      one send: a+b+c
                    (each pos 0)                                     then paho's own loop

        Written in full, a QoS-0 PUBLISH is marked published as paho does (its on_publish is not
        called: this module's handler ignores QoS 0); a partial write leaves the rest queued,
        the first packet's position moved on."""
        if self.io is None:
            return super()._packet_write()
        while True:
            batch: list[Any] = []
            size = 0
            queued = self._out_packet  # other threads append meanwhile: indexed, never iterated
            for index in range(len(queued)):
                packet = queued[index]
                if (packet["command"] & 0xF0) != _PUBLISH or packet["pos"] or (
                        batch and size + packet["to_process"] > COALESCE_MAX_BYTES):
                    break
                batch.append(packet)
                size += packet["to_process"]
            if len(batch) < 2:
                return super()._packet_write()
            for _ in batch:
                self._out_packet.popleft()
            try:
                written = self._sock_send(b"".join(packet["packet"] for packet in batch))
            except (AttributeError, ValueError):  # no socket (paho's own handling of these)
                self._out_packet.extendleft(reversed(batch))
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
            except BlockingIOError:
                self._out_packet.extendleft(reversed(batch))
                return paho.MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as err:
                self._out_packet.extendleft(reversed(batch))
                self._easy_log(paho.MQTT_LOG_ERR, "failed to send on socket: %s", err)
                return paho.MQTTErrorCode.MQTT_ERR_CONN_LOST
            if written <= 0:
                self._out_packet.extendleft(reversed(batch))
                return paho.MQTTErrorCode.MQTT_ERR_AGAIN
            for index, packet in enumerate(batch):
                if written < packet["to_process"]:  # this one in part, the rest not at all
                    packet["pos"] += written
                    packet["to_process"] -= written
                    self._out_packet.extendleft(reversed(batch[index:]))
                    break
                written -= packet["to_process"]
                packet["pos"] += packet["to_process"]
                packet["to_process"] = 0
                if packet["qos"] == 0 and packet["info"] is not None:
                    packet["info"]._set_as_published()
            with self._msgtime_mutex:
                self._last_msg_out = time.monotonic()
            if self._out_packet and self._out_packet[0]["pos"]:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # the socket took only part: wait for it

    def _thread_main(self) -> None:
        try:
            self.loop_forever(timeout=self.network_wait, retry_first_connection=True)
        finally:
            self._thread = None

    def wake_network_thread(self) -> None:
        """Make the network thread's select() return now (paho's own wake-up byte), e.g. to see
        that `loop_stop` asks it to end."""
        sock = self._sockpairW
        if sock is not None:
            with contextlib.suppress(OSError):  # full (it is awake anyway) or closed (it has ended)
                sock.send(b"\0")


class _DrivenIo:
    """Who does a non-threaded session's I/O: the holder of ``lock`` (reentrant: callbacks run
    inside `MqttSession.loop` and publish); it waits only in a select that includes
    ``wakeup.reader``, so another thread gets the socket, or a packet written, by waking it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.owner = 0  # thread ident inside `MqttSession.loop`, 0 when none
        self.corked_by = 0  # thread ident inside `MqttSession.corked`, 0 when none
        self.wakeup = WakePair()
        self.wake = self.wakeup.wake
        self.close = self.wakeup.close

    def take(self, timeout: float) -> bool:
        """Take the lock, waking its holder if another thread has it; False after ``timeout`` s."""
        if self.lock.acquire(blocking=False):
            return True
        self.wake()
        return self.lock.acquire(timeout=timeout)

    @contextlib.contextmanager
    def driving(self) -> Iterator[None]:
        """(``lock`` held.) The calling thread does the I/O inside: what it sends is written at once."""
        outer, self.owner = self.owner, threading.get_ident()
        try:
            yield
        finally:
            self.owner = outer


def _decrypted_waiting(sock: Any) -> bool:
    """Whether TLS bytes already decrypted wait in ``sock`` (select cannot see them)."""
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


MessageHandler = Callable[[str, bytes], None]
ClosedHandler = Callable[[ConnectFailure], None]


class MqttSession:
    """One MQTT connection. Thread-safe publish; callbacks run on paho's network thread.

    ``threaded=False``: no network thread; whoever calls `loop` does the I/O (callbacks run
    inside it), one thread at a time: another thread's `loop` wakes it and takes over, a publish
    from another thread is written by it. Waiting calls (`open`, `subscribe`, `publish_and_wait`,
    `wait_network`) drive the network themselves while nobody else does; never call them from a
    callback.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client_id: str,
        on_message: MessageHandler,
        on_closed: ClosedHandler | None = None,
        keepalive: int = DEFAULT_KEEPALIVE_S,
        threaded: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self._threaded = threaded
        self._received = 0  # messages delivered to on_message (non-threaded `loop` counts them)
        self._on_message = on_message
        self._on_closed = on_closed
        self._keepalive = keepalive
        transport: Literal["unix", "tcp"] = "unix" if endpoint.unix_socket else "tcp"
        context = None
        if endpoint.tls is not None:
            try:
                context = (socket_path_tls_context if endpoint.unix_socket else tls_context)(endpoint.tls)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise tls_files_failure(endpoint.tls, exc, endpoint) from exc
        self._client = _PahoClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
            protocol=PROTOCOL, transport=transport, reconnect_on_failure=False,
        )
        self._client.network_wait = network_wait_s(keepalive)
        self._io = None if threaded else _DrivenIo()
        self._client.io = self._io
        self._client.max_inflight_messages_set(MAX_INFLIGHT_MESSAGES)
        if context is not None:
            self._client.tls_set_context(context)
            if endpoint.unix_socket:
                self._client.tls_insecure_set(True)  # paho would match the socket's path as a host name
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_subscribe = self._handle_subscribe
        if not threaded:  # only non-threaded sessions count unacknowledged publishes; without a
            # handler paho also skips building a reason code and properties per QoS-0 publish
            self._client.on_publish = self._handle_publish
        # non-threaded: ids of our QoS>0 publishes not acknowledged yet (exact when one thread
        # publishes and loops, as the emulator's core does; only it reads `unacknowledged`)
        self._unacked: set[int] = set()
        # paho's logger interface, not on_log: on_log makes paho format a line for every packet
        self._client.enable_logger(_PahoLog(self))  # type: ignore[arg-type]
        self._client.on_socket_open = self._handle_socket_open
        self._connected = threading.Event()
        self._finished = threading.Event()
        self._settled = threading.Event()  # CONNACK received or connection failed: open() stops waiting
        self._failure: ConnectFailure | None = None
        self._opening_log: list[str] = []
        self._opening = True
        self._dropped_before_connack = False  # connected, then dropped without a CONNACK
        self._closing = False
        self._recent_log: list[str] = []
        self._suback: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Connect and wait for the CONNACK. Raises `ConnectFailure` with its kind."""
        self._client.connect_timeout = timeout
        host = self.endpoint.unix_socket or self.endpoint.host
        try:
            self._client.connect(host, self.endpoint.port or 1883, keepalive=self._keepalive)
        except Exception as exc:  # socket, TLS handshake, DNS: all classified
            if self._io is not None:
                self._io.close()
            raise ConnectFailure(self._classify(exc), str(exc) or type(exc).__name__, self.endpoint) from exc
        if self._threaded:
            self._client.loop_start()
        # wait for either outcome: a failure (possibly reported from inside connect() above) must
        # not make open() sit out the whole timeout
        if not self._wait(self._settled, timeout):
            self.close()  # the socket is up but nobody answers: close it, not just the loop
            raise ConnectFailure(FailureKind.TIMEOUT, f"no CONNACK within {timeout:g} s", self.endpoint)
        if self._finished.is_set() or not self._connected.is_set():
            self.close()
            assert self._failure is not None
            if (self._dropped_before_connack and self._failure.kind is FailureKind.REFUSED
                    and self.endpoint.tls is not None and not self._presents_client_certificate()
                    and demands_client_certificate(self.endpoint, min(timeout, DEFAULT_TIMEOUT_S)) is True):
                raise ConnectFailure(FailureKind.CERTIFICATE_REQUIRED, "the server asks for a client "
                                     f"certificate ({self._failure.detail})", self.endpoint)
            raise self._failure
        self._opening = False

    @property
    def is_open(self) -> bool:
        return self._connected.is_set() and not self._finished.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def close(self) -> None:
        """Disconnect cleanly (idempotent); ``on_closed`` is not called for our own close."""
        self._closing = True
        if not self._finished.is_set():
            self._client.disconnect()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._io is not None:
            if self._io.owner == threading.get_ident():
                return  # closed from a callback inside `loop`: that loop writes the DISCONNECT and closes
            # paho closes the socket once the DISCONNECT is written: give a full socket a moment,
            # then close it anyway (paho has no public call for that), as the thread doing the I/O
            deadline = time.monotonic() + 1.0
            while (self._client.socket() is not None and self._client.want_write()
                   and time.monotonic() < deadline):
                self.loop(0.05)
            if not self._io.take(max(0.0, deadline - time.monotonic()) + 1.0):
                return  # its holder is stuck: the DISCONNECT is queued, and `loop` closes (_closing)
            try:
                if self._client.socket() is not None:
                    self._client._sock_close()
                    self._fail(ConnectFailure(FailureKind.LOST, "closed", self.endpoint))
                self._io.close()
            finally:
                self._io.lock.release()
            return
        if threading.current_thread() is getattr(self._client, "_thread", None):
            return
        self._client._thread_terminate = True  # what loop_stop sets; the thread sees it once awake
        self._client.wake_network_thread()
        self._client.loop_stop()

    def _wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait for ``event``; a non-threaded session runs its network meanwhile (unless another
        thread does: then it just waits, never taking the socket from it)."""
        if self._io is None:
            return event.wait(timeout)
        deadline = time.monotonic() + timeout
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not self.wait_network(min(left, 0.1)):
                break
        return event.is_set()

    def wait_network(self, timeout: float) -> bool:
        """Let up to ``timeout`` s pass while the network makes progress: a non-threaded session
        runs `loop` if no other thread does I/O now, else waits (its holder reads). Returns
        False once the connection is finished."""
        io = self._io
        if io is None or not io.lock.acquire(blocking=False):
            return not self._finished.wait(min(timeout, 0.05) if io is not None else timeout)
        try:
            return self.loop(timeout)
        finally:
            io.lock.release()

    def loop(self, timeout: float, wake: socket.socket | Sequence[Any] | None = None,
             max_messages: int = 0) -> bool:
        """Non-threaded sessions: wait up to ``timeout`` s for traffic (or for ``wake``, a socket
        or several, to become readable), read every packet that has arrived (``on_message`` runs
        here; with ``max_messages`` > 0 it stops reading after about that many messages), write
        what is queued, keep the connection alive. Returns False once the connection is finished."""
        io = self._io
        assert io is not None, "loop() is for non-threaded sessions"
        if not io.take(max(timeout, TAKE_MIN_S)):
            return not self._finished.is_set()  # another thread holds on to the socket: it reads
        try:
            with io.driving():
                return self._loop_once(io, timeout, wake, max_messages)
        finally:
            io.lock.release()

    def _loop_once(self, io: _DrivenIo, timeout: float, wake: socket.socket | Sequence[Any] | None,
                   max_messages: int) -> bool:
        client = self._client
        sock = client.socket()
        if sock is None or self._finished.is_set():
            return False
        wakes = [] if wake is None else [wake] if isinstance(wake, socket.socket) else list(wake)
        rlist: list[Any] = [sock, io.wakeup.reader, *wakes]
        wlist = [sock] if client.want_write() else []
        if _decrypted_waiting(sock):
            timeout = 0.0
        try:
            readable, _, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError) as exc:  # the socket was closed under us
            self._fail(ConnectFailure(FailureKind.LOST, str(exc), self.endpoint))
            return False
        if io.wakeup.reader in readable:
            io.wakeup.drain()
        if sock in readable or _decrypted_waiting(sock):
            start = self._received
            while client.loop_read() == paho.MQTT_ERR_SUCCESS and client.socket() is sock:
                if max_messages and self._received - start >= max_messages:
                    break
                if not _decrypted_waiting(sock) and not select.select([sock], [], [], 0)[0]:
                    break
        if client.socket() is not None and client.want_write():
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()
        if self._closing and client.socket() is not None and not client.want_write():
            client._sock_close()  # a close from a thread that could not take the socket (`_stop_loop`)
            self._fail(ConnectFailure(FailureKind.LOST, "closed", self.endpoint))
        return client.socket() is not None and not self._finished.is_set()

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Non-threaded sessions: the caller's publishes inside are queued, then written together
        when it ends (`_PahoClient._packet_write` joins them into one TLS write)."""
        io = self._io
        if io is None or io.corked_by:
            yield
            return
        io.corked_by = threading.get_ident()
        try:
            yield
        finally:
            io.corked_by = 0
            if self._client.want_write() and io.take(DEFAULT_TIMEOUT_S):
                try:
                    with io.driving():
                        if self._client.socket() is not None:
                            self._client.loop_write()
                finally:
                    io.lock.release()
            elif self._client.want_write():
                io.wake()  # another thread does the I/O: it writes them

    @property
    def network_wait_s(self) -> float:
        """The longest a `loop` may wait while keeping the connection alive (keepalive work)."""
        return network_wait_s(self._keepalive)

    def raw_socket(self) -> Any:
        """Non-threaded sessions: the connection's socket (to wait on it beside another one), or None."""
        return self._client.socket()

    def buffered(self) -> bool:
        """Non-threaded sessions: TLS bytes already decrypted, which a select on `raw_socket` misses."""
        return _decrypted_waiting(self._client.socket())

    # -- traffic -------------------------------------------------------------------------------
    def in_network_thread(self) -> bool:
        """Is the caller the thread doing this session's I/O now: paho's network thread, or the
        thread inside a non-threaded session's `loop` (where callbacks run, and where waiting for
        an acknowledgement deadlocks)?"""
        if self._io is not None:
            return self._io.owner == threading.get_ident()
        return threading.current_thread() is getattr(self._client, "_thread", None)

    def subscribe(self, filters: Sequence[str], qos: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Subscribe to ``filters`` and wait for the SUBACK."""
        self.subscribe_nowait(filters, qos)(timeout)

    def subscribe_nowait(self, filters: Sequence[str], qos: int = 1) -> Callable[[float], None]:
        """Send the SUBSCRIBE; returns ``wait(timeout)``, which returns once the SUBACK arrived
        (never call it on the network thread, which is the one that would receive it)."""
        if not self.is_open:
            raise NotConnected(f"not connected to {self.endpoint.describe()}")
        done = threading.Event()
        with self._lock:
            rc, mid = self._client.subscribe([(f, qos) for f in filters])
            if rc != paho.MQTT_ERR_SUCCESS or mid is None:
                raise NotConnected(f"subscribe failed: {paho.error_string(rc)}")
            self._suback[mid] = done
        if self._finished.is_set():  # dropped meanwhile: _fail may have woken the others already
            done.set()

        def wait(timeout: float) -> None:
            if not self._wait(done, timeout):
                raise ConnectFailure(FailureKind.TIMEOUT, f"no SUBACK within {timeout:g} s", self.endpoint)
            if self._finished.is_set():  # woken by the connection dropping, not by a SUBACK
                raise self._failure or NotConnected(f"connection to {self.endpoint.describe()} closed")
        return wait

    def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe from ``filters`` (does not wait for the UNSUBACK)."""
        if not self.is_open:
            raise NotConnected(f"not connected to {self.endpoint.describe()}")
        rc, _ = self._client.unsubscribe(list(filters))
        if rc != paho.MQTT_ERR_SUCCESS:
            raise NotConnected(f"unsubscribe failed: {paho.error_string(rc)}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Queue a publish; does not wait for the PUBACK."""
        self._publish(topic, payload, qos)

    def publish_and_wait(self, topic: str, payload: bytes | str, qos: int = 1,
                         timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK for QoS 1)."""
        info = self._publish(topic, payload, qos)
        if not self._threaded:
            deadline = time.monotonic() + timeout
            while not info.is_published() and time.monotonic() < deadline and self.loop(0.1):
                pass
            if not info.is_published():
                raise ConnectFailure(FailureKind.TIMEOUT, f"no PUBACK within {timeout:g} s", self.endpoint)
            return
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise NotConnected(str(exc)) from exc
        if not info.is_published():
            raise ConnectFailure(FailureKind.TIMEOUT, f"no PUBACK within {timeout:g} s", self.endpoint)

    def _publish(self, topic: str, payload: bytes | str, qos: int) -> paho.MQTTMessageInfo:
        if not self.is_open:
            raise NotConnected(f"not connected to {self.endpoint.describe()}")
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish failed: {paho.error_string(info.rc)}")
        if qos and not self._threaded:  # threaded: the PUBACK may be handled before this line
            self._unacked.add(info.mid)
        return info

    def unacknowledged(self) -> int:
        """Our QoS>0 publishes not yet acknowledged by the broker (paho numbers them with 16 bits:
        past 65535 it refuses more, "Message queue full"). Non-threaded sessions only (0 else)."""
        return len(self._unacked)

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _handle_connect(self, client: paho.Client, userdata: object, flags: object,
                        reason: object, properties: object) -> None:
        if getattr(reason, "is_failure", False):
            self._fail(ConnectFailure(FailureKind.REFUSED, f"broker refused the connection: {reason}",
                                      self.endpoint))
            return
        self._connected.set()
        self._settled.set()

    def _handle_disconnect(self, client: paho.Client, userdata: object, flags: object,
                           reason: object, properties: object) -> None:
        if self._opening and not self._connected.is_set():
            self._dropped_before_connack = True
            detail = "; ".join(self._opening_log[-3:]) or f"disconnected before CONNACK: {reason}"
            kind = self._classify(ConnectionError(detail), self._opening_log)
            if kind in (FailureKind.LOST, FailureKind.REFUSED) and self._presents_client_certificate():
                # TLS 1.3: the handshake completed, then the broker dropped us before any CONNACK
                # (often with no alert at all, just EOF): that is how it refuses a client certificate
                kind = FailureKind.CERTIFICATE_REJECTED
            elif kind is FailureKind.LOST:
                kind = FailureKind.REFUSED
            self._fail(ConnectFailure(kind, detail, self.endpoint))
            return
        lines = self._recent_log[-3:]
        kind = classify(ConnectionError(str(reason)), lines)
        if kind is FailureKind.REFUSED:
            kind = FailureKind.LOST
        self._fail(ConnectFailure(kind, f"{reason}" + (f" ({'; '.join(lines)})" if lines else ""),
                                  self.endpoint))

    def _classify(self, exc: BaseException, log_lines: Sequence[str] = ()) -> FailureKind:
        """`classify`, plus: a certificate "rejected" when we presented none means the port
        requires one (e.g. an API port given where the provisioning port belongs)."""
        kind = classify(exc, log_lines)
        if kind is FailureKind.CERTIFICATE_REJECTED and not self._presents_client_certificate():
            return FailureKind.CERTIFICATE_REQUIRED
        return kind

    def _presents_client_certificate(self) -> bool:
        return self.endpoint.tls is not None and self.endpoint.tls.cert_file is not None

    def _fail(self, failure: ConnectFailure) -> None:
        if self._finished.is_set():
            return
        self._failure = failure
        self._finished.set()
        self._settled.set()
        if self._io is not None:  # runs where the I/O is done: nobody selects on its wake-up pair now
            self._io.close()
        with self._lock:  # subscribe_nowait adds waiters from other threads
            waiting = list(self._suback.values())
        for event in waiting:
            event.set()
        if self._on_closed is not None and not self._opening and not self._closing:
            try:
                self._on_closed(failure)
            except Exception:
                log.exception("on_closed handler failed")

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self._received += 1
        try:
            self._on_message(message.topic, cast(bytes, message.payload))
        except Exception:  # a bad message or handler must never kill the network thread
            log.exception("message handler failed for topic %s", message.topic)

    def _handle_publish(self, client: paho.Client, userdata: object, mid: int, reason: object,
                        properties: object) -> None:
        self._unacked.discard(mid)  # paho calls this for QoS 0 publishes too: their ids are not here

    def _handle_subscribe(self, client: paho.Client, userdata: object, mid: int,
                          reason_codes: object, properties: object) -> None:
        with self._lock:
            event = self._suback.pop(mid, None)
        if event is not None:
            event.set()

    def _handle_socket_open(self, client: paho.Client, userdata: object, sock: object) -> None:
        """Send small packets at once: without TCP_NODELAY, Nagle's algorithm and the peer's
        delayed ACK hold each request/reply for ~40 ms."""
        if self.endpoint.unix_socket is None and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _keep_log_line(self, buf: str) -> None:
        """Keep paho's warnings and errors: they carry the TLS alerts `classify` looks for."""
        target = self._opening_log if self._opening else self._recent_log
        target.append(buf)
        del target[:-10]


class _PahoLog:
    """What paho sees as its logger (`paho.Client.enable_logger`): formats a line only when it is
    kept (warnings and errors) or logged (debug enabled), not for every packet."""

    def __init__(self, session: MqttSession) -> None:
        self._session = session

    def log(self, level: int, fmt: str, *args: object) -> None:
        keep = level >= logging.WARNING
        if not keep and not log.isEnabledFor(logging.DEBUG):
            return
        buf = fmt % args if args else fmt
        if keep:
            self._session._keep_log_line(buf)
        log.debug("paho %s: %s", self._session.endpoint.describe(), buf)


@dataclass
class Backoff:
    """Capped exponential backoff with proportional jitter; delays in seconds."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.25

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rng = rng or random.Random()
        delay = self.initial
        while True:
            yield delay * (1 + rng.uniform(-self.jitter, self.jitter))
            delay = min(self.cap, delay * self.factor)


class MqttLink:
    """Keeps one `MqttSession` to ``endpoint`` alive from a supervisor thread.

    ``endpoint`` may be a function returning the `Endpoint`: it is called before every connection
    attempt (e.g. to pick up credentials replaced on disk) and may raise `ConnectFailure`, which
    is reported through ``on_down`` like a failed connection."""

    def __init__(
        self,
        endpoint: Endpoint | Callable[[], Endpoint],
        *,
        client_id: str,
        on_message: MessageHandler,
        on_up: Callable[[MqttSession], None],
        on_down: ClosedHandler | None = None,
        keepalive: int = DEFAULT_KEEPALIVE_S,
        backoff: Backoff | None = None,
        connect_timeout: float = DEFAULT_TIMEOUT_S,
        threaded: bool = True,
    ) -> None:
        if isinstance(endpoint, Endpoint):
            fixed = endpoint
            self._endpoint_source: Callable[[], Endpoint] = lambda: fixed
            self.endpoint: Endpoint | None = endpoint
        else:
            self._endpoint_source = endpoint
            self.endpoint = None  # known from the first attempt on
        self._client_id = client_id
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._keepalive = keepalive
        self._backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._threaded = threaded
        self._session: MqttSession | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        where = self.endpoint.describe() if self.endpoint is not None else "agent"
        self._thread = threading.Thread(target=self._supervise, name=f"mqtt-link {where}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        session = self._session
        if session is not None:
            session.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._connect_timeout + 5)

    def _supervise(self) -> None:
        delays = self._backoff.delays()
        while not self._stopping.is_set():
            session: MqttSession | None = None
            try:
                # built inside the try: an unreadable certificate or key (ssl.SSLError, OSError)
                # must be reported through on_down, not kill this thread
                self.endpoint = self._endpoint_source()
                session = MqttSession(self.endpoint, client_id=self._client_id, on_message=self._on_message,
                                      on_closed=self._session_closed, keepalive=self._keepalive,
                                      threaded=self._threaded)
                session.open(self._connect_timeout)
                self._session = session
                if self._stopping.is_set():  # stop() ran while we were connecting
                    session.close()
                    break
                self._on_up(session)
            except (MqttError, OSError) as exc:
                if session is not None:
                    session.close()
                failure = exc if isinstance(exc, ConnectFailure) else ConnectFailure(
                    classify(exc), str(exc), self.endpoint)
                self._record_down(failure)
                self._wake.wait(next(delays))
                self._wake.clear()
                continue
            delays = self._backoff.delays()
            session.wait_closed()
            if self._stopping.is_set():
                break
            self._wake.wait(next(delays))
            self._wake.clear()

    def _session_closed(self, failure: ConnectFailure) -> None:
        if not self._stopping.is_set():
            self._record_down(failure)

    def _record_down(self, failure: ConnectFailure) -> None:
        if self._on_down is not None and not self._stopping.is_set():
            try:
                self._on_down(failure)
            except Exception:
                log.exception("on_down handler failed")
