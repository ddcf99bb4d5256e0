"""Backlog drain: samples queued during an outage, then delivered, against the emulator's own
pipelined acknowledgement rate measured in the same run.

1. append cost: `SampleQueue.put` from one producer thread (the scheduler's outbox hands samples
   over one at a time) and from 8 threads (group commits), with durability "process" and "power";
2. outage: the emulator is stopped, the delivery thread runs (retrying to connect), and
   ``--samples`` samples (one sensor, 5 metrics, as push_throughput.py pushes) are put;
3. the emulator starts again on the same state and ports and the backlog drains in ``--rounds``
   rounds (the delivery is stopped and a new one started between rounds: what a round left
   unacknowledged is sent again); a round's rate = samples acknowledged from its first
   acknowledgement to its end, per second (connect + reconcile excluded, reported apart);
4. after each round, the baseline: `push_throughput.pipelined` (the agent client, 64 pushes of
   one sample in flight, same payload shape; the delivery sends a backlog several samples a
   push) on the same emulator. Alternating rounds and judging the median of the per-round
   ratios cancels most of the drift of a shared 2-core machine and of the emulator slowing
   down as its database grows (500,000 values by the end).

Targets: drain >= 80 % of the baseline; append <= 100 us per sample with "process".

Usage: .venv/bin/python scripts/bench/backlog_drain.py [--samples N] [--rounds R] [--power-samples N]
                                                        [--baseline-pushes N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_throughput import IN_FLIGHT, METRICS, pipelined

from pibridge.agent import AgentClient, AgentSettings, MetricDefinition, provision
from pibridge.bridge.delivery import IN_FLIGHT as DELIVERY_IN_FLIGHT
from pibridge.bridge.delivery import Delivery
from pibridge.bridge.model import MetricSpec, SensorSpec, TakenSample
from pibridge.bridge.pushes import MAX_SAMPLES_PER_PUSH
from pibridge.bridge.queue import SampleQueue
from pibridge.emulator.store import DB_NAME
from pibridge.profile import BridgeSettings
from pibridge.testing import Emulator

DEFAULT_SAMPLES = 100_000
DEFAULT_POWER_SAMPLES = 20_000
DEFAULT_BASELINE_PUSHES = 5_000
DEFAULT_ROUNDS = 5
POLL_S = 0.01
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


class Baseline:
    """The agent client's pipelined acknowledgement rate (pushes/s), push_throughput.py's (b): its
    own connection and sensor (same payload shape), measured between drain rounds."""

    def __init__(self, settings: AgentSettings, t0_ms: int) -> None:
        self.client = AgentClient(settings, request_timeout=60.0)
        self.client.connect(60.0)
        self.sid = self.client.create_sensor("Baseline").created_sensor_id
        definitions = [MetricDefinition(f"Metric {k}", value_type="double", value_annotation="x")
                       for k in range(METRICS)]
        self.metric_ids = list(self.client.create_metrics(self.sid, definitions).metric_ids.values())
        self.next_ms = t0_ms
        self.measure(200)  # warm-up

    def measure(self, pushes: int) -> float:
        rate = pipelined(self.client, self.sid, self.metric_ids, pushes, self.next_ms)
        self.next_ms += pushes
        return rate

    def close(self) -> None:
        self.client.close()


def values_held(emulator: Emulator, sensor: str) -> int:
    db = sqlite3.connect(emulator.state_dir / DB_NAME)
    try:
        return int(db.execute("SELECT COUNT(*) FROM vals v JOIN metrics m ON v.metric = m.id "
                              "JOIN sensors s ON m.sensor = s.id WHERE s.name = ?", (sensor,)).fetchone()[0])
    finally:
        db.close()


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` (a benchmark may: waiting on the delivery's step notifications would
    wake this thread once per step and slow down what it measures)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


@dataclass
class Round:
    drain_rate: float
    baseline_rate: float
    cpu_share: float
    setup_s: float


def drain_round(settings: AgentSettings, bridge: BridgeSettings, queue: SampleQueue, until_pushed: int,
                delivery: Delivery | None = None) -> Round:
    """Start a delivery (or use the running one), then measure samples/s from its first
    acknowledgement until ``until_pushed`` were acknowledged (or the queue is empty); stop it."""
    started = time.perf_counter()
    if delivery is None:
        delivery = Delivery(settings, bridge, queue, specs={SPEC.name: SPEC},
                            request_timeout=30.0)
        delivery.start()
    try:
        if not _poll(lambda: delivery.pushed > 0, WAIT_S):
            raise SystemExit(f"nothing was delivered: {delivery.status()}")
        first, pushed_first, cpu_first = time.perf_counter(), delivery.pushed, time.process_time()
        if not _poll(lambda: delivery.pushed >= until_pushed or delivery._drained.is_set(), WAIT_S):
            raise SystemExit(f"the backlog was not drained: {delivery.status()}")
        elapsed = time.perf_counter() - first
        rate = (delivery.pushed - pushed_first) / elapsed
        cpu = (time.process_time() - cpu_first) / elapsed
    finally:
        delivery.stop()
    return Round(rate, 0.0, cpu, first - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help="samples queued during the outage")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="drain rounds (alternating)")
    parser.add_argument("--power-samples", type=int, default=DEFAULT_POWER_SAMPLES,
                        help='samples for the durability = "power" append measurement')
    parser.add_argument("--baseline-pushes", type=int, default=DEFAULT_BASELINE_PUSHES,
                        help="pipelined pushes per baseline measurement")
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    t0 = now_ms - 3 * 86_400_000  # distinct, valid timestamps for every sample and push
    rounds: list[Round] = []
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
            bridge = BridgeSettings(state_dir=base / "state")
            queue = SampleQueue(bridge.state_dir, boot_id="bench")
            delivery = Delivery(settings, bridge, queue, specs={SPEC.name: SPEC},
                                request_timeout=30.0)
            delivery.start()
            if not _poll(lambda: delivery.reconciliations > 0, 60.0):  # registered before the outage
                raise SystemExit(f"the delivery did not reconcile: {delivery.status()}")
            emulator.stop()  # the outage: samples wait on disk while the delivery retries
            started = time.perf_counter()
            for i in range(args.samples):
                queue.put(_sample(i, t0))
            outage_append_us = (time.perf_counter() - started) / args.samples * US_PER_S
            emulator.start()
            per_round = args.samples // args.rounds
            running: Delivery | None = delivery  # round 1: the delivery that lived through the outage
            baseline: Baseline | None = None
            for number in range(1, args.rounds + 1):
                until = per_round if number < args.rounds else args.samples * 2  # the last: until empty
                measured = drain_round(settings, bridge, queue, until, running)
                running = None
                if baseline is None:
                    baseline = Baseline(settings, t0 + 10_000_000)
                measured.baseline_rate = baseline.measure(args.baseline_pushes)
                rounds.append(measured)
            if baseline is not None:
                baseline.close()
            depth = queue.stats().depth
            queue.close()
            held = values_held(emulator, SPEC.name)
        finally:
            emulator.stop()
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
    print(f"drain: {args.samples} samples queued during an outage ({METRICS} metrics each, one sensor), "
          f"the delivery's {DELIVERY_IN_FLIGHT} samples in flight in pushes of up to "
          f"{MAX_SAMPLES_PER_PUSH}, in rounds of {per_round} alternating with {args.baseline_pushes} "
          f"pipelined pushes of one sample ({IN_FLIGHT} in flight, push_throughput.py's (b))")
    for number, r in enumerate(rounds, start=1):
        print(f"  round {number}: drain {r.drain_rate:6.0f} samples/s (bridge CPU {r.cpu_share:.0%} of one "
              f"core; {r.setup_s:.2f} s to the first ack)  baseline {r.baseline_rate:6.0f} /s  "
              f"ratio {r.drain_rate / r.baseline_rate:.1%}")
    ratio = statistics.median(r.drain_rate / r.baseline_rate for r in rounds)
    print(f"  medians: drain {statistics.median(r.drain_rate for r in rounds):.0f} samples/s, baseline "
          f"{statistics.median(r.baseline_rate for r in rounds):.0f} /s")
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"  drain / baseline = {ratio:.1%} (median of the rounds; target >= {TARGET_RATIO:.0%}: {verdict})")
    print(f"  the emulator holds {held} values = {held // METRICS} samples; queue depth {depth}")
    if held != args.samples * METRICS or depth:
        print("  LOSS: not every queued sample arrived")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
