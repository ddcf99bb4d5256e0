"""Paths someone typed (a profile, a flag) checked before anything is created in them: one line
saying what is wrong, never a traceback from deep inside ``mkdir`` or SQLite (issue 20 §5).

* `check_path`: what no file system takes — empty, a NUL byte, bytes that are not UTF-8 (from a
  command line), a name longer than `NAME_MAX` or a path longer than `PATH_MAX` bytes (an
  over-long path used to end in a RecursionError in ``Path.mkdir``).
* `prepare_directory`: a directory the program keeps its state in, created if missing and probed
  by creating (and removing) a file in it: a regular file or a dangling link in its place, a
  symbolic-link loop, a read-only mount, ``/proc/self``, no permission, a full file system.
* `open_private`: a log that names secrets (MQTT client ids), readable by its owner only.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

#: Linux's limits (bytes): one name, a whole path.
NAME_MAX = 255
PATH_MAX = 4095
_PROBE_PREFIX = ".pibridge-probe-"
#: Mode of a file only its owner may read (logs that name MQTT client ids: whoever knows an id
#: could try to connect with it).
PRIVATE_FILE_MODE = 0o600


def open_private(path: Path) -> BinaryIO:
    """``path`` for appending, unbuffered, mode `PRIVATE_FILE_MODE` (also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab", buffering=0)


class DirectoryError(Exception):
    """A directory cannot be used: one line naming it and why."""


def check_path(value: str | os.PathLike[str]) -> Path:
    """``value`` as a Path, or `ValueError` whose message follows the key or flag's name
    ("must not contain a NUL byte: …")."""
    text = os.fspath(value)
    if not text.strip():
        raise ValueError("must not be empty")
    shown = ascii(text) if len(text) <= 80 else ascii(text[:79]) + "…"
    if "\0" in text:
        raise ValueError(f"must not contain a NUL byte: {shown}")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"must be UTF-8 text (a name with undecodable bytes): {shown}") from None
    if len(encoded) > PATH_MAX:
        raise ValueError(f"is {len(encoded)} bytes long; a path may have at most {PATH_MAX}: {shown}")
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise ValueError(f"has a name of {len(longest)} bytes; a file name may have at most {NAME_MAX}: "
                         f"{shown}")
    return Path(text)


def reason(exc: OSError) -> str:
    """An OSError as the end of a line (the cause in words, with a hint where one helps)."""
    hints = {errno.EROFS: "a read-only file system", errno.ENOSPC: "no space left on the device",
             errno.ELOOP: "a loop of symbolic links", errno.EACCES: "permission denied for this user",
             errno.EPERM: "not permitted (an immutable directory?)",
             errno.ENOTDIR: "a part of the path is not a directory",
             errno.ENAMETOOLONG: "the path is too long"}
    return hints.get(exc.errno or 0) or exc.strerror or str(exc)


def existing_directory(path: Path, what: str) -> bool:
    """Whether ``path`` is a directory (False: nothing there); `DirectoryError` for a dangling
    link, a loop of links, something else in its place, or a path that cannot be looked at."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise DirectoryError(f"the {what} {path} is a dangling symbolic link (to "
                                 f"{os.readlink(path)})") from None
        return False
    except OSError as exc:
        raise DirectoryError(f"cannot use {path} as the {what}: {reason(exc)}") from None
    if not stat.S_ISDIR(mode):
        kind = "a regular file" if stat.S_ISREG(mode) else "a special file"
        raise DirectoryError(f"the {what} {path} is not a directory ({kind})")
    return True


def prepare_directory(path: Path, what: str) -> None:
    """Make sure ``path`` is a directory this process can create files in (creating it and its
    parents if missing); `DirectoryError` (``what``: e.g. "state directory") otherwise."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise DirectoryError(f"the {what} {path} is a dangling symbolic link (to {os.readlink(path)}): "
                                 "create its target or remove the link") from None
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DirectoryError(f"cannot create the {what} {path}: {reason(exc)}") from None
        except RecursionError:  # pragma: no cover - check_path bounds the depth first
            raise DirectoryError(f"cannot create the {what} {path}: the path is too deep") from None
        mode = stat.S_IFDIR
    except OSError as exc:
        raise DirectoryError(f"cannot use {path} as the {what}: {reason(exc)}") from None
    if not stat.S_ISDIR(mode):
        kind = "a regular file" if stat.S_ISREG(mode) else "a special file"
        raise DirectoryError(f"the {what} {path} is not a directory ({kind})")
    probe = path / f"{_PROBE_PREFIX}{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # left by a killed process of the same pid: ours to remove
        fd = -1
    except OSError as exc:
        raise DirectoryError(f"cannot write in the {what} {path}: {reason(exc)}") from None
    if fd >= 0:
        os.close(fd)
    try:
        os.unlink(probe)
    except OSError as exc:
        raise DirectoryError(f"cannot write in the {what} {path}: {reason(exc)}") from None
