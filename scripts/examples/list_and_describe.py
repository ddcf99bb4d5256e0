"""Check the connection, list the sensors and describe the metrics of the examples' sensor.

Run against the emulator, from the repository root:
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf
    python scripts/examples/push_data.py scripts/examples/tvcmi.conf
    python scripts/examples/list_and_describe.py scripts/examples/tvcmi.conf

Next: update.py.
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


def connected_client():
    """A client connected with the config file given as the argument (default ./tvcmi.conf)."""
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
    return client


def ids_path(client):
    return os.path.join(os.path.dirname(client.get_cert_path()), IDS_FILE)


def main():
    client = connected_client()
    with open(ids_path(client)) as f:
        ids = json.load(f)

    client.check_connection()
    print("ping:", json.loads(wait_for("response", "check_connection").decode("utf-8")))

    client.list_sensors()
    sensors = json.loads(wait_for("response", "list_sensors").decode("utf-8"))
    for sensor in sensors:
        print(f"sensor {sensor['sensorId']} {sensor['name']!r}: {len(sensor['metrics'])} metrics")

    for metric_id in (ids["temperature_id"], ids["door_id"]):
        client.describe_metric(metric_id, ids["sensor_id"])
        print("metric:", json.loads(wait_for("response", "describe_metric").decode("utf-8")))

    client.disconnect_api()
    wait_for("disconnected", "disconnect")


if __name__ == "__main__":
    main()
