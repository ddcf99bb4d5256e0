"""`pibridge status [--json] [--runtime-dir DIR] [--profile P]`: the running bridge's health,
read from its status file (`pibridge.bridge.status`), for people and for monitoring; and
`pibridge reload`, which asks the running bridge to re-read its profile and waits for the verdict
it records in that file.

Exit status: 0 healthy; 1 degraded (a sensor failing, the agent away or the clock unsynchronised
for longer than ``--agent-grace``; samples lost or not delivered: they cannot be stored, nothing
acknowledged for longer than ``--ack-grace`` while samples wait, a delivery step failing, samples
dropped or dead-lettered within the last hour, a refused profile reload); 2 not running, stale
status file, or the status file is unreadable. With several bridges found (several state
directories), each is shown and the worst status wins — except that a leftover file of a bridge
that is not running any more is only noted while a live bridge reports (it never hides one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pibridge.bridge.liveview import READ_AFTER_SAMPLE_S
from pibridge.bridge.status import (
    ACK_GRACE_S,
    AGENT_AWAY_GRACE_S,
    DEGRADED,
    HEALTHY,
    NOT_RUNNING,
    STALE_AFTER_S,
    BridgeStatus,
    Health,
    StatusFileError,
    StatusReading,
    assess,
    find_status_files,
    format_duration,
    read_status,
    runtime_dir_candidates,
    status_path,
)
from pibridge.cli import RawDescriptionHelpFormatter
from pibridge.terminal import REPLACEMENT, printable

RELOAD_TIMEOUT_S = 60.0     #: `pibridge reload` waits this long for the verdict (stopping sensors takes time)
RELOAD_POLL_S = 0.05        #: how often it looks at the status file meanwhile (written at once on a reload)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pibridge status`` to the top-level parser."""
    p = sub.add_parser("status",
                       help="health of the running bridge (exit 0 healthy, 1 degraded, 2 not running)")
    p.add_argument("--json", action="store_true", help="one JSON object (the snapshot and the verdict)")
    p.add_argument("--runtime-dir", type=Path, metavar="DIR",
                   help="where the bridge writes its status (default: /run/pibridge, then "
                        "$XDG_RUNTIME_DIR/pibridge, then /tmp/pibridge-UID)")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="the bridge running this profile (its state_dir names the status file)")
    p.add_argument("--agent-grace", type=_positive_seconds, default=AGENT_AWAY_GRACE_S, metavar="S",
                   help=f"agent away longer than this is degraded (default {AGENT_AWAY_GRACE_S:g} s)")
    p.add_argument("--ack-grace", type=_positive_seconds, default=ACK_GRACE_S, metavar="S",
                   help="samples waiting and nothing acknowledged for longer than this is degraded "
                        f"(default {ACK_GRACE_S:g} s)")
    p.add_argument("--stale-after", type=_positive_seconds, default=STALE_AFTER_S, metavar="S",
                   help=f"a status file older than this is stale (default {STALE_AFTER_S:g} s)")
    p.set_defaults(handler=cmd_status)

    r = sub.add_parser(
        "reload", help="make the running bridge re-read its profile and wait for its verdict",
        description="Ask the running bridge to re-read its profile (SIGHUP) and wait until it has "
                    "applied or refused it. A refused profile's problems are printed; the bridge keeps "
                    "running its last valid profile (and `pibridge status` says degraded until a "
                    "reload succeeds). systemd's `systemctl reload pibridge` runs this.",
        epilog="example: pibridge reload --profile /etc/pibridge/greenhouse.toml\n"
               "exit status: 0 applied; 1 refused or not applied (the problems are printed); "
               "2 no running bridge found, or no verdict within --timeout",
        formatter_class=RawDescriptionHelpFormatter)
    which = r.add_mutually_exclusive_group()
    which.add_argument("--profile", type=Path, metavar="FILE",
                       help="the bridge running this profile (only its [bridge] table is read)")
    which.add_argument("--pid", type=int, metavar="PID", help="the bridge with this process id "
                       "(systemd: $MAINPID)")
    r.add_argument("--runtime-dir", type=Path, metavar="DIR",
                   help="where the bridge writes its status (default: as `pibridge status`)")
    r.add_argument("--timeout", type=_positive_seconds, default=RELOAD_TIMEOUT_S, metavar="S",
                   help=f"wait at most this long for the verdict (default {RELOAD_TIMEOUT_S:g} s)")
    r.set_defaults(handler=cmd_reload)


def _positive_seconds(text: str) -> float:
    """A duration flag: a finite number of seconds above 0 (NaN would make every file fresh)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, not {text}")
    return value


def _status_files(args: argparse.Namespace) -> tuple[list[Path], str]:
    """The files to read, and where we looked (for the "not running" message)."""
    directories = [args.runtime_dir] if args.runtime_dir else runtime_dir_candidates()
    if args.profile is not None:
        from pibridge.profile import ProfileError, load_profile

        try:
            # only [bridge]: a profile just broken in its sensors still names the running bridge
            state_dir = load_profile(args.profile, sections="bridge").bridge.state_dir
        except ProfileError as exc:
            raise _Unreadable(str(exc).splitlines()[0]) from None
        candidates = [status_path(d, state_dir) for d in directories]
        found = [p for p in candidates if p.exists()]   # all: a stale one must not hide a live one
        return found, ", ".join(str(p) for p in candidates)
    return find_status_files(directories), ", ".join(str(d) for d in directories)


class _Unreadable(Exception):
    pass


# --- pibridge reload -------------------------------------------------------------------------------

def cmd_reload(args: argparse.Namespace) -> int:
    """SIGHUP the running bridge, then read its status file until the reload it took up after our
    signal is recorded there (`ReloadStatus`): the status file is rewritten at once after every
    reload, so the verdict is there within one main-loop turn of the reload's end."""
    try:
        reading = _running_bridge(args)
    except _Unreadable as exc:
        print(f"pibridge reload: {exc}", file=sys.stderr)
        return NOT_RUNNING
    before = reading.status.reload.count
    asked_at = time.time()
    try:
        os.kill(reading.status.pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"pibridge reload: the bridge (pid {reading.status.pid}) has just stopped", file=sys.stderr)
        return NOT_RUNNING
    except PermissionError:
        print(f"pibridge reload: not allowed to signal the bridge (pid {reading.status.pid}, another "
              "user's): run it as that user or with sudo", file=sys.stderr)
        return NOT_RUNNING
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(RELOAD_POLL_S)
        try:
            status = read_status(reading.path).status
        except FileNotFoundError:
            print("pibridge reload: the bridge stopped before it answered", file=sys.stderr)
            return NOT_RUNNING
        except StatusFileError:
            continue                     # mid-rename on an odd filesystem: read again
        verdict = status.reload
        # a reload counts if it was taken up after our signal: one that was already under way
        # when we signalled read the file before the edit we are asked about
        if verdict.count > before and verdict.at is not None and verdict.at >= asked_at - CLOCK_SLACK_S:
            return _print_verdict(status)
        if verdict.count > before:
            before = verdict.count       # an earlier reload finished; ours is next
    print(f"pibridge reload: no verdict from the bridge (pid {reading.status.pid}) within "
          f"{args.timeout:g} s; see its log", file=sys.stderr)
    return NOT_RUNNING


#: a reload taken up this much "before" the signal still counts (wall clocks of two processes)
CLOCK_SLACK_S = 0.5


def _print_verdict(status: BridgeStatus) -> int:
    verdict = status.reload
    if verdict.applied:
        pending = (f"; restart needed for: {', '.join(status.restart_pending)}"
                   if status.restart_pending else "")
        print(f"pibridge reload: {status.profile} applied{pending}")
        return HEALTHY
    if not verdict.problems:
        print(f"pibridge reload: {status.profile} is valid but could not be applied (see the log); "
              "the running configuration stays in force", file=sys.stderr)
        return DEGRADED
    count = verdict.problem_count
    print(f"pibridge reload: {status.profile} refused ({count} problem{'' if count == 1 else 's'}); "
          "the running configuration stays in force:", file=sys.stderr)
    for line in verdict.problems:
        print(f"  {printable(line, REPLACEMENT)}", file=sys.stderr)
    if count > len(verdict.problems):
        print(f"  … and {count - len(verdict.problems)} more (pibridge check --profile {status.profile})",
              file=sys.stderr)
    return DEGRADED


def _running_bridge(args: argparse.Namespace) -> StatusReading:
    """The one running bridge ``args`` point at (``--pid``, ``--profile``, or the only one)."""
    directories = [args.runtime_dir] if args.runtime_dir else runtime_dir_candidates()
    if args.profile is not None:
        files, looked = _status_files(args)
    else:
        files, looked = find_status_files(directories), ", ".join(str(d) for d in directories)
    running: list[StatusReading] = []
    for path in files:
        try:
            reading = read_status(path)
        except (FileNotFoundError, StatusFileError):
            continue
        if reading.fresh and (args.pid is None or reading.status.pid == args.pid):
            running.append(reading)
    if not running:
        which = f" with pid {args.pid}" if args.pid is not None else ""
        raise _Unreadable(f"no running bridge{which} found (status files looked for in {looked})")
    if len(running) > 1:
        profiles = ", ".join(r.status.profile for r in running)
        raise _Unreadable(f"{len(running)} bridges are running ({profiles}): "
                          "name one with --profile or --pid")
    return running[0]


def cmd_status(args: argparse.Namespace) -> int:
    try:
        files, looked = _status_files(args)
    except _Unreadable as exc:
        return _report_error(args, str(exc))
    if not files:
        return _report_error(args, f"not running (no status file in {looked})")
    verdicts: list[tuple[Path, StatusReading | None, Health, str]] = []
    for path in files:
        try:
            reading = read_status(path, stale_after_s=args.stale_after)
        except FileNotFoundError:      # removed between listing and reading: it just stopped
            verdicts.append((path, None, Health(NOT_RUNNING, ("stopped",)), "stopped"))
            continue
        except StatusFileError as exc:
            verdicts.append((path, None, Health(NOT_RUNNING, (f"unreadable: {exc}",)), str(exc)))
            continue
        if not reading.fresh:
            health = Health(NOT_RUNNING, (f"stale status file: {reading.stale_reason}",))
        else:
            health = assess(reading.status, agent_grace_s=args.agent_grace, ack_grace_s=args.ack_grace)
        verdicts.append((path, reading, health, ""))
    leftovers: list[tuple[Path, StatusReading]] = []
    if any(reading is not None and reading.fresh for _, reading, _, _ in verdicts):
        leftovers = [(path, reading) for path, reading, _, _ in verdicts
                     if reading is not None and reading.writer_gone]
        verdicts = [v for v in verdicts if v[1] is None or not v[1].writer_gone]
    worst = max(health.level for _, _, health, _ in verdicts)
    if args.json:
        print(json.dumps({"exit": worst, "health": Health(worst).label, "bridges": [
            _json_verdict(path, verdict, health) for path, verdict, health, _ in verdicts]},
            ensure_ascii=False, indent=2))
    else:
        for index, (path, shown, health, error) in enumerate(verdicts):
            if index:
                print()
            if shown is None and error:
                print(f"pibridge: status unreadable ({error})", file=sys.stderr)
            elif shown is None:
                print(f"pibridge: not running ({path}: stopped)")
            else:
                print("\n".join(render_text(shown, health)))
        for path, reading in leftovers:
            print(f"(ignored: {path}, left by a bridge that is not running: {reading.stale_reason})")
    return worst



def _report_error(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"exit": NOT_RUNNING, "health": Health(NOT_RUNNING).label, "error": message,
                          "bridges": []}))
    else:
        print(f"pibridge: {message}", file=sys.stderr)
    return NOT_RUNNING


def _json_verdict(path: Path, reading: StatusReading | None, health: Health) -> dict[str, Any]:
    return {"path": str(path), "health": health.label, "exit": health.level,
            "reasons": list(health.reasons),
            "fresh": reading.fresh if reading else False,
            "age_s": round(reading.age_s, 3) if reading else None,
            "status": reading.status.to_dict() if reading else None}


# --- the human-readable page ------------------------------------------------------------------------


def _ago(status: BridgeStatus, at: float | None) -> str:
    return "never" if at is None else f"{format_duration(status.written_at - at)} ago"


def _clock_text(at: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    except (OverflowError, OSError, ValueError):     # a time no calendar holds
        return f"{at:g}"


def render_text(reading: StatusReading, health: Health) -> list[str]:
    """The page `pibridge status` prints for one bridge."""
    status = reading.status
    lines = [f"pibridge: {health.label} — {status.profile} (pid {status.pid}, "
             f"up {format_duration(status.written_at - status.started_at)}, pibridge {status.version})"]
    lines += [f"  ! {reason}" for reason in health.reasons]
    if not reading.fresh:
        lines.append(f"  last status written {_clock_text(status.written_at)}; the rest is what it was then")
    agent = status.agent
    for_how_long = format_duration(status.written_at - (agent.since or status.started_at))
    if agent.connected:
        connection = f"connected for {for_how_long}"
    else:
        why = f" ({agent.last_error})" if agent.last_error else ""
        connection = f"not connected for {for_how_long}{why}"
    client = f"; client {agent.client_id}" if agent.client_id else ""
    lines.append(f"agent   {agent.host}:{agent.port} {connection}; last acknowledgement "
                 f"{_ago(status, agent.last_ack_at)}{client}")
    clock = status.clock
    lines.append("clock   " + ("synchronised" if clock.synchronised else "NOT synchronised: samples wait for "
                                "their timestamps") + (f" ({clock.source})" if clock.source else ""))
    queue = status.queue
    lines.append(f"queue   {queue.depth} waiting" + (f", oldest {_ago(status, queue.oldest_sample_at)}"
                                                      if queue.oldest_sample_at is not None else "")
                 + (f", {queue.unstamped} without timestamp" if queue.unstamped else "")
                 + f"; dropped {queue.dropped}; dead letters {queue.dead_letters}")
    if status.restart_pending:
        lines.append("restart needed for: " + ", ".join(status.restart_pending))
    reload = status.reload
    if reload.refused:
        lines.append(f"profile {status.profile} refused at {_clock_text(reload.at or 0)} "
                     f"({reload.problem_count} problem{'' if reload.problem_count == 1 else 's'}); "
                     "running the previous one:")
        lines += [f"  {problem}" for problem in reload.problems]
    elif reload.count:
        lines.append(f"profile reloaded {_ago(status, reload.at)}"
                     + ("" if reload.applied else " but not applied (see the log)"))
    lines.append("")
    lines.append(f"{'sensor':<24} {'state':<16} {'taken':>7} {'pushed':>7} {'failed':>6} {'skipped':>7} "
                 f"{'dead':>5}  last values")
    for sensor in status.sensors:
        state = sensor.state
        if sensor.failing_since is not None:
            state += f" {format_duration(status.written_at - sensor.failing_since)}"
        values = "  ".join(v.shown for v in sensor.values)
        if sensor.last_sample_at is not None:
            read = sensor.last_read_at   # a deadband holds unchanged values back: say it was read
            fresh = (f"read {_ago(status, read)}, changed {_ago(status, sensor.last_sample_at)}"
                     if read is not None and read - sensor.last_sample_at >= READ_AFTER_SAMPLE_S
                     else _ago(status, sensor.last_sample_at))
            values += f"  ({fresh})"
        lines.append(f"{sensor.name[:24]:<24} {state:<16} {sensor.taken:>7} {sensor.pushed:>7} "
                     f"{sensor.failed:>6} {sensor.skipped:>7} {sensor.dead_lettered:>5}  {values}")
        if sensor.last_error and sensor.state != "ok":
            lines.append(f"{'':<24}   last error: {sensor.last_error}")
    if status.recent_errors:
        lines.append("")
        lines.append("recent errors:")
        for event in status.recent_errors:
            who = f"{event.sensor}: " if event.sensor else ""
            lines.append(f"  {_clock_text(event.at)}  {who}{event.message}")
    return [printable(line, REPLACEMENT).rstrip() for line in lines]
