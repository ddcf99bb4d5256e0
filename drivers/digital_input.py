"""A digital input (door contact, float switch, PIR) through gpiozero's ``DigitalInputDevice``.

Pull and active level follow gpiozero: with ``pull = "up"`` the input is active when the line is
low, with ``"down"`` when it is high; with ``"none"``/``"floating"`` gpiozero needs the active
level given, which ``active_low`` supplies (default: active high). Setting ``active_low``
against the pull's natural level inverts the reported state. Besides the periodic sample,
``on_change(callback)`` reports every edge at once with a timestamp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pibridge.protocol import ValueType

from .base import Driver, GpioPin, Metric, Option, RetryPolicy, Sample
from .errors import BusError, ConfigurationError

log = logging.getLogger(__name__)

PULLS = ("up", "down", "none", "floating")
PULL_UP_ARG = {"up": True, "down": False, "none": None, "floating": None}
MAX_DEBOUNCE_S = 10.0
STATE_KEY = "state"
SIMULATED_PIN = 17

ChangeCallback = Callable[[bool, float], None]


def effective_active_low(pull: str, active_low: bool | None) -> bool:
    """Whether the reported state is True for a low line: the option, else the pull's natural level."""
    if active_low is not None:
        return active_low
    return pull == "up"


class DigitalInput(Driver):
    """One GPIO input as a bool metric (annotation configurable, e.g. "open")."""

    name = "digital_input"
    description = "GPIO digital input (gpiozero DigitalInputDevice) with edge events"
    metrics = (Metric(STATE_KEY, "State", value_type=ValueType.BOOL, annotation="active"),)
    options = (
        Option("pin", GpioPin, None, "input pin (BCM)", required=True),
        Option("pull", str, "up", "internal pull resistor: up, down, none/floating", choices=PULLS),
        Option("active_low", bool, None,
               "report True when the line is low (default: yes with pull up, no otherwise)"),
        Option("debounce", float, None, "bounce time in seconds (gpiozero bounce_time)",
               minimum=0.0, maximum=MAX_DEBOUNCE_S),
        Option("annotation", str, "active", "what True means, shown as the metric's annotation"),
    )
    read_time_s = 0.0
    retry = RetryPolicy(attempts=1, spacing_s=0.0)

    def __init__(self, pin_factory: Any = None, *, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        super().__init__(**options)
        self._clock = clock
        self._callbacks: list[ChangeCallback] = []
        self._before_read: Callable[[], None] | None = None
        self._owned: list[Any] = []
        pull = self.config["pull"]
        self._active_low = effective_active_low(pull, self.config["active_low"])
        pull_up = PULL_UP_ARG[pull]
        # gpiozero: with a pull its active level is fixed (up → low); without, we give it.
        self._invert = pull_up is not None and self._active_low != pull_up
        active_state = None if pull_up is not None else not self._active_low
        try:
            from gpiozero import DigitalInputDevice, GPIOZeroError
        except ImportError as exc:
            raise ConfigurationError(f"gpiozero is not installed: {exc}") from exc
        try:
            self._device = DigitalInputDevice(
                self.config["pin"], pull_up=pull_up, active_state=active_state,
                bounce_time=self.config["debounce"], pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise BusError(f"digital_input: cannot claim GPIO{self.config['pin']}: {exc}") from exc
        self._metric = Metric(STATE_KEY, "State", value_type=ValueType.BOOL,
                              annotation=self.config["annotation"])

    def active_metrics(self) -> tuple[Metric, ...]:
        return (self._metric,)

    def _state(self) -> bool:
        return bool(self._device.value) != self._invert

    def read(self) -> Sample:
        """The input's current state (True = active)."""
        if self._before_read is not None:
            self._before_read()
        try:
            return {STATE_KEY: self._state()}
        except Exception as exc:  # gpiozero raises its own errors for a closed/lost pin
            raise BusError(f"digital_input: reading GPIO{self.config['pin']} failed: {exc}") from exc

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(state, epoch_seconds)`` on every edge (from gpiozero's event thread).
        Returns a function that unregisters it."""
        if not self._callbacks:
            self._device.when_activated = self._edge
            self._device.when_deactivated = self._edge
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return remove

    def _edge(self) -> None:
        state, when = self._state(), self._clock()
        for callback in list(self._callbacks):
            try:
                callback(state, when)
            except Exception:  # a bad listener must not kill gpiozero's event thread
                log.exception("digital_input: change callback failed")

    def _release(self) -> None:
        self._callbacks.clear()
        self._device.close()
        for thing in self._owned:
            thing.close()

    @classmethod
    def simulated(cls, environment: Any, **options: Any) -> DigitalInput:
        """A MockFactory pin driven from ``environment.door_open()`` before each read (pull up,
        annotation "open": the line goes low while the door is open); edges fire ``on_change``."""
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
        options.setdefault("pin", SIMULATED_PIN)
        options.setdefault("annotation", "open")
        options.setdefault("pull", "up")
        driver = cls(pin_factory=factory, **options)
        pin = factory.pin(driver.config["pin"])
        active_level_high = not driver._active_low

        def drive() -> None:
            if environment.door_open() == active_level_high:
                pin.drive_high()
            else:
                pin.drive_low()

        driver._before_read = drive
        driver._owned = [factory]
        return driver
