"""Generic test fixtures shared by the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["pibridge.testing"]


@pytest.fixture
def mock_factory() -> Iterator[object]:
    """A fresh gpiozero MockFactory for one test, closed afterwards. Drivers get it injected; the
    test fails if anything made gpiozero create its process-wide default factory (nothing may
    depend on ``GPIOZERO_PIN_FACTORY`` or ``Device.pin_factory``)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory()
    yield factory
    factory.close()
    assert Device.pin_factory is previous, "gpiozero's global pin factory was initialised"
