"""`pibridge profile list|example`: the example profiles shipped inside the package.

A pip user has no checkout and no ``profiles/`` folder: the examples travel as package data
(``pibridge/profiles`` links to the repository's top-level ``profiles/``), read through
``importlib.resources`` so they work from a wheel, a zip or an editable install alike.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from pibridge.cli import CliError

PROFILE_SUFFIX = ".toml"
DEFAULT_EXAMPLE = "greenhouse"


def example_profiles() -> dict[str, Traversable]:
    """Every shipped example profile by name (file name without ``.toml``), sorted."""
    folder = resources.files("pibridge") / "profiles"
    if not folder.is_dir():
        return {}
    found = {entry.name.removesuffix(PROFILE_SUFFIX): entry for entry in folder.iterdir()
             if entry.name.endswith(PROFILE_SUFFIX) and entry.is_file()}
    return dict(sorted(found.items()))


def example_text(name: str) -> str:
    """The text of example profile ``name``; a `CliError` naming the known ones otherwise."""
    profiles = example_profiles()
    if name.endswith(PROFILE_SUFFIX):
        name = name.removesuffix(PROFILE_SUFFIX)
    if name not in profiles:
        known = ", ".join(profiles) or "none (the package was installed without its data files)"
        raise CliError(f"no example profile {name!r}; the examples are: {known}")
    return profiles[name].read_text(encoding="utf-8")


def summary(text: str) -> str:
    """The first line of a profile's leading comment, without the ``#``."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped.lstrip("#").strip():
            return stripped.lstrip("#").strip()
        if stripped and not stripped.startswith("#"):
            break
    return ""


def cmd_list(args: argparse.Namespace) -> int:
    profiles = example_profiles()
    if not profiles:
        raise CliError("no example profiles found in the installed package")
    width = max(len(name) for name in profiles)
    for name, entry in profiles.items():
        print(f"{name:<{width}}  {summary(entry.read_text(encoding='utf-8'))}".rstrip())
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    text = example_text(args.name)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    target = Path(args.output)
    try:
        with target.open("x", encoding="utf-8") as out:  # never overwrite a user's profile
            out.write(written_header(target, args.name) + text)
    except FileExistsError:
        raise CliError(f"{target} exists: choose another file or delete it first") from None
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"wrote {target}: edit its [[sensor]] entries (and [agent] if the agent is elsewhere), then\n"
          f"  pibridge check --profile {target}              every problem at once\n"
          f"  pibridge read --profile {target} --simulate    a dry run without hardware\n"
          f"  pibridge run --profile {target}")
    return 0


def written_header(target: Path, name: str) -> str:
    """The comment that opens a profile written with ``-o``: which file this is, where it came
    from and what to run first (a shell-safe path as the user gave it)."""
    shown = shlex.quote(str(target))
    example = name.removesuffix(PROFILE_SUFFIX)
    return (f"# {target}: written by `pibridge profile example {example} -o {shown}`.\n"
            f"# First `pibridge check --profile {shown}` (every problem at once), then\n"
            f"# `pibridge read --profile {shown}` (every sensor once), then\n"
            f"# `pibridge run --profile {shown}`.\n"
            "#\n")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the top-level parser."""
    group = sub.add_parser("profile", help="the example profiles shipped with pibridge")
    commands = group.add_subparsers(dest="profile_command", metavar="SUBCOMMAND", required=True)

    p = commands.add_parser("list", help="list the example profiles")
    p.set_defaults(handler=cmd_list)

    p = commands.add_parser("example", help="print an example profile (or write it with --output)")
    p.add_argument("name", nargs="?", default=DEFAULT_EXAMPLE,
                   help=f"which example (default {DEFAULT_EXAMPLE}; see `pibridge profile list`)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write to FILE (never overwrites an existing file) instead of stdout")
    p.set_defaults(handler=cmd_example)
