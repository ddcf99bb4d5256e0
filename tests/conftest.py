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


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bridge a test starts (in process or as a child, which inherits the variable) writes
    its status file in a temp folder of its own, as under systemd's ``RuntimeDirectory=``: the
    suite never touches ``/run/pibridge`` or a real bridge's status, even when run as root."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("run")))
