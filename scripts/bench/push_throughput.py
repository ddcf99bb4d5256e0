"""Push throughput of the agent client against a fresh emulator, with a raw-paho baseline.

Measures, in one run on the same broker:
  (a) acknowledged pushes/s, one at a time (each waits for the agent's "Sensor was updated.")
  (b) acknowledged pushes/s, pipelined with 64 in flight
  (c) baseline: plain paho QoS-1 publishes of the same payload (64 in flight, waiting for PUBACKs)
      to a topic the emulator's core does not answer
One sensor, 5 metrics. Target: (b) >= 25 % of (c).

(b) and (c) are measured in alternating rounds (b, c, b, c, ...) and the verdict uses the median
of the per-round ratios: a 2-core machine running client, emulator and broker at once drifts by
tens of percent between seconds, and a ratio taken within one round cancels most of that.

Usage: .venv/bin/python scripts/bench/push_throughput.py [--pushes N] [--rounds R] [--sequential N]
                                                         [--cprofile PATH]
  --cprofile PATH: cProfile every thread of this process into PATH and of the emulator's serve
  process into PATH.emulator (see pibridge.profiling; profiling slows both down).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from pibridge.agent import AgentClient, AgentSettings, MetricDefinition, encode_push, provision
from pibridge.emulator.process import EmulatorProcess
from pibridge.profiling import CPROFILE_ENV, profile_threads

IN_FLIGHT = 64
METRICS = 5
DEFAULT_PUSHES = 5000
DEFAULT_ROUNDS = 5
DEFAULT_SEQUENTIAL = 500
WAIT_S = 60.0
TARGET_RATIO = 0.25


def _values(metric_ids: list[str], i: int) -> dict[str, float]:
    return {mid: 20.0 + (i % 100) / 10 + k for k, mid in enumerate(metric_ids)}


def sequential(client: AgentClient, sid: str, metric_ids: list[str], count: int, t0_ms: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        client.push(sid, _values(metric_ids, i), t0_ms + i)
    return count / (time.perf_counter() - started)


def pipelined(client: AgentClient, sid: str, metric_ids: list[str], count: int, t0_ms: int) -> float:
    slots = threading.BoundedSemaphore(IN_FLIGHT)
    done = threading.Event()
    remaining = [count]
    failures: list[BaseException] = []
    lock = threading.Lock()

    def finished(future: object) -> None:
        error = future.exception()  # type: ignore[attr-defined]
        if error is not None:
            failures.append(error)
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    started = time.perf_counter()
    for i in range(count):
        slots.acquire()
        client.push_async(sid, _values(metric_ids, i), t0_ms + i).add_done_callback(finished)
    if not done.wait(WAIT_S):
        raise SystemExit("pipelined pushes did not complete")
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} pushes failed, first: {failures[0]}")
    return count / elapsed


def raw_paho(emulator: EmulatorProcess, settings: AgentSettings, cid: str, payload: bytes,
             count: int) -> float:
    """Baseline: paho imported directly here (only in this benchmark, outside pibridge.mqtt) so the
    baseline carries none of pibridge's code: QoS-1 publishes, 64 in flight, to a topic no one answers."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from pibridge.agent import CredentialFiles
    from pibridge.mqtt import TlsFiles, tls_context

    files = CredentialFiles(settings.cert_folder, settings.client_name)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{os.getpid()}",
                         protocol=paho.MQTTv311)
    client.tls_set_context(tls_context(TlsFiles(settings.ca_file, files.cert, files.key)))
    client.max_inflight_messages_set(IN_FLIGHT)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    slots = threading.BoundedSemaphore(IN_FLIGHT)
    acked = [0]
    all_acked = threading.Event()

    def on_publish(*args: object) -> None:
        slots.release()
        acked[0] += 1
        if acked[0] == count:
            all_acked.set()

    client.on_publish = on_publish
    client.connect(settings.host, settings.port)
    client.loop_start()
    if not connected.wait(WAIT_S):
        raise SystemExit("raw paho client did not connect")
    topic = f"/v1.0/{cid}/bench/sink"  # under our own id (ACL), routed nowhere by the core
    started = time.perf_counter()
    for _ in range(count):
        slots.acquire()
        client.publish(topic, payload, qos=1)
    if not all_acked.wait(WAIT_S):
        raise SystemExit("raw publishes were not all acknowledged")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return count / elapsed


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) a process used so far, from /proc (0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int | None) -> list[int]:
    """Child process ids of ``pid`` (here: the emulator's mosquitto), from /proc."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in children.read_text().split()]
        except OSError:
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=DEFAULT_PUSHES, help="pipelined and baseline count")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="alternating (b)/(c) rounds")
    parser.add_argument("--sequential", type=int, default=DEFAULT_SEQUENTIAL, help="one-at-a-time count")
    parser.add_argument("--cprofile", metavar="PATH", help="cProfile this process and the emulator")
    args = parser.parse_args()
    if args.cprofile:
        os.environ[CPROFILE_ENV] = f"{args.cprofile}.emulator"  # inherited by `emulator serve`
    with profile_threads(args.cprofile):
        return run(args)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="pibridge-bench-") as tmp:
        emulator = EmulatorProcess(Path(tmp) / "emulator")
        emulator.start()
        try:
            settings = AgentSettings(host=emulator.host, port=emulator.port,
                                     provision_port=emulator.provision_port, ca_file=emulator.ca_file,
                                     cert_folder=Path(tmp) / "certs")
            cid = provision(settings).client_id
            with AgentClient(settings, request_timeout=WAIT_S) as client:
                sid = client.create_sensor("Bench").created_sensor_id
                definitions = [MetricDefinition(f"Metric {k}", value_type="double", value_annotation="x")
                               for k in range(METRICS)]
                metric_ids = list(client.create_metrics(sid, definitions).metric_ids.values())
                now_ms = int(time.time() * 1000)
                t0 = now_ms - args.sequential - (args.rounds + 1) * args.pushes - 1000
                client.push(sid, _values(metric_ids, 0), t0 - 1)  # warm-up
                seq_rate = sequential(client, sid, metric_ids, args.sequential, t0)
                payload = encode_push(_values(metric_ids, 0), now_ms)
                broker_pids = _children(emulator.pid)
                rounds: list[tuple[float, float]] = []
                pipe_wall = client_cpu = emulator_cpu = broker_cpu = 0.0
                for r in range(args.rounds):
                    cpu_before, emu_before = time.process_time(), _cpu_of(emulator.pid)
                    broker_before = sum(_cpu_of(pid) for pid in broker_pids)
                    wall_before = time.perf_counter()
                    first_ts = t0 + args.sequential + r * args.pushes  # distinct timestamps per round
                    pipe_rate = pipelined(client, sid, metric_ids, args.pushes, first_ts)
                    pipe_wall += time.perf_counter() - wall_before
                    client_cpu += time.process_time() - cpu_before
                    emulator_cpu += _cpu_of(emulator.pid) - emu_before
                    broker_cpu += sum(_cpu_of(pid) for pid in broker_pids) - broker_before
                    raw_rate = raw_paho(emulator, settings, cid, payload, args.pushes)
                    rounds.append((pipe_rate, raw_rate))
        finally:
            emulator.stop()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"payload: {len(payload)} bytes, {METRICS} metrics, one sensor")
    for number, (pipe, raw) in enumerate(rounds, start=1):
        print(f"round {number}: (b) {pipe:7.0f} /s  (c) {raw:7.0f} /s  (b)/(c) {pipe / raw:.1%}")
    pipe_rate = statistics.median(p for p, _ in rounds)
    raw_rate = statistics.median(r for _, r in rounds)
    ratio = statistics.median(p / r for p, r in rounds)
    print(f"medians over {len(rounds)} rounds of {args.pushes} pushes:")
    print(f"(a) acknowledged pushes, one at a time : {seq_rate:9.0f} /s")
    print(f"(b) acknowledged pushes, {IN_FLIGHT} in flight  : {pipe_rate:9.0f} /s")
    print(f"(c) raw paho QoS-1 publishes, {IN_FLIGHT} in flight: {raw_rate:9.0f} /s")
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"ratios: (b)/(c) = {ratio:.1%} (median of the rounds; target >= {TARGET_RATIO:.0%}: {verdict}), "
          f"(a)/(c) = {seq_rate / raw_rate:.1%}, (b)/(a) = {pipe_rate / seq_rate:.1f}x")
    print(f"CPU during (b): this client process {client_cpu / pipe_wall:.0%} of one core, "
          f"emulator (serve + core) {emulator_cpu / pipe_wall:.0%}, mosquitto {broker_cpu / pipe_wall:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
