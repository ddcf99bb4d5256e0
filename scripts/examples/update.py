"""Rename the examples' sensor, rename its temperature metric and change the door's annotation.

Run against the emulator, from the repository root:
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf
    python scripts/examples/push_data.py scripts/examples/tvcmi.conf
    python scripts/examples/update.py scripts/examples/tvcmi.conf

Next: delete_metric_and_sensor.py.
"""

import json

from example_session import connected_client, disconnect, load_ids, wait_for


def main():
    client = connected_client()
    ids = load_ids(client)

    client.update_sensor_description(ids["sensor_id"], "Greenhouse north")
    print("update_sensor_description:", wait_for("response", "update_sensor_description").decode("utf-8"))

    metric_info = {"metrics": [{"metricId": ids["temperature_id"], "name": "Air temperature"},
                               {"metricId": ids["door_id"], "valueAnnotation": "opened"}]}
    client.update_metrics(ids["sensor_id"], json.dumps(metric_info))
    print("update_metrics:", wait_for("response", "update_metrics").decode("utf-8"))

    disconnect(client)


if __name__ == "__main__":
    main()
