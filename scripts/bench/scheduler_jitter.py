"""Scheduler jitter: 20 simulated sensors at 1 s, one of them hanging 2 s per read.

Usage: .venv/bin/python scripts/bench/scheduler_jitter.py [--seconds 60] [--sensors 20]

19 sensors are built-in drivers on their simulated hardware (BME280, BH1750, DS18B20, MCP3008,
CPU temperature, door contact, round robin); the 20th is a bench-only driver whose ``collect()``
blocks 2 s on every read. All share one 1 s grid. For the 19 others it prints p50/p99/max of
|start of measurement − slot| (the sample's monotonic start time turned into wall time with the
offset measured at the beginning of the run: sub-millisecond resolution) and how many of their
slots were skipped, plus what happened to the hanging one. The process's CPU time is shown beside.
Target: p99 ≤ 5 ms, no slot of the others skipped. Absolute figures: quote them with the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pibridge.bridge.clock import SystemClock, TrustedClock
from pibridge.bridge.model import TakenSample
from pibridge.bridge.scheduler import Scheduler, SensorPlan
from pibridge.drivers.base import Driver, Metric, Sample
from pibridge.drivers.simulation import Environment, SimulatedWorld

INTERVAL_S = 1.0
HANG_S = 2.0
TARGET_P99_MS = 5.0
MS = 1000.0
#: built-in drivers that can be read every second on simulated hardware (the DHT needs 2 s), in
#: turn; one MCP3008 only. They share one `SimulatedWorld`, so each instance gets its own bus,
#: pin or probe (`options_for`).
SIMULATED = ("bme280", "bh1750", "ds18b20", "cpu_temperature", "digital_input")
#: free GPIOs for the simulated door contacts (not I2C, SPI or 1-Wire pins)
DOOR_PINS = (5, 6, 12, 13, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27)


def options_for(name: str, index: int) -> dict[str, Any]:
    """Options that give sensor ``index`` hardware of its own in the shared world."""
    if name in ("bme280", "bh1750"):
        return {"i2c_bus": 10 + index}
    if name == "ds18b20":
        return {"device_id": f"28-{index:012x}"}
    if name == "digital_input":
        return {"pin": DOOR_PINS[index % len(DOOR_PINS)]}
    return {}


class Hanging(Driver):
    """Bench-only: every read blocks ``HANG_S`` seconds (a wedged bus)."""

    name = "hanging"
    metrics = (Metric("value", "Value", unit="SI.Temperature.CELSIUS"),)

    def collect(self) -> Sample:
        time.sleep(HANG_S)
        return {"value": 1.0}


class Collector:
    def __init__(self) -> None:
        self.samples: list[TakenSample] = []
        self.lock = threading.Lock()

    def put(self, sample: TakenSample) -> None:
        with self.lock:
            self.samples.append(sample)


def plans(count: int, world: SimulatedWorld) -> list[SensorPlan]:
    out = [SensorPlan("hanging", INTERVAL_S, Hanging)]
    for i in range(count - 1):
        name = "mcp3008" if i == 0 else SIMULATED[i % len(SIMULATED)]
        options = options_for(name, i)

        def build(name: str = name, options: dict[str, Any] = options) -> Driver:
            return world.build(name, options)
        out.append(SensorPlan(f"{name}-{i}", INTERVAL_S, build))
    return out


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sensors", type=int, default=20)
    args = parser.parse_args()

    collector = Collector()
    world = SimulatedWorld(Environment(seed=0))
    scheduler = Scheduler(plans(args.sensors, world), collector,
                          clock=SystemClock(TrustedClock()))
    offset = time.time() - time.monotonic()
    cpu0 = time.process_time()
    scheduler.start()
    time.sleep(args.seconds)
    workers = scheduler.pool.size
    scheduler.stop(5.0)
    world.close()
    cpu_s = time.process_time() - cpu0
    stats = scheduler.stats()

    errors_ms: list[float] = []
    per_sensor: dict[str, list[int]] = {}
    worst_slot: dict[int, float] = {}
    for sample in collector.samples:
        if sample.sensor == "hanging" or sample.event:
            continue
        wall = sample.monotonic_s + offset
        slot = round(wall / INTERVAL_S)
        errors_ms.append(abs(wall - slot * INTERVAL_S) * MS)
        worst_slot[slot] = max(worst_slot.get(slot, 0.0), errors_ms[-1])
        per_sensor.setdefault(sample.sensor, []).append(slot)
    others = [name for name in stats if name != "hanging"]
    skipped = sum(stats[name]["skipped"] for name in others)
    failed = sum(stats[name]["failed"] for name in others)
    gaps = sum(slots[-1] - slots[0] + 1 - len(set(slots)) for slots in per_sensor.values())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.sensors} sensors at {INTERVAL_S:g} s for {args.seconds:g} s; 'hanging' blocks {HANG_S:g} s "
          f"per read; worker threads at the end: {workers}")
    if not errors_ms:
        print("no samples taken")
        return 1
    p50, p99 = statistics.median(errors_ms), percentile(errors_ms, 0.99)
    first_slot = min(worst_slot)
    print(f"others: {len(errors_ms)} samples from {len(per_sensor)} sensors; |start - slot| "
          f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {max(errors_ms):.3f} ms")
    worst = sorted(worst_slot.items(), key=lambda item: -item[1])[:3]
    print("worst slots (s after the first): " + ", ".join(
        f"{slot - first_slot}: {error:.2f} ms" for slot, error in worst))
    print(f"others: slots skipped {skipped}, missing between first and last sample {gaps}, "
          f"failed reads {failed}")
    hanging = stats["hanging"]
    print(f"hanging: samples {hanging['taken']}, abandoned {hanging['abandoned']}, "
          f"late results discarded {hanging['late_discarded']}, slots skipped {hanging['skipped']}")
    print(f"CPU: {cpu_s:.2f} s for {args.seconds:g} s ({100 * cpu_s / args.seconds:.1f} % of one core, "
          "simulated hardware included)")
    verdict = p99 <= TARGET_P99_MS and skipped == 0 and gaps == 0
    print(f"target: p99 <= {TARGET_P99_MS:g} ms and no slot of the others skipped -> "
          f"{'met' if verdict else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
