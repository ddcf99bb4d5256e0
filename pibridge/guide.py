"""The driver guide and its worked example package, shipped inside pibridge (package data) so
that someone who installed pibridge with pip can write a driver: ``pibridge drivers --guide``
prints the guide and where the example lies. Read through `importlib.resources`: the same from a
wheel, an editable install or a checkout."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

GUIDE_PACKAGE = "pibridge.drivers"
GUIDE_FILE = "README.md"
EXAMPLE_FOLDER = "example_driver_pkg"
EXAMPLE_FILES = ("pyproject.toml", "pibridge_example_driver.py")


@dataclass(frozen=True)
class GuideFiles:
    """The guide (``readme``) and the worked example package's folder (``example``)."""

    readme: Traversable
    example: Traversable


def guide_files() -> GuideFiles:
    """Where the guide and the example are in this installation."""
    root = resources.files(GUIDE_PACKAGE)
    return GuideFiles(root / GUIDE_FILE, root / EXAMPLE_FOLDER)
