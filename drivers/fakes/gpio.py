"""Simulated GPIO inputs: mock input pins driven by the environment's timeline.

`MockInputPins` is one more pin factory beside gpiozero's (its ``MockFactory``, lgpio's): the
part of gpiozero's pin interface an input needs (`drivers.gpio.InputPins`), with pins a test or
the simulated world drives high and low. It imports nothing of gpiozero (whose package pulls in
every device class, ``importlib.metadata`` and ``statistics``: ~3 MB of a simulated bridge's
memory); the driver works the same on gpiozero's pins (tests run it on both).

The digital input is built as in production, with the world's `MockInputPins` as its pin
factory; the world drives the pin at the environment's scheduled door edges (from a timer,
between reads), so ``DigitalInput.on_change`` callbacks fire without anybody reading.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..gpio import PinClaimError

if TYPE_CHECKING:
    from ..digital_input import DigitalInput
    from ..simulation import SimulatedWorld

PULLS = ("up", "down", "floating")
EDGES = ("none", "falling", "rising", "both")
#: which edges each ``edges`` setting reports: rising (to high), falling (to low)
REPORTED = {"none": (), "falling": (False,), "rising": (True,), "both": (True, False)}

ChangedCallback = Callable[[float, bool], None]


class MockInputPin:
    """One input pin: its level follows the pull until driven (`drive_high`, `drive_low`); each
    change of level reported by ``edges`` calls ``when_changed(ticks, state)`` at once, on the
    driving thread, as gpiozero's mock pins do (``bounce`` is kept, not simulated: neither does
    gpiozero's mock)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._lock = threading.Lock()
        self._function = "input"
        self._pull = "floating"
        self._state = False
        self.bounce: float | None = None
        self._edges = "both"
        self.when_changed: ChangedCallback | None = None

    @property
    def function(self) -> str:
        return self._function

    @function.setter
    def function(self, value: str) -> None:
        if value != "input":
            raise PinClaimError(f"GPIO{self.number}: mock input pins are inputs only, not {value!r}")
        self._function = value

    @property
    def pull(self) -> str:
        return self._pull

    @pull.setter
    def pull(self, value: str) -> None:
        self._pull = self._one_of("pull", value, PULLS)
        if value != "floating":   # the resistor takes an undriven line to its level
            self._change(value == "up")

    @property
    def edges(self) -> str:
        return self._edges

    @edges.setter
    def edges(self, value: str) -> None:
        self._edges = self._one_of("edges", value, EDGES)

    def _one_of(self, setting: str, value: str, allowed: Iterable[str]) -> str:
        """``value`` if ``allowed`` has it, else the refusal a factory gives (`PinClaimError`)."""
        if value not in allowed:
            raise PinClaimError(f"GPIO{self.number}: {setting} must be one of {', '.join(allowed)}, "
                                f"not {value!r}")
        return value

    @property
    def state(self) -> bool:
        return self._state

    def drive_high(self) -> None:
        self._change(True)

    def drive_low(self) -> None:
        self._change(False)

    def _change(self, level: bool) -> None:
        with self._lock:
            if level == self._state:
                return
            self._state = level
            callback = self.when_changed if level in REPORTED[self._edges] else None
        if callback is not None:
            callback(time.monotonic(), level)

    def close(self) -> None:
        self.when_changed = None


class MockInputPins:
    """A pin factory of `MockInputPin` s: one pin object per number, claimed by one device at a
    time (``reserve_pins``/``release_pins``, as gpiozero's factories)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: dict[int, MockInputPin] = {}
        self._owners: dict[int, Any] = {}

    def pin(self, number: int) -> MockInputPin:
        with self._lock:
            found = self._pins.get(number)
            if found is None:
                found = self._pins[number] = MockInputPin(number)
            return found

    def reserve_pins(self, requester: Any, *numbers: int) -> None:
        with self._lock:
            taken = [n for n in numbers if self._owners.get(n, requester) is not requester]
            if taken:
                raise PinClaimError(f"GPIO{taken[0]} is already in use")
            for number in numbers:
                self._owners[number] = requester

    def release_pins(self, requester: Any, *numbers: int) -> None:
        with self._lock:
            for number in numbers:
                if self._owners.get(number) is requester:
                    del self._owners[number]

    def close(self) -> None:
        with self._lock:
            pins = list(self._pins.values())
            self._owners.clear()
        for pin in pins:
            pin.close()


def simulate_digital_input(world: SimulatedWorld, cls: type[DigitalInput],
                           options: dict[str, Any]) -> DigitalInput:
    """The input, configured by the user's options only (as on a Pi: same pin, pull, level and
    annotation), on the world's mock input pins; the pin is driven to the level that means
    "active" while ``environment.door_open_at(t)`` (the environment's door timeline)."""
    factory = world.input_pins()
    driver = cls(pin_factory=factory, clock=world.environment.clock, **options)
    world.add_door(factory.pin(driver.config["pin"]), active_high=not driver.active_low)
    return driver
