"""Digital input on a pin factory's pins: gpiozero's MockFactory and pibridge's MockInputPins
(every test runs on both: the driver uses only the pin interface they share)."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.digital_input import DigitalInput
from pibridge.drivers.errors import BusError, ConfigurationError, SensorError
from pibridge.drivers.simulation import Environment, SimulatedWorld
from pibridge.protocol import ValueType

PIN = 17


@pytest.fixture(params=["gpiozero", "pibridge"])
def mock_factory(request: pytest.FixtureRequest) -> Iterator[object]:
    """gpiozero's MockFactory (the conftest fixture's, with its global-factory check) or the
    simulated world's `MockInputPins`."""
    if request.param == "gpiozero":
        yield request.getfixturevalue("gpiozero_mock_factory")
        return
    from pibridge.drivers.fakes.gpio import MockInputPins

    factory = MockInputPins()
    yield factory
    factory.close()


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


def test_debounce_passed_to_the_pin(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN, debounce=0.05):
        assert mock_factory.pin(PIN).bounce == 0.05


def test_annotation_option(mock_factory) -> None:
    config = DigitalInput.check_options({"pin": PIN, "annotation": "open"})
    (declared,) = DigitalInput.metrics_for(config)  # known without a pin
    assert declared.value_type is ValueType.BOOL and declared.annotation == "open"
    with DigitalInput(pin_factory=mock_factory, pin=PIN, annotation="open") as door:
        assert door.active_metrics() == (declared,)
    (default,) = DigitalInput.metrics_for(DigitalInput.check_options({"pin": PIN}))
    assert default.annotation == "active" and DigitalInput.metrics == (default,)


def test_annotation_too_long_is_refused_without_hardware() -> None:
    _config, problems = DigitalInput.validate({"pin": PIN, "annotation": "x" * 65})
    assert [(p.key, p.message) for p in problems] == [
        ("annotation", "option annotation: at most 64 characters, not 65")]


def test_options_checked() -> None:
    with pytest.raises(ConfigurationError):
        DigitalInput.check_options({"pin": 17, "pull": "sideways"})
    with pytest.raises(ConfigurationError):
        DigitalInput.check_options({"pull": "up"})  # pin required


@pytest.mark.parametrize("pin", [2, 3])
def test_pull_down_on_the_i2c_pins_is_refused_without_hardware(pin: int) -> None:
    _config, problems = DigitalInput.validate({"pin": pin, "pull": "down"})
    assert [p.key for p in problems] == ["pull"] and "fixed 1.8 kΩ pull-up" in problems[0].message
    assert DigitalInput.validate({"pin": pin, "pull": "up"})[1] == []
    assert DigitalInput.validate({"pin": 17, "pull": "down"})[1] == []
    assert DigitalInput.resources(DigitalInput.check_options({"pin": 27})).gpio == (27,)


def test_off_a_pi_one_clear_error_and_no_gpiozero_warnings() -> None:
    """No factory given: lgpio (the pi extra) or nothing; gpiozero's fallback chain, with one
    PinFactoryFallback warning per factory it tries, never runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SensorError) as info:
            DigitalInput(pin=17)
    assert caught == []
    assert "pibridge[pi]" in str(info.value) or "Raspberry Pi" in str(info.value)
    assert not info.value.retryable


def test_pin_in_use_is_bus_error(mock_factory) -> None:
    with DigitalInput(pin_factory=mock_factory, pin=PIN), pytest.raises(BusError):
        DigitalInput(pin_factory=mock_factory, pin=PIN)


def test_a_pin_setup_failing_with_a_foreign_error_gives_everything_back(mock_factory) -> None:
    """RPi.GPIO says "Failed to add edge detection" as a RuntimeError and lgpio "GPIO busy" as
    its own error, neither a gpiozero error: the pin is still closed and released (a rebuild
    after each failure leaked a gpiochip handle), and the error is not hidden."""
    closed: list[int] = []

    class EdgesRefused:
        def __init__(self, pin: object) -> None:
            object.__setattr__(self, "_pin", pin)

        def __getattr__(self, name: str) -> object:
            return getattr(self._pin, name)

        def __setattr__(self, name: str, value: object) -> None:
            if name == "edges":
                raise RuntimeError("Failed to add edge detection")
            setattr(self._pin, name, value)

        def close(self) -> None:
            closed.append(PIN)
            self._pin.close()  # type: ignore[attr-defined]

    class Factory:
        def pin(self, spec: int) -> EdgesRefused:
            return EdgesRefused(mock_factory.pin(spec))  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(mock_factory, name)

    with pytest.raises(RuntimeError, match="edge detection"):
        DigitalInput(pin_factory=Factory(), pin=PIN)
    assert closed == [PIN]
    with DigitalInput(pin_factory=mock_factory, pin=PIN, pull="down") as again:  # released
        assert again.read() == {"state": False}


def test_read_after_close_is_typed(mock_factory) -> None:
    door = DigitalInput(pin_factory=mock_factory, pin=PIN)
    door.close()
    with pytest.raises(BusError):
        door.read()


class SteppedClock:
    """An epoch clock that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_simulated_door_follows_the_environment_timeline() -> None:
    """Deterministic: the environment's door timeline on a stepped clock, the world's events
    applied at each step; every scheduled edge fires on_change once, in order, without a read."""
    clock = SteppedClock(1_000.0)
    env = Environment(seed=5, clock=clock, door_period_s=10.0, door_open_s=3.0, door_open_probability=0.7)
    expected = env.door_edges(1_000.0, 1_200.0)
    assert len(expected) >= 10 and [e[1] for e in expected[:2]] == [True, False]
    with SimulatedWorld(env, door_timer=False) as world:
        door = world.build("digital_input", {"pin": 17})
        assert door.read() == {"state": env.door_open_at(1_000.0)}
        events: list[tuple[bool, float]] = []
        door.on_change(lambda state, when: events.append((state, when)))
        for t, _ in expected:
            clock.now = t
            world.advance_events()
        assert events == [(is_open, t) for t, is_open in expected]
        assert door.read() == {"state": env.door_open_at(clock.now)}


def test_simulated_door_edges_fire_between_reads_in_real_time() -> None:
    """The world's timer drives the mock pin at the environment's edges: callbacks arrive with
    nobody reading (frequent, certain edges; waits on an event, never a sleep)."""
    env = Environment(seed=1, door_period_s=0.2, door_open_s=0.05, door_open_probability=1.0)
    events: list[bool] = []
    enough = threading.Event()

    def on_change(state: bool, when: float) -> None:
        events.append(state)
        if len(events) >= 4:
            enough.set()

    with SimulatedWorld(env) as world:
        door = world.build("digital_input", {"pin": 22})
        door.on_change(on_change)
        assert enough.wait(timeout=10.0)
    assert events[:4] in ([True, False, True, False], [False, True, False, True])


def test_a_change_of_state_is_reported_once(mock_factory) -> None:
    """As gpiozero's DigitalInputDevice: callbacks hear changes of state, not repeated levels."""
    events: list[bool] = []
    with DigitalInput(pin_factory=mock_factory, pin=PIN) as door:
        door.on_change(lambda state, when: events.append(state))
        pin = mock_factory.pin(PIN)
        pin.drive_high()       # already high (pulled up): no edge
        pin.drive_low()
        pin.drive_low()
        pin.drive_high()
    assert events == [True, False]


def test_closing_releases_the_pin_for_the_next_driver(mock_factory) -> None:
    DigitalInput(pin_factory=mock_factory, pin=PIN).close()
    with DigitalInput(pin_factory=mock_factory, pin=PIN, pull="down") as again:
        assert again.read() == {"state": False}


def test_a_simulated_door_imports_nothing_of_gpiozero() -> None:
    """The simulated world's door runs on pibridge's mock input pins: gpiozero's package (every
    device class, importlib.metadata, statistics: ~3 MB of a simulated bridge) stays unloaded."""
    code = ("import sys\n"
            "from pibridge.drivers.simulation import Environment, SimulatedWorld\n"
            "with SimulatedWorld(Environment(seed=1), door_timer=False) as world:\n"
            "    door = world.build('digital_input', {'pin': 27})\n"
            "    print(door.read(), [m for m in ('gpiozero', 'importlib.metadata') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    state, loaded = out.stdout.strip().split("} ")
    assert state.startswith("{'state': ") and loaded == "[]"
