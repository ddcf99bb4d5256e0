"""``pibridge`` command line: one argparse tree; each command group lives in its own module and
adds its subcommands through ``register(subparsers)``. `main` imports only the module of the
command it runs (`COMMAND_MODULES`; all of them for ``--help``, a usage error or no command):
``pibridge run`` keeps in memory for months what it imports.

Every command returns an exit status; `CliError` becomes one line on stderr and status 1, a
usage error one line and status 2 — never a traceback. Each command's ``--help`` says what it
does in one line, shows an example and lists its exit codes (`COMMAND_HELP`: a new command adds
its entry there; ``tests/test_cli_help.py`` holds every command to it). ``-v`` means the same
everywhere: one level more log output (``-vv``: debug). Output into a closed pipe (``| head``)
ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pibridge import __version__

#: What ``pibridge --help`` says pibridge is (the user's view, not the module's).
DESCRIPTION = ("Read Raspberry Pi sensors (GPIO, I2C, 1-Wire) and push their values to the "
               "TeamViewer IoT Agent on this Pi; includes an emulator of the agent for tests and demos.")
EPILOG = """getting started:
  1. pibridge profile example -o my.toml     a starting profile (or: pibridge scan --profile-out my.toml)
  2. pibridge check --profile my.toml        every problem at once, or what would run
  3. pibridge read --profile my.toml         read every sensor once: the dry run (--simulate: no hardware)
  4. pibridge run --profile my.toml          the bridge itself

`pibridge COMMAND --help` shows each command with an example and its exit codes."""
#: The help's width off a terminal, and what argparse leaves free at its right (as shutil and argparse do).
DEFAULT_COLUMNS = 80
HELP_MARGIN = 2
#: Exit status of a usage error (argparse's convention).
USAGE_ERROR = 2
VERBOSE_HELP = "more log output (-vv: debug)"


@dataclass(frozen=True)
class CommandHelp:
    """What ``pibridge COMMAND --help`` says besides the options: one line on what it does (its
    description), an example, and its exit codes."""

    summary: str
    example: str
    exit_codes: str = "0 done; 1 failed (one line on stderr says why); 2 usage error"

    def epilog(self) -> str:
        return f"example:\n  {self.example}\n\nexit status:\n  {self.exit_codes}"


#: Every command and subcommand (by its words after ``pibridge``).
COMMAND_HELP: dict[str, CommandHelp] = {
    "profile": CommandHelp("The example profiles shipped with pibridge: a starting point for your own.",
                           "pibridge profile example -o my.toml"),
    "profile list": CommandHelp("List the example profiles shipped with pibridge.", "pibridge profile list"),
    "profile example": CommandHelp("Print an example profile, or write it to a new file with -o.",
                                   "pibridge profile example greenhouse -o my.toml",
                                   "0 written; 1 no such example, or FILE exists or cannot be written; "
                                   "2 usage error"),
    "check": CommandHelp("Check a profile: every problem at once, or a summary of what `run` would do.",
                         "pibridge check --profile my.toml",
                         "0 no problems; 1 the profile has problems (listed on stderr); 2 usage error"),
    "read": CommandHelp("Read sensors once and print their values: one driver, or every sensor of a profile "
                        "(the dry run before `run`).",
                        "pibridge read --profile my.toml --simulate  |  pibridge read bme280 -o address=0x77",
                        "0 every sensor read; 1 a sensor failed (the others are still printed) or the "
                        "profile has problems; 2 usage error"),
    "run": CommandHelp("Run the bridge: sample every sensor of the profile and deliver to the agent, until "
                       "SIGINT/SIGTERM.", "pibridge run --profile my.toml",
                       "0 stopped by a signal, everything stored; 1 could not start or samples were left "
                       "unstored (one line on stderr says why); 2 usage error"),
    "status": CommandHelp("Health of the running bridge, for people and monitoring.",
                          "pibridge status --profile /etc/pibridge/my.toml",
                          "0 healthy; 1 degraded (the reasons are listed); 2 not running or unreadable"),
    "reload": CommandHelp("Make the running bridge re-read its profile and wait for its verdict (what "
                          "`systemctl reload pibridge` runs).",
                          "pibridge reload --profile /etc/pibridge/my.toml",
                          "0 applied; 1 refused (the problems are printed) or not applied; 2 no running "
                          "bridge found, or no verdict in time"),
    "reset-total": CommandHelp("Start a pulse counter's running total (rain, water) at 0 again; the bridge "
                               "must be stopped.", "pibridge reset-total Rain --profile weather.toml",
                               "0 reset; 1 no such sensor, no total, the bridge runs, or the queue cannot be "
                               "opened; 2 usage error"),
    "drivers": CommandHelp("List the sensor drivers with their metrics (in display units) and options.",
                           "pibridge drivers   |   pibridge drivers --guide",
                           "0 listed; 2 usage error"),
    "scan": CommandHelp("List the I2C chips, 1-Wire probes and serial ports found on this Pi, asking "
                        "each serial port the console does not hold whether an MH-Z19 or PMS5003 "
                        "is on it (up to 2.5 s); --profile-out writes a starting profile for the "
                        "chips, probes and serial sensors.",
                        "pibridge scan --profile-out my.toml",
                        "0 scanned (and the profile written); 1 FILE exists or cannot be written; "
                        "2 usage error"),
    "provision": CommandHelp("Get a client certificate from the agent (the first step against a real agent).",
                             "pibridge provision --profile my.toml"),
    "deprovision": CommandHelp("Delete this client and all its data at the agent, then its credentials.",
                               "pibridge deprovision --profile my.toml"),
    "ping": CommandHelp("Check the connection to the agent.", "pibridge ping --profile my.toml",
                        "0 the agent answered; 1 it did not (one line says why); 2 usage error"),
    "inventory": CommandHelp("List this client's sensors and metrics at the agent.",
                             "pibridge inventory --profile my.toml --json"),
    "emulator": CommandHelp("Run the TeamViewer IoT Agent emulator (tests and demos).",
                            "pibridge emulator serve --port 28884 --provision-port 28883"),
    "emulator serve": CommandHelp("Run the emulator in the foreground, until SIGINT/SIGTERM.",
                                  "pibridge emulator serve --state-dir .demo/emulator"),
    "emulator dump": CommandHelp("Print the emulator's clients, inventory and values as JSON.",
                                 "pibridge emulator dump --state-dir .demo/emulator | head"),
    "emulator wipe": CommandHelp("Delete every sensor, metric and value of a stopped emulator (keeps its "
                                 "clients and CA).", "pibridge emulator wipe --state-dir .demo/emulator"),
}
#: The order commands are listed in ``pibridge --help``: the road to a running bridge first.
COMMAND_ORDER = ("profile", "check", "read", "run", "status", "scan", "drivers")
#: Adafruit Blinka (the DHT library's ``board``) checks its platform dependencies at import and, on
#: a terminal, offers to pip-install them into the running environment; this variable turns that
#: off. Set once in `main` before any thread starts (writing the environment while other threads
#: may read it is undefined in glibc); the systemd unit sets it too.
BLINKA_SKIP_CHECK_ENV = "BLINKA_SKIP_DEPENDENCY_CHECK"
#: The command modules of `pibridge.cli`, in the order their commands appear in ``--help``.
COMMAND_GROUPS = ("profile_commands", "check_commands", "driver_commands", "run_commands", "status_commands",
                  "agent_commands", "emulator_commands")
#: Which module registers each top-level command (tests check it against what they register).
COMMAND_MODULES = {
    "provision": "agent_commands", "deprovision": "agent_commands", "ping": "agent_commands",
    "inventory": "agent_commands", "emulator": "emulator_commands", "drivers": "driver_commands",
    "read": "driver_commands", "scan": "driver_commands", "check": "check_commands",
    "profile": "profile_commands", "run": "run_commands", "status": "status_commands",
    "reload": "status_commands", "reset-total": "run_commands",
}


def counted(count: int, noun: str) -> str:
    """A count as people write it: ``1 sensor``, ``2 sensors``, ``0 problems``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class CliError(Exception):
    """A failure the user can act on: printed as one line (what, which file/port, what to do)."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming the command and pointing at its
    ``--help`` (argparse prints the whole usage block first). Subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, with its width given (`help_width`): argparse's own asks shutil, and shutil
    loads the compression modules, ~0.5 MB of a running bridge's RSS for a help it never prints."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None, **kwargs: Any) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         help_width() if width is None else width, **kwargs)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """argparse's raw-description formatter (descriptions and epilogs as written), sized as ours."""


def help_width() -> int:
    """The width argparse's help wraps at: `shutil.get_terminal_size`'s columns (``COLUMNS``,
    else the terminal's, else 80) less argparse's margin of 2, without importing shutil."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns if columns > 0 else DEFAULT_COLUMNS) - HELP_MARGIN


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole tree; with a known ``command``, only the commands of its module (the same
    parser for that command: same prog, options, help and errors)."""
    groups = (COMMAND_MODULES[command],) if command in COMMAND_MODULES else COMMAND_GROUPS
    parser = OneLineParser(prog="pibridge", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pibridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in groups:
        importlib.import_module(f"pibridge.cli.{group}").register(sub)
    _order(sub)
    _finish(parser, ())
    return parser


def _order(sub: argparse._SubParsersAction) -> None:
    """List the commands of ``pibridge --help`` in `COMMAND_ORDER`, the rest as registered."""
    rank = {name: index for index, name in enumerate(COMMAND_ORDER)}
    sub._choices_actions.sort(key=lambda action: rank.get(action.dest, len(rank)))


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of ``parser``'s direct subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _finish(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
    """Every subcommand: its `COMMAND_HELP` as description and epilog, and ``-v`` (one meaning
    everywhere, before the command or after it)."""
    for name, child in subcommands(parser).items():
        path = (*words, name)
        entry = COMMAND_HELP.get(" ".join(path))
        if entry is not None:
            child.description = entry.summary
            child.epilog = entry.epilog()
            child.formatter_class = RawDescriptionHelpFormatter
        if not any("-v" in action.option_strings for action in child._actions):
            child.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                               help=VERBOSE_HELP)
        _finish(child, path)


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
        status = int(args.handler(args) or 0)
        sys.stdout.flush()          # a closed pipe shows here, not in the interpreter's exit
        return status
    except CliError as exc:
        print(f"pibridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """``pibridge … | head``: the reader closed the pipe. What was printed was read; the rest is
    not wanted. Exit 0 quietly: stdout is pointed at /dev/null so that the interpreter's own
    flush at exit finds no broken pipe to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
