"""Tell systemd how the bridge is doing: ``sd_notify`` over its datagram socket, no library.

systemd (``Type=notify``) passes ``$NOTIFY_SOCKET``: a path, or ``@name`` for a socket in the
abstract namespace. Each message is one datagram of ``KEY=VALUE`` lines (sd_notify(3)):

    +-----------------------------------+-----------------------------------------------------+
    | READY=1                           | started: the queue is open and sampling has begun   |
    | STATUS=<one line>                 | shown by `systemctl status pibridge`                |
    | WATCHDOG=1                        | keep-alive; missing for WatchdogSec= → restart      |
    | STOPPING=1                        | shutting down                                       |
    | RELOADING=1 + MONOTONIC_USEC=<µs> | re-reading the profile (READY=1 again when done)    |
    +-----------------------------------+-----------------------------------------------------+

With ``WatchdogSec=`` set, systemd also passes ``$WATCHDOG_USEC`` (the timeout in µs) and
``$WATCHDOG_PID`` (whom it is meant for; absent means "this process"). We ping at half the timeout,
as sd_watchdog_enabled(3) recommends.

Outside systemd (no ``$NOTIFY_SOCKET``) every method does nothing. A failed send is logged once and
never raised: telling systemd is never worth stopping the bridge for.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
_ENV_KEYS = (NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)
ABSTRACT_PREFIX = "@"                 #: ``@name`` → the abstract socket ``\0name``
USEC_PER_S = 1_000_000
WATCHDOG_PING_FRACTION = 0.5          #: ping at half the timeout (sd_watchdog_enabled(3))
SEND_TIMEOUT_S = 1.0                  #: a full socket buffer never blocks the main loop for longer
STATUS_MAX_CHARS = 200                #: STATUS= is one line; systemctl shows little more


def _socket_address(value: str) -> str | bytes | None:
    """The address to send to: a filesystem path, or an abstract name; None if not a unix socket
    (systemd ≥ 254 also knows ``vsock:``, which a Pi's bridge never gets)."""
    if value.startswith(ABSTRACT_PREFIX):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout in seconds if it is meant for this process, else None."""
    raw = environ.get(WATCHDOG_USEC_ENV)
    if not raw:
        return None
    pid = environ.get(WATCHDOG_PID_ENV)
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of microseconds", WATCHDOG_USEC_ENV, raw)
        return None
    return usec / USEC_PER_S if usec > 0 else None


class SystemdNotifier:
    """sd_notify for the bridge's main loop. Build it with `from_environment`; ``enabled`` is
    False outside systemd, and then every call is a no-op.

    The service calls `ready` once the queue is open and sampling has started, `status` on a
    change worth a line in ``systemctl status``, `watchdog_if_due` from its main loop only while the
    scheduler and the delivery thread are alive, `reloading` / `ready` around a SIGHUP reload and
    `stopping` when it shuts down."""

    def __init__(self, address: str | None, watchdog_timeout_s: float | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self._target = _socket_address(address) if address else None
        if address and self._target is None:
            log.warning("ignoring %s=%r: not a unix socket address", NOTIFY_SOCKET_ENV, address)
        self.watchdog_timeout_s = watchdog_timeout_s if self._target is not None else None
        self._monotonic = monotonic
        self._sock: socket.socket | None = None
        self._last_ping: float | None = None
        self._send_failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None, *,
                         unset: bool = False) -> SystemdNotifier:
        """From ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID`` (``os.environ`` by
        default). ``unset=True`` removes them afterwards, so that child processes (a provisioning
        helper) do not talk to systemd in the bridge's name — the service should pass it."""
        env = os.environ if environ is None else environ
        notifier = cls(env.get(NOTIFY_SOCKET_ENV) or None, _watchdog_interval(env))
        if unset:
            for key in _ENV_KEYS:
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping (half the timeout), None without a watchdog."""
        if self.watchdog_timeout_s is None:
            return None
        return self.watchdog_timeout_s * WATCHDOG_PING_FRACTION

    # --- messages ------------------------------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY="1", STATUS=status)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """One keep-alive, now."""
        sent = self.notify(WATCHDOG="1")
        if sent:
            self._last_ping = self._monotonic()
        return sent

    def watchdog_due_in(self) -> float:
        """Seconds until the next keep-alive is due (infinite without a watchdog)."""
        interval = self.watchdog_interval_s
        if interval is None:
            return math.inf
        if self._last_ping is None:
            return 0.0
        return max(0.0, interval - (self._monotonic() - self._last_ping))

    def watchdog_if_due(self) -> bool:
        """A keep-alive if the ping interval has passed since the last (call it every loop turn:
        it costs a clock read when nothing is due). True if one was sent."""
        interval = self.watchdog_interval_s
        if interval is None:
            return False
        if self._last_ping is not None and self._monotonic() - self._last_ping < interval:
            return False
        return self.watchdog()

    def reloading(self, status: str | None = None) -> bool:
        """Reload started; send `ready` when the new profile is in force (or was refused).
        MONOTONIC_USEC is CLOCK_MONOTONIC, which systemd (≥ 253, Type=notify-reload) requires with
        RELOADING=1."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING="1", MONOTONIC_USEC=str(usec), STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING="1", STATUS=status)

    def notify(self, **fields: str | None) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines (None values left out). True if sent."""
        if self._target is None:
            return False
        lines = []
        for key, value in fields.items():
            if value is None:
                continue
            if key == "STATUS":
                value = " ".join(value.split())[:STATUS_MAX_CHARS]   # one line, bounded
            lines.append(f"{key}={value}")
        if not lines:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendto("\n".join(lines).encode(), self._target)
        except OSError as exc:
            if not self._send_failed:
                log.warning("cannot notify systemd at %s: %s (will keep trying quietly)",
                            self.address, exc.strerror or exc)
            self._send_failed = True
            return False
        if self._send_failed:
            log.info("notifying systemd at %s works again", self.address)
            self._send_failed = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
