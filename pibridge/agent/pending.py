"""Outstanding requests and how answers are matched to them (agent-api.md §1).

The agent has no correlation ids: it answers on fixed topics derived from the request topic, in
order per operation and object. A wrong match is a false acknowledgement, i.e. data loss, so the
matching is built so that every ambiguity ends in a resend, never in crediting an answer to a
request it does not belong to.

The rules (one `PendingTable` per client; everything of a connection dies with it)::

    +----+-------------------------------------------------------------------------------------+
    | R1 | At most ONE request per key (operation, sensor id, metric id) is on the wire; later |
    |    | ones wait in the key's queue (state QUEUED) and are published when it is their turn.|
    | R2 | After an answer on a key, the key is FENCED: its next request is published only     |
    |    | once a barrier (a ping with a unique token, published AFTER that answer arrived)    |
    |    | has been echoed. One barrier serves every key fenced before it was sent.            |
    | R3 | Pings are matched by their token (their answer echoes it), never by position; a     |
    |    | ping error (no token) fails the oldest ping, which at worst costs a retry.          |
    | R4 | A timeout means the matching can no longer be trusted: the CONNECTION is dropped,   |
    |    | every outstanding request fails (connection error) and is resent on a new one.      |
    | R5 | A new connection is usable only after its first barrier was echoed (the session     |
    |    | barrier); answers arriving before it find nothing waiting and are ignored, and what |
    |    | an earlier connection's thread still delivers is never looked at.                   |
    | R6 | An answer for a key with nothing on the wire is ignored (counted).                  |
    | R7 | An answer is only PROVISIONALLY its request's: the request settles (success or      |
    |    | error) once a barrier published AFTER that answer arrived has been echoed. Pings    |
    |    | are the exception: their token is their proof.                                     |
    | R8 | An echo of a token that was already echoed on this connection is a REPLAY: the      |
    |    | agent re-sent answers it had given. The connection is dropped (R4) and everything   |
    |    | not yet settled (R7) is resent on a new one.                                        |
    +----+-------------------------------------------------------------------------------------+

What can happen to answers, and why no request is ever credited with another one's answer.
Assumptions (the emulator holds them; they are what MQTT and agent-api.md §1 give): (a) the agent
handles requests in the order it receives them and publishes each answer after the request
took effect; (b) the broker delivers the agent's messages to one connection in the order they
were published (our subscriptions are QoS 0: a message may be lost, never doubled by the
broker); (c) an agent that re-sends answers (QoS 1, after its own connection dropped before its
broker acknowledged them) re-sends them in their original order and before anything it
publishes afterwards (MQTT 3.1.1 §4.6), and since the broker acknowledges in order, a re-sent
answer is followed by every later message of that connection that was not acknowledged either:
the echo of a barrier published before the re-sent answer arrived comes again behind it;
(d) one MQTT client id per connection, never shared by two processes (agent-api.md §1). So
on one connection, everything published in answer to requests that reached the agent before a
ping arrives before that ping's echo.

- LOST answer (or lost request): its key's request gets no answer (R1: nothing later on that key
  can take it) → timeout → R4: resent on a new connection. Requests of other keys are unaffected
  until the drop, then resent as well; values are keyed by (metric, timestamp), so a resend of a
  stored sample replaces, never duplicates.
- LATE answer (agent paused, answer delayed past the timeout): R4 dropped the connection at the
  timeout; on the next one, R5: the late answer precedes the session barrier's echo (a), (b), so it
  arrives while nothing is on the wire and is ignored (R6). If it is later still, the barrier
  itself times out and the next connection tries again: delay costs reconnections, never a match.
- DUPLICATED answer, re-sent by the agent before it published anything later (c): it arrives
  before the echo of any barrier published after the original arrived; until that echo the key
  has nothing on the wire (R2), so the copy is ignored (R6).
- RE-SENT answer arriving AFTER the echo that released its key (the agent's connection dropped
  after it published answer A1 and barrier echo E, both reached us, neither was acknowledged by
  its broker, so it re-sends A1 and E): E released the key, its next request R2 went out, and
  the copy of A1 is taken as R2's answer (R6 cannot tell). It is only provisional (R7): R2
  settles on the echo of a barrier published after the copy arrived, and the copy of E comes
  before that echo (c), is recognised as a replay (R8) and drops the connection: R2 is resent.
  A copy of an answer of an earlier connection: as a late answer (R5).
- REORDERED answers: across keys harmless (one FIFO per key, R1 keeps one answer due per key);
  within a key there is only one answer due at a time (R1) and earlier answers of that key are
  behind a barrier (R2); across connections: R5.
- An answer nobody asked for (another process of the same client, garbage): with nothing on the
  wire it is ignored; otherwise it answers the one request on the wire of that key, as the agent's
  own answer would (a garbled one fails it with `ProtocolError`, retried by the caller).

What is left (stated, not closed): a double fault, the agent re-sending its answers AND the
broker losing exactly the replayed barrier echo while passing the re-sent answer before it,
would let R7's next barrier confirm a copy. The emulator's `redeliver` fault re-sends answers
as (c) says; the soak in tests/test_answer_matching.py runs it with every other fault.

So a success is credited to a request only when it is the first answer on its key after that
request was published with nothing else of that key outstanding, every earlier answer of that
key fenced off, and a later barrier echoed with no replay before it: the agent's answer to THAT
request. Everything ambiguous times out (R4) or is replayed (R8), and is resent. The cost: one
push per sensor at a time plus one barrier ping per round of answers, which also confirms that
round (pipelining stays across keys); a timeout or a replay costs a reconnection (within the
reconnect backoff).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from pibridge.protocol import Op

log = logging.getLogger(__name__)

#: Settled entries the deadline heap may hold before it is worth compacting.
COMPACT_MIN_SETTLED = 1024

#: Echoed ping tokens remembered per connection to recognise a replay (R8). A replay comes right
#: behind the answers the agent re-sends, which are its last unacknowledged ones, so a few
#: thousand cover any window the agent's MQTT session can hold in flight.
ECHOES_REMEMBERED = 4096

FifoKey = tuple[Op, str, str]
"""(operation, sensor id or "", metric id or "")."""


class RequestState(enum.Enum):
    QUEUED = "queued"  # waits for its key's turn (R1) or for a barrier (R2); not published yet
    WAITING = "waiting"  # published, its answer is due
    ANSWERED = "answered"
    TIMED_OUT = "timed out"  # the connection is dropped (R4)
    FAILED = "failed"  # connection gone, or the publish failed


@dataclass(eq=False)
class PendingRequest:
    """One request. ``topic``/``payload`` are published when its turn comes; ``check`` validates
    a success reply (e.g. the ping echo); ``token`` is a ping's token; ``barrier`` > 0 marks the
    client's own barrier ping number ``barrier`` (R2, R5)."""

    key: FifoKey
    future: Future[Any]
    timeout_s: float
    description: str
    check: Callable[[Any], None] | None = None
    topic: str = ""
    payload: bytes = b""
    token: str = ""
    barrier: int = 0
    state: RequestState = RequestState.QUEUED
    deadline: float = math.inf  # time.monotonic() seconds, set when published
    seq: int = field(default=0)
    #: R7: the answer taken as this request's (a reply, or the error to raise), settled once
    #: barrier number ``confirm_by`` is echoed
    outcome: Any = None
    confirm_by: int = 0
    #: the table's `generation` when published: a timeout of an earlier connection's request
    #: must not drop the connection that replaced it
    generation: int = 0


@dataclass
class Decision:
    """What the table decided about one answer: ``request`` it belongs to (None: ignored, R6),
    ``publish`` now (in order), ``confirmed`` requests whose answers are now proven theirs (R7:
    settle each with its ``outcome``), ``unproven`` ones that can no longer be (fail them: resent),
    ``replayed`` (R8: drop the connection)."""

    request: PendingRequest | None = None
    publish: list[PendingRequest] = field(default_factory=list)
    confirmed: list[PendingRequest] = field(default_factory=list)
    unproven: list[PendingRequest] = field(default_factory=list)
    replayed: bool = False


def settle(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless the caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        log.debug("answer for a cancelled request dropped")


BarrierFactory = Callable[[int], PendingRequest]
"""Makes barrier ping number n (a `PendingRequest` with ``barrier=n`` and a fresh token)."""


class PendingTable:
    """All outstanding requests of one connection under the rules of the module docstring.
    Thread-safe. Methods return the requests to publish NOW, in that order (state WAITING,
    deadline set); the caller publishes them holding a lock of its own that also covers the call,
    so the wire order is the order decided here."""

    def __init__(self, make_barrier: BarrierFactory) -> None:
        self._make_barrier = make_barrier
        self._fifos: dict[FifoKey, deque[PendingRequest]] = {}
        self._pings: deque[PendingRequest] = deque()
        self._fences: dict[FifoKey, int] = {}  # key → barriers sent when its last answer came
        self._blocked: set[FifoKey] = set()  # fenced keys with a request waiting for the barrier
        self._barriers_sent = 0
        self._barrier: PendingRequest | None = None  # the barrier on the wire (one at a time)
        self._confirming: deque[PendingRequest] = deque()  # answered, awaiting a barrier (R7)
        self._echoed: dict[str, None] = {}  # tokens echoed on this connection, oldest first (R8)
        self._deadlines: list[tuple[float, int, PendingRequest]] = []
        self._settled_in_heap = 0  # deadline entries of requests no longer waiting
        self._seq = itertools.count()
        self.ignored = 0  # answers with nothing on the wire for their key (R6)
        self.barrier_errors = 0  # barriers answered with an error (not 18) in a row
        self.replays = 0  # echoes of tokens already echoed (R8)
        self.generation = 0  # connections the table has served (`take_all` ends one)
        self.lock = threading.Lock()
        self.deadline_added = threading.Condition(self.lock)

    # -- adding ------------------------------------------------------------------------------------
    def add(self, request: PendingRequest, now: float | None = None) -> list[PendingRequest]:
        """Queue ``request``; returns what to publish now (``request`` itself when its key is free)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            request.seq = next(self._seq)
            if request.key[0] is Op.PING:
                self._pings.append(request)
                return [self._sent(request, now)]
            fifo = self._fifos.get(request.key)
            if fifo is None:
                fifo = self._fifos[request.key] = deque()
            fifo.append(request)
            if len(fifo) > 1:
                return []  # R1: its turn comes with the answer of the one before
            if request.key in self._fences:
                self._blocked.add(request.key)  # R2
                return self._ensure_barrier(now)
            return [self._sent(request, now)]

    def session_barrier(self, now: float | None = None) -> PendingRequest:
        """Start a barrier now (R5: a new connection is usable once it is echoed); returns it
        (already WAITING: publish it)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            return self._new_barrier(now)

    def _sent(self, request: PendingRequest, now: float) -> PendingRequest:
        request.state = RequestState.WAITING
        request.generation = self.generation
        request.deadline = now + request.timeout_s
        self._compact_deadlines()
        heapq.heappush(self._deadlines, (request.deadline, request.seq, request))
        if self._deadlines[0][2] is request:
            self.deadline_added.notify()
        return request

    def _new_barrier(self, now: float) -> PendingRequest:
        self._barriers_sent += 1
        barrier = self._make_barrier(self._barriers_sent)
        barrier.seq = next(self._seq)
        self._pings.append(barrier)
        self._barrier = barrier
        return self._sent(barrier, now)

    def _ensure_barrier(self, now: float) -> list[PendingRequest]:
        """A barrier on the wire whenever a key waits for one (R2) or an answer for one (R7)."""
        if self._barrier is not None or not (self._blocked or self._confirming):
            return []
        return [self._new_barrier(now)]

    # -- answers ---------------------------------------------------------------------------------
    def answered(self, key: FifoKey, now: float | None = None) -> Decision:
        """An answer (success or error) on ``key``: the request it belongs to (None: R6, ignore it),
        provisionally (R7: the caller stores its ``outcome``; it settles with a later barrier's
        echo), and what to publish now (a barrier)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            fifo = self._fifos.get(key)
            if not fifo or fifo[0].state is not RequestState.WAITING:
                self.ignored += 1
                return Decision()
            request = fifo.popleft()
            self._settle_one(request)
            request.confirm_by = self._barriers_sent + 1  # a barrier sent from now on (R7)
            self._confirming.append(request)
            self._fences[key] = self._barriers_sent  # R2
            if not fifo:
                del self._fifos[key]
            else:
                self._blocked.add(key)
            return Decision(request, self._ensure_barrier(now))

    def ping_answered(self, token: str | None, now: float | None = None, *,
                      refused: bool = False) -> Decision:
        """A ping answer: ``token`` echoed (success), or None (an error answer or an unreadable
        one: the oldest ping takes it, R3). Decides the ping it belongs to (None: ignore), what
        to publish now (requests a barrier's echo released, and the next barrier if needed),
        the answered requests the echo confirms (R7), and whether it was a replay (R8).

        ``refused``: the error is 18 (the agent refuses this client): it releases a barrier like an
        echo, since every answer from now on is an error and none can be a false acknowledgement,
        and confirms the errors waiting for it and a deprovision's success (the refusal is its
        consequence), not other successes: they are given back to be resent, and meet 18.
        `barrier_errors` counts barriers answered with other errors in a row (the caller drops the
        connection past a bound rather than ping for ever)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            request = None
            if token is None:
                if self._pings:
                    request = self._pings.popleft()
            else:
                for candidate in self._pings:
                    if candidate.token == token:
                        request = candidate
                        break
                if request is not None:
                    self._pings.remove(request)
                elif token in self._echoed:
                    self.replays += 1
                    return Decision(replayed=True)
            if request is None:
                self.ignored += 1
                return Decision()
            self._settle_one(request)
            if token is not None:
                self._echoed[token] = None
                if len(self._echoed) > ECHOES_REMEMBERED:
                    del self._echoed[next(iter(self._echoed))]
            decision = Decision(request)
            if request.barrier:
                if self._barrier is request:
                    self._barrier = None
                if token is not None or refused:
                    self.barrier_errors = 0
                    decision.publish = self._release(request.barrier, now)
                    decision.confirmed, decision.unproven = self._confirm(request.barrier,
                                                                          errors_only=token is None)
                else:
                    self.barrier_errors += 1
                decision.publish += self._ensure_barrier(now)  # answered meanwhile, or it failed
            return decision

    def _confirm(self, barrier: int, *,
                 errors_only: bool) -> tuple[list[PendingRequest], list[PendingRequest]]:
        """Barrier number ``barrier`` was echoed: answers that arrived before it was sent are
        their requests' (R7). Returns (confirmed, unproven). ``errors_only`` (an 18 in place of
        the echo): only errors are confirmed; successes are returned unproven (to resend: no
        later barrier will be echoed while the agent refuses this client)."""
        confirmed: list[PendingRequest] = []
        unproven: list[PendingRequest] = []
        while self._confirming and self._confirming[0].confirm_by <= barrier:
            request = self._confirming.popleft()
            if errors_only and not (isinstance(request.outcome, BaseException)
                                    or request.key[0] is Op.DEPROVISION):
                unproven.append(request)
            else:
                confirmed.append(request)
        return confirmed, unproven

    def _release(self, barrier: int, now: float) -> list[PendingRequest]:
        """Barrier number ``barrier`` was echoed: every key answered before it was sent is free."""
        out = []
        for key in [k for k, fence in self._fences.items() if fence < barrier]:
            del self._fences[key]
            if key in self._blocked:
                self._blocked.discard(key)
                fifo = self._fifos.get(key)
                if fifo and fifo[0].state is RequestState.QUEUED:
                    out.append(self._sent(fifo[0], now))
        return out

    def _settle_one(self, request: PendingRequest) -> None:
        request.state = RequestState.ANSWERED
        self._settled_in_heap += 1

    # -- failures --------------------------------------------------------------------------------
    def discard(self, requests: list[PendingRequest]) -> None:
        """Take back requests whose publish failed (the connection is going: `take_all` follows)."""
        with self.lock:
            for request in requests:
                fifo = self._pings if request.key[0] is Op.PING else self._fifos.get(request.key)
                if fifo is not None and request in fifo:
                    fifo.remove(request)
                if self._barrier is request:
                    self._barrier = None
                if request.state is RequestState.WAITING:
                    self._settled_in_heap += 1
                request.state = RequestState.FAILED

    def _compact_deadlines(self) -> None:
        """Drop the deadline entries of settled requests once they are most of the heap.

        Answered requests stay in the heap until their deadline (removing from a heap is O(n));
        at thousands of pushes per second and a 10 s timeout that would keep tens of thousands
        of requests, their futures and replies alive, and the garbage collector would walk them
        all. Rebuilding when over half the heap is settled keeps it within twice the requests
        really waiting, at amortised O(1) per request. Call with `lock` held."""
        heap = self._deadlines
        if self._settled_in_heap < COMPACT_MIN_SETTLED or 2 * self._settled_in_heap < len(heap):
            return
        self._deadlines = [entry for entry in heap if entry[2].state is RequestState.WAITING]
        heapq.heapify(self._deadlines)
        self._settled_in_heap = 0

    def outstanding(self) -> int:
        """Requests queued or on the wire (barriers included)."""
        with self.lock:
            return (sum(len(fifo) for fifo in self._fifos.values()) + len(self._pings)
                    + len(self._confirming))

    def earliest_deadline(self) -> float | None:
        """The earliest deadline of a request still waiting for its answer (entries of settled
        ones at the top are dropped on the way), or None. Call with `lock` held."""
        heap = self._deadlines
        while heap and heap[0][2].state is not RequestState.WAITING:
            heapq.heappop(heap)
            self._settled_in_heap -= 1
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[PendingRequest]:
        """Mark requests on the wire past their deadline as timed out, and return them (the next
        deadline is `earliest_deadline`'s). Call with `lock` held. The caller drops the
        connection (R4), which empties the table (`take_all`)."""
        expired: list[PendingRequest] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, request = heapq.heappop(self._deadlines)
            if request.state is RequestState.WAITING:
                request.state = RequestState.TIMED_OUT
                expired.append(request)
            else:
                self._settled_in_heap -= 1
        return expired

    def take_all(self) -> list[PendingRequest]:
        """Empty the table (connection gone); returns the requests queued, still waiting for an
        answer or for its confirmation (R7), in the order they were added."""
        with self.lock:
            waiting = [r for fifo in self._fifos.values() for r in fifo] + list(self._pings)
            waiting = [r for r in waiting if r.state in (RequestState.WAITING, RequestState.QUEUED)]
            waiting += self._confirming  # answered but not proven theirs (R7): resent as well
            waiting.sort(key=lambda r: r.seq)
            for request in waiting:
                request.state = RequestState.FAILED
            self._fifos.clear()
            self._pings.clear()
            self._fences.clear()
            self._blocked.clear()
            self._barrier = None
            self._confirming.clear()
            self.generation += 1
            self._echoed.clear()  # copies of an earlier connection's echoes are ignored (R5)
            self.barrier_errors = 0
            self._deadlines.clear()
            self._settled_in_heap = 0
            return waiting


class DeadlineWatcher:
    """A daemon thread failing requests of a `PendingTable` with ``make_timeout(request)`` when
    their deadline passes, then calling ``on_expired(requests)`` (the client drops the connection:
    R4)."""

    def __init__(self, table: PendingTable, make_timeout: Callable[[PendingRequest], BaseException],
                 on_expired: Callable[[list[PendingRequest]], None] | None = None,
                 read_first: Callable[[], None] | None = None) -> None:
        self._table = table
        self._make_timeout = make_timeout
        self._on_expired = on_expired
        #: called when a deadline passes, before anything is timed out: a client whose owner
        #: reads the network (``driven``) reads what arrived while that owner was busy elsewhere
        self._read_first = read_first
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agent-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._table.lock:
            self._stopping = True
            self._table.deadline_added.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        table = self._table
        while True:
            with table.lock:
                if self._stopping:
                    return
                due = table.earliest_deadline()
                now = time.monotonic()
                if due is None or due > now:
                    table.deadline_added.wait(None if due is None else due - now)
                    continue
            if self._read_first is not None:
                try:
                    self._read_first()
                except Exception:  # the timeout below must still happen
                    log.exception("reading answers before a timeout failed")
            with table.lock:
                if self._stopping:
                    return
                expired = table.expire(time.monotonic())
                if not expired:
                    continue
            for request in expired:
                try:
                    settle(request.future, error=self._make_timeout(request))
                except Exception:  # a failing done-callback must not stop the watcher
                    log.exception("timeout handling failed for %s", request.description)
            if self._on_expired is not None:
                try:
                    self._on_expired(expired)
                except Exception:
                    log.exception("dropping the connection after a timeout failed")
