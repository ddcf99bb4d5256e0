"""The core's MQTT channel: ONE thread runs the core's connections and its request handling.

The core has one connection per broker (`CoreLink`: the API broker, the provision broker; see
`pibridge.emulator.broker`), each a non-threaded `pibridge.mqtt.MqttSession` on that broker's
private Unix socket. The thread drives their network itself, waiting on all of them at once, and
repeats: read every request that arrived (at most `core.BATCH_MAX`), let the core handle them,
commit once, publish the answers, each on the connection of the broker its topic belongs to.
Answers are written on the thread that reads, so nothing crosses threads on the request path (no
queue, no notifications, no wake-up bytes).

The connections live and die together: when one drops (mosquitto restarts in place), the thread
closes the others, reconnects all with backoff and subscribes again; `up_count` counts successful
(re)subscriptions of the whole set. Other threads run code on the core's thread with `call` (the
wipe): it wakes the loop through a socket pair and runs between two batches, connected or not.

Fairness and flow control (one client never costs another its answers): received requests wait
in one queue per client (the clientId of the topic; provisioning has its own), at most
`CLIENT_QUEUE_MAX` each; beyond it that client's requests are dropped, counted and logged
(rate-limited): a flooding client meets its own timeouts, nobody else. Batches are filled
round-robin, `FAIR_SHARE` requests per client per turn, each client's requests in their order
(which is all the agent's answering order promises, and what a client's barrier pings rely on).
While mosquitto has not acknowledged `UNACKED_MAX` of the core's QoS-1 answers, no further
request is handled (the connection is still served, so acknowledgements come in): paho numbers
messages with one 16-bit counter and refuses a publish whose number is still in use ("Message
queue full"), which dropped answers of every client.

A deprovision blocks this thread until mosquitto logged that it reloaded the CRL
(`Broker.reload`); mosquitto's log is read by the broker's own reader thread, which needs nothing
from this one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pibridge import mqtt
from pibridge import protocol as p
from pibridge.emulator.core import BATCH_MAX, Core, LogLimiter
from pibridge.wakeup import WakePair

log = logging.getLogger(__name__)

#: Longest wait in the network loop (keepalive is handled between waits).
LOOP_TIMEOUT_S = 1.0
#: Requests one client may have waiting in the core, and their bytes; more are dropped (counted
#: and logged).
CLIENT_QUEUE_MAX = 20_000
CLIENT_QUEUE_BYTES_MAX = 32 * 1024 * 1024
#: Most messages read from the connection per turn (a turn handles one batch): reading runs
#: ahead of handling, so a quiet client's request is queued, and served, without waiting for
#: the handling of everything a flooder sent before it.
READ_AHEAD = 10 * BATCH_MAX
#: Requests taken from one client per turn while a batch is filled round-robin.
FAIR_SHARE = 64
#: Unacknowledged QoS-1 answers beyond which no request is handled until acknowledgements come.
#: paho draws the ids of QoS-0 and QoS-1 publishes from one 16-bit counter and refuses a QoS-1
#: publish whose id is still unacknowledged; mosquitto acknowledges in order, so the ids in use
#: span at most (unacknowledged QoS 1 + the QoS-0 livedata published meanwhile, one per answer)
#: ≤ 2 × (UNACKED_MAX + 2 answers × BATCH_MAX) = 56,000 < 65,535.
UNACKED_MAX = 20_000
#: The queue of requests on topics without a clientId (provisioning).
_NO_CLIENT = ""


def request_owner(topic: str) -> str:
    """The clientId a request topic names (``/v1.0/<cid>/…``), `_NO_CLIENT` for provisioning."""
    prefix = p.API_PREFIX + "/"
    if not topic.startswith(prefix):
        return _NO_CLIENT
    end = topic.find("/", len(prefix))
    return topic[len(prefix):end] if end > 0 else _NO_CLIENT


@dataclass(frozen=True)
class CoreLink:
    """One of the core's connections: where, what it subscribes to, and which answers it carries:
    those whose topic starts with ``answers`` (None: every answer no other link claims)."""

    endpoint: mqtt.Endpoint
    filters: tuple[str, ...]
    answers: str | None = None


class CoreChannel:
    """Runs `core` on one connection per link, each subscribed to its filters at ``qos``; the
    first link's connection is the one the thread waits on (the others wake it)."""

    def __init__(self, core: Core, links: Sequence[CoreLink], *, qos: int,
                 client_id: str, backoff: mqtt.Backoff, connect_timeout: float) -> None:
        if sum(link.answers is None for link in links) != 1:
            raise ValueError("exactly one core link carries the answers no other link claims")
        self.core = core
        self.links = list(links)
        self._qos = qos
        self._client_id = client_id
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._queues: dict[str, collections.deque[tuple[str, bytes]]] = {}  # per client, in order
        self._queued_bytes: dict[str, int] = {}  # payload bytes waiting, per client
        self._turns: collections.deque[str] = collections.deque()  # clients with requests waiting
        #: requests dropped because their client had `CLIENT_QUEUE_MAX` waiting, per clientId
        self.dropped: dict[str, int] = {}
        self._drop_log = LogLimiter()
        self._sessions: list[mqtt.MqttSession] = []  # one per link while connected, else none
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wakeup = WakePair()  # a command is waiting
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
        self._wakeup.close()

    def _wake(self) -> None:
        self._wakeup.wake()

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

    def _connect(self) -> list[mqtt.MqttSession] | None:
        """One subscribed session per link, or None (and nothing left open) when one fails. The
        client id sent is replaced by the core's certificate CN on every private socket."""
        sessions: list[mqtt.MqttSession] = []
        try:
            for link in self.links:
                session = mqtt.MqttSession(link.endpoint, client_id=self._client_id,
                                           on_message=self._received, threaded=False)
                sessions.append(session)
                session.open(self._connect_timeout)
                session.subscribe(link.filters, qos=self._qos, timeout=self._connect_timeout)
        except (mqtt.MqttError, OSError) as exc:
            log.debug("core channel: cannot connect: %s", exc)
            for session in sessions:
                session.close()
            return None
        return sessions

    def _serve(self, sessions: list[mqtt.MqttSession]) -> None:
        self._sessions = sessions
        first, others = sessions[0], sessions[1:]
        with self.ups:
            self.up_count += 1
            self.ups.notify_all()
        try:
            wait = LOOP_TIMEOUT_S
            while True:
                # read ahead of handling (every client's requests reach its queue), one batch a turn;
                # waiting on the first connection, woken by the others' traffic
                if any(session.buffered() for session in others):
                    wait = 0.0
                wakes = [self._wakeup.reader, *(s.raw_socket() for s in others if s.raw_socket() is not None)]
                alive = first.loop(wait, wake=wakes, max_messages=READ_AHEAD)
                for session in others:
                    alive = session.loop(0.0, max_messages=READ_AHEAD) and alive
                if not alive or self._stopping:
                    self._process()  # what arrived is stored (answers of a dropped connection are lost)
                    self._run_commands()
                    break
                self._process(batches=1)
                due = self.core.release_answers()  # answers an injected delay held (`faults`)
                wait = LOOP_TIMEOUT_S if due is None else min(LOOP_TIMEOUT_S, due - time.monotonic())
                if self._turns and not self._flow_stopped():
                    wait = 0.0
                wait = max(0.0, wait)
                self._run_commands()
        finally:
            self._sessions = []
            for session in sessions:
                session.close()

    def _received(self, topic: str, payload: bytes) -> None:
        owner = request_owner(topic)
        waiting = self._queues.get(owner)
        if waiting is None:
            waiting = self._queues[owner] = collections.deque()
            self._turns.append(owner)
        size = self._queued_bytes.get(owner, 0)
        if len(waiting) >= CLIENT_QUEUE_MAX or size + len(payload) > CLIENT_QUEUE_BYTES_MAX:
            dropped = self.dropped[owner] = self.dropped.get(owner, 0) + 1
            self._drop_log.log(log, "client %s has %d requests (%d bytes) waiting: request on %s dropped "
                               "unanswered (%d so far); its requests time out, other clients are served",
                               owner or "(provisioning)", len(waiting), size, topic, dropped)
            return
        waiting.append((topic, payload))
        self._queued_bytes[owner] = size + len(payload)

    def _next_batch(self) -> list[tuple[str, bytes]]:
        """Up to `BATCH_MAX` requests, `FAIR_SHARE` per client per turn, each client's in order."""
        batch: list[tuple[str, bytes]] = []
        while self._turns and len(batch) < BATCH_MAX:
            owner = self._turns.popleft()
            waiting = self._queues[owner]
            taken = 0
            for _ in range(min(FAIR_SHARE, len(waiting), BATCH_MAX - len(batch))):
                message = waiting.popleft()
                taken += len(message[1])
                batch.append(message)
            if waiting:
                self._turns.append(owner)
                self._queued_bytes[owner] -= taken
            else:
                del self._queues[owner]
                self._queued_bytes.pop(owner, None)
        return batch

    def _flow_stopped(self) -> bool:
        """Too many answers unacknowledged on a connection: serve the connections until mosquitto
        acknowledged more."""
        return any(s.is_open and s.unacknowledged() > UNACKED_MAX for s in self._sessions)

    def _process(self, batches: int = 0) -> None:
        """Handle waiting requests: ``batches`` batches (0: all), unless flow control stops it."""
        done = 0
        while self._turns and not (batches and done >= batches):
            if self._flow_stopped():
                return
            done += 1
            batch = self._next_batch()
            try:
                self.core.process(batch)
            except Exception as exc:  # never end the thread: the next batch may well succeed
                log.warning("a batch of %d requests failed: %s: %s", len(batch), type(exc).__name__, exc)

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish on the connection of the link that carries ``topic``'s answers."""
        sessions = self._sessions
        if not sessions:
            raise mqtt.NotConnected("the core is not connected")
        chosen = None
        for link, session in zip(self.links, sessions, strict=True):
            if link.answers is None:
                chosen = chosen or session
            elif topic.startswith(link.answers):
                chosen = session
                break
        assert chosen is not None  # __init__: one link carries every other answer
        chosen.publish(topic, payload, qos)

    def _idle(self, delay: float) -> None:
        """Between connection attempts: wait ``delay`` s, running commands that come meanwhile."""
        with contextlib.suppress(OSError, ValueError):
            select.select([self._wakeup.reader], [], [], delay)
        self._run_commands()

    def _run_commands(self) -> None:
        self._wakeup.drain()  # before the commands are read: one put after it wakes again
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except Exception:
                log.exception("core command failed")
