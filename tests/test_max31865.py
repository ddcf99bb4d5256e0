"""MAX31865: Callendar–Van Dusen against hardware.md §17.6 and an exact Fraction inversion, the
register protocol on a fake chip on software SPI (mode 1) on virtual time, the fault table, the
simulator and the profile's CE clashes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from pibridge.drivers.base import CollectAgain, check_sample
from pibridge.drivers.errors import BusError, ConfigurationError, NotReadyError
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.max31865 import FakeMAX31865, pt_resistance
from pibridge.drivers.fakes.softspi import SoftwareSPIBus
from pibridge.drivers.max31865 import (
    FAULT_HIGH_THRESHOLD,
    FAULT_LOW_THRESHOLD,
    FAULT_REFIN_HIGH,
    FAULT_REFIN_LOW,
    FAULT_RTDIN_LOW,
    FAULT_VOLTAGE,
    MAX31865,
    RtdFaultError,
    RtdOpenError,
    RtdShortError,
    RtdVoltageError,
    cvd_resistance,
    cvd_temperature,
    fault_error,
    resistance,
)
from pibridge.drivers.simulation import Environment, SimulatedWorld
from pibridge.profile import ProfileError, load_profile

# -- the maths -------------------------------------------------------------------------------------
#: hardware.md §17.6: code → (R read, exact CVD °C); PT100 with R_REF 430 Ω
VECTORS = [(7620, 99.9939, -0.0156), (10555, 138.5086, 100.0082), (6120, 80.3101, -49.9905),
           (1411, 18.5159, -200.0096)]


@pytest.mark.parametrize(("code", "ohms", "celsius"), VECTORS)
def test_hardware_md_vectors(code: int, ohms: float, celsius: float) -> None:
    r = resistance(code, 430.0)
    assert r == pytest.approx(ohms, abs=5e-5)
    assert cvd_temperature(r, 100.0) == pytest.approx(celsius, abs=5e-5)


def test_pt1000_vector() -> None:
    r = resistance(6422, 4300.0)  # bytes 32 2C → code 0x322C >> 1
    assert (0x322C >> 1) == 6422
    assert r == pytest.approx(842.7307, abs=5e-5)
    assert cvd_temperature(r, 1000.0) == pytest.approx(-39.9948, abs=1e-3)  # Adafruit's −39.9948


def test_adafruit_differs_below_zero_and_we_follow_the_standard() -> None:
    """Code 7620: AN-709's polynomial (Adafruit) gives −0.0166 °C, exact CVD −0.0156 °C."""
    r = resistance(7620, 430.0)
    rr = r * 100 / 100.0
    an709 = (-242.02 + 2.2228 * rr + 2.5859e-3 * rr ** 2 - 4.8260e-6 * rr ** 3 - 2.8183e-8 * rr ** 4
             + 1.5243e-10 * rr ** 5)
    assert an709 == pytest.approx(-0.0166, abs=5e-5)
    assert cvd_temperature(r, 100.0) == pytest.approx(-0.0156, abs=5e-5)


# an independent inversion: exact rational CVD, bisection on Fractions
FA, FB, FC = Fraction("3.9083e-3"), Fraction("-5.775e-7"), Fraction("-4.183e-12")


def exact_r(t: Fraction, r0: Fraction) -> Fraction:
    r = r0 * (1 + FA * t + FB * t * t)
    if t < 0:
        r += r0 * FC * (t - 100) * t ** 3
    return r


def bisect_t(ohms: Fraction, r0: Fraction) -> Fraction:
    low, high = Fraction(-250), Fraction(900)
    for _ in range(60):  # 1150 / 2^60: far below 1e-9 °C
        mid = (low + high) / 2
        if exact_r(mid, r0) < ohms:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@pytest.mark.parametrize("r0", [100.0, 1000.0])
def test_inversion_matches_an_exact_bisection_from_minus_200_to_850(r0: float) -> None:
    worst = 0.0
    for tenth in range(-2000, 8501, 25):  # every 2.5 °C, both sides of 0
        t = tenth / 10
        ohms = cvd_resistance(t, r0)
        exact = float(bisect_t(Fraction(ohms), Fraction(r0)))
        ours = cvd_temperature(ohms, r0)
        worst = max(worst, abs(ours - exact))
        assert ours == pytest.approx(t, abs=1e-6)
    assert worst < 1e-7


# -- the chip on the wire ----------------------------------------------------------------------------
@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def rtd(mock_factory, clock):
    state = {"celsius": 21.5}
    chip = FakeMAX31865(mock_factory, ohms=lambda: pt_resistance(state["celsius"], 100.0), clock=clock)
    bus = SoftwareSPIBus(mock_factory)
    chip.state = state  # type: ignore[attr-defined]
    spi = bus.device(8)
    yield chip, spi
    spi.close()
    bus.close()
    chip.close()


def make(spi, **options) -> MAX31865:
    return MAX31865(spi=spi, **options)


def test_reads_through_the_register_protocol(rtd, clock) -> None:
    chip, spi = rtd
    driver = make(spi)
    sample = check_sample(driver, driver.read(sleep=clock.sleep))
    # the fake rounds R/430·32768 to a code: one LSB is 0.034 °C
    assert sample["temperature"] == pytest.approx(21.5, abs=0.02)
    assert sample["resistance"] == pytest.approx(pt_resistance(21.5, 100.0), abs=0.0131)
    assert chip.registers[0] & 0x80 == 0, "bias is switched off after the read"
    assert chip.registers[3:7] == [0xEE, 0x24, 0x05, 0xF4]  # 400 Ω → 30482, 10 Ω → 762, each << 1
    chip.state["celsius"] = -120.0
    assert driver.read(sleep=clock.sleep)["temperature"] == pytest.approx(-120.0, abs=0.03)
    driver.close()


def test_bias_is_on_only_during_a_sample(rtd, clock) -> None:
    chip, spi = rtd
    driver = make(spi, mains_filter=60)
    for _ in range(3):
        driver.read(sleep=clock.sleep)
        clock.sleep(10.0)
    assert chip.bias_on_s == pytest.approx(3 * driver.timing.read_time_s, abs=1e-9)
    assert driver.timing.read_time_s == pytest.approx(0.010 + 0.055 + 0.001)   # settle, 1-shot max, bus
    assert make(spi).timing.read_time_s == pytest.approx(0.010 + 0.066 + 0.001)
    assert chip.refused_one_shots == 0


def test_collecting_before_the_bias_settled_reads_wrong_and_before_start_is_not_ready(rtd, clock) -> None:
    _chip, spi = rtd
    driver = make(spi)
    with pytest.raises(NotReadyError):
        driver.collect()
    driver.start()
    assert driver.collect() == CollectAgain(0.066 + 0.001)  # the 1-shot at once: bias still settling
    assert _chip.refused_one_shots == 1                       # refused: no conversion ran
    clock.sleep(0.067)
    with pytest.raises(BusError, match="all 00: no chip answers, or no conversion ran"):
        driver.collect()
    assert not _chip.bias_on                                  # switched off all the same
    assert driver.read(sleep=clock.sleep)["temperature"] == pytest.approx(21.5, abs=0.02)


def test_one_shot_sequence_bias_first_then_one_shot_then_read_and_bias_off(rtd, clock) -> None:
    """hardware.md §17.3: V_BIAS on and settled, then 1-shot, wait the conversion, read, bias off;
    the fake refuses a 1-shot before the bias settled, so a driver that skipped the wait fails."""
    chip, spi = rtd
    driver = make(spi)
    settle = driver.start()
    assert settle == pytest.approx(0.010) and chip.bias_on and chip.registers[0] == 0x80 | 0x01
    clock.sleep(settle)
    step = driver.collect()
    assert step == CollectAgain(0.066 + 0.001) and chip.bias_on
    clock.sleep(step.wait_s)
    assert driver.collect()["temperature"] == pytest.approx(21.5, abs=0.02)
    assert not chip.bias_on and chip.refused_one_shots == 0
    assert chip.bias_on_s == pytest.approx(0.010 + 0.067)


def test_closing_mid_reading_switches_the_bias_off(rtd, clock) -> None:
    chip, spi = rtd
    driver = make(spi)
    clock.sleep(driver.start())
    driver.collect()                      # the 1-shot is running
    driver.close()
    assert not chip.bias_on


def test_a_failed_bias_off_write_is_retried_when_the_driver_closes(rtd, clock) -> None:
    chip, spi = rtd

    class FailsTheBiasOff:
        """Passes every transfer but the first bias-off config write (a glitch on the bus)."""

        failed = False

        def transfer(self, data):
            if data[0] == 0x80 and not data[1] & 0x80 and chip.bias_on and not self.failed:
                self.failed = True
                raise OSError("glitch")
            return spi.transfer(data)

    driver = MAX31865(spi=FailsTheBiasOff())
    clock.sleep(driver.start())
    clock.sleep(driver.collect().wait_s)
    with pytest.raises(BusError, match="switching the bias off"):
        driver.collect()
    assert chip.bias_on
    driver.close()
    assert not chip.bias_on


def test_mode_0_garbles_the_frames(rtd, clock) -> None:
    """The chip does SPI modes 1/3 only: an interface left in mode 0 reads shifted bits."""
    _chip, spi = rtd

    class Mode0:
        def transfer(self, data):
            return spi.transfer(data)

    driver = MAX31865(spi=Mode0())
    with pytest.raises((BusError, RtdFaultError)):  # writes land, reads come back one bit late
        driver.read(sleep=clock.sleep)


def test_three_wire_and_filter_bits(rtd, clock) -> None:
    chip, spi = rtd
    driver = make(spi, wires=3, mains_filter=60)
    clock.sleep(driver.start())
    assert chip.registers[0] == 0x80 | 0x10  # bias, 3-wire, 60 Hz, normally off; D1 self-cleared
    step = driver.collect()
    assert isinstance(step, CollectAgain) and step.wait_s == pytest.approx(0.055 + 0.001)
    assert chip.registers[0] == 0x80 | 0x10  # D5 (1-shot) self-cleared
    clock.sleep(step.wait_s)
    driver.collect()
    assert chip.registers[0] == 0x10
    make(spi).start()
    assert chip.registers[0] == 0x80 | 0x01


# -- faults --------------------------------------------------------------------------------------------
FAULT_TABLE = [
    (FAULT_HIGH_THRESHOLD, RtdOpenError, "RTD element open"),
    (FAULT_LOW_THRESHOLD, RtdShortError, "shorted"),
    (FAULT_REFIN_HIGH, RtdOpenError, "REFIN− > 0.85·V_BIAS"),
    (FAULT_REFIN_LOW, RtdOpenError, "FORCE− open"),
    (FAULT_RTDIN_LOW, RtdOpenError, "RTDIN− < 0.85·V_BIAS"),
    (FAULT_VOLTAGE, RtdVoltageError, "over- or under-voltage"),
    (FAULT_VOLTAGE | FAULT_LOW_THRESHOLD, RtdVoltageError, "shorted"),
    (0x00, RtdFaultError, "empty status"),
]


@pytest.mark.parametrize(("status", "kind", "text"), FAULT_TABLE)
def test_fault_status_bits_are_typed_errors(status: int, kind: type, text: str) -> None:
    error = fault_error(status, "max31865 on CE0")
    assert type(error) is kind and error.retryable and error.status == status
    assert text in str(error)


@pytest.mark.parametrize(("status", "kind"), [(FAULT_REFIN_HIGH, RtdOpenError),
                                              (FAULT_RTDIN_LOW, RtdOpenError),
                                              (FAULT_VOLTAGE, RtdVoltageError)])
def test_a_glitch_is_reported_cleared_and_the_next_read_works(rtd, clock, status, kind) -> None:
    chip, spi = rtd
    driver = make(spi)
    chip.fault_next(status)
    with pytest.raises(kind):
        driver.read(sleep=clock.sleep)
    assert chip.registers[7] == 0, "the driver cleared the fault status"
    assert driver.read(sleep=clock.sleep)["temperature"] == pytest.approx(21.5, abs=0.02)


@pytest.mark.parametrize(("wiring", "kind", "text"), [("open", RtdOpenError, "open"),
                                                      ("short", RtdShortError, "shorted"),
                                                      ("overvoltage", RtdVoltageError, "voltage")])
def test_wiring_faults_name_the_fault_until_repaired(rtd, clock, wiring, kind, text) -> None:
    chip, spi = rtd
    driver = make(spi)
    chip.wiring = wiring
    for _ in range(2):
        with pytest.raises(kind, match=text):
            driver.read(sleep=clock.sleep)
    chip.wiring = "ok"
    assert driver.read(sleep=clock.sleep)["temperature"] == pytest.approx(21.5, abs=0.02)


def test_no_chip_reads_zero_is_a_bus_error(mock_factory, clock) -> None:
    bus = SoftwareSPIBus(mock_factory)  # nothing on CE0: MISO stays low
    spi = bus.device(8)
    driver = make(spi)
    with pytest.raises(BusError, match="all 00"):
        driver.read(sleep=clock.sleep)
    spi.close()
    bus.close()


def test_options() -> None:
    with pytest.raises(ConfigurationError, match="exceed"):
        MAX31865.check_options({"rtd": "pt1000", "reference_ohms": 430})
    for bad in ({"wires": 5}, {"mains_filter": 55}, {"rtd": "pt500"}, {"spi_device": 2},
                {"reference_ohms": "many"}):
        with pytest.raises(ConfigurationError):
            MAX31865.check_options(bad)
    assert MAX31865.resources(MAX31865.check_options({"spi_device": 1})).spi == ((0, 1),)


def test_pt1000_through_the_fake(mock_factory, clock) -> None:
    chip = FakeMAX31865(mock_factory, ohms=lambda: pt_resistance(-40.0, 1000.0), reference_ohms=4300.0,
                        clock=clock)
    bus = SoftwareSPIBus(mock_factory)
    spi = bus.device(8)
    driver = make(spi, rtd="pt1000")
    assert driver.read(sleep=clock.sleep)["temperature"] == pytest.approx(-40.0, abs=0.02)
    spi.close()
    bus.close()
    chip.close()


def test_simulator_builds_it_beside_an_mcp3008_on_the_other_ce() -> None:
    clock = VirtualClock()
    with SimulatedWorld(Environment(seed=3, clock=lambda: 1_700_000_000.0), clock=clock) as world:
        adc = world.build("mcp3008", {"spi_device": 0})
        rtd = world.build("max31865", {"spi_device": 1, "mains_filter": 60})
        sample = check_sample(rtd, rtd.read(sleep=clock.sleep))
        assert -10 < sample["temperature"] < 40
        assert 0 < adc.read()["voltage"] < 3.3


# -- pibridge check: CE clashes ------------------------------------------------------------------------
def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text('[agent]\n[bridge]\nstate_dir = "state"\n' + body)
    return path


def test_profile_ce_clash_with_an_mcp3008_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[sensor]]
name = "Soil"
driver = "mcp3008"
[[sensor]]
name = "Tank"
driver = "max31865"
[sensor.options]
rtd = "pt100"
""")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "Tank" in str(info.value) and "Soil" in str(info.value)
    path.write_text(path.read_text().replace('rtd = "pt100"', 'rtd = "pt100"\nspi_device = 1'))
    assert [s.driver for s in load_profile(path).sensors] == ["mcp3008", "max31865"]


def test_profile_gpio_on_an_spi_pin_clashes(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[sensor]]
name = "Tank"
driver = "max31865"
[[sensor]]
name = "Door"
driver = "digital_input"
[sensor.options]
pin = 9
""")
    with pytest.raises(ProfileError, match="SPI0"):
        load_profile(path)
