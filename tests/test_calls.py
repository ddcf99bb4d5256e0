"""One loop turn's driver calls as one job (`pibridge.bridge.calls`): the order they run in,
a start's collect run inline when it needs no wait, one message per batch, a stuck call's batch
split so the calls behind it run elsewhere, and the pool's wake-up time instead of polling."""

from __future__ import annotations

import threading
from typing import Any

from pibridge.bridge.calls import (
    COLLECT,
    GROUP_START,
    START,
    CallBatch,
    DriverCall,
    WorkerPool,
    needs_no_wait,
)

WAIT_S = 10.0


def stamp() -> tuple[float, float, bool]:
    return 0.0, 0.0, True


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_starts_run_first_and_a_start_without_a_wait_is_collected_inline() -> None:
    order: list[str] = []

    def step(name: str, result: Any = None) -> Any:
        def call() -> Any:
            order.append(name)
            return result
        return call

    calls = [DriverCall("a", 1, COLLECT, step("collect a", {"v": 1})),
             DriverCall("b", 2, START, step("start b", 0.0), collect=step("collect b", {"v": 2})),
             DriverCall("c", 3, START, step("start c", 0.25), collect=step("collect c")),
             DriverCall("d", 4, GROUP_START, step("group d", 0.5), members=[("d", 4), ("e", 5)])]
    batch = CallBatch(calls)
    posted: list[CallBatch] = []
    batch.run(stamp, Ticks(), posted.append)
    assert order == ["start b", "start c", "group d", "collect a", "collect b"]
    assert posted == [batch] and batch.finished
    done = batch.take_done()
    assert [(c.owner, c.kind, c.inline) for c in done] == [
        ("b", START, False), ("c", START, False), ("d", GROUP_START, False), ("a", COLLECT, False),
        ("b", COLLECT, True)]
    start_b, inline_b = done[0], done[4]
    assert start_b.collect_follows and inline_b.after is start_b and inline_b.result == {"v": 2}
    assert not done[1].collect_follows            # 0.25 s to wait: collected by a timer later
    assert batch.take_done() == [] and batch.check_at() is None


def test_a_failed_start_has_no_inline_collect() -> None:
    def fail() -> float:
        raise OSError("bus")

    collected: list[int] = []
    batch = CallBatch([DriverCall("a", 1, START, fail, collect=lambda: collected.append(1))])
    batch.run(stamp, Ticks(), lambda _: None)
    (call,) = batch.take_done()
    assert not call.ok and isinstance(call.result, OSError) and not call.collect_follows
    assert collected == []


def test_needs_no_wait() -> None:
    assert needs_no_wait(0) and needs_no_wait(-1.0) and needs_no_wait(None) and needs_no_wait(float("nan"))
    assert needs_no_wait(float("inf")) and not needs_no_wait(0.001) and not needs_no_wait(2)


def test_a_stuck_call_splits_its_batch_and_hands_over_what_it_finished() -> None:
    ticks = Ticks()
    release, entered = threading.Event(), threading.Event()

    def hang() -> float:
        entered.set()
        release.wait(WAIT_S)
        return 0.5

    batch = CallBatch([DriverCall("fine", 1, START, lambda: 0.5),
                       DriverCall("hung", 2, START, hang),
                       DriverCall("after", 3, START, lambda: 0.5)])
    batch.sent(ticks.now, 0.25)       # (binary fractions: the clock's sums are exact)
    assert batch.check_at() == ticks.now + 0.25
    posted = threading.Event()
    worker = threading.Thread(target=batch.run, args=(stamp, ticks, lambda _: posted.set()))
    worker.start()
    assert entered.wait(WAIT_S)
    assert batch.check_at() == ticks.now + 0.25                 # stuck_s after its running call began
    assert batch.split_if_stuck(ticks.now + 0.125) is None       # not stuck yet: nothing moves
    ticks.now += 0.25

    rest = batch.split_if_stuck(ticks.now)
    assert rest is not None and [c.owner for c in rest] == ["after"]
    assert [c.owner for c in batch.take_done()] == ["fine"]       # handed over without waiting
    assert batch.check_at() is None                              # this call is not looked at again
    assert batch.split_if_stuck(ticks.now + 5) is None
    release.set()
    assert posted.wait(WAIT_S)
    worker.join(WAIT_S)
    assert [c.owner for c in batch.take_done()] == ["hung"]       # the late one comes with the message
    assert all(c.owner != "after" for c in batch.calls[batch.next_index:])


def test_calls_that_are_each_not_stuck_do_not_add_up_behind_each_other() -> None:
    """Once a batch has run ``stuck_s``, the calls it has not begun go to another thread, even
    though its running call is not stuck yet: their sensors' deadlines run from the turn."""
    ticks = Ticks()
    release, entered = threading.Event(), threading.Event()

    def slow() -> float:
        ticks.now += 0.125
        return 0.5

    def slow_again() -> float:
        entered.set()
        release.wait(WAIT_S)
        return 0.5

    batch = CallBatch([DriverCall("slow", 1, START, slow), DriverCall("slow again", 2, START, slow_again),
                       DriverCall("after", 3, START, lambda: 0.5)])
    began = ticks.now
    batch.sent(ticks.now, 0.25)
    worker = threading.Thread(target=batch.run, args=(stamp, ticks, lambda _: None))
    worker.start()
    try:
        assert entered.wait(WAIT_S)
        assert batch.check_at() == began + 0.25                      # the batch's budget, not the call's
        assert batch.split_if_stuck(began + 0.125) is None
        rest = batch.split_if_stuck(began + 0.25)                    # "slow again" ran 0.125 s only
        assert rest is not None and [c.owner for c in rest] == ["after"]
        assert [c.owner for c in batch.take_done()] == ["slow"]
    finally:
        release.set()
        worker.join(WAIT_S)


def test_the_pool_says_when_a_waiting_job_may_need_a_thread() -> None:
    pool = WorkerPool(core=1, stuck_s=WAIT_S)
    assert pool.check_in() is None                 # nothing waits: no wake-up needed
    release, busy = threading.Event(), threading.Event()
    def hold() -> None:
        busy.set()
        release.wait(WAIT_S)

    pool.submit(hold)
    assert busy.wait(WAIT_S)
    ran = threading.Event()
    pool.submit(ran.set)                           # waits behind the busy thread
    due = pool.check_in()
    assert due is not None and 0.0 < due <= WAIT_S
    release.set()
    assert ran.wait(WAIT_S)
    pool.close()
