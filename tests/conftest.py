"""Generic test fixtures shared by the suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import settings_for

from pibridge.agent import AgentClient, AgentSettings, provision
from pibridge.testing import Emulator

pytest_plugins = ["pibridge.testing"]

#: Seconds the shared ``client`` fixture waits for the agent (a guard, not a timing assertion).
AGENT_WAIT_S = 20.0


@pytest.fixture
def settings(emulator: Emulator, tmp_path: Path) -> AgentSettings:
    """Settings of a client provisioned at ``emulator`` (credentials in tmp)."""
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    return settings


@pytest.fixture
def client(settings: AgentSettings) -> Iterator[AgentClient]:
    """A connected `AgentClient` of the provisioned ``settings``, closed after the test."""
    client = AgentClient(settings, request_timeout=AGENT_WAIT_S)
    client.connect(AGENT_WAIT_S)
    yield client
    client.close()


def _gpiozero_mock_factory() -> Iterator[object]:
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


mock_factory = pytest.fixture(_gpiozero_mock_factory, name="mock_factory")
gpiozero_mock_factory = pytest.fixture(_gpiozero_mock_factory, name="gpiozero_mock_factory")


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bridge a test starts (in process or as a child, which inherits the variable) writes
    its status file in a temp folder of its own, as under systemd's ``RuntimeDirectory=``: the
    suite never touches ``/run/pibridge`` or a real bridge's status, even when run as root."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("run")))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.browser``: skipped where no Chromium is installed (a Pi), a failure when
    ``CI=true`` (CI installs it: a missing browser there is a broken setup, not a reason to skip)."""
    if item.get_closest_marker("browser") is None:
        return
    from pibridge.web.browser import chromium_missing

    missing = chromium_missing()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {missing}", pytrace=False)
    pytest.skip(missing)
