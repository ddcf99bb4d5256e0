"""The clientId read from a certificate without cryptography: the DER walk agrees with
cryptography on real certificates (the emulator's, and CNs of every string type and length), and
malformed input is a ValueError, never a crash or a wrong name."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pibridge.agent import CredentialFiles, ProvisioningError, provision
from pibridge.agent.certificate_name import subject_common_name
from pibridge.agent.x509 import client_id_from_certificate
from pibridge.testing import Emulator

from agent_helpers import settings_for  # isort: skip


def certificate(attributes: list[x509.NameAttribute], *, version_field: bool = True) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(attributes)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer CA")])
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
             .serial_number(2**150 + 7).not_valid_before(now)
             .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM)


def test_the_emulators_certificate_gives_the_same_client_id(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    client_id = provision(settings).client_id
    cert_pem = CredentialFiles(settings.cert_folder, settings.client_name).cert.read_bytes()
    assert subject_common_name(cert_pem) == client_id == client_id_from_certificate(cert_pem)


@pytest.mark.parametrize("attributes", [
    [x509.NameAttribute(NameOID.COMMON_NAME, "0123456789abcdef0123456789abcdef")],
    [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "org"), x509.NameAttribute(NameOID.COMMON_NAME, "é名前")],
    [x509.NameAttribute(NameOID.COMMON_NAME, "x" * 64)],
    [x509.NameAttribute(NameOID.COMMON_NAME, "printable", _type=x509.name._ASN1Type.PrintableString)],
    [x509.NameAttribute(NameOID.COMMON_NAME, "bmp ü", _type=x509.name._ASN1Type.BMPString)],
    [x509.NameAttribute(NameOID.COMMON_NAME, "first"), x509.NameAttribute(NameOID.COMMON_NAME, "second")],
    [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no common name")],
])
def test_the_der_walk_agrees_with_cryptography(attributes: list[x509.NameAttribute]) -> None:
    pem = certificate(attributes)
    loaded = x509.load_pem_x509_certificate(pem)
    names = loaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert subject_common_name(pem) == (str(names[0].value) if names else "")


@pytest.mark.parametrize("bad", [
    b"", b"not a certificate",
    b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",          # empty SEQUENCE
    b"-----BEGIN CERTIFICATE-----\nMIQ=\n-----END CERTIFICATE-----\n",          # length cut short
    b"-----BEGIN CERTIFICATE-----\nMIT/////\n-----END CERTIFICATE-----\n",      # huge length
    b"-----BEGIN CERTIFICATE-----\nAgEB\n-----END CERTIFICATE-----\n",          # an INTEGER
])
def test_malformed_input_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        subject_common_name(bad)


def test_truncated_certificates_are_value_errors() -> None:
    pem = certificate([x509.NameAttribute(NameOID.COMMON_NAME, "0123456789abcdef0123456789abcdef")])
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    import base64
    for cut in range(0, len(der), 7):
        body = base64.encodebytes(der[:cut])
        with pytest.raises(ValueError):
            subject_common_name(b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n")


def test_a_cert_folder_without_cache_reads_its_client_id_without_cryptography(
        emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    client_id = provision(settings).client_id
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    for cache in settings.cert_folder.rglob("client-id"):
        cache.unlink()
    assert files.client_id() == client_id
    files.cert.write_bytes(b"garbage")  # in the SDK's plain layout this would be the file itself
    with pytest.raises(ProvisioningError, match="not a PEM certificate"):
        CredentialFiles(settings.cert_folder, settings.client_name).client_id()
