"""Integer arithmetic as C does it, for reproducing kernel and datasheet maths bit for bit."""

from __future__ import annotations


def c_div(a: int, b: int) -> int:
    """C integer division: truncates toward zero (Python's ``//`` floors). -7 / 2 == -3."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q
