"""The GPIO side of drivers built on gpiozero: the real pin factory, built explicitly.

Drivers take a gpiozero pin factory as their hardware handle (``pin_factory=``; an input needs
only the pin interface `InputPins`, which pibridge's mock input pins also have); gpiozero's
process-wide ``Device.pin_factory`` is never used or set, so a simulated device (a
``MockFactory``) and a real one can live in the same process. Without an injected factory a
driver calls `hardware_pin_factory` and owns what it gets.

Off a Pi, gpiozero's own default machinery prints one ``PinFactoryFallback`` warning per factory
it tries before failing; this module tries only what the user asked for (lgpio, which drives
every Pi model, or the factory named in ``GPIOZERO_PIN_FACTORY``) with warnings silenced, and
turns the failure into one line.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ConfigurationError, DeviceNotFoundError

GPIOZERO_FACTORY_ENV = "GPIOZERO_PIN_FACTORY"


class PinClaimError(Exception):
    """A pin factory of pibridge's own (`pibridge.drivers.fakes.gpio.MockInputPins`) cannot give
    the pin as asked (in use, a setting it does not have); gpiozero's raise ``GPIOZeroError``."""


class InputPin(Protocol):
    """The part of gpiozero's ``Pin`` an input driver uses (gpiozero's pins have it all)."""

    function: str     # "input"
    pull: str         # "up", "down", "floating"
    bounce: float | None
    edges: str        # "both", "rising", "falling", "none"
    when_changed: Callable[[Any, Any], None] | None   # (ticks, state), on the factory's thread

    @property
    def state(self) -> Any: ...

    def close(self) -> None: ...


class InputPins(Protocol):
    """The part of gpiozero's pin ``Factory`` an input driver uses: gpiozero's own factories
    (lgpio's on a Pi, its ``MockFactory``) and `pibridge.drivers.fakes.gpio.MockInputPins`."""

    def pin(self, spec: Any) -> Any: ...

    def reserve_pins(self, requester: Any, *specs: Any) -> None: ...

    def release_pins(self, requester: Any, *specs: Any) -> None: ...

    def close(self) -> None: ...


def pin_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a pin factory raises for a pin it cannot give or set: ours, and gpiozero's
    when it is loaded (a gpiozero factory in use means it is: never imported just for this)."""
    gpiozero = sys.modules.get("gpiozero")
    error = getattr(gpiozero, "GPIOZeroError", None)
    return (PinClaimError, error) if isinstance(error, type) else (PinClaimError,)
GPIOZERO_FACTORY_GROUP = "gpiozero_pin_factories"


def missing_library(library: str, what: str, extra: str = "pi") -> ConfigurationError:
    """The one line for a hardware library that is not installed, naming the extra it comes with
    (``pi``: lgpio; ``dht``: the DHT library and its Blinka tree)."""
    return ConfigurationError(f"{what} needs the {library} library, which is not installed: "
                              f"pip install 'pibridge[{extra}]' (off a Raspberry Pi, use --simulate)")


def hardware_pin_factory() -> Any:
    """A new gpiozero pin factory for this machine's GPIO: the one ``GPIOZERO_PIN_FACTORY`` names,
    else lgpio's. `ConfigurationError` when the library is missing, `DeviceNotFoundError` when
    there is no GPIO chip to open (not a Raspberry Pi). The caller closes it."""
    chosen = os.environ.get(GPIOZERO_FACTORY_ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if chosen:
                from importlib.metadata import entry_points  # here: it pulls in email, csv…

                matches = [ep for ep in entry_points(group=GPIOZERO_FACTORY_GROUP)
                           if ep.name in (chosen, chosen.lower())]
                if not matches:
                    raise ConfigurationError(f"{GPIOZERO_FACTORY_ENV}={chosen}: gpiozero has no such "
                                             "pin factory")
                return matches[0].load()()
            try:
                from gpiozero.pins.lgpio import LGPIOFactory
            except ImportError as exc:
                raise missing_library("lgpio", "GPIO access") from exc
            return LGPIOFactory()
        except ConfigurationError:
            raise
        except ImportError as exc:
            raise missing_library(str(exc.name or exc), "GPIO access") from exc
        except Exception as exc:  # lgpio: "can not open gpiochip", gpiozero: unknown Pi revision …
            raise DeviceNotFoundError(f"no Raspberry Pi GPIO on this machine ({exc}); "
                                      "use --simulate off a Pi") from exc
