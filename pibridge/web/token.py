"""The web token file (``[bridge] http_token_file``): read bounded and checked. Standard library
and `pibridge.bounded` only: ``pibridge check`` (the profile checker) imports it for the key, and
the web page reads the token with it when it starts — one rule for both."""

from __future__ import annotations

import errno
from pathlib import Path

from pibridge.bounded import read_bounded

MIN_TOKEN_CHARS = 16
#: A token file is a line of text: far more than any token (``/dev/zero`` and a 10 GB file are
#: refused after this many bytes, not read until memory runs out).
MAX_TOKEN_FILE_BYTES = 4096
#: Printable ASCII without the space: what survives a header, a cookie and a shell's ``$(cat …)``.
TOKEN_CHARS = range(33, 127)


class TokenError(ValueError):
    """The token file cannot be used (one line naming it)."""


def read_token(path: Path) -> str:
    """The token in ``path``: its text without surrounding whitespace; at least
    `MIN_TOKEN_CHARS` printable ASCII characters. The file must be a regular file of at most
    `MAX_TOKEN_FILE_BYTES` (a FIFO or a device is refused at once, never waited on)."""
    try:
        data = read_bounded(path, MAX_TOKEN_FILE_BYTES, regular_only=True)
    except FileNotFoundError:
        raise TokenError(f"the token file {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise TokenError(f"the token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes: "
                             "not a token file") from None
        raise TokenError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if len(token) < MIN_TOKEN_CHARS or not all(ord(ch) in TOKEN_CHARS for ch in token):
        raise TokenError(f"the token file {path} must hold at least {MIN_TOKEN_CHARS} printable ASCII "
                         "characters without spaces")
    return token
