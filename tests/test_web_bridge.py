"""The web page of a real ``pibridge run --simulate`` subprocess: /api/status and /metrics from
the running bridge, the token and the loopback rule at start, and hostile clients (a wrong token,
oversized and malformed requests, slowloris, 200 connections at once) while the bridge keeps
taking samples."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_run_operations import AWAY_PROFILE, Running, bridge_env, poll, run_command, status_json

from pibridge.emulator.process import EmulatorProcess, free_port

WAIT_S = 30.0
TOKEN = "tok-0123456789abcdef"
WEB_LINE = "web page at "


def _profile(tmp_path: Path, extra: str = "") -> Path:
    text = AWAY_PROFILE.format(port=free_port()).replace('state_dir = "state"\n',
                                                         f'state_dir = "state"\n{extra}')
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


AGENT = """\
[agent]
host = "127.0.0.1"
port = {port}
provision_port = {provision_port}
ca_file = "{ca_file}"
cert_folder = "certs"
provisioning = "smart"
"""


@pytest.fixture
def guarded_bridge(tmp_path: Path, emulator: EmulatorProcess) -> Iterator[tuple[Running, str]]:
    """A bridge serving its page with a token (Pi SoC and Door every second), delivering to the
    emulator."""
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    port = free_port()
    profile = _profile(tmp_path, f'http = "127.0.0.1:{port}"\nhttp_token_file = "token"\n')
    text = profile.read_text()
    agent = AGENT.format(port=emulator.port, provision_port=emulator.provision_port, ca_file=emulator.ca_file)
    profile.write_text(agent + text[text.index("[bridge]"):])
    bridge = Running(run_command(profile), bridge_env(tmp_path / "run"))
    try:
        line = bridge.wait_line(lambda text: WEB_LINE in text)
        yield bridge, line.split(WEB_LINE, 1)[1].strip()
    finally:
        if bridge.proc.poll() is None:
            assert bridge.stop() == 0
        else:
            bridge.proc.wait()


def _hold(port: int, data: bytes, results: list[bytes]) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            results.append(b"".join(chunks))
    except OSError as exc:
        results.append(repr(exc).encode())


def pushed(url: str, sensor: str) -> int:
    status = status_of(url, {"Authorization": f"Bearer {TOKEN}"})
    return int(next(s for s in status["sensors"] if s["name"] == sensor)["pushed"])


def test_hostile_clients_never_stall_sampling_or_delivery(guarded_bridge: tuple[Running, str]) -> None:
    bridge, url = guarded_bridge
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    pushed_before = poll(lambda: pushed(url, "Pi SoC"), WAIT_S, "the first acknowledged push")
    assert get(url + "api/status")[0] == 401
    assert get(url + "api/status", {"Authorization": "Bearer tok-0123456789abcdeX"})[0] == 401
    assert get(url)[0] == 200                                 # the page itself asks for the token
    taken_before = len(bridge.samples("Pi SoC"))

    results: list[bytes] = []
    attacks = ([b"GET / HTTP/1.1\r\n"] * 150                      # slowloris: heads never finished
               + [b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"] * 20     # 413
               + [b"BREW /pot HTTP/1.1\r\n\r\n"] * 10                             # 405
               + [b"\x00\x01garbage\r\n\r\n"] * 10                                # 400
               + [b"GET /api/status HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n"] * 10)   # 401
    threads = [threading.Thread(target=_hold, args=(port, data, results), daemon=True) for data in attacks]
    for thread in threads:
        thread.start()
    bridge.wait_samples("Pi SoC", 3)                          # sampling goes on meanwhile (1 s grid)
    bridge.wait_samples("Door", 2)
    for thread in threads:
        thread.join(WAIT_S)
    assert len(results) == len(attacks) == 200
    firsts = [r.split(b"\r\n", 1)[0] for r in results]
    assert not any(b" 200 " in first for first in firsts)     # nobody got in without the token
    assert sum(b" 413 " in f for f in firsts) + sum(b" 503 " in f for f in firsts) >= 20
    assert b"Traceback" not in b"".join(results)
    code, body = get(url + "api/status", bearer)              # and the page serves again at once
    assert code == 200
    status = json.loads(body)["bridges"][0]["status"]
    soc = next(s for s in status["sensors"] if s["name"] == "Pi SoC")
    assert soc["state"] == "ok" and soc["taken"] >= taken_before + 3
    # delivery went on too: what was taken during the attack reaches the agent
    poll(lambda: pushed(url, "Pi SoC") >= pushed_before + 3, WAIT_S, "pushes after the attack")
    assert not any("Traceback" in line for line in bridge.lines)


def test_metrics_of_the_running_bridge_parse(guarded_bridge: tuple[Running, str]) -> None:
    bridge, url = guarded_bridge
    bridge.wait_samples("Pi SoC", 2)
    code, body = get(url + "metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    taken = {s.labels["sensor"]: s.value for s in families["pibridge_samples_taken"].samples
             if s.name.endswith("_total")}
    assert set(taken) == {"Pi SoC", "Door"} and taken["Pi SoC"] >= 1
    values = [s for s in families["pibridge_metric_value"].samples if s.labels["sensor"] == "Pi SoC"]
    assert values and values[0].labels == {"sensor": "Pi SoC", "metric": "temperature", "unit": "°C"}
    assert families["pibridge_clock_synchronised"].samples[0].value == 1
    connected = poll(lambda: _families(url)["pibridge_agent_connected"].samples[0].value == 1, WAIT_S,
                     "the agent connected")
    assert connected


def _families(url: str) -> dict[str, Any]:
    code, body = get(url + "metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _refused(tmp_path: Path, *extra: str, profile_extra: str = "") -> subprocess.CompletedProcess[str]:
    profile = _profile(tmp_path, profile_extra)
    return subprocess.run(run_command(profile, *extra), capture_output=True, text=True, timeout=60,
                          env=bridge_env(tmp_path / "run"))


def test_other_machines_need_a_token_file_nothing_starts_without(tmp_path: Path) -> None:
    done = _refused(tmp_path, "--http", f"0.0.0.0:{free_port()}")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "http_token_file" in lines[0], done.stderr
    assert not (tmp_path / "state" / "queue.db").exists() and not (tmp_path / "run").exists()

    done = _refused(tmp_path, profile_extra=f'http = "0.0.0.0:{free_port()}"\n')
    assert done.returncode != 0 and "http_token_file" in done.stderr and "bridge.http" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_token_file_is_one_line(tmp_path: Path) -> None:
    done = _refused(tmp_path, profile_extra=f'http = "0.0.0.0:{free_port()}"\nhttp_token_file = "nope"\n')
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "nope") in lines[0], done.stderr
    assert "does not exist" in lines[0]


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _refused(tmp_path, "--http", f"127.0.0.1:{taken.getsockname()[1]}")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot serve the web page" in lines[0], done.stderr


def test_without_http_nothing_of_the_web_is_imported(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    code = ("import sys\nfrom pibridge.profile import load_profile\nfrom pibridge.bridge import service\n"
            f"load_profile({str(profile)!r})\n"
            "print([m for m in sys.modules if m.startswith('pibridge.web')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def status_of(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    code, body = get(url + "api/status", headers)
    assert code == 200
    return dict(json.loads(body)["bridges"][0]["status"])


def test_http_flag_overrides_the_profile_and_status_matches(tmp_path: Path) -> None:
    port = free_port()
    profile = _profile(tmp_path, 'http = "127.0.0.1:1"\n')        # overridden by --http
    bridge = Running(run_command(profile, "--http", f"127.0.0.1:{port}"), bridge_env(tmp_path / "run"))
    try:
        line = bridge.wait_line(lambda text: WEB_LINE in text)
        assert line.endswith(f"http://127.0.0.1:{port}/")
        bridge.wait_samples("Pi SoC", 2)
        deadline = time.monotonic() + WAIT_S
        while not (status := status_of(f"http://127.0.0.1:{port}/"))["sensors"][0]["values"]:
            assert time.monotonic() < deadline
            threading.Event().wait(0.2)
        assert status["sensors"][0]["values"][0]["unit"] == "SI.Temperature.CELSIUS"  # the wire's unit
        # the same document `pibridge status --json` prints from the status file
        served = json.loads(get(f"http://127.0.0.1:{port}/api/status")[1])
        _, printed = poll(lambda: (r := status_json(tmp_path / "run"))[1]["bridges"] and r, WAIT_S,
                          "pibridge status --json")
        assert served.keys() == printed.keys() and served["health"] == printed["health"]
        assert served["bridges"][0].keys() == printed["bridges"][0].keys()
        assert served["bridges"][0]["status"].keys() == printed["bridges"][0]["status"].keys()
        assert [s["name"] for s in served["bridges"][0]["status"]["sensors"]] == ["Pi SoC", "Door"]
    finally:
        assert bridge.stop() == 0


@pytest.mark.parametrize(("address", "problem"), [("taken", "cannot serve the dashboard"),
                                                  ("8081", "--http: must be HOST:PORT")])
def test_the_dashboard_address_is_checked_before_the_emulator_starts(tmp_path: Path, address: str,
                                                                     problem: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if address == "taken":
            address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run([sys.executable, "-m", "pibridge", "emulator", "serve", "--state-dir",
                               str(tmp_path / "emulator"), "--port", str(free_port()), "--provision-port",
                               str(free_port()), "--http", address],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ready" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0], done.stderr


def test_a_failing_web_hook_costs_no_sample_and_logs_one_line(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The charts' hook runs after the queue took the sample: its failure is one rate-limited line,
    never an exception to the scheduler (which counted the queued sample as lost)."""
    from pibridge.bridge.model import TakenSample
    from pibridge.bridge.queue import SampleQueue
    from pibridge.bridge.service import HOOK_LOG_INTERVAL_S, LoggedSink

    def broken_hook(sample: TakenSample) -> None:
        raise RuntimeError("history is broken")

    now = [100.0]
    T0_MS = 1_700_000_000_000
    with SampleQueue(tmp_path, boot_id="boot") as queue:
        sink = LoggedSink(queue, broken_hook, monotonic=lambda: now[0])
        with caplog.at_level(logging.WARNING, logger="pibridge.bridge"):
            for i in range(5):
                sink.put(TakenSample("Air", {"temperature": 20.0 + i}, T0_MS + i, float(i), "boot"))
            assert len(caplog.records) == 1                     # five failures, one line
            now[0] += HOOK_LOG_INTERVAL_S
            sink.put(TakenSample("Air", {"temperature": 30.0}, T0_MS + 100, 10.0, "boot"))
        stored = queue.fetch(0, 100)
    assert [s.values["temperature"] for s in stored] == [20.0, 21.0, 22.0, 23.0, 24.0, 30.0]
    assert sink.hook_failures == 6
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line and "history is broken" in line for line in lines)
    assert not any(r.exc_info for r in caplog.records)
    assert "6 such failures" in lines[1]
