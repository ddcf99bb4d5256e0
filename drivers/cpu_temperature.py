"""The Raspberry Pi's SoC temperature from the kernel's thermal zone.

``/sys/class/thermal/thermal_zone0/temp`` holds millidegrees Celsius as ``"%d\\n"``
(e.g. ``47236\\n`` = 47.236 °C). Read directly (no gpiozero: its CPUTemperature needs a pin
factory even though it has no pins, and reads the file in its constructor).
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Driver, Metric, Option, RetryPolicy, Sample
from .errors import BadDataError, BusError, DeviceNotFoundError, ImplausibleValueError

THERMAL_ZONE0 = "/sys/class/thermal/thermal_zone0/temp"
MILLIDEGREES_PER_C = 1000
PLAUSIBLE_C = (-40.0, 125.0)  # BCM2711/2712 junction limits with margin
_GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})


def parse_thermal_zone(text: str) -> float:
    """°C from a thermal-zone ``temp`` file (millidegrees); `BadDataError` / `ImplausibleValueError`."""
    stripped = text.strip()
    if not stripped:
        raise BadDataError("empty thermal zone read")
    try:
        milli = int(stripped, 10)
    except ValueError:
        raise BadDataError(f"thermal zone holds {stripped[:40]!r}, not millidegrees") from None
    celsius = milli / MILLIDEGREES_PER_C
    if not PLAUSIBLE_C[0] <= celsius <= PLAUSIBLE_C[1]:
        raise ImplausibleValueError(f"SoC temperature {celsius} °C outside {PLAUSIBLE_C}")
    return celsius


class CPUTemperature(Driver):
    """SoC temperature in °C."""

    name = "cpu_temperature"
    description = "Raspberry Pi SoC temperature (thermal_zone0)"
    metrics = (Metric("temperature", "CPU temperature", unit="SI.Temperature.CELSIUS"),)
    options = (Option("sensor_file", str, THERMAL_ZONE0, "thermal zone file (millidegrees)"),)
    read_time_s = 0.001
    retry = RetryPolicy(attempts=1, spacing_s=0.1)

    def __init__(self, read_text: Callable[[Path], str] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(self.config["sensor_file"])
        self._read_text = read_text or (lambda p: p.read_text(encoding="ascii"))
        self._before_read: Callable[[], None] | None = None
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None

    def read(self) -> Sample:
        """One read of the thermal zone: °C."""
        if self._before_read is not None:
            self._before_read()
        try:
            text = self._read_text(self.path)
        except OSError as exc:
            if exc.errno in _GONE:
                raise DeviceNotFoundError(f"cpu_temperature: {self.path} does not exist (not a Pi?)") from exc
            raise BusError(f"cpu_temperature: reading {self.path} failed: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise BadDataError(f"cpu_temperature: {self.path} is not text") from exc
        return {"temperature": parse_thermal_zone(text)}

    def _release(self) -> None:
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    @classmethod
    def simulated(cls, environment: Any, **options: Any) -> CPUTemperature:
        """A temp file rewritten with ``environment.cpu_temperature()`` in the kernel's format
        before each read."""
        owned = tempfile.TemporaryDirectory(prefix="pibridge-thermal-")
        path = Path(owned.name) / "temp"
        options["sensor_file"] = str(path)

        def update() -> None:
            path.write_text(f"{round(environment.cpu_temperature() * MILLIDEGREES_PER_C)}\n")

        update()
        driver = cls(**options)
        driver._before_read = update
        driver._owned_dir = owned
        return driver
