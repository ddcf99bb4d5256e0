"""A small, read-only, bounded HTTP/1.1 server on the standard library, for the bridge's page and
the emulator's dashboard (`pibridge.web.bridge_page`, `pibridge.web.dashboard`).

Why not `http.server.BaseHTTPRequestHandler`: its header reading has no total deadline (a client
sending one byte every few seconds keeps a thread for ever) and no request-size bound below
64 KiB per line. Here the request head is read with our own loop under one deadline. Threads come
from `socketserver.ThreadingMixIn` (one per connection, daemon), accepted on the server's own
thread: nothing here runs on, or waits for, the bridge's or the emulator's threads.

Bounds (all named below; a hostile client costs at most one slot and one thread for a few s):

=======================  =====================================================================
connections              at most `MAX_CONNECTIONS` (64) at once, SSE streams included; more are
                         answered 503 at once on the accepting thread and closed
request head             at most `MAX_HEAD_BYTES` (16 KiB: request line + headers) → else 413;
                         at most `MAX_HEADERS` (64) header lines → else 413
body                     GET/HEAD only; any body (Content-Length > 0, or chunked) → 413
head deadline            the whole head within `HEAD_TIMEOUT_S` (10 s) of the connection → else
                         closed (slowloris)
writes                   each send within `SEND_TIMEOUT_S` (10 s) → else the client is dropped
malformed                request line, version, header syntax → 400; other methods → 405
=======================  =====================================================================

Responses close the connection (``Connection: close``): a page of a few files and one event
stream needs no keep-alive, and it bounds what one connection holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
HEAD_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 10.0
RECV_CHUNK = 4096
LISTEN_BACKLOG = 128

#: static files: suffix → Content-Type
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}


# --- requests and responses ------------------------------------------------------------------------
class BadRequest(Exception):
    """The request cannot be served: ``status`` and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]        #: lower-case names; a repeated header keeps its last value
    client: str

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: HTTPStatus = HTTPStatus.OK
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """A handler's answer that is an event stream: the server writes the SSE headers, then every
    chunk ``events()`` yields (it ends when the client goes or the stream closes)."""

    events: Callable[[], Iterator[bytes]]
    close: Callable[[], None] = lambda: None


Handler = Callable[[Request], "Response | Stream"]


def text(status: HTTPStatus, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def read_head(sock: socket.socket, deadline: float) -> bytes:
    """The request head (up to the blank line), read under one deadline; the bytes after it are
    not read (a GET has none; anything else is refused before they matter)."""
    data = b""
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request head not complete in time")
        sock.settimeout(remaining)
        chunk = sock.recv(RECV_CHUNK)
        if not chunk:
            raise ConnectionError("closed before the request was complete")
        data += chunk
        if len(data) > MAX_HEAD_BYTES and b"\r\n\r\n" not in data[:MAX_HEAD_BYTES + 4]:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"request head longer than {MAX_HEAD_BYTES} bytes")
    return data.split(b"\r\n\r\n", 1)[0]


def parse_head(head: bytes, client: str) -> Request:
    """The request line and headers (RFC 9112 syntax, strictly; ASCII only)."""
    try:
        lines = head.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "request head is not ASCII") from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"unsupported version {version[:16]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(ch in name for ch in " \t()<>@,;\\\"/[]?={}"):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET and HEAD only")
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
    if int(length) > 0 or "transfer-encoding" in headers:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "a request body is not accepted here")
    split = urlsplit(target)
    return Request(method, unquote(split.path), parse_qs(split.query, max_num_fields=16), headers, client)


# --- the server --------------------------------------------------------------------------------------
class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    block_on_close = False

    def __init__(self, address: tuple[str, int], web: WebServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.web = web
        super().__init__(address, _Connection)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if not self.web.slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # a thread that could not start: give its slot back
            self.web.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.web.slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("web: connection from %s failed", client_address, exc_info=True)


def _refuse_busy(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n"
                  b"Connection: close\r\n\r\n")


class _Connection(socketserver.BaseRequestHandler):
    server: _Server
    request: socket.socket

    def handle(self) -> None:
        web = self.server.web
        sock = self.request
        client = str(self.client_address[0]) if isinstance(self.client_address, tuple) else "?"
        try:
            head = read_head(sock, time.monotonic() + web.head_timeout_s)
            request = parse_head(head, client)
        except BadRequest as exc:
            self._send(Response(exc.status, (str(exc) + "\n").encode()))
            return
        except (TimeoutError, ConnectionError, OSError):
            return                                         # slowloris, or gone: just close
        try:
            answer = web.handler(request)
        except BadRequest as exc:
            answer = text(exc.status, str(exc))
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            answer = text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the log)")
        if isinstance(answer, Stream):
            self._stream(answer, head_only=request.method == "HEAD")
        else:
            self._send(answer, head_only=request.method == "HEAD")

    def _send(self, response: Response, *, head_only: bool = False) -> None:
        head = [f"HTTP/1.1 {response.status.value} {response.status.phrase}",
                f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
                "Connection: close", "X-Content-Type-Options: nosniff", "Referrer-Policy: no-referrer"]
        head += [f"{name}: {value}" for name, value in response.headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else response.body)
        with contextlib.suppress(OSError):
            self.request.settimeout(SEND_TIMEOUT_S)
            self.request.sendall(data)

    def _stream(self, stream: Stream, *, head_only: bool) -> None:
        sock = self.request
        try:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                         b"Cache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n")
            if head_only:
                return
            for chunk in stream.events():
                sock.sendall(chunk)                 # a client that stops reading: dropped after 10 s
        except OSError:
            pass
        finally:
            stream.close()


class WebServer:
    """Serves ``handler(request)`` on ``address`` from its own threads (`start`, `stop`). Binding
    happens in the constructor, so a taken port is an `OSError` before anything else starts."""

    def __init__(self, address: tuple[str, int], handler: Handler, *, max_connections: int = MAX_CONNECTIONS,
                 head_timeout_s: float = HEAD_TIMEOUT_S) -> None:
        self.handler = handler
        self.slots = threading.BoundedSemaphore(max_connections)
        self.head_timeout_s = head_timeout_s
        self._server = _Server(address, self)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="pibridge-web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()


# --- static files ----------------------------------------------------------------------------------
STATIC_PREFIX = "/static/"


class StaticFiles:
    """The package's ``pibridge/web/static`` files, read once through `importlib.resources` (they
    ship as package data) and kept in memory (~60 kB). ``index``: the file ``/`` (and
    ``/index.html``) serves; `page` answers those, ``/favicon.ico`` and ``/static/NAME``."""

    def __init__(self, index: str) -> None:
        self._pages = {"/": index, "/index.html": index, "/favicon.ico": "favicon.svg"}
        self._files: dict[str, tuple[bytes, str]] = {}
        root = resources.files("pibridge.web") / "static"
        for entry in root.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if entry.is_file() and suffix in CONTENT_TYPES:
                self._files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])

    def response(self, name: str) -> Response | None:
        found = self._files.get(name)
        if found is None:
            return None
        return Response(HTTPStatus.OK, found[0], found[1], {"Cache-Control": "max-age=300"})

    def page(self, path: str) -> Response | None:
        """The answer to a page's or a static file's ``path`` (404 for a name not shipped); None
        for any other path (the caller's API)."""
        if path not in self._pages and not path.startswith(STATIC_PREFIX):
            return None
        found = self.response(self._pages.get(path) or path.removeprefix(STATIC_PREFIX))
        return found or text(HTTPStatus.NOT_FOUND, "not found")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (NaN refused: browsers' JSON.parse has none)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def json_response(body: bytes, status: HTTPStatus = HTTPStatus.OK) -> Response:
    return Response(status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store"})


def query_float(request: Request, name: str, default: float) -> float:
    raw = request.arg(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{name} must be a number") from None
