"""One client never costs another its answers (issue 20 §2): a flooding client, huge requests,
and the emulator's logs (which name every client's MQTT client id) readable by the owner only."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_helpers import settings_for
from test_answer_matching import Flooder

from pibridge import mqtt
from pibridge import protocol as p
from pibridge.agent import AgentClient, AgentSettings, CredentialFiles, OutOfRange, provision
from pibridge.emulator.core import MAX_REQUEST_BYTES, MAX_STRING_VALUE_CHARS, MAX_VALUES_PER_PUSH
from pibridge.protocol import Op
from pibridge.testing import Emulator

WAIT_S = 20.0
T0_MS = 1_700_000_000_000


def test_a_flooding_client_never_costs_a_quiet_client_an_answer(emulator: Emulator, tmp_path: Path) -> None:
    """The issue's flood (80k QoS-0 pushes + 20k QoS-1 pings) exhausted the core's message ids
    ("Message queue full") and dropped other clients' answers: the quiet client gets every one."""
    settings = settings_for(emulator, tmp_path / "quiet")
    provision(settings)
    quiet = AgentClient(settings, request_timeout=WAIT_S)
    quiet.connect(WAIT_S)
    try:
        sensor_id = quiet.create_sensor("Quiet").created_sensor_id
        with Flooder(emulator, tmp_path / "flooder", pushes=80_000, pings=20_000) as flood:
            for i in range(300):  # each must be answered: a dropped answer is a RequestTimeout
                quiet.push(sensor_id, {"level": float(i)}, T0_MS + i)
                if i % 10 == 0:
                    quiet.ping()
            flood.thread.join(120)
        [sensor] = [s for c in emulator.dump()["clients"] for s in c["sensors"]
                    if s["sensorId"] == sensor_id]
        assert len(sensor["metrics"][0]["values"]) == 300
    finally:
        quiet.close()
    log = emulator.log_tail(10**7)
    assert "not published" not in log, log[-2000:]


@pytest.fixture
def client(settings: AgentSettings) -> Iterator[AgentClient]:
    client = AgentClient(settings, request_timeout=WAIT_S)
    client.connect(WAIT_S)
    yield client
    client.close()


def _oversized(mid: str) -> dict[str, object]:
    return {"metrics": [{"metricId": mid, "value": "v", "pad": "p" * MAX_REQUEST_BYTES}], "timestamp": T0_MS}


def _long_string(mid: str) -> dict[str, object]:
    return {"metrics": [{"metricId": mid, "value": "s" * (MAX_STRING_VALUE_CHARS + 1)}], "timestamp": T0_MS}


def _too_many_values(mid: str) -> dict[str, object]:
    return {"metrics": [{"metricId": mid, "value": "v", "timestamp": T0_MS + i}
                        for i in range(MAX_VALUES_PER_PUSH + 1)]}


@pytest.mark.parametrize("body", [_oversized, _long_string, _too_many_values],
                         ids=["request-over-256KiB", "string-over-4096", "values-over-1000"])
def test_requests_over_the_emulators_limits_are_answered_19_and_store_nothing(
        body: Callable[[str], dict[str, object]], client: AgentClient, emulator: Emulator) -> None:
    sensor_id = client.create_sensor("Limits").created_sensor_id
    [metric_id] = client.create_metrics(sensor_id, [{"name": "Text", "valueType": "string",
                                                     "valueAnnotation": ""}]).metric_ids.values()
    payload = json.dumps(body(metric_id)).encode()
    with pytest.raises(OutOfRange):
        client.request(Op.PUSH, payload, sensor_id=sensor_id)
    # at the limits: accepted and stored exactly
    client.push(sensor_id, {metric_id: "s" * MAX_STRING_VALUE_CHARS}, T0_MS)
    client.push(sensor_id, [(metric_id, "v", T0_MS + 1 + i) for i in range(MAX_VALUES_PER_PUSH)])
    [sensor] = [s for c in emulator.dump()["clients"] for s in c["sensors"] if s["sensorId"] == sensor_id]
    values = sensor["metrics"][0]["values"]
    assert len(values) == 1 + MAX_VALUES_PER_PUSH and values[0]["value"] == "s" * MAX_STRING_VALUE_CHARS


def test_the_logs_that_name_client_ids_are_readable_by_the_owner_only(emulator: Emulator,
                                                                     client: AgentClient) -> None:
    client.ping()  # a connection: its client id is in mosquitto's log and the front's
    for name in ("front.log", "mosquitto.log", "mosquitto-provision.log", "serve.log"):
        mode = stat.S_IMODE((emulator.state_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    assert client.mqtt_client_id in (emulator.state_dir / "mosquitto.log").read_text()
    assert client.mqtt_client_id in (emulator.state_dir / "front.log").read_text()


def test_the_core_serves_clients_round_robin_in_their_order_and_caps_a_flooders_queue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pibridge.emulator import channel as channel_module
    from pibridge.emulator.channel import FAIR_SHARE, CoreChannel, CoreLink

    class Core:
        publish = None

    monkeypatch.setattr(channel_module, "CLIENT_QUEUE_MAX", 500)
    channel = CoreChannel(Core(), [CoreLink(mqtt.Endpoint(unix_socket="/nonexistent"), ())],  # type: ignore[arg-type]
                          qos=0, client_id="core", backoff=mqtt.Backoff(), connect_timeout=1.0)
    flood = [("/v1.0/flooder/sensor/s/metric/pushValues", b'{"n":%d}' % i) for i in range(505)]
    for topic, payload in flood:
        channel._received(topic, payload)
    quiet = ("/v1.0/quiet/ping", b'{"request":"q"}')
    channel._received(*quiet)
    assert channel.dropped == {"flooder": 5}  # beyond its cap: dropped (counted, logged)
    first = channel._next_batch()
    assert first[:FAIR_SHARE] == flood[:FAIR_SHARE] and first[FAIR_SHARE] == quiet
    rest = first[FAIR_SHARE + 1:]
    while channel._turns:
        rest += channel._next_batch()
    assert rest == flood[FAIR_SHARE:500]  # the flooder's own order kept


# -- no takeover (issue 20 §2): one client's MQTT client id is useless to every other client ------
#
# mosquitto disconnects the older of two sessions with one client id. Every attacker below knows its
# victim's id (the tests read it); none may cost the victim its session: the victim is not told of
# a disconnect and its next request is answered on the connection it had.

def _watch(client: AgentClient) -> list[object]:
    """The connection changes ``client`` reports from now on (a takeover shows as a down event)."""
    events: list[object] = []
    client.on_connection_change(events.append)
    return events


def _attack(endpoint: mqtt.Endpoint, client_id: str) -> str:
    """Connect once with ``client_id``; what the attacker got: "own session" (a CONNACK) or the
    refusal's kind. Either way mosquitto has handled the CONNECT (and any takeover) on return."""
    session = mqtt.MqttSession(endpoint, client_id=client_id, on_message=lambda t, m: None)
    try:
        session.open(WAIT_S)
    except mqtt.ConnectFailure as exc:
        return f"refused ({exc.kind})"
    session.close()
    return "own session"


def _bridge_id(emulator: Emulator, client: AgentClient, other: Path) -> str:
    return client.mqtt_client_id


def _core_id(emulator: Emulator, client: AgentClient, other: Path) -> str:
    return emulator.core_client_id()


def _provision_endpoint(emulator: Emulator, client: AgentClient, other: Path) -> mqtt.Endpoint:
    return emulator.provision_endpoint()


def _api_endpoint_with_own_certificate(emulator: Emulator, client: AgentClient, other: Path) -> mqtt.Endpoint:
    """The API port with another provisioned client's certificate (a client attacking a client)."""
    settings = settings_for(emulator, other)
    provision(settings)
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    return emulator.api_endpoint(files.cert, files.key)


def _api_endpoint_without_certificate(emulator: Emulator, client: AgentClient, other: Path) -> mqtt.Endpoint:
    return mqtt.Endpoint(emulator.host, emulator.port, mqtt.TlsFiles(emulator.ca_file))


TAKEOVERS = [
    pytest.param(_provision_endpoint, _bridge_id, id="provision-port-with-the-bridges-id"),
    pytest.param(_provision_endpoint, _core_id, id="provision-port-with-the-cores-id"),
    pytest.param(_api_endpoint_with_own_certificate, _core_id, id="api-port-own-cert-with-the-cores-id"),
    pytest.param(_api_endpoint_without_certificate, _bridge_id, id="api-port-no-cert-with-the-bridges-id"),
    pytest.param(_api_endpoint_with_own_certificate, _bridge_id, id="api-port-own-cert-with-the-bridges-id"),
]


@pytest.mark.parametrize(("endpoint", "victim_id"), TAKEOVERS)
def test_no_client_takes_over_another_clients_or_the_cores_session(
        endpoint: Callable[[Emulator, AgentClient, Path], mqtt.Endpoint],
        victim_id: Callable[[Emulator, AgentClient, Path], str],
        emulator: Emulator, client: AgentClient, tmp_path: Path) -> None:
    client.ping()
    events = _watch(client)
    where = endpoint(emulator, client, tmp_path / "attacker")
    stolen = victim_id(emulator, client, tmp_path / "attacker")
    with emulator.paused_core():
        # asked before the attack, answered after it: only if the core kept its session
        waiting = client.ping_async(timeout=WAIT_S)
        outcome = _attack(where, stolen)
    assert outcome == "own session" or outcome.startswith("refused"), outcome
    assert waiting.result(WAIT_S).value["answer"]
    client.ping()  # on the same connection: no down event came
    assert events == []


def test_a_provisioning_client_does_not_take_over_another_provisioning_clients_session(
        emulator: Emulator) -> None:
    lost: list[mqtt.ConnectFailure] = []
    victim_id = mqtt.new_client_id("pibridge-victim")
    victim = mqtt.MqttSession(emulator.provision_endpoint(), client_id=victim_id,
                              on_message=lambda t, m: None, on_closed=lost.append)
    victim.open(WAIT_S)
    try:
        _attack(emulator.provision_endpoint(), victim_id)
        victim.subscribe([p.CERT_BACK_FILTER], timeout=WAIT_S)  # answered on the victim's connection
        assert lost == [] and victim.is_open
    finally:
        victim.close()


def test_two_processes_of_one_client_stay_connected_side_by_side(settings: AgentSettings) -> None:
    """What the takeover fix must not break (agent-api.md §1): each process has its own random
    MQTT id, so `pibridge run` and a `pibridge` command with the same certificate coexist."""
    first = AgentClient(settings, request_timeout=WAIT_S)
    second = AgentClient(settings, request_timeout=WAIT_S)
    first.connect(WAIT_S)
    try:
        events = _watch(first)
        second.connect(WAIT_S)
        try:
            second.ping()
            first.ping()
            assert events == [] and first.connected and second.connected
        finally:
            second.close()
    finally:
        first.close()
