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

from pibridge.agent import AgentClient, AgentSettings, OutOfRange, provision
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
    client.ping()  # a connection: its client id is in mosquitto's log
    for name in ("mosquitto.log", "serve.log"):
        mode = stat.S_IMODE((emulator.state_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    assert client.mqtt_client_id in (emulator.state_dir / "mosquitto.log").read_text()


def test_the_core_serves_clients_round_robin_in_their_order_and_caps_a_flooders_queue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pibridge import mqtt
    from pibridge.emulator import channel as channel_module
    from pibridge.emulator.channel import FAIR_SHARE, CoreChannel

    class Core:
        publish = None

    monkeypatch.setattr(channel_module, "CLIENT_QUEUE_MAX", 500)
    channel = CoreChannel(Core(), mqtt.Endpoint(unix_socket="/nonexistent"), [], qos=0,  # type: ignore[arg-type]
                          client_id="core", backoff=mqtt.Backoff(), connect_timeout=1.0)
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
