"""`TVCMI_client` against the real emulator: callbacks, what the agent ends up holding, and each SDK
error class raised by a real bad input."""

from __future__ import annotations

import errno
import json
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from pibridge.agent import CredentialFiles
from pibridge.testing import Emulator, free_port
from pibridge.tvcmi import (
    CallbackError,
    CertOverrideMode,
    DirectoryError,
    FileError,
    InputError,
    KeyCertificateError,
    TLSError,
    TVCMI_client,
    TvcmiError,
)
from pibridge.tvcmi import ConnectionError as TvcmiConnectionError

TIMEOUT_S = 20.0


class Recorder:
    """Every callback of one client, in order: ``(callback name, kwargs)``; log lines separately."""

    def __init__(self, client: TVCMI_client) -> None:
        self.events: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self.logs: queue.SimpleQueue[str] = queue.SimpleQueue()
        for name in ("on_api_connect", "on_api_response", "on_api_error", "on_api_disconnect"):
            setattr(client, name, self._recorder(name))
        client.on_api_log = self.logs.put

    def _recorder(self, name: str):
        def record(**kwargs: Any) -> None:
            self.events.put((name, kwargs))
        return record

    def next(self, expected: str | None = None) -> dict[str, Any]:
        try:
            name, kwargs = self.events.get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no callback within {TIMEOUT_S:g} s") from None
        if expected is not None:
            assert name == expected, (name, kwargs)
        return kwargs

    def json(self) -> Any:
        return json.loads(self.next("on_api_response")["msg"].decode("utf-8"))

    def log_containing(self, text: str) -> str:
        while True:
            try:
                line = self.logs.get(timeout=TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"no log line with {text!r}") from None
            if text in line:
                return line


def params(emulator: Emulator, folder: Path, **extra: Any) -> dict[str, Any]:
    return {"MqttHost": emulator.host, "MqttProvisionPort": emulator.provision_port,
            "MqttPort": str(emulator.port), "MqttKeepAlive": "None", "CaFile": str(emulator.ca_file),
            "CertFolder": str(folder), **extra}


def offline_params(folder: Path, **extra: Any) -> dict[str, Any]:
    return {"MqttHost": "127.0.0.1", "MqttProvisionPort": free_port(), "MqttPort": free_port(),
            "MqttKeepAlive": 60, "CaFile": str(folder / "ca.crt"), "CertFolder": str(folder / "certs"),
            **extra}


def provisioned(emulator: Emulator, folder: Path, **extra: Any) -> tuple[TVCMI_client, Recorder]:
    client = TVCMI_client(params(emulator, folder, **extra), user_data={"who": "test"})
    recorder = Recorder(client)
    client.provision()
    assert recorder.next("on_api_response")["error_code"] in (0, 1)
    return client, recorder


def connected(emulator: Emulator, folder: Path, **extra: Any) -> tuple[TVCMI_client, Recorder]:
    client, recorder = provisioned(emulator, folder, **extra)
    client.connect_api()
    assert recorder.next("on_api_connect") == {"user_data": {"who": "test"},
                                               "error_str": "Connection successful", "error_code": 0}
    return client, recorder


def only_client(emulator: Emulator) -> dict[str, Any]:
    clients = emulator.dump()["clients"]
    assert len(clients) == 1, clients
    return clients[0]


# --- provisioning -----------------------------------------------------------------------------------
def test_provision_then_already_provisioned(emulator: Emulator, tmp_path: Path) -> None:
    client = TVCMI_client(params(emulator, tmp_path / "certs"))
    recorder = Recorder(client)
    client.provision()
    assert recorder.next("on_api_response") == {"user_data": None, "error_code": 0,
                                                "msg": "Client is successfully provisioned."}
    client.set_user_data("mine")
    client.provision()
    assert recorder.next("on_api_response") == {"user_data": "mine", "msg": "Client is already provisioned.",
                                                "error_code": 1}
    assert only_client(emulator)["clientId"] == client.get_connector_id()
    assert client.read_cert_from_file().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in client.read_key_from_file()
    assert client.read_ca_from_file() == emulator.ca_file.read_text()
    assert Path(client.get_key_path()).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("mode", "renewed"), [(CertOverrideMode.OVERRIDE, True), ("SMART", False),
                                               (2, False)])
def test_override_certs_modes(emulator: Emulator, tmp_path: Path, mode: object, renewed: bool) -> None:
    client, _ = provisioned(emulator, tmp_path)
    first_id = client.get_connector_id()
    again = TVCMI_client(params(emulator, tmp_path, OverrideCerts=mode))
    recorder = Recorder(again)
    again.provision()
    answer = recorder.next("on_api_response")
    assert (answer["msg"], answer["error_code"]) == (
        ("Client is successfully provisioned.", 0) if renewed else ("Client is already provisioned.", 1))
    assert (again.get_connector_id() != first_id) is renewed
    assert again.get_connector_id() in {c["clientId"] for c in emulator.dump()["clients"]}


def test_a_certificate_that_cannot_be_written_is_reported_with_its_errno(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CredentialFiles, "store", disk_full)
    client = TVCMI_client(params(emulator, tmp_path))
    recorder = Recorder(client)
    client.provision()
    assert recorder.next("on_api_error") == {"user_data": None, "error_code": errno.ENOSPC,
                                             "error_str": "Error writing the certificate to file."}
    assert not Path(client.get_cert_path()).exists()


def test_deprovision_reports_the_answer_and_removes_credentials(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    old_id = client.get_connector_id()
    client.deprovision()
    assert recorder.next("on_api_response")["msg"] == b"Client was deleted."
    assert emulator.dump() == {"clients": []}
    assert not Path(client.get_cert_path()).exists() and not Path(client.get_key_path()).exists()
    client.disconnect_api()
    assert recorder.next("on_api_disconnect")["error_str"] == "Client successfully disconnected."
    client.provision()
    assert recorder.next("on_api_response")["msg"] == "Client is successfully provisioned."
    client.connect_api()
    assert recorder.next("on_api_connect")["error_code"] == 0
    assert only_client(emulator)["clientId"] == client.get_connector_id() != old_id


def test_removing_certificates(emulator: Emulator, tmp_path: Path) -> None:
    client, _ = provisioned(emulator, tmp_path)
    client.removing_certificates()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(FileError, match=r"TVCMI_client-cert\.pem"):
        client.get_connector_id()


# --- operations -------------------------------------------------------------------------------------
def test_sensor_and_metric_lifecycle(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    client.check_connection()
    assert recorder.json()["answer"].startswith("pibridge-")
    client.create_sensor("Greenhouse")
    sensor_id = recorder.json()["sensorId"]
    # a dict whose metrics are JSON strings, as in the manual
    temp = json.dumps({"matchingId": 1, "name": "Temp", "valueUnit": "SI.Temperature.CELSIUS"})
    lux = {"matchingId": "2", "name": "Lux", "valueType": "double", "valueAnnotation": "lx"}
    client.create_metric({"metrics": [temp, lux]}, sensor_id)
    ids = {m["matchingId"]: m["metricId"] for m in recorder.json()}
    client.describe_metric(ids["2"], sensor_id)
    assert recorder.json() == {"metricId": ids["2"], **{k: v for k, v in lux.items() if k != "matchingId"}}
    client.update_sensor_description(sensor_id, "Greenhouse 2")
    assert recorder.next("on_api_response")["msg"] == b"Sensor was changed."
    client.update_metrics(sensor_id, json.dumps({"metrics": [{"metricId": ids["1"], "name": "Air"}]}))
    assert recorder.next("on_api_response")["msg"] == b"All metrics were successfully modified."
    client.list_sensors()
    listed = recorder.json()
    assert [(s["sensorId"], s["name"], sorted(m["metricId"] for m in s["metrics"])) for s in listed] == [
        (sensor_id, "Greenhouse 2", sorted(ids.values()))]
    sensor = only_client(emulator)["sensors"][0]
    assert [(m["name"], m.get("valueUnit")) for m in sensor["metrics"]] == [
        ("Air", "SI.Temperature.CELSIUS"), ("Lux", None)]
    client.delete_metric(f'{{"metrics": [{{"metricId": "{ids["1"]}"}}]}}', sensor_id)
    assert recorder.next("on_api_response")["msg"] == b"All metrics were successfully deleted."
    assert [m["metricId"] for m in only_client(emulator)["sensors"][0]["metrics"]] == [ids["2"]]
    client.delete_sensor(sensor_id)
    assert recorder.next("on_api_response")["msg"] == b"Sensor was deleted."
    assert only_client(emulator)["sensors"] == []


def test_push_timestamps_and_live_data(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    client.create_sensor("Listened")
    listened = recorder.json()["sensorId"]
    client.create_sensor("Quiet")
    quiet = recorder.json()["sensorId"]
    count = {"metrics": [{"name": "Count", "valueType": "integer", "valueAnnotation": "n"}]}
    client.create_metric(count, listened)
    metric = recorder.json()[0]["metricId"]
    client.create_metric(json.dumps(count), quiet)
    quiet_metric = recorder.json()[0]["metricId"]
    t0 = 1_700_000_000_000

    client.listen_live_data(listened)
    client.push_metrics(quiet, {"metrics": [{"metricId": quiet_metric, "value": 9}]})  # no livedata expected
    assert recorder.next("on_api_response")["msg"] == b"Sensor was updated."
    client.push_metrics(listened, json.dumps({"metrics": [{"metricId": metric, "value": 1}],
                                              "timestamp": t0}))
    messages = {recorder.next("on_api_response")["msg"] for _ in range(2)}
    assert b"Sensor was updated." in messages  # the other one is the livedata, not the quiet sensor's
    live = json.loads(next(m for m in messages if m.startswith(b"{")))
    assert live == {"metrics": [{"metricId": metric, "value": 1}], "timestamp": t0}

    client.push_metrics(listened, {"metrics": [{"metricId": metric, "value": 2}], "timestamp": t0 + 1},
                        t0 + 2)
    client.push_metrics(listened, {"metrics": [{"metricId": metric, "value": 3}]}, float(t0 + 3))
    for _ in range(4):
        recorder.next("on_api_response")
    values = {v["timestamp"]: v["value"] for v in only_client(emulator)["sensors"][0]["metrics"][0]["values"]}
    assert values == {t0: 1, t0 + 2: 2, t0 + 3: 3}  # a given timestamp wins; the payload's is kept otherwise
    received = only_client(emulator)["sensors"][1]["metrics"][0]["values"]
    assert [v["value"] for v in received] == [9] and received[0]["timestamp"] > t0  # time of receipt


def test_agent_errors_arrive_through_on_api_error(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    client.describe_metric("nometric", "nosensor")
    error = recorder.next("on_api_error")
    assert error["error_code"] == 15 and "nosensor" in error["error_str"]
    client.create_sensor("x")  # name too short
    assert recorder.next("on_api_error")["error_code"] == 19
    with pytest.raises(InputError, match="metric_data"):
        client.push_metrics("s1", {"metrics": [{"metricId": "m1", "value": float("nan")}]})


def test_error_reports_go_to_the_agents_topics(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    client.create_sensor("Reporter")
    sensor_id = recorder.json()["sensorId"]
    client.client_error("client broke")
    client.sensor_error("sensor broke", sensor_id)
    client.metric_error("metric broke", "m1", sensor_id)
    client.check_connection()  # answered after the reports were stored
    recorder.next("on_api_response")
    reports = [(r["sensorId"], r["metricId"], json.loads(r["payload"])["errorMessage"])
               for r in emulator.error_reports()]
    assert reports == [(None, None, "client broke"), (sensor_id, None, "sensor broke"),
                       (sensor_id, "m1", "metric broke")]


def test_a_callback_that_raises_is_logged_and_the_client_goes_on(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    good = recorder._recorder("on_api_response")

    def broken(**kwargs: Any) -> None:
        client.on_api_response = good
        raise RuntimeError("user bug")

    client.on_api_response = broken
    client.check_connection()
    assert "RuntimeError: user bug" in recorder.log_containing("on_api_response raised")
    client.create_sensor("After the bug")
    assert recorder.json()["name"] == "After the bug"


def test_unexpected_disconnection_and_reconnect(emulator: Emulator, tmp_path: Path) -> None:
    client, recorder = connected(emulator, tmp_path)
    emulator.restart_broker()
    error = recorder.next("on_api_error")
    assert error["error_code"] == 7 and error["error_str"].startswith("Unexpected disconnection")
    assert recorder.next("on_api_connect")["error_code"] == 0
    client.create_sensor("After the restart")
    assert recorder.json()["name"] == "After the restart"


def test_an_unreachable_agent_is_reported_with_the_mqtt_code(emulator: Emulator, tmp_path: Path) -> None:
    provisioned(emulator, tmp_path)
    client = TVCMI_client(params(emulator, tmp_path, MqttPort=free_port()))
    recorder = Recorder(client)
    client.connect_api()
    error = recorder.next("on_api_error")
    assert error["error_code"] == 3 and "Connection refused - server unavailable" in error["error_str"]
    client.check_connection()  # the link is down: the request fails through on_api_error
    assert recorder.next("on_api_error")["error_code"] in (3, 4)


# --- each SDK error class from a real bad input ---------------------------------------------------
def test_directory_error_for_a_cert_folder_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DirectoryError, match=str(tmp_path / "file" / "certs")):
        TVCMI_client({**offline_params(tmp_path), "CertFolder": str(tmp_path / "file" / "certs")})


def test_file_error_for_reading_a_missing_certificate(tmp_path: Path) -> None:
    client = TVCMI_client(offline_params(tmp_path))
    with pytest.raises(FileError, match=r"TVCMI_client-cert\.pem") as caught:
        client.read_cert_from_file()
    assert caught.value.error_code == errno.ENOENT
    with pytest.raises(FileError, match=r"ca\.crt"):
        client.read_ca_from_file()


@pytest.mark.parametrize(("name", "callback"), [
    ("on_api_response", lambda msg: None),
    ("on_api_connect", lambda user_data, error_str: None),
    ("on_api_error", "not a function"),
    ("on_api_log", lambda: None),
])
def test_callback_error_for_a_wrong_signature(tmp_path: Path, name: str, callback: object) -> None:
    client = TVCMI_client(offline_params(tmp_path))
    with pytest.raises(CallbackError, match=name):
        setattr(client, name, callback)
    client.on_api_response = lambda user_data, msg, error_code: None  # the manual's signatures pass
    client.on_api_log = print


def test_tls_error_for_an_unusable_ca_file(tmp_path: Path) -> None:
    client = TVCMI_client(offline_params(tmp_path))
    with pytest.raises(TLSError, match=r"ca\.crt"):
        client.provision()
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(TLSError, match=r"ca\.crt"):
        client.connect_api()


def test_key_certificate_error_unprovisioned_or_path_taken(emulator: Emulator, tmp_path: Path) -> None:
    client = TVCMI_client(params(emulator, tmp_path))
    with pytest.raises(KeyCertificateError, match=r"TVCMI_client-cert\.pem"):
        client.connect_api()
    Path(client.get_key_path()).mkdir()
    with pytest.raises(KeyCertificateError, match=r"TVCMI_client-key\.pem"):
        client.provision()


def test_a_client_name_no_csr_can_carry_is_refused_up_front(emulator: Emulator, tmp_path: Path) -> None:
    """The one client-name rule (pibridge.agent.settings.check_client_name): 65 characters do not
    fit a certificate's common name, so the constructor refuses the field before any key is made."""
    with pytest.raises(InputError, match=r"ClientName.*at most 64"):
        TVCMI_client(params(emulator, tmp_path, ClientName="n" * 65))


def test_connection_error_for_a_call_before_connect_api(tmp_path: Path) -> None:
    client = TVCMI_client(offline_params(tmp_path))
    with pytest.raises(TvcmiConnectionError) as caught:
        client.create_sensor("Early")
    assert caught.value.error_code == 4 and "connect_api" in caught.value.message
    with pytest.raises(TvcmiConnectionError):
        client.client_error("early")


@pytest.mark.parametrize(("call", "field"), [
    (lambda c: c.push_metrics("s1", "{not json"), "metric_data"),
    (lambda c: c.push_metrics("s1", {"values": []}), "metric_data.metrics"),
    (lambda c: c.push_metrics("s/1", {"metrics": []}), "sensor_id"),
    (lambda c: c.push_metrics("s1", {"metrics": []}, timestamp="now"), "timestamp"),
    (lambda c: c.create_metric('{"metrics": ["{broken"]}', "s1"), "metric_def.metrics[0]"),
    (lambda c: c.delete_metric({"metrics": [{"id": "m1"}]}, "s1"), "msg.metrics[0].metricId"),
    (lambda c: c.describe_metric("", "s1"), "metric_id"),
])
def test_input_error_for_bad_payloads_and_ids(tmp_path: Path, call, field: str) -> None:
    client = TVCMI_client(offline_params(tmp_path))
    with pytest.raises(InputError) as caught:
        call(client)
    assert caught.value.field == field and isinstance(caught.value, TvcmiError)


def test_callback_thread_ends_when_idle(emulator: Emulator, tmp_path: Path) -> None:
    """The thread that runs the user's callbacks lives only while callbacks are queued: a script
    that drops its client (the SDK has no close) leaves no thread behind."""
    client, recorder = provisioned(emulator, tmp_path)
    client.provision()  # "already provisioned" comes through the callback thread
    assert recorder.next("on_api_response")["error_code"] == 1
    name = "tvcmi-callbacks TVCMI_client"
    for thread in [t for t in threading.enumerate() if t.name == name]:
        thread.join(timeout=TIMEOUT_S)
    assert not [t for t in threading.enumerate() if t.name == name]
