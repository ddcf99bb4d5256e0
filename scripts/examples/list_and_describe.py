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

from example_session import connected_client, disconnect, load_ids, wait_for


def main():
    client = connected_client()
    ids = load_ids(client)

    client.check_connection()
    print("ping:", json.loads(wait_for("response", "check_connection").decode("utf-8")))

    client.list_sensors()
    sensors = json.loads(wait_for("response", "list_sensors").decode("utf-8"))
    for sensor in sensors:
        print(f"sensor {sensor['sensorId']} {sensor['name']!r}: {len(sensor['metrics'])} metrics")

    for metric_id in (ids["temperature_id"], ids["door_id"]):
        client.describe_metric(metric_id, ids["sensor_id"])
        print("metric:", json.loads(wait_for("response", "describe_metric").decode("utf-8")))

    disconnect(client)


if __name__ == "__main__":
    main()
