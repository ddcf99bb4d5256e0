"""Helpers shared by the agent tests (not a test module): settings for an emulator, a second raw
connection with a client's own certificate, a CA nobody trusts."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pibridge import mqtt
from pibridge.agent import AgentSettings, CredentialFiles
from pibridge.testing import Emulator


def settings_for(emulator: Emulator, cert_folder: Path, **changes: object) -> AgentSettings:
    values: dict[str, object] = {"host": emulator.host, "port": emulator.port,
                                 "provision_port": emulator.provision_port, "ca_file": emulator.ca_file,
                                 "cert_folder": cert_folder}
    values.update(changes)
    return AgentSettings(**values)  # type: ignore[arg-type]


def stored_sensors(emulator: Emulator, client_id: str) -> list[dict[str, Any]]:
    """A client's sensors as the emulator stored them (its dump)."""
    return next(c for c in emulator.dump()["clients"] if c["clientId"] == client_id)["sensors"]


def raw_session(emulator: Emulator, settings: AgentSettings, *, client_id: str | None = None,
                on_message: Callable[[str, bytes], None] = lambda t, m: None) -> mqtt.MqttSession:
    """A second API connection presenting the client's own certificate (so the ACL lets it publish
    under the client's id)."""
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    session = mqtt.MqttSession(emulator.api_endpoint(files.cert, files.key),
                               client_id=client_id or mqtt.new_client_id("pibridge-test"),
                               on_message=on_message)
    session.open()
    return session


def core_spy(emulator: Emulator, filters: list[str], *, provision: bool = False,
             ) -> tuple[mqtt.MqttSession, list[tuple[str, bytes]], threading.Event]:
    """A connection on a broker's private socket (no ACL) hearing ``filters``: the API broker's,
    with ``provision`` the provision broker's."""
    seen: list[tuple[str, bytes]] = []
    event = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        seen.append((topic, payload))
        event.set()

    session = mqtt.MqttSession(emulator.private_endpoint(provision=provision),
                               client_id=mqtt.new_client_id("pibridge-spy"),
                               on_message=on_message)
    session.open()
    session.subscribe(filters)
    return session, seen, event


def untrusted_ca(path: Path) -> Path:
    """A self-signed CA certificate that signed nothing the emulator uses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody Else's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def self_signed(key_pem: bytes, common_name: str) -> bytes:
    """A certificate for ``key_pem`` with CN ``common_name`` (a clientId), signed by itself: enough
    for the credential files, which never verify a chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)
