"""Where each sample delivery took from the queue stands, until the queue has been told:

    in flight (with the number of the push carrying it) ──answer──▶ acknowledged ──ack()──▶ deleted
                                                         ──refused for good──▶ buried ──dead_letter()──▶ moved
                                                         ──anything else──▶ sent again (`Backlog.again`)

Only the answer of the push that carries a sample now settles it: an older push's answer, for
a sample sent again since, is not its answer.

Beside it, what the send policy remembers per sample: sent ``alone`` (one of a push of several
the agent refused), ``sent_to_lost`` (in flight to a sensor the agent lost: acknowledged under
the old id, so sent again), ``unknown_id_hits`` (15/16 answers in a row) and ``missing_id_at``
(the reconciliation count when its sensor had no id yet).

The queue hears of acknowledged rows in batches (`ACK_BATCH`), at once when nothing is in flight,
and all of them when delivery stops.
"""

from __future__ import annotations

from collections.abc import Callable

from pibridge.bridge.queue import QueuedSample, SampleQueue

#: Acknowledged rows handed to the queue for deletion at once (or when nothing is in flight).
ACK_BATCH = 512


class PushLedger:
    """See the module docstring (delivery thread only)."""

    def __init__(self) -> None:
        self.in_flight: dict[int, tuple[QueuedSample, int]] = {}   # sample id → (sample, push number)
        self.acked: list[int] = []
        self.dead: list[tuple[int, str, str]] = []   # (sample id, reason, kind)
        self.alone: set[int] = set()
        self.sent_to_lost: set[int] = set()
        self.unknown_id_hits: dict[int, int] = {}
        self.missing_id_at: dict[int, int] = {}

    def carry(self, sample: QueuedSample, push_number: int) -> None:
        self.in_flight[sample.id] = (sample, push_number)

    def answered(self, push_number: int, sample_ids: tuple[int, ...]) -> list[QueuedSample]:
        """The samples push ``push_number`` still carries, out of flight."""
        samples = []
        for sample_id in sample_ids:
            entry = self.in_flight.get(sample_id)
            if entry is not None and entry[1] == push_number:
                del self.in_flight[sample_id]
                samples.append(entry[0])
        return samples

    def acknowledged(self, sample_id: int) -> None:
        self.acked.append(sample_id)
        self.unknown_id_hits.pop(sample_id, None)

    def bury(self, sample: QueuedSample, reason: str, kind: str) -> None:
        """To the dead letters with the next `flush`."""
        self.dead.append((sample.id, reason, kind))

    def taken_ids(self) -> set[int]:
        """Rows the queue still holds that are in flight, acknowledged or buried."""
        return set(self.in_flight) | set(self.acked) | {dead[0] for dead in self.dead}

    @property
    def settled(self) -> bool:
        """Nothing in flight and nothing the queue has not been told."""
        return not (self.in_flight or self.acked or self.dead)

    def flush(self, queue: SampleQueue, buried: Callable[[str], None], *, all_acks: bool = False) -> None:
        """Tell ``queue`` of the buried rows (each counted first by its kind: ``buried(kind)``),
        and of the acknowledged ones once there are `ACK_BATCH` of them, nothing is in flight,
        or ``all_acks`` (delivery stops)."""
        if self.dead:
            dead, self.dead = self.dead, []
            for sample_id, _, kind in dead:
                buried(kind)
                self.unknown_id_hits.pop(sample_id, None)
                self.missing_id_at.pop(sample_id, None)
                self.alone.discard(sample_id)
            queue.dead_letter(dead)
        if self.acked and (len(self.acked) >= ACK_BATCH or not self.in_flight or all_acks):
            acked, self.acked = self.acked, []
            queue.ack(acked)
