"""Durations as people write them: seconds (``30``, ``0.5``) or one number with a unit
(``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``). One parser for a profile's ``interval``
and every driver option that declares itself a duration (`pibridge.drivers.base.Option`).
No imports from the rest of pibridge: drivers and profiles both use it."""

from __future__ import annotations

import math
import re

#: Seconds per unit of a duration string ("500ms", "30s", "5m", "1h", "1d").
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
DURATION_FORMS = 'seconds (30, 0.5) or a duration such as "500ms", "30s", "5m", "1h", "1d"'


def parse_seconds(value: object) -> float:
    """Seconds from a number of seconds or a string with one unit (a bare number in a string,
    ``"0.05"``, is seconds too: a ``KEY=VALUE`` on the command line is always a string).
    `ValueError` for anything else, NaN and infinities; the caller bounds the result."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_RE.match(value)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    elif isinstance(value, str):
        seconds = float(value.strip())        # ValueError for words
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {value!r}")
    return seconds
