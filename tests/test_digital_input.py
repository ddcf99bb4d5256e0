"""Digital input via gpiozero DigitalInputDevice on MockFactory pins."""

from __future__ import annotations

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.digital_input import DigitalInput
from pibridge.drivers.errors import BusError, ConfigurationError
from pibridge.drivers.simulation import Environment
from pibridge.protocol import ValueType

PIN = 17


def test_pull_up_is_active_low(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN) as door:
        pin = mock_factory.pin(PIN)
        assert door.read() == {"state": False}  # pulled up, idle
        pin.drive_low()
        assert check_sample(door, door.read()) == {"state": True}


def test_pull_down_is_active_high(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN, pull="down") as sw:
        assert sw.read() == {"state": False}
        mock_factory.pin(PIN).drive_high()
        assert sw.read() == {"state": True}


def test_active_low_against_the_pull_inverts(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN, pull="up", active_low=False) as sw:
        assert sw.read() == {"state": True}  # idle high now counts as active
        mock_factory.pin(PIN).drive_low()
        assert sw.read() == {"state": False}


@pytest.mark.parametrize("pull", ["none", "floating"])
def test_no_pull_uses_active_state(mock_factory, pull: str) -> None:
    pin = mock_factory.pin(PIN)
    with DigitalInput(pin_factory=mock_factory, pin=PIN, pull=pull, active_low=True) as sw:
        assert pin.pull == "floating"
        pin.drive_high()
        assert sw.read() == {"state": False}
        pin.drive_low()
        assert sw.read() == {"state": True}
    with DigitalInput(pin_factory=mock_factory, pin=PIN, pull=pull) as sw:  # default active high
        assert sw.read() == {"state": False}


def test_edge_callbacks(mock_factory) -> None:
    events: list[tuple[bool, float]] = []
    ticks = iter([100.0, 101.5, 103.0])
    with DigitalInput(pin_factory=mock_factory, pin=PIN, clock=lambda: next(ticks)) as door:
        remove = door.on_change(lambda state, when: events.append((state, when)))
        pin = mock_factory.pin(PIN)
        pin.drive_low()
        pin.drive_high()
        remove()
        pin.drive_low()
    assert events == [(True, 100.0), (False, 101.5)]


def test_failing_callback_does_not_stop_others(mock_factory) -> None:
    seen: list[bool] = []

    def bad(state: bool, when: float) -> None:
        raise ValueError("listener bug")

    with DigitalInput(pin_factory=mock_factory, pin=PIN) as door:
        door.on_change(bad)
        door.on_change(lambda state, when: seen.append(state))
        mock_factory.pin(PIN).drive_low()
    assert seen == [True]


def test_debounce_passed_to_gpiozero(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN, debounce=0.05):
        assert mock_factory.pin(PIN).bounce == 0.05


def test_annotation_option(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN, annotation="open") as door:
        (metric,) = door.active_metrics()
    assert metric.value_type is ValueType.BOOL and metric.annotation == "open"
    assert metric.definition("m1")["valueAnnotation"] == "open"


def test_options_checked() -> None:
    with pytest.raises(ConfigurationError):
        DigitalInput.check_options({"pin": 17, "pull": "sideways"})
    with pytest.raises(ConfigurationError):
        DigitalInput.check_options({"pull": "up"})  # pin required


def test_pin_in_use_is_bus_error(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN), pytest.raises(BusError):
        DigitalInput(pin_factory=mock_factory, pin=PIN)


def test_read_after_close_is_typed(mock_factory) -> None:
    door = DigitalInput(pin_factory=mock_factory, pin=PIN)
    door.close()
    with pytest.raises(BusError):
        door.read()


def test_simulated_follows_door_and_fires_edges() -> None:
    env = Environment(seed=5, door_open_probability=0.5)
    reference = Environment(seed=5, door_open_probability=0.5)
    door = DigitalInput.simulated(env)
    events: list[bool] = []
    door.on_change(lambda state, when: events.append(state))
    try:
        states = [door.read()["state"] for _ in range(20)]
        expected = [reference.door_open() for _ in range(20)]
        assert states == expected
        flips = sum(a != b for a, b in zip([False, *expected], expected, strict=False))
        assert len(events) == flips > 0
    finally:
        door.close()
