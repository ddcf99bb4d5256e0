"""MCP3008 driver: its own SPI frames through a bit-banged SPI master on MockFactory pins (no
gpiozero global factory, no environment variable), against a fake chip."""

from __future__ import annotations

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.errors import BusError, ConfigurationError
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.softspi import SoftwareSPIBus
from pibridge.drivers.fakes.spi import FakeMCP3008
from pibridge.drivers.mcp3008 import MCP3008, code_to_values, command_frame, parse_reply
from pibridge.drivers.simulation import Environment, SimulatedWorld


@pytest.fixture
def chip(mock_factory):
    fake = FakeMCP3008(mock_factory)  # before the master claims the pins: it owns the clock pin
    yield fake
    fake.close()


@pytest.fixture
def spi_bus(mock_factory, chip):
    bus = SoftwareSPIBus(mock_factory)
    yield bus
    bus.close()


def test_code_to_values_is_gpiozero_scaling() -> None:
    assert code_to_values(511, 3.3) == pytest.approx((1.6491939, 0.4997557))
    assert code_to_values(1023, 3.3) == (3.3, 1.0)
    with pytest.raises(ValueError):
        code_to_values(1024, 3.3)


def test_frames() -> None:
    assert command_frame(0, False) == [0b0000_0001, 0b1000_0000, 0]
    assert command_frame(5, True) == [0b0000_0001, 0b0101_0000, 0]
    assert parse_reply([0xFF, 0b1111_1011, 0xFF]) == 0b11_1111_1111
    assert parse_reply([0x00, 0b0000_0001, 0xFF]) == 511
    with pytest.raises(ValueError):
        parse_reply([0, 0])


def test_half_scale(spi_bus: SoftwareSPIBus, chip: FakeMCP3008) -> None:
    chip.set_voltage(0, 1.65)
    with MCP3008(spi=spi_bus.device(8)) as adc:
        sample = check_sample(adc, adc.read())
    assert sample["fraction"] == pytest.approx(0.49976, abs=5e-6)
    assert sample["voltage"] == pytest.approx(1.649, abs=5e-4)
    assert chip.conversions == 1


def test_full_scale_and_channel_select(spi_bus: SoftwareSPIBus, chip: FakeMCP3008) -> None:
    chip.set_voltage(5, 3.3)
    chip.set_voltage(0, 0.4)
    with MCP3008(spi=spi_bus.device(8), channel=5) as adc:
        assert adc.read() == {"voltage": 3.3, "fraction": 1.0}


def test_max_voltage_reference(mock_factory) -> None:
    chip = FakeMCP3008(mock_factory, vref=5.0)
    bus = SoftwareSPIBus(mock_factory)
    chip.set_voltage(1, 2.5)
    with MCP3008(spi=bus.device(8), channel=1, max_voltage=5.0) as adc:
        assert adc.read()["voltage"] == pytest.approx(2.5, abs=5.0 / 1023)
    bus.close()
    chip.close()


def test_differential(spi_bus: SoftwareSPIBus, chip: FakeMCP3008) -> None:
    chip.set_voltage(2, 2.0)
    chip.set_voltage(3, 0.5)
    spi = spi_bus.device(8)
    with MCP3008(spi=spi, channel=2, differential=True) as adc:
        assert adc.read()["voltage"] == pytest.approx(1.5, abs=3.3 / 1023)
        chip.set_voltage(3, 2.5)  # IN- above IN+: the chip outputs 0
        assert adc.read()["fraction"] == pytest.approx(code_to_values(0, 3.3)[1])
    spi.close()


def test_callable_source(spi_bus: SoftwareSPIBus, chip: FakeMCP3008) -> None:
    volts = iter([1.0, 2.0])
    chip.set_voltage(4, lambda: next(volts))
    with MCP3008(spi=spi_bus.device(8), channel=4) as adc:
        first, second = adc.read()["voltage"], adc.read()["voltage"]
    assert first == pytest.approx(1.0, abs=0.004) and second == pytest.approx(2.0, abs=0.004)


def test_options_and_resources() -> None:
    with pytest.raises(ConfigurationError):
        MCP3008.check_options({"channel": 8})
    with pytest.raises(ConfigurationError):
        MCP3008.check_options({"max_voltage": 9})
    assert MCP3008.resources(MCP3008.check_options({"spi_device": 1})).spi == ((0, 1),)
    assert MCP3008.resources(MCP3008.check_options({})).gpio == ()


def test_two_chip_selects_share_the_bus_and_close_releases_select(mock_factory) -> None:
    from gpiozero import GPIOPinInUse, OutputDevice

    ce0, ce1 = FakeMCP3008(mock_factory), FakeMCP3008(mock_factory, select_pin=7)
    ce0.set_voltage(0, 1.0)
    ce1.set_voltage(0, 2.0)
    bus = SoftwareSPIBus(mock_factory)
    first, second = MCP3008(spi=bus.device(8)), MCP3008(spi=bus.device(7), spi_device=1)
    try:
        assert first.read()["voltage"] == pytest.approx(1.0, abs=0.004)
        assert second.read()["voltage"] == pytest.approx(2.0, abs=0.004)
        with pytest.raises(GPIOPinInUse):
            OutputDevice(8, pin_factory=mock_factory)
    finally:
        first.close()
        second.close()
        bus.close()
        ce0.close()
        ce1.close()


def test_driver_never_closes_a_handed_interface(spi_bus: SoftwareSPIBus, chip: FakeMCP3008) -> None:
    spi = spi_bus.device(8)
    MCP3008(spi=spi).close()
    assert MCP3008(spi=spi).read()["voltage"] == pytest.approx(code_to_values(0, 3.3)[0])  # still usable
    spi.close()


def test_transfer_failure_is_typed(spi_bus: SoftwareSPIBus, chip: FakeMCP3008) -> None:
    spi = spi_bus.device(8)
    adc = MCP3008(spi=spi)
    spi.close()
    with pytest.raises(BusError, match="SPI transfer failed"):
        adc.read()


def test_real_hardware_off_a_pi_is_one_clear_error() -> None:
    """No factory given: the driver builds the machine's own (lgpio, from the pi extra) and
    never falls back to gpiozero's global default."""
    with pytest.raises(ConfigurationError, match=r"pibridge\[pi\]|Raspberry Pi"):
        MCP3008()


def test_simulated_world() -> None:
    env = Environment(seed=2, noise=0.0, clock=lambda: 12 * 3600.0)
    with SimulatedWorld(env, clock=VirtualClock()) as world:
        adc = world.build("mcp3008")
        sample = check_sample(adc, adc.read())
        assert sample["voltage"] == pytest.approx(env.soil_volts(), abs=2 * 3.3 / 1023)


def test_two_simulated_channels_and_two_worlds() -> None:
    """Two channels share the world's one chip; a second world in the same process has its own
    mock pins (gpiozero's software SPI would have routed it to the first world's chip)."""
    env = Environment(seed=2, noise=0.0, clock=lambda: 12 * 3600.0)
    with SimulatedWorld(env) as world, SimulatedWorld(env) as other_world:
        soil = world.build("mcp3008", {"channel": 0})
        other = world.build("mcp3008", {"channel": 3})
        assert soil.read()["voltage"] > 1.0
        assert other.read()["voltage"] == pytest.approx(soil.read()["voltage"], abs=0.01)
        elsewhere = other_world.build("mcp3008", {"channel": 0, "max_voltage": 5.0})
        assert elsewhere.read()["voltage"] == pytest.approx(env.soil_volts(), abs=2 * 5.0 / 1023)
        with pytest.raises(ConfigurationError, match="VREF"):
            world.build("mcp3008", {"channel": 1, "max_voltage": 5.0})
    from gpiozero import Device

    assert Device.pin_factory is None


# -- the frame-level chip (what --simulate gives the driver) ---------------------------------------
def test_frame_chip_answers_the_driver_like_the_datasheet() -> None:
    from pibridge.drivers.fakes.spi import MCP3008Chip

    chip = MCP3008Chip()
    chip.set_voltage(0, 1.65)
    chip.set_voltage(5, 3.3)
    assert chip.transfer(command_frame(0, False)) == [0x00, 0b0000_0001, 0xFF]  # 511: null bit, R9 R8 = 0 1
    assert parse_reply(chip.transfer(command_frame(5, False))) == 1023
    assert MCP3008(spi=chip).read()["fraction"] == pytest.approx(0.49976, abs=5e-6)
    assert chip.conversions == 3
    chip.set_voltage(2, 2.0)
    chip.set_voltage(3, 2.5)  # IN- above IN+: 0
    assert parse_reply(chip.transfer(command_frame(2, True))) == 0
    with pytest.raises(ValueError, match="8 bits"):
        chip.transfer([0x100])
    chip.close()
    with pytest.raises(BusError, match="SPI transfer failed"):
        MCP3008(spi=chip).read()


def test_frame_chip_and_pin_chip_answer_every_frame_alike(mock_factory) -> None:
    """Any frame (leading zeros, two conversions in one transaction, frames cut short, noise
    after the reply): the frame-level chip answers what the bit-by-bit chip on mock pins does."""
    import random

    from pibridge.drivers.fakes.spi import MCP3008Chip

    rng = random.Random(17)
    pins = FakeMCP3008(mock_factory)
    bus = SoftwareSPIBus(mock_factory)
    frames = MCP3008Chip()
    volts = [rng.uniform(-0.2, 3.5) for _ in range(8)]
    for channel, v in enumerate(volts):
        pins.set_voltage(channel, v)
        frames.set_voltage(channel, v)
    spi = bus.device(8)
    try:
        cases = [command_frame(c, d) for c in range(8) for d in (False, True)]
        cases += [[0, 0, 0b0000_0001, 0b1010_0000, 0, 0],  # leading zeros
                  [0b0000_0001, 0b1000_0000, 0, 0b0000_0001, 0b1110_0000, 0],  # two conversions
                  [0b1100_0000], [], [0xFF, 0xFF, 0xFF, 0xFF]]
        cases += [[rng.randrange(256) for _ in range(rng.randrange(1, 7))] for _ in range(300)]
        for frame in cases:
            assert frames.transfer(frame) == spi.transfer(list(frame)), frame
        assert frames.conversions == pins.conversions > 300
    finally:
        spi.close()
        bus.close()
        pins.close()


def test_simulated_mcp3008_needs_no_gpiozero() -> None:
    """--simulate answers MCP3008 frames without pins: building and reading one imports no gpiozero."""
    import subprocess
    import sys

    code = ("import sys\nfrom pibridge.drivers.simulation import SimulatedWorld\n"
            "with SimulatedWorld() as world:\n"
            "    world.build('mcp3008', {'channel': 3}).read()\n"
            "print('gpiozero' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
