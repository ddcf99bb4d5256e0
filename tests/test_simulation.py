"""The simulated world and the environment's timeline, the I2C transfer helpers, the CRC-8
helpers, and every built-in driver's hardware-free checks (resources, cross-option rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pibridge.drivers import (
    BusError,
    ChipId,
    DeviceNotFoundError,
    Driver,
    Environment,
    I2CDriver,
    Metric,
    NoSimulationError,
    NotReadyError,
    Sample,
    SimulatedWorld,
    crc8_maxim,
    crc8_sensirion,
    i2c_address_option,
    i2c_bus_option,
    registry,
)
from pibridge.drivers.fakes import FakeI2CDevice, FakeSMBus, VirtualClock, nack_error
from pibridge.drivers.simulation import simulator_for


# -- CRC-8 ---------------------------------------------------------------------------------------
def test_crc8_check_values() -> None:
    assert crc8_maxim(b"123456789") == 0xA1  # CRC-8/MAXIM-DOW check value
    assert crc8_sensirion(b"123456789") == 0xF7  # CRC-8/NRSC-5 (0x31, init 0xFF) check value
    assert crc8_sensirion(b"\xbe\xef") == 0x92  # Sensirion datasheet example
    assert crc8_maxim(bytes.fromhex("3f004b467fff0110")) == 0x47
    assert crc8_maxim(b"") == 0 and crc8_sensirion(b"") == 0xFF


# -- I2C helpers ---------------------------------------------------------------------------------
class Busy(FakeI2CDevice):
    """Answers a command, then NACKs reads for ``busy_reads`` tries (a converting chip)."""

    def __init__(self) -> None:
        super().__init__()
        self.busy_reads = 0
        self.registers = {0x0F: 0x5A}
        self.pointer = 0

    def i2c_write(self, data: bytes) -> None:
        self.pointer = data[0]
        if data[0] == 0xAC:
            self.busy_reads = 1

    def i2c_read(self, length: int) -> bytes:
        if self.busy_reads:
            self.busy_reads -= 1
            raise nack_error()
        return bytes([self.registers.get(self.pointer, 0)]) * length


class Chip(I2CDriver):
    name = "chip"
    metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)
    options = (i2c_address_option((0x38, 0x39), "address"), i2c_bus_option())
    chip_id = ChipId(0x0F, {0x5A: "CHIP"})

    def collect(self) -> Sample:
        return {"v": float(self.read_bytes(1)[0])}


def test_helpers_map_errors_like_the_bus() -> None:
    bus = FakeSMBus(1)
    with pytest.raises(DeviceNotFoundError, match="chip at 0x38: nothing answers"):
        Chip(bus=bus).read_register(0x0F)  # never seen: absent
    device = bus.attach(0x38, Busy())
    driver = Chip(bus=bus)
    assert driver.read_register(0x0F) == 0x5A
    driver.write_byte(0xAC)
    with pytest.raises(NotReadyError, match="refused the read after a command"):
        driver.read_bytes(1)  # a refused plain read right after a command: still converting
    assert driver.read_bytes(1) == b"\x00"
    device.fail_next(1)
    with pytest.raises(BusError, match="EREMOTEIO") as info:
        driver.read_registers(0x0F, 2)  # seen before, no command pending: a bus error
    assert info.value.retryable
    driver.write_bytes(b"\x01\x02")
    driver.write_register(0x10, 0x20)
    assert [t[0] for t in list(bus.transfers)[-2:]] == ["i2c_rdwr.write", "write_byte_data"]


def test_i2c_declarations() -> None:
    assert Chip.i2c_addresses() == (0x38, 0x39)
    assert Chip.chip_id is not None and Chip.chip_id.name(0x5A) == "CHIP" and Chip.chip_id.name(1) is None
    assert Chip.resources(Chip.check_options({"address": "0x39", "i2c_bus": 3})).i2c == ((3, 0x39),)
    with pytest.raises(Exception, match=r"0x3a is not one of 0x38, 0x39"):
        Chip.check_options({"address": 0x3A})


# -- every built-in driver: hardware-free checks ---------------------------------------------------
RESOURCES = {
    "bme280": ({"address": "0x77"}, {"i2c": ((1, 0x77),)}),
    "bh1750": ({"i2c_bus": 0}, {"i2c": ((0, 0x23),)}),
    "ds18b20": ({"device_id": "28-000005ABB69D"}, {"w1": ("28-000005abb69d",)}),
    "dht22": ({"pin": "GPIO4"}, {"gpio": (4,)}),
    "dht11": ({"pin": 22}, {"gpio": (22,)}),
    "digital_input": ({"pin": 17}, {"gpio": (17,)}),
    "mcp3008": ({"spi_device": 1}, {"spi": ((0, 1),)}),
    "cpu_temperature": ({}, {}),
    "sht4x": ({"address": 0x46}, {"i2c": ((1, 0x46),)}),
    "sht3x": ({"i2c_bus": 3}, {"i2c": ((3, 0x44),)}),
    "aht20": ({}, {"i2c": ((1, 0x38),)}),
    "veml7700": ({"gain": "auto"}, {"i2c": ((1, 0x10),)}),
    "ads1115": ({"channel": 3}, {"i2c": ((1, 0x48),)}),
    "ads1015": ({"address": "0x4b", "differential": "0-1"}, {"i2c": ((1, 0x4B),)}),
    "ina219": ({"address": "0x45", "i2c_bus": 3}, {"i2c": ((3, 0x45),)}),
    "scd4x": ({}, {"i2c": ((1, 0x62),)}),
    "scd30": ({"i2c_bus": 3}, {"i2c": ((3, 0x61),)}),
    "max31865": ({"spi_device": 1}, {"spi": ((0, 1),)}),
    "pulse_counter": ({"pin": 6, "per_pulse": 0.2794, "unit": "mm"}, {"gpio": (6,)}),
    "mhz19": ({}, {"serial": ("/dev/serial0",)}),
    "pms5003": ({"port": "/dev/ttyUSB0", "set_pin": 27}, {"gpio": (27,), "serial": ("/dev/ttyUSB0",)}),
}


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_resources_of_every_builtin_driver(name: str) -> None:
    options, claimed = RESOURCES[name]
    cls = registry.get(name)
    resources = cls.resources(cls.check_options(options))
    for field in ("gpio", "i2c", "spi", "w1", "serial"):
        assert getattr(resources, field) == claimed.get(field, ()), field


def test_the_table_covers_every_builtin_driver() -> None:
    assert set(RESOURCES) == set(registry.builtin())


@pytest.mark.parametrize("name, options, key", [
    ("bme280", {"metrics": "humidity", "osrs_h": 0}, "osrs_h"),
    ("bme280", {"metrics": "colour"}, "metrics"),
    ("ds18b20", {"device_id": "29-000005abb69d"}, "device_id"),
    ("digital_input", {"pin": 3, "pull": "down"}, "pull"),
    ("bh1750", {"address": 0x24}, "address"),
    ("dht22", {}, "pin"),
    ("aht20", {"address": 0x39, "variant": "aht20"}, "variant"),
])
def test_cross_option_checks_without_hardware(name: str, options: dict, key: str) -> None:
    _config, problems = registry.get(name).validate(options)
    assert [p.key for p in problems] == [key]


def test_every_builtin_driver_has_a_simulator_outside_its_module() -> None:
    for name in registry.builtin():
        cls = registry.get(name)
        assert cls.simulator.startswith("pibridge.drivers.fakes."), name
        assert callable(simulator_for(cls))


def test_no_driver_module_imports_a_fake() -> None:
    """Importing every driver module (registry discovery) loads no fake and no gpiozero."""
    code = ("import sys\nfrom pibridge.drivers import registry\nregistry.builtin()\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.startswith('pibridge.drivers.fakes') or m == 'gpiozero'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_fakes_frame_sensirion_words_with_one_crc_of_their_own() -> None:
    """Every Sensirion-style fake (SHT3x, SHT4x, SCD4x, SCD30, AHT20) packs its words with
    `fakes.sensirion` (one CRC, written apart from the drivers' so that tests compare two
    implementations): no fake imports the drivers' CRC or word checks, none keeps its own copy."""
    import random

    from pibridge.drivers.crc import crc8_sensirion
    from pibridge.drivers.fakes import sensirion as fake_sensirion

    fakes = Path(fake_sensirion.__file__).parent
    for name in ("sht3x", "sht4x", "scd4x", "scd30", "aht20"):
        source = (fakes / f"{name}.py").read_text()
        assert "from .sensirion import" in source, name
        assert "crc8_sensirion" not in source and "from ..crc" not in source, name
        assert "from ..sensirion" not in source, name
        assert "def _crc" not in source and "0x31" not in source, name
    rng = random.Random(31)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 7)))
        assert fake_sensirion.crc8(data) == crc8_sensirion(data)


# -- the world -----------------------------------------------------------------------------------
def test_world_shares_fakes_and_closes_everything() -> None:
    clock = VirtualClock()
    world = SimulatedWorld(Environment(seed=1), clock=clock)
    bme = world.build("bme280")
    lux = world.build("bh1750")
    assert world.i2c_bus(1).devices.keys() == {0x76, 0x23}  # one fake bus for both chips
    chip = world.i2c_bus(1).devices[0x76]
    again = world.build("bme280")  # a second sensor at the same address reads the same chip
    assert again._bus is bme._bus and world.i2c_bus(1).devices[0x76] is chip
    assert world.shared("k", lambda: object()) is world.shared("k", lambda: object())
    closed: list[str] = []
    world.on_close(lambda: closed.append("callback"))
    assert set(bme.read(clock.sleep)) == {"temperature", "humidity", "pressure"}
    assert set(lux.read(clock.sleep)) == {"illuminance"}
    world.close()
    world.close()
    assert closed == ["callback"] and bme._closed and lux._closed and again._closed
    with pytest.raises(RuntimeError, match="closed"):
        world.build("bme280")


def test_a_driver_without_simulator_is_one_clear_error() -> None:
    class Plain(Driver):
        name = "plain"
        metrics = (Metric("v", "V", unit="SI.ElectricPotential.VOLT"),)

    class Broken(Plain):
        name = "broken"
        simulator = "nowhere.at_all:simulate"

    with SimulatedWorld() as world:
        with pytest.raises(NoSimulationError, match=r"^no simulation for plain"):
            world.build(Plain)
        with pytest.raises(NoSimulationError, match="cannot be loaded"):
            world.build(Broken)
        assert not NoSimulationError("x").retryable


def test_bad_options_under_simulation_are_configuration_errors() -> None:
    with SimulatedWorld() as world, pytest.raises(Exception, match="osrs_p"):
        world.build("bme280", {"osrs_p": 3})


def test_environment_door_timeline_is_deterministic_and_queryable() -> None:
    a = Environment(seed=7, door_period_s=60.0, door_open_s=20.0, door_open_probability=0.5)
    b = Environment(seed=7, door_period_s=60.0, door_open_s=20.0, door_open_probability=0.5)
    edges = a.door_edges(0.0, 6000.0)
    assert edges == b.door_edges(0.0, 6000.0) and edges
    assert [is_open for _, is_open in edges] == [True, False] * (len(edges) // 2)
    for t, is_open in edges:
        assert a.door_open_at(t) is is_open and a.door_open_at(t - 1e-6) is not is_open
        assert a.next_door_edge(t - 1e-6) == t
    reading_does_not_move_it = [a.door_open_at(t) for t in range(0, 6000, 7)]
    assert reading_does_not_move_it == [b.door_open_at(t) for t in range(0, 6000, 7)]
    always = Environment(seed=1, door_period_s=1.0, door_open_s=0.25, door_open_probability=1.0)
    assert len(always.door_edges(0.0, 10.0)) == 20
    with pytest.raises(ValueError):
        Environment(door_period_s=0)


@pytest.mark.parametrize("name", ["dht22", "dht11", "digital_input", "ds18b20"])
def test_a_simulator_fills_in_no_required_option(name: str) -> None:
    """--simulate validates as on a Pi: a missing required option is the same ConfigurationError
    the real constructor raises, and the world builds nothing."""
    from pibridge.drivers import ConfigurationError, registry

    cls = registry.get(name)
    with pytest.raises(ConfigurationError) as on_a_pi:
        cls()
    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world, \
            pytest.raises(ConfigurationError) as simulated:
        world.build(name, {})
    assert "is required" in str(simulated.value) and str(simulated.value) == str(on_a_pi.value)


def test_every_builtin_driver_builds_from_its_example_options() -> None:
    """What read_cost and the guide build with: a valid configuration of every built-in driver."""
    from pibridge.drivers import registry

    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world:
        for name in registry.builtin():
            cls = registry.get(name)
            checked = cls.check_options(cls.example_options)
            built = world.build(name, cls.example_options)
            assert all(built.config[key] == checked[key] for key in cls.example_options)


def test_a_simulated_door_reports_the_annotation_a_real_one_would() -> None:
    """The simulator adds no annotation of its own: the metric is what the options say."""
    from pibridge.drivers.digital_input import DigitalInput

    with SimulatedWorld(clock=VirtualClock(), door_timer=False) as world:
        door = world.build("digital_input", {"pin": 22})
        expected = DigitalInput.metrics_for(DigitalInput.check_options({"pin": 22}))
        assert door.active_metrics() == expected and expected[0].annotation == "active"


def test_closing_the_world_survives_a_driver_whose_close_raises(caplog: pytest.LogCaptureFixture) -> None:
    """One failing close is logged; the other drivers, the shared fakes and the temp tree still go."""
    world = SimulatedWorld(clock=VirtualClock(), door_timer=False)
    first = world.build("ds18b20", {"device_id": "28-000000000001"})
    broken = world.build("cpu_temperature")
    last = world.build("bh1750")
    shared_closed: list[bool] = []
    world.on_close(lambda: shared_closed.append(True))
    scratch = world.scratch_dir("w1")

    def fail() -> None:
        raise OSError("stuck")

    broken.close = fail  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="pibridge.drivers.simulation"):
        world.close()
    assert first._closed and last._closed and shared_closed == [True]
    assert not scratch.exists()
    assert any("closing driver cpu_temperature failed" in r.getMessage() for r in caplog.records)


def test_pibridge_read_closes_the_world_whatever_the_simulator_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulator's bug (not a SensorError) still stops the world and its door thread."""
    import argparse

    from pibridge.cli.driver_commands import cmd_read

    closed: list[SimulatedWorld] = []
    real_close = SimulatedWorld.close

    def build(self: SimulatedWorld, driver: object, options: object = None) -> Driver:
        raise RuntimeError("simulator bug")

    def close(self: SimulatedWorld) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(SimulatedWorld, "build", build)
    monkeypatch.setattr(SimulatedWorld, "close", close)
    args = argparse.Namespace(driver="cpu_temperature", option=[], simulate=True, json=False)
    with pytest.raises(RuntimeError, match="simulator bug"):
        cmd_read(args, sleep=lambda s: None)
    assert len(closed) == 1
