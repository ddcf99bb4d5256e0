"""Push values to the sensor of create_sensor_and_metrics.py and receive them back as live data.

Run against the emulator, from the repository root (after create_sensor_and_metrics.py):
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf
    python scripts/examples/push_data.py scripts/examples/tvcmi.conf

Next: list_and_describe.py.
"""

import json
import os
import queue
import sys
import time

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

    with open(os.path.join(os.path.dirname(client.get_cert_path()), IDS_FILE)) as f:
        ids = json.load(f)
    sensor_id = ids["sensor_id"]

    # Live data of the sensor now arrives through on_api_response too
    client.listen_live_data(sensor_id)

    now_ms = int(time.time() * 1000)
    # 1. the timestamp inside the payload (as in the manual's example)
    metric_data = json.dumps({"metrics": [{"value": 21.5, "metricId": ids["temperature_id"]},
                                          {"value": False, "metricId": ids["door_id"]}],
                              "timestamp": now_ms - 60000})
    client.push_metrics(sensor_id, metric_data)
    # 2. the timestamp as the parameter
    client.push_metrics(sensor_id, {"metrics": [{"value": 22.0, "metricId": ids["temperature_id"]},
                                                {"value": True, "metricId": ids["door_id"]}]}, now_ms)

    # each push is acknowledged ("Sensor was updated.") and comes back as live data, in any order
    acknowledged, live = 0, 0
    while acknowledged < 2 or live < 2:
        message = wait_for("response", "push_metrics").decode("utf-8")
        if message.startswith("{"):
            live += 1
            print("live data:", json.loads(message))
        else:
            acknowledged += 1
            print("pushed:", message)

    client.disconnect_api()
    wait_for("disconnected", "disconnect")


if __name__ == "__main__":
    main()
