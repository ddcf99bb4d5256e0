"""The store-and-forward queue: every taken sample is committed to SQLite (WAL) in ``state_dir``
before it counts as taken, and removed only once the agent acknowledged it.

One thread (``sample-queue``) owns the database. Every other thread hands it work:

- `SampleQueue.put` (the scheduler's threads) appends the row to the pending group and waits for
  that group's commit: many puts share one transaction (group commit), so the cost per sample
  stays low even with ``durability = "power"`` (``synchronous=FULL``: one fsync per group).
- `fetch`, `ack`, `dead_letter`, `resolve_timestamps`, `stats` (the delivery thread) run on the
  owner thread between two groups; `ack` does not wait, and acknowledged ids are held in memory
  (hidden from `fetch` and `stats`) and deleted as ranges inside the next group's transaction,
  or after `ACK_HOLD_S` / `ACK_HOLD_ROWS` when no samples come: no transaction per ack.

After each commit the stamped rows it inserted are handed to `add_batch_listener` callbacks as
`QueuedSample` rows (delivery sends them without reading them back; it reads the disk after a
restart, a rewind or when it fell behind).

Writes (an SD card lives on few of them): a new file has `PAGE_SIZE` pages; one transaction per
group (the scheduler hands a slot's samples over with one `put_many`); acknowledged rows are
deleted inside it; the sidecar record is rewritten at most every `RECORD_INTERVAL_S`.

Tables::

    samples       id (AUTOINCREMENT: never reused, so a reader's cursor only moves forward)
                  sensor, layout → layouts.id, vals (JSON {metric key: value}),
                  timestamp_ms (NULL until the clock is set), monotonic_s, boot_id (both
                  needed only while timestamp_ms is NULL: a row stamped at put has 0.0 and ""),
                  event
    layouts       id, sensor, metrics (JSON [[key, "unit:…"|"type:…"], …]): the metric
                  identities a row was taken with, so a metric whose unit changed keeps
                  delivering its old samples to its old agent metric
    dead_letters  the row's columns + reason, kind, dead_at_ms: what can never be delivered
    resume        sensor, metric, value (JSON), timestamp_ms: the newest value of each metric a
                  driver resumes from at start-up (`Driver.resumable_metrics`: a pulse counter's
                  running total). Upserted in the transaction that inserts the sample carrying
                  it (no extra transaction or fsync), and kept after the sample is acknowledged
                  and deleted; read once at start-up (`SampleQueue.resume_values`). Reset only on
                  request (`reset_resume`, ``pibridge reset-total``).

Corruption (`pibridge.bridge.queue_integrity`): a row that cannot be decoded goes to the dead
letters with its reason; a file that is not a queue is moved aside and a fresh queue starts; a
queue that was replaced, truncated, deleted or rolled back is said once (``incident``).

Bounds: beyond ``max_samples`` rows, or older than ``max_age_s`` (wall time for stamped rows once
the clock is known set; monotonic time for rows of this boot that wait for it), the oldest rows
are dropped, counted and logged once per episode.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pibridge.bridge.model import SensorSpec, TakenSample, Value
from pibridge.bridge.queue_integrity import (
    BAD_COLUMN,
    META_SCHEMA,
    SQLITE_FULL,
    NotAQueue,
    QueueRecord,
    Undecodable,
    compare,
    decode_row,
    inspect_database,
    is_malformed,
    last_sample_id,
    move_aside,
    new_queue_id,
    queue_id_of,
)

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.sqlite3"
DURABILITY_SYNCHRONOUS = {"process": "NORMAL", "power": "FULL"}
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
#: Seconds between two checks of the age bound (a scan of the oldest rows).
MAINTENANCE_INTERVAL_S = 60.0
#: Rows looked at per step of the age check (oldest first).
AGE_SCAN_CHUNK = 1000
#: The sidecar record is rewritten at most this often while samples are committed (seconds):
#: each rewrite is a file's worth of writes to the card (a 4 KiB block and its metadata).
RECORD_INTERVAL_S = 60.0
#: Page size of a new queue file (bytes; SQLite's default is 4096). Every commit appends each
#: page it changed to the WAL as one frame (page + 24-byte header): a slot's rows and the
#: emptied leaves of the rows acknowledged since, the table's root, the AUTOINCREMENT counter
#: and the header page. Measured per sample (20 rows a commit, rows of ~130 B): 4096 B pages
#: ~1.4 KB, 1024 B ~540 B, 512 B ~415 B. An existing file keeps its page size.
PAGE_SIZE = 512
#: Acknowledged rows are deleted in the transaction of the next insert (no transaction of their
#: own); without inserts, when this many wait or the first of them waited `ACK_HOLD_S` seconds.
#: Until then they are hidden from `fetch` and `stats`; a SIGKILL meanwhile sends them again
#: (the agent keeps one value per metric and timestamp: harmless). 120 s: longer than the usual
#: sampling intervals (a minute on a quiet profile), so their deletions ride on the next insert
#: instead of waking the thread for a transaction of their own.
ACK_HOLD_ROWS = 2000
ACK_HOLD_S = 120.0
#: What a row stamped with its wall time at put keeps as monotonic time and boot id: only
#: unstamped rows are stamped (`resolve_timestamps`) or aged by them, and leaving out the 36
#: characters of a boot id and 8 bytes of a REAL (0.0 is stored in no bytes) makes a row ~30 %
#: smaller: fewer pages written per commit.
STAMPED_MONOTONIC = 0.0
STAMPED_BOOT_ID = ""
#: ``PRAGMA secure_delete``: Debian's SQLite (Raspberry Pi OS's too) is built with it on, which
#: zeroes every freed page with one more write; "FAST" zeroes deleted rows only within pages
#: written anyway (readings are not secrets; the card's wear is what counts).
SECURE_DELETE = "FAST"
#: How long `close` waits for the owner thread to finish (seconds).
CLOSE_TIMEOUT_S = 5.0
#: Reason and kind of the dead letters for rows of an earlier boot that never got a wall time.
EARLIER_BOOT_KIND = "no wall-clock time"
EARLIER_BOOT_REASON = "taken during an earlier boot before the system clock was set: no wall-clock timestamp"
MS_PER_S = 1000
#: Why rows were dropped (the log line says which bound).
DROP_FULL = "queue full"
DROP_TOO_OLD = "too old"
#: How the queue's connection turns TEXT into str: a byte that is not UTF-8 becomes a lone
#: surrogate (found by `decode_row`) instead of failing the whole query.
_TEXT_FACTORY = functools.partial(str, encoding="utf-8", errors="surrogateescape")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS layouts (
    id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, metrics TEXT NOT NULL, UNIQUE (sensor, metrics));
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, layout INTEGER, vals TEXT NOT NULL,
    timestamp_ms INTEGER, monotonic_s REAL NOT NULL, boot_id TEXT NOT NULL, event INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS samples_unstamped ON samples (boot_id) WHERE timestamp_ms IS NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, sample_id INTEGER NOT NULL, sensor TEXT NOT NULL, layout INTEGER,
    vals TEXT NOT NULL, timestamp_ms INTEGER, monotonic_s REAL NOT NULL, boot_id TEXT NOT NULL,
    event INTEGER NOT NULL, reason TEXT NOT NULL, kind TEXT NOT NULL, dead_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resume (
    sensor TEXT NOT NULL, metric TEXT NOT NULL, value TEXT NOT NULL, timestamp_ms INTEGER,
    PRIMARY KEY (sensor, metric));
"""
_UPSERT_RESUME = ("INSERT INTO resume (sensor, metric, value, timestamp_ms) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (sensor, metric) DO UPDATE SET value = excluded.value, "
                  "timestamp_ms = excluded.timestamp_ms")
_COLUMNS = "id, sensor, layout, vals, timestamp_ms, monotonic_s, boot_id, event"

T = TypeVar("T")


#: The newest dead letters kept in the table (older ones are deleted; their count stays in the
#: status): a sample the agent refuses for good, again and again, must not fill the SD card.
DEAD_LETTERS_KEPT = 10_000


class QueueOpenError(RuntimeError):
    """The queue's database cannot be opened or created; the message names the file and why."""


class QueueClosed(RuntimeError):
    """The queue is closed (or its owner thread failed): the sample was not stored."""


class QueueWriteError(RuntimeError):
    """The group this sample was in could not be committed (disk full, I/O error): the sample
    was not stored; the queue stays open and later puts are stored once the disk recovers."""


def current_boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); "" where the kernel has none."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class QueuedSample:
    """One row as delivery sees it: ``metrics`` the (key, identity) pairs it was taken with
    (empty when no spec of its sensor was known at put time: then the current spec applies)."""

    id: int
    sensor: str
    metrics: tuple[tuple[str, str], ...]
    values: dict[str, Value]
    timestamp_ms: int
    event: bool


@dataclass(frozen=True)
class QueueStats:
    """A snapshot: rows waiting (``depth``; ``unstamped`` of them wait for the clock), the oldest
    stamped row's timestamp (ms, None if none), rows dropped by the bounds and dead letters
    since this queue was opened, and the dead letters in the table."""

    depth: int
    unstamped: int
    oldest_timestamp_ms: int | None
    dropped: int
    dead_lettered: int
    dead_letters_stored: int


class _Group:
    """One group commit: every put of the group waits until ``done`` (a lock held from the
    group's creation until its commit; cheaper than an Event for the one-producer case)."""

    __slots__ = ("_done", "_lock", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._done = False
        self.error: BaseException | None = None

    def wait(self) -> None:
        with self._lock:  # each waiter passes the lock on to the next one
            pass

    def set(self) -> None:
        """Called once by the owner thread (again: ignored)."""
        if not self._done:
            self._done = True
            self._lock.release()


def _new_group() -> _Group:
    return _Group()


def wall_timestamp_ms(monotonic_s: float, offset_ms: int) -> int:
    """The wall-clock timestamp (ms) of a sample taken at ``monotonic_s`` once the clock's offset
    (ms to add to monotonic ms) is known. The one formula for every path that stamps a row, so
    a row stamped at put, at commit or by `SampleQueue.resolve_timestamps` gets the same value
    (Python's round, half to even: SQLite's ROUND rounds half away from zero)."""
    return round(monotonic_s * MS_PER_S) + offset_ms


def _identity_key(identity: tuple[str, str]) -> list[str]:
    return [identity[0], identity[1]]


class SampleQueue:
    """The on-disk queue at ``path`` (a directory: the database is ``path/queue.sqlite3``, or a
    file path ending in ``.sqlite3``).

    ``durability``: ``"process"`` survives ``kill -9`` (WAL, ``synchronous=NORMAL``); ``"power"``
    also a power cut (``synchronous=FULL``). ``boot_id`` defaults to this boot's; ``clock``
    (wall time in s) and ``monotonic`` are injectable for tests.
    """

    def __init__(self, path: str | Path, *, durability: str = "process", max_samples: int = 500_000,
                 max_age_s: float = 30 * 86_400.0, boot_id: str | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if durability not in DURABILITY_SYNCHRONOUS:
            raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")
        if max_samples < 1 or max_age_s <= 0:
            raise ValueError("max_samples and max_age_s must be positive")
        path = Path(path)
        self.path = path if path.suffix == ".sqlite3" else path / QUEUE_FILE
        self.durability = durability
        self.max_samples = max_samples
        self.max_age_s = max_age_s
        self.boot_id = current_boot_id() if boot_id is None else boot_id
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Condition(threading.Lock())
        self._rows: list[tuple[Any, ...]] = []
        self._group = _new_group()
        self._ops: list[tuple[Callable[[], Any], Future[Any] | None]] = []
        self._acks: list[int] = []
        self._acks_since = 0.0   # monotonic time the first ack of ``_acks`` was handed over
        #: acknowledged ids taken from ``_acks`` by the owner thread, not deleted yet (owner only)
        self._held_acks: set[int] = set()
        self._held_since = 0.0
        #: (sensor, metric) → (JSON value, timestamp_ms) of the puts not yet committed: the newest wins
        self._resume: dict[tuple[str, str], tuple[str, int | None]] = {}
        self._closing = False
        self._failed: BaseException | None = None
        self._layout_of: dict[str, int] = {}      # sensor → layout id of its current spec
        self._layouts: dict[int, tuple[tuple[str, str], ...]] = {}
        self._offsets: dict[str, int] = {}        # boot id → ms to add to monotonic ms
        self._wall_clock_known = False
        self._count = 0
        self._unstamped = 0
        self._dropping: set[str] = set()  # reasons of the current drop episodes (logged once each)
        self._write_failing = False  # a commit failed and none succeeded since (logged once)
        self._write_error: str | None = None
        self.dropped = 0
        self.dead_lettered = 0
        self._dead_kinds_logged: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []
        self._batch_listeners: list[Callable[[list[QueuedSample] | None], None]] = []
        #: bumped by the owner thread on every change of the rows (a commit, held acks, dead
        #: letters, stamping, drops): `stats` answers from ``_stats_cache`` while it stays
        self._version = 0
        self._stats_cache: tuple[int, int | None, int] | None = None
        #: What was wrong with the queue's file when it was opened (one line, logged at error
        #: level): moved aside, replaced, truncated, deleted, rolled back; None if nothing.
        self.incident: str | None = None
        self._queue_id = ""
        self._recorded_last_id = -1
        self._record_due = 0.0
        #: Called on the owner thread after it took a group of puts and operations, before it
        #: commits them (tests land a put in that window); None in production.
        self.before_commit: Callable[[], None] | None = None
        opened: Future[None] = Future()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, args=(opened,), name="sample-queue",
                                            daemon=True)
            self._thread.start()
            opened.result()
        except (OSError, sqlite3.Error) as exc:
            full = getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_FULL
            hint = "free some space on its file system" if full else "is state_dir writable by this user?"
            raise QueueOpenError(f"cannot open the sample queue {self.path}: {exc} ({hint})") from exc

    # -- the scheduler's side ------------------------------------------------------------------
    def put(self, sample: TakenSample) -> None:
        """Store one sample; returns once its group is committed (`QueueClosed` if it cannot be)."""
        with self._lock:
            if self._closing or self._failed is not None:
                raise QueueClosed(f"sample queue {self.path} is closed: sample of {sample.sensor} not stored")
            row = self._row(sample)
            if sample.values:       # none: only its resume values are kept (every value held back)
                self._rows.append(row)
            group = self._group
            if len(self._rows) <= 1:
                self._lock.notify()
        group.wait()
        if group.error is not None:
            raise _group_failure(group.error, f"sample of {sample.sensor}")

    def set_specs(self, specs: Mapping[str, SensorSpec]) -> None:
        """Record the metric identities samples of each sensor are taken with from now on."""
        layouts = {name: tuple(m.identity for m in spec.metrics) for name, spec in specs.items()}
        self._call(lambda: self._store_layouts(layouts))

    def resolve_timestamps(self, boot_id: str, offset_ms: int) -> int:
        """The clock is set: stamp every row of ``boot_id`` waiting for it with
        `wall_timestamp_ms` (stored once, before any send), and move rows of earlier boots that
        never got a wall time to the dead letters. Returns the rows stamped. A put racing with
        this is stamped too: at put time, or by the group commit that inserts it."""
        def resolve() -> int:
            self._wall_clock_known = True
            with self._lock:
                self._offsets[boot_id] = int(offset_ms)
            waiting = self._db.execute("SELECT id, monotonic_s FROM samples WHERE timestamp_ms IS NULL "
                                       "AND boot_id = ?", (boot_id,)).fetchall()
            corrupt = [(row_id, f"monotonic time {mono!r} is not a number", BAD_COLUMN)
                       for row_id, mono in waiting if not _is_number(mono)]
            if corrupt:
                self._unstamped -= self._dead_letter(corrupt)
                waiting = [(row_id, mono) for row_id, mono in waiting if _is_number(mono)]
            with self._db:
                stamped = self._db.executemany(
                    "UPDATE samples SET timestamp_ms = ? WHERE id = ? AND timestamp_ms IS NULL",
                    [(wall_timestamp_ms(mono, int(offset_ms)), row_id) for row_id, mono in waiting]).rowcount
            self._unstamped -= stamped
            self._dead_letter_earlier_boots()
            if stamped:
                self._notify("stamped")
            return stamped
        return self._call(resolve)

    # -- the delivery's side -------------------------------------------------------------------
    def fetch(self, after_id: int, limit: int) -> list[QueuedSample]:
        """Up to ``limit`` stamped rows with ``id > after_id``, oldest first."""
        return self._call(lambda: self._fetch(after_id, limit), exact=False)

    def ack(self, ids: Iterable[int]) -> None:
        """The agent acknowledged these rows: deleted with the next group (does not wait)."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            if self._failed is not None or (self._closing and not self._thread.is_alive()):
                return  # not deleted: delivered again after the restart (harmless, keyed by timestamp)
            if not self._acks:
                self._acks_since = self._monotonic()
                self._lock.notify()  # the owner takes them over and waits for their deadline
            self._acks.extend(ids)
            if len(self._acks) + len(self._held_acks) >= ACK_HOLD_ROWS:
                self._lock.notify()

    def dead_letter(self, items: Sequence[tuple[int, str, str]]) -> int:
        """Move rows ``(id, reason, kind)`` to the dead letters; returns how many were moved.
        Each new kind is logged once (at warning), with the first reason."""
        return self._call(lambda: self._dead_letter(items))

    def queued_sensors(self) -> dict[str, int]:
        """``{sensor name: rows waiting}``."""
        return self._call(lambda: dict(self._db.execute(
            "SELECT sensor, COUNT(*) FROM samples GROUP BY sensor").fetchall()))

    def enforce_bounds(self) -> None:
        """Apply the age bound now (the owner thread does it every `MAINTENANCE_INTERVAL_S`)."""
        self._call(self._enforce_age)

    def put_many(self, samples: Iterable[TakenSample]) -> None:
        """`put` for several samples at once (one group, one wait)."""
        group = None
        with self._lock:
            if self._closing or self._failed is not None:
                raise QueueClosed(f"sample queue {self.path} is closed: samples not stored")
            for sample in samples:
                row = self._row(sample)
                if sample.values:   # none: only its resume values are kept
                    self._rows.append(row)
            group = self._group
            self._lock.notify()
        group.wait()
        if group.error is not None:
            raise _group_failure(group.error, "samples")

    def _row(self, sample: TakenSample) -> tuple[Any, ...]:
        """The row of ``sample`` (called with the lock held: reads the offsets and layouts)."""
        timestamp = sample.timestamp_ms
        if timestamp is None and sample.boot_id in self._offsets:  # clock set meanwhile
            timestamp = wall_timestamp_ms(sample.monotonic_s, self._offsets[sample.boot_id])
        values = json.dumps(sample.values, separators=(",", ":"))
        for metric, value in (sample.resume or {}).items():
            self._resume[(sample.sensor, metric)] = (json.dumps(value), timestamp)
        if timestamp is not None:  # only unstamped rows need their boot and monotonic time
            return (sample.sensor, self._layout_of.get(sample.sensor), values, timestamp, STAMPED_MONOTONIC,
                    STAMPED_BOOT_ID, int(sample.event))
        return (sample.sensor, self._layout_of.get(sample.sensor), values, timestamp, sample.monotonic_s,
                sample.boot_id, int(sample.event))

    def queued_layouts(self) -> dict[str, list[tuple[tuple[str, str], ...]]]:
        """``{sensor: [metric identities of a layout its waiting rows were taken with, …]}``."""
        def read() -> dict[str, list[tuple[tuple[str, str], ...]]]:
            out: dict[str, list[tuple[tuple[str, str], ...]]] = {}
            for sensor, layout in self._db.execute("SELECT DISTINCT sensor, layout FROM samples"):
                out.setdefault(sensor, [])
                if layout is not None and layout in self._layouts:
                    out[sensor].append(self._layouts[layout])
            return out
        return self._call(read)

    def resume_values(self) -> dict[str, dict[str, Value]]:
        """``{sensor: {metric: newest stored value}}`` of the resume table (what drivers resume
        from at start-up: `pibridge.drivers.base.Driver.resume`)."""
        return self._call(lambda: _read_resume(self._db))

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first (for status and tests)."""
        def read() -> list[dict[str, Any]]:
            cursor = self._db.execute("SELECT sample_id, sensor, vals, timestamp_ms, reason, kind, "
                                      "dead_at_ms FROM dead_letters ORDER BY id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return self._call(read)

    def stats(self) -> QueueStats:
        """A snapshot; while nothing changed since the last one (the status asks every few
        seconds, an idle queue changes once a sample) it is answered without waking the owner
        thread or reading the database."""
        cached = self._stats_cache
        if cached is not None and cached[0] == self._version and not self._acks:
            return QueueStats(self.depth, self._unstamped, cached[1], self.dropped, self.dead_lettered,
                              cached[2])

        def read() -> QueueStats:
            version = self._version
            held = self._held_acks
            oldest = next((timestamp for row_id, timestamp in self._db.execute(
                "SELECT id, timestamp_ms FROM samples WHERE timestamp_ms IS NOT NULL ORDER BY id LIMIT ?",
                (len(held) + 1,)) if row_id not in held), None)
            stored = int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
            self._stats_cache = (version, oldest, stored)
            return QueueStats(self.depth, self._unstamped, oldest, self.dropped,
                              self.dead_lettered, stored)
        return self._call(read, exact=False)

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """``callback(what)`` on the owner thread after rows were added (``"added"``) or stamped
        (``"stamped"``): keep it short (hand over to another thread)."""
        self._listeners.append(callback)

    def add_batch_listener(self, callback: Callable[[list[QueuedSample] | None], None]) -> None:
        """``callback(samples)`` on the owner thread right after each commit that inserted rows,
        before the ``"added"`` listeners and before any later `fetch` is answered: the stamped
        rows it committed, in id order, as `fetch` would return them (delivery sends them without
        reading them back), or None when some committed rows cannot be handed over (the queue
        bound dropped rows in that commit): read from the disk then. Rows committed without a
        wall time are never handed over (they come with ``"stamped"``). Keep it short."""
        self._batch_listeners.append(callback)

    def _hand_committed(self, rows: list[tuple[Any, ...]], last_id: int, dropped: int) -> None:
        """AUTOINCREMENT ids of one connection's inserts in one transaction are consecutive: the
        batch's rows are ``last_id - len(rows) + 1`` … ``last_id``."""
        samples: list[QueuedSample] | None = None
        if not dropped:
            first = last_id - len(rows) + 1
            samples = [QueuedSample(first + i, row[0], self._layouts.get(row[1], ()) if row[1] is not None
                                    else (), json.loads(row[2]), row[3], bool(row[6]))
                       for i, row in enumerate(rows) if row[3] is not None]
        for callback in list(self._batch_listeners):
            try:
                callback(samples)
            except Exception:
                log.exception("queue listener failed")

    def _notify(self, what: str) -> None:
        for callback in list(self._listeners):
            try:
                callback(what)
            except Exception:
                log.exception("queue listener failed")

    @property
    def depth(self) -> int:
        """Rows waiting (in-memory count kept by the owner thread; no query): acknowledged rows
        not deleted yet do not count."""
        return max(0, self._count - len(self._held_acks))

    @property
    def write_error(self) -> str | None:
        """Why samples cannot be stored right now (disk full, I/O error: the last failed
        commit's error), None while commits succeed (for the status)."""
        return self._write_error

    @property
    def alive(self) -> bool:
        """The owner thread runs and has met no unrecoverable error (for the watchdog)."""
        return self._thread.is_alive() and self._failed is None

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Commit what was handed over, then close the database (idempotent); waits at most
        ``timeout`` seconds for the owner thread."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout)

    def __enter__(self) -> SampleQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the owner thread ----------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], *, exact: bool = True) -> T:
        """Run ``fn`` on the owner thread; ``exact``: delete the held acknowledged rows first
        (``fn`` reads or changes the table as it is)."""
        if exact:
            fn = self._after_held_acks(fn)
        future: Future[T] = Future()
        with self._lock:
            if self._closing or self._failed is not None:
                raise QueueClosed(f"sample queue {self.path} is closed")
            self._ops.append((fn, future))
            self._lock.notify()
        return future.result()

    def _after_held_acks(self, fn: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            self._delete_held_acks()
            return fn()
        return run

    def _delete_held_acks(self) -> None:
        """Delete the held acknowledged rows now (one transaction; owner thread)."""
        if self._held_acks:
            self._commit_group([], _new_group(), sorted(self._held_acks))
            self._held_acks = set()

    def _connect(self) -> tuple[sqlite3.Connection, bool]:
        """The database in WAL mode, checked (`inspect_database`); True if it has no tables yet.
        A new (empty) file gets `PAGE_SIZE` pages (SQLite ignores this for an existing one)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        try:
            db.text_factory = _TEXT_FACTORY
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            return db, inspect_database(db)
        except BaseException:
            db.close()
            raise

    def _open(self) -> sqlite3.Connection:
        """Open (or create) the database; a file that is not a queue is moved aside and a fresh
        one created; the database is compared with its sidecar record (`incident`)."""
        existed = self.path.exists()
        record = QueueRecord.read(self.path)
        moved = None
        try:
            db, fresh = self._connect()
        except (NotAQueue, sqlite3.DatabaseError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not is_malformed(exc):
                raise                                 # permissions, I/O: not the file's fault
            moved = (move_aside(self.path), str(exc))
            db, fresh = self._connect()
        try:
            db.execute(f"PRAGMA synchronous={DURABILITY_SYNCHRONOUS[self.durability]}")
            db.execute(f"PRAGMA secure_delete={SECURE_DELETE}")
            queue_id = None if fresh else (queue_id_of(db) or "(none)")
            db.executescript(_SCHEMA + META_SCHEMA)
            self.incident = compare(self.path, record, queue_id=queue_id, last_id=last_sample_id(db),
                                    existed=existed, moved=moved)
            if queue_id is None or queue_id == "(none)":
                queue_id = new_queue_id(db)
            self._queue_id = queue_id
        except BaseException:
            db.close()
            raise
        if self.incident:
            log.error("%s", self.incident)
        db.isolation_level = "DEFERRED"  # explicit transactions via `with db`
        return db

    def _write_record(self, *, sync: bool) -> None:
        """The sidecar (see `QueueRecord`): at open (``sync``), at most every
        `RECORD_INTERVAL_S` while samples are committed, and at close. A failure is logged,
        never raised."""
        self._record_due = self._monotonic() + RECORD_INTERVAL_S
        last_id = last_sample_id(self._db)
        if not sync and last_id == self._recorded_last_id:
            return
        try:
            QueueRecord(self._queue_id, last_id, self._count, self._clock()).write(self.path, sync=sync)
        except OSError as exc:
            log.warning("sample queue %s: cannot write its record %s: %s", self.path,
                        QueueRecord.path_for(self.path), exc)
            return
        self._recorded_last_id = last_id

    def _run(self, opened: Future[None]) -> None:
        try:
            self._db = self._open()
            self._count = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            self._unstamped = self._db.execute(
                "SELECT COUNT(*) FROM samples WHERE timestamp_ms IS NULL").fetchone()[0]
            self._layouts = _read_layouts(self._db)
            self._dead_letter_earlier_boots()
            self._write_record(sync=True)
            self._record_due = 0.0  # the first commit is recorded at once, then every RECORD_INTERVAL_S
        except BaseException as exc:
            opened.set_exception(exc)
            if hasattr(self, "_db"):
                self._db.close()
            return
        opened.set_result(None)
        next_maintenance = self._monotonic() + MAINTENANCE_INTERVAL_S
        try:
            while True:
                with self._lock:
                    while not (self._rows or self._ops or self._resume or self._closing or self._acks_due()):
                        if self._acks and not self._held_acks:
                            self._held_since = self._acks_since
                        if self._acks:
                            self._version += 1
                        self._held_acks.update(self._acks)
                        self._acks = []
                        # an empty queue has nothing to age: the maintenance waits for a commit
                        wake = next_maintenance if self.depth else math.inf
                        if self._held_acks:
                            wake = min(wake, self._held_since + ACK_HOLD_S)
                        timeout = None if wake == math.inf else max(0.0, wake - self._monotonic())
                        if not self._lock.wait(timeout):
                            break
                    rows, self._rows = self._rows, []
                    group, self._group = self._group, _new_group()
                    ops, self._ops = self._ops, []
                    if self._acks and not self._held_acks:
                        self._held_since = self._acks_since
                    if self._acks:
                        self._version += 1
                    self._held_acks.update(self._acks)
                    self._acks = []
                    resume, self._resume = self._resume, {}
                    closing = self._closing
                    acks_due = bool(rows or resume or closing) or self._acks_due()
                acks: list[int] = []
                if acks_due and self._held_acks:
                    acks, self._held_acks = sorted(self._held_acks), set()
                if self.before_commit is not None:
                    self.before_commit()
                self._commit_group(rows, group, acks, resume)
                for fn, future in ops:
                    self._version += 1   # an operation may change rows (cheap: stats reads again)
                    try:
                        result = fn()
                    except BaseException as exc:
                        if future is not None:
                            future.set_exception(exc)
                        else:
                            log.exception("queue operation failed")
                    else:
                        if future is not None:
                            future.set_result(result)
                if self._monotonic() >= next_maintenance:
                    try:
                        self._enforce_age()
                    except sqlite3.OperationalError as exc:  # disk full, I/O: tried again next time
                        self._write_failed(exc, "old samples not dropped")
                    self._write_record(sync=False)
                    next_maintenance = self._monotonic() + MAINTENANCE_INTERVAL_S
                if closing:
                    break
        except BaseException as exc:  # the database failed: nothing more can be stored
            log.error("sample queue %s failed: %s", self.path, exc)
            with self._lock:
                self._failed = exc
                rows, group, ops = self._rows, self._group, self._ops
                self._rows, self._ops = [], []
            group.error = exc
            group.set()
            for _, future in ops:
                if future is not None:
                    future.set_exception(QueueClosed(f"sample queue failed: {exc}"))
        finally:
            with self._lock:
                self._closing = True
                leftover = self._ops
                self._ops = []
            for _, future in leftover:
                if future is not None and not future.done():
                    future.set_exception(QueueClosed(f"sample queue {self.path} is closed"))
            if self._failed is None:
                with contextlib.suppress(sqlite3.Error):
                    self._write_record(sync=False)
            self._db.close()

    def _acks_due(self) -> bool:
        """Held acknowledgements are deleted without waiting for an insert (lock held)."""
        held = len(self._held_acks) + len(self._acks)
        if not held:
            return False
        since = self._held_since if self._held_acks else self._acks_since
        return held >= ACK_HOLD_ROWS or self._monotonic() - since >= ACK_HOLD_S

    def _commit_group(self, rows: list[tuple[Any, ...]], group: _Group, acks: list[int],
                      resume: Mapping[tuple[str, str], tuple[str, int | None]] | None = None) -> None:
        if not rows and not acks and not resume:
            group.set()
            return
        rows = self._stamp_late(rows)
        try:
            with self._db:
                last_id = 0
                if rows:
                    self._db.executemany(
                        "INSERT INTO samples (sensor, layout, vals, timestamp_ms, monotonic_s, boot_id, "
                        "event) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                    last_id = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
                if resume:
                    self._db.executemany(_UPSERT_RESUME, [
                        (sensor, metric, value, timestamp)
                        for (sensor, metric), (value, timestamp) in resume.items()])
                deleted = 0
                if acks:
                    deleted = self._db.executemany("DELETE FROM samples WHERE id BETWEEN ? AND ?",
                                                   _runs(acks)).rowcount
                dropped = self._enforce_count(len(rows) - deleted)
        except sqlite3.OperationalError as exc:  # disk full, I/O error: this group only
            if self._db.in_transaction:  # a failed COMMIT may leave it open
                self._db.rollback()
            group.error = exc
            group.set()
            lost_acks = f", {len(acks)} acknowledgements not recorded (sent again)" if acks else ""
            self._write_failed(exc, f"{len(rows)} samples not stored{lost_acks}")
            return
        except BaseException as exc:
            group.error = exc
            group.set()
            raise
        if self._write_failing:
            self._write_failing = False
            self._write_error = None
            log.info("sample queue %s: storing again", self.path)
        self._count += len(rows) - deleted - dropped
        self._unstamped += sum(1 for row in rows if row[3] is None)
        if dropped:
            self._unstamped = self._db.execute(
                "SELECT COUNT(*) FROM samples WHERE timestamp_ms IS NULL").fetchone()[0]
        if rows and any(row[3] is not None for row in rows):
            self._wall_clock_known = True  # the scheduler stamps rows only once the clock is set
        self._version += 1
        if rows and self._batch_listeners:
            self._hand_committed(rows, last_id, dropped)
        if rows:
            self._notify("added")  # before the puts return: a listener never lags behind a put
        group.set()
        if rows and self._monotonic() >= self._record_due:
            self._write_record(sync=False)

    def _stamp_late(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Stamp unstamped rows whose boot got its clock offset after `_row` built them (a put
        between this group's hand-over and `resolve_timestamps`, whose UPDATE cannot see them)."""
        offsets = self._offsets  # written only on this (the owner) thread
        if not offsets:
            return rows
        return [row if row[3] is not None or row[5] not in offsets else
                (*row[:3], wall_timestamp_ms(row[4], offsets[row[5]]), *row[4:]) for row in rows]

    def _write_failed(self, exc: sqlite3.OperationalError, what: str) -> None:
        """A write failed in a way the disk may recover from: logged once per episode."""
        self._write_error = str(exc)
        if not self._write_failing:
            self._write_failing = True
            log.error("sample queue %s: cannot write (%s): %s; further failures are not logged until "
                      "a write succeeds", self.path, exc, what)

    def _enforce_count(self, added: int) -> int:
        excess = self._count + added - self.max_samples
        if excess <= 0:
            self._dropping.discard(DROP_FULL)
            return 0
        self._db.execute("DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
                         (excess,))
        self._note_dropped(excess, DROP_FULL, f"more than {self.max_samples} samples waiting")
        return excess

    def _enforce_age(self) -> None:
        """Drop rows older than max_age_s, oldest first, one chunk at a time."""
        now_ms = round(self._clock() * MS_PER_S)
        now_mono = self._monotonic()
        limit_ms = self.max_age_s * MS_PER_S
        total = 0
        last_id = 0
        while True:
            chunk = self._db.execute(f"SELECT {_COLUMNS} FROM samples WHERE id > ? ORDER BY id LIMIT ?",
                                     (last_id, AGE_SCAN_CHUNK)).fetchall()
            if not chunk:
                break
            old = [row[0] for row in chunk if self._too_old(row, now_ms, now_mono, limit_ms)]
            if old:
                with self._db:
                    self._db.executemany("DELETE FROM samples WHERE id = ?", ((i,) for i in old))
                total += len(old)
            if len(old) < len(chunk) // 2:  # past the old head of the queue
                break
            last_id = chunk[-1][0]
        if total:
            self._version += 1
            self._count = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            self._unstamped = self._db.execute(
                "SELECT COUNT(*) FROM samples WHERE timestamp_ms IS NULL").fetchone()[0]
            self._note_dropped(total, DROP_TOO_OLD, f"older than queue_max_age, {self.max_age_s:g} s")
        else:
            self._dropping.discard(DROP_TOO_OLD)

    def _too_old(self, row: tuple[Any, ...], now_ms: int, now_mono: float, limit_ms: float) -> bool:
        timestamp, monotonic_s, boot_id = row[4], row[5], row[6]
        if not _is_number(timestamp) or not _is_number(monotonic_s):
            return False  # a corrupt row: `_fetch` moves it to the dead letters
        if timestamp is not None:
            return self._wall_clock_known and now_ms - timestamp > limit_ms
        return bool(boot_id == self.boot_id and (now_mono - monotonic_s) * MS_PER_S > limit_ms)

    def _note_dropped(self, count: int, reason: str, detail: str) -> None:
        """Count a drop; log the first of an episode of ``reason`` (`DROP_FULL`, `DROP_TOO_OLD`)."""
        self.dropped += count
        if reason not in self._dropping:
            self._dropping.add(reason)
            log.warning("%d samples dropped: %s (%s; further drops are counted, not logged)",
                        count, reason, detail)

    def _store_layouts(self, layouts: dict[str, tuple[tuple[str, str], ...]]) -> None:
        found: dict[str, int] = {}
        with self._db:
            for sensor, metrics in layouts.items():
                text = json.dumps([_identity_key(i) for i in metrics], separators=(",", ":"))
                self._db.execute("INSERT OR IGNORE INTO layouts (sensor, metrics) VALUES (?, ?)",
                                 (sensor, text))
                lid = self._db.execute("SELECT id FROM layouts WHERE sensor = ? AND metrics = ?",
                                       (sensor, text)).fetchone()[0]
                found[sensor] = lid
                self._layouts[lid] = metrics
        with self._lock:
            self._layout_of = found

    def _fetch(self, after_id: int, limit: int) -> list[QueuedSample]:
        """Rows that cannot be decoded (`decode_row`) go to the dead letters on the way: the
        caller gets only good ones, and at least one if any good row is left."""
        while True:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM samples WHERE id > ? AND timestamp_ms IS NOT "
                                    "NULL ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
            good: list[QueuedSample] = []
            bad: list[tuple[int, str, str]] = []
            held = self._held_acks
            for row in rows:
                if row[0] in held:   # acknowledged, deleted with the next group
                    continue
                decoded = decode_row(row[1], row[3], row[4])
                if isinstance(decoded, Undecodable):
                    bad.append((row[0], decoded.reason, decoded.kind))
                    continue
                sensor, values, timestamp = decoded
                layout = self._layouts.get(row[2], ()) if isinstance(row[2], int) else ()
                good.append(QueuedSample(row[0], sensor, layout, values, timestamp, bool(row[7])))
            if bad:
                self._dead_letter(bad)
            if good or len(rows) < limit:
                return good
            after_id = rows[-1][0]

    def _dead_letter(self, items: Sequence[tuple[int, str, str]]) -> int:
        now_ms = round(self._clock() * MS_PER_S)
        moved = 0
        with self._db:
            for sample_id, reason, kind in items:
                moved += self._db.execute(
                    f"INSERT INTO dead_letters (sample_id, sensor, layout, vals, timestamp_ms, monotonic_s, "
                    f"boot_id, event, reason, kind, dead_at_ms) SELECT {_COLUMNS}, ?, ?, ? FROM samples "
                    "WHERE id = ?", (reason, kind, now_ms, sample_id)).rowcount
                self._db.execute("DELETE FROM samples WHERE id = ?", (sample_id,))
                if kind not in self._dead_kinds_logged:
                    self._dead_kinds_logged.add(kind)
                    log.warning("sample moved to the dead letters (%s): %s; further ones of this kind "
                                "are counted, not logged", kind, reason)
            if moved:   # kept for inspection, bounded: a refusal that never ends must not fill the card
                self._db.execute("DELETE FROM dead_letters WHERE id <= "
                                 "(SELECT MAX(id) FROM dead_letters) - ?", (DEAD_LETTERS_KEPT,))
        self._count -= moved
        self.dead_lettered += moved
        return moved

    def _dead_letter_earlier_boots(self) -> None:
        ids = [row[0] for row in self._db.execute(
            "SELECT id FROM samples WHERE timestamp_ms IS NULL AND boot_id != ?", (self.boot_id,))]
        if ids:
            self._dead_letter([(i, EARLIER_BOOT_REASON, EARLIER_BOOT_KIND) for i in ids])
            self._unstamped -= len(ids)


def _is_number(value: Any) -> bool:
    """None (a column not set yet) or a finite int/float: what the age and stamping maths take."""
    return value is None or (isinstance(value, int | float) and math.isfinite(value))


def _read_layouts(db: sqlite3.Connection) -> dict[int, tuple[tuple[str, str], ...]]:
    """Every stored layout; one that cannot be decoded is left out (with one line): rows taken
    with it are delivered under their sensor's current spec."""
    layouts: dict[int, tuple[tuple[str, str], ...]] = {}
    skipped = 0
    for lid, metrics in db.execute("SELECT id, metrics FROM layouts"):
        try:
            layouts[lid] = tuple((str(k), str(i)) for k, i in json.loads(metrics))
        except (ValueError, TypeError):
            skipped += 1
    if skipped:
        log.error("sample queue: %d metric layouts cannot be decoded; their samples are delivered "
                  "under their sensor's current metrics", skipped)
    return layouts


def _group_failure(error: BaseException, what: str) -> Exception:
    """What a put raises when its group was not committed."""
    if isinstance(error, sqlite3.OperationalError):
        failure: Exception = QueueWriteError(f"{what} not stored: {error}")
    else:
        failure = QueueClosed(f"{what} not stored: {error}")
    failure.__cause__ = error
    return failure


def _runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ids as (first, last) runs of consecutive ids: acknowledgements mostly come in runs,
    so a batch is a few range deletes, not one statement per row."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def read_queued_sensors(state_dir: Path) -> dict[str, int]:
    """``{sensor: rows waiting}`` read-only, beside a running bridge (for ``inventory --prune``);
    empty when there is no queue."""
    path = Path(state_dir) / QUEUE_FILE
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.text_factory = _TEXT_FACTORY  # a damaged sensor name must not hide the others' rows
    try:
        return dict(db.execute("SELECT sensor, COUNT(*) FROM samples GROUP BY sensor").fetchall())
    except sqlite3.OperationalError:  # no table yet
        return {}
    finally:
        db.close()


def _read_resume(db: sqlite3.Connection) -> dict[str, dict[str, Value]]:
    out: dict[str, dict[str, Value]] = {}
    for sensor, metric, value in db.execute("SELECT sensor, metric, value FROM resume"):
        try:
            out.setdefault(sensor, {})[metric] = json.loads(value)
        except ValueError:  # a damaged row: that metric starts afresh
            log.warning("queue: the stored %s of %s is not readable; it starts afresh", metric, sensor)
    return out


def read_resume_values(state_dir: Path) -> dict[str, dict[str, Value]]:
    """``{sensor: {metric: value}}`` of the resume table, read-only (tests, ``pibridge
    reset-total``); empty when there is no queue or no table yet."""
    path = Path(state_dir) / QUEUE_FILE
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _read_resume(db)
    except sqlite3.OperationalError:  # no table yet
        return {}
    finally:
        db.close()


def reset_resume(state_dir: Path, sensor: str) -> dict[str, Value]:
    """Forget the stored resume values of ``sensor`` (its pulse total starts at 0 at the next
    start); returns what was forgotten. The caller holds the state-dir lock (no bridge runs)."""
    path = Path(state_dir) / QUEUE_FILE
    if not path.exists():
        return {}
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        forgotten = _read_resume(db).get(sensor, {})
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM resume WHERE sensor = ?", (sensor,))
        return forgotten
    finally:
        db.close()
