"""Delivery's bookkeeping on its own, over a real SQLite queue: the order samples go in
(`Backlog`) and where each one taken stands (`PushLedger`). The delivery tests drive both
through whole outages against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pibridge.bridge.backlog import HANDED_MAX_BATCHES, Backlog
from pibridge.bridge.ledger import ACK_BATCH, PushLedger
from pibridge.bridge.model import TakenSample
from pibridge.bridge.queue import QueueClosed, SampleQueue

T0_MS = 1_700_000_000_000
BOOT = "boot-parts"


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SampleQueue]:
    q = SampleQueue(tmp_path / "queue.db", boot_id=BOOT)
    yield q
    q.close()


def put(queue: SampleQueue, *offsets: int) -> None:
    queue.put_many(TakenSample("Air", {"t": float(i)}, T0_MS + i, float(i), BOOT) for i in offsets)


def ids(backlog: Backlog, taken: set[int] | None = None) -> list[int]:
    out = []
    while (sample := backlog.next(lambda: taken or set())) is not None:
        out.append(sample.id)
    return out


def test_samples_sent_again_go_first_then_the_rows_after_the_cursor_skipping_taken_ones(
        queue: SampleQueue) -> None:
    backlog = Backlog(queue)
    put(queue, 1, 2, 3, 4)
    first = backlog.next(set)
    assert first is not None and first.id == 1
    backlog.again(first)
    assert backlog.again_count == 1 and backlog.again_ids() == {1}
    assert ids(backlog) == [1, 2, 3, 4]
    backlog.rewind()                                  # from the start, skipping what is held
    assert ids(backlog, taken={2, 3}) == [1, 4]


def test_rows_committed_after_catching_up_come_from_memory_and_a_flood_from_disk(
        queue: SampleQueue) -> None:
    backlog = Backlog(queue)
    queue.add_batch_listener(backlog.on_committed)
    put(queue, 1)
    assert ids(backlog) == [1]                        # read from disk; caught up now
    put(queue, 2, 3)
    backlog._queue = None  # type: ignore[assignment]   # a disk read now would fail: memory only
    assert ids(backlog) == [2, 3]
    backlog._queue = queue
    for i in range(HANDED_MAX_BATCHES + 1):           # fallen behind: handed batches dropped,
        put(queue, 10 + i)                            # the disk has them
    assert ids(backlog) == list(range(4, 4 + HANDED_MAX_BATCHES + 1))


def test_only_the_push_carrying_a_sample_settles_it_and_the_queue_hears_in_batches(
        queue: SampleQueue) -> None:
    put(queue, 1, 2, 3)
    one, two, three = queue.fetch(0, 10)
    ledger = PushLedger()
    ledger.carry(one, 1)
    ledger.carry(two, 1)
    ledger.carry(one, 2)                              # sent again, now with push 2
    assert ledger.answered(1, (one.id, two.id)) == [two]
    ledger.acknowledged(two.id)
    ledger.bury(three, "no id", "no agent id")
    assert ledger.taken_ids() == {one.id, two.id, three.id} and not ledger.settled
    kinds: list[str] = []
    ledger.flush(queue, kinds.append)                 # one still in flight: the ack waits
    assert kinds == ["no agent id"] and ledger.acked == [two.id]
    assert [d["kind"] for d in queue.dead_letters()] == ["no agent id"]
    ledger.flush(queue, kinds.append, all_acks=True)
    assert ledger.acked == [] and [r.id for r in queue.fetch(0, 10)] == [one.id]
    assert ledger.answered(2, (one.id,)) == [one] and ledger.settled
    assert ACK_BATCH > 1


def test_buried_rows_are_counted_even_when_the_queue_then_fails(queue: SampleQueue) -> None:
    put(queue, 1)
    (row,) = queue.fetch(0, 10)
    ledger = PushLedger()
    ledger.bury(row, "refused", "agent error 7")
    queue.close()
    kinds: list[str] = []
    with pytest.raises(QueueClosed):
        ledger.flush(queue, kinds.append)
    assert kinds == ["agent error 7"]
