"""Idle cost of ``pibridge run``: one sensor every 60 s, CPU and thread wake-ups per second.

Usage: .venv/bin/python scripts/bench/idle_wakeups.py [--seconds 60] [--interval 60]

Runs ``pibridge run --simulate --trust-clock`` as a child process on a one-sensor profile (a CPU
temperature every ``--interval`` seconds) against a fresh emulator (real mosquitto, TLS), waits
``WARM_UP_S`` (start-up, the first sample), then measures over ``--seconds``: process CPU
(utime + stime of ``/proc/PID/stat``) and wake-ups (``voluntary_ctxt_switches`` of every thread
in ``/proc/PID/task/*/status``, summed: each is a thread that slept and was woken). A thread that
ends within the window takes its count with it (none should, idle). Prints per second, and
per thread (thread ids: Python does not name its threads for the kernel). Targets (issue 17):
<= 0.2 ms CPU per second, <= 1 wake-up per second.
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

WARM_UP_S = 15.0
TARGET_CPU_MS_PER_S = 0.2
TARGET_WAKEUPS_PER_S = 1.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
RAM_DIR = Path("/dev/shm")


def profile_text(emulator: Emulator, work: Path, interval_s: float) -> str:
    return "\n".join([
        "[agent]", 'host = "127.0.0.1"', f"port = {emulator.port}",
        f"provision_port = {emulator.provision_port}", f'ca_file = "{emulator.ca_file}"',
        f'cert_folder = "{work / "certs"}"', 'client_name = "idle"', 'provisioning = "smart"', "",
        "[bridge]", f'state_dir = "{work / "state"}"', "",
        "[[sensor]]", 'name = "Pi SoC"', 'driver = "cpu_temperature"', f"interval = {interval_s}", ""])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S   # utime, stime (fields 14, 15)


def thread_names(pid: int) -> dict[int, str]:
    """``{thread id: kernel name}`` (``python`` unless something named the thread for the kernel)."""
    out: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
    return out


def wakeups(pid: int) -> dict[int, int]:
    """``{thread id: voluntary context switches}``."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[int(task.name)] = int(line.split()[1])
        except OSError:
            continue  # the thread ended
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pibridge-idle-"))
    runtime = Path(tempfile.mkdtemp(prefix="pibridge-idle-run-", dir=RAM_DIR if RAM_DIR.is_dir() else None))
    emulator = Emulator(work / "emulator")
    emulator.start()
    try:
        profile = work / "idle.toml"
        profile.write_text(profile_text(emulator, work, args.interval))
        bridge = subprocess.Popen([sys.executable, "-m", "pibridge", "run", "--profile", str(profile),
                                   "--simulate", "--trust-clock"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=dict(os.environ, RUNTIME_DIRECTORY=str(runtime), TMPDIR=str(runtime)))
        try:
            time.sleep(WARM_UP_S)
            if bridge.poll() is not None:
                raise SystemExit(f"the bridge exited early ({bridge.returncode})")
            cpu_before, wake_before = cpu_seconds(bridge.pid), wakeups(bridge.pid)
            started = time.monotonic()
            time.sleep(args.seconds)
            cpu_after, wake_after = cpu_seconds(bridge.pid), wakeups(bridge.pid)
            names = thread_names(bridge.pid)
            window = time.monotonic() - started
            pid = bridge.pid
        finally:
            bridge.terminate()
            bridge.wait(30)
    finally:
        emulator.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    per_thread = {tid: count - wake_before.get(tid, 0) for tid, count in wake_after.items()}
    total = sum(per_thread.values())
    cpu_ms_per_s = 1000 * (cpu_after - cpu_before) / window
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"pibridge run --simulate: 1 sensor every {args.interval:g} s, window {window:.0f} s "
          f"after {WARM_UP_S:g} s warm-up, {len(wake_after)} threads")
    print(f"CPU: {cpu_ms_per_s:.2f} ms/s (clock ticks of {1000 / TICKS_PER_S:g} ms) -> target <= "
          f"{TARGET_CPU_MS_PER_S:g} ms/s: {'met' if cpu_ms_per_s <= TARGET_CPU_MS_PER_S else 'NOT met'}")
    print(f"wake-ups: {total / window:.2f}/s -> target <= {TARGET_WAKEUPS_PER_S:g}/s: "
          f"{'met' if total / window <= TARGET_WAKEUPS_PER_S else 'NOT met'}")
    for tid, count in sorted(per_thread.items(), key=lambda item: -item[1]):
        if count:
            print(f"  thread {tid} ({'main' if tid == pid else names.get(tid, '?')}): {count / window:.2f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
