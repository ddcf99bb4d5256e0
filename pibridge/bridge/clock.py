"""Is the system clock set? Wall and monotonic time, the boot id, and the offset that turns one
into the other.

A Pi without a real-time clock boots with a wrong time (fake-hwclock restores the time of the
last shutdown) until NTP syncs. A sample taken before that carries no wall-clock timestamp, only
its monotonic time and the boot id; once the clock is set, the queue stamps it with

    timestamp_ms = round(monotonic_s × 1000) + wall_minus_monotonic_ms        (`resolve_timestamp_ms`)

where ``wall_minus_monotonic_ms`` is the offset measured when the clock became set (monotonic
time is only meaningful within one boot, hence the boot id).

The rule (`SystemClock.is_set`), in order:

1. the wall clock reads earlier than `RELEASE_FLOOR_S` (this release's date) → **not set**, whatever
   else says so (a clock in the past is certainly wrong);
2. ``/run/systemd/timesync/synchronized`` exists (systemd-timesyncd, Raspberry Pi OS's default,
   creates it on its first successful sync) → **set**;
3. the kernel's ``adjtimex`` clock state is not ``TIME_ERROR`` (chrony, ntpd and timesyncd clear
   ``STA_UNSYNC`` when they discipline the clock) → **set**;
4. otherwise → **not set**; a Pi with a battery-backed RTC and no network time can say
   ``--trust-clock`` (`TrustedClock`: rule 1 only).

Once set, the clock stays set for the rest of the process (a later loss of NTP leaves a clock
that was right). `fake-hwclock` alone never makes the clock "set": its time is later than the
release date but behind by however long the Pi was off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
TIMESYNC_FLAG_FILE = Path("/run/systemd/timesync/synchronized")
#: 2026-11-01T00:00:00Z: no clock earlier than this release's date can be right.
RELEASE_FLOOR_S = 1_793_491_200.0
#: adjtimex(2)'s return value while the clock is not synchronised (STA_UNSYNC set).
TIME_ERROR = 5
#: Bytes for ``struct timex`` (208 on 64-bit Linux, less on 32-bit); zeroed, so ``modes`` = 0:
#: a read-only query.
TIMEX_BUFFER_BYTES = 512
MS_PER_S = 1000


def resolve_timestamp_ms(monotonic_s: float, wall_minus_monotonic_ms: int) -> int:
    """The wall-clock timestamp (ms since the epoch) of a moment known by its monotonic time."""
    return round(monotonic_s * MS_PER_S) + wall_minus_monotonic_ms


class SyncSource(Protocol):
    """Something that knows whether the system clock has been synchronised."""

    def synchronized(self) -> bool: ...


class TimesyncFlag:
    """systemd-timesyncd's flag file (rule 2)."""

    def __init__(self, path: Path = TIMESYNC_FLAG_FILE) -> None:
        self.path = path

    def synchronized(self) -> bool:
        return self.path.exists()


class KernelSync:
    """The kernel's view through ``adjtimex`` (rule 3). Without libc (not Linux) it says no."""

    def __init__(self) -> None:
        self._adjtimex: Callable[[ctypes.Array[ctypes.c_char]], int] | None = None
        self._refused = False
        try:
            # the running process's own symbols, libc's among them (``ctypes.util.find_library``
            # would run ``ldconfig -p`` in a child process and keep ``subprocess`` imported)
            self._adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
        except (OSError, AttributeError):
            self._adjtimex = None

    def synchronized(self) -> bool:
        if self._adjtimex is None:
            return False
        state = self._adjtimex(ctypes.create_string_buffer(TIMEX_BUFFER_BYTES))
        if state < 0 and not self._refused:  # e.g. a seccomp filter without adjtimex: say so once
            self._refused = True
            log.warning("cannot ask the kernel whether the clock is synchronised (adjtimex: %s); "
                        "only systemd-timesyncd's flag file counts", os.strerror(ctypes.get_errno()))
        return state >= 0 and state != TIME_ERROR


class AnySource:
    """Synchronised if any of ``sources`` says so."""

    def __init__(self, sources: Sequence[SyncSource]) -> None:
        self.sources = tuple(sources)

    def synchronized(self) -> bool:
        return any(source.synchronized() for source in self.sources)


class TrustedClock:
    """``--trust-clock``: the wall clock is right once it is past the release date (an RTC)."""

    def synchronized(self) -> bool:
        return True


def default_sync_source() -> SyncSource:
    """Rules 2 and 3."""
    return AnySource((TimesyncFlag(), KernelSync()))


def read_boot_id(path: Path = BOOT_ID_FILE) -> str:
    """This boot's id (a UUID the kernel draws at boot); "unknown-boot" where there is none."""
    try:
        return path.read_text(encoding="ascii").strip() or "unknown-boot"
    except OSError:
        return "unknown-boot"


class SystemClock:
    """Wall and monotonic time and whether the wall clock can be trusted. Every source is
    injectable so tests can unset, set and step the clock.

    `is_set` is a cheap read of a latch; `poll` applies the rule and latches (the scheduler
    polls about once a second until the clock is set, then never again).
    """

    def __init__(self, sync: SyncSource | None = None, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, boot_id: str | None = None,
                 floor_s: float = RELEASE_FLOOR_S) -> None:
        self.sync = sync if sync is not None else default_sync_source()
        self.wall = wall
        self.monotonic = monotonic
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self.floor_s = floor_s
        self._set = False

    def is_set(self) -> bool:
        """Whether `poll` has seen the clock set (in this process)."""
        return self._set

    def poll(self) -> bool:
        """Apply the module's rule; once true, stays true."""
        if not self._set and self.wall() >= self.floor_s and self.sync.synchronized():
            self._set = True
        return self._set

    def wall_minus_monotonic_ms(self) -> int:
        """The offset that turns monotonic ms into wall-clock ms now (see `resolve_timestamp_ms`)."""
        mono = self.monotonic()
        return round(self.wall() * MS_PER_S) - round(mono * MS_PER_S)
