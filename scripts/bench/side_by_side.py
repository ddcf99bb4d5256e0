"""The measuring stick of issue 17: pibridge beside mqtt-io in one run, and the issue's target table.

Usage: .venv/bin/python scripts/bench/side_by_side.py --mqttio-python /tmp/…/bin/python [--quick]
       (``bash scripts/bench/all.sh [--quick]`` makes the throwaway mqtt-io venv and calls this)

One window of ``--seconds`` (60; 20 with ``--quick``) in which these run at the same time, on the
same loaded machine, each measured from its ``/proc/PID`` entries between the window's two ends:

- ``sim``: ``pibridge run --simulate`` on 20 sensors at 2.5 s (BME280, BH1750, DS18B20, MCP3008,
  CPU temperature, door contacts: `bench_sensors`) against the real emulator over TLS;
- ``replay``: the same profile, every driver's bus calls answered from a transfer log recorded in
  the first seconds (`replay_bus.py`): the bridge's cost without simulating the chips;
- ``idle``: 1 sensor at 60 s: CPU ms/s and wake-ups/s (voluntary context switches summed over
  ``/proc/PID/task/*/status``: a thread that slept and was woken, as `idle_wakeups.py` counts;
  the involuntary ones, preemptions by the other runs sharing the cores, are shown beside);
- ``greenhouse``: ``profiles/greenhouse.toml`` with ``--simulate``: peak RSS (VmHWM);
- ``mqtt-io``: 20 mock sensors at 2.5 s (its schema's integer-only ``interval`` widened to a number
  in the launcher, nothing else changed; its default INFO log, to /dev/null) publishing to a plain
  mosquitto on a free loopback port; a subscriber here counts what arrives.

Values delivered = rows the emulator's database gained for the run's sensors during the window
(samples = distinct (sensor, timestamp)); mqtt-io's = messages the subscriber received. CPU =
the sum of every thread's ``schedstat`` run time over the window (nanoseconds; start-up is
outside it), or utime + stime of the whole process (clock ticks) when a thread ended meanwhile.

Storage writes: ``write_bytes`` of ``/proc/PID/io`` over the window. The kernel charges it when a
clean page-cache page is dirtied (and for direct I/O), not at writeback; a page dirtied again
while still dirty is not charged again, so the figure depends on writeback timing. The window
therefore starts with ``sync()`` (every page clean: the window's first write to a page is
charged, as it would be on the card) and the delta is read at its end; the default writeback
(dirty pages older than 30 s written every 5 s) applies during the window, as on a Pi. The
state directories are on the machine's disk (not tmpfs, where nothing is charged); the status
files go to a runtime directory in RAM (``$RUNTIME_DIRECTORY`` on ``/dev/shm``), as they do on
a Pi, where systemd's ``/run`` is tmpfs (`sd_writes.py` does the same). The table
quotes the replay run: the simulated run also writes its fake 1-Wire tree (``w1_slave`` files
in a temporary directory on the same disk), which a Pi's sysfs does not cost; both are printed.

Afterwards, one at a time (they load the machine): `backlog_drain.py` (drain vs the emulator's
own ack rate) and `scheduler_jitter.py` (p99 with one sensor hung 2 s); their key lines are
parsed into the table. Absolute figures: quote them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from footprint import KIB_PER_MB, baseline_rss_kib, cpu_seconds, proc_status_kib  # noqa: E402

from pibridge.emulator.process import EmulatorProcess, free_port  # noqa: E402
from pibridge.emulator.store import DB_NAME  # noqa: E402

BENCH_SENSORS = 20
BENCH_INTERVAL_S = 2.5
IDLE_INTERVAL_S = 60.0
FULL_WINDOW_S, QUICK_WINDOW_S = 60.0, 20.0
#: the replay run records its transfer log this long after start, then answers from it
RECORD_S = 12.0
#: every run must have delivered before the window opens (provisioning, recording)
READY_TIMEOUT_S = 120.0
SETTLE_S = 3.0
MS = 1000.0
#: where the runs' state lives (default /var/tmp: the machine's disk); kept with --keep
BENCH_DIR_ENV = "BENCH_DIR"
#: free GPIOs for the simulated door contacts (not I2C, SPI or 1-Wire pins)
DOOR_PINS = (5, 6, 12, 13, 16, 17)
PASSES = (("bme280", 4), ("bh1750", 4), ("ds18b20", 4), ("mcp3008", 4), ("cpu_temperature", 2),
          ("digital_input", 2))
DRAIN_ARGS = {"full": ["--samples", "100000", "--rounds", "3", "--power-samples", "5000",
                       "--baseline-pushes", "3000"],
              "quick": ["--samples", "10000", "--rounds", "1", "--power-samples", "2000",
                        "--baseline-pushes", "2000"]}
JITTER_SECONDS = {"full": 60, "quick": 20}
DRAIN_RE = re.compile(r"drain / baseline = ([\d.]+)%")
JITTER_RE = re.compile(r"p99 ([\d.]+) ms")


def bench_sensors(prefix: str, count: int = BENCH_SENSORS, interval_s: float = BENCH_INTERVAL_S) -> str:
    """``count`` ``[[sensor]]`` tables of simulated built-in drivers, each on hardware of its own."""
    kinds = [driver for driver, n in PASSES for _ in range(n)]
    tables = []
    seen: dict[str, int] = {}
    for index in range(count):
        driver = kinds[index % len(kinds)]
        k = seen[driver] = seen.get(driver, -1) + 1
        options = {"bme280": f"i2c_bus = {10 + k}", "bh1750": f"i2c_bus = {20 + k}",
                   "ds18b20": f'device_id = "28-{0xbe0c0000 + k:012x}"', "mcp3008": f"channel = {k % 8}",
                   "cpu_temperature": "", "digital_input": f"pin = {DOOR_PINS[k % len(DOOR_PINS)]}"}[driver]
        tables.append(f'[[sensor]]\nname = "{prefix}-{index:02d}"\ndriver = "{driver}"\n'
                      f'interval = {interval_s:g}\n[sensor.options]\n{options}\n')
    return "\n".join(tables)


def write_profile(path: Path, client: str, state_dir: Path, sensors: str) -> Path:
    path.write_text(f'[agent]\nclient_name = "{client}"\n\n[bridge]\nstate_dir = "{state_dir}"\n'
                    f'durability = "process"\n\n{sensors}')
    return path


# -- /proc ----------------------------------------------------------------------------------------
def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise KeyError("write_bytes")


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time in nanoseconds of every live thread of ``pid`` (``schedstat``'s first field): the
    window's CPU at nanosecond resolution, where ``stat``'s clock ticks (10 ms) are too coarse
    for an idle process. A thread that ends inside the window takes its time with it
    (`Run.window` counts them; the tick figure covers them)."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return times


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary (wake-ups) and involuntary (preemptions) context switches of every live thread
    of ``pid``."""
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return voluntary, involuntary


@dataclass
class Snapshot:
    at: float
    cpu_s: float
    thread_ns: dict[int, int]
    written: int
    switches: tuple[int, int]  # voluntary, involuntary
    values: int
    samples: int


@dataclass
class Run:
    """One measured process and how to count what it delivered."""

    name: str
    proc: subprocess.Popen[bytes]
    delivered: Any  # () -> (values, samples)
    snapshots: list[Snapshot] = field(default_factory=list)
    peak_kib: int = 0
    threads: int = 0

    def snapshot(self) -> None:
        values, samples = self.delivered()
        pid = self.proc.pid
        self.snapshots.append(Snapshot(time.monotonic(), cpu_seconds(pid), thread_cpu_ns(pid),
                                       write_bytes(pid), context_switches(pid), values, samples))

    def window(self) -> dict[str, float]:
        first, last = self.snapshots[0], self.snapshots[-1]
        ended = set(first.thread_ns) - set(last.thread_ns)
        thread_s = sum(ns - first.thread_ns.get(tid, 0) for tid, ns in last.thread_ns.items()) / 1e9
        # nanosecond figure unless a thread ended in the window (its time is gone): then ticks
        return {"seconds": last.at - first.at, "cpu_s": last.cpu_s - first.cpu_s if ended else thread_s,
                "ticks_cpu_s": last.cpu_s - first.cpu_s, "threads_ended": len(ended),
                "written": last.written - first.written, "switches": last.switches[0] - first.switches[0],
                "preempted": last.switches[1] - first.switches[1],
                "values": last.values - first.values, "samples": last.samples - first.samples}


def emulator_counter(emulator: EmulatorProcess, prefix: str) -> Any:
    def delivered() -> tuple[int, int]:
        db = sqlite3.connect(f"file:{emulator.state_dir / DB_NAME}?mode=ro", uri=True, timeout=30)
        try:
            values, samples = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT s.id || ':' || v.ts) FROM vals v "
                "JOIN metrics m ON v.metric = m.id JOIN sensors s ON m.sensor = s.id "
                "WHERE s.name LIKE ?", (f"{prefix}-%",)).fetchone()
            return int(values), int(samples)
        finally:
            db.close()
    return delivered


# -- mqtt-io ------------------------------------------------------------------------------------
MQTTIO_LAUNCHER = """
import sys
import mqtt_io.config as config
original = config.get_main_schema
def schema():
    s = original()
    s["sensor_inputs"]["schema"]["schema"]["interval"]["type"] = "number"
    return s
config.get_main_schema = schema
from mqtt_io.__main__ import main
sys.argv = ["mqtt_io", sys.argv[1]]
main()
"""


def mqttio_config(port: int, count: int = BENCH_SENSORS, interval_s: float = BENCH_INTERVAL_S) -> str:
    lines = ["mqtt:", "  host: 127.0.0.1", f"  port: {port}", "  topic_prefix: bench",
             "sensor_modules:", "  - name: mock", "    module: mock", "sensor_inputs:"]
    for index in range(count):
        lines += [f"  - name: s{index:02d}", "    module: mock", f"    interval: {interval_s:g}"]
    return "\n".join(lines) + "\n"


class Subscriber:
    """Counts the messages mqtt-io publishes (each one value of one sensor)."""

    def __init__(self, port: int) -> None:
        from pibridge import mqtt

        self.count = 0
        self._lock = threading.Lock()
        self.session = mqtt.MqttSession(mqtt.Endpoint("127.0.0.1", port), client_id="bench-counter",
                                        on_message=self._on_message)
        self.session.open()
        self.session.subscribe(["bench/sensor/+"], qos=0)

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.count += 1

    def delivered(self) -> tuple[int, int]:
        with self._lock:
            return self.count, self.count


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def run_tool(script: str, args: list[str]) -> str:
    """Run another bench script, echo its output, return it."""
    out = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                         check=False)
    print(out.stdout, end="")
    if out.returncode:
        print(out.stderr[-2000:], end="")
    return out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mqttio-python", type=Path, required=True,
                        help="python of a venv with mqtt-io installed (all.sh makes one)")
    parser.add_argument("--quick", action="store_true", help="a shorter run (window 20 s, small drain)")
    parser.add_argument("--seconds", type=float, help="the window (default 60, 20 with --quick)")
    parser.add_argument("--no-drain", action="store_true", help="skip backlog_drain.py")
    parser.add_argument("--no-jitter", action="store_true", help="skip scheduler_jitter.py")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, state)")
    parser.add_argument("--cprofile", metavar="DIR", type=Path,
                        help="run the sim run under cprofile_run.py, its per-thread dumps here (adds CPU; "
                             "read them with cprofile_run.py --report DIR)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    window_s = args.seconds or (QUICK_WINDOW_S if args.quick else FULL_WINDOW_S)

    # the machine's disk, not tmpfs: write_bytes is charged only where pages reach a block device
    base = os.environ.get(BENCH_DIR_ENV, "/var/tmp")
    work = Path(tempfile.mkdtemp(prefix="pibridge-side-by-side-", dir=base))
    ram = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    runtime = Path(tempfile.mkdtemp(prefix="pibridge-side-by-side-run-", dir=ram))
    emulator = EmulatorProcess(work / "emulator")
    emulator.start()
    mosquitto_port = free_port()
    (work / "mosquitto.conf").write_text(f"listener {mosquitto_port} 127.0.0.1\nallow_anonymous true\n"
                                         "persistence false\n")
    (work / "mqttio.yml").write_text(mqttio_config(mosquitto_port))
    (work / "mqttio_launcher.py").write_text(MQTTIO_LAUNCHER)
    runs: list[Run] = []
    helpers: list[subprocess.Popen[bytes]] = []
    replay_summary = work / "replay.json"
    try:
        mosquitto = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        helpers.append(mosquitto)
        agent = ["--host", emulator.host, "--port", str(emulator.port), "--provision-port",
                 str(emulator.provision_port), "--ca-file", str(emulator.ca_file)]

        def bridge(name: str, sensors: str | None, wrapper: list[str]) -> None:
            state = work / name
            state.mkdir()
            profile = (ROOT / "profiles" / "greenhouse.toml" if sensors is None
                       else write_profile(work / f"{name}.toml", f"bench-{name}", state / "state", sensors))
            command = [*wrapper, "run", "--profile", str(profile), "--simulate", "--trust-clock",
                       "--state-dir", str(state / "state"), "--cert-folder", str(state / "certs"),
                       "--client-name", f"bench-{name}", *agent]
            env = dict(os.environ, RUNTIME_DIRECTORY=str(runtime))  # the status file: RAM, as /run
            log = (work / f"{name}.log").open("wb")
            proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
            prefix = "" if sensors is None else name
            runs.append(Run(name, proc, emulator_counter(emulator, prefix) if prefix else lambda: (0, 0)))

        python = [sys.executable, "-m", "pibridge"]
        # (pibridge run reads no PIBRIDGE_CPROFILE: only the emulator's serve does)
        profiled = ([sys.executable, str(HERE / "cprofile_run.py"), str(args.cprofile), "--"] if args.cprofile
                    else python)
        bridge("sim", bench_sensors("sim"), profiled)
        bridge("replay", bench_sensors("replay"),
               [sys.executable, str(HERE / "replay_bus.py"), str(RECORD_S), str(replay_summary), "--"])
        bridge("idle", bench_sensors("idle", 1, IDLE_INTERVAL_S), python)
        bridge("greenhouse", None, python)
        wait_for(lambda: _port_open(mosquitto_port), 10, "mosquitto")
        subscriber = Subscriber(mosquitto_port)
        mqttio = subprocess.Popen([str(args.mqttio_python), str(work / "mqttio_launcher.py"),
                                   str(work / "mqttio.yml")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        runs.append(Run("mqtt-io", mqttio, subscriber.delivered))
        by_name = {run.name: run for run in runs}
        started = time.monotonic()
        for name in ("sim", "replay", "idle", "mqtt-io"):
            wait_for(lambda run=by_name[name]: run.delivered()[0] > 0 or run.proc.poll() is not None,
                     READY_TIMEOUT_S, f"{name} to deliver")
            if by_name[name].proc.poll() is not None:
                raise RuntimeError(f"{name} exited: see {work / (name + '.log')}")
        # the replay run must be answering from its log before the window opens
        time.sleep(max(0.0, RECORD_S + SETTLE_S - (time.monotonic() - started)))
        os.sync()
        for run in runs:
            run.snapshot()
        time.sleep(window_s)
        for run in runs:
            run.snapshot()
            run.peak_kib = proc_status_kib(run.proc.pid, "VmHWM")
            run.threads = proc_status_kib(run.proc.pid, "Threads")
        for run in runs:
            run.proc.send_signal(signal.SIGTERM)
        codes = {run.name: run.proc.wait(30) for run in runs}
        subscriber.session.close()
    finally:
        for proc in [*(run.proc for run in runs), *helpers]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        emulator.stop()
    replay = json.loads(replay_summary.read_text()) if replay_summary.exists() else {}
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(runtime, ignore_errors=True)
    bare_kib = baseline_rss_kib()

    w = {run.name: run.window() for run in runs}
    for name, figures in w.items():
        print(f"{name:<10} exit {codes[name]}  window {figures['seconds']:.1f} s  "
              f"CPU {figures['cpu_s']:.4f} s (ticks {figures['ticks_cpu_s']:.2f} s, threads ended "
              f"{figures['threads_ended']:.0f})  "
              f"values {figures['values']:.0f}  samples {figures['samples']:.0f}  write_bytes "
              f"{figures['written']:.0f}  wake-ups {figures['switches']:.0f}  "
              f"preempted {figures['preempted']:.0f}  "
              f"peak RSS {by_name[name].peak_kib / KIB_PER_MB:.1f} MB  threads {by_name[name].threads}")
    print(f"replay transfer log: {replay}")

    def per_value(name: str) -> float:
        return MS * w[name]["cpu_s"] / w[name]["values"] if w[name]["values"] else float("nan")

    sim_ms, peer_ms, replay_ms = per_value("sim"), per_value("mqtt-io"), per_value("replay")
    def bytes_per_sample(name: str) -> float:
        return w[name]["written"] / w[name]["samples"] if w[name]["samples"] else float("nan")

    idle_ms_s = MS * w["idle"]["cpu_s"] / w["idle"]["seconds"]
    idle_wakeups = w["idle"]["switches"] / w["idle"]["seconds"]
    idle_preempted = w["idle"]["preempted"] / w["idle"]["seconds"]
    rss_mb = by_name["greenhouse"].peak_kib / KIB_PER_MB

    drain = jitter = "not run"
    if not args.no_drain:
        print("\n--- backlog_drain.py " + " ".join(DRAIN_ARGS[mode]))
        match = DRAIN_RE.search(run_tool("backlog_drain.py", DRAIN_ARGS[mode]))
        drain = f"{float(match.group(1)):.0f} %" if match else "failed"
    if not args.no_jitter:
        print(f"\n--- scheduler_jitter.py --seconds {JITTER_SECONDS[mode]}")
        match = JITTER_RE.search(run_tool("scheduler_jitter.py", ["--seconds", str(JITTER_SECONDS[mode])]))
        jitter = f"{float(match.group(1)):.1f} ms" if match else "failed"

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} (shared); window {window_s:g} s, {mode} run")
    rows = [
        ("CPU per delivered value vs mqtt-io, same run",
         f"{sim_ms:.3f} ms vs {peer_ms:.3f} ms = {sim_ms / peer_ms:.2f}x"
         + (" (sim run under cProfile: not a measurement)" if args.cprofile else ""), "<= 1x", "<= 1/3"),
        ("the same without simulation (recorded bus answers)", f"{replay_ms:.3f} ms/value", "<= 0.3 ms",
         "<= 0.15 ms"),
        ("storage bytes written per delivered sample (20 sensors)",
         f"{bytes_per_sample('replay'):.0f} B ({bytes_per_sample('sim'):.0f} B with the fakes' sysfs files)",
         "<= 512 B", "<= 200 B"),
        ("idle: 1 sensor at 60 s, CPU and wake-ups per second",
         f"{idle_ms_s:.2f} ms/s, {idle_wakeups:.2f}/s (+{idle_preempted:.2f}/s preempted by the other runs)",
         "<= 0.2 ms/s, <= 1/s", "<= 0.1 ms/s"),
        ("peak RSS, greenhouse profile --simulate",
         f"{rss_mb:.1f} MB (bare python {bare_kib / KIB_PER_MB:.1f} MB)", "<= 33 MB", "<= 30 MB"),
        ("backlog drain vs the emulator's own ack rate", drain, ">= 90 %", ">= 95 %"),
        ("scheduler jitter p99, 20 sensors, one hung 2 s", jitter, "<= 3 ms", "<= 2 ms"),
    ]
    print("| measure | today | must reach | aim |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(code == 0 for code in codes.values()) else 1


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    sys.exit(main())
