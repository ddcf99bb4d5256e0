"""``pibridge`` command line: one argparse tree; each command group lives in its own module and
adds its subcommands through ``register(subparsers)``. `main` imports only the module of the
command it runs (`COMMAND_MODULES`; all of them for ``--help``, a usage error or no command):
``pibridge run`` keeps in memory for months what it imports.

Every command returns an exit status; `CliError` becomes one line on stderr and status 1, a
usage error one line and status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from pibridge import __version__

#: What ``pibridge --help`` says pibridge is (the user's view, not the module's).
DESCRIPTION = ("Read Raspberry Pi sensors (GPIO, I2C, 1-Wire) and push their values to the "
               "TeamViewer IoT Agent on this Pi; includes an emulator of the agent for tests and demos.")
EPILOG = ("Start with `pibridge drivers` and `pibridge read DRIVER --simulate`; against an agent: "
          "`pibridge provision`, then `pibridge ping`. `pibridge COMMAND --help` for each command.")
#: Exit status of a usage error (argparse's convention).
USAGE_ERROR = 2
#: Adafruit Blinka (the DHT library's ``board``) checks its platform dependencies at import and, on
#: a terminal, offers to pip-install them into the running environment; this variable turns that
#: off. Set once in `main` before any thread starts (writing the environment while other threads
#: may read it is undefined in glibc); the systemd unit sets it too.
BLINKA_SKIP_CHECK_ENV = "BLINKA_SKIP_DEPENDENCY_CHECK"
#: The command modules of `pibridge.cli`, in the order their commands appear in ``--help``.
COMMAND_GROUPS = ("agent_commands", "emulator_commands", "driver_commands", "check_commands",
                  "profile_commands", "run_commands", "status_commands")
#: Which module registers each top-level command (tests check it against what they register).
COMMAND_MODULES = {
    "provision": "agent_commands", "deprovision": "agent_commands", "ping": "agent_commands",
    "inventory": "agent_commands", "emulator": "emulator_commands", "drivers": "driver_commands",
    "read": "driver_commands", "scan": "driver_commands", "check": "check_commands",
    "profile": "profile_commands", "run": "run_commands", "status": "status_commands",
    "reload": "status_commands",
}


class CliError(Exception):
    """A failure the user can act on: printed as one line (what, which file/port, what to do)."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming the command and pointing at its
    ``--help`` (argparse prints the whole usage block first). Subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole tree; with a known ``command``, only the commands of its module (the same
    parser for that command: same prog, options, help and errors)."""
    groups = (COMMAND_MODULES[command],) if command in COMMAND_MODULES else COMMAND_GROUPS
    parser = OneLineParser(prog="pibridge", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"pibridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in groups:
        importlib.import_module(f"pibridge.cli.{group}").register(sub)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``: its first word that is not an option (the top-level options
    take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(BLINKA_SKIP_CHECK_ENV, "1")  # first: no thread runs yet
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_in(words))
    args = parser.parse_args(words)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"pibridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
