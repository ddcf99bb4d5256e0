"""The driver model: Option conversion and range errors, check_options, Metric validation,
check_sample and the close() contract."""

from __future__ import annotations

import math

import pytest

from pibridge.drivers import (
    Driver,
    GpioPin,
    Metric,
    NoSimulationError,
    NotReadyError,
    Option,
    RetryPolicy,
    Sample,
    SimulatedWorld,
    Timing,
    ValueType,
    check_sample,
    i2c_address_option,
    read_with_retries,
)
from pibridge.drivers.base import default_timing, describe_timing
from pibridge.drivers.errors import ConfigurationError, SensorError
from pibridge.drivers.fakes import VirtualClock


@pytest.mark.parametrize("raw, expected", [("0x76", 0x76), ("118", 118), (118, 118), (3.0, 3)])
def test_int_option_accepts_hex_strings(raw, expected) -> None:
    assert Option("address", int, 0x76, "").convert(raw) == expected


@pytest.mark.parametrize("raw", ["seven", 3.5, True, None, "0x"])
def test_int_option_rejects(raw) -> None:
    with pytest.raises(ConfigurationError, match=r"option address: .* is not a valid int"):
        Option("address", int, 0x76, "").convert(raw)


def test_range_and_choices_messages() -> None:
    mtreg = Option("mtreg", int, 69, "", minimum=31, maximum=254)
    with pytest.raises(ConfigurationError, match="30 is below the minimum 31"):
        mtreg.convert("30")
    with pytest.raises(ConfigurationError, match="255 is above the maximum 254"):
        mtreg.convert(255)
    osrs = Option("osrs_p", int, 1, "", choices=(0, 1, 2, 4, 8, 16))
    with pytest.raises(ConfigurationError, match="'3' is not one of 0, 1, 2, 4, 8, 16"):
        osrs.convert("3")
    assert osrs.convert("16") == 16


@pytest.mark.parametrize("raw, expected", [("yes", True), ("Off", False), ("1", True), (False, False)])
def test_bool_option(raw, expected) -> None:
    assert Option("flag", bool, False, "").convert(raw) is expected


def test_bool_option_rejects_other_words() -> None:
    with pytest.raises(ConfigurationError, match="not a valid bool"):
        Option("flag", bool, False, "").convert("maybe")


def test_float_option_rejects_non_finite() -> None:
    opt = Option("vref", float, 3.3, "")
    assert opt.convert("5") == 5.0
    for raw in ("nan", "inf", math.inf, True):
        with pytest.raises(ConfigurationError):
            opt.convert(raw)


def test_str_option_rejects_numbers() -> None:
    with pytest.raises(ConfigurationError):
        Option("mode", str, "a", "").convert(5)


@pytest.mark.parametrize("raw, expected", [("GPIO17", 17), ("bcm4", 4), (27, 27), ("0", 0)])
def test_gpio_pin_option(raw, expected) -> None:
    pin = Option("pin", GpioPin, None, "").convert(raw)
    assert isinstance(pin, GpioPin) and pin == expected


def test_gpio_pin_out_of_range() -> None:
    with pytest.raises(ConfigurationError, match="GPIO 28 does not exist"):
        Option("pin", GpioPin, None, "").convert(28)
    assert Option("pin", GpioPin, None, "").kind_label == "GPIO pin (BCM)"


def test_unsupported_kind_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="unsupported kind"):
        Option("x", list, None, "").convert([1])


class Thing(Driver):
    name = "thing"
    metrics = (Metric("t", "T", unit="SI.Temperature.CELSIUS"),
               Metric("n", "N", value_type=ValueType.INTEGER))
    options = (
        Option("pin", GpioPin, None, "data pin", required=True),
        Option("rate", int, 5, "", minimum=1),
    )

    def __init__(self, **options):
        super().__init__(**options)
        self.released = 0

    def _release(self) -> None:
        self.released += 1


def test_check_options_unknown_key_lists_known_ones() -> None:
    expected = (r"thing: unknown option colour \(known options: pin, rate\); "
                r"unknown option size \(known options: pin, rate\)")
    with pytest.raises(ConfigurationError, match=expected):
        Thing.check_options({"pin": 4, "colour": 1, "size": 2})


def test_validate_reports_every_problem_at_once() -> None:
    config, problems = Thing.validate({"pin": 99, "rate": "fast", "colour": 1})
    assert [p.key for p in problems] == ["colour", "pin", "rate"]
    assert all(p.message for p in problems)
    config, problems = Thing.validate({"pin": 4})
    assert problems == [] and config["pin"] == 4


def test_check_options_required_and_defaults() -> None:
    with pytest.raises(ConfigurationError, match="option pin is required"):
        Thing.check_options({})
    assert Thing.check_options({"pin": "GPIO4"}) == {"pin": 4, "rate": 5}
    assert Thing.check_options({"pin": 4, "rate": None}) == {"pin": 4, "rate": 5}


def test_gpio_pins_and_close_idempotent() -> None:
    with Thing(pin=4) as thing:
        assert Thing.resources(thing.config).gpio == (4,)
    thing.close()
    assert thing.released == 1


def test_metric_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Metric("x", "X")
    with pytest.raises(ValueError, match="exactly one"):
        Metric("x", "X", unit="SI.Pressure.PASCAL", value_type=ValueType.DOUBLE)
    with pytest.raises(ValueError, match="not an agent valueUnit"):
        Metric("x", "X", unit="SI.Pressure.HECTOPASCAL")
    lux = Metric("illuminance", "Illuminance", value_type=ValueType.DOUBLE, annotation="lx")
    assert lux.unit_label == "double [lx]"
    assert not hasattr(lux, "definition")  # the wire format is the client's MetricDefinition


def test_check_sample() -> None:
    thing = Thing(pin=4)
    assert check_sample(thing, {"t": 1.5, "n": 3}) == {"t": 1.5, "n": 3}
    with pytest.raises(SensorError, match="sample keys"):
        check_sample(thing, {"t": 1.5})
    with pytest.raises(SensorError, match="metric t has no valid value"):
        check_sample(thing, {"t": math.nan, "n": 3})


def test_base_driver_has_no_read_or_simulation() -> None:
    with pytest.raises(NotImplementedError, match="collect"):
        Thing(pin=4).read(lambda s: None)
    with pytest.raises(NotImplementedError, match="collect"):
        Thing(pin=4).collect()
    with SimulatedWorld() as world, pytest.raises(NoSimulationError, match="no simulation for thing"):
        world.build(Thing, {"pin": 4})


class TwoPhase(Driver):
    """A driver with a conversion: start returns the wait, collect refuses until it passed."""

    name = "two_phase"
    metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)
    read_time_s = 0.5
    retry = RetryPolicy(attempts=2, spacing_s=0.1)

    def __init__(self, clock: VirtualClock, **options: object) -> None:
        super().__init__(**options)
        self.clock = clock
        self.ready_at: float | None = None
        self.starts = 0

    def start(self) -> float:
        self.starts += 1
        self.ready_at = self.clock() + self.timing.read_time_s
        return self.timing.read_time_s

    def collect(self) -> Sample:
        if self.ready_at is None or self.clock() < self.ready_at:
            raise NotReadyError("two_phase: converting")
        return {"v": 1.0}


class SinglePhase(Driver):
    """A driver that implements only read() (older third-party style)."""

    name = "single_phase"
    metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)

    def read(self, sleep: object = None) -> Sample:  # type: ignore[override]
        return {"v": 2.0}


def test_blocking_read_is_start_caller_sleep_collect() -> None:
    clock = VirtualClock()
    driver = TwoPhase(clock)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.sleep(seconds)

    assert driver.read(sleep) == {"v": 1.0}
    assert slept == [0.5] and driver.starts == 1
    with pytest.raises(NotReadyError):  # a caller that does not wait gets what the chip gives
        driver.read(lambda s: None)


def test_read_with_retries_uses_the_instance_timing_and_the_callers_sleep() -> None:
    clock = VirtualClock()
    driver = TwoPhase(clock)
    driver.timing = Timing(0.5, 0.3, RetryPolicy(attempts=1, spacing_s=0.1))
    attempts: list[float] = []

    def impatient(seconds: float) -> None:  # waits too little for the conversion the first time
        attempts.append(seconds)
        clock.sleep(seconds if len(attempts) > 1 else 0.0)

    assert read_with_retries(driver, impatient) == {"v": 1.0}
    assert attempts == [0.5, 0.3, 0.5]  # conversion, retry spacing max(0.1, 0.3), conversion


def test_single_phase_driver_defaults() -> None:
    driver = SinglePhase()
    assert driver.start() == 0.0
    assert driver.collect() == {"v": 2.0}
    assert read_with_retries(driver, lambda s: None) == {"v": 2.0}


def test_timing_for_defaults_and_describe() -> None:
    assert Thing.timing_for({"pin": 4, "rate": 5}) == Timing(0.0, 0.0, RetryPolicy())
    assert default_timing(TwoPhase) == Timing(0.5, 0.0, RetryPolicy(attempts=2, spacing_s=0.1))
    expected = "read time 500 ms, min interval 0 s, retries 2 x 0.1 s"
    assert describe_timing(default_timing(TwoPhase)) == expected


def test_hex_option_messages() -> None:
    address = i2c_address_option((0x76, 0x77), "I2C address")
    with pytest.raises(ConfigurationError, match=r"option address: 0x78 is not one of 0x76, 0x77"):
        address.convert("0x78")
    with pytest.raises(ConfigurationError, match=r"option address: 0x78 is not one of 0x76, 0x77"):
        address.convert(120)
    wide = Option("address", int, 0x40, "", minimum=0x08, maximum=0x77, hex=True)
    with pytest.raises(ConfigurationError, match=r"0x78 is above the maximum 0x77"):
        wide.convert(0x78)


def test_one_import_for_driver_authors() -> None:
    import pibridge.drivers as api
    import pibridge.drivers.fakes as fakes

    for name in ("Driver", "Metric", "Option", "GpioPin", "RetryPolicy", "ValueType", "I2CDriver", "Timing",
                 "Sample", "Resources", "OptionProblem", "SensorError", "NotReadyError", "BusError",
                 "DeviceNotFoundError", "BadDataError", "ImplausibleValueError", "ConfigurationError",
                 "errors", "ChipId", "i2c_address_option", "i2c_bus_option", "crc8_maxim", "crc8_sensirion",
                 "SimulatedWorld", "Environment", "NoSimulationError", "read_with_retries"):
        assert getattr(api, name) is not None, name
    assert api.ValueType is ValueType
    for name in ("FakeSMBus", "FakeI2CDevice", "nack_error", "VirtualClock", "WallClock", "FakeW1Bus",
                 "FakeProbe", "FakeDHT", "FakeMCP3008"):
        assert getattr(fakes, name) is not None, name


def test_c_div_truncates_toward_zero_like_c() -> None:
    from pibridge.drivers.intmath import c_div

    assert [c_div(7, 2), c_div(-7, 2), c_div(7, -2), c_div(-7, -2), c_div(0, -5)] == [3, -3, -3, 3, 0]
    assert c_div(-25062 * 16, 16) == -25062 and -7 // 2 == -4  # Python's // floors; C truncates
