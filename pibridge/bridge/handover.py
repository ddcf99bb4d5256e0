"""The samples of one slot go to the outbox together: one batch, one commit, a few pages written
to the card instead of a few per sample.

The timer thread holds each slot's samples here until no read of that slot is still expected to
end soon, at most `HAND_OVER_MAX_S` after the first was taken:

    held: [(sensor, sample), …] ──(no read of the slot still within its read time + slack,
                                   or HAND_OVER_MAX_S passed, or an edge, hook or barrier)──▶ outbox

A read counts when its cycle began no later than the first held sample was taken (a cycle of a
later slot does not) and it is within its declared read time plus `HAND_OVER_SLACK_S`; a late
read (hung, retrying, waiting for a chip) holds nothing back. The timer loop sleeps no longer
than `wake_at` and calls `check` at the end of each turn while samples are held.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from pibridge.bridge.model import TakenSample

#: A slot's samples go to the queue together once its last read ended, or this long (seconds)
#: after its first sample was taken, whichever comes first (a slow or hung read delays the
#: others' commit by at most this).
HAND_OVER_MAX_S = 1.0
#: A read still counts as about to end this long (seconds) past its declared read time (a
#: loaded Pi Zero runs late: a batch split in two is one more transaction written to the card).
HAND_OVER_SLACK_S = 0.1


class ItemQueue(Protocol):
    """Where batches and hook calls go: `pibridge.bridge.outbox.Outbox`."""

    def put(self, item: tuple[Any, ...]) -> None: ...


class SlotHandOver:
    """Holds the current slot's samples for ``outbox`` (timer thread only)."""

    def __init__(self, outbox: ItemQueue) -> None:
        self._outbox = outbox
        self._held: list[tuple[Any, TakenSample]] = []
        self._held_since = 0.0          # monotonic: when the first held sample was taken
        self._by = math.inf             # ... and when they go whatever still reads
        self._recheck_at = math.inf     # the earliest expected end of a read they wait for

    @property
    def holding(self) -> bool:
        return bool(self._held)

    @property
    def wake_at(self) -> float:
        """When the timer loop must look again (monotonic); infinity while nothing is held."""
        return min(self._by, self._recheck_at) if self._held else math.inf

    def hold(self, sensor: Any, sample: TakenSample, now: float) -> None:
        """Hold ``sensor``'s ``sample`` for its slot's batch; an edge's (``sample.event``) goes
        out at once (with what is held before it)."""
        self._held.append((sensor, sample))
        if sample.event:
            self.hand_over()
        elif len(self._held) == 1:
            self._held_since = now
            self._by = now + HAND_OVER_MAX_S

    def check(self, now: float, reads: Iterable[tuple[float, float]]) -> None:
        """Hand the held samples over unless a read of their slot is expected to end soon.
        ``reads``: each cycle in progress as (monotonic time its slot began, time its read should
        end: its start plus its declared read time)."""
        wait_until = math.inf
        if now < self._by:
            for opened, ends in reads:
                expected = ends + HAND_OVER_SLACK_S
                if opened <= self._held_since and now < expected < wait_until:
                    wait_until = expected
        if wait_until == math.inf:
            self.hand_over()
        else:
            self._recheck_at = wait_until

    def hand_over(self) -> None:
        """What is held to the outbox now, as one batch (one commit)."""
        if self._held:
            batch, self._held = self._held, []
            self._by = self._recheck_at = math.inf
            self._outbox.put(("samples", batch))

    def put(self, item: tuple[Any, ...]) -> None:
        """A hook call or barrier to the outbox, after the samples taken before it (order kept)."""
        self.hand_over()
        self._outbox.put(item)
