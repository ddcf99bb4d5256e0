"""Reading a small file someone else named, with bounds: a size limit (``/dev/zero`` is refused,
not read until memory runs out) and a time limit for a FIFO or a device (a FIFO nobody writes is
refused, not waited on for ever). Written once for the profile and the status file."""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from pathlib import Path

#: How long a FIFO or a device may take to deliver all of its data (seconds).
PIPE_WAIT_S = 5.0
_CHUNK = 1 << 16


def read_bounded(path: str | Path, limit: int, *, regular_only: bool = False,
                 wait_s: float = PIPE_WAIT_S) -> bytes:
    """Up to ``limit`` bytes of ``path``; `OSError` (with a one-line ``strerror``) for a directory,
    for anything but a regular file when ``regular_only``, for more than ``limit`` bytes
    (``EFBIG``), and for a FIFO or device that has not delivered its data within ``wait_s``
    (``ETIMEDOUT``). The file is opened without blocking, so a FIFO without a writer never
    stops the caller in ``open``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, "is a directory")
        if stat.S_ISREG(mode):
            os.set_blocking(fd, True)
            data = _read_regular(fd, limit)
        elif regular_only:
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) else "a special file"
            raise OSError(errno.EINVAL, f"{kind}, not a regular file")
        else:
            data = _read_stream(fd, limit, wait_s)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {_size(limit)}")
    return data


def _read_regular(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_stream(fd: int, limit: int, wait_s: float) -> bytes:
    """A FIFO or a device, to its end (or ``limit`` + 1 bytes) within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise OSError(errno.ETIMEDOUT, f"no data within {wait_s:g} s (a FIFO nobody writes?)")
        try:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit >= mib and limit % mib == 0 else f"{limit} bytes"
