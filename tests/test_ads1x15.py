"""ADS1115 / ADS1015 drivers and their register-level fake: maths (hardware.md §10.6 vectors and an
exact cross-check), the config word, the two phases on virtual time, faults, options, simulation."""

from __future__ import annotations

import itertools
import logging
import random
import re
import threading
from fractions import Fraction

import pytest

from pibridge.drivers import ads1x15
from pibridge.drivers.ads1x15 import (
    ADS1015,
    ADS1015_DATA_RATES,
    ADS1115,
    ADS1115_DATA_RATES,
    FULL_SCALES,
    code_to_volts,
    config_word,
    conversion_code,
)
from pibridge.drivers.base import ChipInput, check_sample, read_with_retries
from pibridge.drivers.errors import (
    BusError,
    ConfigurationError,
    DeviceNotFoundError,
    ImplausibleValueError,
    NotReadyError,
)
from pibridge.drivers.fakes.ads1x15 import FakeADS1x15
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeSMBus
from pibridge.drivers.simulation import Environment, SimulatedWorld

ADDR = 0x48


def rig(cls: type[ads1x15._ADS1x15] = ADS1115, inputs=(3.0, 1.0, 0.5, 0.0), **options):
    clock = VirtualClock()
    chip = FakeADS1x15(bits=cls.bits, clock=clock, inputs=inputs)
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    return cls(bus=bus, **options), bus, chip, clock


# --- the datasheet's maths (hardware.md §10.4, §10.6) -------------------------------------------
def test_hardware_md_vectors() -> None:
    # config for AIN0-GND, ±4.096 V, single-shot, DR 100, comparator off: 01 C3 83
    assert config_word(0b100, 0b001, 0b100) == 0xC383
    assert ADS1115(bus=FakeSMBus(1)).config_word == 0xC383
    assert ADS1015(bus=FakeSMBus(1)).config_word == 0xC383
    # 5D C0: ADS1115 24000 -> 3.000000 V; ADS1015 code 1500 -> 3.000000 V
    assert conversion_code(b"\x5d\xc0", 16) == 24000
    assert conversion_code(b"\x5d\xc0", 12) == 1500
    assert code_to_volts(24000, 4.096, 16) == 3.0
    assert code_to_volts(1500, 4.096, 12) == 3.0
    # ADS1015 FF F0: -1 LSB = -0.002 V at ±4.096 V (ESPHome's unsigned shift gives -61.442 V)
    assert conversion_code(b"\xff\xf0", 12) == -1
    assert code_to_volts(-1, 4.096, 12) == -0.002
    # ADS1115 full scale both ways
    assert code_to_volts(conversion_code(b"\x80\x00", 16), 4.096, 16) == -4.096
    assert code_to_volts(conversion_code(b"\x7f\xff", 16), 4.096, 16) == 4.095875
    assert conversion_code(b"\x80\x00", 12) == -2048
    assert conversion_code(b"\x7f\xf0", 12) == 2047


@pytest.mark.parametrize("full_scale, lsb_115, lsb_015", [
    (6.144, "187.5e-6", "3e-3"), (4.096, "125e-6", "2e-3"), (2.048, "62.5e-6", "1e-3"),
    (1.024, "31.25e-6", "0.5e-3"), (0.512, "15.625e-6", "0.25e-3"), (0.256, "7.8125e-6", "0.125e-3")])
def test_lsb_sizes(full_scale: float, lsb_115: str, lsb_015: str) -> None:
    assert code_to_volts(1, full_scale, 16) == float(Fraction(lsb_115))
    assert code_to_volts(1, full_scale, 12) == float(Fraction(lsb_015))


def exact_volts(register: int, full_scale: str, bits: int) -> Fraction:
    """An independent reading of the datasheet: two's complement of the register (ADS1015: of its
    top 12 bits), times FS / 2^(bits-1), in exact fractions."""
    if bits == 16:
        code = register - 65536 if register >= 32768 else register
    else:
        top = register >> 4          # unsigned 12-bit field, then two's complement by hand
        code = top - 4096 if top >= 2048 else top
    return code * Fraction(full_scale) / (2 ** (bits - 1))


def test_cross_check_against_exact_fractions() -> None:
    """Generated registers with the corners (0, ±1 LSB, both full scales) for every range, both
    chips: the driver's float is the exact datasheet value correctly rounded."""
    rng = random.Random(15)
    corners = [0x0000, 0x0001, 0x0010, 0xFFFF, 0xFFF0, 0x7FFF, 0x7FF0, 0x8000, 0x8010, 0x5DC0]
    registers = corners + [rng.randrange(0x10000) for _ in range(400)]
    for full_scale, bits, register in itertools.product(FULL_SCALES, (16, 12), registers):
        if bits == 12:
            register &= 0xFFF0   # the ADS1015's low nibble reads 0
        data = bytes([register >> 8, register & 0xFF])
        got = code_to_volts(conversion_code(data, bits), full_scale, bits)
        assert got == float(exact_volts(register, repr(full_scale), bits)), (full_scale, bits, hex(register))


def test_every_range_and_rate_reads_a_known_voltage() -> None:
    for cls, rates in ((ADS1115, ADS1115_DATA_RATES), (ADS1015, ADS1015_DATA_RATES)):
        for full_scale, rate in itertools.product(FULL_SCALES, rates):
            driver, bus, _, clock = rig(cls, inputs=(0.2, 0, 0, 0), full_scale=full_scale, data_rate=rate)
            value = driver.read(clock.sleep)["voltage"]
            lsb = full_scale / (2 ** (cls.bits - 1))
            assert value == pytest.approx(0.2, abs=lsb / 2 + 1e-12), (cls.name, full_scale, rate)
            written = bus.transfers[0][3]
            pga, _ = FULL_SCALES[full_scale]
            assert written == [0x01, *config_word(0b100, pga, rates[rate]).to_bytes(2, "big")]


@pytest.mark.parametrize("cls", [ADS1115, ADS1015])
def test_negative_and_saturated_inputs(cls: type[ads1x15._ADS1x15]) -> None:
    lsb = 4.096 / (2 ** (cls.bits - 1))
    driver, _, _, clock = rig(cls, inputs=(-3 * lsb, 5.0, 0, 0))
    assert driver.read(clock.sleep)["voltage"] == pytest.approx(-3 * lsb)   # never read as unsigned
    over = cls(bus=driver._bus, channel=1)                                   # 0x7FFF / 0x7FF0: clipped
    with pytest.raises(ImplausibleValueError, match=r"AIN1 is at the end of the ±4.096 V range \(code "):
        over.read(clock.sleep)
    wide_lsb = 6.144 / 2 ** (cls.bits - 1)
    wide = cls(bus=driver._bus, channel=1, full_scale=6.144)                # the larger range reads it
    assert wide.read(clock.sleep)["voltage"] == pytest.approx(5.0, abs=wide_lsb / 2)
    under = cls(bus=driver._bus, differential="0-1")                        # 0x8000: clipped too
    with pytest.raises(ImplausibleValueError, match="clipped; a larger full_scale reads it"):
        under.read(clock.sleep)
    one_below = cls(bus=driver._bus, differential="0-1", full_scale=6.144)
    assert one_below.read(clock.sleep)["voltage"] == pytest.approx(-3 * lsb - 5.0, abs=wide_lsb / 2)


@pytest.mark.parametrize("pair, mux, expected", [("0-1", 0b000, 2.0), ("0-3", 0b001, 3.0),
                                                 ("1-3", 0b010, 1.0), ("2-3", 0b011, 0.5)])
def test_differential_pairs(pair: str, mux: int, expected: float) -> None:
    driver, bus, _, clock = rig(differential=pair)
    assert driver.read(clock.sleep)["voltage"] == pytest.approx(expected, abs=125e-6)
    assert (bus.transfers[0][3][1] >> 4) & 0b111 == mux


@pytest.mark.parametrize("channel", range(4))
def test_single_ended_mux_is_100_plus_n(channel: int) -> None:
    driver, bus, _, clock = rig(channel=channel)
    driver.read(clock.sleep)
    assert (bus.transfers[0][3][1] >> 4) & 0b111 == 0b100 + channel


# --- two phases on virtual time -----------------------------------------------------------------
def test_wire_sequence_and_waits() -> None:
    driver, bus, chip, clock = rig(data_rate=8)
    assert not bus.transfers   # nothing at construction
    wait = driver.start()
    assert wait == pytest.approx(1.1 / 8 + ads1x15.BUS_TIME_S)
    assert list(bus.transfers) == [("i2c_rdwr.write", ADDR, None, [0x01, 0xC3, 0x03])]
    clock.sleep(1 / 8 * 0.5)
    with pytest.raises(NotReadyError, match="still running"):   # OS reads 0: too early
        driver.collect()
    clock.sleep(wait)
    assert driver.collect()["voltage"] == pytest.approx(3.0)
    assert [t[:3] for t in list(bus.transfers)[-2:]] == [("read_i2c_block_data", ADDR, 0x01),
                                                          ("read_i2c_block_data", ADDR, 0x00)]
    assert chip.conversions == 1
    with pytest.raises(NotReadyError, match="before start"):
        driver.collect()


def test_one_conversion_per_read_and_no_sleep() -> None:
    driver, _, chip, clock = rig()
    began = clock()
    for _ in range(5):
        driver.read(clock.sleep)
    assert chip.conversions == 5
    assert clock() - began == pytest.approx(5 * driver.timing.read_time_s)


# --- faults ------------------------------------------------------------------------------------
def test_nothing_at_the_address() -> None:
    driver = ADS1115(bus=FakeSMBus(1))
    with pytest.raises(DeviceNotFoundError, match="ADS1115 at 0x48: nothing answers"):
        driver.start()


def test_nack_then_recovery() -> None:
    driver, _, chip, clock = rig()
    driver.read(clock.sleep)
    chip.fail_next(1)
    with pytest.raises(BusError):
        driver.start()
    assert driver.read(clock.sleep)["voltage"] == pytest.approx(3.0)


def test_device_gone_then_back() -> None:
    driver, bus, chip, clock = rig()
    driver.read(clock.sleep)
    bus.detach(ADDR)
    with pytest.raises(BusError, match="conversion start failed"):
        driver.read(clock.sleep)
    bus.attach(ADDR, chip)
    assert driver.read(clock.sleep)["voltage"] == pytest.approx(3.0)


def test_power_glitch_between_start_and_collect() -> None:
    """The chip resets (config 0x8583: AIN0-AIN1, ±2.048 V): the result is another input's, so it
    is refused; the next attempt writes the config again and reads the right input."""
    driver, _, chip, clock = rig(channel=2)
    clock.sleep(driver.start())
    chip.power_glitch()
    with pytest.raises(NotReadyError, match=r"0x8583.*power glitch"):
        driver.collect()
    assert read_with_retries(driver, clock.sleep)["voltage"] == pytest.approx(0.5)


def test_conversion_never_ready_then_recovers() -> None:
    driver, _, chip, clock = rig()
    chip.stuck_converting = True
    with pytest.raises(NotReadyError, match="still running"):
        read_with_retries(driver, clock.sleep)
    chip.stuck_converting = False
    assert driver.read(clock.sleep)["voltage"] == pytest.approx(3.0)


def test_ads1015_posing_as_ads1115_reads_coarse_but_right_and_is_named_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """hardware.md §10.5: the counterfeit's codes step by 16; the voltage is the same, 16× coarser,
    and after 8 such readings in a row the log says once what the chip is."""
    volts = [1.2345]
    driver, _, chip, clock = rig(inputs=(lambda: volts[0], 0, 0, 0))
    genuine = [driver.read(clock.sleep)["voltage"] for _ in range(10)]
    volts[0] = 2.05                        # code 16400 = 0x4010: steady on a multiple of 16, says nothing
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.ads1x15"):
        steady = [driver.read(clock.sleep)["voltage"] for _ in range(20)]
    assert steady == [2.05] * 20 and not caplog.records
    chip.poses_as_ads1015 = True
    with caplog.at_level(logging.WARNING, logger="pibridge.drivers.ads1x15"):
        for step in range(20):
            volts[0] = 1.2345 + step * 0.0025   # a new 12-bit code each time
            value = driver.read(clock.sleep)["voltage"]
            assert value == pytest.approx(volts[0], abs=0.001 + 1e-9) and round(value / 125e-6) % 16 == 0
    assert genuine == [1.2345] * 10
    assert [r.message for r in caplog.records].count(
        "ADS1115 at 0x48: 8 readings in a row step by 16 codes: the chip is probably an ADS1015 sold as "
        "an ADS1115 (marking BRPI, not BOGI); use driver ads1015") == 1


# --- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, options, needle", [
    (ADS1115, {"full_scale": 5.0}, "option full_scale: 5 is not one of 6.144, 4.096"),
    (ADS1115, {"data_rate": 1600}, "option data_rate: 1600 is not one of 8, 16"),
    (ADS1015, {"data_rate": 860}, "option data_rate: 860 is not one of 128, 250"),
    (ADS1115, {"channel": 4}, "option channel: 4 is above the maximum 3"),
    (ADS1115, {"differential": "1-2"}, "option differential: '1-2' is not one of"),
    (ADS1115, {"channel": 0, "differential": "0-1"}, "either channel (single-ended) or differential"),
    (ADS1115, {"address": 0x40}, "option address: 0x40 is not one of 0x48, 0x49, 0x4a, 0x4b"),
])
def test_bad_options(cls: type[ads1x15._ADS1x15], options: dict, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(needle)):
        cls(bus=FakeSMBus(1), **options)


def test_resources_share_the_chip_and_claim_inputs() -> None:
    single = ADS1115.resources(ADS1115.check_options({"channel": 2, "address": 0x49}))
    assert single.i2c == ((1, 0x49),) and single.i2c_shared_by == "ads1115"
    assert single.inputs == (ChipInput(1, 0x49, "AIN2", "channel"),)
    pair = ADS1015.resources(ADS1015.check_options({"differential": "1-3"}))
    assert pair.inputs == (ChipInput(1, 0x48, "AIN1", "differential"),
                           ChipInput(1, 0x48, "AIN3", "differential"))
    assert pair.i2c_shared_by == "ads1015"
    default = ADS1115.resources(ADS1115.check_options({}))
    assert default.inputs == (ChipInput(1, 0x48, "AIN0", "channel"),)


def test_sensors_of_one_chip_share_an_exclusive_key() -> None:
    bus = FakeSMBus(1)
    keys = {ADS1115(bus=bus, channel=n).exclusive_key() for n in range(4)}
    assert len(keys) == 1 and None not in keys
    assert ADS1115(bus=bus, address=0x49).exclusive_key() not in keys
    assert ADS1115(bus=bus, i2c_bus=3).exclusive_key() not in keys


def test_timing_follows_the_data_rate() -> None:
    assert ADS1115(bus=FakeSMBus(1), data_rate=860).timing.read_time_s == pytest.approx(1.1 / 860 + 0.0006)
    assert ADS1015(bus=FakeSMBus(1)).timing.read_time_s == pytest.approx(1.1 / 1600 + 0.0006)


# --- simulation ---------------------------------------------------------------------------------
def test_simulated_soil_probe_and_other_channels() -> None:
    env = Environment(seed=3, clock=lambda: 100 * 86400 + 12 * 3600.0)
    with SimulatedWorld(env, clock=VirtualClock()) as world:
        soil = world.build("ads1115", {"channel": 0})
        second = world.build("ads1115", {"channel": 1})
        rail = world.build("ads1115", {"channel": 2})
        grounded = world.build("ads1115", {"channel": 3})
        volts = check_sample(soil, soil.read(world.clock.sleep))["voltage"]
        assert 1.2 <= volts <= 2.8     # between water and dry air (hardware.md §10.7)
        assert volts == pytest.approx(env.soil_volts(), abs=0.02)
        assert 1.2 <= second.read(world.clock.sleep)["voltage"] <= 2.8
        assert rail.read(world.clock.sleep)["voltage"] == pytest.approx(1.65, abs=0.02)
        readings = [grounded.read(world.clock.sleep)["voltage"] for _ in range(50)]
        assert min(readings) < 0 < max(readings) and max(map(abs, readings)) < 0.002
        small = world.build("ads1015", {"differential": "2-3", "address": 0x49})
        assert small.read(world.clock.sleep)["voltage"] == pytest.approx(1.65, abs=0.01)


def test_simulated_soil_dries_and_is_watered() -> None:
    """The probe's volts rise as the bed dries through the day and drop at the daily watering."""
    t = [100 * 86400 + 7.5 * 3600.0]
    env = Environment(seed=4, noise=0.0, clock=lambda: t[0])
    volts = []
    for hours in (0, 6, 12, 23, 24):
        t[0] = 100 * 86400 + (7.25 + hours) * 3600.0
        volts.append(env.soil_volts())
    assert volts[0] < volts[1] < volts[2] < volts[3]      # drying
    assert volts[4] == pytest.approx(volts[0], abs=0.01)  # watered again
    assert 1.2 < volts[0] < volts[3] < 2.8


def test_simulated_chip_of_the_other_kind_at_the_address_is_refused() -> None:
    with SimulatedWorld(Environment(seed=1), clock=VirtualClock()) as world:
        world.build("ads1115", {"channel": 0})
        with pytest.raises(ConfigurationError, match="0x48 on bus 1 is an ADS1x15 of 16 bits, not an ADS10"):
            world.build("ads1015", {"channel": 1})
        world.build("ina219", {"address": 0x4A})
        with pytest.raises(ConfigurationError, match="is FakeINA219, not an ADS1115"):
            world.build("ads1115", {"address": 0x4A})


# --- four probes on one chip under the scheduler ----------------------------------------------
class _AlwaysSynced:
    def synchronized(self) -> bool:
        return True


class _Sink:
    def __init__(self) -> None:
        self.samples: list = []
        self.cond = threading.Condition()

    def put(self, sample) -> None:
        with self.cond:
            self.samples.append(sample)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.samples), timeout), "timed out"


def test_four_channels_of_one_chip_under_the_scheduler() -> None:
    """Four sensors of one simulated ADS1115, due in the same slots: the scheduler takes their
    conversions one at a time (they share the config register), so none fails and each reads
    its own input. Without `exclusive_key` a config write in the middle of another channel's
    conversion changes its input (the collect sees a config it did not write)."""
    from pibridge.bridge.clock import SystemClock
    from pibridge.bridge.scheduler import Scheduler, SensorPlan

    env = Environment(seed=9, noise=0.0)
    world = SimulatedWorld(env)
    inputs = {0: env.soil_volts, 1: lambda: env.soil_volts(bed=1), 2: lambda: 1.65, 3: lambda: 0.0}
    plans = [SensorPlan(f"ch{n}", 0.5, lambda n=n: world.build("ads1115", {"channel": n, "data_rate": 64}))
             for n in range(4)]
    sink = _Sink()
    scheduler = Scheduler(plans, sink, clock=SystemClock(_AlwaysSynced(), boot_id="t", floor_s=0.0))
    scheduler.start()
    try:
        sink.wait_for(lambda samples: all(sum(s.sensor == f"ch{n}" for s in samples) >= 4 for n in range(4)))
    finally:
        scheduler.stop()
        world.close()
    stats = scheduler.stats()
    assert all(stats[f"ch{n}"]["failed"] == 0 and stats[f"ch{n}"]["retries"] == 0 for n in range(4)), stats
    for sample in sink.samples:
        n = int(sample.sensor[2:])
        assert sample.values["voltage"] == pytest.approx(inputs[n](), abs=0.01), sample


def test_fake_power_on_values_and_continuous_mode() -> None:
    """hardware.md §10.1/§10.8: reset values; continuous mode converts every 1/DR and ignores OS."""
    clock = VirtualClock()
    chip = FakeADS1x15(clock=clock, inputs=(1.0, 0.0, 0.0, 0.0))
    bus = FakeSMBus(1)
    bus.attach(ADDR, chip)
    words = {reg: bus.read_i2c_block_data(ADDR, reg, 2) for reg in range(4)}
    assert words == {0: [0x00, 0x00], 1: [0x85, 0x83], 2: [0x80, 0x00], 3: [0x7F, 0xFF]}
    bus.write_i2c_block_data(ADDR, 0x01, [0xC2, 0x83])        # AIN0, ±4.096 V, continuous, 128 SPS
    clock.sleep(1 / 128 * 3.5)
    assert bus.read_i2c_block_data(ADDR, 0x00, 2) == [0x1F, 0x40]   # 1.0 V = 8000 codes
    assert chip.conversions == 3
    assert bus.read_i2c_block_data(ADDR, 0x01, 2)[0] & 0x80          # never "converting" in continuous mode
