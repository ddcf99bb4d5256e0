"""Making a file system change survive a crash or a power cut, written once for the parts that
need it (credential sets, the inventory mapping, the status file)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Flush ``path``'s directory entries (a rename or a new file in it) to disk: a file's own
    fsync does not cover its name."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
