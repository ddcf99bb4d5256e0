"""A simulated SoC thermal zone: the kernel's ``temp`` text, made from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..cpu_temperature import CPUTemperature
    from ..simulation import SimulatedWorld

MILLIDEGREES_PER_C = 1000


def thermal_zone_text(celsius: float) -> str:
    """What ``/sys/class/thermal/thermal_zone0/temp`` holds: ``"%d\\n"`` millidegrees."""
    return f"{round(celsius * MILLIDEGREES_PER_C)}\n"


def simulate(world: SimulatedWorld, cls: type[CPUTemperature], options: dict[str, Any]) -> CPUTemperature:
    """A CPU temperature driver whose file reads give ``environment.cpu_temperature()``."""

    def read_text(path: Path) -> str:
        return thermal_zone_text(world.environment.cpu_temperature())

    return cls(read_text=read_text, **options)
