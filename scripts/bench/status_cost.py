"""What the operating parts cost the running bridge: the status snapshot and its atomic write
(every 5 s), a live-view frame (every second on a terminal), a watchdog ping (every WatchdogSec/2),
and the memory their imports add.

    .venv/bin/python scripts/bench/status_cost.py [--rounds N]

Target: together, at their rates, at most 0.1 % of one core (a tenth of the whole bridge's 1 %
budget on a Pi Zero), and at most 1 MB of extra RSS for their imports. The CPU figures are from
the machine this runs on: run it on the Pi itself for the Pi's.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pibridge.bridge.liveview import TerminalView, render
from pibridge.bridge.notify import SystemdNotifier
from pibridge.bridge.status import StatusTracker, StatusWriter, TrackedSensor, status_path

TARGET_CPU_SHARE = 0.001          #: 0.1 % of one core
TARGET_IMPORT_RSS_KB = 1024
#: what `pibridge run` imports before any of these modules (paho's TLS, the model's dataclasses,
#: the profile's paths, the state mapping's hashes): the baseline for their import cost
BRIDGE_IMPORTS = "json, logging, socket, threading, ssl, dataclasses, pathlib, hashlib, typing"
WRITE_EVERY_S, FRAME_EVERY_S, WATCHDOG_EVERY_S = 5.0, 1.0, 15.0
GREENHOUSE = (
    TrackedSensor("Air (BME280)", "bme280", 60.0, (("temperature", "Temperature", "°C"),
                                                   ("humidity", "Humidity", "%"),
                                                   ("pressure", "Pressure", "Pa"))),
    TrackedSensor("Canopy (DHT22)", "dht22", 30.0, (("temperature", "Temperature", "°C"),
                                                    ("humidity", "Humidity", "%"))),
    TrackedSensor("Soil temperature bed 1", "ds18b20", 120.0, (("temperature", "Temperature", "°C"),)),
    TrackedSensor("Soil temperature bed 2", "ds18b20", 120.0, (("temperature", "Temperature", "°C"),)),
    TrackedSensor("Light", "bh1750", 30.0, (("illuminance", "Illuminance", "lx"),)),
    TrackedSensor("Soil moisture bed 1", "mcp3008", 300.0, (("moisture", "Moisture", "%"),)),
    TrackedSensor("Door", "digital_input", 60.0, (("open", "Open", ""),)),
    TrackedSensor("Pi SoC", "cpu_temperature", 300.0, (("temperature", "CPU temperature", "°C"),)),
)


def _tracker() -> StatusTracker:
    tracker = StatusTracker("/etc/pibridge/greenhouse.toml", "/var/lib/pibridge")
    tracker.set_sensors(GREENHOUSE)
    tracker.agent_state(connected=True, host="localhost", port=18884, client_id="0" * 32)
    tracker.clock_state(True, "timesyncd")
    for sensor in GREENHOUSE:
        tracker.sample_taken(sensor.name, {key: 21.5 for key, _, _ in sensor.metrics})
        tracker.samples_pushed(sensor.name, 1)
    tracker.read_failed("Canopy (DHT22)", "checksum mismatch")
    return tracker


def _median_us(action: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def _feed_us(rounds: int, queued: int = 10_000) -> float:
    """`feed_status` as the service calls it (at most once per frame on a terminal, once per
    status write without one): the scheduler's stats, the delivery's status with the queue's
    statistics query on a real SQLite queue holding ``queued`` samples."""
    from pibridge.agent.settings import AgentSettings
    from pibridge.bridge.delivery import Delivery
    from pibridge.bridge.model import TakenSample
    from pibridge.bridge.operations import feed_status
    from pibridge.bridge.queue import SampleQueue
    from pibridge.bridge.scheduler import Scheduler, SensorPlan
    from pibridge.drivers.base import Driver
    from pibridge.profile import BridgeSettings

    def never_built() -> Driver:    # the scheduler is not started: its stats are what is measured
        raise RuntimeError("not started in this benchmark")

    tracker = _tracker()
    with tempfile.TemporaryDirectory() as directory:
        queue = SampleQueue(Path(directory), boot_id="bench")
        try:
            now_ms = int(time.time() * 1000)
            queue.put_many(TakenSample(GREENHOUSE[i % len(GREENHOUSE)].name, {"temperature": 21.5},
                                       now_ms + i, float(i), "bench") for i in range(queued))
            delivery = Delivery(AgentSettings(), BridgeSettings(state_dir=Path(directory)), queue, specs={})
            scheduler = Scheduler([SensorPlan(s.name, s.interval_s, never_built) for s in GREENHOUSE], queue)

            def feed() -> None:
                feed_status(tracker, scheduler.stats(), delivery.status(), host="localhost", port=18884,
                            clock_synchronised=True, clock_source="timesyncd")
            return _median_us(feed, rounds)
        finally:
            queue.close()


def _import_rss_kb(modules: str, pycache: str) -> int:
    """Resident memory (VmRSS, kB) of a fresh interpreter after importing ``modules``, from
    byte-compiled modules as an installed package has them (a first run compiles into
    ``pycache``; compiling would otherwise be counted)."""
    code = (f"import {modules}\n"
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env=env)
    return int(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    tracker = _tracker()
    ram_dir = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=ram_dir) as directory:
        writer = StatusWriter(status_path(directory, "/var/lib/pibridge"))
        snapshot_us = _median_us(tracker.snapshot, args.rounds)
        write_us = _median_us(lambda: writer.publish(tracker.snapshot, force=True), args.rounds)
        size = writer.path.stat().st_size
    status = tracker.snapshot()
    frame_us = _median_us(lambda: render(status, 99, 40, color=True), args.rounds)
    view = TerminalView(io.StringIO(), min_interval_s=0.0, color=True)
    view.size = lambda: os.terminal_size((100, 40))     # type: ignore[method-assign]
    redraw_us = _median_us(lambda: view.update(tracker.snapshot, force=True), args.rounds)
    with tempfile.TemporaryDirectory() as directory, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind(os.path.join(directory, "notify"))
        notifier = SystemdNotifier(os.path.join(directory, "notify"), 30.0)

        def ping() -> None:
            notifier.watchdog()
            sink.recv(64)
        ping_us = _median_us(ping, args.rounds)
        notifier.close()
    feed_us = _feed_us(max(1, args.rounds // 4))
    cpu_share = (write_us / WRITE_EVERY_S + (redraw_us + feed_us) / FRAME_EVERY_S
                 + ping_us / WATCHDOG_EVERY_S) / 1e6
    with tempfile.TemporaryDirectory() as pycache:
        baseline_kb = _import_rss_kb(BRIDGE_IMPORTS, pycache)
        ours_kb = _import_rss_kb(f"{BRIDGE_IMPORTS}, pibridge.bridge.status, pibridge.bridge.liveview, "
                                 "pibridge.bridge.notify", pycache)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{len(GREENHOUSE)} sensors; medians of {args.rounds} rounds")
    print(f"snapshot:                         {snapshot_us:8.1f} µs")
    print(f"snapshot + JSON + atomic write:   {write_us:8.1f} µs  ({size} bytes, in {ram_dir})")
    print(f"live-view frame (render only):    {frame_us:8.1f} µs")
    print(f"live-view redraw (snapshot+draw): {redraw_us:8.1f} µs")
    print(f"watchdog ping (send + receive):   {ping_us:8.1f} µs")
    print(f"feed_status (10,000 queued):      {feed_us:8.1f} µs  (scheduler stats + delivery/queue status)")
    rates = (f"write/{WRITE_EVERY_S:g} s, frame + feed/{FRAME_EVERY_S:g} s (a terminal; without one "
             f"the feed runs with the write), ping/{WATCHDOG_EVERY_S:g} s")
    print(f"CPU at their rates ({rates}): {cpu_share * 100:.4f} % of one core"
          f"   (target ≤ {TARGET_CPU_SHARE * 100:g} %)")
    print(f"import RSS: {ours_kb - baseline_kb} kB over what the bridge imports anyway ({BRIDGE_IMPORTS}) "
          f"({baseline_kb} → {ours_kb} kB)   (target ≤ {TARGET_IMPORT_RSS_KB} kB)")
    met = cpu_share <= TARGET_CPU_SHARE and ours_kb - baseline_kb <= TARGET_IMPORT_RSS_KB
    print("targets met" if met else "TARGET MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
