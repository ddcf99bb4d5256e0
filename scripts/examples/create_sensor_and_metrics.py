"""Create a sensor and two metrics on it; their ids are kept in tvcmi-example-ids.json in CertFolder
for the next examples.

Run against the emulator, from the repository root (after provision.py):
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/create_sensor_and_metrics.py scripts/examples/tvcmi.conf

Next: push_data.py.
"""

import json

from example_session import connected_client, disconnect, save_ids, wait_for


def main():
    client = connected_client()

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

    ids_file = save_ids(client, {"sensor_id": sensor_id, "temperature_id": metric_ids["1"],
                                 "door_id": metric_ids["2"]})
    print("ids kept in", ids_file)

    disconnect(client)


if __name__ == "__main__":
    main()
