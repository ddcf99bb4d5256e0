"""The emulator's front: TLS on both public ports, one rule about MQTT client ids, then bytes.

mosquitto disconnects the older of two sessions with one client id, and 2.0.11 has no option that
ties a client-chosen id to its owner (issue 20 §2). So the public ports are this process's, and
each mosquitto listens for clients on a private Unix socket only this process uses::

    client ──TLS──▶ front ──plain, Unix socket (sockets/, 0700)──▶ mosquitto ──▶ core
                     1. TLS: the API port wants a client certificate of the emulator's CA,
                        not revoked (CRL); the provision port is server-auth only
                     2. reads the CONNECT (MQTT 3.1, 3.1.1 or 5), refuses a taken id
                     3. API port: username := the certificate's CN, password dropped
                        (mosquitto's ACL gives that user /v1.0/<CN>/#)
                     4. copies bytes both ways until either side closes

**The id rule.** An MQTT client id belongs to whoever connected with it: on the API port the
owner is the certificate's CN, on the anonymous provision port the connection itself. While
its owner holds an id, a CONNECT with that id by anyone else is refused with CONNACK 2
(identifier rejected), before mosquitto sees it. The owner holds an id while connected, and on
the API port also once it asked for a session that outlives its connection (MQTT 3: clean
session = 0; MQTT 5: a session expiry interval above 0): until the front restarts,
with mosquitto, which then forgets its sessions too (``persistence false``). So the owner
itself may always reconnect (mosquitto replaces its stale connection, as a broker should);
nobody else can end its connection or resume its session. A provision client that reconnects
while its old connection is not yet gone is refused until it is: provisioning sessions hold
nothing private (every provisioning client may read ``/certBack/#``). An empty id is never
claimed: mosquitto gives such a client an id of its own, starting with `AUTO_ID_PREFIX`, which
the front refuses from clients. Kept ids are bounded per owner (`MAX_KEPT_PER_OWNER`) and in
all (`MAX_KEPT_IDS`): beyond either, a new id to keep is refused with CONNACK 3 (a kept id is
never given up to make room: that would hand its session to whoever comes next).

**Revocation.** ``SIGHUP`` re-reads certificates and CRL into new TLS contexts, then prints
`RELOAD_LINE` (`broker.Broker.reload` waits for it; `RELOAD_FAILED_LINE` if the files could
not be read). A connection whose handshake began before the reload was checked against the old
list: its CONNECT is refused (CONNACK 5; it may connect again), so every client admitted after
the line passed the new list.

Run as ``python -m pibridge.emulator.front CONFIG`` (`FrontConfig` writes CONFIG). It writes its
own log (``front.log``, mode 0600: it names ids); stdout carries only the lines the parent waits
for (`READY_LINE`, `RELOAD_LINE`, `RELOAD_FAILED_LINE`), so nothing a client sends can pose as
one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import resource
import signal
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pibridge.paths import open_private

#: The lines the parent reads on stdout: listening; a reload took effect; a reload failed.
READY_LINE = b"Listening."
RELOAD_LINE = b"Reloaded certificates and revocation list."
RELOAD_FAILED_LINE = b"Reload failed: kept the former certificates and revocation list."
#: Seconds a client has for its TLS handshake, then for its CONNECT, and the front for reaching
#: mosquitto (a client that sends nothing must not hold a socket or an id for ever).
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
UPSTREAM_TIMEOUT_S = 10.0
#: Largest CONNECT read (bytes); mosquitto's limit for any packet is the same (`broker`).
MAX_CONNECT_BYTES = 16 * 1024 * 1024
#: Bytes decrypted per read.
CHUNK_BYTES = 64 * 1024
#: Kept ids (module notes): per owner and in all; beyond either, CONNACK 3.
MAX_KEPT_PER_OWNER = 1000
MAX_KEPT_IDS = 100_000
#: mosquitto's ``auto_id_prefix`` (`broker` sets it): ids it assigns, refused from clients.
AUTO_ID_PREFIX = "auto-"

# -- MQTT wire constants (MQTT 3.1.1 §2-3, MQTT 5 §3.1-3.2) -----------------------------------------
CONNECT = 0x10  # first byte of a CONNECT packet (type 1, flags 0)
CONNACK = 0x20
#: Protocol names and the levels that go with them: 3.1 ("MQIsdp", 3), 3.1.1 and 5 ("MQTT", 4/5).
#: (Levels with the bridge bit, 0x83/0x84, are not among them: CONNACK 1.)
PROTOCOLS = {(b"MQIsdp", 3), (b"MQTT", 4), (b"MQTT", 5)}
LEVEL_5 = 5
FLAG_USERNAME, FLAG_PASSWORD, FLAG_WILL, FLAG_CLEAN, FLAG_RESERVED = 0x80, 0x40, 0x04, 0x02, 0x01
#: MQTT 5 CONNECT properties (§3.1.2.11) by identifier: the size of a fixed-size value, or how a
#: variable one is read ("string": u16 length + bytes; "pair": two of those).
SESSION_EXPIRY = 0x11
CONNECT_PROPERTIES: dict[int, int | str] = {
    SESSION_EXPIRY: 4, 0x21: 2, 0x27: 4, 0x22: 2, 0x19: 1, 0x17: 1,  # expiry, receive max, max
    0x26: "pair", 0x15: "string", 0x16: "string",                     # packet, topic alias max, two
}                                                                    # requests; user, auth method, data
#: Seconds after a close that a client which does not read its last bytes is cut off.
CLOSE_LINGER_S = 5.0
#: CONNACK return codes (MQTT 3.1.1 §3.2.2.3), and their MQTT 5 reason codes (§3.2.2.2). An
#: unknown protocol level is answered in the 3.1.1 form (the client's version is not known).
RC_BAD_VERSION, RC_ID_REJECTED, RC_UNAVAILABLE, RC_NOT_AUTHORISED = 1, 2, 3, 5
RC5 = {RC_ID_REJECTED: 0x85, RC_UNAVAILABLE: 0x88, RC_NOT_AUTHORISED: 0x87}
VARINT_MAX_BYTES = 4


class Role(enum.Enum):
    """A public port, and the broker behind it (`pibridge.emulator.broker`)."""

    API = "api"  # mutual TLS; the certificate's CN is the user
    PROVISION = "provision"  # server-auth TLS; anonymous


class BadConnect(Exception):
    """A first packet that is not a well-formed CONNECT (the connection is closed, as mosquitto
    would close it)."""


class UnsupportedLevel(BadConnect):
    """An MQTT protocol level other than 3, 4 or 5 (answered CONNACK 1)."""


# -- the CONNECT packet ----------------------------------------------------------------------------
#
#   fixed header   0x10 | remaining length (varint, 1-4 bytes)
#   variable       protocol name (u16 length + bytes) | level (u8) | flags (u8) | keepalive (u16)
#                  [MQTT 5: properties (varint length + bytes)]
#   payload        client id (u16 + UTF-8)
#                  [will: MQTT 5 will properties (varint + bytes) | topic (u16 + b) | message (u16 + b)]
#                  [username (u16 + UTF-8)] [password (u16 + bytes)]
#
#   flags          7 username | 6 password | 5 will retain | 4-3 will QoS | 2 will | 1 clean | 0 reserved

@dataclass
class Connect:
    """A parsed CONNECT: the parts the front reads or rewrites, the rest kept as bytes."""

    header: bytes  # protocol name, level, flags (replaced on encoding), keepalive
    level: int
    flags: int
    properties: bytes  # MQTT 5 only, with its length prefix; b"" otherwise
    session_expiry: int  # MQTT 5's Session Expiry Interval (s; 0 when absent or MQTT 3)
    client_id: str
    will: bytes  # will properties, topic and message as on the wire; b"" without a will
    username: bytes | None
    password: bytes | None

    @property
    def outlives_connection(self) -> bool:
        """Whether mosquitto may keep this session after a disconnect (module notes)."""
        if self.level == LEVEL_5:
            return self.session_expiry > 0  # MQTT 5 §3.1.2.11.2: 0 ends it with the connection
        return not self.flags & FLAG_CLEAN

    def as_user(self, username: str) -> Connect:
        """The same CONNECT with ``username`` and no password."""
        flags = (self.flags | FLAG_USERNAME) & ~FLAG_PASSWORD
        return Connect(self.header, self.level, flags, self.properties, self.session_expiry,
                       self.client_id, self.will, username.encode(), None)

    def encode(self) -> bytes:
        body = (self.header[:-3] + bytes([self.flags]) + self.header[-2:] + self.properties
                + _string(self.client_id.encode()) + self.will)
        if self.username is not None:
            body += _string(self.username)
        if self.password is not None:
            body += _string(self.password)
        return bytes([CONNECT]) + _varint(len(body)) + body


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_at(data: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """The variable-length integer (MQTT §1.5.5) starting at ``data[at]``: its value and the
    index after it; None while ``data`` ends inside it. Raises `BadConnect` past 4 bytes."""
    value = 0
    for i in range(VARINT_MAX_BYTES):
        if at + i >= len(data):
            return None
        digit = data[at + i]
        value |= (digit & 0x7F) << (7 * i)
        if not digit & 0x80:
            return value, at + i + 1
    raise BadConnect("a malformed length")


class _Reader:
    """Reads the fields of one packet body; running past its end is a `BadConnect`."""

    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.body):
            raise BadConnect("the CONNECT ends inside a field")
        chunk = self.body[self.at:self.at + n]
        self.at += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def string(self) -> bytes:
        (n,) = struct.unpack("!H", self.take(2))
        return self.take(n)

    def varint(self) -> int:
        decoded = _varint_at(self.body, self.at)
        if decoded is None:
            raise BadConnect("the CONNECT ends inside a field")
        value, self.at = decoded
        return value

    def varint_field(self) -> bytes:
        """A varint length and that many bytes, returned as on the wire (MQTT 5 properties)."""
        start = self.at
        self.take(self.varint())
        return self.body[start:self.at]


def parse_connect(body: bytes) -> Connect:
    """A CONNECT's body (what follows its fixed header). Raises `BadConnect`, or
    `UnsupportedLevel` for a protocol level it does not know."""
    r = _Reader(body)
    name = r.string()
    level, flags = r.u8(), r.u8()
    r.take(2)  # keepalive
    header = body[:r.at]
    if (name, level) not in PROTOCOLS:
        if name in (b"MQTT", b"MQIsdp"):
            raise UnsupportedLevel(f"protocol level {level}")
        raise BadConnect(f"not an MQTT CONNECT (protocol name {name[:16]!a})")
    if flags & FLAG_RESERVED:
        raise BadConnect("the CONNECT's reserved flag is set")
    properties = r.varint_field() if level == LEVEL_5 else b""
    session_expiry = _session_expiry(properties) if properties else 0
    try:
        client_id = r.string().decode()
    except UnicodeDecodeError:
        raise BadConnect("the client id is not UTF-8") from None
    will = b""
    if flags & FLAG_WILL:
        start = r.at
        if level == LEVEL_5:
            r.varint_field()
        r.string()
        r.string()
        will = body[start:r.at]
    username = r.string() if flags & FLAG_USERNAME else None
    password = r.string() if flags & FLAG_PASSWORD else None
    if r.at != len(body):
        raise BadConnect("bytes after the CONNECT's last field")
    return Connect(header, level, flags, properties, session_expiry, client_id, will, username, password)


def _session_expiry(properties: bytes) -> int:
    """The Session Expiry Interval in MQTT 5 CONNECT properties (a varint length, then
    identifier + value pairs, `CONNECT_PROPERTIES`); 0 when absent."""
    r = _Reader(properties)
    r.varint()  # the length (`_Reader.varint_field` checked it)
    expiry = 0
    while r.at < len(properties):
        identifier = r.u8()
        kind = CONNECT_PROPERTIES.get(identifier)
        if kind is None:
            raise BadConnect(f"an unknown CONNECT property {identifier:#04x}")
        if kind == "pair":
            r.string()
            r.string()
        elif kind == "string":
            r.string()
        elif identifier == SESSION_EXPIRY:
            (expiry,) = struct.unpack("!I", r.take(4))
        else:
            assert isinstance(kind, int)
            r.take(kind)
    return expiry


def connack(level: int, code: int) -> bytes:
    """A refusing CONNACK in the client's protocol version (``code``: a 3.1.1 return code)."""
    if level == LEVEL_5 and code in RC5:
        return bytes([CONNACK, 3, 0, RC5[code], 0])  # flags, reason code, no properties
    return bytes([CONNACK, 2, 0, code])


def split_packet(buffer: bytes | bytearray, limit: int) -> tuple[int, bytes, int] | None:
    """The first MQTT packet in ``buffer``: its first byte, its body and the bytes it took; None
    while it is incomplete. Raises `BadConnect` on a malformed length or one over ``limit``."""
    try:
        decoded = _varint_at(buffer, 1)
    except BadConnect:
        raise BadConnect("a malformed remaining length") from None
    if decoded is None:
        return None
    length, start = decoded
    if length > limit:
        raise BadConnect(f"a {length}-byte first packet (the limit is {limit})")
    end = start + length
    if len(buffer) < end:
        return None
    return buffer[0], bytes(buffer[start:end]), end


# -- the id rule -----------------------------------------------------------------------------------

@dataclass
class Claim:
    """Who holds a client id: its owner, the connections now using it, and whether mosquitto may
    keep its session after they end (then the owner keeps the id)."""

    owner: object  # a CN (API port) or the connection itself (provision port)
    connections: set[object] = field(default_factory=set)
    kept: bool = False


class IdRegistry:
    """The id rule of one port (module notes): `claim` on CONNECT, `release` on disconnect."""

    def __init__(self, max_kept: int = MAX_KEPT_IDS, max_kept_per_owner: int = MAX_KEPT_PER_OWNER) -> None:
        self.claims: dict[str, Claim] = {}
        self.kept_per_owner: collections.Counter[object] = collections.Counter()
        self.kept_total = 0
        self.max_kept, self.max_kept_per_owner = max_kept, max_kept_per_owner

    def claim(self, client_id: str, owner: object, connection: object, keep: bool) -> int | None:
        """Let ``connection`` use ``client_id``; None if granted, else a CONNACK return code."""
        if not client_id:
            return None
        if client_id.startswith(AUTO_ID_PREFIX):
            return RC_ID_REJECTED  # mosquitto's own ids (module notes)
        held = self.claims.get(client_id)
        if held is not None and held.owner != owner:
            return RC_ID_REJECTED  # a held claim always has a connection or is kept
        newly_kept = keep and (held is None or not held.kept)
        if newly_kept and (self.kept_per_owner[owner] >= self.max_kept_per_owner
                           or self.kept_total >= self.max_kept):
            return RC_UNAVAILABLE
        if held is None:
            held = self.claims[client_id] = Claim(owner)
        if newly_kept:  # once kept, kept: a later clean CONNECT may still fail before mosquitto
            held.kept = True
            self.kept_per_owner[owner] += 1
            self.kept_total += 1
        held.connections.add(connection)
        return None

    def release(self, client_id: str, connection: object) -> None:
        """``connection`` ended: the id stays its owner's while another of its connections uses it
        or its session may be kept; else it is free."""
        held = self.claims.get(client_id)
        if held is None or connection not in held.connections:
            return
        held.connections.discard(connection)
        if not held.connections and not held.kept:
            del self.claims[client_id]


# -- configuration ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrontListener:
    role: Role
    host: str
    port: int
    upstream: Path  # mosquitto's client socket for this port


#: The paths of a `FrontConfig`, in the order of its fields.
FILE_KEYS = ("ca_file", "cert_file", "key_file", "crl_file", "state_dir")


@dataclass(frozen=True)
class FrontConfig:
    """What ``python -m pibridge.emulator.front`` serves; written as JSON in the state dir."""

    listeners: tuple[FrontListener, ...]
    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path
    state_dir: Path
    #: The child's thread name, and how messages call it.
    name: ClassVar[str] = "front"
    title: ClassVar[str] = "the emulator's front"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "front.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "front.log"

    def write(self) -> Path:
        listeners = [{"role": x.role.value, "host": x.host, "port": x.port, "upstream": str(x.upstream)}
                     for x in self.listeners]
        files = {k: str(getattr(self, k)) for k in FILE_KEYS}
        data = {"listeners": listeners, **files}
        self.config_file.write_text(json.dumps(data, indent=1) + "\n")
        return self.config_file

    @classmethod
    def read(cls, path: Path) -> FrontConfig:
        data = json.loads(path.read_text())
        listeners = tuple(FrontListener(Role(x["role"]), x["host"], int(x["port"]), Path(x["upstream"]))
                          for x in data["listeners"])
        return cls(listeners, *(Path(data[k]) for k in FILE_KEYS))


def tls_context(config: FrontConfig, role: Role) -> ssl.SSLContext:
    """The server context of one port, as mosquitto's ``tls_version tlsv1.2`` listener had it:
    TLS 1.2 or newer; the API port wants a client certificate of the CA, checked against the CRL
    (an expired CRL rejects every client, as with mosquitto)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.cert_file), str(config.key_file))
    if role is Role.API:
        context.load_verify_locations(cafile=str(config.ca_file))
        context.load_verify_locations(cafile=str(config.crl_file))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(peercert: object) -> str | None:
    """The subject CN of a verified peer certificate (``getpeercert()``), or None."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class FrontLog:
    """``front.log``: one line per event, ``<epoch seconds>: <text>`` like mosquitto's. Text from
    clients is written with `ascii` escapes (no line of it can look like another line). A write
    that fails (a full disk) is dropped: the front serves on."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def say(self, text: str) -> None:
        line = f"{int(time.time())}: {text}\n".encode(errors="backslashreplace")
        if self.path is None:
            sys.stderr.buffer.write(line)
            return
        try:
            if self._file is None:
                self._file = open_private(self.path)
            self._file.write(line)
        except OSError:
            self._file = None


def _tell_parent(line: bytes) -> None:
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.flush()


# -- the server ------------------------------------------------------------------------------------

class Front:
    """Both public ports: `serve` until cancelled; `reload` swaps the TLS contexts."""

    def __init__(self, config: FrontConfig, log: FrontLog | None = None) -> None:
        self.config = config
        self.log = log or FrontLog(config.log_file)
        self.contexts = {x.role: tls_context(config, x.role) for x in config.listeners}
        self.generation = 0  # reloads so far: a handshake begun under an older one is not trusted
        self.registries = {x.role: IdRegistry() for x in config.listeners}
        self.on_listening: Callable[[], None] | None = None  # called once every port listens

    def reload(self) -> bool:
        """New TLS contexts from the files (True), or the former ones kept (False, logged)."""
        try:
            contexts = {x.role: tls_context(self.config, x.role) for x in self.config.listeners}
        except (OSError, ssl.SSLError) as exc:
            self.log.say(f"Error: cannot reload the certificates or the revocation list ({exc}); "
                         "keeping the former ones")
            return False
        self.contexts = contexts
        self.generation += 1
        return True

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for listener in self.config.listeners:
            def connection(listener: FrontListener = listener) -> ClientConnection:
                return ClientConnection(self, listener)
            servers.append(await loop.create_server(connection, listener.host, listener.port,
                                                    reuse_address=True))
        if self.on_listening is not None:
            self.on_listening()
        try:
            await asyncio.gather(*(server.serve_forever() for server in servers))
        finally:
            for server in servers:
                server.close()


class ClientConnection(asyncio.Protocol):
    """One client of a public port: TLS through memory BIOs (so that a refused certificate gets
    its alert, as from mosquitto, which asyncio's own TLS drops), the CONNECT, then the relay to
    mosquitto's client socket (`Upstream`). Each side's full write buffer pauses the other's reads.

    States: handshake → CONNECT (plaintext collected) → connecting upstream (client reads paused)
    → relaying. A timer bounds each of the first three."""

    def __init__(self, front: Front, listener: FrontListener) -> None:
        self.front, self.listener = front, listener
        self.transport: asyncio.Transport | None = None
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.generation = front.generation
        self.tls = front.contexts[listener.role].wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False
        self.early = bytearray()  # plaintext before the relay: the CONNECT and what follows it
        self.connect: Connect | None = None
        self.upstream: Upstream | None = None
        self.upstream_full = False  # mosquitto's socket is full: the client's reads stay paused
        self.closed = False
        self.peer: object = None
        self.timer: asyncio.TimerHandle | None = None
        self.connecting: asyncio.Future[None] | None = None

    @property
    def where(self) -> str:
        return f"{self.peer} on the {self.listener.role.value} port"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self._start_timer(HANDSHAKE_TIMEOUT_S, f"no TLS handshake within {HANDSHAKE_TIMEOUT_S:g} s")

    # -- bytes from the client
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.incoming.write(data)
        if not self.handshaken and not self._handshake():
            return
        while not self.closed:
            try:
                chunk = self.tls.read(CHUNK_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the client's close_notify
                self.close()
                return
            except ssl.SSLError as exc:
                self._flush()
                self.close(f"TLS error: {exc}")
                return
            if not chunk:
                self.close()
                return
            self._plaintext(chunk)
        self._flush()

    def _handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            self._flush()  # the alert: the client learns why (certificate required, revoked, ...)
            self.close(f"TLS handshake failed: {exc}")
            return False
        self._flush()
        self.handshaken = True
        self._start_timer(CONNECT_TIMEOUT_S, f"no CONNECT within {CONNECT_TIMEOUT_S:g} s")
        return True

    def _plaintext(self, chunk: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(chunk)
            return
        self.early += chunk
        if self.connect is not None:
            return  # waiting for the upstream: reads are paused, this is what was already read
        try:
            if self.early[0] != CONNECT:  # said at once, not after a length it may never fill
                raise BadConnect(f"the first packet is not a CONNECT (type byte {self.early[0]:#04x})")
            packet = split_packet(self.early, MAX_CONNECT_BYTES)
            if packet is None:
                return
            _, body, used = packet
            connect = parse_connect(body)
        except UnsupportedLevel as exc:
            self.refuse(4, RC_BAD_VERSION, str(exc))
            return
        except BadConnect as exc:
            self.close(str(exc))
            return
        del self.early[:used]
        self._admit(connect)

    def _admit(self, connect: Connect) -> None:
        """Apply the port's rules to a CONNECT; if it passes, connect it upstream."""
        role = self.listener.role
        owner: object = self
        if role is Role.API:
            if self.generation != self.front.generation:
                self.refuse(connect.level, RC_NOT_AUTHORISED, "its handshake began before the certificates "
                            "were reloaded (a revocation): it may connect again")
                return
            cn = common_name(self.tls.getpeercert())
            if not cn:
                self.refuse(connect.level, RC_NOT_AUTHORISED, "its certificate has no CN")
                return
            owner, connect = cn, connect.as_user(cn)
        registry = self.front.registries[role]
        refused = registry.claim(connect.client_id, owner, self,
                                 keep=role is Role.API and connect.outlives_connection)
        if refused is not None:
            reason = "is taken" if refused == RC_ID_REJECTED else "is one too many to keep"
            self.refuse(connect.level, refused, f"client id {connect.client_id!a} {reason}")
            return
        self.connect = connect
        self.front.log.say(f"Accepted {self.where}: client id {connect.client_id!a}"
                           + (f", CN {owner}" if role is Role.API else ""))
        assert self.transport is not None
        self.transport.pause_reading()
        self._start_timer(UPSTREAM_TIMEOUT_S, f"mosquitto at {self.listener.upstream} did not accept "
                          f"within {UPSTREAM_TIMEOUT_S:g} s")
        self.connecting = asyncio.ensure_future(self._connect_upstream(connect))

    async def _connect_upstream(self, connect: Connect) -> None:
        loop = asyncio.get_running_loop()
        upstream = Upstream(self)
        try:
            await loop.create_unix_connection(lambda: upstream, str(self.listener.upstream))
        except OSError as exc:
            if not self.closed:
                self.refuse(connect.level, RC_UNAVAILABLE, f"mosquitto at {self.listener.upstream}: {exc}")
            return
        if self.closed:
            upstream.close()
            return
        if self.timer is not None:
            self.timer.cancel()
        self.upstream = upstream
        assert upstream.transport is not None and self.transport is not None
        upstream.transport.write(connect.encode() + bytes(self.early))
        self.early.clear()
        if not self.upstream_full:
            self.transport.resume_reading()

    # -- bytes to the client
    def send(self, data: bytes) -> None:
        """Plaintext for the client (from mosquitto, or a refusing CONNACK)."""
        if self.closed:
            return
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            self.close(f"TLS error: {exc}")
            return
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:  # the client reads slower than mosquitto sends
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    # -- the end
    def refuse(self, level: int, code: int, why: str) -> None:
        """Answer the CONNECT with a refusing CONNACK (`connack`), then close."""
        self.front.log.say(f"Refused {self.where}: {why} (CONNACK {code})")
        self.send(connack(level, code))
        self.close()

    def close(self, why: str | None = None) -> None:
        if self.closed:
            return
        if why:
            self.front.log.say(f"Closed {self.where}: {why}")
        if self.handshaken:
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()  # our close_notify (the client's is not waited for)
            self._flush()
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.connecting is not None:
            self.connecting.cancel()
        if self.connect is not None:
            self.front.registries[self.listener.role].release(self.connect.client_id, self)
        if self.upstream is not None:
            self.upstream.close()
        if self.transport is not None:
            self.transport.close()  # after what was written (the alert, a CONNACK) is sent
            asyncio.get_running_loop().call_later(CLOSE_LINGER_S, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def _start_timer(self, seconds: float, why: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self.close, why)


class Upstream(asyncio.Protocol):
    """A client's connection to mosquitto's client socket: what mosquitto sends goes to the client."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.send(data)

    def pause_writing(self) -> None:  # mosquitto reads slower than the client sends
        self.client.upstream_full = True
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.upstream_full = False
        if self.client.transport is not None and self.client.upstream is not None:
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _log_loop_errors(log: FrontLog) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio's default handler prints a traceback for a connection reset under it, a client's
    business; other errors (an accept failing for lack of file descriptors, say) are one line."""
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, ssl.SSLError)):
            return
        log.say(f"Error: {context.get('message')}" + (f" ({exc})" if exc else ""))
    return handler


def _raise_open_files_limit() -> None:
    """Two descriptors per client: take the hard limit (no privilege needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _main(config: FrontConfig) -> None:
    loop = asyncio.get_running_loop()
    log = FrontLog(config.log_file)
    loop.set_exception_handler(_log_loop_errors(log))
    front = Front(config, log)
    front.on_listening = lambda: _tell_parent(READY_LINE)
    stop = asyncio.Event()

    def reload() -> None:
        _tell_parent(RELOAD_LINE if front.reload() else RELOAD_FAILED_LINE)

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by the parent until now
    serving = asyncio.ensure_future(front.serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # it failed: raise its reason
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pibridge.emulator.front CONFIG", file=sys.stderr)
        return 2
    _raise_open_files_limit()
    try:
        config = FrontConfig.read(Path(args[0]))
        asyncio.run(_main(config))
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        print(f"Error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
