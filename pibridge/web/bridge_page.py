"""The bridge's own page: what `pibridge status` says, live, with a chart per metric.

    GET /                  the page (bridge.html + bridge.js + uPlot, all package data)
    GET /api/status        the JSON document `pibridge status --json` prints, from the snapshot
                           in memory (`StatusTracker.snapshot`, never the file)
    GET /api/events        Server-Sent Events: ``state`` events (see `BridgePage.event`)
    GET /api/history?sensor=S&metric=KEY   one metric's window (`MetricHistory`), display units
    GET /metrics           Prometheus text (`pibridge.web.metrics`)

Read-only: nothing here changes the bridge. Values leave through `pibridge.web.display.shown`
(pressure in hPa, every value with its unit). With a token, ``/api/*`` and ``/metrics`` need it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pibridge.bridge.status import BridgeStatus, StatusTracker, assess, boot_id

from . import metrics
from .auth import TokenCheck, read_token
from .display import shown, shown_text
from .events import Broadcaster, sse_event
from .history import MetricHistory
from .server import BadRequest, Request, Response, StaticFiles, Stream, WebServer, dumps, json_response, text

if TYPE_CHECKING:
    from pibridge.bridge.model import TakenSample

#: sensor → its metrics as (key, agent name, agent unit or None, annotation or None), in order
Describe = Callable[[], Mapping[str, Sequence[tuple[str, str, str | None, str | None]]]]


class BridgePage:
    """The request handler and the event source of the bridge's page (see the module docstring).
    ``refreshed()``: the service fed the tracker anew (bumps the change counter)."""

    def __init__(self, tracker: StatusTracker, history: MetricHistory, describe: Describe,
                 token: TokenCheck | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.tracker, self.history, self.describe = tracker, history, describe
        self.token = token or TokenCheck(None)
        self.static = StaticFiles("bridge.html")
        self._clock = clock
        self._refreshes = 0
        self._signature: tuple[Any, ...] = ()
        self._seen_lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._pid, self._boot_id = os.getpid(), boot_id()
        self.broadcaster = Broadcaster(self.version, self.event)

    # --- the change counter and the event ------------------------------------------------------------
    def refreshed(self) -> None:
        """(Main loop, once a second.) The tracker was fed: the change counter moves if a counter,
        a state, the queue's depth, the agent's connection or the clock moved (a few sums)."""
        status = self.tracker.snapshot()
        signature = (sum(s.taken + s.pushed + s.failed + s.skipped + s.dead_lettered for s in status.sensors),
                     tuple(s.state for s in status.sensors), status.queue.depth, status.queue.dropped,
                     status.agent.connected, status.clock.synchronised, len(status.recent_errors),
                     status.restart_pending)
        if signature != self._signature:
            self._signature = signature
            self._refreshes += 1

    def version(self) -> int:
        return self.history.version * 1_000_003 + self._refreshes

    def snapshot(self) -> BridgeStatus:
        """The tracker's snapshot stamped as the status file would be (pid, boot, written at)."""
        return dataclasses.replace(self.tracker.snapshot(), pid=self._pid, boot_id=self._boot_id,
                                   written_at=self._clock(), written_monotonic=time.monotonic())

    def status_document(self, status: BridgeStatus) -> dict[str, Any]:
        """What `pibridge status --json` prints for this one bridge."""
        health = assess(status)
        return {"exit": health.level, "health": health.label, "bridges": [{
            "path": "memory", "health": health.label, "exit": health.level, "reasons": list(health.reasons),
            "fresh": True, "age_s": 0.0, "status": status.to_dict()}]}

    def _units(self) -> dict[tuple[str, str], tuple[str, str | None, str | None]]:
        return {(sensor, key): (name, unit, annotation)
                for sensor, metric_list in self.describe().items()
                for key, name, unit, annotation in metric_list}

    def event(self, first: bool) -> bytes:
        """A ``state`` event: ``status`` (as /api/status), ``shown`` (sensor → key → text, number,
        symbol, agent name), ``points`` (sensor → key → [timestamps], [values]: points added since
        the previous event, display units; empty in a subscriber's first event)."""
        status = self.snapshot()
        units = self._units()
        display: dict[str, dict[str, dict[str, Any]]] = {}
        for sensor in status.sensors:
            shown_values = display[sensor.name] = {}
            for reading in sensor.values:
                fallback = (reading.name, None, reading.unit)
                name, unit, annotation = units.get((sensor.name, reading.key), fallback)
                number, symbol = shown(reading.value, unit, annotation)
                shown_values[reading.key] = {"text": shown_text(reading.value, unit, annotation),
                                             "number": number, "symbol": symbol, "name": name}
        points: dict[str, dict[str, list[list[Any]]]] = {}
        if not first:
            with self._seen_lock:
                new, self._seen = self.history.since(self._seen)
            for (sensor_name, key), (ts, values) in new.items():
                _, unit, annotation = units.get((sensor_name, key), ("", None, None))
                points.setdefault(sensor_name, {})[key] = [ts, [self._convert(v, unit, annotation)
                                                                for v in values]]
        return sse_event("state", {"status": self.status_document(status), "shown": display,
                                   "points": points, "token_required": self.token.required})

    @staticmethod
    def _convert(value: float | None, unit: str | None, annotation: str | None) -> float | None:
        return None if value is None else shown(value, unit, annotation)[0]

    # --- requests --------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | Stream:
        path = request.path
        page = self.static.page(path)
        if page is not None:
            return page
        if path.startswith("/api/") or path == "/metrics":
            if not self.token.allowed(request):
                return self.token.refusal()
            if path == "/api/status":
                return json_response(dumps(self.status_document(self.snapshot())))
            if path == "/api/events":
                return Stream(self.broadcaster.subscribe)
            if path == "/api/history":
                return self.history_response(request)
            if path == "/metrics":
                units = self._units()
                body = metrics.render(self.snapshot(), self._clock(),
                                      lambda s, k: units.get((s, k), ("", None, None))[1:])
                return Response(HTTPStatus.OK, body.encode(), metrics.CONTENT_TYPE,
                                {"Cache-Control": "no-store"})
        return text(HTTPStatus.NOT_FOUND, "not found")

    def history_response(self, request: Request) -> Response:
        sensor, key = request.arg("sensor"), request.arg("metric")
        if not sensor or not key:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "sensor and metric are required")
        units = self._units()
        if (sensor, key) not in units:
            return text(HTTPStatus.NOT_FOUND, "no such sensor and metric")
        name, unit, annotation = units[(sensor, key)]
        window = self.history.window(sensor, key) or ([], [])
        symbol = shown(0.0, unit, annotation)[1]
        return json_response(dumps({
            "sensor": sensor, "metric": key, "name": name, "unit": symbol, "bound": self.history.bound,
            "ts": window[0], "values": [self._convert(v, unit, annotation) for v in window[1]]}))


class BridgeWeb:
    """The page as the service runs it: binds ``address`` at once (an `OSError` if taken, before
    anything else starts), reads the token file (`TokenError`), owns the history the service's
    sample sink feeds (`sample_stored`) and the broadcaster. `start` / `stop`."""

    def __init__(self, address: tuple[str, int], tracker: StatusTracker, describe: Describe,
                 intervals: Mapping[str, float], token_file: Path | None = None) -> None:
        token = read_token(token_file) if token_file is not None else None
        self.history = MetricHistory(intervals)
        self.page = BridgePage(tracker, self.history, describe, TokenCheck(token))
        self.server = WebServer(address, self.page.handle)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.page.broadcaster.start()
        self.server.start()

    def stop(self) -> None:
        self.page.broadcaster.stop()
        self.server.stop()

    def sample_stored(self, sample: TakenSample) -> None:
        """(Outbox thread.) A sample was committed: its values into the charts' windows."""
        at = sample.timestamp_ms / 1000.0 if sample.timestamp_ms is not None else time.time()
        self.history.add(sample.sensor, at, sample.values)

    def refreshed(self, intervals: Mapping[str, float] | None = None) -> None:
        """(Main loop.) The tracker was fed; ``intervals`` after a reload changed the sensors."""
        if intervals is not None:
            self.history.set_intervals(intervals)
        self.page.refreshed()
