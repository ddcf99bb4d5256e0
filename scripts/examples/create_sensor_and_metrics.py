"""Create a sensor and two metrics on it; their ids are kept in tvcmi-example-ids.json in CertFolder
for the next examples.

Run against the emulator, from the repository root (after provision.py):
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf

Next: push_data.py.
"""

import json
import os
import queue
import sys

from pibridge.tvcmi import TVCMI_client, TvcmiError

TIMEOUT_S = 15
IDS_FILE = "tvcmi-example-ids.json"

events = queue.Queue()


def on_connect(**kwargs):
    events.put(("connected", kwargs.get("error_str"), kwargs.get("error_code")))


def on_response(**kwargs):
    events.put(("response", kwargs.get("msg"), kwargs.get("error_code")))


def on_error(**kwargs):
    events.put(("error", kwargs.get("error_str"), kwargs.get("error_code")))


def on_disconnect(**kwargs):
    events.put(("disconnected", kwargs.get("error_str"), kwargs.get("error_code")))


def wait_for(kind, what):
    """The next callback's message; exits unless it is of ``kind``."""
    try:
        got, message, code = events.get(timeout=TIMEOUT_S)
    except queue.Empty:
        sys.exit(f"{what}: no answer within {TIMEOUT_S} s")
    if got != kind:
        sys.exit(f"{what} failed ({code}): {message}")
    return message


def main():
    config_file = sys.argv[1] if len(sys.argv) > 1 else "tvcmi.conf"
    try:
        client = TVCMI_client(config_file)
        client.on_api_connect = on_connect
        client.on_api_response = on_response
        client.on_api_error = on_error
        client.on_api_disconnect = on_disconnect
        client.connect_api()
    except TvcmiError as error:
        sys.exit(f"cannot connect: {error.message}")
    wait_for("connected", "connect")

    # Create a sensor and keep its id
    client.create_sensor("Greenhouse")
    message = wait_for("response", "create_sensor")
    sensor_id = json.loads(message.decode("utf-8"))["sensorId"]
    print("sensor created:", sensor_id)

    # Defining metric 1: a predefined unit
    metric1_parameters = {}
    metric1_parameters["matchingId"] = 1
    metric1_parameters["name"] = "Temperature"
    metric1_parameters["valueUnit"] = "SI.Temperature.CELSIUS"
    metric1_json = json.dumps(metric1_parameters)

    # Defining metric 2: a custom unit
    metric2_parameters = {}
    metric2_parameters["matchingId"] = 2
    metric2_parameters["name"] = "Door"
    metric2_parameters["valueAnnotation"] = "open"
    metric2_parameters["valueType"] = "bool"
    metric2_json = json.dumps(metric2_parameters)

    # putting metric 1 and metric 2 into a single container, as the manual does
    metrics_container = {}
    metrics_container["metrics"] = [metric1_json, metric2_json]
    client.create_metric(json.dumps(metrics_container), sensor_id)
    message = wait_for("response", "create_metric")
    metric_ids = {item["matchingId"]: item["metricId"] for item in json.loads(message.decode("utf-8"))}
    print("metrics created:", metric_ids)

    ids_file = os.path.join(os.path.dirname(client.get_cert_path()), IDS_FILE)
    with open(ids_file, "w") as f:
        json.dump({"sensor_id": sensor_id, "temperature_id": metric_ids["1"], "door_id": metric_ids["2"]}, f)
    print("ids kept in", ids_file)

    client.disconnect_api()
    wait_for("disconnected", "disconnect")


if __name__ == "__main__":
    main()
