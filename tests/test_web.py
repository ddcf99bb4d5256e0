"""The web layer without a browser: addresses, display units, the history rings, /metrics in the
exposition format (parsed by prometheus_client), the bounded server against a table of hostile
requests, the token rules, one broadcaster for many event streams, the vendored files."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pibridge.bridge.status import BridgeStatus, StatusTracker, TrackedSensor
from pibridge.web import metrics
from pibridge.web.address import AddressError, check_exposure, is_loopback, parse_address
from pibridge.web.auth import COOKIE, TokenCheck, TokenError, read_token
from pibridge.web.bridge_page import BridgePage
from pibridge.web.display import shown, shown_text
from pibridge.web.history import MetricHistory
from pibridge.web.server import MAX_HEAD_BYTES, MAX_HEADERS, WebServer

WAIT_S = 10.0
TOKEN = "s3cret-token-0123456789"
UNITS = {"Air": [("temperature", "Air temperature", "SI.Temperature.CELSIUS", None),
                 ("pressure", "Air pressure", "SI.Pressure.PASCAL", None)],
         'Bed "1"\\A': [("state", "Door", None, "open")]}


# --- addresses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:80", ("::1", 80)), ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("localhost:8080", ("localhost", 8080))])
def test_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000",
                                  "::1:8080", "a b:80", "127.0.0.1:-1"])
def test_bad_addresses_are_one_line(text: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert "\n" not in str(caught.value) and text in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"])
def test_loopback_addresses_and_localhost_are_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1.evil.example", "127.attacker.example", "127.", "127.0.0.1.",
                                  "0.0.0.0", "::", "192.168.1.10", "::ffff:127.0.0.1x", "localhost.example",
                                  "pi.local", "1270.0.0.1"])
def test_names_that_look_like_loopback_are_not(host: str) -> None:
    assert not is_loopback(host)
    assert check_exposure(f"{host}:8080" if ":" not in host else f"[{host}]:8080", None) is not None


def test_only_loopback_goes_without_a_token() -> None:
    for loopback in ("127.0.0.1:8080", "[::1]:8080", "localhost:1"):
        assert check_exposure(loopback, None) is None
    problem = check_exposure("0.0.0.0:8080", None)
    assert problem is not None and "http_token_file" in problem
    assert check_exposure("0.0.0.0:8080", Path("token")) is None


# --- display -------------------------------------------------------------------------------------------
def test_values_are_shown_in_the_units_a_person_reads() -> None:
    assert shown(101325.0, "SI.Pressure.PASCAL") == (pytest.approx(1013.25), "hPa")
    assert shown(19.1, "SI.Temperature.CELSIUS") == (19.1, "°C")
    assert shown(True, None, "open") == (True, "open")
    assert shown_text(101325.0, "SI.Pressure.PASCAL") == "1013 hPa"
    assert shown_text(19.14, "SI.Temperature.CELSIUS") == "19.14 °C"
    assert shown_text(None, "SI.Temperature.CELSIUS") == "–"


# --- history -------------------------------------------------------------------------------------------
def test_the_window_is_bounded_and_marks_missed_slots_as_gaps() -> None:
    history = MetricHistory({"Air": 5.0}, bound=4)
    for ts in (100.0, 105.0, 110.0):
        history.add("Air", ts, {"t": ts, "label": "text is not drawn"})
    history.add("Air", 130.0, {"t": 130.0})          # 20 s > 1.5 × 5 s: three slots missed
    ts, values = history.window("Air", "t") or ([], [])
    assert ts == [105.0, 110.0, 115.0, 130.0] and values == [105.0, 110.0, None, 130.0]
    assert history.window("Air", "label") is None
    history.add("Air", 120.0, {"t": 1.0})            # older than the last point: not drawn
    assert (history.window("Air", "t") or ([], []))[0][-1] == 130.0


def test_since_gives_each_point_once() -> None:
    history = MetricHistory({"Air": 1.0})
    history.add("Air", 1.0, {"t": 1.0, "flag": True})
    new, seen = history.since({})
    assert new == {("Air", "t"): ([1.0], [1.0]), ("Air", "flag"): ([1.0], [1.0])}
    history.add("Air", 2.0, {"t": 2.0})
    new, seen = history.since(seen)
    assert new == {("Air", "t"): ([2.0], [2.0])}
    assert history.since(seen)[0] == {}


# --- the page against a tracker -----------------------------------------------------------------------
def make_tracker() -> StatusTracker:
    tracker = StatusTracker("/etc/p.toml", "/var/lib/pibridge")
    tracker.set_sensors([TrackedSensor("Air", "bme280", 5.0, (("temperature", "Air temperature", "°C"),
                                                                ("pressure", "Air pressure", "Pa"))),
                         TrackedSensor('Bed "1"\\A', "digital_input", 1.0, (("state", "Door", "open"),))])
    tracker.sample_taken("Air", {"temperature": 19.25, "pressure": 101325.0}, at=time.time())
    tracker.read_failed('Bed "1"\\A', "GPIO 17: no such pin\nsecond line")
    return tracker


class Served:
    def __init__(self, page: Any, server: WebServer) -> None:
        """``page``: the `BridgePage` served (None for the dashboard)."""
        self.page, self.server = page, server
        self.host, self.port = server.address

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
                return answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def raw(self, data: bytes, *, wait_close: float = WAIT_S) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait_close) as sock:
            sock.sendall(data)
            return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def serve(token: str | None = None, *, head_timeout_s: float = 10.0,
          max_connections: int = 64) -> Iterator[Served]:
    history = MetricHistory({"Air": 5.0})
    history.add("Air", time.time() - 5, {"temperature": 19.0, "pressure": 101300.0})
    page = BridgePage(make_tracker(), history, lambda: UNITS, TokenCheck(token))
    server = WebServer(("127.0.0.1", 0), page.handle, head_timeout_s=head_timeout_s,
                       max_connections=max_connections)
    page.broadcaster.start()
    server.start()
    try:
        yield Served(page, server)
    finally:
        page.broadcaster.stop()
        server.stop()


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve(head_timeout_s=0.5, max_connections=16)


@pytest.fixture
def guarded() -> Iterator[Served]:
    yield from serve(TOKEN)


def test_api_status_is_the_status_json_document(served: Served) -> None:
    code, body, headers = served.get("/api/status")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["health"] == "degraded" and doc["exit"] == 1
    (bridge,) = doc["bridges"]
    status = BridgeStatus.from_dict(bridge["status"])      # the same schema `pibridge status` reads
    assert status.sensor("Air").values[0].value == 19.25
    assert status.sensor('Bed "1"\\A').state == "failing" and status.pid > 0 and status.written_at > 0
    assert any("failing" in reason for reason in bridge["reasons"])


def test_history_is_served_in_display_units(served: Served) -> None:
    code, body, _ = served.get("/api/history?sensor=Air&metric=pressure")
    window = json.loads(body)
    assert code == 200 and window["unit"] == "hPa" and window["values"] == [pytest.approx(1013.0)]
    assert served.get("/api/history?sensor=Air&metric=nope")[0] == 404
    assert served.get("/api/history?sensor=Air")[0] == 400


def test_metrics_parse_as_prometheus_text(served: Served) -> None:
    code, body, headers = served.get("/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(f.name, s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    odd = 'Bed "1"\\A'                                        # quotes and backslashes escaped
    assert samples[("pibridge_samples_taken", "pibridge_samples_taken_total", (("sensor", "Air"),))] == 1
    assert samples[("pibridge_reads_failed", "pibridge_reads_failed_total", (("sensor", odd),))] == 1
    assert samples[("pibridge_sensor_failing", "pibridge_sensor_failing", (("sensor", odd),))] == 1
    assert samples[("pibridge_metric_value", "pibridge_metric_value",
                    (("metric", "pressure"), ("sensor", "Air"), ("unit", "hPa")))] == pytest.approx(1013.25)
    assert families["pibridge_agent_connected"].samples[0].value == 0
    for name in ("pibridge_queue_depth", "pibridge_queue_oldest_age_seconds", "pibridge_clock_synchronised",
                 "pibridge_samples_pushed", "pibridge_slots_skipped", "pibridge_samples_dead_lettered",
                 "pibridge_agent_last_ack_age_seconds"):
        assert name in families
    assert all(name.startswith("pibridge_") for name in families)


def test_label_values_are_escaped() -> None:
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_the_page_and_its_files_load(served: Served) -> None:
    code, body, headers = served.get("/")
    assert code == 200 and b"/static/bridge.js" in body and headers["Content-Type"].startswith("text/html")
    for path in re.findall(rb'(?:src|href)="(/static/[^"]+)"', body):
        assert served.get(path.decode())[0] == 200, path
    assert served.get("/favicon.ico")[0] == 200
    assert served.get("/static/../server.py")[0] == 404
    assert served.get("/nothing")[0] == 404


# --- hostile requests ------------------------------------------------------------------------------------
HOSTILE: list[tuple[str, bytes, bytes]] = [
    ("oversized head", b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n", b" 413 "),
    ("too many headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
     + b"\r\n", b" 413 "),
    ("a body", b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b" 413 "),
    ("chunked body", b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b" 413 "),
    ("malformed request line", b"GARBAGE\r\n\r\n", b" 400 "),
    ("target without slash", b"GET index.html HTTP/1.1\r\n\r\n", b" 400 "),
    ("unknown version", b"GET / HTTP/9.9\r\n\r\n", b" 400 "),
    ("header without colon", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", b" 400 "),
    ("not ASCII", "GET /ä HTTP/1.1\r\n\r\n".encode(), b" 400 "),
    ("bad length", b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b" 400 "),
    ("a write", b"POST /api/status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b" 405 "),
    ("a delete", b"DELETE / HTTP/1.1\r\n\r\n", b" 405 "),
]


@pytest.mark.parametrize(("data", "status"), [(d, s) for _, d, s in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_requests_get_one_clear_answer(served: Served, data: bytes, status: bytes) -> None:
    answer = served.raw(data)
    first = answer.split(b"\r\n", 1)[0]
    assert status in first + b" ", answer[:200]
    assert b"Traceback" not in answer
    assert served.get("/api/status")[0] == 200              # nobody else affected


def test_a_slow_client_is_closed_after_the_head_deadline(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = threading.Event()

        def trickle() -> None:                               # one byte now and then, never finishing
            try:
                while not closed.wait(0.1):
                    sock.sendall(b"X")
            except OSError:
                pass
        threading.Thread(target=trickle, daemon=True).start()
        try:
            assert _read_all(sock) == b""                    # closed by the server, nothing answered
        finally:
            closed.set()
    assert served.get("/api/status")[0] == 200


def test_more_connections_than_slots_are_refused_not_queued(served: Served) -> None:
    """200 idle connections at once: 16 slots; the rest answered 503 at once; afterwards (the idle
    ones closed by the head deadline) the server serves again."""
    socks = [socket.create_connection(("127.0.0.1", served.port), timeout=WAIT_S) for _ in range(200)]
    try:
        refused = 0
        for sock in socks[100:]:
            sock.settimeout(WAIT_S)
            answer = _read_all(sock)
            refused += answer.startswith(b"HTTP/1.1 503")
        assert refused >= 100 - 16
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + WAIT_S
    while served.get("/api/status")[0] != 200:
        assert time.monotonic() < deadline
        threading.Event().wait(0.1)


# --- the token ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "code"), [
    ({}, 401),
    ({"Authorization": "Bearer wrong-token-0123456789"}, 401),
    ({"Authorization": f"Basic {TOKEN}"}, 401),
    ({"Authorization": "Bearer "}, 401),
    ({"Cookie": f"{COOKIE}=nope"}, 401),
    ({"Cookie": "garbage;;=;"}, 401),
    ({"Authorization": f"Bearer {TOKEN}"}, 200),
    ({"Cookie": f"other=1; {COOKIE}={TOKEN}"}, 200),
])
@pytest.mark.parametrize("path", ["/api/status", "/metrics", "/api/history?sensor=Air&metric=pressure"])
def test_with_a_token_every_api_asks_for_it(guarded: Served, path: str, headers: dict[str, str],
                                            code: int) -> None:
    assert guarded.get(path, headers)[0] == code


def test_with_a_token_the_page_itself_still_loads(guarded: Served) -> None:
    assert guarded.get("/")[0] == 200 and guarded.get("/static/bridge.js")[0] == 200


@pytest.mark.parametrize(("text", "problem"), [(None, "does not exist"), ("short", "at least 16"),
                                               ("with a space in it ok", "without spaces"), ("", "at least")])
def test_unusable_token_files_are_one_line(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "token"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TokenError, match=problem) as caught:
        read_token(path)
    assert str(path) in str(caught.value)


def test_surrounding_whitespace_is_not_part_of_the_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(f"\n  {TOKEN}\n")
    assert read_token(tmp_path / "token") == TOKEN


# --- one broadcaster ---------------------------------------------------------------------------------
def _events(port: int, count: int, out: list[bytes], ready: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"event: state") < count:
            data += sock.recv(65536)
            if data.count(b"event: state") >= 1:
                ready.set()
        out.append(data)


def test_every_client_gets_the_same_bytes_built_once(served: Served) -> None:
    outs: list[list[bytes]] = [[] for _ in range(3)]
    readies = [threading.Event() for _ in range(3)]
    threads = [threading.Thread(target=_events, args=(served.port, 2, out, ready), daemon=True)
               for out, ready in zip(outs, readies, strict=True)]
    for thread in threads:
        thread.start()
    for ready in readies:
        assert ready.wait(WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while served.page.broadcaster.clients < 3:
        assert time.monotonic() < deadline
        threading.Event().wait(0.05)
    built = served.page.broadcaster.built
    served.page.history.add("Air", time.time(), {"temperature": 21.5, "pressure": 101000.0})
    for thread in threads:
        thread.join(WAIT_S)
    seconds = [out[0].split(b"event: state", 2)[2] for out in outs]
    assert seconds[0] == seconds[1] == seconds[2]             # the same serialized event for all
    assert served.page.broadcaster.built == built + 1          # built once for three clients
    event = json.loads(seconds[0].split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert event["points"]["Air"]["pressure"][1][-1] == pytest.approx(1010.0)   # new points, hPa
    assert event["shown"]["Air"]["pressure"]["text"] == "1013 hPa"


# --- the vendored files --------------------------------------------------------------------------------
def test_vendored_uplot_matches_its_recorded_hashes() -> None:
    static = resources.files("pibridge.web") / "static"
    table = (static / "VENDORED.md").read_text(encoding="utf-8")
    rows = re.findall(r"\| `([^`]+)` \| `[^`]+` \| `([0-9a-f]{64})` \|", table)
    assert {name for name, _ in rows} == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    for name, digest in rows:
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == digest, name


def test_event_json_never_holds_nan() -> None:
    history = MetricHistory({"Air": 1.0})
    history.add("Air", 1.0, {"temperature": 1.0})
    history.add("Air", 10.0, {"temperature": math.nan, "pressure": 2.0})   # NaN reading: not drawn
    page = BridgePage(make_tracker(), history, lambda: UNITS)
    data: Any = json.loads(page.event(False).split(b"data: ", 1)[1])
    assert data["points"]["Air"]["temperature"] == [[1.0], [1.0]]


# --- the profile keys ----------------------------------------------------------------------------------
def test_a_profile_with_a_page_for_other_machines_and_its_token(tmp_path: Path) -> None:
    from pibridge.profile import load_profile

    path = tmp_path / "p.toml"
    (tmp_path / "web-token").write_text("0123456789abcdef-token\n")
    path.write_text('[bridge]\nhttp = "0.0.0.0:8080"\nhttp_token_file = "web-token"\n'
                    '[[sensor]]\nname = "SoC"\ndriver = "cpu_temperature"\n')
    bridge = load_profile(path).bridge
    assert bridge.http == "0.0.0.0:8080" and bridge.http_token_file == tmp_path / "web-token"


# --- the emulator's dashboard on a real store --------------------------------------------------------
@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[Served, dict[str, int], float]]:
    """A store with one client: "Air" (temperature, 5000 values a second apart ending now; pressure
    in Pa) and "Door" (a flag), its dashboard served read-only."""
    from pibridge.emulator.store import DB_NAME, Store
    from pibridge.web.dashboard import Dashboard

    store = Store(tmp_path / DB_NAME)
    now = time.time()
    store.begin()
    store.add_client("c1", 1, int(now * 1000))
    air, door = store.add_sensor("c1", "s1", "Air"), store.add_sensor("c1", "s2", "Door")
    temperature = store.add_metric(air, "m1", "Air temperature", "SI.Temperature.CELSIUS", None, None)
    pressure = store.add_metric(air, "m2", "Air pressure", "SI.Pressure.PASCAL", None, None)
    flag = store.add_metric(door, "m3", "Door", None, "bool", "open")
    end_ms = int(now * 1000)
    store.put_values((temperature.row, end_ms - i * 1000, 20.0 + (i % 2)) for i in range(5000))
    store.put_values([(pressure.row, end_ms, 101325.0), (flag.row, end_ms, 1)])
    store.commit()
    board = Dashboard(("127.0.0.1", 0), tmp_path / DB_NAME, clock=lambda: now)
    board.start()
    rows = {"temperature": temperature.row, "pressure": pressure.row, "flag": flag.row}
    try:
        yield Served(None, board.server), rows, now
    finally:
        board.stop()
        store.close()


def test_the_dashboard_lists_what_the_agent_holds(dashboard: tuple[Served, dict[str, int], float]) -> None:
    served, _, now = dashboard
    code, body, _ = served.get("/api/inventory")
    (client,) = json.loads(body)["clients"]
    metrics_by_name = {m["name"]: m for s in client["sensors"] for m in s["metrics"]}
    assert code == 200 and [s["name"] for s in client["sensors"]] == ["Air", "Door"]
    assert metrics_by_name["Air pressure"]["last_text"] == "1013 hPa"
    assert metrics_by_name["Door"]["last_text"] == "open"      # a door reads open / closed
    assert metrics_by_name["Door"]["valueType"] == "bool"
    assert metrics_by_name["Air temperature"]["first_ts"] == pytest.approx(int(now * 1000) / 1000 - 4999)


@pytest.mark.parametrize(("range_name", "count", "downsampled"),
                         [("15m", 900, False), ("1h", 3600, True), ("all", 5000, True)])
def test_ranges_are_range_queries_and_large_ones_averaged(
        dashboard: tuple[Served, dict[str, int], float], range_name: str, count: int,
        downsampled: bool) -> None:
    served, rows, _ = dashboard
    code, body, _ = served.get(f"/api/values?metric={rows['temperature']}&range={range_name}")
    data = json.loads(body)
    assert code == 200 and data["unit"] == "°C" and data["downsampled"] is downsampled
    assert data["count"] in (count, count + 1)            # the range's start may catch one more
    assert len(data["ts"]) == len(data["values"]) <= 1000 and data["ts"] == sorted(data["ts"])
    if downsampled:                                        # 20, 21, 20, … averaged
        assert all(20.0 <= v <= 21.0 for v in data["values"])
        assert 20.2 < statistics.mean(data["values"]) < 20.8


@pytest.mark.parametrize(("query", "code"), [
    ("metric=abc&range=1h", 400), ("metric=1&range=1y", 400), ("metric=999&range=1h", 404), ("range=1h", 400),
    ("metric=%C2%B2&range=1h", 400),                 # "²": a digit to str.isdigit, not to int
    ("metric=%D9%A3&range=1h", 400),                 # Arabic-Indic three
    ("metric=" + "9" * 30 + "&range=1h", 400),       # overflows SQLite's integers
    ("metric=9223372036854775808&range=1h", 400),    # 2**63
    ("metric=999999999999999999&range=1h", 404),     # 18 digits: a row number nobody has
    ("metric=-1&range=1h", 400), ("metric=+1&range=1h", 400), ("metric=1_0&range=1h", 400),
    ("metric=%201&range=1h", 400), ("metric=&range=1h", 400),
])
def test_bad_dashboard_queries_are_one_line(dashboard: tuple[Served, dict[str, int], float], query: str,
                                            code: int) -> None:
    served, _, _ = dashboard
    answer = served.get(f"/api/values?{query}")
    assert answer[0] == code and answer[1].count(b"\n") == 1
    assert b"Traceback" not in answer[1]
    assert served.get("/api/inventory")[0] == 200          # nobody else affected


def test_bad_metric_rows_log_no_traceback(dashboard: tuple[Served, dict[str, int], float],
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A 500 logged a traceback per request: a client could flood the log."""
    served, _, _ = dashboard
    with caplog.at_level(logging.DEBUG):
        for query in ("metric=%C2%B2", "metric=" + "9" * 30):
            assert served.get(f"/api/values?{query}&range=1h")[0] == 400
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_the_inventory_is_built_once_per_database_change(tmp_path: Path) -> None:
    from pibridge.emulator.store import DB_NAME, Store, connect_read_only
    from pibridge.web.dashboard import StoreReader

    store = Store(tmp_path / DB_NAME)
    store.begin()
    store.add_client("c1", 1, 1000)
    store.commit()
    reader = StoreReader(tmp_path / DB_NAME, connect_read_only)
    try:
        first = reader.inventory()
        assert reader.inventory() is first and reader.inventories_built == 1   # no change: the same
        store.begin()
        air = store.add_sensor("c1", "s1", "Air")
        store.add_metric(air, "m1", "Air temperature", "SI.Temperature.CELSIUS", None, None)
        store.commit()
        (client,) = reader.inventory()["clients"]
        assert reader.inventories_built == 2 and [s["name"] for s in client["sensors"]] == ["Air"]
        assert reader.inventory()["clients"][0]["sensors"][0]["metrics"][0]["name"] == "Air temperature"
        assert reader.inventories_built == 2
    finally:
        reader.close()
        store.close()
