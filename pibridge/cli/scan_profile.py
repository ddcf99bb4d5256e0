"""A starting profile from what ``pibridge scan`` found (``pibridge scan --profile-out FILE``):
one ``[[sensor]]`` per chip, probe or serial sensor a driver reads, with the options that find it
again (bus, address, device id, port) and an interval the driver allows, so that it passes ``pibridge check``
as written.

What a scan finds is collected in `Found`; each kind of bus adds to it (`Found.add_i2c`,
`Found.add_w1`, and `Found.add` for any other: a serial sensor that answered scan is added with
its driver and ``port``). `starting_profile` writes the TOML.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pibridge.drivers.base import Driver, default_timing
from pibridge.profile.values import format_duration

DEFAULT_INTERVAL_S = 60.0      #: a starting interval: every minute (the driver's minimum if longer)
W1_DEFAULT_ROOT = "/sys/bus/w1/devices"
#: a BMP280 answers with the BME280's driver but has no humidity sensor (the driver refuses
#: humidity on it): the profile asks for what the chip has
HUMIDITY_LESS = ("BMP280",)
FALLBACK_DRIVER = "cpu_temperature"   #: nothing found: the Pi's own temperature, to start from


@dataclass(frozen=True)
class FoundSensor:
    """One sensor to write: its name in the profile, registry driver name, options, and a
    comment saying where it was found."""

    name: str
    driver: type[Driver]
    options: dict[str, Any]
    comment: str


@dataclass
class Found:
    """What a scan found that a driver reads, in the order found."""

    sensors: list[FoundSensor] = field(default_factory=list)

    def add(self, name: str, driver: type[Driver], options: dict[str, Any], comment: str) -> None:
        """One sensor (a unique ``name``: a number is appended to a repeated one)."""
        taken = {s.name for s in self.sensors}
        unique, count = name, 1
        while unique in taken:
            count += 1
            unique = f"{name} {count}"
        self.sensors.append(FoundSensor(unique, driver, options, comment))

    def add_i2c(self, driver: type[Driver], bus: int, address: int, chip: str) -> None:
        options: dict[str, Any] = {"address": address}
        if any(o.key == "i2c_bus" for o in driver.options) and bus != _default(driver, "i2c_bus"):
            options["i2c_bus"] = bus
        has_metrics_option = any(o.key == "metrics" for o in driver.options)
        if any(chip.startswith(part) for part in HUMIDITY_LESS) and has_metrics_option:
            options["metrics"] = "temperature,pressure"
        label = chip.split(" (")[0] or driver.name
        self.add(f"{label} 0x{address:02x}", driver, options,
                 f"I2C bus {bus}, address 0x{address:02x}: {chip}")

    def add_w1(self, device_id: str, root: Path) -> None:
        from pibridge.drivers.ds18b20 import DS18B20

        options: dict[str, Any] = {"device_id": device_id}
        if str(root) != W1_DEFAULT_ROOT:
            options["w1_root"] = str(root)
        self.add(f"Probe {device_id}", DS18B20, options, f"1-Wire probe {device_id}")


def _registry_name(driver: type[Driver]) -> str:
    """The name a profile uses for ``driver``: the registry's (an installed driver's entry-point
    name, which may differ from its class's ``name``)."""
    from pibridge.drivers import registry

    for name in registry.names():
        try:
            if registry.get(name) is driver:
                return name
        except Exception:      # a broken installed driver: not this one
            continue
    return driver.name


def _default(driver: type[Driver], key: str) -> Any:
    return next((o.default for o in driver.options if o.key == key), None)


def _toml_value(driver: type[Driver], key: str, value: Any) -> str:
    option = next((o for o in driver.options if o.key == key), None)
    if isinstance(value, int) and not isinstance(value, bool) and option is not None and option.hex:
        return f"0x{value:02x}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)     # a TOML basic string


def _interval(driver: type[Driver], options: dict[str, Any]) -> str:
    try:
        timing = driver.timing_for(driver.check_options(options))
    except Exception:
        timing = default_timing(driver)
    return format_duration(max(DEFAULT_INTERVAL_S, timing.min_interval_s, timing.read_time_s))


def starting_profile(found: Found) -> str:
    """The TOML of a starting profile for ``found`` (the Pi's CPU temperature when it is empty,
    so that the profile has a sensor and passes ``pibridge check``)."""
    lines = ["# A starting profile written by `pibridge scan --profile-out`: one sensor per chip or probe",
             "# found. Name them as you want to see them at the agent, then",
             "#   pibridge check --profile THIS_FILE    every problem at once",
             "#   pibridge read --profile THIS_FILE     read every sensor once",
             "#   pibridge run --profile THIS_FILE",
             "# [agent] and [bridge] take their defaults (the agent on this Pi); `pibridge profile example`",
             "# shows every key.", ""]
    sensors = list(found.sensors)
    if not sensors:
        from pibridge.drivers import registry

        sensors = [FoundSensor("Pi CPU temperature", registry.get(FALLBACK_DRIVER), {},
                               "nothing found on I2C, 1-Wire or serial ports: the Pi's own temperature "
                               "to start from")]
    for sensor in sensors:
        lines += [f"# {sensor.comment}", "[[sensor]]",
                  f"name = {json.dumps(sensor.name, ensure_ascii=False)}",
                  f'driver = "{_registry_name(sensor.driver)}"',
                  f'interval = "{_interval(sensor.driver, sensor.options)}"']
        if sensor.options:
            lines.append("[sensor.options]")
            lines += [f"{key} = {_toml_value(sensor.driver, key, value)}"
                      for key, value in sensor.options.items()]
        lines.append("")
    return "\n".join(lines)
