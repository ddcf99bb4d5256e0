"""Provision: get a client certificate from the agent (once; later runs report "already provisioned").

Run against the emulator, from the repository root:
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    cp scripts/examples/tvcmi.conf .      # or pass its path as the argument
    python scripts/examples/provision.py tvcmi.conf

Next: create_sensor_and_metrics.py.
"""

import queue
import sys

from pibridge.tvcmi import TVCMI_client, TvcmiError

TIMEOUT_S = 40  # provisioning may wait 10 s before trying the older topic

answers = queue.Queue()


def on_response(**kwargs):
    answers.put(("response", kwargs.get("msg"), kwargs.get("error_code")))


def on_error(**kwargs):
    answers.put(("error", kwargs.get("error_str"), kwargs.get("error_code")))


def on_log(msg):
    print("log:", msg)


def main():
    config_file = sys.argv[1] if len(sys.argv) > 1 else "tvcmi.conf"
    try:
        client = TVCMI_client(config_file)
        client.on_api_response = on_response
        client.on_api_error = on_error
        client.on_api_log = on_log
        client.provision()
    except TvcmiError as error:
        sys.exit(f"cannot provision: {error.message}")

    try:
        kind, message, code = answers.get(timeout=TIMEOUT_S)
    except queue.Empty:
        sys.exit(f"provision: no answer within {TIMEOUT_S} s")
    if kind == "error":
        sys.exit(f"provisioning failed ({code}): {message}")
    # "Client is successfully provisioned." (0) or "Client is already provisioned." (1)
    print(message)
    print("clientId:", client.get_connector_id())
    print("certificate:", client.get_cert_path())


if __name__ == "__main__":
    main()
