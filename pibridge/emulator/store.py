"""The emulator's SQLite database: clients, inventory, error reports and every accepted value.

One writer (the core's worker thread) owns a `Store`; readers (``emulator dump``, the test
fixture) open the file separately, which WAL mode allows while the emulator runs.

Transactions are explicit (the connection is in autocommit mode): the core opens one transaction
per batch of requests (`begin`), wraps each request in a savepoint (`savepoint` / `release` /
`rollback_to_savepoint`) so one failing request never takes another's changes with it, and
answers only after `commit` returned: an acknowledged value is committed. Durability: WAL +
``synchronous=NORMAL`` (a committed batch survives the emulator's crash; the agent's own
power-loss behaviour is not known and the emulator does not pay an fsync per batch for it).

Every method writes the database first and changes the in-memory objects it is given only once
its statements succeeded, so a failing statement leaves memory and database alike.

Tables (ids are per client; ``sensors.id``/``metrics.id`` are internal row ids that also give
creation order)::

    clients(cid PK, serial TEXT, created_ms, revoked_ms NULL)
    sensors(id PK, cid, sid, name)                    UNIQUE(cid, sid)
    metrics(id PK, sensor→sensors.id, mid, name, unit, vtype, annotation)  UNIQUE(sensor, mid)
    vals(metric→metrics.id, ts ms, value)             PK(metric, ts)  -- (metric, timestamp) key
    error_reports(id PK, cid, sid, mid, received_ms, payload BLOB)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DB_NAME = "emulator.db"
#: Same metric + timestamp replaces: values are keyed by (metric, timestamp) (agent-api.md §4).
INSERT_VALUE = "INSERT OR REPLACE INTO vals(metric, ts, value) VALUES (?, ?, ?)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients(cid TEXT PRIMARY KEY, serial TEXT NOT NULL, created_ms INTEGER NOT NULL,
                                   revoked_ms INTEGER);
CREATE TABLE IF NOT EXISTS sensors(id INTEGER PRIMARY KEY, cid TEXT NOT NULL, sid TEXT NOT NULL,
                                   name TEXT NOT NULL, UNIQUE(cid, sid));
CREATE TABLE IF NOT EXISTS metrics(id INTEGER PRIMARY KEY, sensor INTEGER NOT NULL, mid TEXT NOT NULL,
                                   name TEXT NOT NULL, unit TEXT, vtype TEXT, annotation TEXT,
                                   UNIQUE(sensor, mid));
CREATE TABLE IF NOT EXISTS vals(metric INTEGER NOT NULL, ts INTEGER NOT NULL, value,
                                PRIMARY KEY(metric, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS error_reports(id INTEGER PRIMARY KEY, cid TEXT NOT NULL, sid TEXT, mid TEXT,
                                         received_ms INTEGER NOT NULL, payload BLOB NOT NULL);
"""


@dataclass
class Metric:
    """A metric: either ``unit`` (predefined) or ``vtype`` + ``annotation`` (custom)."""

    row: int
    mid: str
    name: str
    unit: str | None
    vtype: str | None
    annotation: str | None

    def describe(self) -> dict[str, Any]:
        """The describe-metric answer (agent-api.md §4)."""
        if self.unit is not None:
            return {"metricId": self.mid, "name": self.name, "valueUnit": self.unit}
        return {"metricId": self.mid, "name": self.name, "valueType": self.vtype,
                "valueAnnotation": self.annotation or ""}


@dataclass
class Sensor:
    row: int
    sid: str
    name: str
    metrics: dict[str, Metric] = field(default_factory=dict)


@dataclass
class Client:
    cid: str
    serial: int
    revoked: bool
    sensors: dict[str, Sensor] = field(default_factory=dict)


class StoreCorrupt(Exception):
    """The database opens but holds rows the emulator cannot use (one line for the CLI)."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, schema created."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``): for ``emulator dump`` and the error reports, which
    must not write — not even the WAL switch or the schema — on a read-only or full state dir.

    SQLite cannot open a WAL database read-only where its ``-shm`` file is missing and cannot be
    created (a read-only directory, the emulator stopped): then, if no ``-wal`` file holds
    anything either, the database file is all there is and is opened ``immutable``."""
    uri = Path(path).resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False,
                               isolation_level=None)
    return conn


class BatchLost(Exception):
    """Writing the value rows of earlier requests failed: nothing of the batch can be committed
    (raised instead of the sqlite3 error so no single request is blamed for it)."""


class Store:
    """Write access to the database; `load` gives the inventory the core keeps in memory.

    Transactions (see the module notes): `begin` … `commit` per batch; inside, each request
    between `begin_request` and `end_request` (or `undo_request`). The savepoint that makes a
    request undoable is opened lazily, at its first write: a request that writes nothing (a ping,
    a refusal) or only values pays no SAVEPOINT/RELEASE. Pushed value rows are buffered: a
    request's own rows join the batch's at `end_request` (dropped by `undo_request`), and the
    batch's rows are written with one statement before any other write (so statements keep
    their order) and at `commit`. They were checked before (`core.check_storable`): only the
    environment (a full disk) can fail that statement, and then the batch fails (`BatchLost`)."""

    SAVEPOINT = "request"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path)
        self._batch_values: list[tuple[int, int, Any]] = []  # of finished requests
        self._request_values: list[tuple[int, int, Any]] = []  # of the current request
        self._in_request = False
        self._savepoint_open = False
        #: False: a request's values are written at once, inside its savepoint (slower, but a
        #: failing value row then fails its own request only; `core.Core.process` retries so).
        self.buffer_values = True

    # -- transactions -----------------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """False after SQLite rolled a failed transaction back by itself (e.g. on a full disk)."""
        return self._db.in_transaction

    @property
    def total_changes(self) -> int:
        """Rows changed through this connection so far (tells a batch that wrote from one that only read)."""
        return self._db.total_changes

    @property
    def request_wrote(self) -> bool:
        """Has the current request changed anything (a statement, or buffered values)?"""
        return self._savepoint_open or bool(self._request_values)

    def begin(self) -> None:
        self._db.execute("BEGIN")

    def commit(self) -> None:
        self._write_batch_values()
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        """Drop everything since `begin` (nothing when SQLite already rolled back)."""
        self._batch_values.clear()
        self._request_values.clear()
        self._in_request = self._savepoint_open = False
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def begin_request(self) -> None:
        self._in_request = True

    def end_request(self) -> None:
        """Keep the request's changes (part of the batch from now on)."""
        self._batch_values.extend(self._request_values)
        self._request_values.clear()
        self._in_request = False
        if self._savepoint_open:
            self._savepoint_open = False
            self._db.execute(f"RELEASE {self.SAVEPOINT}")

    def undo_request(self) -> None:
        """Undo everything the current request changed."""
        self._request_values.clear()
        self._in_request = False
        if self._savepoint_open:
            self._savepoint_open = False
            self._db.execute(f"ROLLBACK TO {self.SAVEPOINT}")
            self._db.execute(f"RELEASE {self.SAVEPOINT}")

    def _write(self) -> sqlite3.Connection:
        """The connection, for a statement that changes something: earlier requests' value rows
        written first (call order), the current request's savepoint open."""
        self._write_batch_values()
        if self._in_request and not self._savepoint_open:
            self._db.execute(f"SAVEPOINT {self.SAVEPOINT}")
            self._savepoint_open = True
            if self._request_values:  # inside the savepoint: undone with the request
                rows, self._request_values = self._request_values, []
                self._db.executemany(INSERT_VALUE, rows)
        return self._db

    def _write_batch_values(self) -> None:
        if not self._batch_values:
            return
        rows, self._batch_values = self._batch_values, []
        try:
            self._db.executemany(INSERT_VALUE, rows)
        except sqlite3.Error as exc:
            raise BatchLost(f"cannot store the batch's values: {exc}") from exc

    def close(self) -> None:
        if self._db.in_transaction:
            self.commit()
        self._db.close()

    def load(self) -> dict[str, Client]:
        """Every client (revoked ones too) with its sensors and metrics, in creation order.
        Raises `StoreCorrupt` for a client whose certificate serial is not a number."""
        db = self._db
        clients = {}
        for cid, serial, revoked in db.execute("SELECT cid, serial, revoked_ms FROM clients ORDER BY rowid"):
            clients[cid] = Client(cid, _serial(cid, serial), revoked is not None)
        by_row: dict[int, Sensor] = {}
        for row, cid, sid, name in db.execute("SELECT id, cid, sid, name FROM sensors ORDER BY id"):
            client = clients.get(cid)
            if client is not None:
                client.sensors[sid] = by_row[row] = Sensor(row, sid, name)
        for row, sensor, mid, name, unit, vtype, annotation in db.execute(
                "SELECT id, sensor, mid, name, unit, vtype, annotation FROM metrics ORDER BY id"):
            if sensor in by_row:
                by_row[sensor].metrics[mid] = Metric(row, mid, name, unit, vtype, annotation)
        return clients

    def has_clients(self) -> bool:
        return self._db.execute("SELECT 1 FROM clients LIMIT 1").fetchone() is not None

    # -- clients --------------------------------------------------------------------------------
    def add_client(self, cid: str, serial: int, now_ms: int) -> None:
        self._write().execute("INSERT INTO clients(cid, serial, created_ms) VALUES (?, ?, ?)",
                         (cid, str(serial), now_ms))

    def revoke_client(self, cid: str, now_ms: int) -> list[int]:
        """Mark ``cid`` revoked; returns every revoked serial (the CRL's content)."""
        self._write().execute("UPDATE clients SET revoked_ms = ? WHERE cid = ?", (now_ms, cid))
        return self.revoked_serials()

    def revoked_serials(self) -> list[int]:
        rows = self._db.execute("SELECT cid, serial FROM clients WHERE revoked_ms IS NOT NULL")
        return [_serial(cid, s) for cid, s in rows]

    # -- inventory -----------------------------------------------------------------------------
    def add_sensor(self, cid: str, sid: str, name: str) -> Sensor:
        cur = self._write().execute("INSERT INTO sensors(cid, sid, name) VALUES (?, ?, ?)", (cid, sid, name))
        return Sensor(int(cur.lastrowid or 0), sid, name)

    def rename_sensor(self, sensor: Sensor, name: str) -> None:
        self._write().execute("UPDATE sensors SET name = ? WHERE id = ?", (name, sensor.row))
        sensor.name = name

    def delete_sensor(self, sensor: Sensor) -> None:
        self.delete_metrics(list(sensor.metrics.values()))
        self._write().execute("DELETE FROM sensors WHERE id = ?", (sensor.row,))

    def add_metric(self, sensor: Sensor, mid: str, name: str, unit: str | None, vtype: str | None,
                   annotation: str | None) -> Metric:
        cur = self._write().execute(
            "INSERT INTO metrics(sensor, mid, name, unit, vtype, annotation) VALUES (?, ?, ?, ?, ?, ?)",
            (sensor.row, mid, name, unit, vtype, annotation))
        metric = Metric(int(cur.lastrowid or 0), mid, name, unit, vtype, annotation)
        sensor.metrics[mid] = metric
        return metric

    def update_metric(self, metric: Metric, name: str | None, annotation: str | None) -> None:
        """Change name and/or annotation (None: keep)."""
        new_name = metric.name if name is None else name
        new_annotation = metric.annotation if annotation is None else annotation
        self._write().execute("UPDATE metrics SET name = ?, annotation = ? WHERE id = ?",
                         (new_name, new_annotation, metric.row))
        metric.name, metric.annotation = new_name, new_annotation

    def delete_metrics(self, metrics: list[Metric]) -> None:
        rows = [(m.row,) for m in metrics]
        db = self._write()
        db.executemany("DELETE FROM vals WHERE metric = ?", rows)
        db.executemany("DELETE FROM metrics WHERE id = ?", rows)

    def put_values(self, rows: Iterable[tuple[int, int, Any]]) -> None:
        """Store (metric row, timestamp ms, value); same metric + timestamp replaces. Buffered (see
        the class notes); values must be what SQLite binds (`core.check_storable`, `core.storable`)."""
        if self.buffer_values and self._in_request and not self._savepoint_open:
            self._request_values.extend(rows)
        else:
            self._write().executemany(INSERT_VALUE, rows)

    def add_error_report(self, cid: str, sid: str | None, mid: str | None, now_ms: int,
                         payload: bytes) -> None:
        self._write().execute("INSERT INTO error_reports(cid, sid, mid, received_ms, payload) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (cid, sid, mid, now_ms, payload))

    def wipe_inventory(self, cid: str | None = None) -> None:
        """Delete every sensor, metric and value (of one client, or of all); clients stay."""
        db = self._write()
        if cid is None:
            db.execute("DELETE FROM vals")
            db.execute("DELETE FROM metrics")
            db.execute("DELETE FROM sensors")
            return
        sensors = "SELECT id FROM sensors WHERE cid = ?"
        db.execute(f"DELETE FROM vals WHERE metric IN "
                   f"(SELECT id FROM metrics WHERE sensor IN ({sensors}))", (cid,))
        db.execute(f"DELETE FROM metrics WHERE sensor IN ({sensors})", (cid,))
        db.execute("DELETE FROM sensors WHERE cid = ?", (cid,))


def _serial(cid: str, serial: object) -> int:
    try:
        return int(str(serial))
    except ValueError:
        raise StoreCorrupt(f"client {cid} has a certificate serial that is not a number "
                           f"(clients.serial = {str(serial)[:40]!r})") from None


def error_reports(path: Path) -> list[dict[str, Any]]:
    """Stored error reports, oldest first (for tests and diagnostics)."""
    conn = connect_read_only(path)
    try:
        conn.execute("BEGIN")  # one snapshot while the emulator writes
        return [{"clientId": cid, "sensorId": sid, "metricId": mid, "receivedMs": ms, "payload": bytes(p)}
                for cid, sid, mid, ms, p in conn.execute(
                    "SELECT cid, sid, mid, received_ms, payload FROM error_reports ORDER BY id")]
    finally:
        conn.close()


def dump(path: Path) -> dict[str, Any]:
    """Everything of the live (not deprovisioned) clients, in the ``emulator dump`` format."""
    conn = connect_read_only(path)
    try:
        conn.execute("BEGIN")  # one snapshot while the emulator writes
        out: list[dict[str, Any]] = []
        live = "SELECT cid FROM clients WHERE revoked_ms IS NULL ORDER BY rowid"
        for (cid,) in conn.execute(live).fetchall():
            sensors = []
            for srow, sid, sname in conn.execute(
                    "SELECT id, sid, name FROM sensors WHERE cid = ? ORDER BY id", (cid,)).fetchall():
                metrics = []
                for mrow, mid, mname, unit, vtype, annotation in conn.execute(
                        "SELECT id, mid, name, unit, vtype, annotation FROM metrics "
                        "WHERE sensor = ? ORDER BY id",
                        (srow,)).fetchall():
                    metric = Metric(mrow, mid, mname, unit, vtype, annotation).describe()
                    as_bool = vtype == "bool"
                    metric["values"] = [
                        {"timestamp": ts, "value": bool(v) if as_bool else v}
                        for ts, v in conn.execute(
                            "SELECT ts, value FROM vals WHERE metric = ? ORDER BY ts", (mrow,))]
                    metrics.append(metric)
                sensors.append({"sensorId": sid, "name": sname, "metrics": metrics})
            out.append({"clientId": cid, "sensors": sensors})
        return {"clients": out}
    finally:
        conn.close()
