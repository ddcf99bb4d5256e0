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
the API port also while mosquitto keeps a persistent session for it (its last CONNECT said
clean session = 0): until the front restarts, with mosquitto, which then forgets sessions too
(``persistence false``). So the owner itself may always reconnect (mosquitto replaces its stale
connection, as a broker should); nobody else can end its connection or resume its session.
A provision client that reconnects while its old connection is not yet gone is refused until
it is: provisioning sessions hold nothing private (every provisioning client may read
``/certBack/#``). An empty id is never claimed: mosquitto gives each such client its own.

Revocation: ``SIGHUP`` re-reads certificates and CRL into new TLS contexts (every handshake after
it uses them) and then prints `RELOAD_LINE`, which `broker.Broker.reload` waits for.

Run as ``python -m pibridge.emulator.front CONFIG`` (`FrontConfig` writes CONFIG); it logs one
line per event to stdout, which the parent copies to ``front.log`` (mode 0600: it names ids).
"""

from __future__ import annotations

import asyncio
import enum
import json
import signal
import ssl
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

#: What the front prints once new TLS contexts (CRL included) serve every later handshake.
RELOAD_LINE = b"Reloaded certificates and revocation list."
#: What the front prints once both public ports listen.
READY_LINE = "Listening."
#: Seconds a client has for its TLS handshake, and then for its CONNECT (mosquitto's own CONNECT
#: wait is its keepalive check; a client that sends nothing must not hold a socket for ever).
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
#: Largest CONNECT read (bytes; `broker.MAX_PACKET_BYTES` is mosquitto's limit for any packet).
MAX_CONNECT_BYTES = 16 * 1024 * 1024
#: Bytes copied per read between a client and mosquitto.
CHUNK_BYTES = 64 * 1024
#: Most ids kept for disconnected persistent sessions; beyond it a new persistent id is refused
#: (CONNACK 3), so certificate holders cannot grow the front without bound.
MAX_KEPT_IDS = 100_000

# -- MQTT wire constants (MQTT 3.1.1 §2-3, MQTT 5 §3.1-3.2) -----------------------------------------
CONNECT = 0x10  # first byte of a CONNECT packet (type 1, flags 0)
CONNACK = 0x20
#: Protocol names and the levels that go with them: 3.1 ("MQIsdp", 3), 3.1.1 and 5 ("MQTT", 4/5).
PROTOCOLS = {(b"MQIsdp", 3), (b"MQTT", 4), (b"MQTT", 5)}
LEVEL_5 = 5
FLAG_USERNAME, FLAG_PASSWORD, FLAG_WILL_RETAIN, FLAG_WILL, FLAG_CLEAN, FLAG_RESERVED = (
    0x80, 0x40, 0x20, 0x04, 0x02, 0x01)
FLAG_WILL_QOS = 0x18
#: CONNACK return codes (MQTT 3.1.1 §3.2.2.3; MQTT 5 clients get the 3.1.1 packet, which the
#: MQTT 5 spec allows for a refusal before the version is settled).
RC_BAD_VERSION, RC_ID_REJECTED, RC_UNAVAILABLE, RC_NOT_AUTHORISED = 1, 2, 3, 5
#: CONNACK reason codes of MQTT 5 (§3.2.2.2) for the same refusals.
RC5 = {RC_ID_REJECTED: 0x85, RC_UNAVAILABLE: 0x88, RC_NOT_AUTHORISED: 0x87}
VARINT_MAX_BYTES = 4


class Role(enum.Enum):
    """A public port, and the broker behind it (`pibridge.emulator.broker`)."""

    API = "api"  # mutual TLS; the certificate's CN is the user
    PROVISION = "provision"  # server-auth TLS; anonymous


class BadConnect(Exception):
    """A first packet that is not a well-formed CONNECT (the connection is closed, as mosquitto
    would close it)."""


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

    header: bytes  # protocol name, level, (flags replaced on encoding), keepalive
    level: int
    flags: int
    properties: bytes  # MQTT 5 only, with its length prefix; b"" otherwise
    client_id: str
    will: bytes  # will properties, topic and message as on the wire; b"" without a will
    username: bytes | None
    password: bytes | None

    @property
    def clean(self) -> bool:
        return bool(self.flags & FLAG_CLEAN)

    def as_user(self, username: str) -> Connect:
        """The same CONNECT with ``username`` and no password."""
        flags = (self.flags | FLAG_USERNAME) & ~FLAG_PASSWORD
        return Connect(self.header, self.level, flags, self.properties, self.client_id, self.will,
                       username.encode(), None)

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

    def varint_field(self) -> bytes:
        """A varint length and that many bytes, returned as on the wire (MQTT 5 properties)."""
        start, value, shift = self.at, 0, 0
        for _ in range(VARINT_MAX_BYTES):
            digit = self.u8()
            value |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                self.take(value)
                return self.body[start:self.at]
        raise BadConnect("a malformed length")


def parse_connect(body: bytes) -> Connect:
    """A CONNECT's body (what follows its fixed header). Raises `BadConnect`; an unknown protocol
    level raises `UnsupportedLevel` (answered with CONNACK 1)."""
    r = _Reader(body)
    name = r.string()
    level, flags = r.u8(), r.u8()
    r.take(2)  # keepalive
    header = body[:r.at]
    if (name, level) not in PROTOCOLS:
        if name in (b"MQTT", b"MQIsdp"):
            raise UnsupportedLevel(f"protocol level {level}")
        raise BadConnect(f"not an MQTT CONNECT (protocol name {name[:16]!r})")
    if flags & FLAG_RESERVED:
        raise BadConnect("the CONNECT's reserved flag is set")
    properties = r.varint_field() if level == LEVEL_5 else b""
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
    return Connect(header, level, flags, properties, client_id, will, username, password)


class UnsupportedLevel(BadConnect):
    """An MQTT protocol level other than 3, 4 or 5."""


def connack(level: int, code: int) -> bytes:
    """A refusing CONNACK in the client's protocol version (``code``: a 3.1.1 return code)."""
    if level == LEVEL_5 and code in RC5:
        return bytes([CONNACK, 3, 0, RC5[code], 0])  # flags, reason code, no properties
    return bytes([CONNACK, 2, 0, code])


def split_packet(buffer: bytes | bytearray, limit: int) -> tuple[int, bytes, int] | None:
    """The first MQTT packet in ``buffer``: its first byte, its body and the bytes it took; None
    while it is incomplete. Raises `BadConnect` on a malformed length or one over ``limit``."""
    length, shift = 0, 0
    for at in range(1, 1 + VARINT_MAX_BYTES):
        if at >= len(buffer):
            return None
        digit = buffer[at]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    else:
        raise BadConnect("a malformed remaining length")
    if length > limit:
        raise BadConnect(f"a {length}-byte first packet (the limit is {limit})")
    end = at + 1 + length
    if len(buffer) < end:
        return None
    return buffer[0], bytes(buffer[at + 1:end]), end


# -- the id rule -----------------------------------------------------------------------------------

@dataclass
class Claim:
    """Who holds a client id, and whether mosquitto keeps its session after a disconnect."""

    owner: object  # a CN (API port) or the connection itself (provision port)
    connection: object | None  # the connection now using it, None between connections
    persistent: bool


class IdRegistry:
    """The id rule of one port (module notes): `claim` on CONNECT, `release` on disconnect."""

    def __init__(self, max_kept: int = MAX_KEPT_IDS) -> None:
        self.claims: dict[str, Claim] = {}
        self.max_kept = max_kept

    def claim(self, client_id: str, owner: object, connection: object, persistent: bool) -> int | None:
        """Give ``client_id`` to ``connection``; None if granted, else a CONNACK return code."""
        if not client_id:
            return None
        held = self.claims.get(client_id)
        if held is not None and held.owner != owner and (held.connection is not None or held.persistent):
            return RC_ID_REJECTED
        if held is None and persistent and self._kept() >= self.max_kept:
            return RC_UNAVAILABLE
        self.claims[client_id] = Claim(owner, connection, persistent)
        return None

    def release(self, client_id: str, connection: object) -> None:
        """``connection`` ended: its id is free unless a persistent session keeps it for its owner
        (or the owner already holds it on a newer connection)."""
        held = self.claims.get(client_id)
        if held is None or held.connection is not connection:
            return
        if held.persistent:
            held.connection = None
        else:
            del self.claims[client_id]

    def _kept(self) -> int:
        return sum(1 for c in self.claims.values() if c.persistent)


# -- configuration and the server ------------------------------------------------------------------

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


def say(message: str) -> None:
    """One log line (stdout, copied to front.log by the parent), prefixed like mosquitto's."""
    sys.stdout.write(f"{int(time.time())}: {message}\n")
    sys.stdout.flush()


class Front:
    """Both public ports: `serve` until stopped; `reload` swaps the TLS contexts."""

    def __init__(self, config: FrontConfig) -> None:
        self.config = config
        self.contexts = {x.role: tls_context(config, x.role) for x in config.listeners}
        self.registries = {x.role: IdRegistry() for x in config.listeners}

    def reload(self) -> None:
        try:
            self.contexts = {x.role: tls_context(self.config, x.role) for x in self.config.listeners}
        except (OSError, ssl.SSLError) as exc:
            say(f"Error: cannot reload the certificates or the revocation list ({exc}); keeping the "
                "former ones")
            return
        sys.stdout.buffer.write(f"{int(time.time())}: ".encode() + RELOAD_LINE + b"\n")
        sys.stdout.flush()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for listener in self.config.listeners:
            def connection(listener: FrontListener = listener) -> ClientConnection:
                return ClientConnection(self, listener)
            servers.append(await loop.create_server(connection, listener.host, listener.port,
                                                    reuse_address=True))
        say(READY_LINE)
        await asyncio.gather(*(server.serve_forever() for server in servers))


class ClientConnection(asyncio.Protocol):
    """One client of a public port: TLS through memory BIOs (so that a refused certificate gets
    its alert, as from mosquitto, which asyncio's own TLS drops), the CONNECT, then the relay to
    mosquitto's client socket (`Upstream`). Each side's full write buffer pauses the other's reads.

    States: handshake → CONNECT (plaintext collected) → connecting upstream (client reads paused)
    → relaying. A timer bounds the first two (`HANDSHAKE_TIMEOUT_S`, `CONNECT_TIMEOUT_S`)."""

    def __init__(self, front: Front, listener: FrontListener) -> None:
        self.front, self.listener = front, listener
        self.transport: asyncio.Transport | None = None
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = front.contexts[listener.role].wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False
        self.early = bytearray()  # plaintext before the relay: the CONNECT and what follows it
        self.connect: Connect | None = None
        self.upstream: Upstream | None = None
        self.claimed = False
        self.closed = False
        self.peer: object = None
        self.timer: asyncio.TimerHandle | None = None
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT_S, self.close, f"no TLS handshake within {HANDSHAKE_TIMEOUT_S:g} s")

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
        self.handshaken = True
        self._flush()
        self._restart_timer(CONNECT_TIMEOUT_S, f"no CONNECT within {CONNECT_TIMEOUT_S:g} s")
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
            cn = common_name(self.tls.getpeercert())
            if cn is None:
                self.refuse(connect.level, RC_NOT_AUTHORISED, "its certificate has no CN")
                return
            owner, connect = cn, connect.as_user(cn)
        refused = self.front.registries[role].claim(connect.client_id, owner, self,
                                                    persistent=role is Role.API and not connect.clean)
        if refused is not None:
            reason = "in use by another client" if refused == RC_ID_REJECTED else "too many kept sessions"
            self.refuse(connect.level, refused, f"client id {connect.client_id!r} {reason}")
            return
        self.claimed, self.connect = True, connect
        if self.timer is not None:
            self.timer.cancel()
        assert self.transport is not None
        self.transport.pause_reading()
        self.connecting = asyncio.ensure_future(self._connect_upstream(connect))

    async def _connect_upstream(self, connect: Connect) -> None:
        loop = asyncio.get_running_loop()
        upstream = Upstream(self)
        try:
            await loop.create_unix_connection(lambda: upstream, str(self.listener.upstream))
        except OSError as exc:
            self.refuse(connect.level, RC_UNAVAILABLE, f"mosquitto at {self.listener.upstream}: {exc}")
            return
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        assert upstream.transport is not None and self.transport is not None
        upstream.transport.write(connect.encode() + bytes(self.early))
        self.early.clear()
        self.transport.resume_reading()

    # -- bytes to the client
    def send(self, data: bytes) -> None:
        """Plaintext for the client (from mosquitto)."""
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
        say(f"Refused {self.peer} on the {self.listener.role.value} port: {why} (CONNACK {code})")
        self.send(connack(level, code))
        self.close()

    def close(self, why: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if why:
            say(f"Closed {self.peer} on the {self.listener.role.value} port: {why}")
        if self.timer is not None:
            self.timer.cancel()
        if self.claimed and self.connect is not None:
            self.front.registries[self.listener.role].release(self.connect.client_id, self)
        if self.upstream is not None:
            self.upstream.close()
        if self.transport is not None:
            self.transport.close()  # after what was written (the alert, a CONNACK) is sent

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def _restart_timer(self, seconds: float, why: str) -> None:
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
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _quiet_resets(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """asyncio's default handler prints a traceback for a connection reset under it: that is a
    client's business, said in one line by `ClientConnection.close` where it matters."""
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, OSError, TimeoutError)):
        return
    loop.default_exception_handler(context)


async def _main(config: FrontConfig) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_resets)
    front = Front(config)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, front.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(front.serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # it failed: raise its reason
    serving.cancel()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pibridge.emulator.front CONFIG", file=sys.stderr)
        return 2
    try:
        config = FrontConfig.read(Path(args[0]))
        asyncio.run(_main(config))
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        say(f"Error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
