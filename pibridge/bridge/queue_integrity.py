"""What the sample queue does when its own file cannot be trusted (issue 20 §3).

Three things, each cheap on the normal path:

* **Rows that cannot be decoded** (`decode_row`): values that are not UTF-8, not JSON, not a JSON
  object of numbers / booleans / strings, a sensor name that is not text, a timestamp that is not
  an integer. The queue moves such a row to the dead letters with the reason (one log line per
  kind) and hands the rest to delivery: one bad row never blocks the others.
* **A file that is not a queue** (`inspect_database`): not SQLite at all, or a database whose
  tables are not the queue's. It is moved aside (`move_aside`: ``queue.sqlite3.corrupt-<UTC
  time>``, with its ``-wal`` and ``-shm``) and the bridge starts with a fresh queue.
* **A queue that was replaced, truncated, deleted or rolled back** (`QueueRecord`, `compare`):
  the database holds a random queue id (table ``queue_meta``); the sidecar file
  ``queue.sqlite3.record`` beside it holds that id, the highest sample id ever committed and
  how many rows waited. On open the two are compared and any difference is said once, at error
  level, naming what was lost.

The sidecar's cost: one ~120-byte write + rename when the queue opens (fsynced), at most one
every ``RECORD_INTERVAL_S`` (10 s) while samples are committed (after a group commit, not
fsynced: the page cache writes it back with the WAL), and one at a clean close; nothing while
idle, and never one per sample or per group. Because ids only grow, a sidecar that lags (up to
10 s, or more after a power cut) can only under-count what was lost, never report a loss that
did not happen; the queue id tells a replaced or emptied file whatever the sidecar's age.

Sidecar format (JSON, one object, ~120 bytes)::

    {"queue_id": "9f0c…(32 hex)", "last_id": 18412, "waiting": 37, "written_at": 1733550000.0}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pibridge.durable import fsync_directory

#: The sidecar beside ``queue.sqlite3``.
RECORD_SUFFIX = ".record"
#: A sidecar larger than this is not ours (read with a bound).
RECORD_MAX_BYTES = 4096
#: SQLite's primary result codes: a corrupt image, a full disk, a file that is not a database.
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 11, 13, 26
#: The tables of the queue and the columns each must have (extra tables are allowed: a newer
#: pibridge may add some).
QUEUE_TABLES: Mapping[str, tuple[str, ...]] = {
    "layouts": ("id", "sensor", "metrics"),
    "samples": ("id", "sensor", "layout", "vals", "timestamp_ms", "monotonic_s", "boot_id", "event"),
    "dead_letters": ("id", "sample_id", "sensor", "layout", "vals", "timestamp_ms", "monotonic_s",
                     "boot_id", "event", "reason", "kind", "dead_at_ms"),
}
META_TABLE = "queue_meta"
META_SCHEMA = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
QUEUE_ID_KEY = "queue_id"

# dead-letter kinds of rows that cannot be decoded (each logged once)
NOT_UTF8 = "row not UTF-8"
NOT_JSON = "row values not JSON"
NOT_OBJECT = "row values not an object"
BAD_VALUE = "row value not a number, boolean or string"
BAD_COLUMN = "row column of the wrong type"


class NotAQueue(Exception):
    """The file is not a queue database (the message says why); it is moved aside."""


def is_malformed(exc: sqlite3.Error) -> bool:
    """SQLite says the file is not a database, or its image is corrupt."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def inspect_database(db: sqlite3.Connection) -> bool:
    """Check an open database before the queue uses it. Returns True when it has none of the
    queue's tables yet (new or emptied); raises `NotAQueue` when it holds other tables but not
    the queue's, or the queue's tables with the wrong columns."""
    tables = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    ours = tables & set(QUEUE_TABLES)
    if not tables:
        return True
    if not ours:
        shown = ", ".join(sorted(tables)[:5])
        raise NotAQueue(f"a database of something else (tables {shown}), not a sample queue")
    for table, columns in QUEUE_TABLES.items():
        if table not in tables:
            raise NotAQueue(f"table {table} is missing")
        found = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
        if found != columns:
            raise NotAQueue(f"table {table} has columns ({', '.join(found)}), not ({', '.join(columns)})")
    return False


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename the database (and its ``-wal``/``-shm``, which belong to it) to
    ``<name>.corrupt-<UTC time>``; returns the new path of the database."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    serial = 1
    while target.exists():
        serial += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{serial}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists() or source.is_symlink():
            os.replace(source, target.with_name(target.name + suffix))
    fsync_directory(path.parent)
    return target


def queue_id_of(db: sqlite3.Connection) -> str | None:
    """The queue id stored in the database (None: a database without one)."""
    db.execute(META_SCHEMA)
    row = db.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (QUEUE_ID_KEY,)).fetchone()
    return str(row[0]) if row else None


def new_queue_id(db: sqlite3.Connection) -> str:
    queue_id = uuid.uuid4().hex
    with db:
        db.execute(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)",
                   (QUEUE_ID_KEY, queue_id))
    return queue_id


def last_sample_id(db: sqlite3.Connection) -> int:
    """The highest sample id ever committed (AUTOINCREMENT's counter: never goes down)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
    return int(row[0]) if row and isinstance(row[0], int) else 0


@dataclass(frozen=True)
class QueueRecord:
    """What the sidecar says about the queue beside it (see the module docstring)."""

    queue_id: str
    last_id: int
    waiting: int
    written_at: float

    @staticmethod
    def path_for(database: Path) -> Path:
        return database.with_name(database.name + RECORD_SUFFIX)

    @classmethod
    def read(cls, database: Path) -> QueueRecord | None:
        """The sidecar of ``database``; None when there is none or it is not one of ours (a
        sidecar that cannot be read can tell nothing: it is rewritten)."""
        path = cls.path_for(database)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                data = json.loads(handle.read(RECORD_MAX_BYTES + 1)[:RECORD_MAX_BYTES])
            record = cls(str(data["queue_id"]), int(data["last_id"]), int(data["waiting"]),
                         float(data["written_at"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not math.isfinite(record.written_at):
            return None
        return record

    def write(self, database: Path, *, sync: bool) -> None:
        """Replace the sidecar (temp file + rename); ``sync``: fsync the file and the directory."""
        path = self.path_for(database)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps({"queue_id": self.queue_id, "last_id": self.last_id, "waiting": self.waiting,
                           "written_at": self.written_at}).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                if sync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        if sync:
            fsync_directory(path.parent)


def compare(database: Path, record: QueueRecord | None, *, queue_id: str | None, last_id: int,
            existed: bool, moved: tuple[Path, str] | None) -> str | None:
    """What went wrong between the last record and the database as opened, as one line for the
    log (None: nothing, or nothing can be told without a record). ``queue_id``: the database's
    (None: it had none, i.e. it is new or was emptied); ``existed``: the file was there before
    this open; ``moved``: where a malformed file was moved, and why."""
    if moved is not None:
        line = (f"sample queue {database} is not a queue database ({moved[1]}): moved aside to {moved[0]}; "
                "starting with an empty queue")
        if record is not None:
            line += (f" (it held {record.waiting} samples waiting, sample ids up to {record.last_id}, when "
                     f"last recorded at {_utc(record.written_at)}: not delivered from there)")
        return line
    if record is None:
        return None
    held = (f"it held {record.waiting} samples waiting (sample ids up to {record.last_id}) when last "
            f"recorded at {_utc(record.written_at)}")
    if queue_id is None:
        what = "was emptied or truncated" if existed else "is gone (deleted)"
        return f"sample queue {database} {what}: {held}; those samples are lost; starting with an empty queue"
    if queue_id != record.queue_id:
        return (f"sample queue {database} was replaced by another queue (id {queue_id}, expected "
                f"{record.queue_id}): {held}; those are not in it; delivering what the new file holds")
    if last_id < record.last_id:
        return (f"sample queue {database} went back in time: its last sample id is {last_id}, but ids up "
                f"to {record.last_id} were committed ({held}); samples after id {last_id} are lost")
    return None


# -- rows ------------------------------------------------------------------------------------------

class Undecodable(NamedTuple):
    """Why a row cannot be decoded (``reason``, one line) and its dead-letter ``kind``."""

    reason: str
    kind: str


def decode_row(sensor: Any, vals: Any, timestamp_ms: Any) -> tuple[str, dict[str, Any], int] | Undecodable:
    """A row's sensor name, values and timestamp as delivery needs them, or `Undecodable`
    when the row cannot be decoded. Text arrives as the connection's ``text_factory`` makes it
    (UTF-8 with surrogate escapes: a byte that is not UTF-8 becomes a lone surrogate, found here
    instead of failing the whole fetch)."""
    if isinstance(sensor, bytes) or (isinstance(sensor, str) and not _utf8(sensor)):
        return Undecodable("sensor name is not UTF-8 text", NOT_UTF8)
    if not isinstance(sensor, str):
        return Undecodable(f"sensor name is {type(sensor).__name__}, not text", BAD_COLUMN)
    if isinstance(timestamp_ms, float) and timestamp_ms.is_integer():
        timestamp_ms = int(timestamp_ms)
    if not isinstance(timestamp_ms, int):
        return Undecodable(f"timestamp {_short(timestamp_ms)} is not an integer number of ms", BAD_COLUMN)
    if isinstance(vals, bytes):
        try:
            vals = vals.decode("utf-8")
        except UnicodeDecodeError:
            return Undecodable(f"values of {sensor!r} are not UTF-8 (bytes {_short(vals)})", NOT_UTF8)
    if not isinstance(vals, str):
        return Undecodable(f"values of {sensor!r} are {type(vals).__name__} {_short(vals)}, not JSON text",
                           NOT_JSON)
    if not _utf8(vals):
        return Undecodable(f"values of {sensor!r} are not UTF-8 ({_short(vals)})", NOT_UTF8)
    try:
        values = json.loads(vals)
    except ValueError as exc:
        return Undecodable(f"values of {sensor!r} are not JSON ({exc}): {_short(vals)}", NOT_JSON)
    except RecursionError:          # "[[[[…": nested deeper than the parser goes
        return Undecodable(f"values of {sensor!r} are nested too deeply to be a sample: {_short(vals)}",
                           NOT_JSON)
    if not isinstance(values, dict):
        shown = "null" if values is None else type(values).__name__
        return Undecodable(f"values of {sensor!r} are {shown}, not a JSON object: {_short(vals)}", NOT_OBJECT)
    for key, value in values.items():
        if isinstance(value, dict | list) or value is None:
            return Undecodable(f"value {key!r} of {sensor!r} is {_short(value)}, not a number, boolean or "
                               "string", BAD_VALUE)
    return sensor, values, timestamp_ms


def _utc(at: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    except (OverflowError, OSError, ValueError):
        return f"{at:g}"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(value: Any) -> str:
    shown = ascii(value)
    return shown if len(shown) <= 60 else shown[:59] + "…"
