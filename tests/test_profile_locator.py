"""The line finder: our own pass over TOML text (tomllib gives no positions)."""

from __future__ import annotations

import tomllib

from pibridge.profile import KeyLocator

TEXT = '''# comment [[sensor]]
[agent]
port = 1
s = """
x = 2
[fake]
\\""" still inside
"""
t = \'\'\'
[[sensor]]
\'\'\'
u = """ends with a quote""""
[[sensor]]
name = "a"  # name = "b"
options = { pin = 4, "q.k" = {z = [1,
  2]} }
[[sensor]]
name = 'b'
[ sensor . "options" ]
"pin" = 5
sub . key = 3
[sensor.metrics.temperature]
points = [
  [0, 1],  # ] not the end
  [2, 3],
]
[[sensor.extra]]
k = 1
[[sensor.extra]]
k = 2
[bridge]
'''


def test_every_key_header_and_element_has_its_line() -> None:
    tomllib.loads(TEXT)  # the text is valid TOML
    locator = KeyLocator(TEXT)
    expected = {
        ("agent",): 2, ("agent", "port"): 3, ("agent", "s"): 4, ("agent", "t"): 9, ("agent", "u"): 12,
        ("sensor", 0): 13, ("sensor", 0, "name"): 14, ("sensor", 0, "options", "pin"): 15,
        ("sensor", 0, "options", "q.k", "z", 0): 15, ("sensor", 0, "options", "q.k", "z", 1): 16,
        ("sensor", 1): 17, ("sensor", 1, "name"): 18, ("sensor", 1, "options"): 19,
        ("sensor", 1, "options", "pin"): 20, ("sensor", 1, "options", "sub", "key"): 21,
        ("sensor", 1, "metrics", "temperature"): 22, ("sensor", 1, "metrics", "temperature", "points"): 23,
        ("sensor", 1, "metrics", "temperature", "points", 1, 0): 25,
        ("sensor", 1, "extra", 0, "k"): 28, ("sensor", 1, "extra", 1): 29, ("sensor", 1, "extra", 1, "k"): 30,
        ("bridge",): 31,
    }
    assert {path: locator.exact_line(path) for path in expected} == expected
    assert locator.exact_line(("fake",)) is None and locator.exact_line(("agent", "x")) is None
    assert locator.line(("sensor", 1, "options", "missing")) == 19   # nearest ancestor
    assert locator.line(("nowhere",)) is None


def test_text_tomllib_rejects_keeps_what_was_found() -> None:
    locator = KeyLocator('[agent]\nport = 1\nhost = = 2\n')
    assert locator.exact_line(("agent", "port")) == 2


def test_deep_nesting_needs_no_recursion() -> None:
    depth = 100_000
    locator = KeyLocator("a = " + "[" * depth + "]" * depth + "\nb = 1\n")
    assert locator.exact_line(("b",)) == 2
