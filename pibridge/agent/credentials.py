"""The credential files in the cert folder: the SDK's names, switched atomically as one set.

The official SDK names the files ``<Name>-key.pem``, ``<Name>-csr.pem`` and ``<Name>-cert.pem``
(agent-api.md §3.6, ``<Name>`` = the client name with spaces removed), and a folder it
provisioned must keep working. Replacing three files one by one cannot be atomic, so pibridge
keeps each provisioned set in a generation folder of its own and the SDK names are fixed
symbolic links through one ``current`` link; switching sets is one ``rename`` of that link::

    certs/                                               (mode 0700)
    ├── pibridge-key.pem  -> pibridge.credentials/current/pibridge-key.pem
    ├── pibridge-csr.pem  -> pibridge.credentials/current/pibridge-csr.pem
    ├── pibridge-cert.pem -> pibridge.credentials/current/pibridge-cert.pem
    ├── .pibridge.lock                                   (flock: one writer at a time)
    └── pibridge.credentials/
        ├── current -> 7                                 (the one switch)
        ├── 6/                                           (the previous set, kept one switch long)
        └── 7/                                           (never changed once complete)
            ├── pibridge-key.pem    RSA-2048 private key, PEM        0600
            ├── pibridge-csr.pem    the CSR that was sent            0644
            ├── pibridge-cert.pem   the certificate the agent issued 0644
            └── client-id           "<clientId>\\n<sha256 hex of the certificate>\\n"

Writers (`CredentialFiles.store`, `CredentialFiles.remove`) hold an exclusive ``flock`` on
``.<Name>.lock``; a new set is written and fsynced in full before ``current`` switches to it, so
a failure at any point leaves the previous set in place and working. Readers take no lock:
`CredentialFiles.snapshot` reads ``current``, the files of that generation, then ``current``
again, and retries if it moved.

A folder the SDK wrote (regular files) is read as it is. The first `store` into it converts it
without a moment of inconsistency: the old files become generation links (hard links, same
content), the names become symbolic links one by one (each shows the same content as before),
and only then does ``current`` switch to the new set.

The client-id file (pibridge's own) caches the certificate's CN, so the running path never
parses X.509; the hash in it notices a certificate rewritten behind our back (e.g. by the SDK).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pibridge.agent.certificate_name import subject_common_name
from pibridge.agent.errors import ProvisioningError
from pibridge.durable import fsync_directory
from pibridge.protocol import CLIENT_ID_RE

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
KEY_MODE = 0o600
PUBLIC_MODE = 0o644
#: Suffix of the folder that holds the generations of one client name.
GENERATIONS_SUFFIX = ".credentials"
CURRENT_LINK = "current"
CLIENT_ID_FILE = "client-id"
#: Times `snapshot` reads again when a writer switched sets while it was reading.
SNAPSHOT_ATTEMPTS = 20
_TEMPORARY = ".tmp"

#: One lock per lock file and process: ``flock`` locks belong to an open file, so a second open
#: in the same process would wait for itself. Threads queue on this; the first takes the flock.
_process_locks: dict[Path, threading.RLock] = {}
_process_locks_guard = threading.Lock()
_flock_depth: dict[Path, int] = {}


@dataclass(frozen=True)
class Credentials:
    """One consistent credential set: the paths to hand to TLS (inside one generation, or the
    SDK's plain files) and the certificate's clientId and SHA-256."""

    key_file: Path
    cert_file: Path
    client_id: str
    cert_sha256: str


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (never chmod afterwards), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_with_symlink(path: Path, target: str) -> None:
    """Make ``path`` a symbolic link to ``target`` in one rename (readers see old or new)."""
    temporary = path.with_name(path.name + _TEMPORARY)
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _is_generation(name: str) -> bool:
    return name.isdigit()


@dataclass(frozen=True)
class CredentialFiles:
    """One client's credentials inside ``folder`` (``key``, ``csr``, ``cert``: the SDK's names)."""

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
    def generations(self) -> Path:
        """The folder holding the generation folders and the ``current`` link."""
        return self.folder / f"{self.stem}{GENERATIONS_SUFFIX}"

    @property
    def lock_file(self) -> Path:
        return self.folder / f".{self.stem}.lock"

    @property
    def client_id_file(self) -> Path:
        """Where the clientId is cached for a folder in the SDK's plain layout."""
        return self.folder / f"{self.stem}-client-id"

    def _names(self) -> tuple[Path, Path, Path]:
        """The SDK names in the order they are linked: the certificate last, since its link
        is what marks a folder as converted."""
        return self.csr, self.key, self.cert

    def _link_target(self, path: Path) -> str:
        return f"{self.generations.name}/{CURRENT_LINK}/{path.name}"

    # -- reading -------------------------------------------------------------------------------
    def stored(self) -> bool:
        """Key and certificate are both present (the SDK's test for "already provisioned")."""
        return self.key.is_file() and self.cert.is_file()

    def missing_message(self) -> str:
        return (f"no credentials for client {self.client_name!r} in {self.folder} "
                f"(missing {self.key.name if not self.key.is_file() else self.cert.name}): "
                "run `pibridge provision` first")

    def require(self) -> None:
        if not self.stored():
            raise ProvisioningError(self.missing_message())

    def managed(self) -> bool:
        """Is the certificate name pibridge's link through ``current`` (not the SDK's plain file)?"""
        try:
            return os.readlink(self.cert) == self._link_target(self.cert)
        except OSError:
            return False

    def snapshot(self) -> Credentials:
        """The stored set, read consistently even while another process switches sets.

        Raises `ProvisioningError` when nothing is stored or the certificate is unusable."""
        for _ in range(SNAPSHOT_ATTEMPTS):
            if not self.managed():  # the SDK's plain files: read as they are
                try:
                    return self._read(self.key, self.cert, self.client_id_file)
                except FileNotFoundError:
                    raise ProvisioningError(self.missing_message()) from None
            generation = self._current_generation()
            if generation is None:  # the names lead nowhere (e.g. removed meanwhile)
                raise ProvisioningError(self.missing_message())
            folder = self.generations / generation
            try:
                credentials = self._read(folder / self.key.name, folder / self.cert.name,
                                         folder / CLIENT_ID_FILE)
            except (FileNotFoundError, ProvisioningError):
                if self._current_generation() == generation:  # not a switch: the set itself is bad
                    if not (folder / self.key.name).is_file() or not (folder / self.cert.name).is_file():
                        raise ProvisioningError(self.missing_message()) from None
                    raise
                continue
            if self._current_generation() == generation:  # no switch while reading
                return credentials
        raise ProvisioningError(f"the credentials in {self.folder} keep changing while being read: "
                                "is another program writing them?")

    def _read(self, key: Path, cert: Path, cache: Path) -> Credentials:
        try:
            cert_pem = cert.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ProvisioningError(f"cannot read certificate {self.cert}: {exc.strerror or exc}") from exc
        if not key.is_file():
            raise FileNotFoundError(errno.ENOENT, "no key", str(key))
        digest = hashlib.sha256(cert_pem).hexdigest()
        try:
            cached_id, cached_digest = cache.read_text().split()[:2]
            if cached_digest == digest and CLIENT_ID_RE.match(cached_id):
                return Credentials(key, cert, cached_id, digest)
        except (OSError, ValueError):
            pass
        client_id = _client_id_of(cert_pem, source=f"certificate {self.cert}")
        _write_cache(cache, client_id, digest)
        return Credentials(key, cert, client_id, digest)

    def client_id(self) -> str:
        """The clientId of the stored certificate (its CN)."""
        return self.snapshot().client_id

    def check_pair(self) -> str:
        """The clientId, once the stored key is known to belong to the stored certificate;
        `ProvisioningError` naming the file otherwise."""
        from pibridge.agent.x509 import certificate_matches_key

        credentials = self.snapshot()
        try:
            key_pem = credentials.key_file.read_bytes()
            cert_pem = credentials.cert_file.read_bytes()
        except OSError as exc:
            raise ProvisioningError(f"cannot read the credentials in {self.folder}: {exc}") from exc
        if not certificate_matches_key(cert_pem, key_pem, cert_source=f"certificate {self.cert}",
                                       key_source=f"key {self.key}"):
            raise ProvisioningError(f"key {self.key} does not belong to certificate {self.cert}: "
                                    "run `pibridge provision --override`")
        return credentials.client_id

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's writer lock (``flock`` on `lock_file`); re-entrant in one thread."""
        self.ensure_folder()
        path = self.lock_file
        with _process_locks_guard:
            thread_lock = _process_locks.setdefault(path, threading.RLock())
        with thread_lock:
            depth = _flock_depth.get(path, 0)
            if depth:
                _flock_depth[path] = depth + 1
                try:
                    yield
                finally:
                    _flock_depth[path] -= 1
                return
            fd = _lock_exclusively(path)
            try:
                _flock_depth[path] = 1
                try:
                    yield
                finally:
                    _flock_depth.pop(path, None)
            finally:
                os.close(fd)  # releases the flock

    def store(self, key_pem: bytes, csr_pem: bytes, cert_pem: bytes, client_id: str) -> None:
        """Write a freshly provisioned set and switch to it atomically (see the module doc).

        Raises `ProvisioningError` for a name in the way (a folder where a file belongs) and
        `OSError` when writing fails; either way the previous set is still the stored one."""
        with self.locked():
            self._check_names()
            self.generations.mkdir(mode=FOLDER_MODE, exist_ok=True)
            self._discard_temporaries()
            previous = self._current_generation()
            if previous is None and self._has_plain_files():
                previous = self._adopt_plain_files()
            generation = self._write_generation({
                self.key.name: (key_pem, KEY_MODE), self.csr.name: (csr_pem, PUBLIC_MODE),
                self.cert.name: (cert_pem, PUBLIC_MODE),
                CLIENT_ID_FILE: (f"{client_id}\n{hashlib.sha256(cert_pem).hexdigest()}\n".encode(),
                                 PUBLIC_MODE)})
            self._switch(generation)  # from here on the new set is the stored one
            self._link_names()  # only a fresh folder still needs its names
            try:  # housekeeping: a failure here changes nothing a reader sees
                self._collect(keep={generation, previous})
                with contextlib.suppress(FileNotFoundError):
                    self.client_id_file.unlink()  # the plain layout's cache: superseded
            except OSError as exc:
                log.debug("cleaning up %s failed: %s", self.generations, exc)

    def remove(self) -> list[Path]:
        """Delete the stored credentials (after a deprovision); returns the SDK names removed.
        The ``current`` link goes first, so every name stops resolving at the same moment."""
        import shutil  # here: it loads the compression modules (~0.5 MB); the bridge only reads
        removed = []
        with self.locked():
            stored = {path for path in self._names() if path.is_file()}
            with contextlib.suppress(FileNotFoundError):
                (self.generations / CURRENT_LINK).unlink()
            for path in (*self._names(), self.client_id_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    if path in stored:
                        removed.append(path)
            if self.generations.is_dir():
                shutil.rmtree(self.generations)
            with contextlib.suppress(FileNotFoundError):
                self.lock_file.unlink()  # while held: see _lock_exclusively
        return removed

    def ensure_folder(self) -> None:
        try:
            self.folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ProvisioningError(f"cannot create the cert folder {self.folder}: {exc.strerror or exc}: "
                                    "choose another with --cert-folder") from exc
        if not self.folder.is_dir():
            raise ProvisioningError(f"the cert folder {self.folder} is not a folder: "
                                    "choose another with --cert-folder")
        mode = self.folder.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("cert folder %s is accessible to others (mode %o); 0700 is recommended",
                        self.folder, mode)

    def _check_names(self) -> None:
        """Refuse, before anything changes, when something other than a file or a link occupies
        one of the names (a folder, a socket…): it could not be replaced at the end."""
        for path in (*self._names(), self.generations):
            if not os.path.lexists(path) or path.is_symlink():
                continue
            fine = path.is_dir() if path == self.generations else path.is_file()
            if not fine:
                raise ProvisioningError(f"{path} is in the way of the credentials (not a "
                                        f"{'folder' if path == self.generations else 'file'}): "
                                        "move it away and provision again")

    def _has_plain_files(self) -> bool:
        return any(path.is_file() and not path.is_symlink() for path in self._names())

    def _current_generation(self) -> str | None:
        try:
            return os.readlink(self.generations / CURRENT_LINK)
        except FileNotFoundError:
            return None

    def _next_generation(self) -> str:
        numbers = [int(name) for name in os.listdir(self.generations) if _is_generation(name)]
        return str(max(numbers, default=0) + 1)

    def _discard_temporaries(self) -> None:
        """What a writer that died mid-way left behind (never visible to readers)."""
        import shutil  # here: it loads the compression modules (~0.5 MB); the bridge only reads
        for name in os.listdir(self.generations):
            if name.endswith(_TEMPORARY):
                path = self.generations / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def _write_generation(self, files: dict[str, tuple[bytes, int]]) -> str:
        """A complete, fsynced generation folder; returns its name."""
        import shutil  # here: it loads the compression modules (~0.5 MB); the bridge only reads
        generation = self._next_generation()
        temporary = self.generations / (generation + _TEMPORARY)
        temporary.mkdir(mode=FOLDER_MODE)
        try:
            for name, (data, mode) in files.items():
                _write_new(temporary / name, data, mode)
            fsync_directory(temporary)
            os.rename(temporary, self.generations / generation)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        fsync_directory(self.generations)
        return generation

    def _adopt_plain_files(self) -> str:
        """Convert the SDK's plain layout (see the module doc); returns the generation holding
        the old set. Every step leaves every name showing the old content."""
        import shutil  # here: it loads the compression modules (~0.5 MB); the bridge only reads
        old = {path.name: path for path in self._names() if path.is_file() and not path.is_symlink()}
        generation = self._next_generation()
        temporary = self.generations / (generation + _TEMPORARY)
        temporary.mkdir(mode=FOLDER_MODE)
        try:
            for name, path in old.items():
                try:
                    os.link(path, temporary / name)
                except OSError:  # a file system without hard links: a copy, same mode
                    shutil.copy2(path, temporary / name)
            fsync_directory(temporary)
            os.rename(temporary, self.generations / generation)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        fsync_directory(self.generations)
        self._switch(generation)
        self._link_names(only=set(old))
        return generation

    def _switch(self, generation: str) -> None:
        """Point ``current`` at ``generation``: the one rename that changes the stored set."""
        _replace_with_symlink(self.generations / CURRENT_LINK, generation)
        try:
            fsync_directory(self.generations)
        except OSError as exc:  # the rename happened; only its durability is in doubt
            log.warning("cannot flush %s to disk: %s", self.generations, exc)

    def _link_names(self, only: set[str] | None = None) -> None:
        changed = False
        for path in self._names():
            if only is not None and path.name not in only:
                continue
            target = self._link_target(path)
            with contextlib.suppress(OSError):
                if os.readlink(path) == target:
                    continue
            _replace_with_symlink(path, target)
            changed = True
        if changed:
            fsync_directory(self.folder)

    def _collect(self, keep: set[str | None]) -> None:
        """Delete generations older than the previous one (a reader may still be in that)."""
        import shutil  # here: it loads the compression modules (~0.5 MB); the bridge only reads
        for name in os.listdir(self.generations):
            if _is_generation(name) and name not in keep:
                shutil.rmtree(self.generations / name, ignore_errors=True)


def _lock_exclusively(path: Path) -> int:
    """An open descriptor of ``path`` holding an exclusive ``flock``. `CredentialFiles.remove`
    deletes the lock file while holding it, so a waiter that then gets the lock checks it still
    holds the file at ``path`` (else it locked a deleted file and tries again)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, KEY_MODE)
        except OSError as exc:
            raise ProvisioningError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


def _client_id_of(cert_pem: bytes, source: str) -> str:
    """The clientId (subject CN) of ``cert_pem``, read without ``cryptography`` (see
    `pibridge.agent.certificate_name`): the running bridge reads SDK-provisioned or read-only
    folders, which have no client-id cache, on every connect."""
    try:
        client_id = subject_common_name(cert_pem)
    except ValueError as exc:
        raise ProvisioningError(f"{source} is not a PEM certificate ({exc}): "
                                "run `pibridge provision --override`") from exc
    if not CLIENT_ID_RE.match(client_id):
        raise ProvisioningError(f"{source} has CN {client_id!r}, not a clientId (32 lowercase hex)")
    return client_id


def _write_cache(path: Path, client_id: str, cert_digest: str) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}{_TEMPORARY}")
    try:
        _write_new(temporary, f"{client_id}\n{cert_digest}\n".encode(), PUBLIC_MODE)
        os.replace(temporary, path)
    except OSError as exc:  # a read-only folder still works, only slower at start
        with contextlib.suppress(OSError):
            temporary.unlink()
        log.debug("cannot cache the client id in %s: %s", path, exc)
