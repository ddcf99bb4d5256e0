"""pibridge's sensor drivers: one module per chip, the `Driver` base class and registry, and
the fake hardware (`pibridge.drivers.fakes`) that tests and ``--simulate`` use.

A driver author imports everything from here::

    from pibridge.drivers import Driver, I2CDriver, Metric, Option, GpioPin, RetryPolicy, Timing, \\
        ValueType, Sample, NotReadyError, BusError, ...

Importing this package touches no hardware and imports no hardware library and no chip module.
"""

from pibridge.protocol import ValueType

from . import errors
from .base import (
    I2C_BUS_PINS,
    SPI_BUS_PINS,
    W1_DEFAULT_GPIO,
    ChipInput,
    CollectAgain,
    Driver,
    Duration,
    GpioPin,
    Metric,
    Option,
    OptionProblem,
    Resources,
    RetryPolicy,
    Sample,
    Timing,
    Value,
    check_sample,
    read_once,
    read_with_retries,
)
from .crc import crc8_maxim, crc8_sensirion
from .errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from .i2c import ChipId, CommandId, I2CDriver, RegisterSignature, i2c_address_option, i2c_bus_option
from .simulation import Environment, NoSimulationError, SimulatedWorld

__all__ = [
    "I2C_BUS_PINS", "SPI_BUS_PINS", "W1_DEFAULT_GPIO", "BadDataError", "BusError", "ChipId", "ChipInput",
    "CollectAgain", "CommandId", "ConfigurationError", "DeviceNotFoundError", "Driver", "Duration",
    "Environment", "GpioPin", "I2CDriver",
    "ImplausibleValueError", "Metric", "NoSimulationError", "NotReadyError", "Option", "OptionProblem",
    "RegisterSignature", "Resources", "RetryPolicy", "Sample", "SensorError", "SimulatedWorld", "Timing",
    "Value", "ValueType",
    "check_sample", "crc8_maxim", "crc8_sensirion", "errors", "i2c_address_option", "i2c_bus_option",
    "read_once", "read_with_retries",
]
