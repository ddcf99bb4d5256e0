"""Driver lookup by name: the built-in drivers plus third-party ones from the entry-point group
``pibridge.drivers`` (``name = "package.module:DriverClass"``), so a separate package can add a
chip without touching pibridge. Modules are imported on lookup, never at ``import drivers``."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .base import Driver
from .errors import ConfigurationError

ENTRY_POINT_GROUP = "pibridge.drivers"

#: name -> "module:Class" of the drivers shipped with pibridge.
BUILTIN: dict[str, str] = {
    "bme280": "pibridge.drivers.bme280:BME280",
    "bh1750": "pibridge.drivers.bh1750:BH1750",
    "ds18b20": "pibridge.drivers.ds18b20:DS18B20",
    "dht22": "pibridge.drivers.dht:DHT22",
    "dht11": "pibridge.drivers.dht:DHT11",
    "mcp3008": "pibridge.drivers.mcp3008:MCP3008",
    "digital_input": "pibridge.drivers.digital_input:DigitalInput",
    "cpu_temperature": "pibridge.drivers.cpu_temperature:CPUTemperature",
}


class UnknownDriverError(ConfigurationError):
    """No driver of that name; the message lists the known ones."""


def _targets() -> dict[str, str]:
    targets = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def names() -> list[str]:
    """Every known driver name, built-in and installed, sorted."""
    return sorted(_targets())


def get(name: str) -> type[Driver]:
    """The driver class registered as ``name``; `UnknownDriverError` lists the known names."""
    targets = _targets()
    target = targets.get(name)
    if target is None:
        raise UnknownDriverError(f"unknown driver {name!r}; known drivers: {', '.join(sorted(targets))}")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise UnknownDriverError(f"driver {name!r} ({target}) is not a pibridge.drivers.Driver subclass")
    return cls
