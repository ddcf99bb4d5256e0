"""Bounded reads of small kernel files (sysfs attributes, thermal zones).

A configured path can be anything: ``/dev/zero`` (endless), a FIFO nobody writes (blocks for
ever), a directory. `read_small_text` never reads more than ``max_bytes`` and never waits more
than ``timeout_s`` for data: the file is opened ``O_NONBLOCK`` (so opening a FIFO does not wait
for a writer) and each read waits in ``select`` with the time left. Regular files and sysfs
attributes are always "ready" for select; a sysfs read that the kernel itself blocks (w1_slave
during its conversion, < 1 s) is bounded by the kernel, not by this function.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from pathlib import Path

DEFAULT_MAX_BYTES = 4096   #: sysfs attributes are at most one page
DEFAULT_TIMEOUT_S = 2.0    #: longer than any w1_therm conversion (750 ms) plus the bus time


class FileTooLargeError(OSError):
    """More than ``max_bytes`` came out of the file (``/dev/zero``, a log file by mistake)."""


class FileTimeoutError(OSError):
    """No data (and no end of file) within the timeout: a FIFO or device that never answers."""


def read_small_text(path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES,
                    timeout_s: float = DEFAULT_TIMEOUT_S, encoding: str = "ascii") -> str:
    """The whole text of a small file. Raises `FileTooLargeError` past ``max_bytes``,
    `FileTimeoutError` after ``timeout_s`` without end of file, the OS's `OSError` otherwise
    (ENOENT, EISDIR …) and `UnicodeDecodeError` for bytes that are not ``encoding``."""
    deadline = time.monotonic() + timeout_s
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FileTimeoutError(errno.ETIMEDOUT, f"no data within {timeout_s:g} s", str(path))
            try:
                chunk = os.read(fd, max_bytes + 1 - size)
            except BlockingIOError:
                continue  # woken without data (a FIFO's writer came and went)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise FileTooLargeError(errno.EFBIG, f"more than {max_bytes} bytes", str(path))
        return b"".join(chunks).decode(encoding)
    finally:
        os.close(fd)
