"""Deprovision: the agent deletes this client with everything it registered; the local key and
certificate are removed, so provision.py starts afresh.

Run against the emulator, from the repository root:
    pibridge emulator serve --state-dir /tmp/tvcmi-emulator --port 18884 --provision-port 18883 &
    python scripts/examples/provision.py scripts/examples/tvcmi.conf
    python scripts/examples/deprovision.py scripts/examples/tvcmi.conf
"""

import os

from example_session import connected_client, disconnect, wait_for


def main():
    client = connected_client()
    connector_id = client.get_connector_id()

    client.deprovision()
    print(f"deprovision of {connector_id}:", wait_for("response", "deprovision").decode("utf-8"))
    print("certificate still stored:", os.path.exists(client.get_cert_path()))

    disconnect(client)


if __name__ == "__main__":
    main()
