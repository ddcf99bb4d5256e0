"""The core's MQTT channel: ONE thread runs the core's connection and its request handling.

The thread drives the network of a non-threaded `pibridge.mqtt.MqttSession` on the private Unix
socket itself, and repeats: read every request that arrived (at most `core.BATCH_MAX`), let the
core handle them, commit once, publish the answers. Answers are written on the thread that reads,
so nothing crosses threads on the request path (no queue, no notifications, no wake-up bytes).

When the connection drops (mosquitto restarts in place), the thread reconnects with backoff and
subscribes again; `up_count` counts successful (re)subscriptions. Other threads run code on the
core's thread with `call` (the wipe): it wakes the loop through a socket pair and runs between
two batches, connected or not.

A deprovision blocks this thread until mosquitto logged that it reloaded the CRL
(`Broker.reload`); mosquitto's log is read by the broker's own reader thread, which needs nothing
from this one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence

from pibridge import mqtt
from pibridge.emulator.core import BATCH_MAX, Core

log = logging.getLogger(__name__)

#: Longest wait in the network loop (keepalive is handled between waits).
LOOP_TIMEOUT_S = 1.0


class CoreChannel:
    """Runs `core` on a connection to ``endpoint`` subscribed to ``filters`` at ``qos``."""

    def __init__(self, core: Core, endpoint: mqtt.Endpoint, filters: Sequence[str], *, qos: int,
                 client_id: str, backoff: mqtt.Backoff, connect_timeout: float) -> None:
        self.core = core
        self.endpoint = endpoint
        self._filters = list(filters)
        self._qos = qos
        self._client_id = client_id
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._inbox: list[tuple[str, bytes]] = []
        self._session: mqtt.MqttSession | None = None
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.ups = threading.Condition()
        self.up_count = 0
        core.publish = self._publish

    # -- other threads -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="emulator-core", daemon=True)
            self._thread.start()

    def wait_up(self, seen: int, timeout: float) -> bool:
        """Wait until the core (re)subscribed after ``seen`` earlier successes."""
        with self.ups:
            return self.ups.wait_for(lambda: self.up_count > seen, timeout)

    def call(self, fn: Callable[[], None], timeout: float = 30.0) -> None:
        """Run ``fn`` on the core's thread between two batches and wait for it."""
        done = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
            finally:
                done.set()
        self._commands.put(run)
        self._wake()
        if not done.wait(timeout):
            raise TimeoutError("the emulator core did not run the command")
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Handle what was received, commit, disconnect, and end the thread."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # -- the core's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        delays = self._backoff.delays()
        while not self._stopping:
            session = self._connect()
            if session is not None:
                delays = self._backoff.delays()
                self._serve(session)
            if not self._stopping:
                self._idle(next(delays))
        self._run_commands()

    def _connect(self) -> mqtt.MqttSession | None:
        session = None
        try:
            session = mqtt.MqttSession(self.endpoint, client_id=self._client_id, on_message=self._received,
                                       threaded=False)
            session.open(self._connect_timeout)
            session.subscribe(self._filters, qos=self._qos, timeout=self._connect_timeout)
        except (mqtt.MqttError, OSError) as exc:
            log.debug("core channel: cannot connect: %s", exc)
            if session is not None:
                session.close()
            return None
        return session

    def _serve(self, session: mqtt.MqttSession) -> None:
        self._session = session
        with self.ups:
            self.up_count += 1
            self.ups.notify_all()
        try:
            wait = LOOP_TIMEOUT_S
            while True:
                alive = session.loop(wait, wake=self._wake_r, max_messages=BATCH_MAX)
                self._process()  # also after a drop: what arrived is stored (its answers are lost)
                due = self.core.release_answers()  # answers an injected delay held (`faults`)
                wait = LOOP_TIMEOUT_S if due is None else min(LOOP_TIMEOUT_S, due - time.monotonic())
                wait = max(0.0, wait)
                self._run_commands()
                if not alive or self._stopping:
                    break
        finally:
            self._session = None
            session.close()

    def _received(self, topic: str, payload: bytes) -> None:
        self._inbox.append((topic, payload))

    def _process(self) -> None:
        while self._inbox:
            batch, self._inbox = self._inbox[:BATCH_MAX], self._inbox[BATCH_MAX:]
            try:
                self.core.process(batch)
            except Exception as exc:  # never end the thread: the next batch may well succeed
                log.warning("a batch of %d requests failed: %s: %s", len(batch), type(exc).__name__, exc)

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        session = self._session
        if session is None:
            raise mqtt.NotConnected("the core is not connected")
        session.publish(topic, payload, qos)

    def _idle(self, delay: float) -> None:
        """Between connection attempts: wait ``delay`` s, running commands that come meanwhile."""
        with contextlib.suppress(OSError, ValueError):
            select.select([self._wake_r], [], [], delay)
        self._run_commands()

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except Exception:
                log.exception("core command failed")
