"""The Raspberry Pi's SoC temperature from the kernel's thermal zone.

``/sys/class/thermal/thermal_zone0/temp`` holds millidegrees Celsius as ``"%d\\n"``
(e.g. ``47236\\n`` = 47.236 °C). Read directly (no gpiozero: its CPUTemperature needs a pin
factory even though it has no pins, and reads the file in its constructor).

The file is read through ``read_text`` (injected: tests and the simulator give the kernel's
text); the real one reads at most `MAX_FILE_BYTES` and waits at most `READ_TIMEOUT_S`, so a
wrong ``sensor_file`` (``/dev/zero``, a FIFO) ends in one error line, not a hang.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Driver, Metric, Option, RetryPolicy, Sample
from .errors import BadDataError, BusError, ConfigurationError, DeviceNotFoundError, ImplausibleValueError
from .files import read_small_text

THERMAL_ZONE0 = "/sys/class/thermal/thermal_zone0/temp"
MILLIDEGREES_PER_C = 1000
PLAUSIBLE_C = (-40.0, 125.0)  # BCM2711/2712 junction limits with margin
MAX_FILE_BYTES = 64     #: "%d\n" millidegrees is under 10 bytes
READ_TIMEOUT_S = 1.0    #: a thermal zone answers at once
_GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_NOT_A_ZONE = frozenset({errno.EFBIG, errno.ETIMEDOUT, errno.EISDIR})


def read_thermal_zone(path: Path) -> str:
    """The text of a thermal-zone file, bounded in size and time."""
    return read_small_text(path, MAX_FILE_BYTES, READ_TIMEOUT_S)


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
    simulator = "pibridge.drivers.fakes.thermal:simulate"

    def __init__(self, read_text: Callable[[Path], str] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(self.config["sensor_file"])
        self._read_text = read_text or read_thermal_zone

    def collect(self) -> Sample:
        """One read of the thermal zone: °C."""
        try:
            text = self._read_text(self.path)
        except OSError as exc:
            if exc.errno in _GONE:
                raise DeviceNotFoundError(f"cpu_temperature: {self.path} does not exist (not a Pi?)") from exc
            if exc.errno in _NOT_A_ZONE:
                raise ConfigurationError(f"cpu_temperature: {self.path} is not a thermal zone file "
                                   f"({exc.strerror})") from exc
            raise BusError(f"cpu_temperature: reading {self.path} failed: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise BadDataError(f"cpu_temperature: {self.path} is not text") from exc
        return {"temperature": parse_thermal_zone(text)}
