"""``pibridge`` command line: one argparse tree; each command group lives in its own module and
adds its subcommands through ``register(subparsers)``.

Every command returns an exit status; `CliError` becomes one line on stderr and status 1, never
a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pibridge import __version__


class CliError(Exception):
    """A failure the user can act on: printed as one line (what, which file/port, what to do)."""


def build_parser() -> argparse.ArgumentParser:
    from pibridge.cli import agent_commands, driver_commands, emulator_commands, run_commands

    parser = argparse.ArgumentParser(prog="pibridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pibridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (agent_commands, emulator_commands, driver_commands, run_commands):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
