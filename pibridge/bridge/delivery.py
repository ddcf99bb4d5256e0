"""The delivery thread: connects to the agent, keeps its inventory reconciled, and drains the
queue oldest first with several pushes in flight, until each sample is acknowledged.

One push per sample while delivery keeps up. A backlog (after an outage or a restart) goes in
pushes of up to `pushes.MAX_SAMPLES_PER_PUSH` samples of one sensor, each value with its sample's
timestamp (`Push`): the agent handles one sensor's pushes one after another, so one message per
sample would cost a round trip each. A sample's metrics always travel together, in one message.

Threads: one ``bridge-delivery`` thread owns all of this state, and reads and writes the agent
connection itself (a ``driven`` `AgentClient`): it waits in one select for the connection and
its inbox, so a push's answer is read, matched and handled on this thread, with no hand-off.
Push futures' callbacks, the client's connection events and the queue's "rows added" notices only
hand a message to its inbox (`pibridge.bridge.inbox`). The client's link thread opens and fences
each connection; the database stays with the queue's own thread.

Its parts: `AgentConnection` (the client, connecting and the gate's state), `Backlog` (what to
send next: retries, then the queue's rows, from disk or handed over in memory), `PushLedger`
(each sample taken: in flight with which push, acknowledged, buried, until the queue is told),
`Push` (what one push carries), `InventoryProbe` and `Rejection`; this module is the policy
that joins them: when to connect, reconcile and send, and what each answer means.

The push gate: a push goes only to ids a reconciliation saw in the agent's listing on the current
connection. Every "up" event starts a new generation; a "down" (or a connection error from a
push) closes the gate; a reconciliation during which the connection went down is discarded.

The inventory probe (`pibridge.bridge.probe`) notices an agent that lost our sensors while we
run: its mismatch closes the gate and reconciles at once, and samples still in flight to those
sensors are sent again under the new ids even when acknowledged.

What happens to a push that was not acknowledged:

| outcome                                             | what happens                                  |
|-----------------------------------------------------|-----------------------------------------------|
| timeout, connection lost/refused, codes 0–3, unknown codes, garbled answer | kept, re-sent after backoff |
| 15 UnknownSensorId, 16 UnknownMetricId              | reconcile, then re-sent (dead letter after   |
|                                                     | `MAX_UNKNOWN_ID_RETRIES` in a row)           |
| 18 ForbiddendAccess                                 | ``smart``: re-provision in a child process,  |
|                                                     | reconcile under the new client, re-sent;     |
|                                                     | ``keep``: kept queued, logged once what to do|
| 4–14, 17, 19; a value the client refuses (NaN);     | dead letters, with the reason                |
| no id for its sensor/metric after reconciliation    |                                              |
| 4–14, 17, 19 to a push of several samples         | each of its samples re-sent alone, as above  |
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentError,
    AgentReplyError,
    AgentSettings,
    ConnectionErrorKind,
    ConnectionEvent,
    ErrorCode,
    Reply,
    encode_push,
)
from pibridge.bridge.backlog import Backlog
from pibridge.bridge.connection import AgentConnection
from pibridge.bridge.inbox import Inbox, wait_for_socket
from pibridge.bridge.inventory import InventoryMapping, ReconcileAborted, Reconciler, ResolvedInventory
from pibridge.bridge.ledger import PushLedger
from pibridge.bridge.model import SensorSpec
from pibridge.bridge.probe import INVENTORY_PROBE_S, InventoryProbe
from pibridge.bridge.provisioning import Provisioner, ProvisioningChild
from pibridge.bridge.pushes import MAX_PUSH_BYTES, Push, PushAddresses
from pibridge.bridge.queue import QueuedSample, SampleQueue
from pibridge.bridge.rejection import Rejection
from pibridge.mqtt import Backoff
from pibridge.profile import BridgeSettings
from pibridge.protocol import Op

log = logging.getLogger(__name__)

#: Samples in flight at once. Pushes go out once at least half of these are free (`_send`),
#: so a backlog travels in pushes of several samples instead of ever smaller pieces.
IN_FLIGHT = 256
#: Retry delays after a transient failure, and between connection attempts: a local agent, so
#: the cap is a few seconds, not 30 s.
RETRY_BACKOFF = Backoff(initial=0.2, cap=5.0)
CONNECT_BACKOFF = Backoff(initial=0.5, cap=5.0)
DEFAULT_REQUEST_TIMEOUT_S = 10.0
#: Seconds between two looks at a client whose link is down: a reconnect attempt that fails for
#: good (credentials gone, certificate rejected) stops the link without an event, since the
#: client reports "down" only once per drop.
FATAL_CHECK_S = 1.0
#: Connection failures that stop the client's link for good (`AgentClient.fatal_error`).
FATAL_KINDS = frozenset({ConnectionErrorKind.CREDENTIALS, ConnectionErrorKind.CERTIFICATE_REJECTED,
                         ConnectionErrorKind.SERVER_NOT_TRUSTED, ConnectionErrorKind.CERTIFICATE_REQUIRED})
#: How often one sample may meet 15/16 after a reconciliation before it is a dead letter.
MAX_UNKNOWN_ID_RETRIES = 3
#: Seconds the delivery thread goes at most without reading the agent connection while messages
#: keep it busy (it reads whenever its inbox is empty; a steady stream must not starve answers).
READ_AT_LEAST_S = 0.2
#: Seconds `stop` lets in-flight pushes finish (their acknowledgements delete rows).
STOP_DRAIN_S = 1.5
#: Error code of the reports `report_sensor_error` sends (the agent only stores them).
SENSOR_ERROR_CODE = int(ErrorCode.UnknownError)
TRANSIENT_CODES = frozenset({0, 1, 2, 3})
VALUE_REFUSED = "value refused by the client"
NO_ID = "no agent id after reconciliation"
#: Problems `_reconcile_failed` sets (cleared by the next successful reconciliation).
RECONCILE_PROBLEM_PREFIXES = ("the agent refused a request of the inventory reconciliation",
                              "inventory mapping not written")
UNKNOWN_ID_CODES = frozenset({int(ErrorCode.UnknownSensorId), int(ErrorCode.UnknownMetricId)})

class Outcome(enum.Enum):
    """What a push's failure means for its sample (see the table in the module docstring)."""

    RETRY = "kept, re-sent after backoff"
    RECONNECT = "kept, re-sent once the inventory is reconciled on a connection"
    RECONCILE = "reconcile, then re-sent"
    FORBIDDEN = "re-provision (smart) or keep queued (keep)"
    DEAD = "dead letter"


def classify(error: BaseException) -> Outcome:
    """The outcome of a push that failed with ``error`` (the future's exception)."""
    if isinstance(error, AgentReplyError):
        code = int(error.code)
        if code in UNKNOWN_ID_CODES:
            return Outcome.RECONCILE
        if code == ErrorCode.ForbiddendAccess:
            return Outcome.FORBIDDEN
        if code in TRANSIENT_CODES or not isinstance(error.code, ErrorCode):
            return Outcome.RETRY
        return Outcome.DEAD
    if isinstance(error, AgentConnectionError):
        return Outcome.RECONNECT
    return Outcome.RETRY  # RequestTimeout, ProtocolError (a garbled answer), anything unforeseen


@dataclass(frozen=True)
class DeliveryStatus:
    """A snapshot for the status line. Times: wall-clock seconds (None: never)."""

    connected: bool
    client_id: str
    connected_since: float | None
    last_ack: float | None
    pushed: int
    dead_lettered: dict[str, int]
    queue_depth: int
    oldest_timestamp_ms: int | None
    in_flight: int
    resent: int
    reconciliations: int
    dropped: int
    waiting_for_clock: int
    problem: str = ""
    #: per sensor name: samples acknowledged / moved to the dead letters since start
    pushed_by_sensor: dict[str, int] = field(default_factory=dict)
    dead_by_sensor: dict[str, int] = field(default_factory=dict)


class Delivery:
    """Drains ``queue`` to the agent of ``settings``; see the module docstring.

    ``specs``: the profile's sensors as the agent should have them. ``clock_ready`` (optional):
    whether the system clock is known set — only for the status (rows without a wall time are
    never handed out by the queue). ``provisioner`` runs (re-)provisioning (default: a child
    process). ``in_flight``, ``request_timeout``: pipelining depth and per-push timeout.
    """

    def __init__(self, settings: AgentSettings, bridge: BridgeSettings, queue: SampleQueue, *,
                 specs: Mapping[str, SensorSpec], clock_ready: Callable[[], bool] | None = None,
                 provisioner: Provisioner | None = None, in_flight: int = IN_FLIGHT,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
                 retry_backoff: Backoff = RETRY_BACKOFF, connect_backoff: Backoff = CONNECT_BACKOFF,
                 inventory_probe_s: float = INVENTORY_PROBE_S) -> None:
        self.settings = settings
        self.bridge = bridge
        self.queue = queue
        self._specs = dict(specs)
        self._clock_ready = clock_ready
        self._window = in_flight
        self._retry_backoff = retry_backoff
        self.probe = InventoryProbe(inventory_probe_s)
        self._push_error = ""  # the last unforeseen failure to send a push (logged once per kind)
        self._inbox = Inbox()
        self._read_at = 0.0  # monotonic time the delivery thread last read the agent connection
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.rejection = Rejection(settings, ProvisioningChild(settings, self._stopping, provisioner))
        #: the client and the push gate's state (its events come through the inbox)
        self._connection = AgentConnection(
            settings, self.rejection, request_timeout=request_timeout, backoff=connect_backoff,
            forward=lambda client, event: self._inbox.put(("connection", client, event)),
            problem=self._connection_problem, restarted=self._forget_inventory)
        self._resolved: ResolvedInventory | None = None
        # the delivery thread's own state
        self._mapping: InventoryMapping | None = None
        self._need_reconcile = True
        self._next_check = 0.0
        #: what to send next (retries, then the queue's rows: from disk, or handed over in memory)
        self._backlog = Backlog(queue)
        #: where each sample taken stands: in flight with which push, acknowledged, buried
        self._ledger = PushLedger()
        self._push_numbers = itertools.count(1)
        self._addresses = PushAddresses()
        self._retry_delays = retry_backoff.delays()
        self._retry_at = 0.0
        self._reconcile_delays = retry_backoff.delays()
        self._reconcile_at = 0.0
        self._problem = ""
        self._step_delays = retry_backoff.delays()
        self._step_retry_at = 0.0
        self._step_error = ""
        self._progress = threading.Condition()
        self._drained = threading.Event()
        self._queue_changes = 0  # bumped by the queue's thread before a put returns
        # counters for the status
        self.pushed = 0
        self.pushes_sent = 0  # push requests (one carries one sample, or several of a backlog)
        self.resent = 0
        self.reconciliations = 0
        self.dead_by_kind: dict[str, int] = {}
        self.pushed_by_sensor: dict[str, int] = {}
        self.dead_by_sensor: dict[str, int] = {}
        self._connected_since: float | None = None
        self._last_ack: float | None = None
        queue.set_specs(self._specs)
        queue.add_batch_listener(self._backlog.on_committed)
        queue.add_listener(self._on_queue_change)

    # -- API for the service ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("delivery already started")
        self._thread = threading.Thread(target=self._run, name="bridge-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within ``timeout`` s: in-flight pushes get a moment to be acknowledged, whatever
        is unacknowledged stays queued (sent again next time)."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._inbox.put(("wake",))
        thread = self._thread
        if thread is None:
            return
        thread.join(max(0.0, min(STOP_DRAIN_S + 1.0, timeout / 2)))
        if thread.is_alive():  # stuck in a blocking call (connect, reconcile, provisioning): interrupt it
            client = self._connection.client
            if client is not None:
                client.close()
            self.rejection.provisioning.kill()
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("delivery thread did not stop within %g s", timeout)

    def update_specs(self, specs: Mapping[str, SensorSpec]) -> None:
        """The profile changed: reconcile against the new specs (removed sensors keep their mapping,
        their queued samples are still delivered)."""
        self.queue.set_specs(specs)
        self._inbox.put(("specs", dict(specs)))

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked each time the delivery thread made a step
        (for the service's shutdown and for tests); False on timeout."""
        with self._progress:
            return self._progress.wait_for(predicate, timeout)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every stamped sample queued so far was acknowledged or dead-lettered."""
        return self._drained.wait(timeout)

    def report_sensor_error(self, sensor_name: str, text: str) -> bool:
        """Report a sensor's read error to the agent: on the sensor's error topic once it has a
        verified id, at client level (text prefixed with the sensor's name) before. Only while
        connected, never queued: returns whether it was sent."""
        client = self._connection.client
        if client is None or not client.connected:
            return False
        resolved = self._resolved
        sensor_id = None
        if resolved is not None and self._gate_open(resolved):
            sensor_id = resolved.sensors.get(sensor_name)
        try:
            if sensor_id is not None:
                client.report_error(text, SENSOR_ERROR_CODE, sensor_id=sensor_id)
            else:
                client.report_error(f"{sensor_name}: {text}", SENSOR_ERROR_CODE)
        except (AgentError, ValueError) as exc:
            log.debug("sensor error report for %s not sent: %s", sensor_name, exc)
            return False
        return True

    def status(self) -> DeliveryStatus:
        stats = self.queue.stats()
        client = self._connection.client
        waiting = stats.unstamped if self._clock_ready is None or not self._clock_ready() else 0
        return DeliveryStatus(
            connected=bool(client is not None and client.connected),
            client_id=client.client_id if client else "",
            connected_since=self._connected_since, last_ack=self._last_ack, pushed=self.pushed,
            dead_lettered=dict(self.dead_by_kind), queue_depth=stats.depth,
            oldest_timestamp_ms=stats.oldest_timestamp_ms, in_flight=len(self._ledger.in_flight),
            resent=self.resent, reconciliations=self.reconciliations, dropped=stats.dropped,
            waiting_for_clock=waiting,
            problem=self._problem, pushed_by_sensor=dict(self.pushed_by_sensor),
            dead_by_sensor=dict(self.dead_by_sensor))

    @property
    def step_error(self) -> str:
        """The error of the last delivery step while steps keep failing ("" once one works)."""
        return self._step_error

    @property
    def alive(self) -> bool:
        """The delivery thread runs (for the service's watchdog)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def client(self) -> AgentClient | None:
        return self._connection.client

    # -- callbacks (other threads): hand over only ---------------------------------------------
    def _on_queue_change(self, what: str) -> None:
        # runs before the put returns: whoever put a sample never sees a stale "drained"
        self._queue_changes += 1
        self._drained.clear()
        self._inbox.put(("queue", what))

    def _push_done(self, number: int, sample_ids: tuple[int, ...], client: AgentClient,
                   future: Future[Reply]) -> None:
        self._inbox.put(("result", number, sample_ids, client, future))

    def _gate_open(self, resolved: ResolvedInventory) -> bool:
        return self._connection.gate_open(resolved.generation)

    # -- the delivery thread ------------------------------------------------------------------
    def _run(self) -> None:
        self._inbox.bind()
        try:
            while not self._stopping.is_set():
                self._handle(self._next_message())
                while (message := self._inbox.get_nowait()) is not None:
                    self._handle(message)
                if self._stopping.is_set():
                    break
                self._safe_step()
                with self._progress:
                    self._progress.notify_all()
        except Exception:
            log.exception("delivery failed; samples stay queued")
        finally:
            self._shutdown()

    def _safe_step(self) -> None:
        """`_step`, where an unforeseen error costs a pause, never the thread (samples stay
        queued); logged once per kind of error until a step succeeds."""
        if self._step_error and time.monotonic() < self._step_retry_at:
            return
        try:
            self._step()
        except Exception as exc:
            delay = next(self._step_delays)
            self._step_retry_at = time.monotonic() + delay
            what = f"{type(exc).__name__}: {exc}"
            if what != self._step_error:
                self._step_error = what
                log.error("delivery step failed (%s); samples stay queued, retried in %.1f s",
                          what, delay, exc_info=True)
            self._drained.clear()
            return
        if self._step_error:
            log.info("delivery recovered")
            self._step_error = ""
        self._step_delays = self._retry_backoff.delays()

    def _next_message(self) -> tuple[Any, ...]:
        """The next message of the inbox, or ("wake",) once `_wake_at` comes first (or traffic
        without a message for us: a keepalive answer)."""
        now = time.monotonic()
        if self._inbox.waiting() and now - self._read_at >= READ_AT_LEAST_S:
            self._drive(0.0, None)
        message = self._inbox.wait(max(0.0, self._wake_at(now) - now), self._drive)
        return ("wake",) if message is None else message

    def _drive(self, timeout: float, wake: Any) -> None:
        """Wait up to ``timeout`` s for ``wake`` (the inbox), reading the agent connection meanwhile."""
        client = self._connection.client
        if client is not None and client.driven:
            client.drive(timeout, wake)
            self._read_at = time.monotonic()
        elif wake is not None:
            wait_for_socket(timeout, wake)

    def _wake_at(self, now: float) -> float:
        """When `_step` next has something to do (monotonic): the earliest deadline it acts on."""
        if self._step_error and now < self._step_retry_at:  # `_safe_step` pauses: nothing else is due
            return self._step_retry_at
        wake = [now + 60.0]
        forbidden_until = self.rejection.forbidden_until
        up = self._connection.up
        if self._connection.client is None or forbidden_until:
            wake.append(max(self._connection.connect_at, forbidden_until))
        elif not up:
            wake.append(now + FATAL_CHECK_S)
        if self._retry_at > now:
            wake.append(self._retry_at)
        if self._need_reconcile and up and not forbidden_until:
            wake.append(self._reconcile_at)
        # the same conditions as `_step`'s: a deadline it would not act on must not wake it (a
        # failing reconciliation keeps `_resolved` with both deadlines past: a busy loop)
        if self._resolved is not None and up and not self._need_reconcile:
            wake.append(self._next_check)
            if self.probe.wanted() and self._gate_open(self._resolved):
                wake.append(self.probe.due_at)
        if self._ledger.acked:
            wake.append(now + 0.5)
        if self._step_error:
            wake.append(self._step_retry_at)
        return min(wake)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "result":
            self._on_result(message[1], message[2], message[3], message[4])
        elif kind == "connection":
            self._on_event(message[1], message[2])
        elif kind == "specs":
            self._specs = message[1]
            self._need_reconcile = True
        elif kind == "queue" and message[1] == "stamped":
            self._backlog.rewind()   # rows stamped late have lower ids than the cursor
        elif kind == "probe":
            self._on_probe(message[1], message[2], message[3])

    def _step(self) -> None:
        changes = self._queue_changes
        connection = self._connection
        client = connection.client
        fatal = client.fatal_error if client is not None and not connection.up else None
        if client is not None and fatal is not None:
            self._on_fatal(client, fatal)  # a failed reconnect stopped the link without an event
        now = time.monotonic()
        rejection = self.rejection
        if rejection.forbidden_until and now >= rejection.forbidden_until:
            rejection.forbidden_until = 0.0
            connection.restart()
        if connection.client is None and now >= connection.connect_at and not rejection.forbidden_until:
            connection.connect()
        if connection.up and self._resolved is not None and now >= self._next_check:
            self._need_reconcile = True
        if (self._need_reconcile and connection.up and not rejection.forbidden_until
                and now >= self._reconcile_at):
            self._reconcile()
        resolved = self._resolved
        if (resolved is not None and self.probe.wanted() and not self._need_reconcile
                and time.monotonic() >= self.probe.due_at and self._gate_open(resolved)
                and connection.client is not None):
            self.probe.send(connection.client, resolved,
                            lambda client, checked, done: self._inbox.put(("probe", client, checked, done)))
        exhausted = False
        if resolved is not None and self._gate_open(resolved) and time.monotonic() >= self._retry_at:
            exhausted = self._send(resolved)
        self._flush()
        if (exhausted and changes == self._queue_changes and self._ledger.settled
                and not self._backlog.again_count):
            self._drained.set()
        else:
            self._drained.clear()

    # -- connection ----------------------------------------------------------------------------
    def _on_event(self, client: AgentClient, event: ConnectionEvent) -> None:
        if client is not self._connection.client:
            return
        if event.up:
            self._connected_since = time.time()
            self._set_problem("")
            self.rejection.connected()
            self._mapping_for(client.client_id)  # read on every up: re-provisioning changes it
            self._need_reconcile = True
            return
        self._connected_since = None
        self._resolved = None
        self._need_reconcile = True
        if event.error is not None and event.error.kind in FATAL_KINDS:
            self._on_fatal(client, event.error)

    def _mapping_for(self, client_id: str) -> InventoryMapping:
        """The mapping of ``client_id``, switched to when the client changed."""
        if self._mapping is None or self._mapping.client_id != client_id:
            if self._mapping is not None:
                log.warning("client id changed from %s to %s: reconciling everything under the new "
                            "client", self._mapping.client_id, client_id)
            self._mapping = InventoryMapping(self.bridge.state_dir, client_id)
        return self._mapping

    def _on_fatal(self, client: AgentClient, error: AgentConnectionError) -> None:
        """The client's link stopped for good (``error.kind`` in `FATAL_KINDS`): dropped
        (`AgentConnection.drop` says what next), the inventory void."""
        self._connected_since = None
        self._forget_inventory()
        self._connection.drop(client, error)

    def _forget_inventory(self) -> None:
        """The verified inventory no longer holds (another connection or client): the gate
        closes until a reconciliation."""
        self._resolved = None
        self._need_reconcile = True

    def _connection_problem(self, text: str, silent: bool) -> None:
        if silent:   # (said in the log already, once)
            self._problem = text
        else:
            self._set_problem(text)

    def _set_problem(self, text: str) -> None:
        if text and text != self._problem:
            log.warning("%s", text)
        self._problem = text

    # -- inventory ------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        client = self._connection.client
        if client is None or self._mapping is None:
            return
        snapshot = self._connection.snapshot()
        generation = snapshot.generation
        # the client's id, not the last "up" message's: a reconnect under new credentials bumps
        # the generation before its "up" reaches the inbox, and ids of the new client must never
        # go into the old client's mapping
        client_id = client.client_id
        if not client_id:
            return
        mapping = self._mapping_for(client_id)
        self._need_reconcile = False
        try:
            queued = self._queued_identities()
            resolved = Reconciler(client, mapping).reconcile(self._specs, queued, generation)
        except ReconcileAborted as exc:
            delay = next(self._reconcile_delays)
            log.info("inventory reconciliation aborted (%s): retried in %.1f s", exc, delay)
            self._need_reconcile = True
            self._reconcile_at = time.monotonic() + delay
            return
        except AgentReplyError as exc:
            if int(exc.code) == ErrorCode.ForbiddendAccess:
                self._need_reconcile = True
                self._connection.rejected(f"agent error 18 while reconciling: {exc.agent_message}")
                return
            self._reconcile_failed(f"the agent refused a request of the inventory reconciliation: {exc}")
            return
        except OSError as exc:  # the mapping cannot be written: full disk, read-only state dir
            self._reconcile_failed(f"inventory mapping not written: {exc}")
            return
        if not self._connection.unchanged(snapshot):
            log.info("connection changed during the inventory reconciliation: discarded")
            self._need_reconcile = True
            return
        self.reconciliations += 1
        self._reconcile_delays = self._retry_backoff.delays()
        if self._problem.startswith(RECONCILE_PROBLEM_PREFIXES):
            self._set_problem("")
        self._resolved = resolved
        self._next_check = time.monotonic() + self.bridge.inventory_check_s
        self.probe.listed(time.monotonic())
        self._backlog.rewind()

    def _on_probe(self, client: AgentClient, resolved: ResolvedInventory, future: Future[Reply]) -> None:
        current = client is self._connection.client and resolved is self._resolved
        lost = self.probe.answered(resolved, future, current=current)
        if not lost:
            return
        ledger = self._ledger
        ledger.sent_to_lost |= {sid for sid, (sample, _) in ledger.in_flight.items() if sample.sensor in lost}
        self._resolved = None  # the gate closes until the inventory is reconciled again
        self._need_reconcile = True
        self._reconcile_at = 0.0

    def _reconcile_failed(self, why: str) -> None:
        """A reconciliation failed in a way waiting may cure (an agent that refuses a request,
        a mapping that cannot be written): said once, retried later with backoff."""
        delay = next(self._reconcile_delays)
        self._set_problem(f"{why}; retried in {delay:.1f} s and further")
        self._need_reconcile = True
        self._reconcile_at = time.monotonic() + delay

    def _queued_identities(self) -> dict[str, set[tuple[str, str]]]:
        """Metric identities of queued samples that the current specs do not have (removed
        sensors, metrics whose unit changed): verified but never created."""
        out: dict[str, set[tuple[str, str]]] = {}
        for sensor, layouts in self.queue.queued_layouts().items():
            spec = self._specs.get(sensor)
            current = {m.identity for m in spec.metrics} if spec else set()
            extra = {identity for layout in layouts for identity in layout} - current
            if extra or spec is None:
                out[sensor] = extra
        return out

    # -- sending --------------------------------------------------------------------------------
    def _send(self, resolved: ResolvedInventory) -> bool:
        """Fill the window, samples of one sensor in as few pushes as `Push` allows; True when
        the queue had nothing more to send."""
        client = self._connection.client
        if client is None:
            return False
        if len(self._ledger.in_flight) > self._window // 2:
            return False  # wait for half the window: what frees up piecemeal would go piecemeal
        with client.corked():  # the pushes of this turn go out in one write
            return self._fill(client, resolved)

    def _fill(self, client: AgentClient, resolved: ResolvedInventory) -> bool:
        """`_send`'s loop: pushes for the window's free places, the ones being filled sent last."""
        filling: dict[str, Push] = {}  # sensor id → the push being filled
        ledger = self._ledger
        try:
            while len(ledger.in_flight) < self._window:
                if self._retry_at > time.monotonic():
                    return False  # a push failed to go out (`_push`): its samples wait for the backoff
                sample = self._backlog.next(ledger.taken_ids)
                if sample is None:
                    return True
                target = self._addresses.address(sample, resolved, self._specs)
                if isinstance(target, str):
                    # an id may be missing only because the inventory is older than the sample (a
                    # sensor just added): dead letter only once a later reconciliation has no id
                    seen_at = ledger.missing_id_at.get(sample.id)
                    if seen_at is not None and self.reconciliations > seen_at:
                        del ledger.missing_id_at[sample.id]
                        self._bury(sample, target, NO_ID)
                        continue
                    ledger.missing_id_at.setdefault(sample.id, self.reconciliations)
                    self._backlog.again(sample)
                    self._need_reconcile = True
                    return False
                if ledger.missing_id_at:
                    ledger.missing_id_at.pop(sample.id, None)  # its ids are known now
                sensor_id, values = target
                if sample.id in ledger.alone:
                    single = Push(sensor_id, next(self._push_numbers))
                    single.add(sample, values)
                    ledger.carry(sample, single.number)
                    self._push(client, single)
                    continue
                open_push = filling.get(sensor_id)
                if open_push is None or not open_push.fits(values):
                    if open_push is not None:
                        self._push(client, open_push)
                    open_push = filling[sensor_id] = Push(sensor_id, next(self._push_numbers))
                open_push.add(sample, values)
                ledger.carry(sample, open_push.number)
            return False
        finally:
            for push in filling.values():
                self._push(client, push)

    def _push(self, client: AgentClient, push: Push) -> None:
        """Send ``push`` (its samples are in flight). A value the client refuses (NaN) buries its
        sample; a push of several that cannot be sent (such a value, or a body over
        `MAX_PUSH_BYTES`) goes again sample by sample."""
        values, timestamp_ms = push.body()
        try:
            payload = encode_push(values, timestamp_ms)
            if len(push.samples) > 1 and len(payload) > MAX_PUSH_BYTES:
                raise ValueError(f"{len(payload)} bytes")
            future = client.request_async(Op.PUSH, payload, sensor_id=push.sensor_id)
        except ValueError as exc:
            if len(push.samples) == 1:
                del self._ledger.in_flight[push.samples[0].id]
                self._bury(push.samples[0], f"{VALUE_REFUSED}: {exc}", VALUE_REFUSED)
                return
            for sample in push.samples:  # each alone: the culprit alone is refused
                del self._ledger.in_flight[sample.id]
                self._ledger.alone.add(sample.id)
                self._backlog.again(sample)
            return
        except Exception as exc:  # a bug of ours: its samples must not stay in flight for ever
            what = f"{type(exc).__name__}: {exc}"
            if what != self._push_error:  # once per kind, not at every retry
                self._push_error = what
                log.exception("a push of %d sample(s) could not be sent", len(push.samples))
            for sample in push.samples:
                del self._ledger.in_flight[sample.id]
                self._transient(sample, f"not sent: {exc}")
            return
        self.pushes_sent += 1
        self._push_error = ""
        number, ids = push.number, tuple(sample.id for sample in push.samples)
        future.add_done_callback(lambda done: self._push_done(number, ids, client, done))

    def _on_result(self, number: int, sample_ids: tuple[int, ...], client: AgentClient,
                   future: Future[Reply]) -> None:
        """The answer to push ``number``, for each of its samples still in flight with it."""
        samples = self._ledger.answered(number, sample_ids)
        if not samples:
            return
        error = future.exception()
        outcome = classify(error) if error is not None and len(samples) > 1 else None
        if outcome is Outcome.DEAD:
            for sample in samples:  # which one the agent refused is unknown: each alone
                self._ledger.sent_to_lost.discard(sample.id)
                self._ledger.alone.add(sample.id)
                self._requeue(sample)
            return
        for sample in samples:
            self._settle(sample, client, error)
        if outcome is Outcome.RECONCILE:  # an unknown id: each alone next time, so that only the
            self._ledger.alone.update(sample.id for sample in samples)  # culprit runs out of retries

    def _settle(self, sample: QueuedSample, client: AgentClient, error: BaseException | None) -> None:
        """One sample's push was answered: ``error`` None (acknowledged) or why not."""
        sample_id, ledger = sample.id, self._ledger
        ledger.alone.discard(sample_id)
        if sample_id in ledger.sent_to_lost:
            ledger.sent_to_lost.discard(sample_id)
            if error is None:  # stored under the lost id: again, once the inventory is reconciled
                self._requeue(sample)
                return
        if error is None:
            ledger.acknowledged(sample_id)
            self.rejection.accepted()
            self.pushed += 1
            self.pushed_by_sensor[sample.sensor] = self.pushed_by_sensor.get(sample.sensor, 0) + 1
            self.probe.acknowledged(sample.sensor)
            self._last_ack = time.time()
            self._retry_delays = self._retry_backoff.delays()
            return
        outcome = classify(error)
        if outcome is Outcome.DEAD:
            assert isinstance(error, AgentReplyError)
            self._bury(sample, str(error), f"agent error {int(error.code)} {error.code_name}")
        elif outcome is Outcome.RECONCILE:
            hits = ledger.unknown_id_hits.get(sample_id, 0) + 1
            ledger.unknown_id_hits[sample_id] = hits
            if hits > MAX_UNKNOWN_ID_RETRIES:
                assert isinstance(error, AgentReplyError)
                self._bury(sample, f"{error} (still after {hits - 1} reconciliations)",
                           f"agent error {int(error.code)} {error.code_name}")
                return
            self._requeue(sample)
            self._resolved = None  # the gate closes until the inventory is reconciled again
            self._need_reconcile = True
        elif outcome is Outcome.FORBIDDEN:
            self._requeue(sample)
            if client is self._connection.client and not self.rejection.forbidden_until:
                self._resolved = None
                self._need_reconcile = True
                message = error.agent_message if isinstance(error, AgentReplyError) else str(error)
                self._connection.rejected(f"agent error 18 ForbiddendAccess: {message}")
        elif outcome is Outcome.RECONNECT:
            self._requeue(sample)
            self._resolved = None  # a connection error from a push clears the gate
            self._need_reconcile = True
        else:
            self._transient(sample, str(error))

    def _bury(self, sample: QueuedSample, reason: str, kind: str) -> None:
        """To the dead letters with the next flush (counted per sensor for the status)."""
        self._ledger.bury(sample, reason, kind)
        self.dead_by_sensor[sample.sensor] = self.dead_by_sensor.get(sample.sensor, 0) + 1

    def _requeue(self, sample: QueuedSample) -> None:
        self._backlog.again(sample)
        self.resent += 1

    def _transient(self, sample: QueuedSample, why: str) -> None:
        self._requeue(sample)
        now = time.monotonic()
        if self._retry_at <= now:
            delay = next(self._retry_delays)
            self._retry_at = now + delay
            log.info("push not acknowledged (%s): retried in %.1f s", why, delay)

    def _flush(self, all_acks: bool = False) -> None:
        """Tell the queue what was buried and acknowledged (see `PushLedger.flush`)."""
        self._ledger.flush(self.queue, self._count_buried, all_acks=all_acks or self._stopping.is_set())

    def _count_buried(self, kind: str) -> None:
        self.dead_by_kind[kind] = self.dead_by_kind.get(kind, 0) + 1

    def _shutdown(self) -> None:
        deadline = time.monotonic() + STOP_DRAIN_S
        while self._ledger.in_flight and (remaining := deadline - time.monotonic()) > 0:
            message = self._inbox.wait(remaining, self._drive)
            if message is None:
                continue
            if message[0] == "result":
                self._on_result(message[1], message[2], message[3], message[4])
        try:
            self._flush(all_acks=True)
        except Exception as exc:  # the queue is closed already: rows are delivered again later
            log.info("acknowledgements not recorded (%s): those samples are sent again next time", exc)
        self._connection.close()
        self._inbox.close()  # a later put (a late notice) only appends: nobody waits any more

        with self._progress:
            self._progress.notify_all()
