"""Delivery's connection to the agent: one driven `AgentClient` at a time, and the push gate's
state.

    no client ──connect()──▶ a client (its link thread reconnects by itself after a drop)
        ▲                      │ "up": a new generation (the gate opens once reconciled under it)
        │                      │ "down": the gate closes
        └── restart(): new credentials, or a try after a refusal's wait; drop(): its link stopped for good

The gate: pushes go only to ids a reconciliation saw on the current connection. Every "up"
starts a new generation; a reconciliation takes a `snapshot` when it begins and is kept only if
the connection is `unchanged` since (no "down" meanwhile, not even one followed by an "up").

Connecting provisions first when no credentials are stored; a failure waits with backoff
(`connect_at`). What a refusal means (a rejected certificate, error 18) is `Rejection`'s.
``_on_change`` runs on the client's link thread: it only records the gate's state and hands the
event on (``forward``); everything else runs on the delivery thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentError,
    AgentSettings,
    ConnectionErrorKind,
    ConnectionEvent,
    CredentialFiles,
)
from pibridge.bridge.rejection import FORBIDDEN_RETRY_S, Refusal, Rejection
from pibridge.mqtt import Backoff

#: Seconds one connection attempt may take (the link then reconnects by itself).
CONNECT_TIMEOUT_S = 10.0


class GateSnapshot(NamedTuple):
    """The connection at one moment: its generation (one per "up") and the drops so far."""

    generation: int
    downs: int


class AgentConnection:
    """``forward(client, event)``: a connection event, for the delivery thread's inbox;
    ``problem(text, silent)``: what keeps delivery from the agent now ("" once nothing does;
    ``silent``: said in the log already); ``restarted()``: the client was replaced (new
    credentials, or a try after a refusal's wait), so what delivery verified with the old one no
    longer holds."""

    def __init__(self, settings: AgentSettings, rejection: Rejection, *, request_timeout: float,
                 backoff: Backoff, forward: Callable[[AgentClient, ConnectionEvent], None],
                 problem: Callable[[str, bool], None], restarted: Callable[[], None]) -> None:
        self.settings = settings
        self.rejection = rejection
        self.client: AgentClient | None = None
        self.connect_at = 0.0   #: monotonic: no connection is tried before
        self._request_timeout = request_timeout
        self._backoff = backoff
        self._delays = backoff.delays()
        self._forward = forward
        self._problem = problem
        self._restarted = restarted
        self._lock = threading.Lock()   # the gate's state: written by the link thread
        self._generation = 0
        self._downs = 0
        self._up = False

    # -- the gate ---------------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self._up

    def gate_open(self, generation: int) -> bool:
        """Whether ids reconciled under ``generation`` may be pushed to now."""
        with self._lock:
            return self._up and generation == self._generation

    def snapshot(self) -> GateSnapshot:
        """The connection now: for `unchanged`."""
        with self._lock:
            return GateSnapshot(self._generation, self._downs)

    def unchanged(self, snapshot: GateSnapshot) -> bool:
        """Up, and the same connection as at ``snapshot``."""
        with self._lock:
            return self._up and GateSnapshot(self._generation, self._downs) == snapshot

    def _on_change(self, client: AgentClient, event: ConnectionEvent) -> None:
        # the client's link thread
        with self._lock:
            if client is not self.client:
                return
            if event.up:
                self._generation += 1
                self._up = True
            else:
                self._up = False
                self._downs += 1
        self._forward(client, event)

    # -- connecting -------------------------------------------------------------------------------
    def connect(self) -> None:
        """A new client, connected (provisioned first if no credentials are stored); on failure
        none, and `connect_at` says when to try again."""
        files = CredentialFiles(self.settings.cert_folder, self.settings.client_name)
        if not files.stored() and not self._provision("no credentials stored"):
            return
        client = AgentClient(self.settings, request_timeout=self._request_timeout, backoff=self._backoff,
                             driven=True)
        self.client = client
        client.on_connection_change(lambda event: self._on_change(client, event))
        try:
            client.connect(CONNECT_TIMEOUT_S, persist=True)
        except AgentConnectionError as exc:
            client.close()
            self.client = None
            if exc.kind is ConnectionErrorKind.CERTIFICATE_REJECTED:
                self.rejected(str(exc))
            else:
                self._wait(str(exc))
            return
        except AgentError as exc:  # a missing CA file or credentials, unreadable files: retried
            client.close()
            self.client = None
            self._wait(str(exc))
            return
        self._delays = self._backoff.delays()

    def restart(self) -> None:
        """Drop the client (new credentials are stored, or a refusal's wait is over) and connect
        afresh at once."""
        client, self.client = self.client, None
        with self._lock:
            self._up = False
            self._downs += 1
        if client is not None:
            client.close()
        self.connect_at = 0.0
        self._restarted()

    def drop(self, client: AgentClient, error: AgentConnectionError) -> None:
        """``client``'s link stopped for good (`AgentClient.fatal_error`): drop it. A rejected
        certificate goes to `rejected`; missing or unloadable credentials reconnect after backoff
        (`connect` provisions when none are stored); an untrusted server or a port that wants a
        certificate is retried slowly."""
        self._problem(str(error), False)
        self.client = None
        with self._lock:
            self._up = False
        client.close()
        if error.kind is ConnectionErrorKind.CERTIFICATE_REJECTED:
            self.rejected(str(error))
        elif error.kind is ConnectionErrorKind.CREDENTIALS:
            self.connect_at = time.monotonic() + next(self._delays)
        else:
            self.connect_at = time.monotonic() + FORBIDDEN_RETRY_S

    def rejected(self, why: str) -> None:
        """The agent rejects this client (certificate rejected, or 18): as `Rejection` decides
        (new credentials: `restart`; waiting: the problem says why; re-provisioned a moment ago,
        `Refusal.BACK_OFF`: nothing more, `Rejection.forbidden_until` says when to try again)."""
        refusal = self.rejection.refused(why)
        if refusal is Refusal.RESTART:
            self.restart()
        elif refusal is Refusal.PROVISIONING_FAILED:
            self._wait(self.rejection.problem)
        elif refusal is Refusal.WAIT:
            self._problem(self.rejection.problem, True)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _provision(self, why: str) -> bool:
        failure = self.rejection.provision(why)
        if failure is not None:
            self._wait(failure)
        return failure is None

    def _wait(self, problem: str) -> None:
        """No connection: say why, and try again after the next backoff delay."""
        self._problem(problem, False)
        self.connect_at = time.monotonic() + next(self._delays)
