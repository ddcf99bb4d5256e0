"""Storage writes per delivered sample: what ``pibridge run`` costs an SD card.

Usage: .venv/bin/python scripts/bench/sd_writes.py [--seconds 60] [--sensors 20] [--interval 2.5]
       [--durability process|power]

Runs ``pibridge run --simulate --trust-clock`` as a child process on a generated profile
(``--sensors`` sensors, a mix of BME280s on buses of their own, DS18B20 probes on the one
1-Wire master and CPU temperatures, every ``--interval`` seconds) against a fresh emulator
(real mosquitto, TLS). Its state directory (the queue) is on the file system of this script's
temporary directory (it must be a real, block-backed one: on tmpfs ``write_bytes`` stays 0); its
runtime directory (the status file, ``$RUNTIME_DIRECTORY``) is on ``/dev/shm`` as ``/run`` is
on a Pi (RAM), and so is its ``$TMPDIR``, where ``--simulate`` keeps its fake sysfs (the 1-Wire
probes' ``w1_slave`` files, rewritten per read: on a Pi those are the kernel's, never the card).

Measured over the window after a warm-up: ``/proc/PID/io`` ``write_bytes`` of the bridge (bytes
this process caused to be sent to the block layer; the kernel counts them when a page is
dirtied, and ``sync`` is run before each reading so that writeback is complete), and the
samples the emulator stored in that window (distinct sensor and timestamp pairs in its dump).
Prints bytes written per delivered sample; the target is <= 512 B, the aim <= 200 B.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pibridge.testing import Emulator  # noqa: E402

TARGET_BYTES = 512
AIM_BYTES = 200
WARM_UP_S = 10.0
#: Where the status file goes (RAM, like /run on a Pi); a temporary directory under it.
RAM_DIR = Path("/dev/shm")
#: The three kinds of simulated sensor the profile cycles through.
KINDS = ("bme280", "ds18b20", "cpu_temperature")


def profile_text(emulator: Emulator, state_dir: Path, sensors: int, interval_s: float,
                 durability: str) -> str:
    lines = ["[agent]", 'host = "127.0.0.1"', f"port = {emulator.port}",
             f"provision_port = {emulator.provision_port}", f'ca_file = "{emulator.ca_file}"',
             f'cert_folder = "{state_dir.parent / "certs"}"', 'client_name = "sdwrites"',
             'provisioning = "smart"', "", "[bridge]", f'state_dir = "{state_dir}"',
             f'durability = "{durability}"']
    for index in range(sensors):
        kind = KINDS[index % len(KINDS)]
        lines += ["", "[[sensor]]", f'name = "Sensor {index:02d}"', f'driver = "{kind}"',
                  f"interval = {interval_s}"]
        if kind == "bme280":
            lines += ["[sensor.options]", f"i2c_bus = {10 + index}"]
        elif kind == "ds18b20":
            lines += ["[sensor.options]", f'device_id = "28-{index + 1:012x}"']
    return "\n".join(lines) + "\n"


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise KeyError("write_bytes")


def delivered_samples(emulator: Emulator) -> int:
    """Distinct (sensor, timestamp) pairs the emulator stored: one per delivered sample."""
    pairs: set[tuple[str, int]] = set()
    for client in emulator.dump()["clients"]:
        for sensor in client["sensors"]:
            for metric in sensor["metrics"]:
                pairs.update((sensor["sensorId"], v["timestamp"]) for v in metric["values"])
    return len(pairs)


def measured_write_bytes(pid: int) -> int:
    subprocess.run(["sync"], check=True)
    return write_bytes(pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sensors", type=int, default=20)
    parser.add_argument("--interval", type=float, default=2.5)
    parser.add_argument("--durability", choices=("process", "power"), default="process")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pibridge-sdwrites-"))
    ram = RAM_DIR if RAM_DIR.is_dir() else None
    runtime = Path(tempfile.mkdtemp(prefix="pibridge-sdwrites-run-", dir=ram))
    state = work / "state"
    emulator = Emulator(work / "emulator")
    emulator.start()
    try:
        profile = work / "bench.toml"
        profile.write_text(profile_text(emulator, state, args.sensors, args.interval, args.durability))
        bridge = subprocess.Popen([sys.executable, "-m", "pibridge", "run", "--profile", str(profile),
                                   "--simulate", "--trust-clock"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, RUNTIME_DIRECTORY=str(runtime), TMPDIR=str(runtime)))
        try:
            time.sleep(WARM_UP_S)
            if bridge.poll() is not None:
                raise SystemExit(f"the bridge exited early ({bridge.returncode}): "
                                 f"{bridge.stderr.read() if bridge.stderr else ''}")
            samples_before = delivered_samples(emulator)
            bytes_before = measured_write_bytes(bridge.pid)
            started = time.monotonic()
            time.sleep(args.seconds)
            bytes_after = measured_write_bytes(bridge.pid)
            samples_after = delivered_samples(emulator)
            window = time.monotonic() - started
        finally:
            bridge.terminate()
            bridge.communicate(timeout=30)
    finally:
        emulator.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    written = bytes_after - bytes_before
    samples = samples_after - samples_before
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"pibridge run --simulate: {args.sensors} sensors every {args.interval:g} s, "
          f"durability = {args.durability!r}, window {window:.0f} s after {WARM_UP_S:g} s warm-up")
    print(f"storage written (write_bytes, sync before each reading): {written} B")
    print(f"samples delivered in the window (emulator): {samples}")
    if samples:
        per = written / samples
        verdict = "met" if per <= TARGET_BYTES else "NOT met"
        print(f"bytes written per delivered sample: {per:.0f} B -> target <= {TARGET_BYTES} B: {verdict} "
              f"(aim <= {AIM_BYTES} B)")
    return 0 if samples else 1


if __name__ == "__main__":
    sys.exit(main())
