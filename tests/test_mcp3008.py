"""MCP3008 driver through real gpiozero software SPI on MockFactory pins, against a fake chip."""

from __future__ import annotations

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.errors import BusError, ConfigurationError
from pibridge.drivers.fakes.spi import FakeMCP3008
from pibridge.drivers.mcp3008 import MCP3008, code_to_values
from pibridge.drivers.simulation import Environment


@pytest.fixture
def chip(mock_factory):
    fake = FakeMCP3008(mock_factory)
    yield fake
    fake.close()


def test_code_to_values_is_gpiozero_scaling() -> None:
    assert code_to_values(511, 3.3) == pytest.approx((1.6491939, 0.4997557))
    assert code_to_values(1023, 3.3) == (3.3, 1.0)
    with pytest.raises(ValueError):
        code_to_values(1024, 3.3)


def test_half_scale(mock_factory, chip: FakeMCP3008) -> None:
    chip.set_voltage(0, 1.65)
    with MCP3008(pin_factory=mock_factory) as adc:
        sample = check_sample(adc, adc.read())
        assert adc._device.raw_value == 511
    assert sample["fraction"] == pytest.approx(0.49976, abs=5e-6)
    assert sample["voltage"] == pytest.approx(1.649, abs=5e-4)
    assert chip.conversions == 2


def test_full_scale_and_channel_select(mock_factory, chip: FakeMCP3008) -> None:
    chip.set_voltage(5, 3.3)
    chip.set_voltage(0, 0.4)
    with MCP3008(pin_factory=mock_factory, channel=5) as adc:
        assert adc.read() == {"voltage": 3.3, "fraction": 1.0}


def test_max_voltage_reference(mock_factory) -> None:
    chip = FakeMCP3008(mock_factory, vref=5.0)
    chip.set_voltage(1, 2.5)
    with MCP3008(pin_factory=mock_factory, channel=1, max_voltage=5.0) as adc:
        assert adc.read()["voltage"] == pytest.approx(2.5, abs=5.0 / 1023)
    chip.close()


def test_differential(mock_factory, chip: FakeMCP3008) -> None:
    chip.set_voltage(2, 2.0)
    chip.set_voltage(3, 0.5)
    with MCP3008(pin_factory=mock_factory, channel=2, differential=True) as adc:
        assert adc.read()["voltage"] == pytest.approx(1.5, abs=3.3 / 1023)
    chip.set_voltage(3, 2.5)  # IN- above IN+: the chip outputs 0
    with MCP3008(pin_factory=mock_factory, channel=2, differential=True) as adc:
        assert adc._device.raw_value == 0


def test_callable_source(mock_factory, chip: FakeMCP3008) -> None:
    volts = iter([1.0, 2.0])
    chip.set_voltage(4, lambda: next(volts))
    with MCP3008(pin_factory=mock_factory, channel=4) as adc:
        first, second = adc.read()["voltage"], adc.read()["voltage"]
    assert first == pytest.approx(1.0, abs=0.004) and second == pytest.approx(2.0, abs=0.004)


def test_options_checked() -> None:
    with pytest.raises(ConfigurationError):
        MCP3008.check_options({"channel": 8})
    with pytest.raises(ConfigurationError):
        MCP3008.check_options({"max_voltage": 9})


def test_two_channels_share_the_chip_and_close_releases_pins(mock_factory, chip: FakeMCP3008) -> None:
    from gpiozero import GPIOPinInUse, OutputDevice

    chip.set_voltage(0, 1.0)
    chip.set_voltage(1, 2.0)
    first = MCP3008(pin_factory=mock_factory, channel=0)
    second = MCP3008(pin_factory=mock_factory, channel=1)  # same CE0: gpiozero shares the bus
    try:
        assert first.read()["voltage"] == pytest.approx(1.0, abs=0.004)
        first.close()
        first.close()
        assert second.read()["voltage"] == pytest.approx(2.0, abs=0.004)
        with pytest.raises(GPIOPinInUse):
            OutputDevice(8, pin_factory=mock_factory)
    finally:
        second.close()
    OutputDevice(8, pin_factory=mock_factory).close()  # CE0 released


def test_read_after_close_is_typed(mock_factory, chip: FakeMCP3008) -> None:
    adc = MCP3008(pin_factory=mock_factory)
    adc.close()
    with pytest.raises(BusError):
        adc.read()


def test_simulated(mock_factory) -> None:
    env = Environment(seed=2, noise=0.0, clock=lambda: 12 * 3600.0)
    adc = MCP3008.simulated(env)
    try:
        sample = check_sample(adc, adc.read())
        assert sample["voltage"] == pytest.approx(env.soil_volts(), abs=2 * 3.3 / 1023)
    finally:
        adc.close()


def test_two_simulated_channels(mock_factory) -> None:
    env = Environment(seed=2, noise=0.0, clock=lambda: 12 * 3600.0)
    soil = MCP3008.simulated(env, channel=0)
    other = MCP3008.simulated(env, channel=3)
    try:
        assert soil.read()["voltage"] > 1.0
        assert other.read()["voltage"] == pytest.approx(soil.read()["voltage"], abs=0.01)
    finally:
        soil.close()
        other.close()
    again = MCP3008.simulated(env)  # torn down and rebuilt cleanly
    again.close()
