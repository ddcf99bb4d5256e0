"""Answer faults the emulator injects (``emulator serve --inject-answer-fault KIND:SHARE``): lost,
late, duplicated and reordered answers, to test that a client never credits an answer to the
wrong request (agent-api.md §1; `pibridge.agent.pending` has the argument this exercises).

Faults apply to API answers only (topics under ``/v1.0/`` ending in ``/inbox``), after the batch
was committed (so what is answered was stored), each answer drawing once from the seeded
generator of the core::

    kind     SHARE of the answers    what happens to one answer
    drop     e.g. 0.01               not published (counted)
    dup      e.g. 0.02               published twice in a row
    delay    e.g. 0.005              the answer STREAM stalls: this answer and every later one
                                     are held for DELAY_S (or KIND:SHARE:SECONDS) and then
                                     published in their order (a late answer, as when the agent
                                     hangs; order kept, as MQTT keeps it)
    reorder  e.g. 0.05               the answer changes places with the next answer of the same
                                     batch if that one is of another topic and neither is a ping
                                     answer (the agent orders answers per operation and object;
                                     a ping's echo stays a barrier: `pibridge.agent.pending` (a))
    redeliver e.g. 0.01              the answer is published, then the last 1..REDELIVER_MAX
                                     answers (ping echoes included, ending with this one) are
                                     published again in their order: what an agent re-sends
                                     when its own connection drops before its broker
                                     acknowledged them (`pibridge.agent.pending` (c), R8)

Faults are counted per kind (`AnswerFaults.counts`) and logged at most `LOG_BURST` lines a minute.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pibridge import protocol as p

log = logging.getLogger(__name__)

KINDS = ("drop", "dup", "delay", "reorder", "redeliver")
#: Seconds a ``delay`` fault holds the answer stream unless the option says otherwise.
DELAY_S = 2.0
#: Most answers one ``redeliver`` fault publishes again (an MQTT session's in-flight window is
#: of this order: paho's default max_inflight_messages is 20).
REDELIVER_MAX = 8
#: The answer topics of pings (they stay in place: a ping's echo is a barrier).
_PING_SUFFIX = "/ping/info/inbox"

Message = tuple[str, bytes, int]


@dataclass(frozen=True)
class AnswerFault:
    """``share`` (0..1) of the answers meet fault ``kind``; ``seconds`` is the hold of ``delay``."""

    kind: str
    share: float
    seconds: float = DELAY_S

    @classmethod
    def parse(cls, text: str) -> AnswerFault:
        """``KIND:SHARE`` or ``delay:SHARE:SECONDS``; ValueError with what is wrong."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[0] not in KINDS or (len(parts) == 3 and parts[0] != "delay"):
            raise ValueError(f"expected KIND:SHARE (KIND one of {', '.join(KINDS)}) or delay:SHARE:SECONDS, "
                             f"got {text!r}")
        share = _number(parts[1])
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"SHARE must lie in 0..1, got {parts[1]!r} in {text!r}")
        seconds = _number(parts[2]) if len(parts) == 3 else DELAY_S
        if not 0.0 < seconds <= 3600.0:
            raise ValueError(f"SECONDS must lie in (0, 3600], got {parts[2]!r} in {text!r}")
        return cls(parts[0], share, seconds)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # refused by the range check, which names the text


def is_answer(topic: str) -> bool:
    return topic.startswith(p.API_PREFIX + "/") and topic.endswith("/inbox")


def _is_ping_answer(topic: str) -> bool:
    return topic.endswith(_PING_SUFFIX)


class AnswerFaults:
    """Applies ``faults`` to the answers handed to `publish`; `release` publishes held answers
    whose time has come (the core's channel calls it every loop; `next_release` says when)."""

    def __init__(self, faults: Sequence[AnswerFault], rng: random.Random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if sum(f.share for f in faults) > 1.0:
            raise ValueError("the shares of the answer faults add up to more than 1")
        self.faults = list(faults)
        self.rng = rng
        self.clock = clock
        self.counts = dict.fromkeys(KINDS, 0)
        self._held: list[Message] = []
        self._release_at: float | None = None
        self._recent: deque[Message] = deque(maxlen=REDELIVER_MAX)  # answers published, in order

    def _draw(self) -> AnswerFault | None:
        r = self.rng.random()
        for fault in self.faults:
            if r < fault.share:
                return fault
            r -= fault.share
        return None

    def publish(self, out: Sequence[Message], send: Callable[[str, bytes, int], None]) -> None:
        """Publish ``out`` (one batch's messages, in order) through ``send`` with faults applied."""
        messages = list(out)
        ordered: list[Message] = []
        index = 0
        while index < len(messages):
            message = messages[index]
            index += 1
            if not is_answer(message[0]):
                ordered.append(message)
                continue
            fault = self._draw()
            if fault is None:
                ordered.append(message)
                self._recent.append(message)
            elif fault.kind == "redeliver":
                self.counts["redeliver"] += 1
                ordered.append(message)
                self._recent.append(message)
                copies = list(self._recent)[-self.rng.randint(1, len(self._recent)):]
                ordered += copies
                log.debug("answer fault: %d answers published again", len(copies))
            elif fault.kind == "drop":
                self.counts["drop"] += 1
                log.debug("answer fault: dropped the answer on %s", message[0])
            elif fault.kind == "dup":
                self.counts["dup"] += 1
                ordered += [message, message]
                self._recent.append(message)
            elif fault.kind == "delay":
                self.counts["delay"] += 1
                if self._release_at is None:  # what came before goes out; from here on, all waits
                    self._flush(ordered, send)
                    ordered = []
                    self._release_at = self.clock() + fault.seconds
                ordered.append(message)
                self._recent.append(message)
            else:  # reorder: swap with the next message if that is another key's answer, no ping
                following = messages[index] if index < len(messages) else None
                if (following is not None and is_answer(following[0]) and following[0] != message[0]
                        and not _is_ping_answer(message[0]) and not _is_ping_answer(following[0])):
                    self.counts["reorder"] += 1
                    ordered += [following, message]
                    self._recent += [following, message]
                    index += 1
                else:
                    ordered.append(message)
                    self._recent.append(message)
        self._flush(ordered, send)

    def _flush(self, messages: list[Message], send: Callable[[str, bytes, int], None]) -> None:
        if self._release_at is not None:  # the stream is stalled: keep the order behind the held ones
            self._held += messages
            return
        for topic, payload, qos in messages:
            send(topic, payload, qos)

    def next_release(self) -> float | None:
        """Monotonic time at which held answers go out (None: nothing held)."""
        return self._release_at

    def release(self, send: Callable[[str, bytes, int], None]) -> None:
        """Publish the held answers if their time has come."""
        if self._release_at is None or self.clock() < self._release_at:
            return
        held, self._held, self._release_at = self._held, [], None
        for topic, payload, qos in held:
            send(topic, payload, qos)
