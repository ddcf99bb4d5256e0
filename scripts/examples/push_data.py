"""Push values to the sensor of create_sensor_and_metrics.py and receive them back as live data.

Run against the emulator, from the repository root (after create_sensor_and_metrics.py):
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf
    python scripts/examples/push_data.py scripts/examples/tvcmi.conf

Next: list_and_describe.py.
"""

import json
import time

from example_session import connected_client, disconnect, load_ids, wait_for


def main():
    client = connected_client()

    ids = load_ids(client)
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

    disconnect(client)


if __name__ == "__main__":
    main()
