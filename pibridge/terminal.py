"""Text that reaches a terminal: nothing in a profile, a sensor name or an error message may
move the cursor, clear the screen or forge a line of its own."""

from __future__ import annotations

#: What `printable` shows a control character as where every column counts (the live view
#: redraws in place: one character, one column).
REPLACEMENT = "\ufffd"


def printable(text: str, replacement: str | None = None) -> str:
    """``text`` with every non-printable character (control characters, line breaks, escape
    sequences' ESC) spelled as ``\\u001b`` — readable in a one-line message — or, given
    ``replacement`` (`REPLACEMENT` for the live view and ``pibridge status``), shown as that."""
    if text.isprintable():
        return text
    if replacement is not None:
        return "".join(ch if ch.isprintable() else replacement for ch in text)
    return "".join(c if c.isprintable() else
                   (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}") for c in text)
