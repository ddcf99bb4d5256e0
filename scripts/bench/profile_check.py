"""Cost of checking a profile: the shipped greenhouse, and hostile files with one huge key and
one huge value (issue 8: a 10 MB key took 60 s to report when lines were found by rescanning).

Usage: ``python scripts/bench/profile_check.py [--repeat N] [--sizes MB,MB,…]``

Baseline, measured in the same run on the same text: ``tomllib.loads`` alone (the parse any
profile check needs). The figure that matters is the ratio check / parse: it stays a small
constant as the file grows (the line finder is one linear pass), where a rescanning finder grows
with the file times its keys. CPU time (``time.process_time``), best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pibridge.profile import ProfileError, load_profile

ROOT = Path(__file__).resolve().parents[2]
MB = 1_000_000


def best_cpu_s(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        action()
        best = min(best, time.process_time() - started)
    return best


def hostile_profile(megabytes: float) -> str:
    """A greenhouse with an unknown key ``megabytes`` long in [agent] and a multi-line value of
    the same size in a sensor: both must be reported, each in one short line."""
    size = int(megabytes * MB)
    greenhouse = (ROOT / "profiles" / "greenhouse.toml").read_text(encoding="utf-8")
    return (greenhouse.replace("[agent]\n", '[agent]\n"' + "k" * size + '" = 1\n', 1)
            + 'note = """\n' + "x" * size + '\n"""\n')


def check(path: Path) -> int:
    try:
        load_profile(path)
    except ProfileError as exc:
        return len(exc.problems)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,5,10", help="megabytes of the huge key (and value)")
    args = parser.parse_args()

    greenhouse = ROOT / "profiles" / "greenhouse.toml"
    text = greenhouse.read_text(encoding="utf-8")
    parse = best_cpu_s(lambda: tomllib.loads(text), args.repeat * 10)
    full = best_cpu_s(lambda: load_profile(greenhouse), args.repeat * 10)
    print(f"greenhouse.toml ({len(text)} bytes): parse {parse * 1e3:.2f} ms, check {full * 1e3:.2f} ms "
          f"(drivers imported on the first check only)")

    print(f"{'size':>8} {'parse s':>9} {'check s':>9} {'ratio':>6} {'check s/MB':>11} problems")
    with tempfile.TemporaryDirectory() as folder:
        for megabytes in (float(s) for s in args.sizes.split(",")):
            path = Path(folder) / "hostile.toml"
            path.write_text(hostile_profile(megabytes), encoding="utf-8")
            hostile = path.read_text(encoding="utf-8")
            parse = best_cpu_s(functools.partial(tomllib.loads, hostile), args.repeat)
            problems = check(path)
            full = best_cpu_s(functools.partial(check, path), args.repeat)
            print(f"{megabytes:>6g}MB {parse:>9.3f} {full:>9.3f} {full / parse:>6.2f} "
                  f"{full / (2 * megabytes):>11.3f} {problems}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
