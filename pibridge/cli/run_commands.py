"""`pibridge run --profile P [--simulate]`: the bridge, until SIGINT/SIGTERM (exit status 0).

Agent settings come from the profile's ``[agent]`` table, overridden by the same flags the agent
commands have; ``--state-dir`` and ``--log-format`` override the profile's ``[bridge]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from pibridge.cli import CliError
from pibridge.cli.agent_commands import _user_path, add_agent_flags
from pibridge.profile import ProfileError, load_profile

LOG_FORMATS = ("text", "json")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run the bridge: sample every sensor, deliver to the agent")
    parser.add_argument("--profile", type=_user_path, metavar="FILE", required=True, help="TOML profile")
    parser.add_argument("--simulate", action="store_true",
                        help="simulated hardware (a greenhouse model behind each driver's fake bus)")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="debug log: one line per sample")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--trust-clock", action="store_true",
                        help="trust the system clock without NTP (a Pi with a battery-backed RTC)")
    clock.add_argument("--clock-sync-file", type=_user_path, metavar="FILE",
                        help="the clock counts as set once FILE exists (instead of systemd-timesyncd's "
                             "flag and the kernel's NTP state)")
    parser.add_argument("--state-dir", type=_user_path,
                        help="where the queue and the lock live (profile [bridge])")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="serve the live web page here (profile [bridge] http; e.g. 127.0.0.1:8080)")
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="text (default) or json: one object per line")
    add_agent_flags(parser.add_argument_group("agent settings (override the profile's [agent] table)"))
    parser.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from pibridge.bridge.service import Bridge, BridgeError, RunOptions, configure_logging, with_state_dir
    from pibridge.cli.agent_commands import settings_from_args

    # a `systemctl reload` while the bridge starts must not kill it (SIGHUP's default action): the
    # profile being loaded now is the newest anyway; the reload handler takes over once running
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    agent = settings_from_args(args)
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
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


__all__ = ["register"]
