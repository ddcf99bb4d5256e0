"""pytest plugin: the REAL agent emulator (``python -m pibridge emulator serve``) per test.

Enable with ``pytest_plugins = ["pibridge.testing"]`` in ``tests/conftest.py``. Fixtures:

- ``emulator``: a running default emulator (implicit creation on, no injected errors).
- ``emulator_factory(strict_ids=False, inject_errors=(), seed=None)``: more of them, variants.

Both stop everything at teardown (the serve process, its mosquitto children and its front). The
process control itself (start on free ports, stop, restart on the same ports, pause, wipe, dump,
provisioning) is library code: `pibridge.emulator.process.EmulatorProcess`, usable without pytest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pibridge.emulator.process import EmulatorError, EmulatorProcess, free_port

#: The fixtures' type under the name tests have used; `EmulatorProcess` is the class.
Emulator = EmulatorProcess

__all__ = ["Emulator", "EmulatorError", "EmulatorProcess", "emulator", "emulator_factory", "free_port"]


@pytest.fixture
def emulator_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., EmulatorProcess]]:
    """``emulator_factory(strict_ids=False, inject_errors=[(1, 0.2)], seed=7)`` → a started
    `EmulatorProcess` (keyword arguments as its constructor's), state in a fresh temp dir."""
    made: list[EmulatorProcess] = []

    def make(**kwargs: Any) -> EmulatorProcess:
        emulator = EmulatorProcess(tmp_path_factory.mktemp("emulator") / "state", **kwargs)
        made.append(emulator)
        emulator.start()
        return emulator

    yield make
    for emulator in made:
        with contextlib.suppress(Exception):
            emulator.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorProcess]) -> EmulatorProcess:
    """A running emulator with default behaviour, stopped after the test."""
    return emulator_factory()
