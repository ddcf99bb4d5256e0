"""Converters for profile values: each returns the checked value or raises `ValueError` with a
message that reads after the key (``interval: must be a duration …``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pibridge.durations import DURATION_FORMS, DURATION_RE, DURATION_UNITS

from .errors import shown

MAX_DURATION_S = 3650 * DURATION_UNITS["d"]   #: ten years: anything longer is a typo
#: Keys longer than this get no "did you mean" (difflib is quadratic in the key's length).
SUGGEST_MAX_LEN = 64

Converter = Callable[[Any], Any]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: Any) -> float:
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f"must be a number, not {shown(value)}")
    return float(value)


def duration(value: Any) -> float:
    """Seconds from an int/float of seconds or a string with one unit; positive, finite, at most
    ten years."""
    if is_number(value):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"must be {DURATION_FORMS}, not {shown(value)}")
    elif isinstance(value, str) and (match := DURATION_RE.match(value)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"must be {DURATION_FORMS}, not {shown(value)}")
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, not {shown(value)}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{shown(value)} is longer than ten years")
    return seconds


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {shown(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {shown(value)}")
    return value


def integer(minimum: int, maximum: int) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {shown(value)}")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, not {value}")
        return value
    return convert


def choice(*allowed: str) -> Converter:
    def convert(value: Any) -> str:
        if value not in allowed:
            listed = " or ".join(f'"{a}"' for a in allowed)
            raise ValueError(f"must be {listed}, not {shown(value)}")
        return str(value)
    return convert


def resolve_path(value: str, base: Path) -> Path:
    """``~`` and ``~user`` expanded; a relative path is relative to ``base`` (the profile's
    folder). `ValueError` for a ``~user`` that does not exist (or no home directory)."""
    try:
        expanded = Path(value).expanduser()
    except RuntimeError:
        user = value[1:].split("/", 1)[0]
        raise ValueError(f"cannot expand {shown(value)}: "
                         + (f"no user {shown(user)} on this machine" if user else "no home directory")
                         ) from None
    return expanded if expanded.is_absolute() else base / expanded


def suggestion(given: str, known: Iterable[str]) -> str | None:
    """The closest of ``known`` to ``given`` (difflib), None if none is close or ``given`` is long."""
    if len(given) > SUGGEST_MAX_LEN:
        return None
    import difflib  # here: a bridge that runs keeps its imports in memory, and needs it only for typos

    close = difflib.get_close_matches(given, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def format_duration(seconds: float) -> str:
    """Seconds in the profile's own notation: the largest unit that divides them ("30s", "5m",
    "1h", "30d", "500ms"), else seconds with a fraction ("2.5s")."""
    for unit in ("d", "h", "m", "s", "ms"):
        count = seconds / DURATION_UNITS[unit]
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"
