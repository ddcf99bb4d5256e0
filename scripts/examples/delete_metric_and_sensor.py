"""Delete the door metric, then the whole sensor (with its other metric and all values).

Run against the emulator, from the repository root:
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf
    python scripts/examples/push_data.py scripts/examples/tvcmi.conf
    python scripts/examples/delete_metric_and_sensor.py scripts/examples/tvcmi.conf

Next: deprovision.py.
"""

import json
import os

from example_session import connected_client, disconnect, ids_path, load_ids, wait_for


def main():
    client = connected_client()
    ids = load_ids(client)

    client.delete_metric(json.dumps({"metrics": [{"metricId": ids["door_id"]}]}), ids["sensor_id"])
    print("delete_metric:", wait_for("response", "delete_metric").decode("utf-8"))

    client.delete_sensor(ids["sensor_id"])
    print("delete_sensor:", wait_for("response", "delete_sensor").decode("utf-8"))
    os.remove(ids_path(client))

    disconnect(client)


if __name__ == "__main__":
    main()
