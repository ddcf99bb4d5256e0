"""Keys, CSRs and certificates — the only module of the client that imports ``cryptography``,
and only inside its functions, so the running path never loads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pibridge.agent.errors import ProvisioningError
from pibridge.agent.settings import check_client_name
from pibridge.protocol import CLIENT_ID_RE

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537


def make_key_and_csr(common_name: str) -> tuple[bytes, bytes]:
    """A new RSA-2048 key (PEM, PKCS#8, unencrypted) and a SHA-256-signed CSR (PEM) for it.

    ``common_name`` is the client name: ValueError unless `check_client_name` accepts it (the one
    rule; cryptography < 42 would sign a CN beyond X.509's 64 characters without a word)."""
    check_client_name(common_name)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def _load_certificate(cert_pem: bytes, source: str) -> Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise ProvisioningError(f"{source} is not a PEM certificate ({reason}): "
                                "run `pibridge provision --override`") from exc


def client_id_from_certificate(cert_pem: bytes, source: str = "the certificate") -> str:
    """The clientId: the certificate's subject CN (32 lowercase hex)."""
    from cryptography.x509.oid import NameOID

    certificate = _load_certificate(cert_pem, source)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    client_id = str(names[0].value) if names else ""
    if not CLIENT_ID_RE.match(client_id):
        raise ProvisioningError(f"{source} has CN {client_id!r}, not a clientId (32 lowercase hex)")
    return client_id


def certificate_matches_key(cert_pem: bytes, key_pem: bytes, *, cert_source: str = "the issued certificate",
                            key_source: str = "the key") -> bool:
    """True when the certificate carries the public key of ``key_pem``; `ProvisioningError`
    naming ``cert_source`` / ``key_source`` when either is not PEM of its kind."""
    from cryptography.hazmat.primitives import serialization

    certificate = _load_certificate(cert_pem, cert_source)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: an encrypted key
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProvisioningError(f"{key_source} is not an unencrypted PEM private key ({reason}): "
                                "run `pibridge provision --override`") from exc
    public_format = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return certificate.public_key().public_bytes(*public_format) == key.public_key().public_bytes(
        *public_format)
