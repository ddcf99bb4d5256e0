"""``[bridge] http`` / ``--http`` addresses: ``HOST:PORT`` and whether it is loopback (standard
library only: the profile checker imports this, and only when the key is there)."""

from __future__ import annotations

import ipaddress

#: The one host name taken as loopback without resolving it (RFC 6761 reserves it for loopback).
LOOPBACK_NAME = "localhost"


class AddressError(ValueError):
    """An ``http`` address that is not ``HOST:PORT`` (one line)."""


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``"0.0.0.0:80"``, ``"localhost:8080"`` → (host, port);
    port 0 picks a free one. `AddressError` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f'must be HOST:PORT such as "127.0.0.1:8080", not "{text}"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f'an IPv6 address goes in brackets ("[::1]:8080"), not "{text}"')
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f'the port must be a number 0..65535, not "{text}"')
    if not host or any(ch.isspace() for ch in host):
        raise AddressError(f'must be HOST:PORT such as "127.0.0.1:8080", not "{text}"')
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for a loopback IP address (``127.0.0.0/8``, ``::1``) and the name ``localhost``; any
    other name is not loopback, whatever it looks like (``127.0.0.1.evil.example`` resolves
    anywhere its owner likes)."""
    if host.lower() == LOOPBACK_NAME:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(address: str, token_file: object | None) -> str | None:
    """The problem with serving ``address`` without a token (None if there is none): any host
    but loopback needs ``[bridge] http_token_file``."""
    host, _ = parse_address(address)
    if token_file is None and not is_loopback(host):
        return (f"{address} is reachable from other machines: set [bridge] http_token_file (a file "
                "holding the token every client must show), or bind to 127.0.0.1")
    return None
