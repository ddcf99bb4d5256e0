"""Provision: get a client certificate from the agent (once; later runs report "already provisioned").

Run against the emulator, from the repository root:
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    cp scripts/examples/tvcmi.conf .      # or pass its path as the argument
    python scripts/examples/provision.py tvcmi.conf

Next: create_sensor_and_metrics.py.
"""

import sys

from example_session import config_file, on_error, on_response, wait_for

from pibridge.tvcmi import TVCMI_client, TvcmiError

TIMEOUT_S = 40  # provisioning may wait 10 s before trying the older topic


def on_log(msg):
    print("log:", msg)


def main():
    try:
        client = TVCMI_client(config_file())
        client.on_api_response = on_response
        client.on_api_error = on_error
        client.on_api_log = on_log
        client.provision()
    except TvcmiError as error:
        sys.exit(f"cannot provision: {error.message}")

    # "Client is successfully provisioned." (0) or "Client is already provisioned." (1)
    print(wait_for("response", "provision", TIMEOUT_S))
    print("clientId:", client.get_connector_id())
    print("certificate:", client.get_cert_path())


if __name__ == "__main__":
    main()
