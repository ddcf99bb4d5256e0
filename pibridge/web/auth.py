"""Who may read: with a token file set, every client (loopback included) shows the token, as
``Authorization: Bearer TOKEN`` or the ``pibridge_token`` cookie the page sets once asked. Pages
themselves (``/``, its scripts) load without it, so the page can ask; ``/api/*`` and
``/metrics`` answer 401 without it. Compared with `hmac.compare_digest` (no timing leak)."""

from __future__ import annotations

import hmac
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote

from .server import Request, Response
from .token import MIN_TOKEN_CHARS, TokenError, read_token

COOKIE = "pibridge_token"

__all__ = ["COOKIE", "MIN_TOKEN_CHARS", "TokenCheck", "TokenError", "read_token"]


class TokenCheck:
    """``allowed(request)``: True without a token, else only with the right one."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def allowed(self, request: Request) -> bool:
        if self._token is None:
            return True
        headers = request.headers
        given = _bearer(headers.get("authorization", "")) or _cookie(headers.get("cookie", ""))
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    @staticmethod
    def refusal() -> Response:
        return Response(HTTPStatus.UNAUTHORIZED, b"token required (Authorization: Bearer ... or the page's "
                        b"cookie)\n", headers={"WWW-Authenticate": 'Bearer realm="pibridge"'})


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _cookie(header: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return unquote(morsel.value) if morsel is not None and morsel.value else None
