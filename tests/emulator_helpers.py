"""Shared helpers of the emulator tests: raw API clients through pibridge.mqtt."""

from __future__ import annotations

import json
import queue
from collections.abc import Sequence
from pathlib import Path

from pibridge import mqtt
from pibridge import protocol as p
from pibridge.emulator.process import EmulatorProcess as Emulator


class ApiClient:
    """A minimal raw API client for tests: one mTLS session, every reply topic of its clientId
    subscribed, received messages in a queue. Not the pibridge client library."""

    def __init__(self, emulator: Emulator, cid: str, cert: Path, key: Path,
                 filters: Sequence[str] | None = None) -> None:
        self.cid = cid
        self.messages: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.session = mqtt.MqttSession(emulator.api_endpoint(cert, key),
                                        client_id=mqtt.new_client_id("pibridge-test"),
                                        on_message=lambda t, m: self.messages.put((t, m)))
        self.session.open()
        self.session.subscribe(list(filters) if filters is not None else p.client_subscriptions(cid))

    def base(self) -> str:
        return p.BASE.format(cid=self.cid)

    def send(self, topic: str, payload: bytes | str | object = b"{}") -> None:
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload)
        self.session.publish_and_wait(topic, payload)

    def next(self, timeout: float = 10.0) -> tuple[str, bytes]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout:g} s") from None

    def request(self, topic: str, payload: bytes | str | object = b"{}",
                timeout: float = 10.0) -> tuple[str, bytes]:
        """Send and return the first message that arrives (livedata skipped)."""
        self.send(topic, payload)
        while True:
            t, m = self.next(timeout)
            if not t.endswith("/livedata"):
                return t, m

    def close(self) -> None:
        self.session.close()


def new_client(emulator: Emulator, directory: Path) -> ApiClient:
    cid, cert, key = emulator.issue_client_certificate(directory)
    return ApiClient(emulator, cid, cert, key)


def t(client: ApiClient, op: p.Op, which: str = "request", sid: str = "", mid: str = "") -> str:
    """A topic of ``op`` for this client: which = request | success | error | alias0 …"""
    operation = p.OPERATIONS[op]
    template = operation.aliases[int(which[5:])] if which.startswith("alias") else getattr(operation, which)
    return p.topic(template, client.cid, sid, mid)


def error_of(client: ApiClient, op: p.Op, topic: str, payload: object, sid: str = "", mid: str = "") -> int:
    """Send a request that must fail; returns its error code (asserting the error topic)."""
    got_topic, body = client.request(topic, payload)
    assert got_topic == t(client, op, "error", sid, mid), (got_topic, body)
    answer = json.loads(body)
    assert set(answer) == {"errorMessage", "errorcode"}
    return int(answer["errorcode"])


def ok(client: ApiClient, op: p.Op, topic: str, payload: object, sid: str = "", mid: str = "") -> bytes:
    got_topic, body = client.request(topic, payload)
    assert got_topic == t(client, op, "success", sid, mid), (got_topic, body)
    return body


def make_sensor(client: ApiClient, name: str = "Sensor") -> str:
    body = ok(client, p.Op.CREATE_SENSOR, t(client, p.Op.CREATE_SENSOR), {"name": name})
    return str(json.loads(body)["sensorId"])


def make_metrics(client: ApiClient, sid: str, *defs: dict[str, object]) -> list[str]:
    metrics = [dict(d, matchingId=str(i)) for i, d in enumerate(defs)]
    body = ok(client, p.Op.CREATE_METRICS, t(client, p.Op.CREATE_METRICS, sid=sid), {"metrics": metrics}, sid)
    answer = json.loads(body)
    assert [a["matchingId"] for a in answer] == [str(i) for i in range(len(defs))]
    return [a["metricId"] for a in answer]
