"""`pibridge emulator serve|dump|wipe`: run the agent emulator, print or clear its state."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import NoReturn

from pibridge import cli
from pibridge import protocol as p
from pibridge.cli import CliError

#: Error codes ``--inject-error`` may inject (agent-api.md §4: codes 0–3 never come from bad requests).
INJECTABLE = (p.ErrorCode.NoBackendConnection, p.ErrorCode.InternalError)


class OneLineParser(cli.OneLineParser):
    """Bad arguments are one line on stderr (``pibridge emulator serve: error: …``) and exit 2:
    argparse's usage block would bury the line that says what is wrong (``--help`` shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _state_dir(args: argparse.Namespace) -> Path:
    """--state-dir with ``~`` / ``~user`` expanded (a shell leaves ``--state-dir=~/x`` alone), or the
    default; an unknown user or home is one line. ``--state-dir ''`` is refused: it used to mean
    the default, and ``wipe --state-dir ''`` wiped the default emulator."""
    from pibridge.emulator.server import default_state_dir
    from pibridge.paths import check_path

    if args.state_dir is not None:
        try:
            check_path(args.state_dir)
        except ValueError as exc:
            raise CliError(f"--state-dir {exc} (leave the flag out for the default "
                           "~/.local/state/pibridge/emulator)") from None
    try:
        return Path(args.state_dir).expanduser() if args.state_dir is not None else default_state_dir()
    except RuntimeError:  # ~nosuchuser, or no home directory at all
        given = args.state_dir or "the default state directory (~/.local/state/pibridge/emulator)"
        raise CliError(f"cannot expand {given}: no such user or no home directory; give a "
                       "--state-dir without ~") from None


def _existing_state_dir(args: argparse.Namespace) -> Path:
    """`_state_dir`, which must be a directory if anything is there (``dump`` and ``wipe``
    create nothing): a loop of links, a dangling link or a file in its place is one line."""
    from pibridge.paths import DirectoryError, existing_directory

    state_dir = _state_dir(args)
    try:
        existing_directory(state_dir, "state directory")
    except DirectoryError as exc:
        raise CliError(str(exc)) from None
    return state_dir


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1..65535")
    return port


def _injection(text: str) -> object:
    from pibridge.emulator.core import Injection

    try:
        code_text, share_text = text.split(":", 1)
        code, share = p.ErrorCode(int(code_text)), float(share_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CODE:SHARE such as 1:0.2, got {text!r}") from None
    if code not in INJECTABLE:
        allowed = ", ".join(str(int(c)) for c in INJECTABLE)
        raise argparse.ArgumentTypeError(f"only codes {allowed} can be injected")
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"SHARE must lie in 0..1, got {share_text}")
    return Injection(code, share)


def _answer_fault(text: str) -> object:
    from pibridge.emulator.faults import AnswerFault

    try:
        return AnswerFault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _serve(args: argparse.Namespace) -> int:
    from pibridge.emulator.server import Options, ServeError, serve
    from pibridge.profiling import CPROFILE_ENV, profile_threads

    injections = list(args.inject_error or [])
    if sum(i.share for i in injections) > 1.0:
        raise CliError("the shares of --inject-error add up to more than 1")
    answer_faults = list(args.inject_answer_fault or [])
    if sum(f.share for f in answer_faults) > 1.0:
        raise CliError("the shares of --inject-answer-fault add up to more than 1")
    options = Options(_state_dir(args), args.host, args.port, args.provision_port, args.strict_ids,
                      injections, answer_faults=answer_faults, seed=args.seed, http=args.http)
    try:
        with profile_threads(os.environ.get(CPROFILE_ENV)):  # performance work only
            return serve(options)
    except ServeError as exc:
        raise CliError(str(exc)) from None


def _dump(args: argparse.Namespace) -> int:
    from pibridge.emulator.store import DB_NAME, dump

    path = _existing_state_dir(args) / DB_NAME
    if not path.is_file():
        raise CliError(f"no emulator state in {path.parent} (run 'pibridge emulator serve' first)")
    try:
        text = json.dumps(dump(path), separators=(",", ":"), ensure_ascii=False)
    except sqlite3.Error as exc:
        raise CliError(f"cannot read {path} ({exc})") from None
    except OSError as exc:
        raise CliError(f"cannot read {path} ({exc.strerror or exc})") from None
    sys.stdout.write(text + "\n")
    return 0


def _wipe(args: argparse.Namespace) -> int:
    from pibridge.emulator.server import ServeError, wipe

    state_dir = _existing_state_dir(args)
    try:
        wipe(state_dir)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the top-level parser."""
    group = sub.add_parser("emulator", help="run the TeamViewer IoT Agent emulator")
    commands = group.add_subparsers(dest="emulator_command", metavar="COMMAND", required=True,
                                    parser_class=OneLineParser)
    state = OneLineParser(add_help=False)
    state.add_argument("--state-dir", metavar="DIR",
                       help="CA, database and broker files (default $XDG_STATE_HOME/pibridge/emulator)")

    serve = commands.add_parser("serve", parents=[state], help="run the emulator in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=p.DEFAULT_API_PORT, help="API port (mutual TLS)")
    serve.add_argument("--provision-port", type=_port, default=p.DEFAULT_PROVISION_PORT,
                       help="provisioning port (server-authenticated TLS)")
    serve.add_argument("--strict-ids", action="store_true",
                       help="answer pushes to unknown sensor/metric ids with 15/16 instead of creating them")
    serve.add_argument("--inject-error", action="append", type=_injection, metavar="CODE:SHARE",
                       help="answer SHARE (0..1) of the API requests with error CODE (1 or 3); repeatable")
    serve.add_argument("--inject-answer-fault", action="append", type=_answer_fault, metavar="KIND:SHARE",
                       help="drop, dup(licate), delay, reorder or redeliver SHARE (0..1) of the API "
                            "answers (delay:SHARE:SECONDS holds the answer stream, default 2 s; redeliver "
                            "publishes the last few answers again, as an agent does after its own "
                            "reconnect); repeatable; for client tests")
    serve.add_argument("--seed", type=int, default=None, help="seed of the error-injection random generator")
    serve.add_argument("--http", metavar="HOST:PORT",
                       help="serve the dashboard here (what the emulated agent holds, live), "
                            "e.g. 127.0.0.1:8081")
    serve.set_defaults(handler=_serve)

    dump = commands.add_parser("dump", parents=[state], help="print clients, inventory and values as JSON")
    dump.set_defaults(handler=_dump)
    wipe = commands.add_parser("wipe", parents=[state],
                               help="delete every sensor, metric and value (keeps clients and CA); "
                                    "the emulator must be stopped")
    wipe.set_defaults(handler=_wipe)
