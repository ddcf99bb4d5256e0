"""Print pip constraints that pin every runtime dependency to the floor pyproject.toml declares.

`scripts/test_floors.sh` installs pibridge with these constraints and runs the suite, so the floors
stay true: raising a floor is one edit in pyproject.toml, and a dependency added without a floor
(``>=`` or ``==``) fails here, loudly. The core dependencies and the Pi extras are pinned; the test
tools are not (they do not ship to a Pi). Pins of packages the environment does not install (lgpio
on a PC) are inert: pip applies a constraint only to what it installs.

Usage: python scripts/floor_constraints.py [pyproject.toml] > floors.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

#: Extras whose packages ship to users and so have floors to keep.
SHIPPED_EXTRAS = ("pi", "dht")
#: Floors of indirect dependencies, pinned too: the 32-bit Pi route runs Debian bookworm's
#: python3-cryptography 38.0.4 on python3-cffi 1.15.1 (bookworm's python3-cffi).
TRANSITIVE_FLOORS = {"cffi": "1.15.1"}
FLOOR_OPERATORS = (">=", "==")


class NoFloor(Exception):
    """A shipped dependency without a lowest version."""


def floors(pyproject: dict) -> dict[str, str]:
    """Package name → lowest allowed version, for the core dependencies and the shipped extras."""
    project = pyproject["project"]
    declared = list(project["dependencies"])
    for extra in SHIPPED_EXTRAS:
        declared += project["optional-dependencies"][extra]
    found: dict[str, str] = {}
    for text in declared:
        requirement = Requirement(text)
        lows = [spec.version for spec in requirement.specifier if spec.operator in FLOOR_OPERATORS]
        if len(lows) != 1:
            raise NoFloor(f"{text!r} in pyproject.toml needs exactly one floor (>= or ==): the floor "
                          "test environment pins every shipped dependency to it")
        found[requirement.name] = lows[0]
    return found | TRANSITIVE_FLOORS


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        pins = floors(tomllib.loads(path.read_text()))
    except NoFloor as exc:
        print(f"floor_constraints: {exc}", file=sys.stderr)
        return 1
    for name, version in pins.items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
