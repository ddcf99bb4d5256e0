"""Provisioning, deprovisioning (revocation), isolation, persistence, dump and wipe."""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from emulator_helpers import ApiClient, error_of, make_metrics, make_sensor, new_client, ok, t

from pibridge import mqtt
from pibridge import protocol as p
from pibridge.emulator.pki import certificate_cn, make_client_key_and_csr
from pibridge.protocol import ErrorCode as E
from pibridge.protocol import Op
from pibridge.testing import Emulator

TS = 1_700_000_000_000


def _corrupt_signature(csr_pem: bytes) -> bytes:
    body = b"".join(line for line in csr_pem.splitlines() if not line.startswith(b"-----"))
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 0xFF  # last byte of the signature
    b64 = base64.b64encode(bytes(der)).decode()
    return ("-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(textwrap.wrap(b64, 64))
            + "\n-----END CERTIFICATE REQUEST-----\n").encode()


def test_provisioning_on_both_topics_and_its_errors(emulator: Emulator) -> None:
    for topic in p.PROVISION_TOPICS:
        _, csr = make_client_key_and_csr("Some Name")
        kind, pem = emulator.provision(csr, topic)
        assert kind == "cert"
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----") and pem.count(b"BEGIN CERTIFICATE") == 1
        assert p.CLIENT_ID_RE.match(certificate_cn(pem))
    kind, body = emulator.provision(b"this is not a CSR\n")
    assert kind == "error" and json.loads(body)["errorcode"] == E.InvalidJson
    kind, body = emulator.provision(_corrupt_signature(make_client_key_and_csr()[1]))
    assert kind == "error" and json.loads(body)["errorcode"] == E.InternalError
    assert len(emulator.dump()["clients"]) == 2


def test_issued_certificate_properties(emulator: Emulator, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    _cid, cert_path, key_path = emulator.issue_client_certificate(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    # the naive UTC properties exist in every supported cryptography (38+); 42 added *_utc twins
    after, before = (getattr(cert, f"not_valid_{end}_utc", None) or getattr(cert, f"not_valid_{end}")
                     for end in ("after", "before"))
    assert (after - before).days >= 3650
    assert key_path.stat().st_mode & 0o777 == 0o600


def test_deprovision_then_18_on_open_connection_and_new_connection_refused(
        emulator: Emulator, tmp_path: Path) -> None:
    cid, cert, key = emulator.issue_client_certificate(tmp_path)
    client = ApiClient(emulator, cid, cert, key)
    sid = make_sensor(client)
    make_metrics(client, sid, {"name": "Temp", "valueUnit": "SI.Temperature.CELSIUS"})
    assert ok(client, Op.DEPROVISION, t(client, Op.DEPROVISION), {}) == b"Client was deleted."
    assert emulator.dump()["clients"] == []
    assert error_of(client, Op.PING, t(client, Op.PING), {"request": "x"}) == E.ForbiddendAccess
    assert error_of(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {}) == E.ForbiddendAccess
    with pytest.raises(mqtt.ConnectFailure):
        ApiClient(emulator, cid, cert, key)


def test_isolation_between_clients_and_provision_port(emulator: Emulator, tmp_path: Path) -> None:
    alice = new_client(emulator, tmp_path / "a")
    cid2, cert2, key2 = emulator.issue_client_certificate(tmp_path / "b")
    spy = ApiClient(emulator, cid2, cert2, key2, filters=[f"{p.API_PREFIX}/{alice.cid}/#", "#"])
    # Bob publishes a request under Alice's id: never delivered (and mosquitto keeps Bob connected)
    spy.session.publish_and_wait(t(alice, Op.CREATE_SENSOR), json.dumps({"name": "Intruder"}))
    # a request on the provision port (anonymous) under Alice's id: never reaches the agent
    prov = mqtt.MqttSession(emulator.provision_endpoint(), client_id=mqtt.new_client_id("t"),
                            on_message=lambda tp, m: None)
    prov.open()
    prov.publish_and_wait(t(alice, Op.CREATE_SENSOR), json.dumps({"name": "Anonymous"}))
    prov.close()
    # sentinels that are delivered: Alice's own request, then Bob's own ping
    make_sensor(alice, "Sentinel")
    spy.send(t(spy, Op.PING), {"request": "bob-sentinel"})
    seen = []
    while True:
        topic, _body = spy.next()
        seen.append(topic)
        if topic == t(spy, Op.PING, "success"):
            break
    assert not any(alice.cid in s for s in seen), seen
    names = [s["name"] for c in emulator.dump()["clients"] for s in c["sensors"]]
    assert names == ["Sentinel"]
    with pytest.raises(queue.Empty):
        alice.messages.get_nowait()


def test_persistence_across_restart_dump_format_and_wipe(emulator: Emulator, tmp_path: Path) -> None:
    cid, cert, key = emulator.issue_client_certificate(tmp_path)
    client = ApiClient(emulator, cid, cert, key)
    sid = make_sensor(client, "Hall")
    temp, door = make_metrics(client, sid, {"name": "Temp", "valueUnit": "SI.Temperature.CELSIUS"},
                              {"name": "Door", "valueType": "bool", "valueAnnotation": "open"})
    push = t(client, Op.PUSH, sid=sid)
    ok(client, Op.PUSH, push, {"metrics": [{"metricId": temp, "value": 2.5}], "timestamp": TS + 2}, sid)
    both = [{"metricId": temp, "value": 1.5}, {"metricId": door, "value": True}]
    ok(client, Op.PUSH, push, {"metrics": both, "timestamp": TS}, sid)
    client.close()
    expected = {"clients": [{"clientId": cid, "sensors": [{"sensorId": sid, "name": "Hall", "metrics": [
        {"metricId": temp, "name": "Temp", "valueUnit": "SI.Temperature.CELSIUS",
         "values": [{"timestamp": TS, "value": 1.5}, {"timestamp": TS + 2, "value": 2.5}]},
        {"metricId": door, "name": "Door", "valueType": "bool", "valueAnnotation": "open",
         "values": [{"timestamp": TS, "value": True}]}]}]}]}
    assert emulator.dump() == expected
    ca = emulator.ca_file.read_bytes()
    ports = (emulator.port, emulator.provision_port)
    assert emulator.stop() == 0
    emulator.start()  # again on the same ports and state: the client's settings stay valid
    assert (emulator.port, emulator.provision_port) == ports
    assert emulator.dump() == expected
    client = ApiClient(emulator, cid, cert, key)
    listing = json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {}))
    assert [s["sensorId"] for s in listing] == [sid]
    emulator.wipe()
    assert emulator.dump() == {"clients": [{"clientId": cid, "sensors": []}]}
    assert emulator.ca_file.read_bytes() == ca
    assert json.loads(ok(client, Op.LIST_SENSORS, t(client, Op.LIST_SENSORS), {})) == []


def test_restart_broker_and_pause_core(emulator: Emulator, tmp_path: Path) -> None:
    cid, cert, key = emulator.issue_client_certificate(tmp_path)
    client = ApiClient(emulator, cid, cert, key)
    emulator.restart_broker()
    assert client.session.wait_closed(10)
    client = ApiClient(emulator, cid, cert, key)
    assert json.loads(ok(client, Op.PING, t(client, Op.PING), {"request": "after"})) == {"answer": "after"}
    emulator.pause_core()
    client.send(t(client, Op.PING), {"request": "paused"})  # the broker still acknowledges
    with pytest.raises(AssertionError):
        client.next(timeout=0.5)
    emulator.resume_core()
    assert client.next() == (t(client, Op.PING, "success"), b'{"answer":"paused"}')
    emulator.pause_core()
    assert emulator.stop() == 0  # a paused emulator still stops cleanly


def test_emulator_factory_variants_and_hash_reply_topic(
        emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(strict_ids=True)
    _, csr = make_client_key_and_csr()
    got: queue.SimpleQueue[str] = queue.SimpleQueue()
    session = mqtt.MqttSession(emu.provision_endpoint(), client_id=mqtt.new_client_id("t"),
                               on_message=lambda topic, m: got.put(topic))
    session.open()
    session.subscribe([p.CERT_BACK_FILTER])
    session.publish_and_wait(p.PROVISION_TOPIC, csr)
    assert got.get(timeout=10) == p.CERT_BACK_TOPIC.format(hash=hashlib.sha256(csr).hexdigest())
    session.close()


def test_non_threaded_session_runs_its_network_in_loop(emulator: Emulator, tmp_path: Path) -> None:
    """`MqttSession(threaded=False)` (the core's mode): waits drive the network themselves,
    messages arrive inside `loop`, and a broker restart ends the session."""
    seen: list[tuple[str, bytes]] = []
    session = mqtt.MqttSession(emulator.private_endpoint(), client_id=mqtt.new_client_id("t"),
                               on_message=lambda t, m: seen.append((t, m)), threaded=False)
    session.open(10)
    try:
        session.subscribe(["/test/echo"])
        assert not session.in_network_thread()
        for i in range(3):
            session.publish_and_wait("/test/echo", f"m{i}".encode())
        session.publish("/test/echo", b"last", qos=0)
        for _ in range(100):
            if len(seen) == 4:
                break
            assert session.loop(0.1)
        assert seen == [("/test/echo", b"m0"), ("/test/echo", b"m1"), ("/test/echo", b"m2"),
                        ("/test/echo", b"last")]
        emulator.restart_broker()
        for _ in range(100):
            if not session.loop(0.1):
                break
        assert session.wait_closed(0) and not session.is_open
    finally:
        session.close()
    session.close()  # idempotent
