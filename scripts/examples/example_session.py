"""What the examples share: the SDK callbacks, waiting for them, a connected
client, and the file that carries sensor and metric ids from one example to the next.

The callbacks are the manual's: keyword arguments (``user_data``, ``msg``/``error_str``,
``error_code``), each turned into an event the example waits for.
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


def wait_for(kind, what, timeout=TIMEOUT_S):
    """The next callback's message; exits unless it is of ``kind``."""
    try:
        got, message, code = events.get(timeout=timeout)
    except queue.Empty:
        sys.exit(f"{what}: no answer within {timeout} s")
    if got != kind:
        sys.exit(f"{what} failed ({code}): {message}")
    return message


def config_file():
    """The config file given as the argument (default ./tvcmi.conf)."""
    return sys.argv[1] if len(sys.argv) > 1 else "tvcmi.conf"


def connected_client():
    """A client with the callbacks above, connected to the agent of the config file."""
    try:
        client = TVCMI_client(config_file())
        client.on_api_connect = on_connect
        client.on_api_response = on_response
        client.on_api_error = on_error
        client.on_api_disconnect = on_disconnect
        client.connect_api()
    except TvcmiError as error:
        sys.exit(f"cannot connect: {error.message}")
    wait_for("connected", "connect")
    return client


def disconnect(client):
    client.disconnect_api()
    wait_for("disconnected", "disconnect")


def ids_path(client):
    """Where create_sensor_and_metrics.py keeps the ids: next to the certificate."""
    return os.path.join(os.path.dirname(client.get_cert_path()), IDS_FILE)


def load_ids(client):
    with open(ids_path(client)) as f:
        return json.load(f)


def save_ids(client, ids):
    with open(ids_path(client), "w") as f:
        json.dump(ids, f)
    return ids_path(client)
