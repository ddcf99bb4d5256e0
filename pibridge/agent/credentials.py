"""The credential files in the cert folder, named as the official SDK names them (agent-api.md §3.6).

| file                        | content                                   | mode |
|-----------------------------|-------------------------------------------|------|
| ``<Name>-key.pem``          | RSA-2048 private key, PEM                 | 0600 |
| ``<Name>-csr.pem``          | the CSR that was sent                     | 0644 |
| ``<Name>-cert.pem``         | the certificate the agent issued          | 0644 |
| ``<Name>-client-id``        | ``<clientId>\\n<sha256 hex of cert>\\n``  | 0644 |

``<Name>`` is the client name with spaces removed; the folder is created with mode 0700. The
client-id file (pibridge's own) caches the certificate's CN so the running path never parses
X.509; the hash in it notices a certificate replaced behind our back (e.g. by the SDK).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pibridge.agent.errors import ProvisioningError
from pibridge.protocol import CLIENT_ID_RE

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
KEY_MODE = 0o600
PUBLIC_MODE = 0o644


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (never chmod afterwards)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class CredentialFiles:
    """Paths of one client's credentials inside ``folder``."""

    folder: Path
    client_name: str

    @property
    def stem(self) -> str:
        return self.client_name.replace(" ", "")

    @property
    def key(self) -> Path:
        return self.folder / f"{self.stem}-key.pem"

    @property
    def cert(self) -> Path:
        return self.folder / f"{self.stem}-cert.pem"

    @property
    def csr(self) -> Path:
        return self.folder / f"{self.stem}-csr.pem"

    @property
    def client_id_file(self) -> Path:
        return self.folder / f"{self.stem}-client-id"

    def stored(self) -> bool:
        """Key and certificate are both present (the SDK's test for "already provisioned")."""
        return self.key.is_file() and self.cert.is_file()

    def require(self) -> None:
        if not self.stored():
            raise ProvisioningError(
                f"no credentials for client {self.client_name!r} in {self.folder} "
                f"(missing {self.key.name if not self.key.is_file() else self.cert.name}): "
                "run `pibridge provision` first")

    def client_id(self) -> str:
        """The clientId of the stored certificate (its CN)."""
        self.require()
        cert_pem = self.cert.read_bytes()
        digest = hashlib.sha256(cert_pem).hexdigest()
        try:
            cached_id, cached_digest = self.client_id_file.read_text().split()[:2]
            if cached_digest == digest and CLIENT_ID_RE.match(cached_id):
                return cached_id
        except (OSError, ValueError):
            pass
        from pibridge.agent.x509 import client_id_from_certificate  # imports cryptography

        client_id = client_id_from_certificate(cert_pem, source=str(self.cert))
        self._write_client_id(client_id, digest)
        return client_id

    def store(self, key_pem: bytes, csr_pem: bytes, cert_pem: bytes, client_id: str) -> None:
        """Write a freshly provisioned set; each file is replaced atomically."""
        self.ensure_folder()
        for path, data, mode in ((self.key, key_pem, KEY_MODE), (self.csr, csr_pem, PUBLIC_MODE),
                                 (self.cert, cert_pem, PUBLIC_MODE)):
            temporary = path.with_name(path.name + ".new")
            _write_new(temporary, data, mode)
            os.replace(temporary, path)
        self._write_client_id(client_id, hashlib.sha256(cert_pem).hexdigest())

    def remove(self) -> list[Path]:
        """Delete the stored credentials (after a deprovision); returns the files removed."""
        removed = []
        for path in (self.key, self.csr, self.cert, self.client_id_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        return removed

    def ensure_folder(self) -> None:
        try:
            self.folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ProvisioningError(f"cannot create the cert folder {self.folder}: {exc.strerror}: "
                                    "choose another with --cert-folder") from exc
        mode = self.folder.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("cert folder %s is accessible to others (mode %o); 0700 is recommended",
                        self.folder, mode)

    def _write_client_id(self, client_id: str, cert_digest: str) -> None:
        temporary = self.client_id_file.with_name(self.client_id_file.name + ".new")
        try:
            _write_new(temporary, f"{client_id}\n{cert_digest}\n".encode(), PUBLIC_MODE)
            os.replace(temporary, self.client_id_file)
        except OSError as exc:  # a read-only folder still works, only slower at start
            log.debug("cannot cache the client id in %s: %s", self.client_id_file, exc)
