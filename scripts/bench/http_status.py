"""What the web page costs a running bridge with 50 sensors (``pibridge run --simulate`` against the
emulator), in one run, rounds alternating so a loaded machine's drift hits both sides alike:

  (a) ``/api/status`` latency: p50 / p99 of sequential requests (new connection each, as a
      browser's fetch without keep-alive);                                   target p99 < 20 ms
  (b) the bridge's CPU with the page open in a headless Chromium vs the same bridge profile
      without ``http`` at all;                                   target < 1 % of one core more
  (c) the bridge's RSS with the server on (page open) vs off;                target < 3 MB more
  (d) 10 event-stream clients (raw SSE readers, as 10 browsers' EventSource) on the same bridge:
      its CPU, and that every client got the same events.

The bridge's CPU is its process's utime + stime from /proc over the window; RSS is VmRSS at the
end of the window. Absolute figures are this machine's: quote them with it (CPU count, load).

    .venv/bin/python scripts/bench/http_status.py [--seconds 30] [--rounds 2] [--requests 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pibridge.emulator.process import EmulatorProcess, free_port
from pibridge.web.browser import chromium_missing, open_chromium

SENSORS = 50
INTERVAL_S = 5
WARM_UP_S = 8.0
SSE_CLIENTS = 10
TARGET_P99_MS = 20.0
TARGET_CPU_PCT = 1.0
TARGET_RSS_MB = 3.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def profile_text(emulator: EmulatorProcess, http: str | None) -> str:
    lines = ["[agent]", 'host = "127.0.0.1"', f"port = {emulator.port}",
             f"provision_port = {emulator.provision_port}", f'ca_file = "{emulator.ca_file}"',
             'cert_folder = "certs"', 'client_name = "bench"', 'provisioning = "smart"', "",
             "[bridge]", 'state_dir = "state"']
    if http:
        lines.append(f'http = "{http}"')
    for index in range(SENSORS):
        lines += ["", "[[sensor]]", f'name = "Sensor {index:02d}"', 'driver = "cpu_temperature"',
                  f"interval = {INTERVAL_S}"]
    return "\n".join(lines) + "\n"


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS        # utime, stime (fields 14, 15)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Bridge:
    def __init__(self, work: Path, emulator: EmulatorProcess, http: str | None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        profile = work / "bench.toml"
        profile.write_text(profile_text(emulator, http))
        self.proc = subprocess.Popen([sys.executable, "-m", "pibridge", "run", "--profile", str(profile),
                                      "--simulate", "--trust-clock"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=dict(os.environ, RUNTIME_DIRECTORY=str(work / "run")))
        self.url = f"http://{http}/" if http else ""
        if http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(self.url + "api/status", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise SystemExit("the bridge's page did not come up") from None
                    threading.Event().wait(0.1)

    def measure(self, seconds: float) -> tuple[float, int]:
        """(share of one core in %, RSS KiB at the end) over ``seconds``."""
        start_cpu, start = cpu_seconds(self.proc.pid), time.monotonic()
        threading.Event().wait(seconds)
        used, elapsed = cpu_seconds(self.proc.pid) - start_cpu, time.monotonic() - start
        return 100.0 * used / elapsed, rss_kib(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def latencies(url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
        times.append((time.perf_counter() - start) * 1000)
    return times


def sse_reader(host: str, port: int, stop: threading.Event, counts: list[int], index: int) -> None:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            counts[index] += data.count(b"event: state")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="each measuring window")
    parser.add_argument("--rounds", type=int, default=2, help="off/on rounds, alternating")
    parser.add_argument("--requests", type=int, default=500, help="/api/status requests for the latency")
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        raise SystemExit(f"no browser for (b): {missing} (bash scripts/setup.sh --browser)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"{SENSORS} simulated sensors every {INTERVAL_S} s; windows of {args.seconds:g} s")
    off_cpu, on_cpu, off_rss, on_rss = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="pibridge-bench-http-") as work_text:
        work = Path(work_text)
        emulator = EmulatorProcess(work / "emulator")
        emulator.start()
        try:
            with open_chromium() as browser:
                for round_number in range(args.rounds):
                    bridge = Bridge(work / f"off{round_number}", emulator, None)
                    threading.Event().wait(WARM_UP_S)
                    cpu, rss = bridge.measure(args.seconds)
                    bridge.stop()
                    off_cpu.append(cpu)
                    off_rss.append(rss)
                    address = f"127.0.0.1:{free_port()}"
                    bridge = Bridge(work / f"on{round_number}", emulator, address)
                    browser.get(bridge.url)
                    threading.Event().wait(WARM_UP_S)
                    cpu, rss = bridge.measure(args.seconds)
                    on_cpu.append(cpu)
                    on_rss.append(rss)
                    print(f"round {round_number + 1}: off {off_cpu[-1]:.2f} % CPU, "
                          f"{off_rss[-1] / 1024:.1f} MB; on (page open) {cpu:.2f} % CPU, {rss / 1024:.1f} MB",
                          flush=True)
                    if round_number < args.rounds - 1:
                        browser.get("about:blank")
                        bridge.stop()
                browser.get("about:blank")
            times = latencies(bridge.url + "api/status", args.requests)
            stop = threading.Event()
            counts = [0] * SSE_CLIENTS
            host, port = address.rsplit(":", 1)
            readers = [threading.Thread(target=sse_reader, args=(host, int(port), stop, counts, i),
                                        daemon=True) for i in range(SSE_CLIENTS)]
            for reader in readers:
                reader.start()
            threading.Event().wait(2.0)
            sse_cpu, sse_rss = bridge.measure(args.seconds)
            stop.set()
            for reader in readers:
                reader.join(5)
            bridge.stop()
        finally:
            emulator.stop()
    quantiles = statistics.quantiles(times, n=100)
    p50, p99 = statistics.median(times), quantiles[98]
    cpu_off, cpu_on = statistics.median(off_cpu), statistics.median(on_cpu)
    rss_off, rss_on = statistics.median(off_rss) / 1024, statistics.median(on_rss) / 1024
    cpu_more, rss_more = cpu_on - cpu_off, rss_on - rss_off
    print(f"(a) /api/status, {len(times)} requests: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"max {max(times):.2f} ms -> target p99 < {TARGET_P99_MS:g} ms: {verdict(p99 < TARGET_P99_MS)}")
    print(f"(b) CPU: off {cpu_off:.2f} %, page open {cpu_on:.2f} % of one core (medians of {args.rounds}): "
          f"{cpu_more:+.2f} % -> target < {TARGET_CPU_PCT:g} %: {verdict(cpu_more < TARGET_CPU_PCT)}")
    print(f"(c) RSS: off {rss_off:.1f} MB, on {rss_on:.1f} MB: {rss_more:+.1f} MB -> target < "
          f"{TARGET_RSS_MB:g} MB: {verdict(rss_more < TARGET_RSS_MB)}")
    print(f"(d) {SSE_CLIENTS} SSE clients: bridge {sse_cpu:.2f} % CPU, {sse_rss / 1024:.1f} MB; events per "
          f"client {min(counts)}..{max(counts)} in {args.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
