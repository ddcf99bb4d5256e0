"""A digital input (door contact, float switch, PIR) on one pin of a gpiozero pin factory.

Pull and active level as gpiozero's ``DigitalInputDevice`` has them: with ``pull = "up"`` the
input is active when the line is low, with ``"down"`` when it is high; with
``"none"``/``"floating"`` the active level is ``active_low``'s (default: active high). Setting
``active_low`` against the pull's natural level inverts the reported state. Besides the periodic
sample, ``on_change(callback)`` reports every change of state at once with a timestamp.

The driver uses gpiozero's *pin* interface only (`pibridge.drivers.gpio.InputPins`: claim the pin,
set it to input with its pull, bounce time and edges, a ``when_changed`` callback), the part
``DigitalInputDevice`` itself drives, not gpiozero's device classes: so the hardware handle
(``pin_factory=``) is any pin factory — gpiozero's lgpio factory on a Pi (built by
`pibridge.drivers.gpio.hardware_pin_factory` when none is given, closed with the driver),
gpiozero's ``MockFactory`` in tests, or `pibridge.drivers.fakes.gpio.MockInputPins`, the
simulated world's, which imports nothing of gpiozero. gpiozero's global factory is never used.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pibridge.protocol import NAME_MAX_LEN, ValueType

from .base import Driver, GpioPin, Metric, Option, OptionProblem, RetryPolicy, Sample
from .errors import BusError
from .gpio import InputPin, InputPins, hardware_pin_factory, pin_errors

log = logging.getLogger(__name__)

PULLS = ("up", "down", "none", "floating")
#: the option's pull as gpiozero's pins spell it
PIN_PULL = {"up": "up", "down": "down", "none": "floating", "floating": "floating"}
MAX_DEBOUNCE_S = 10.0
STATE_KEY = "state"
#: GPIO 2 and 3 (I2C1 SDA/SCL) carry fixed 1.8 kΩ pull-ups on every Pi: no pull-down wins there.
HARDWIRED_PULL_UP_PINS = (2, 3)
#: what True means is shown at the agent beside the value: a word or two, as in a profile's metrics
ANNOTATION_MAX_LEN = NAME_MAX_LEN

ChangeCallback = Callable[[bool, float], None]


def effective_active_low(pull: str, active_low: bool | None) -> bool:
    """Whether the reported state is True for a low line: the option, else the pull's natural level."""
    if active_low is not None:
        return active_low
    return pull == "up"


class DigitalInput(Driver):
    """One GPIO input as a bool metric (annotation configurable, e.g. "open")."""

    name = "digital_input"
    description = "GPIO digital input (a gpiozero pin factory's pin) with edge events"
    metrics = (Metric(STATE_KEY, "State", value_type=ValueType.BOOL, annotation="active"),)
    options = (
        Option("pin", GpioPin, None, "input pin (BCM)", required=True),
        Option("pull", str, "up", "internal pull resistor: up, down, none/floating", choices=PULLS),
        Option("active_low", bool, None,
               "report True when the line is low (default: yes with pull up, no otherwise)"),
        Option("debounce", float, None, "bounce time (gpiozero bounce_time), e.g. \"50ms\"",
               minimum=0.0, maximum=MAX_DEBOUNCE_S, duration=True),
        Option("annotation", str, "active", "what True means, shown as the metric's annotation"),
    )
    read_time_s = 0.0
    retry = RetryPolicy(attempts=1, spacing_s=0.0)
    simulator = "pibridge.drivers.fakes.gpio:simulate_digital_input"
    example_options: ClassVar[Mapping[str, Any]] = {"pin": 27, "annotation": "open"}

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """A pull-down cannot work against the Pi's fixed pull-ups on GPIO 2 and 3; the
        annotation is as short as a profile's metric annotation, and printable."""
        problems = []
        if config["pin"] in HARDWIRED_PULL_UP_PINS and config["pull"] == "down":
            problems.append(OptionProblem("pull", f"option pull: GPIO{config['pin']} has a fixed 1.8 kΩ "
                                          "pull-up on the Pi; pull=down cannot hold it low "
                                          "(use pull=up or none)"))
        if len(config["annotation"]) > ANNOTATION_MAX_LEN:
            problems.append(OptionProblem("annotation", f"option annotation: at most {ANNOTATION_MAX_LEN} "
                                          f"characters, not {len(config['annotation'])}"))
        elif not config["annotation"].isprintable():  # it reaches the agent and every terminal
            problems.append(OptionProblem("annotation", "option annotation: printable characters only, "
                                          f"not {config['annotation']!r}"))
        return problems

    @classmethod
    def metrics_for(cls, config: Mapping[str, Any]) -> tuple[Metric, ...]:
        """The state metric, annotated with what True means (the ``annotation`` option)."""
        return tuple(dataclasses.replace(m, annotation=config["annotation"]) for m in cls.metrics)

    def __init__(self, pin_factory: InputPins | None = None, *, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        super().__init__(**options)
        self._clock = clock
        self._callbacks: list[ChangeCallback] = []
        self._active_low = effective_active_low(self.config["pull"], self.config["active_low"])
        self._last_state: bool | None = None   # the state the last callback saw (changes only)
        self._own_factory = pin_factory is None
        self._factory: InputPins = hardware_pin_factory() if pin_factory is None else pin_factory
        self._number = self.config["pin"]
        self._pin: InputPin | None = None
        errors = pin_errors()
        try:
            self._factory.reserve_pins(self, self._number)   # as gpiozero's devices: one owner per pin
        except Exception as exc:
            self._close_factory()
            if isinstance(exc, errors):
                raise BusError(f"digital_input: cannot claim GPIO{self._number}: {exc}") from exc
            raise
        pin: InputPin | None = None
        try:
            pin = self._factory.pin(self._number)
            pin.function = "input"
            if pin.pull != PIN_PULL[self.config["pull"]]:
                pin.pull = PIN_PULL[self.config["pull"]]
            pin.bounce = self.config["debounce"]
            pin.edges = "both"
            self._last_state = self._level_means(pin.state)
            pin.when_changed = self._changed
        except Exception as exc:
            # any failure gives back what was claimed (lgpio's "GPIO busy" and RPi.GPIO's
            # RuntimeError are no gpiozero errors): a rebuild must not leak a gpiochip handle
            if pin is not None:
                try:
                    pin.close()
                except Exception:
                    log.debug("closing GPIO%s after a failed setup failed too", self._number, exc_info=True)
            self._factory.release_pins(self, self._number)
            self._close_factory()
            if isinstance(exc, errors):
                raise BusError(f"digital_input: cannot claim GPIO{self._number}: {exc}") from exc
            raise
        self._pin = pin

    @property
    def active_low(self) -> bool:
        """True when the reported state is True for a low line."""
        return self._active_low

    def _conflicts_with(self, other: object) -> bool:
        """gpiozero's reservation protocol (``Factory.reserve_pins`` asks the requester): a pin
        another device holds is never shared."""
        return True

    def _level_means(self, level: Any) -> bool:
        """The reported state for line ``level`` (True = active)."""
        return bool(level) != self._active_low

    def collect(self) -> Sample:
        """The input's current state (True = active)."""
        pin = self._pin
        if pin is None:
            raise BusError(f"digital_input: GPIO{self._number} is closed")
        try:
            return {STATE_KEY: self._level_means(pin.state)}
        except Exception as exc:  # gpiozero raises its own errors for a closed/lost pin
            raise BusError(f"digital_input: reading GPIO{self._number} failed: {exc}") from exc

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(state, epoch_seconds)`` on every change of state (from the pin
        factory's event thread). Returns a function that unregisters it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return remove

    def _changed(self, ticks: Any, level: Any) -> None:
        """The pin's ``when_changed``: an edge at line ``level``; callbacks hear of changes of
        state only (as gpiozero's ``when_activated``/``when_deactivated``)."""
        state = self._level_means(level)
        if state == self._last_state:
            return
        self._last_state = state
        if not self._callbacks:
            return
        when = self._clock()
        for callback in list(self._callbacks):
            try:
                callback(state, when)
            except Exception:  # a bad listener must not kill the factory's event thread
                log.exception("digital_input: change callback failed")

    def _close_factory(self) -> None:
        if self._own_factory:
            self._factory.close()

    def _release(self) -> None:
        self._callbacks.clear()
        pin, self._pin = self._pin, None
        if pin is not None:
            pin.when_changed = None
            self._factory.release_pins(self, self._number)
            pin.close()
        self._close_factory()
