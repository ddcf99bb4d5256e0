"""The typed errors a driver raises. A driver never raises a bare exception nor returns None/NaN.

``retryable`` tells the caller (scheduler, ``pibridge read``) whether another attempt within the
same sample, spaced by the driver's retry policy, has a chance: a CRC error does, a missing
device does not.
"""

from __future__ import annotations


class SensorError(Exception):
    """Base of every error a driver's ``read()`` or constructor raises."""

    retryable = True


class DeviceNotFoundError(SensorError):
    """Nothing answers at the address / path, or it is another chip than the driver expects."""

    retryable = False


class BusError(SensorError):
    """The bus transfer itself failed (I2C errno 121 from a chip that answered before, EIO, a GPIO
    that cannot be claimed). A NACK from a chip never seen is `DeviceNotFoundError`."""


class BadDataError(SensorError):
    """Bytes arrived but do not hold together: CRC or checksum mismatch, empty or torn read."""


class ImplausibleValueError(SensorError):
    """A well-formed reading that cannot be physical (power-on 85 °C, RH > 100 %, clone artefacts)."""


class NotReadyError(SensorError):
    """The sensor has no fresh measurement yet (conversion running, spacing not elapsed, skipped
    channel); asking again later is the fix."""


class ConfigurationError(SensorError):
    """Options out of range or a metric the detected chip does not have; raised before any I/O
    where possible, and never retryable."""

    retryable = False
