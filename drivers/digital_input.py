"""A digital input (door contact, float switch, PIR) through gpiozero's ``DigitalInputDevice``.

Pull and active level follow gpiozero: with ``pull = "up"`` the input is active when the line is
low, with ``"down"`` when it is high; with ``"none"``/``"floating"`` gpiozero needs the active
level given, which ``active_low`` supplies (default: active high). Setting ``active_low``
against the pull's natural level inverts the reported state. Besides the periodic sample,
``on_change(callback)`` reports every edge at once with a timestamp.

The hardware handle is a gpiozero pin factory (``pin_factory=``): a ``MockFactory`` in tests and
``--simulate`` (the simulated world's), or, when none is given (``pibridge run`` and ``pibridge
read`` on a Pi), the driver's own, built by `pibridge.drivers.gpio.hardware_pin_factory` and
closed with the driver. gpiozero's global factory is never used.
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
from .gpio import hardware_pin_factory, missing_library

log = logging.getLogger(__name__)

PULLS = ("up", "down", "none", "floating")
PULL_UP_ARG = {"up": True, "down": False, "none": None, "floating": None}
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
    description = "GPIO digital input (gpiozero DigitalInputDevice) with edge events"
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

    def __init__(self, pin_factory: Any = None, *, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        super().__init__(**options)
        self._clock = clock
        self._callbacks: list[ChangeCallback] = []
        pull = self.config["pull"]
        self._active_low = effective_active_low(pull, self.config["active_low"])
        pull_up = PULL_UP_ARG[pull]
        # gpiozero: with a pull its active level is fixed (up → low); without, we give it.
        self._invert = pull_up is not None and self._active_low != pull_up
        active_state = None if pull_up is not None else not self._active_low
        try:
            from gpiozero import DigitalInputDevice, GPIOZeroError
        except ImportError as exc:
            raise missing_library("gpiozero", "a digital input") from exc
        self._own_factory = pin_factory is None
        self._factory = hardware_pin_factory() if pin_factory is None else pin_factory
        try:
            self._device = DigitalInputDevice(
                self.config["pin"], pull_up=pull_up, active_state=active_state,
                bounce_time=self.config["debounce"], pin_factory=self._factory)
        except GPIOZeroError as exc:
            self._close_factory()
            raise BusError(f"digital_input: cannot claim GPIO{self.config['pin']}: {exc}") from exc

    @property
    def active_low(self) -> bool:
        """True when the reported state is True for a low line."""
        return self._active_low

    def _state(self) -> bool:
        return bool(self._device.value) != self._invert

    def collect(self) -> Sample:
        """The input's current state (True = active)."""
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

    def _close_factory(self) -> None:
        if self._own_factory:
            self._factory.close()

    def _release(self) -> None:
        self._callbacks.clear()
        self._device.close()
        self._close_factory()
