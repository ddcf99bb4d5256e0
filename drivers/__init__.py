"""pibridge's sensor drivers: one module per chip, the `Driver` base class and registry, and
the fake buses (`pibridge.drivers.fakes`) that tests and ``--simulate`` use.

Importing this package touches no hardware and imports no hardware library.
"""

from .base import Driver, GpioPin, Metric, Option, RetryPolicy, Sample
from .errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)

__all__ = [
    "BadDataError", "BusError", "ConfigurationError", "DeviceNotFoundError", "Driver", "GpioPin",
    "ImplausibleValueError", "Metric", "NotReadyError", "Option", "RetryPolicy", "Sample",
    "SensorError",
]
