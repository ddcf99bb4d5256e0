"""The emulator's front (issue 20 §2): the CONNECT as it reads and rewrites it, the client-id rule,
and what a client sees on the real ports: refusals as CONNACKs, bad first packets as one line in
``front.log``, nobody else affected. (The takeover attacks themselves are in
test_emulator_isolation.py.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from agent_helpers import settings_for

from pibridge import mqtt
from pibridge.agent import AgentClient, AgentSettings, CredentialFiles, provision
from pibridge.emulator import front as f
from pibridge.emulator.broker import FrontProcess
from pibridge.testing import Emulator, free_port

WAIT_S = 20.0
OWNER_A, OWNER_B = "a" * 32, "b" * 32
#: MQTT 5 CONNECT properties: length, then Session Expiry Interval (0x11, four bytes)
SESSION_EXPIRY_0 = b"\x05\x11\x00\x00\x00\x00"
SESSION_EXPIRY_1H = b"\x05\x11\x00\x00\x0e\x10"


def _s(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str = "c1", *, level: int = 4, clean: bool = True,
                   will: tuple[bytes, bytes] | None = None, username: bytes | None = None,
                   password: bytes | None = None, name: bytes | None = None, flags: int = 0,
                   properties: bytes = SESSION_EXPIRY_0) -> bytes:
    """A CONNECT as a client would send it (MQTT 3.1: level 3, 3.1.1: 4, 5: 5, with ``properties``)."""
    name = name or (b"MQIsdp" if level == 3 else b"MQTT")
    flags |= f.FLAG_CLEAN if clean else 0
    payload = _s(client_id.encode())
    if will is not None:
        flags |= f.FLAG_WILL | 0x08  # will QoS 1
        payload += (b"\x00" if level == 5 else b"") + _s(will[0]) + _s(will[1])
    if username is not None:
        flags |= f.FLAG_USERNAME
        payload += _s(username)
    if password is not None:
        flags |= f.FLAG_PASSWORD
        payload += _s(password)
    variable = _s(name) + bytes([level, flags]) + b"\x00\x3c" + (properties if level == 5 else b"")
    body = variable + payload
    return bytes([f.CONNECT]) + f._varint(len(body)) + body


# -- the CONNECT: read and rewritten exactly -------------------------------------------------------

@pytest.mark.parametrize("level", [3, 4, 5])
def test_a_connect_is_rewritten_to_its_certificates_user_with_every_other_field_kept(level: int) -> None:
    packet = connect_packet("pibridge-1234", level=level, clean=False, will=(b"/w", b"gone"),
                            username=b"someone-else", password=b"secret")
    first, body, used = f.split_packet(packet, f.MAX_CONNECT_BYTES) or (0, b"", 0)
    assert (first, used) == (f.CONNECT, len(packet))
    connect = f.parse_connect(body)
    assert (connect.client_id, connect.flags & f.FLAG_CLEAN, connect.username, connect.password) == (
        "pibridge-1234", 0, b"someone-else", b"secret")
    assert connect.outlives_connection == (level != 5)  # MQTT 5: by its expiry, 0 here
    rewritten = connect.as_user(OWNER_A).encode()
    assert rewritten == connect_packet("pibridge-1234", level=level, clean=False, will=(b"/w", b"gone"),
                                       username=OWNER_A.encode())
    assert f.parse_connect(connect.encode()[2:]) == connect  # unchanged, it encodes to itself


BAD_CONNECTS = [
    (b"", "ends inside"),
    (_s(b"MQTT") + b"\x04", "ends inside"),
    (connect_packet(name=b"HTTP")[2:], "not an MQTT CONNECT"),
    (connect_packet(level=3, name=b"MQTT")[2:], "protocol level 3"),  # 3.1 is "MQIsdp": CONNACK 1
    (connect_packet(flags=f.FLAG_RESERVED)[2:], "reserved flag"),
    (_s(b"MQTT") + b"\x04\x02\x00\x3c" + _s(b"\xff\xfe"), "not UTF-8"),
    (connect_packet()[2:] + b"x", "bytes after"),
    (connect_packet(username=b"u")[2:-2], "ends inside"),
    (_s(b"MQTT") + b"\x05\x02\x00\x3c" + b"\xff\xff\xff\xff\x01", "malformed length"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_CONNECTS,
                         ids=["empty", "cut", "protocol-name", "name-level-mismatch", "reserved-flag",
                              "id-not-utf8", "trailing", "cut-username", "properties-length"])
def test_a_malformed_connect_is_one_reason(body: bytes, reason: str) -> None:
    with pytest.raises(f.BadConnect, match=reason):
        f.parse_connect(body)


def test_an_unknown_protocol_level_is_answered_unacceptable_version() -> None:
    with pytest.raises(f.UnsupportedLevel, match="level 6"):
        f.parse_connect(connect_packet(level=6, name=b"MQTT")[2:])
    assert f.connack(4, f.RC_BAD_VERSION) == b"\x20\x02\x00\x01"
    assert f.connack(5, f.RC_ID_REJECTED) == b"\x20\x03\x00\x85\x00"


@pytest.mark.parametrize(("buffer", "outcome"), [
    (b"\x10", None), (b"\x10\x05abcd", None), (b"\x10\x80", None),
    (b"\x10\x05abcde", (0x10, b"abcde", 7)), (b"\x10\x00rest", (0x10, b"", 2)),
    (b"\x10\xff\xff\xff\xff\x01", "malformed"), (b"\x10\xff\xff\xff\x7f", "limit"),
])
def test_the_first_packet_is_cut_from_a_stream_or_refused(buffer: bytes, outcome: object) -> None:
    if isinstance(outcome, str):
        with pytest.raises(f.BadConnect, match=outcome):
            f.split_packet(buffer, f.MAX_CONNECT_BYTES)
    else:
        assert f.split_packet(buffer, f.MAX_CONNECT_BYTES) == outcome


# -- the id rule -------------------------------------------------------------------------------------

def test_an_id_belongs_to_its_owner_while_it_is_connected_or_keeps_a_session() -> None:
    ids = f.IdRegistry()
    one, two, three = object(), object(), object()
    assert ids.claim("x", OWNER_A, one, keep=False) is None
    assert ids.claim("x", OWNER_B, two, keep=False) == f.RC_ID_REJECTED  # connected: A's
    assert ids.claim("x", OWNER_A, two, keep=False) is None  # the owner replaces itself
    ids.release("x", two)  # the newer one dies before mosquitto replaced the older: still A's
    assert ids.claim("x", OWNER_B, three, keep=False) == f.RC_ID_REJECTED
    ids.release("x", one)
    assert ids.claim("x", OWNER_B, three, keep=True) is None  # free: B takes it, to keep
    ids.release("x", three)
    assert ids.claim("x", OWNER_A, one, keep=False) == f.RC_ID_REJECTED  # B's kept session
    assert ids.claim("x", OWNER_B, one, keep=False) is None  # B's own clean reconnect
    ids.release("x", one)
    assert ids.claim("x", OWNER_A, two, keep=False) == f.RC_ID_REJECTED  # kept stays kept
    assert ids.claim("", OWNER_A, one, keep=False) is None  # empty: mosquitto assigns one
    assert ids.claim(f.AUTO_ID_PREFIX + "123", OWNER_A, one, keep=False) == f.RC_ID_REJECTED


def test_kept_ids_are_bounded_per_owner_and_in_all_and_never_given_up() -> None:
    ids = f.IdRegistry(max_kept=3, max_kept_per_owner=2)
    a1, a2, a3, b1, b2 = (object() for _ in range(5))
    assert ids.claim("a1", OWNER_A, a1, keep=True) is None
    assert ids.claim("a2", OWNER_A, a2, keep=True) is None
    assert ids.claim("a3", OWNER_A, a3, keep=True) == f.RC_UNAVAILABLE  # A's own bound
    assert ids.claim("a3", OWNER_A, a3, keep=False) is None  # an id not to keep still passes
    assert ids.claim("b1", OWNER_B, b1, keep=True) is None  # 3 kept in all
    ids.release("a1", a1)
    assert ids.claim("b2", OWNER_B, b2, keep=True) == f.RC_UNAVAILABLE  # the bound in all
    assert ids.claim("a1", OWNER_B, b2, keep=False) == f.RC_ID_REJECTED  # a1 stays A's
    assert ids.claim("a1", OWNER_A, a1, keep=True) is None and ids.kept_total == 3


@pytest.mark.parametrize(("properties", "expiry"), [
    (b"\x00", 0), (SESSION_EXPIRY_0, 0), (SESSION_EXPIRY_1H, 3600),
    (b"\x0f\x21\x00\x0a\x26\x00\x01k\x00\x01v\x11\x00\x00\x00\x3c", 60),  # after others
])
def test_an_mqtt_5_session_is_kept_by_its_expiry(properties: bytes, expiry: int) -> None:
    connect = f.parse_connect(connect_packet("v5", level=5, properties=properties)[2:])
    assert connect.session_expiry == expiry and connect.outlives_connection == (expiry > 0)
    assert not f.parse_connect(connect_packet("v3", level=4)[2:]).outlives_connection  # clean
    with pytest.raises(f.BadConnect, match="unknown CONNECT property 0x7f"):
        f.parse_connect(connect_packet("v5", level=5, properties=b"\x02\x7f\x00")[2:])


@pytest.mark.parametrize(("line", "counted"), [
    (b"1796654989: " + f.RELOAD_LINE + b"\n", True),
    (f.RELOAD_LINE + b"\n", True),
    (b"1796654989: Refused x: client id '" + f.RELOAD_LINE + b"' is taken\n", False),
    (b"1796654989: " + f.RELOAD_LINE + b" and more\n", False),
    (b"1796654989: " + f.RELOAD_LINE + b"\r\n", True),
])
def test_only_the_whole_reload_line_counts_as_a_reload(line: bytes, counted: bool, tmp_path: Path) -> None:
    """What a client sends (its id, say) can never pose as the line a revocation waits for."""
    child = _front_child_running(tmp_path, f"import sys; sys.stdout.buffer.write({line!r})")
    assert child._proc is not None and child._log_reader is not None
    child._proc.wait(WAIT_S)
    child._log_reader.join(WAIT_S)
    assert child._reload_count == (1 if counted else 0)


def _front_child_running(tmp_path: Path, script: str) -> FrontProcess:
    """`FrontProcess`'s machinery (output reader, reload) around ``python -c script``."""
    config = f.FrontConfig((), tmp_path / "ca", tmp_path / "c", tmp_path / "k", tmp_path / "crl", tmp_path)
    child = FrontProcess(config)
    child.command = lambda: [sys.executable, "-c", script]  # type: ignore[method-assign]
    child.start()
    return child


def test_a_reload_the_front_says_failed_is_not_taken_for_done(tmp_path: Path) -> None:
    script = ("import signal, sys, threading\n"
              "hup = threading.Event()\n"
              "signal.signal(signal.SIGHUP, lambda *a: hup.set())\n"
              "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})\n"
              f"hup.wait(); sys.stdout.buffer.write(b'1: ' + {f.RELOAD_FAILED_LINE!r} + b'\\n')\n"
              "sys.stdout.flush()\n"
              "signal.pause()\n")
    child = _front_child_running(tmp_path, script)
    try:
        # sent at once, while the child starts: SIGHUP stays blocked (`FrontProcess.preexec`)
        # until its handler is installed, so the signal waits instead of killing it
        assert child.reload(timeout=WAIT_S) is False
        assert child._reload_failures == 1 and child.alive()  # said failed, not timed out
    finally:
        child.stop()


# -- on the real ports ---------------------------------------------------------------------------------

def _files(emulator: Emulator, folder: Path) -> tuple[AgentSettings, CredentialFiles]:
    settings = settings_for(emulator, folder)
    provision(settings)
    return settings, CredentialFiles(settings.cert_folder, settings.client_name)


def _cn(files: CredentialFiles) -> str:
    from pibridge.emulator.pki import certificate_cn

    return certificate_cn(files.cert.read_bytes())


@contextlib.contextmanager
def _tls(host: str, port: int, ca_file: Path,
         files: CredentialFiles | None = None) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to a front's port, verifying it (and presenting ``files`` if given)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if files is not None:
        context.load_cert_chain(str(files.cert), str(files.key))
    with socket.create_connection((host, port), timeout=WAIT_S) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        yield tls


def _exchange(emulator: Emulator, packet: bytes, files: CredentialFiles | None = None,
              *, provision_port: bool = False) -> bytes:
    """Send ``packet`` on a fresh TLS connection; the CONNACK that came back, or b"" if the front
    closed the connection without one."""
    port = emulator.provision_port if provision_port else emulator.port
    with _tls(emulator.host, port, emulator.ca_file, files) as tls:
        tls.sendall(packet)
        got = b""
        try:
            while len(got) < 2 or len(got) < 2 + got[1]:
                chunk = tls.recv(16)
                if not chunk:
                    break
                got += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
        return got


def test_a_persistent_session_is_resumed_by_its_owner_and_refused_to_anyone_else(
        emulator: Emulator, tmp_path: Path) -> None:
    _, owner = _files(emulator, tmp_path / "owner")
    _, other = _files(emulator, tmp_path / "other")
    session_id = mqtt.new_client_id("pibridge-kept")
    assert _exchange(emulator, connect_packet(session_id, clean=False), owner) == b"\x20\x02\x00\x00"
    # the owner has left; mosquitto keeps its session
    assert _exchange(emulator, connect_packet(session_id, clean=False), other) == b"\x20\x02\x00\x02"
    assert _exchange(emulator, connect_packet(session_id, clean=True), other) == b"\x20\x02\x00\x02"
    resumed = b"\x20\x02\x01\x00"  # accepted, session present
    assert _exchange(emulator, connect_packet(session_id, clean=False), owner) == resumed
    assert "(CONNACK 2)" in _logged(emulator.state_dir / "front.log", 0, "is taken")


def test_a_client_reconnecting_with_its_own_id_replaces_its_old_connection(
        emulator: Emulator, settings: AgentSettings) -> None:
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    endpoint = emulator.api_endpoint(files.cert, files.key)
    replaced = threading.Event()
    session_id = mqtt.new_client_id("pibridge-again")
    old = mqtt.MqttSession(endpoint, client_id=session_id, on_message=lambda t, m: None,
                           on_closed=lambda failure: replaced.set())
    old.open(WAIT_S)
    new = mqtt.MqttSession(endpoint, client_id=session_id, on_message=lambda t, m: None)
    try:
        new.open(WAIT_S)  # a restarted process, its old connection half-open: not refused
        assert replaced.wait(WAIT_S)  # mosquitto ended the old one, as a broker should
        new.subscribe(["/v1.0/x/#"], timeout=WAIT_S)
    finally:
        new.close()
        old.close()


def test_a_username_in_the_connect_never_makes_a_client_another(emulator: Emulator, tmp_path: Path) -> None:
    """The API port's user is the certificate's CN whatever the CONNECT says: a client naming its
    victim's CN as its username still only gets its own topics."""
    victim_settings, victim_files = _files(emulator, tmp_path / "victim")
    _, own = _files(emulator, tmp_path / "attacker")
    victim_cn, own_cn = _cn(victim_files), _cn(own)
    received: list[str] = []
    sentinel = threading.Event()
    attacker = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=mqtt.new_client_id("pibridge-spoof"))
    attacker.tls_set(str(emulator.ca_file), str(own.cert), str(own.key))
    attacker.username_pw_set(victim_cn, "anything")

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        received.append(message.topic)
        if message.topic == f"/v1.0/{own_cn}/sentinel":
            sentinel.set()

    subscribed = threading.Event()
    attacker.on_message = on_message
    attacker.on_subscribe = lambda *args: subscribed.set()
    attacker.connect(emulator.host, emulator.port)
    attacker.loop_start()
    try:
        attacker.subscribe([(f"/v1.0/{victim_cn}/#", 1), (f"/v1.0/{own_cn}/#", 1)])
        assert subscribed.wait(WAIT_S)
        victim = AgentClient(victim_settings, request_timeout=WAIT_S)
        victim.connect(WAIT_S)
        try:
            victim.ping()
        finally:
            victim.close()
        attacker.publish(f"/v1.0/{own_cn}/sentinel", b"s", qos=1)
        assert sentinel.wait(WAIT_S)
    finally:
        attacker.loop_stop()
        attacker.disconnect()
    assert received == [f"/v1.0/{own_cn}/sentinel"]


def test_mqtt_3_1_and_5_clients_pass_the_front(emulator: Emulator, settings: AgentSettings) -> None:
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    assert _exchange(emulator, connect_packet("v31", level=3), files) == b"\x20\x02\x00\x00"
    assert _exchange(emulator, connect_packet("v31", level=3), provision_port=True) == b"\x20\x02\x00\x00"
    v5 = _exchange(emulator, connect_packet("v5", level=5), files)
    assert v5[0] == f.CONNACK and v5[3] == 0  # accepted (MQTT 5 CONNACK: flags, reason, properties)


def test_an_mqtt_5_session_with_an_expiry_is_its_owners_even_after_a_clean_start(
        emulator: Emulator, tmp_path: Path) -> None:
    """MQTT 5 keeps a session by its expiry, whatever the clean-start flag: such a session stays
    its owner's after it left; one without an expiry ends with its connection."""
    _, owner = _files(emulator, tmp_path / "owner")
    _, other = _files(emulator, tmp_path / "other")
    session_id = mqtt.new_client_id("pibridge-v5")
    first = _exchange(emulator, connect_packet(session_id, level=5, clean=True, properties=SESSION_EXPIRY_1H),
                      owner)
    assert first[0] == f.CONNACK and first[3] == 0
    refused = b"\x20\x03\x00\x85\x00"  # MQTT 5: 0x85 client identifier not valid
    assert _exchange(emulator, connect_packet(session_id, level=5, clean=False), other) == refused
    again = _exchange(emulator, connect_packet(session_id, level=5, clean=False), owner)
    assert again[0] == f.CONNACK and again[2:4] == b"\x01\x00"  # session present, accepted
    short_lived = mqtt.new_client_id("pibridge-v5-once")
    assert _exchange(emulator, connect_packet(short_lived, level=5), owner)[3] == 0  # expiry 0
    assert _exchange(emulator, connect_packet(short_lived, level=5), other)[3] == 0  # free again


def _deprovision(settings: AgentSettings) -> None:
    client = AgentClient(settings, request_timeout=WAIT_S)
    client.connect(WAIT_S)
    try:
        client.deprovision()  # answered once the front has reloaded the revocation list
    finally:
        client.close()


@pytest.mark.parametrize("handshake", ["before", "after"])
def test_a_connection_opened_before_a_revocation_is_not_admitted_after_it(
        handshake: str, emulator: Emulator, settings: AgentSettings) -> None:
    """The deprovision answer means the certificate is refused from then on, also on a connection
    opened before it: whether its TLS handshake ends after the revocation, or before it and its
    CONNECT comes after."""
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    context.load_cert_chain(str(files.cert), str(files.key))
    log = emulator.state_dir / "front.log"
    start = len(log.read_text())
    got = b""
    with contextlib.suppress(ssl.SSLError, ConnectionResetError), \
            socket.create_connection((emulator.host, emulator.port), timeout=WAIT_S) as raw:
        if handshake == "before":
            tls = context.wrap_socket(raw, server_hostname="localhost")
            _deprovision(settings)
        else:
            _deprovision(settings)
            tls = context.wrap_socket(raw, server_hostname="localhost")
        with tls:
            tls.sendall(connect_packet("late"))
            got = tls.recv(16)
    assert got in (b"", b"\x20\x02\x00\x05")  # closed, or refused: never admitted
    assert "(CONNACK 5)" in _logged(log, start, "began before the certificates were reloaded")


HOSTILE_FIRST_PACKETS = [
    (b"\x30\x03\x00\x01t", b"", "not a CONNECT"),  # a PUBLISH first
    (b"\x10\xff\xff\xff\xff\x01", b"", "malformed remaining length"),
    (b"\x10\xff\xff\xff\x7f", b"", "the limit is"),
    (connect_packet(name=b"HTTP"), b"", "not an MQTT CONNECT"),
    (connect_packet(level=6, name=b"MQTT"), b"\x20\x02\x00\x01", "protocol level 6"),
    (connect_packet(flags=f.FLAG_RESERVED), b"", "reserved flag"),
    (connect_packet() + b"\x10\x00", b"\x20\x02\x00\x00", None),  # a second packet: mosquitto's business
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", "not a CONNECT"),
]


@pytest.mark.parametrize(("packet", "answer", "logged"), HOSTILE_FIRST_PACKETS,
                         ids=["publish-first", "bad-length", "huge-length", "not-mqtt", "level-6",
                              "reserved-flag", "two-connects", "http"])
@pytest.mark.parametrize("port", ["api", "provision"])
def test_a_bad_first_packet_is_one_line_and_costs_nobody_else_anything(
        packet: bytes, answer: bytes, logged: str | None, port: str, emulator: Emulator,
        settings: AgentSettings) -> None:
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    bystander = AgentClient(settings, request_timeout=WAIT_S)
    bystander.connect(WAIT_S)
    try:
        log = emulator.state_dir / "front.log"
        before = log.read_text()
        got = _exchange(emulator, packet, files if port == "api" else None,
                        provision_port=port == "provision")
        assert got[:4] == answer[:4]
        bystander.ping()
        if logged is not None:
            assert f"on the {port} port" in _logged(log, len(before), logged)
        assert "Error" not in log.read_text(), log.read_text()[-2000:]
    finally:
        bystander.close()


def _logged(log: Path, start: int, text: str) -> str:
    """The first line of ``log`` after offset ``start`` that holds ``text``. The front writes a
    refusal's or a closing's line (unbuffered) before it answers or closes, so once the client
    has seen that, the line is in the file."""
    lines = [x for x in log.read_text()[start:].splitlines() if text in x]
    assert lines, f"{text!r} not logged"
    return lines[0]


# -- the front in this process: timers and an unreachable mosquitto ------------------------------------

@pytest.fixture
def own_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[f.FrontConfig]:
    """A front in this process on a free port, certificates of its own CA, its upstream a socket
    nobody listens on, short timers; its log is ``config.log_file``."""
    from pibridge.emulator.pki import Authority

    monkeypatch.setattr(f, "HANDSHAKE_TIMEOUT_S", 2.0)  # room for a handshake on a loaded machine
    monkeypatch.setattr(f, "CONNECT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(f, "UPSTREAM_TIMEOUT_S", 0.3)
    authority = Authority(tmp_path)
    authority.write_crl([])
    pki = authority.paths
    listener = f.FrontListener(f.Role.PROVISION, "127.0.0.1", free_port(), tmp_path / "none.sock")
    config = f.FrontConfig((listener,), pki.ca_cert, pki.server_cert, pki.server_key, pki.crl, tmp_path)
    front = f.Front(config)
    listening = threading.Event()
    front.on_listening = listening.set
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    serving = asyncio.run_coroutine_threadsafe(front.serve(), loop)
    assert listening.wait(WAIT_S)
    yield config
    loop.call_soon_threadsafe(serving.cancel)  # its servers close as it ends
    with contextlib.suppress(concurrent.futures.CancelledError):
        serving.result(WAIT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)
    loop.close()


def test_a_silent_client_is_closed_after_the_handshake_and_connect_timeouts(own_front: f.FrontConfig) -> None:
    listener = own_front.listeners[0]
    with _tls(listener.host, listener.port, own_front.ca_file) as tls:
        assert tls.recv(16) == b""  # closed by the front, well before WAIT_S
    with socket.create_connection((listener.host, listener.port), timeout=WAIT_S) as raw:
        assert raw.recv(16) == b""  # no handshake either: closed too
    text = own_front.log_file.read_text()
    assert "no CONNECT within 0.3 s" in text and "no TLS handshake within 2 s" in text


def test_an_unreachable_mosquitto_is_connack_3(own_front: f.FrontConfig) -> None:
    listener = own_front.listeners[0]
    with _tls(listener.host, listener.port, own_front.ca_file) as tls:
        tls.sendall(connect_packet("someone"))
        assert tls.recv(16) == b"\x20\x02\x00\x03"
    assert "(CONNACK 3)" in own_front.log_file.read_text()


def test_a_relayed_client_outlives_the_upstream_timer(own_front: f.FrontConfig) -> None:
    """The timer that bounds reaching mosquitto ends with the connection to it, never later."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.bind(str(own_front.listeners[0].upstream))
    upstream.listen(1)

    def echo() -> None:  # a stand-in for mosquitto: sends back what it gets
        conn, _ = upstream.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    listener = own_front.listeners[0]
    packet = connect_packet("relayed")
    with _tls(listener.host, listener.port, own_front.ca_file) as tls:
        tls.sendall(packet)
        assert _recv_exactly(tls, len(packet)) == packet
        # a silent client connected after it is closed by its CONNECT timer, as long as the
        # upstream timer and started later: once it is, the relayed one's timer would have fired
        assert f.CONNECT_TIMEOUT_S == f.UPSTREAM_TIMEOUT_S
        with _tls(listener.host, listener.port, own_front.ca_file) as silent:
            assert silent.recv(16) == b""
        tls.sendall(b"\xc0\x00")  # a PINGREQ
        assert _recv_exactly(tls, 2) == b"\xc0\x00"
    thread.join(WAIT_S)
    upstream.close()


def _recv_exactly(tls: ssl.SSLSocket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = tls.recv(n - len(got))
        assert chunk, f"closed after {got!r}"
        got += chunk
    return got
