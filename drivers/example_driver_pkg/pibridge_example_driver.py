"""An example third-party pibridge driver, published through the ``pibridge.drivers`` entry point.

It reads a pulse counter that a kernel driver (or a microcontroller) exposes as a text file
holding one decimal integer, e.g. a rain gauge or a flow meter. The file access is injected
(``reader``) so the driver runs against a fake in tests and ``--simulate``.

Its simulator (`simulate`, named by the class attribute ``simulator``) lives in this package,
not in pibridge: ``pibridge read example_counter --simulate`` finds it through that attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pibridge.drivers import (
    BadDataError,
    DeviceNotFoundError,
    Driver,
    Metric,
    Option,
    RetryPolicy,
    Sample,
    SimulatedWorld,
    ValueType,
)
from pibridge.drivers.files import read_small_text


def parse_count(text: str) -> int:
    """The counter file's content (``"1234\\n"``) -> pulses; BadDataError if it is not one
    non-negative integer."""
    stripped = text.strip()
    if not stripped.isdigit():
        raise BadDataError(f"example_counter: counter file holds {text!r}, not a pulse count")
    return int(stripped)


class ExampleCounter(Driver):
    """Pulse count from a text file. ``ExampleCounter(reader=None, **options)``: ``reader()``
    returns the file's text; by default the file at option ``path`` is read (bounded)."""

    name = "example_counter"
    description = "Example third-party driver: pulse count read from a text file"
    metrics = (Metric("count", "Pulse count", value_type=ValueType.INTEGER, annotation="pulses"),)
    options = (Option("path", str, "/run/example-counter", "file holding the pulse count"),)
    read_time_s = 0.001
    min_interval_s = 0.0
    retry = RetryPolicy(attempts=1, spacing_s=0.01)
    simulator = "pibridge_example_driver:simulate"

    def __init__(self, reader: Callable[[], str] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._reader = reader if reader is not None else self._read_file

    def _read_file(self) -> str:
        path = Path(self.config["path"])
        try:
            return read_small_text(path)
        except FileNotFoundError as exc:
            raise DeviceNotFoundError(f"example_counter: {path} does not exist") from exc

    def collect(self) -> Sample:
        return {"count": parse_count(self._reader())}


def simulate(world: SimulatedWorld, cls: type[ExampleCounter], options: dict[str, Any]) -> ExampleCounter:
    """A counter that grows by one pulse per reading (a fake counter file's content)."""
    state = {"pulses": 0}

    def fake_file() -> str:
        state["pulses"] += 1
        return f"{state['pulses']}\n"

    return cls(reader=fake_file, **options)
