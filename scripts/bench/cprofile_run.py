"""cProfile of ``pibridge`` per thread, and where its time goes by part.

Usage:
    .venv/bin/python scripts/bench/cprofile_run.py OUT_DIR -- run --profile P --simulate …
    .venv/bin/python scripts/bench/cprofile_run.py --report OUT_DIR

The first form runs ``pibridge`` in this process with a profiler per thread counting that thread's CPU time
(``time.thread_time``: waiting costs nothing; the main thread and
every thread started meanwhile; a thread still running at exit, a daemon, is left out and named)
and writes ``OUT_DIR/<thread name>.prof``; stop it with SIGTERM/SIGINT as usual. The second
prints, per thread and in total, the share of self time (tottime) by part of the code:
``fakes`` (drivers/fakes/ and gpiozero, which only simulation uses here), ``drivers``,
``sqlite``, ``mqtt`` (paho, ssl, select/socket), ``bridge`` (pibridge itself) and ``other``
(stdlib: threading, logging, json…). cProfile slows Python code ~2x and C calls less: compare
shares, not absolute times.
"""

from __future__ import annotations

import cProfile
import pstats
import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PARTS = (
    ("fakes", re.compile(r"/drivers/fakes/|/gpiozero/")),
    ("drivers", re.compile(r"/drivers/")),
    ("sqlite", re.compile(r"sqlite3|method '(execute|executemany|commit|fetch\w*)'")),
    ("mqtt", re.compile(r"/paho/|ssl|select|socket|method '(recv|send|sendall|poll)'")),
    ("bridge", re.compile(r"/pibridge/")),
)
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
FAKES = re.compile(r"/drivers/fakes/|/gpiozero/")
#: importing the fakes and building them (a simulator: ``simulate``, ``simulate_digital_input``…)
#: is start-up, not what a read costs
NOT_STEADY = re.compile(r"^(<module>|simulate\w*)$")


def part_of(function: tuple[str, int, str]) -> str:
    text = f"{function[0]} {function[2]}"
    for name, pattern in PARTS:
        if pattern.search(text):
            return name
    return "other"


def shares(stats: pstats.Stats) -> dict[str, float]:
    """Self time in seconds per part."""
    totals: dict[str, float] = defaultdict(float)
    for function, (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        totals[part_of(function)] += tottime
    return dict(totals)


def fake_inclusive(stats: pstats.Stats) -> float:
    """Seconds spent inside the fake hardware, inclusive: the time of every call from outside
    drivers/fakes/ and gpiozero (mock pins) into them (what a driver's bus call, or the
    simulation's door timer, costs). Importing them and building the fakes (`NOT_STEADY`) are
    start-up, not counted."""
    seconds = 0.0
    for function, (_, _, _, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if FAKES.search(function[0]) and not NOT_STEADY.match(function[2]):
            seconds += sum(ct for caller, (_, _, _, ct) in callers.items() if not FAKES.search(caller[0]))
    return seconds


def report(directory: Path) -> None:
    grand: dict[str, float] = defaultdict(float)
    rows = []
    inside_fakes = inside_fakes_but_main = main_total = 0.0
    for path in sorted(directory.glob("*.prof")):
        stats = pstats.Stats(str(path))
        fakes = fake_inclusive(stats)
        inside_fakes += fakes
        per = shares(stats)
        if path.stem == "main":
            main_total = sum(per.values())
        else:
            inside_fakes_but_main += fakes
        total = sum(per.values())
        for part, seconds in per.items():
            grand[part] += seconds
        rows.append((total, path.stem, per))
    everything = sum(grand.values()) or 1.0
    print(f"self time by thread (share of all profiled self time {everything:.2f} s), and by part within it")
    for total, name, per in sorted(rows, reverse=True):
        ranked = sorted(per.items(), key=lambda i: -i[1])
        parts = ", ".join(f"{part} {100 * s / total:.0f} %" for part, s in ranked if s / total >= 0.01)
        print(f"  {name:<28} {100 * total / everything:5.1f} %   {parts}")
    print("by part, all threads: " + ", ".join(
        f"{part} {100 * s / everything:.1f} %" for part, s in sorted(grand.items(), key=lambda i: -i[1])))
    print("inside the fake hardware (inclusive: calls into drivers/fakes/ and gpiozero): "
          f"{inside_fakes:.3f} s = "
          f"{100 * inside_fakes / everything:.1f} % of all profiled CPU, "
          f"{100 * inside_fakes_but_main / max(everything - main_total, 1e-9):.1f} % of the threads but main "
          "(main: start-up imports, building the drivers, the status loop)")


def run(directory: Path, argv: list[str]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    finished: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        try:
            profile.runcall(original_run, thread)
        finally:
            with lock:
                finished.append((thread.name, profile))

    setattr(threading.Thread, "run", profiled_run)  # noqa: B010 (replacing a method is the point)
    from pibridge.cli import main

    profile = cProfile.Profile(time.thread_time)
    try:
        code = profile.runcall(main, argv)
    finally:
        setattr(threading.Thread, "run", original_run)  # noqa: B010
        finished.append(("main", profile))
        merged: dict[str, pstats.Stats] = {}
        for name, thread_profile in finished:
            key = SAFE_NAME.sub("_", re.sub(r"[-_ ]?[0-9a-f]*\d[0-9a-f]*$", "", name) or "thread")
            try:
                if key in merged:
                    merged[key].add(thread_profile)
                else:
                    merged[key] = pstats.Stats(thread_profile)
            except TypeError:  # a thread that made no calls
                continue
        for key, stats in merged.items():
            stats.dump_stats(str(directory / f"{key}.prof"))
        alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if alive:
            print(f"cprofile_run: threads still running, not profiled: {', '.join(alive)}", file=sys.stderr)
    return int(code or 0)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(Path(sys.argv[2]))
        return 0
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return run(Path(sys.argv[1]), sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
