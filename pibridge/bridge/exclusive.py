"""Exclusive keys: one attempt at a time per chip.

A driver whose chip serves several sensors (two channels of one ADS1115, say) names the chip in
its ``exclusive_key``: while one sensor's attempt holds the key, the others' attempts wait in
line, in the order they asked, and the scheduler starts the next when the key is released.
Used by the scheduler's timer thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

Holder = TypeVar("Holder")


class ExclusiveKeys(Generic[Holder]):
    """Who holds each key, and who waits for it."""

    def __init__(self) -> None:
        self._holders: dict[Hashable, Holder] = {}
        self._waiting: dict[Hashable, deque[Holder]] = {}

    def take(self, key: Hashable, who: Holder) -> bool:
        """Take ``key`` for ``who``; False (and ``who`` put in line) while another holds it."""
        holder = self._holders.get(key)
        if holder is not None and holder is not who:
            self._waiting.setdefault(key, deque()).append(who)
            return False
        self._holders[key] = who
        return True

    def release(self, key: Hashable, who: Holder) -> None:
        """``who`` no longer holds ``key`` (nothing if it did not)."""
        if self._holders.get(key) is who:
            del self._holders[key]

    def next_waiting(self, key: Hashable) -> Holder | None:
        """The first in line for ``key``, taken out of the line; None when nobody waits."""
        waiting = self._waiting.get(key)
        if not waiting:
            return None
        who = waiting.popleft()
        if not waiting:
            del self._waiting[key]
        return who

    def is_waiting(self, key: Hashable, who: Holder) -> bool:
        """Whether ``who`` is in line for ``key``."""
        return who in self._waiting.get(key, ())
