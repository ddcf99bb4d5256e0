"""Where each key of a TOML text is: our own pass over the text, because tomllib gives no
positions. Runs only on text tomllib has accepted, so it can be lenient about syntax.

A key is addressed by its *path*, the keys from the document's root with the element index of
every array (of tables, or an inline array) in between::

    [agent]                    ("agent",)                  line 1
    port = 18884               ("agent", "port")           line 2
    [[sensor]]                 ("sensor", 0)               line 3
    options.pin = 4            ("sensor", 0, "options", "pin")
    [[sensor]]                 ("sensor", 1)
    [sensor.options]           ("sensor", 1, "options")    (the latest [[sensor]])
    points = [[0, 1], [2, 3]]  (…, "points", 1)            the second element's line

Cost: one left-to-right pass; strings, comments and scalars are skipped with compiled regular
expressions (or ``str.find`` for multi-line strings), so a 10 MB value costs milliseconds, and
nesting is followed with an explicit stack (no recursion; paths recorded `MAX_PATH_DEPTH` deep).
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass

KeyPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t]*")
_WS_NL_COMMENTS = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_STR = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"')
_LITERAL_STR = re.compile(r"'[^'\n]*'")
_SCALAR = re.compile(r"[^,\]\}\n#]+")   # numbers, booleans, dates: no delimiter inside
_DOT = re.compile(r"[ \t]*\.[ \t]*")
_EQUALS = re.compile(r"[ \t]*=")
_TO_EOL = re.compile(r"[^\n]*")
#: Paths are recorded this deep at most: beyond it an element's line is its ancestor's, so that
#: arrays nested 100,000 deep cost a linear pass, not one that grows with depth squared.
MAX_PATH_DEPTH = 32


@dataclass
class _Open:
    """An array (``[``) or inline table (``{``) the value pass is inside."""

    kind: str
    path: KeyPath
    elements: int = 0   #: array elements seen so far


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """The position after ``pattern`` at ``pos`` (or ``pos``: these patterns may match nothing)."""
    match = pattern.match(text, pos)
    return match.end() if match else pos


class KeyLocator:
    """Lines (1-based) of every key, table header and array element of one TOML text."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[KeyPath, int] = {}
        self._count_pos = 0
        self._count_line = 1
        self._key_start = 0   # where the last dotted key began (its line is the key's line)
        with contextlib.suppress(IndexError, ValueError):  # text tomllib rejected: keep what was found
            self._scan()

    # -- queries ---------------------------------------------------------------------------------
    def line(self, path: Iterable[str | int]) -> int | None:
        """The line of ``path``, or of its nearest recorded ancestor (a missing key: its
        table's header); None if not even the first component is in the text."""
        parts = tuple(path)
        while parts:
            if parts in self._lines:
                return self._lines[parts]
            parts = parts[:-1]
        return None

    def exact_line(self, path: Iterable[str | int]) -> int | None:
        """The line of ``path`` itself, None if the text does not spell it out."""
        return self._lines.get(tuple(path))

    # -- compatibility with the [agent]-only locator of the first profile issue -------------------
    def table_line(self, table: str, index: int = 0) -> int | None:
        path: KeyPath = (table, index) if (table, index) in self._lines else (table,)
        return self._lines.get(path)

    def key_line(self, table: str, key: str, index: int = 0) -> int | None:
        base: KeyPath = (table, index) if (table, index) in self._lines else ((table,) if table else ())
        return self.line((*base, key))

    # -- the pass --------------------------------------------------------------------------------
    def _line_at(self, pos: int) -> int:
        """Line of ``pos``; positions are asked in increasing order, so counting is linear."""
        if pos >= self._count_pos:
            self._count_line += self._text.count("\n", self._count_pos, pos)
        else:
            self._count_line -= self._text.count("\n", pos, self._count_pos)
        self._count_pos = pos
        return self._count_line

    def _record(self, path: KeyPath, pos: int) -> None:
        if path not in self._lines:
            self._lines[path] = self._line_at(pos)

    def _scan(self) -> None:
        text, pos, end = self._text, 0, len(self._text)
        table: KeyPath = ()
        arrays: dict[KeyPath, int] = {}   # array-of-tables path -> elements seen so far
        while True:
            pos = _skip(_WS_NL_COMMENTS, text, pos)
            if pos >= end:
                return
            if text.startswith("[[", pos):
                keys, pos = self._keys(pos + 2)
                parent = self._resolve(keys[:-1], arrays)
                array = (*parent, keys[-1])
                index = arrays.get(array, 0)
                arrays[array] = index + 1
                table = (*array, index)
                self._record_prefixes(table, self._key_start)
                pos = _skip(_TO_EOL, text, pos)
            elif text[pos] == "[":
                keys, pos = self._keys(pos + 1)
                table = self._resolve(keys, arrays)
                self._record_prefixes(table, self._key_start)
                pos = _skip(_TO_EOL, text, pos)
            else:
                keys, pos = self._keys(pos)
                path = table + keys
                self._record_prefixes(path, self._key_start)
                pos = _skip(_EQUALS, text, pos)
                pos = self._value(pos, path)

    def _resolve(self, keys: KeyPath, arrays: dict[KeyPath, int]) -> KeyPath:
        """A header's keys as a path: every array of tables on the way means its latest element."""
        path: KeyPath = ()
        for key in keys:
            path += (key,)
            if path in arrays:
                path += (arrays[path] - 1,)
        return path

    def _record_prefixes(self, path: KeyPath, pos: int) -> None:
        for i in range(1, len(path) + 1):
            self._record(path[:i], pos)

    def _keys(self, pos: int) -> tuple[KeyPath, int]:
        """A dotted key (bare, "basic" or 'literal' parts) starting at ``pos`` (spaces allowed)."""
        text = self._text
        pos = _skip(_WS, text, pos)
        self._key_start = pos
        keys: list[str] = []
        while True:
            pos = _skip(_WS, text, pos)
            for pattern in (_BARE_KEY, _BASIC_STR, _LITERAL_STR):
                match = pattern.match(text, pos)
                if match:
                    keys.append(_unquote(match.group()))
                    pos = match.end()
                    break
            else:
                raise ValueError(f"no key at offset {pos}")
            dot = _DOT.match(text, pos)
            if not dot:
                return tuple(keys), pos
            pos = dot.end()

    def _value(self, pos: int, path: KeyPath) -> int:
        """Skip one value starting at ``pos``, recording the keys of inline tables and the
        elements of arrays inside it; returns the position after it."""
        text = self._text
        stack: list[_Open] = []
        expect_value = True
        while True:
            if expect_value:
                pos = _skip(_WS_NL_COMMENTS, text, pos)
                char = text[pos]
                if char == "[":
                    stack.append(_Open("[", path))
                    pos, path, expect_value = self._item(pos + 1, stack)
                    continue
                if char == "{":
                    stack.append(_Open("{", path))
                    pos, path, expect_value = self._item(pos + 1, stack)
                    continue
                pos = self._skip_scalar(pos)
                expect_value = False
            if not stack:
                return pos
            pos = _skip(_WS_NL_COMMENTS, text, pos)
            char = text[pos]
            if char == ",":
                pos, path, expect_value = self._item(pos + 1, stack)
            elif char in "]}":
                stack.pop()
                pos += 1
            else:
                raise ValueError(f"unexpected {char!r} at offset {pos}")

    def _item(self, pos: int, stack: list[_Open]) -> tuple[int, KeyPath, bool]:
        """After ``[``, ``{`` or a comma: the next element's path (recorded), or the container's
        end. Returns (position, path, whether a value follows)."""
        text = self._text
        pos = _skip(_WS_NL_COMMENTS, text, pos)
        container = stack[-1]
        if text[pos] in "]}":
            stack.pop()
            return pos + 1, container.path, False
        deep = len(container.path) >= MAX_PATH_DEPTH   # deeper keys share their ancestor's line
        if container.kind == "[":
            path = container.path if deep else (*container.path, container.elements)
            container.elements += 1
            self._record(path, pos)
            return pos, path, True
        keys, pos = self._keys(pos)
        path = container.path if deep else container.path + keys
        self._record_prefixes(path, self._key_start)
        pos = _skip(_EQUALS, text, pos)
        return pos, path, True

    def _skip_scalar(self, pos: int) -> int:
        text = self._text
        for quotes in ('"""', "'''"):
            if text.startswith(quotes, pos):
                return _end_of_multiline(text, pos, quotes)
        for pattern in (_BASIC_STR, _LITERAL_STR, _SCALAR):
            match = pattern.match(text, pos)
            if match:
                return match.end()
        raise ValueError(f"no value at offset {pos}")


def _end_of_multiline(text: str, pos: int, quotes: str) -> int:
    """The position after a multi-line string opening at ``pos`` (up to two extra quotes may
    end its content; in a basic string an odd run of backslashes escapes a quote)."""
    search = pos + 3
    while True:
        close = text.find(quotes, search)
        if close < 0:
            raise ValueError("unterminated multi-line string")
        if quotes == '"""':
            backslashes = 0
            while text[close - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2:
                search = close + 1
                continue
        after = close + 3
        extra = 0
        while extra < 2 and after < len(text) and text[after] == quotes[0]:
            after += 1
            extra += 1
        return after


def _unquote(key: str) -> str:
    if key.startswith('"'):
        if "\\" not in key:
            return key[1:-1]
        return str(tomllib.loads(f"k = {key}")["k"])  # escapes: TOML's own rules
    if key.startswith("'"):
        return key[1:-1]
    return key
