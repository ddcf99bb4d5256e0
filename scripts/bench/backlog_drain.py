"""Backlog drain: samples queued during an outage, then delivered, against the emulator's own
pipelined acknowledgement rate measured in the same run.

1. append cost: `SampleQueue.put` from one producer thread (the scheduler's outbox hands samples
   over one at a time) and from 8 threads (group commits), with durability "process" and "power";
2. outage: the emulator is stopped, the delivery thread runs (retrying to connect), and
   ``--samples`` samples (one sensor, 5 metrics, as push_throughput.py pushes) are put;
3. the emulator starts again on the same state and ports; drain rate = samples pushed from the
   first acknowledgement until the queue is empty, per second;
4. baseline: `push_throughput.pipelined` (the agent client, 64 pushes in flight, same payload
   shape) on the same emulator right before and right after the drain; the mean of the two.

Targets: drain >= 80 % of the baseline; append <= 100 us per sample with "process".

Usage: .venv/bin/python scripts/bench/backlog_drain.py [--samples N] [--power-samples N]
                                                        [--baseline-pushes N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_throughput import IN_FLIGHT, METRICS, pipelined

from pibridge.agent import AgentClient, AgentSettings, MetricDefinition, provision
from pibridge.bridge.delivery import Delivery
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
from pibridge.bridge.queue import SampleQueue
from pibridge.emulator.store import DB_NAME
from pibridge.profile import BridgeSettings
from pibridge.testing import Emulator

DEFAULT_SAMPLES = 100_000
DEFAULT_POWER_SAMPLES = 20_000
DEFAULT_BASELINE_PUSHES = 10_000
PRODUCER_THREADS = 8
WAIT_S = 600.0
TARGET_RATIO = 0.80
TARGET_APPEND_US = 100.0
US_PER_S = 1e6
SPEC = SensorSpec("Backlog", tuple(MetricSpec(f"m{k}", f"Metric {k}", value_type="double", annotation="x")
                                   for k in range(METRICS)))


def _sample(i: int, t0_ms: int) -> TakenSample:
    return TakenSample(SPEC.name, {f"m{k}": 20.0 + (i % 100) / 10 + k for k in range(METRICS)}, t0_ms + i,
                       float(i), "bench")


def append_cost(path: Path, durability: str, count: int, threads: int, t0_ms: int) -> float:
    """Microseconds per `put`, ``count`` samples from ``threads`` producer threads."""
    queue = SampleQueue(path, durability=durability, boot_id="bench")
    per_thread = count // threads

    def produce(offset: int) -> None:
        for i in range(offset, offset + per_thread):
            queue.put(_sample(i, t0_ms))

    workers = [threading.Thread(target=produce, args=(k * per_thread,)) for k in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    queue.close()
    return elapsed / (per_thread * threads) * US_PER_S


def baseline(settings: AgentSettings, pushes: int, t0_ms: int) -> float:
    """The agent client's pipelined acknowledgement rate (pushes/s), push_throughput.py's way."""
    with AgentClient(settings, request_timeout=60.0) as client:
        sid = client.create_sensor("Baseline").created_sensor_id
        definitions = [MetricDefinition(f"Metric {k}", value_type="double", value_annotation="x")
                       for k in range(METRICS)]
        metric_ids = list(client.create_metrics(sid, definitions).metric_ids.values())
        pipelined(client, sid, metric_ids, 200, t0_ms - 1000)  # warm-up
        return pipelined(client, sid, metric_ids, pushes, t0_ms)


def values_held(emulator: Emulator, sensor: str) -> int:
    db = sqlite3.connect(emulator.state_dir / DB_NAME)
    try:
        return int(db.execute("SELECT COUNT(*) FROM vals v JOIN metrics m ON v.metric = m.id "
                              "JOIN sensors s ON m.sensor = s.id WHERE s.name = ?", (sensor,)).fetchone()[0])
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help="samples queued during the outage")
    parser.add_argument("--power-samples", type=int, default=DEFAULT_POWER_SAMPLES,
                        help='samples for the durability = "power" append measurement')
    parser.add_argument("--baseline-pushes", type=int, default=DEFAULT_BASELINE_PUSHES,
                        help="pipelined pushes per baseline measurement")
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    t0 = now_ms - 3 * 86_400_000  # distinct, valid timestamps for every sample and push
    with tempfile.TemporaryDirectory(prefix="pibridge-bench-") as tmp:
        base = Path(tmp)
        appends: dict[tuple[str, int], float] = {}
        for durability in ("process", "power"):
            count = args.power_samples if durability == "power" else args.samples
            for threads in (1, PRODUCER_THREADS):
                path = base / f"append-{durability}-{threads}"
                appends[(durability, threads)] = append_cost(path, durability, count, threads, t0)
        emulator = Emulator(base / "emulator")
        emulator.start()
        try:
            settings = AgentSettings(host=emulator.host, port=emulator.port,
                                     provision_port=emulator.provision_port, ca_file=emulator.ca_file,
                                     cert_folder=base / "certs")
            provision(settings)
            before = baseline(settings, args.baseline_pushes, t0 + 10_000_000)
            bridge = BridgeSettings(state_dir=base / "state")
            queue = SampleQueue(bridge.state_dir, boot_id="bench")
            delivery = Delivery(settings, bridge, queue, specs={SPEC.name: SPEC}, in_flight=IN_FLIGHT,
                                request_timeout=30.0)
            delivery.start()
            delivery.wait_until(lambda: delivery.reconciliations > 0, 60.0)  # registered before the outage
            emulator.stop()
            started = time.perf_counter()
            for i in range(args.samples):
                queue.put(_sample(i, t0))
            outage_append_us = (time.perf_counter() - started) / args.samples * US_PER_S
            restarted = time.perf_counter()
            emulator.start()
            if not delivery.wait_until(lambda: delivery.pushed > 0, WAIT_S):
                raise SystemExit("nothing was delivered after the emulator came back")
            first_ack, pushed_at_first = time.perf_counter(), delivery.pushed
            cpu_before = time.process_time()
            if not delivery.wait_drained(WAIT_S):
                raise SystemExit(f"the backlog was not drained: {delivery.status()}")
            drained = time.perf_counter()
            cpu = time.process_time() - cpu_before
            status = delivery.status()
            delivery.stop()
            queue.close()
            after = baseline(settings, args.baseline_pushes, t0 + 20_000_000)
            held = values_held(emulator, SPEC.name)
        finally:
            emulator.stop()
    drain_rate = (args.samples - pushed_at_first) / (drained - first_ack)
    reference = (before + after) / 2
    ratio = drain_rate / reference
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"append, us per sample (SampleQueue.put returns after its group's commit; target <= "
          f"{TARGET_APPEND_US:g} us with \"process\"):")
    for (durability, threads), cost in appends.items():
        count = args.power_samples if durability == "power" else args.samples
        print(f"  {durability:<7} {threads} producer thread{'s' if threads > 1 else ' '}: {cost:7.1f} us "
              f"({count} samples)")
    print(f"  process 1 producer during the outage (delivery retrying meanwhile): {outage_append_us:7.1f} us")
    verdict = "met" if appends[("process", 1)] <= TARGET_APPEND_US else "MISSED"
    print(f"  target for one producer with \"process\": {verdict}")
    print(f"drain: {args.samples} samples ({METRICS} metrics each, one sensor), {IN_FLIGHT} pushes in flight")
    print(f"  emulator restart -> first acknowledgement: {first_ack - restarted:.2f} s "
          "(start, reconnect, reconcile)")
    print(f"  drain rate: {drain_rate:9.0f} samples/s ({drained - first_ack:.1f} s; bridge process CPU "
          f"{cpu / (drained - first_ack):.0%} of one core)")
    print(f"  baseline, pipelined acknowledged pushes (push_throughput.py's (b)): before {before:.0f} /s, "
          f"after {after:.0f} /s, mean {reference:.0f} /s")
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"  drain / baseline = {ratio:.1%} (target >= {TARGET_RATIO:.0%}: {verdict})")
    print(f"  delivered: pushed {status.pushed}, re-sent {status.resent}, dead letters "
          f"{status.dead_lettered}, queue depth {status.queue_depth}; the emulator holds {held} values "
          f"= {held // METRICS} samples")
    if held != args.samples * METRICS or status.queue_depth:
        print("  LOSS: not every queued sample arrived")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
