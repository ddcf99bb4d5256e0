"""The GPIO side of drivers built on gpiozero: the real pin factory, built explicitly.

Drivers take a gpiozero pin factory as their hardware handle (``pin_factory=``); gpiozero's
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
import warnings
from typing import Any

from .errors import ConfigurationError, DeviceNotFoundError

GPIOZERO_FACTORY_ENV = "GPIOZERO_PIN_FACTORY"
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
