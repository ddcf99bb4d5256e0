"""The `scripts/examples/` SDK-style scripts, run as real processes against the emulator, in the order a
user runs them; after each, the emulator's dump shows what the agent holds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pibridge.testing import Emulator

EXAMPLES = Path(__file__).resolve().parent.parent / "scripts" / "examples"
ORDER = ["provision", "create_sensor_and_metrics", "push_data", "list_and_describe", "update",
         "delete_metric_and_sensor", "deprovision"]
SCRIPT_TIMEOUT_S = 60


def run(name: str, conf: Path) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), str(conf)], cwd=conf.parent,
                            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"
    return result.stdout


def only_client(emulator: Emulator) -> dict[str, Any]:
    clients = emulator.dump()["clients"]
    assert len(clients) == 1, clients
    return clients[0]


#: The callbacks, waiting and id file the examples after provision.py share.
SHARED_MODULE = "example_session"


def test_every_operation_group_has_a_documented_example() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted([*ORDER, SHARED_MODULE])
    shared = (EXAMPLES / f"{SHARED_MODULE}.py").read_text()
    assert "from pibridge.tvcmi import TVCMI_client" in shared
    for name in ORDER:
        text = (EXAMPLES / f"{name}.py").read_text()
        assert "pibridge emulator serve" in text and f"python scripts/examples/{name}.py" in text, name
        imports_sdk = "from pibridge.tvcmi import TVCMI_client" in text
        assert imports_sdk or f"from {SHARED_MODULE} import" in text, name


@pytest.fixture
def conf(emulator: Emulator, tmp_path: Path) -> Path:
    """The examples' tvcmi.conf, pointed at this emulator's ports and CA."""
    text = (EXAMPLES / "tvcmi.conf").read_text()
    replacements = {"MqttProvisionPort": emulator.provision_port, "MqttPort": emulator.port,
                    "CaFile": emulator.ca_file, "CertFolder": tmp_path / "certs"}
    for key, value in replacements.items():
        text, count = re.subn(rf"^{key}\s+.*$", f"{key}    {value}", text, flags=re.MULTILINE)
        assert count == 1, key
    path = tmp_path / "tvcmi.conf"
    path.write_text(text)
    return path


def test_the_examples_in_order(emulator: Emulator, conf: Path) -> None:
    certs = conf.parent / "certs"
    out = run("provision", conf)
    assert "Client is successfully provisioned." in out
    client_id = only_client(emulator)["clientId"]
    assert f"clientId: {client_id}" in out
    assert "Client is already provisioned." in run("provision", conf)

    run("create_sensor_and_metrics", conf)
    ids = json.loads((certs / "tvcmi-example-ids.json").read_text())
    sensor = only_client(emulator)["sensors"][0]
    assert (sensor["sensorId"], sensor["name"]) == (ids["sensor_id"], "Greenhouse")
    assert [{k: v for k, v in m.items() if k != "values"} for m in sensor["metrics"]] == [
        {"metricId": ids["temperature_id"], "name": "Temperature", "valueUnit": "SI.Temperature.CELSIUS"},
        {"metricId": ids["door_id"], "name": "Door", "valueType": "bool", "valueAnnotation": "open"}]

    out = run("push_data", conf)
    assert out.count("live data:") == 2 and out.count("pushed: Sensor was updated.") == 2
    temperature, door = only_client(emulator)["sensors"][0]["metrics"]
    assert [v["value"] for v in temperature["values"]] == [21.5, 22.0]
    assert [v["value"] for v in door["values"]] == [False, True]
    first, second = (v["timestamp"] for v in temperature["values"])
    assert second - first == 60000  # the payload's timestamp, then the parameter

    out = run("list_and_describe", conf)
    assert f"sensor {ids['sensor_id']} 'Greenhouse': 2 metrics" in out and "'answer': 'pibridge-" in out
    assert "'valueAnnotation': 'open'" in out and "SI.Temperature.CELSIUS" in out

    run("update", conf)
    sensor = only_client(emulator)["sensors"][0]
    assert sensor["name"] == "Greenhouse north"
    assert [(m["name"], m.get("valueAnnotation")) for m in sensor["metrics"]] == [
        ("Air temperature", None), ("Door", "opened")]

    run("delete_metric_and_sensor", conf)
    assert only_client(emulator)["sensors"] == []
    assert not (certs / "tvcmi-example-ids.json").exists()

    out = run("deprovision", conf)
    assert f"deprovision of {client_id}: Client was deleted." in out
    assert emulator.dump() == {"clients": []}
    assert not (certs / "TVCMI_client-cert.pem").exists() and not (certs / "TVCMI_client-key.pem").exists()

    assert "Client is successfully provisioned." in run("provision", conf)  # afresh, a new client
    assert only_client(emulator)["clientId"] != client_id
