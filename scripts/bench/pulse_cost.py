"""CPU cost of the pulse counter's edge callback, per edge, at 100 Hz and 1 kHz of pulses.

Usage: ``python scripts/bench/pulse_cost.py [--seconds S] [--rates 100,1000]``

For each rate, a gpiozero mock pin (`PulsePin`) is driven for S seconds of real time by the
simulation's `PulseTimer` (one thread, 20 batches a second, each edge with its own timestamp),
three times: with no driver on the pin (the baseline: the fake and gpiozero's mock pin alone),
with a ``pulse_counter`` (debounce off), and with debounce and a 3 s gust window on. The
process's CPU time (``time.process_time``, every thread) over the run, minus the baseline's,
divided by the edges the callback saw, is the callback's own cost per edge; the share of one
core it takes at that rate is beside it. A direct loop over the callback (no pin, no thread)
gives the same figure without the pin machinery.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpiozero.pins.mock import MockFactory

from pibridge.drivers.fakes.pulse import PulsePin, PulseTimer, PulseTrain
from pibridge.drivers.pulse_counter import PulseCounter

PIN = 6
MICRO = 1e6
DIRECT_CALLS = 200_000


def drive(rate_hz: float, seconds: float, options: dict[str, Any] | None) -> tuple[float, int, int]:
    """(CPU s of the process, edges driven, edges the driver counted) for one run."""
    factory = MockFactory()
    pin = factory.pin(PIN, pin_class=PulsePin)
    driver = None
    if options is not None:
        driver = PulseCounter(pin_factory=factory, pin=PIN, **options)
    else:  # the same pin configuration without a listener
        pin.function = "input"
        pin.pull = "up"
        pin.edges = "falling"
    timer = PulseTimer(time.time, threaded=False)
    timer.add(pin, PulseTrain(lambda t: rate_hz, steady_hz=rate_hz))
    stop = threading.Event()

    def run() -> None:  # what the simulation's timer thread does
        while not stop.wait(0.05):
            timer.advance()

    cpu0 = time.process_time()
    thread = threading.Thread(target=run)
    thread.start()
    stop.wait(seconds)
    stop.set()
    thread.join()
    cpu = time.process_time() - cpu0
    counted = int(driver.collect()["count"]) if driver is not None else 0
    if driver is not None:
        driver.close()
    factory.close()
    return cpu, timer.edges_driven, counted


def direct(options: dict[str, Any]) -> float:
    """µs per call of the callback alone, edges 1 ms apart (all accepted)."""
    factory = MockFactory()
    driver = PulseCounter(pin_factory=factory, pin=PIN, **options)
    edge = driver._edge
    t0 = time.process_time()
    for i in range(DIRECT_CALLS):
        edge(1000.0 + i * 0.001, False)
    cost = (time.process_time() - t0) / DIRECT_CALLS * MICRO
    driver.close()
    factory.close()
    return cost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="real seconds per run")
    parser.add_argument("--rates", default="100,1000", help="pulse rates in Hz, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (the median is shown)")
    args = parser.parse_args(argv)
    plain = {"per_pulse": 1 / 450, "unit": "L"}
    full = {"rate_factor": 2.4, "rate_unit": "km/h", "debounce": "0.2ms", "gust_window": "3s"}
    print("callback alone (direct loop): "
          f"{direct(plain):.2f} µs/edge plain, {direct(full):.2f} µs/edge with debounce + gust")
    print(f"{'rate':>7} {'variant':<18} {'edges':>7} {'counted':>8} {'CPU s':>7} "
          f"{'callback µs/edge':>17} {'core % (callback)':>18}")
    variants: list[tuple[str, dict[str, Any] | None]] = [
        ("no driver", None), ("pulse_counter", plain), ("+ debounce + gust", full)]
    for rate in (float(r) for r in args.rates.split(",")):
        runs: dict[str, list[tuple[float, int, int]]] = {label: [] for label, _ in variants}
        for _ in range(args.repeat):  # interleaved, so a load change hits every variant alike
            for label, options in variants:
                runs[label].append(drive(rate, args.seconds, options))
        median = {label: tuple(statistics.median(r[i] for r in found) for i in range(3))
                  for label, found in runs.items()}
        base_cpu, base_edges, _ = median["no driver"]
        print(f"{rate:>6g}Hz {'no driver':<18} {base_edges:>7.0f} {'-':>8} {base_cpu:>7.3f}")
        for label, _ in variants[1:]:
            cpu, edges, counted = median[label]
            # the baseline drove (about) as many edges: scale it to this run's edges
            extra = cpu - base_cpu * edges / max(1, base_edges)
            per_edge = extra / max(1, counted) * MICRO
            share = extra / args.seconds * 100
            print(f"{rate:>6g}Hz {label:<18} {edges:>7.0f} {counted:>8.0f} {cpu:>7.3f} {per_edge:>17.2f} "
                  f"{share:>17.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
