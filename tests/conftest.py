"""Generic test fixtures shared by the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["pibridge.testing"]


@pytest.fixture
def mock_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh gpiozero MockFactory for one test, closed afterwards.

    gpiozero 2.0.1's software SPI bus ignores the injected factory and initialises the global
    default one, so ``GPIOZERO_PIN_FACTORY=mock`` is set for the test and whatever global
    factory gpiozero created is closed and cleared at the end (no state leaks between tests).
    """
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    previous = Device.pin_factory
    factory = MockFactory()
    yield factory
    factory.close()
    if Device.pin_factory is not previous:
        if Device.pin_factory is not None:
            Device.pin_factory.close()
        Device.pin_factory = previous
