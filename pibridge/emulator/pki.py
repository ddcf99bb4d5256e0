"""The emulator's certificate authority (the only module that imports ``cryptography``).

Files in the state dir (all PEM):

    ca.key / ca.crt          the authority; ``ca.crt`` is the ``CaFile`` clients trust (20 years)
    server.key / server.crt  the broker's certificate for DNS:localhost, IP:127.0.0.1 (10 years)
    crl.pem                  revocation list checked by the API listener (nextUpdate 20 years out)
    core.key / core.crt      the core's identity on the brokers' private sockets (CN `CORE_IDENTITY`,
                             10 years; issued again like the server's when unusable)

Client certificates (10 years) are issued from a CSR with a fresh clientId (``uuid4().hex``) as
CN; the CSR's own subject is discarded (agent-api.md §3).

The CA is never replaced behind the user's back: a new one would orphan every provisioned client.
It is created only when neither ``ca.key`` nor ``ca.crt`` exists (and the caller allows it: serve
refuses when its database already holds clients). One of the two without the other, either one
unreadable, or a key that does not match the certificate is a `PkiError` (one line). Creation
writes ``ca.key.new`` and ``ca.crt.new``, syncs them, then renames key and certificate; a crash
between the two renames leaves ``ca.key`` + ``ca.crt.new``, which the next start completes.
Server certificate and key are ours alone: unreadable, missing, or not signed by this CA, they are
issued again (clients only check the CA).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:  # added in cryptography 40; the floor (Debian bookworm's) is 38.0.4
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

CA_DAYS = 20 * 365
SERVER_DAYS = 10 * 365
CLIENT_DAYS = 10 * 365
CRL_DAYS = 20 * 365
#: Backdating of notBefore, so a slightly slow clock elsewhere still accepts a fresh certificate.
BACKDATE = dt.timedelta(minutes=5)
RSA_BITS = 2048
#: A server or core certificate valid for fewer days than this is issued again at start.
LEAF_RENEW_DAYS = 365
#: Days a private identity (the core's, a test's observer) is valid.
PRIVATE_DAYS = 10 * 365
#: CN of the core's certificate, and so its MQTT client id on the brokers' private sockets
#: (``use_username_as_clientid``). It starts with a control character (U+0001), which mosquitto
#: refuses in every client id a CONNECT carries (``mosquitto_validate_utf8``): no client on any
#: port can connect with it and so disconnect the core (issue 20 §2).
CORE_IDENTITY = "\x01pibridge-emulator-core"
CA_NAME = "pibridge emulator authority"


#: Suffix of the files a new CA is written to before they are renamed into place.
NEW_SUFFIX = ".new"


class PkiError(Exception):
    """The state dir's authority cannot be used as it is (one line for the CLI)."""


class CsrUnparsable(ValueError):
    """The payload is not a PEM certificate signing request (answered with code 4)."""


class CsrRejected(ValueError):
    """A CSR that parses but cannot be signed, e.g. a bad signature (answered with code 3)."""


@dataclass(frozen=True)
class PkiPaths:
    ca_key: Path
    ca_cert: Path
    server_key: Path
    server_cert: Path
    crl: Path

    core_key: Path
    core_cert: Path

    @classmethod
    def in_dir(cls, state_dir: Path) -> PkiPaths:
        return cls(state_dir / "ca.key", state_dir / "ca.crt", state_dir / "server.key",
                   state_dir / "server.crt", state_dir / "crl.pem", state_dir / "core.key",
                   state_dir / "core.crt")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_synced(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` (created with ``mode``) and fsync it; a failure removes the partial file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` as a whole: a failure (e.g. a full disk) leaves the former file."""
    tmp = path.with_name(path.name + ".tmp")
    _write_synced(tmp, data, mode)
    os.replace(tmp, path)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(cert: x509.Certificate, key: Any) -> bool:
    """Does the private ``key`` belong to ``cert``? Compared as DER SubjectPublicKeyInfo: key objects compare
    equal only from cryptography 41 on, and the floor (Debian bookworm's) is 38.0.4."""
    return bool(cert.public_key().public_bytes(*_SPKI) == key.public_key().public_bytes(*_SPKI))


def _not_valid_after(cert: x509.Certificate) -> dt.datetime:
    """The end of ``cert``'s validity (aware UTC): ``not_valid_after_utc`` from cryptography 42 on,
    the naive UTC ``not_valid_after`` (deprecated since) on the 38 floor."""
    aware = getattr(cert, "not_valid_after_utc", None)
    if isinstance(aware, dt.datetime):
        return aware
    return cert.not_valid_after.replace(tzinfo=dt.UTC)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Is ``cert`` signed by ``ca``'s (RSA) key under ``ca``'s name? (What cryptography 40's
    ``verify_directly_issued_by`` checks, for the 38 floor.) InvalidSignature when the
    signature does not verify."""
    if cert.issuer != ca.subject or cert.signature_hash_algorithm is None:
        return False
    ca_key = ca.public_key()
    if not isinstance(ca_key, rsa.RSAPublicKey):
        return False
    ca_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                  cert.signature_hash_algorithm)
    return True


class Authority:
    """The CA of one state dir: creates missing files on construction, signs CSRs, writes the CRL.
    ``allow_new_ca=False``: refuse (PkiError) instead of creating a CA where none exists."""

    def __init__(self, state_dir: Path, *, allow_new_ca: bool = True) -> None:
        self.paths = PkiPaths.in_dir(state_dir)
        new_ca = self._ensure_ca(allow_new_ca)
        self._key = self._load_ca_key()
        self._cert = self._load_ca_cert()
        if not same_public_key(self._cert, self._key):
            raise PkiError(f"{self.paths.ca_key} does not belong to {self.paths.ca_cert}; restore the "
                           "matching pair (a new CA would orphan every provisioned client)")
        # a new CA (first start) signs a new server certificate and revocation list: ones signed by
        # a former CA would make every client distrust us
        if new_ca or not self._server_ok():
            self._create_server()
        if new_ca or not self.paths.crl.exists():
            self.write_crl([])
        if new_ca or not self._leaf_ok(self.paths.core_cert, self.paths.core_key, CORE_IDENTITY):
            self.issue_private_identity(CORE_IDENTITY, self.paths.core_key, self.paths.core_cert)

    @classmethod
    def existing(cls, state_dir: Path) -> Authority:
        """The CA of a state dir an emulator already set up, loaded without creating or
        rewriting anything (to issue a private identity from another process)."""
        self = cls.__new__(cls)
        self.paths = PkiPaths.in_dir(state_dir)
        if not (self.paths.ca_key.exists() and self.paths.ca_cert.exists()):
            raise PkiError(f"no ca.key/ca.crt in {state_dir}: start the emulator there first")
        self._key = self._load_ca_key()
        self._cert = self._load_ca_cert()
        return self

    def _ensure_ca(self, allow_new: bool) -> bool:
        """Make sure ``ca.key`` and ``ca.crt`` exist; True when a new CA was created."""
        key, cert = self.paths.ca_key, self.paths.ca_cert
        pending_cert = cert.with_name(cert.name + NEW_SUFFIX)
        if key.exists() and not cert.exists() and pending_cert.exists():
            os.replace(pending_cert, cert)  # a creation interrupted between its two renames
        if key.exists() and cert.exists():
            return False
        if key.exists() or cert.exists():
            present, missing = (key, cert) if key.exists() else (cert, key)
            raise PkiError(f"{present} exists but {missing} is missing; restore it (a new CA would "
                           f"orphan every provisioned client), or move {present.name} away to start afresh")
        if not allow_new:
            raise PkiError(f"no ca.key/ca.crt in {key.parent} but its database holds provisioned clients; "
                           "restore the CA files, or move emulator.db away too to start afresh")
        self._create_ca()
        return True

    def _load_ca_key(self) -> rsa.RSAPrivateKey:
        path = self.paths.ca_key
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except (ValueError, TypeError):  # garbage, or a key with a passphrase
            raise PkiError(f"{path} is not a usable PEM private key; restore it "
                           "(a new CA would orphan every provisioned client)") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PkiError(f"{path} is not an RSA key; restore the emulator's own CA key")
        return key

    def _load_ca_cert(self) -> x509.Certificate:
        path = self.paths.ca_cert
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            raise PkiError(f"{path} is not a PEM certificate; restore it "
                           "(a new CA would orphan every provisioned client)") from None

    def _server_ok(self) -> bool:
        """Are server key and certificate readable, a pair, and issued by this CA?"""
        return self._leaf_ok(self.paths.server_cert, self.paths.server_key)

    def _leaf_ok(self, cert_path: Path, key_path: Path, cn: str | None = None) -> bool:
        """Are key and certificate readable, a pair, issued by this CA (with CN ``cn``, if given),
        and valid for a year more?"""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            issued = issued_by(cert, self._cert)
            names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            ends = _not_valid_after(cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return False
        fresh = ends - _now() > dt.timedelta(days=LEAF_RENEW_DAYS)
        return issued and same_public_key(cert, key) and fresh and (cn is None or names == [cn])

    def _create_ca(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(CA_NAME)).issuer_name(_name(CA_NAME))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        new_key = self.paths.ca_key.with_name(self.paths.ca_key.name + NEW_SUFFIX)
        new_cert = self.paths.ca_cert.with_name(self.paths.ca_cert.name + NEW_SUFFIX)
        _write_synced(new_key, _key_pem(key), 0o600)
        _write_synced(new_cert, cert.public_bytes(serialization.Encoding.PEM))
        os.replace(new_key, self.paths.ca_key)
        os.replace(new_cert, self.paths.ca_cert)

    def _leaf(self, subject: x509.Name, public_key: CertificatePublicKeyTypes,
              days: int) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self._cert.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )

    def _create_server(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        cert = (
            self._leaf(_name("localhost"), key.public_key(), SERVER_DAYS)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        _write_atomic(self.paths.server_key, _key_pem(key), 0o600)
        _write_atomic(self.paths.server_cert, cert.public_bytes(serialization.Encoding.PEM))

    def sign_csr(self, payload: bytes) -> tuple[str, int, bytes]:
        """Issue a client certificate for a CSR PEM: returns (clientId, serial, leaf PEM)."""
        try:
            csr = x509.load_pem_x509_csr(payload)
        except (ValueError, TypeError) as exc:
            raise CsrUnparsable(f"not a PEM certificate signing request: {exc}") from exc
        try:
            valid = csr.is_signature_valid
            public_key = csr.public_key()
        except Exception as exc:  # unsupported key type and the like
            raise CsrRejected(f"cannot use the CSR: {exc}") from exc
        if not valid:
            raise CsrRejected("the CSR's signature is invalid")
        cid = uuid.uuid4().hex
        try:
            cert = (
                self._leaf(_name(cid), public_key, CLIENT_DAYS)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self._key, hashes.SHA256())
            )
        except (ValueError, TypeError) as exc:
            raise CsrRejected(f"cannot sign the CSR: {exc}") from exc
        return cid, cert.serial_number, cert.public_bytes(serialization.Encoding.PEM)

    def issue_private_identity(self, cn: str, key_path: Path, cert_path: Path) -> None:
        """Write a key (0600) and a client certificate with CN ``cn`` for the brokers' private
        sockets, where the CN is the MQTT client id. An EC P-256 key: made in about a
        millisecond, where an RSA key would add tens of them to every start."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._leaf(_name(cn), key.public_key(), PRIVATE_DAYS)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        _write_atomic(key_path, _key_pem(key), 0o600)
        _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def write_crl(self, revoked_serials: list[int]) -> None:
        """Rewrite ``crl.pem`` listing ``revoked_serials`` (atomic replace; SIGHUP the front after)."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now - BACKDATE).next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        crl = builder.sign(self._key, hashes.SHA256())
        _write_atomic(self.paths.crl, crl.public_bytes(serialization.Encoding.PEM))


def make_client_key_and_csr(name: str = "pibridge-test") -> tuple[bytes, bytes]:
    """A fresh RSA key (PEM) and a SHA-256 CSR (PEM) for it: what a client sends to provision."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(name)).sign(key, hashes.SHA256())
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def certificate_cn(pem: bytes) -> str:
    """The CN of a certificate PEM (the clientId of an issued certificate)."""
    cert = x509.load_pem_x509_certificate(pem)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
