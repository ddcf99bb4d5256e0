"""`pibridge run --profile P [--simulate]`: the bridge, until SIGINT/SIGTERM (exit status 0).

Agent settings come from the profile's ``[agent]`` table, overridden by the same flags the agent
commands have; ``--state-dir`` and ``--log-format`` override the profile's ``[bridge]``.

`pibridge reset-total SENSOR --profile P [--state-dir D]`: a pulse counter's running total starts
at 0 at the bridge's next start (the stored total is forgotten). Only while no bridge runs on the
state directory: it takes the bridge's own lock, so a running bridge makes it refuse with one
line (stop the bridge, reset, start it again); never a side effect of anything else.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from pibridge.cli import CliError
from pibridge.cli.agent_commands import _user_path, add_agent_flags
from pibridge.paths import check_path
from pibridge.profile import ProfileError, load_profile

LOG_FORMATS = ("text", "json")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run the bridge: sample every sensor, deliver to the agent")
    parser.add_argument("--profile", type=_user_path, metavar="FILE", required=True, help="TOML profile")
    parser.add_argument("--simulate", action="store_true",
                        help="simulated hardware (a greenhouse model behind each driver's fake bus)")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (run logs at info; -v: debug, one line per sample)")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--trust-clock", action="store_true",
                        help="trust the system clock without NTP (a Pi with a battery-backed RTC)")
    clock.add_argument("--clock-sync-file", type=_user_path, metavar="FILE",
                        help="the clock counts as set once FILE exists (instead of systemd-timesyncd's "
                             "flag and the kernel's NTP state)")
    parser.add_argument("--state-dir", type=_state_dir,
                        help="where the queue and the lock live (profile [bridge])")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="serve the live web page here (profile [bridge] http; e.g. 127.0.0.1:8080)")
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="text (default) or json: one object per line")
    add_agent_flags(parser.add_argument_group("agent settings (override the profile's [agent] table)"))
    parser.set_defaults(handler=cmd_run)

    reset = sub.add_parser("reset-total", help="start a pulse counter's running total again at 0 "
                                               "(while the bridge is stopped)")
    reset.add_argument("sensor", help="the sensor's name in the profile")
    reset.add_argument("--profile", type=_user_path, metavar="FILE", required=True, help="TOML profile")
    reset.add_argument("--state-dir", type=_user_path, help="where the queue lives (profile [bridge])")
    reset.set_defaults(handler=cmd_reset_total)


def _state_dir(text: str) -> Path:
    """--state-dir: a path a file system takes (`pibridge.paths.check_path`; '' is refused, not
    taken for the current directory), ``~`` expanded."""
    try:
        check_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return _user_path(text)


def cmd_run(args: argparse.Namespace) -> int:
    from pibridge.bridge.service import Bridge, BridgeError, RunOptions, configure_logging, with_state_dir
    from pibridge.cli.agent_commands import settings_from_args
    from pibridge.memory import limit_malloc_arenas

    limit_malloc_arenas()   # before any thread starts: the process runs for months

    # a `systemctl reload` while the bridge starts must not kill it (SIGHUP's default action): the
    # profile being loaded now is the newest anyway; the reload handler takes over once running
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    agent = settings_from_args(args)
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:     # str(): at most PROBLEMS_SHOWN_MAX problems, then a count
        raise CliError(str(exc)) from None
    bridge_settings = with_state_dir(profile.bridge, args.state_dir, args.log_format)
    level = logging.DEBUG if args.verbose else logging.INFO
    configure_logging(bridge_settings.log_format, level)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("pibridge.bridge").info("%s received", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    bridge = Bridge(profile, agent, RunOptions(simulate=args.simulate, trust_clock=args.trust_clock,
                                                clock_sync_file=args.clock_sync_file, http=args.http),
                    bridge=bridge_settings)
    try:
        return bridge.run(stop)
    except (BridgeError, ProfileError) as exc:
        raise CliError(str(exc)) from None


def cmd_reset_total(args: argparse.Namespace) -> int:
    import sqlite3

    from pibridge.bridge.queue import reset_resume
    from pibridge.bridge.service import BridgeError, StateDirLock, with_state_dir
    from pibridge.drivers import registry

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise CliError(str(exc)) from None
    sensors = {sensor.name: sensor for sensor in profile.sensors}
    sensor = sensors.get(args.sensor)
    if sensor is None:
        raise CliError(f"no sensor {args.sensor!r} in {args.profile} "
                       f"(sensors: {', '.join(sensors) or 'none'})")
    if not registry.get(sensor.driver).resumable_metrics:
        raise CliError(f"sensor {args.sensor!r} ({sensor.driver}) keeps no running total")
    state_dir = with_state_dir(profile.bridge, args.state_dir, None).state_dir
    if state_dir.exists() and not state_dir.is_dir():
        raise CliError(f"state directory {state_dir} is not a directory")
    if not state_dir.is_dir():
        print(f"nothing stored for {args.sensor!r}: no state directory {state_dir}")
        return 0
    lock = StateDirLock(state_dir)
    try:
        lock.acquire()
    except BridgeError as exc:
        raise CliError(f"not resetting while the bridge runs: {exc}; stop it first") from None
    try:
        forgotten = reset_resume(state_dir, args.sensor)
    except sqlite3.Error as exc:
        raise CliError(f"cannot reset the total in {state_dir}: {exc}") from None
    finally:
        lock.release()
    if not forgotten:
        print(f"nothing stored for {args.sensor!r}: its total starts at 0 anyway")
    else:
        shown = ", ".join(f"{key} {value}" for key, value in sorted(forgotten.items()))
        print(f"reset {args.sensor!r}: forgot {shown}; it starts at 0 at the bridge's next start")
    return 0


__all__ = ["register"]
