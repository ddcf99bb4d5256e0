"""CPU cost of one ``read()`` per built-in driver against its fake hardware.

Usage: ``python scripts/bench/read_cost.py [--reads N] [--budget SECONDS]``

Each driver is built with ``cls.simulated(Environment(seed=0), ...)``. Where ``simulated()``
takes a ``sleep`` argument (BME280, BH1750) a no-op is injected, so conversion waits cost nothing
and the fake chip runs on virtual time. The figure that matters is CPU time
(``time.process_time``), which never counts sleeping; wall time is shown beside it.

"simulated" rows include the fake's own work (for the BME280: inverting the compensation by
bisection to turn °C/Pa/%RH into ADC counts). The "driver only" rows use a fake with fixed values
on virtual time, so they measure pibridge's own work per read (bus calls through the fake +
maths); the issue's target for the BME280 is <= 200 µs. The simulated DHT rows fail by design
(the driver refuses reads closer than 2 s on the real clock); their "driver only" rows step a
virtual clock past that spacing and measure real reads.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pibridge.drivers import registry
from pibridge.drivers.base import Driver
from pibridge.drivers.errors import SensorError
from pibridge.drivers.simulation import Environment

DEFAULT_READS = 2000
DEFAULT_BUDGET_S = 1.0  #: wall-clock cap per driver, so slow simulations stay bounded
MICRO = 1e6


def no_sleep(seconds: float) -> None:
    """Injected conversion wait: costs nothing (the fake's virtual clock still advances)."""


def measure(read: Callable[[], Any], reads: int, budget_s: float) -> tuple[int, int, float, float, str]:
    """(reads done, failures, CPU µs/read, wall µs/read, last error type) over up to ``reads``
    calls after one warm-up read (detection, calibration, first-time configuration)."""
    failures = 0
    last_error = ""
    with contextlib.suppress(SensorError):
        read()
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while done < reads and (done == 0 or time.perf_counter() - wall0 < budget_s):
        try:
            read()
        except SensorError as exc:
            failures += 1
            last_error = type(exc).__name__
        done += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return done, failures, cpu / done * MICRO, wall / done * MICRO, last_error


def build_simulated(cls: type[Driver]) -> tuple[Driver, str]:
    env = Environment(seed=0)
    if "sleep" in inspect.signature(cls.simulated).parameters:
        return cls.simulated(env, sleep=no_sleep), "waits injected (no-op)"
    return cls.simulated(env), "waits not injectable; CPU time excludes them"


def driver_only_rigs() -> dict[str, tuple[Driver, Callable[[], None]]]:
    """Drivers on fakes with fixed values and virtual time: pibridge's own work per read.

    Each rig is (driver, pace): ``pace()`` runs before every read, outside the timed work of the
    driver only in the sense that it just moves the virtual clock (the DHT rigs step it past the
    driver's 2 s spacing so that every read is a real one, not a NotReadyError)."""
    from pibridge.drivers.bh1750 import BH1750
    from pibridge.drivers.bme280 import BME280
    from pibridge.drivers.dht import DHT11, DHT22
    from pibridge.drivers.fakes.clock import VirtualClock
    from pibridge.drivers.fakes.dht import FakeDHT
    from pibridge.drivers.fakes.i2c import FakeBH1750, FakeBME280, FakeSMBus

    clock = VirtualClock()
    bus = FakeSMBus(1)
    bus.attach(0x76, FakeBME280(clock=clock))
    bus.attach(0x23, FakeBH1750(lux=500.0, clock=clock))
    rigs: dict[str, tuple[Driver, Callable[[], None]]] = {
        "bme280": (BME280(bus=bus, sleep=clock.sleep), lambda: None),
        "bh1750": (BH1750(bus=bus, sleep=clock.sleep), lambda: None),
    }
    for cls in (DHT22, DHT11):
        dht_clock = VirtualClock()
        driver = cls(sensor=FakeDHT(dht11=cls is DHT11, clock=dht_clock), clock=dht_clock,
                     sleep=dht_clock.sleep, pin=4)
        rigs[cls.name] = (driver, functools.partial(dht_clock.sleep, cls.min_interval_s))
    return rigs


def bench_bulk_vs_single(n: int = 10) -> dict[str, Any]:
    """Read ``n`` fake probes once one by one and once with one bulk conversion, under the fake
    bus's conversion-time model. Returns virtual seconds (time the reads would take on a Pi),
    CPU seconds and the number of conversions for each mode."""
    from pibridge.drivers.ds18b20 import DS18B20, W1BulkCoordinator
    from pibridge.drivers.fakes.w1 import FakeW1Bus

    result: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix="pibridge-w1-bench-") as tmp:
        bus = FakeW1Bus(Path(tmp))
        probes = []
        for i in range(n):
            device_id = f"28-{0x0000075e0000 + i:012x}"
            bus.add_probe(device_id, temperature=20.0 + i / 16)
            probes.append(DS18B20(files=bus, device_id=device_id, w1_root=str(bus.root)))
        for mode in ("single", "bulk"):
            conversions, v0, c0 = bus.conversions, bus.clock.monotonic(), time.process_time()
            if mode == "bulk":
                results = W1BulkCoordinator().read_many(probes)
            else:
                results = {p.device_id: p.read() for p in probes}
            failed = sum(isinstance(r, SensorError) for r in results.values())
            result[mode] = {
                "virtual_s": round(bus.clock.monotonic() - v0, 6),
                "cpu_s": round(time.process_time() - c0, 6),
                "conversions": bus.conversions - conversions,
                "failed": failed,
            }
        for probe in probes:
            probe.close()
    return result


def ds18b20_bulk_section() -> None:
    """Ten DS18B20 probes read one by one and with one bulk conversion."""
    result = bench_bulk_vs_single(10)
    print(f"\nds18b20, {result['n']} probes, one sample each (virtual s = time on a Pi):")
    for mode in ("single", "bulk"):
        details = ", ".join(f"{k} {v}" for k, v in result[mode].items())
        print(f"  {mode:<6} {details}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=DEFAULT_READS, help="reads per driver (max)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="wall seconds per driver")
    args = parser.parse_args(argv)

    print(f"{'driver':<28} {'reads':>6} {'failed':>6} {'CPU µs/read':>12} {'wall µs/read':>13}  note")
    for name in registry.BUILTIN:
        try:
            cls = registry.get(name)
            driver, note = build_simulated(cls)
        except (ImportError, AttributeError, NotImplementedError, SensorError) as exc:
            print(f"{name + ' (simulated)':<28} skipped: {type(exc).__name__}: {exc}")
            continue
        try:
            done, failed, cpu_us, wall_us, error = measure(driver.read, args.reads, args.budget)
        finally:
            driver.close()
        if failed:
            note += f"; failures are {error} (the driver's own read spacing)"
        print(f"{name + ' (simulated)':<28} {done:>6} {failed:>6} {cpu_us:>12.1f} {wall_us:>13.1f}  {note}")

    for name, (driver, pace) in driver_only_rigs().items():
        def paced_read(driver: Driver = driver, pace: Callable[[], None] = pace) -> object:
            pace()
            return driver.read()

        done, failed, cpu_us, wall_us, _ = measure(paced_read, args.reads, args.budget)
        print(f"{name + ' (driver only)':<28} {done:>6} {failed:>6} {cpu_us:>12.1f} {wall_us:>13.1f}  "
              "fixed values, waits on virtual time")

    ds18b20_bulk_section()
    return 0


if __name__ == "__main__":
    sys.exit(main())
