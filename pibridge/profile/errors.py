"""A broken profile: every problem found, each pointing at file, line, sensor and key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pibridge.terminal import printable

#: Keys and values quoted in messages are cut to this many characters (a 10 MB key is one line).
SHOWN_MAX = 40
#: A message (``pibridge run``, a refused reload's log) lists at most this many problems, then
#: how many more there are: a pathological profile has 200,000 (``pibridge check`` lists them all
#: with ``--all``).
PROBLEMS_SHOWN_MAX = 50


@dataclass(frozen=True)
class Problem:
    """One problem: ``line`` (1-based, None if the text has no such key), ``key`` the key path
    (relative to the sensor for sensor problems: ``options.pin``; else ``bridge.w1_gpio``),
    ``sensor`` the sensor's label (``sensor "Canopy"`` or ``sensor #3``) or "", ``message``."""

    line: int | None
    key: str
    message: str
    sensor: str = ""

    def render(self, path: Path | str) -> str:
        """``greenhouse.toml:23: sensor "Canopy" → options.pin: GPIO 4 is the 1-Wire pin``"""
        where = f"{path}:{self.line}" if self.line else f"{path}"
        subject = " → ".join(part for part in (self.sensor, self.key) if part)
        # one line on the terminal whatever the profile holds: no escape sequence, no forged line
        return printable(f"{where}: {subject}: {self.message}" if subject else f"{where}: {self.message}")


class ProfileError(Exception):
    """A broken profile: ``problems`` (every one found, in file order), one rendered line each.
    ``line``, ``key`` and ``problem`` are the first problem's, for callers that show one.
    ``str()`` lists the first `PROBLEMS_SHOWN_MAX` and counts the rest (`capped`)."""

    def __init__(self, path: Path | str, problem: str | Sequence[Problem], *, line: int | None = None,
                 key: str = "") -> None:
        self.path = Path(path)
        self.problems: tuple[Problem, ...] = (
            (Problem(line, key, problem),) if isinstance(problem, str) else tuple(problem))
        first = self.problems[0]
        self.line, self.key, self.problem = first.line, first.key, first.message
        self.lines = tuple(p.render(path) for p in self.problems)
        super().__init__("\n".join(self.capped()))

    def capped(self, limit: int = PROBLEMS_SHOWN_MAX) -> list[str]:
        """The first ``limit`` problem lines, then one line counting the rest (if any)."""
        if len(self.lines) <= limit:
            return list(self.lines)
        rest = len(self.lines) - limit
        return [*self.lines[:limit], f"{printable(str(self.path))}: … and {rest} more "
                                     f"problem{'s' if rest != 1 else ''} (`pibridge check --all --profile "
                                     f"{printable(str(self.path))}` lists every one)"]


def shown(value: object) -> str:
    """``repr`` of a value or key for a message (non-printable characters escaped), cut to
    `SHOWN_MAX` characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"   # as TOML spells it
    elif isinstance(value, str):
        text = f'"{printable(value)}"'
    else:
        text = repr(value)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX - 1] + "…"
