"""The emulator's dashboard (``pibridge emulator serve --http ADDR``): what the emulated agent
holds — clients, their sensors and metrics (unit or type + annotation), and a time chart per
metric over a chosen range, live as pushes arrive, back-filled values (a drained backlog with old
timestamps) at their own timestamps.

    GET /                               the page (dashboard.html + dashboard.js + uPlot)
    GET /api/inventory                  clients → sensors → metrics, each with its first and last
                                        timestamp and last value (display units)
    GET /api/values?metric=ROW&range=R  one metric's values; R = 15m, 1h, 24h or all; more than
                                        `MAX_POINTS` values are averaged into `MAX_POINTS` buckets
                                        on the server (always so for "all")
    GET /api/events                     SSE: ``state`` events (the inventory) whenever the database changed

Reads go through ONE read-only SQLite connection of its own (``mode=ro``, WAL: readers never block
the core's writer, and the core never waits on this). Range queries use the values table's
primary key ``(metric, ts)`` (it is ``WITHOUT ROWID``: the table IS that index), so a range costs
a seek plus the rows in it, never a full dump. Change detection: ``PRAGMA data_version`` (moves
when another connection commits), polled by the one broadcaster thread.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from .display import shown, shown_text
from .events import Broadcaster, sse_event
from .server import BadRequest, Request, Response, StaticFiles, Stream, WebServer, dumps, json_response, text

RANGES_S: dict[str, float | None] = {"15m": 15 * 60.0, "1h": 3600.0, "24h": 86_400.0, "all": None}
MAX_POINTS = 1000
MS = 1000
#: ``metric=``: a row number in ASCII digits, short enough for SQLite's 64-bit integers (``"²"``
#: is a digit to `str.isdigit`, not to `int`; 10**30 overflows SQLite: both were a 500)
METRIC_ROW = re.compile(r"[0-9]{1,18}")


class StoreReader:
    """Read-only queries on the emulator's database (one connection, one lock: requests are
    short; the emulator's own writer is never blocked by a WAL reader)."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self._path, self._connect = path, connect
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        #: (data_version it was built at, inventory): rebuilt only when another connection committed
        self._inventory_cache: tuple[int, dict[str, Any]] | None = None
        self.inventories_built = 0

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect(self._path)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._inventory_cache = None

    def data_version(self) -> int:
        with self._lock:
            return int(self._db().execute("PRAGMA data_version").fetchone()[0])

    def inventory(self) -> dict[str, Any]:
        """Clients → sensors → metrics; built once per ``PRAGMA data_version`` (every event and
        every new browser between two commits of the emulator share one). The version is read
        before the snapshot: a commit in between costs one more build, never a stale cache.
        Callers must not change the dict."""
        with self._lock:
            db = self._db()
            version = int(db.execute("PRAGMA data_version").fetchone()[0])
            if self._inventory_cache is not None and self._inventory_cache[0] == version:
                return self._inventory_cache[1]
            db.execute("BEGIN")
            try:
                inventory = self._inventory(db)
            finally:
                db.execute("COMMIT")
            self._inventory_cache = (version, inventory)
            self.inventories_built += 1
            return inventory

    def _inventory(self, db: sqlite3.Connection) -> dict[str, Any]:
        clients = []
        for cid, created_ms in db.execute(
                "SELECT cid, created_ms FROM clients WHERE revoked_ms IS NULL ORDER BY rowid").fetchall():
            sensors = []
            for srow, sid, sname in db.execute("SELECT id, sid, name FROM sensors WHERE cid = ? ORDER BY id",
                                               (cid,)).fetchall():
                metrics = []
                for mrow, mid, mname, unit, vtype, annotation in db.execute(
                        "SELECT id, mid, name, unit, vtype, annotation FROM metrics WHERE sensor = ? "
                        "ORDER BY id",
                        (srow,)).fetchall():
                    # two primary-key seeks (no count: that would read every value of the metric)
                    first = db.execute("SELECT MIN(ts) FROM vals WHERE metric = ?", (mrow,)).fetchone()[0]
                    last_ts = db.execute("SELECT MAX(ts) FROM vals WHERE metric = ?", (mrow,)).fetchone()[0]
                    last = db.execute("SELECT value FROM vals WHERE metric = ? AND ts = ?",
                                      (mrow, last_ts)).fetchone() if last_ts is not None else None
                    value = _typed(last[0], vtype) if last else None
                    symbol = shown(0.0, unit, annotation)[1]
                    metrics.append({"row": mrow, "metricId": mid, "name": mname, "valueUnit": unit,
                                    "valueType": vtype, "valueAnnotation": annotation, "unit": symbol,
                                    "first_ts": first / MS if first is not None else None,
                                    "last_ts": last_ts / MS if last_ts is not None else None,
                                    "last_text": shown_text(value, unit, annotation) if last else "–",
                                    "chartable": vtype in (None, "double", "integer", "bool")})
                sensors.append({"sensorId": sid, "name": sname, "metrics": metrics})
            clients.append({"clientId": cid, "created": created_ms / MS, "sensors": sensors})
        return {"clients": clients}

    def values(self, metric: int, range_s: float | None, now: float) -> dict[str, Any]:
        """One metric's values over the last ``range_s`` s (None: all), at most `MAX_POINTS`:
        (averaged) timestamps and values in display units."""
        with self._lock:
            db = self._db()
            row = db.execute("SELECT unit, vtype, annotation FROM metrics WHERE id = ?", (metric,)).fetchone()
            if row is None:
                raise BadRequest(HTTPStatus.NOT_FOUND, "no such metric")
            unit, _, annotation = row
            start = -(2**62) if range_s is None else int((now - range_s) * MS)
            numeric = "typeof(value) IN ('integer', 'real')"
            count, first, last = db.execute(
                f"SELECT COUNT(*), MIN(ts), MAX(ts) FROM vals WHERE metric = ? AND ts >= ? AND {numeric}",
                (metric, start)).fetchone()
            if count <= MAX_POINTS:
                rows = db.execute(f"SELECT ts, value FROM vals WHERE metric = ? AND ts >= ? AND {numeric} "
                                  "ORDER BY ts", (metric, start)).fetchall()
                downsampled = False
            else:
                width = max(1, -(-(last - first + 1) // MAX_POINTS))   # ms per bucket, rounded up
                rows = db.execute(
                    f"SELECT MIN(ts), AVG(value) FROM vals WHERE metric = ? AND ts >= ? AND {numeric} "
                    "GROUP BY (ts - ?) / ? ORDER BY 1", (metric, start, first, width)).fetchall()
                downsampled = True
        symbol = shown(0.0, unit, annotation)[1]
        return {"metric": metric, "unit": symbol, "count": count, "downsampled": downsampled,
                "ts": [ts / MS for ts, _ in rows],
                "values": [shown(float(value), unit, annotation)[0] for _, value in rows]}


def _typed(value: Any, vtype: str | None) -> Any:
    return bool(value) if vtype == "bool" and value is not None else value


class Dashboard:
    """The handler and event source of the dashboard; `start`/`stop` with its `WebServer`."""

    def __init__(self, address: tuple[str, int], db_path: Path,
                 connect: Callable[[Path], sqlite3.Connection] | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        if connect is None:
            from pibridge.emulator.store import connect_read_only
            connect = connect_read_only
        self.reader = StoreReader(db_path, connect)
        self.static = StaticFiles("dashboard.html")
        self._clock = clock
        self.broadcaster = Broadcaster(self.reader.data_version, self.event)
        self.server = WebServer(address, self.handle)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.broadcaster.start()
        self.server.start()

    def stop(self) -> None:
        self.broadcaster.stop()
        self.server.stop()
        self.reader.close()

    def event(self, first: bool) -> bytes:
        del first
        return sse_event("state", self.reader.inventory())

    def handle(self, request: Request) -> Response | Stream:
        path = request.path
        page = self.static.page(path)
        if page is not None:
            return page
        if path == "/api/inventory":
            return json_response(dumps(self.reader.inventory()))
        if path == "/api/values":
            metric_text, range_name = request.arg("metric") or "", request.arg("range") or "1h"
            if not METRIC_ROW.fullmatch(metric_text):
                raise BadRequest(HTTPStatus.BAD_REQUEST, "metric must be a metric's row number")
            if range_name not in RANGES_S:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"range must be one of {', '.join(RANGES_S)}")
            values = self.reader.values(int(metric_text), RANGES_S[range_name], self._clock())
            return json_response(dumps(values))
        if path == "/api/events":
            return Stream(self.broadcaster.subscribe)
        return text(HTTPStatus.NOT_FOUND, "not found")
