"""The driver model: Option conversion and range errors, check_options, Metric validation,
check_sample and the close() contract."""

from __future__ import annotations

import math

import pytest

from pibridge.drivers.base import Driver, GpioPin, Metric, Option, check_sample
from pibridge.drivers.errors import ConfigurationError, SensorError
from pibridge.protocol import ValueType


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
        assert thing.gpio_pins() == (4,)
    thing.close()
    assert thing.released == 1


def test_metric_validation_and_definition() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Metric("x", "X")
    with pytest.raises(ValueError, match="exactly one"):
        Metric("x", "X", unit="SI.Pressure.PASCAL", value_type=ValueType.DOUBLE)
    with pytest.raises(ValueError, match="not an agent valueUnit"):
        Metric("x", "X", unit="SI.Pressure.HECTOPASCAL")
    lux = Metric("illuminance", "Illuminance", value_type=ValueType.DOUBLE, annotation="lx")
    assert lux.definition("m1") == {"matchingId": "m1", "name": "Illuminance", "valueType": "double",
                                    "valueAnnotation": "lx"}
    assert lux.unit_label == "double [lx]"
    pa = Metric("pressure", "Pressure", unit="SI.Pressure.PASCAL")
    assert pa.definition("m2") == {"matchingId": "m2", "name": "Pressure", "valueUnit": "SI.Pressure.PASCAL"}


def test_check_sample() -> None:
    thing = Thing(pin=4)
    assert check_sample(thing, {"t": 1.5, "n": 3}) == {"t": 1.5, "n": 3}
    with pytest.raises(SensorError, match="sample keys"):
        check_sample(thing, {"t": 1.5})
    with pytest.raises(SensorError, match="metric t has no valid value"):
        check_sample(thing, {"t": math.nan, "n": 3})


def test_base_driver_has_no_read_or_simulation() -> None:
    with pytest.raises(NotImplementedError):
        Thing(pin=4).read()
    with pytest.raises(NotImplementedError, match="no simulation"):
        Thing.simulated(None)


def test_c_div_truncates_toward_zero_like_c() -> None:
    from pibridge.drivers.intmath import c_div

    assert [c_div(7, 2), c_div(-7, 2), c_div(7, -2), c_div(-7, -2), c_div(0, -5)] == [3, -3, -3, 3, 0]
    assert c_div(-25062 * 16, 16) == -25062 and -7 // 2 == -4  # Python's // floors; C truncates
