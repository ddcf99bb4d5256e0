"""Cross-check pibridge's chip drivers against Adafruit's CircuitPython drivers on identical bytes.

Both drivers talk to the *same* wire-level fake chip (``drivers/fakes``): Adafruit's through
`BusioI2COnFake`, a ``busio.I2C`` look-alike that turns every ``writeto`` / ``readfrom_into`` /
``writeto_then_readfrom`` into the fake's ``i2c_rdwr`` messages; pibridge's through the fake's own
smbus2 surface. Both buses record every read phase, so each case also asserts that the two drivers
decoded the same measurement bytes. Agreement is exact where both follow the datasheet with the same
float expression; where /work/shared/hardware.md ("how references differ") says Adafruit deliberately
differs, the documented difference is asserted exactly, so any other deviation still fails.

Adafruit's libraries are the optional extra ``crosscheck`` (installed by scripts/setup.sh on the
64-bit pip route): skipped where they are missing (a 32-bit Pi), a failure when ``CI=true``. Their
``time.sleep`` is pointed at the fake's `VirtualClock`, so the module runs in well under a second.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from smbus2 import i2c_msg

from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.i2c import FakeI2CDevice, FakeSMBus

#: PyPI distribution of each Adafruit module (the message of a skip / CI failure names it)
DISTRIBUTIONS = {
    "adafruit_sht4x": "adafruit-circuitpython-sht4x",
    "adafruit_sht31d": "adafruit-circuitpython-sht31d",
    "adafruit_ahtx0": "adafruit-circuitpython-ahtx0",
    "adafruit_ads1x15": "adafruit-circuitpython-ads1x15",
    "adafruit_ina219": "adafruit-circuitpython-ina219",
    "adafruit_scd4x": "adafruit-circuitpython-scd4x",
    "adafruit_scd30": "adafruit-circuitpython-scd30",
    "adafruit_veml7700": "adafruit-circuitpython-veml7700",
    "adafruit_max31865": "adafruit-circuitpython-max31865",
    "adafruit_pm25": "adafruit-circuitpython-pm25",
}

I2C_STANDARD_HZ = 100_000  #: the shim's bus clock: each message advances the virtual clock accordingly


def reference(module: str) -> ModuleType:
    """Import an Adafruit module: skipped where it is not installed, a failure when ``CI=true``
    (CI installs the ``crosscheck`` extra: a missing library there is a broken setup)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = f"{module} not installed ({DISTRIBUTIONS[module]}, extra 'crosscheck'): {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}", pytrace=False)
        pytest.skip(missing)


@pytest.mark.parametrize("ci, outcome", [(None, pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_reference_library_skips_here_and_fails_in_ci(
        ci: str | None, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "adafruit_sht4x", None)   # import raises ImportError
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="adafruit-circuitpython-sht4x"):
        reference("adafruit_sht4x")


# --- the busio.I2C shim on the fake bus ------------------------------------------------------------
class RecordingSMBus(FakeSMBus):
    """The fake bus pibridge's driver gets, remembering each read phase's bytes (``reads``)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.reads: list[bytes] = []

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        super().i2c_rdwr(*i2c_msgs)
        self.reads.extend(bytes(list(msg)[: msg.len]) for msg in i2c_msgs if msg.flags & 1)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: bool | None = None
                            ) -> list[int]:
        data = super().read_i2c_block_data(i2c_addr, register, length, force)
        self.reads.append(bytes(data))
        return data

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        word = super().read_word_data(i2c_addr, register, force)
        self.reads.append(word.to_bytes(2, "little"))
        return word

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        value = super().read_byte_data(i2c_addr, register, force)
        self.reads.append(bytes([value]))
        return value


class BusioI2COnFake:
    """``busio.I2C`` as adafruit_bus_device uses it, on a `FakeSMBus`.

    ===================================  ======================================================
    busio call                           on the fake bus
    ===================================  ======================================================
    ``writeto(a, buf)``                  ``i2c_rdwr(write(a, buf))``; an empty buf (the probe
                                         of ``I2CDevice``) only asks the address for its ACK
    ``readfrom_into(a, buf)``            ``i2c_rdwr(read(a, n))``
    ``writeto_then_readfrom(a, o, i)``   ``i2c_rdwr(write(a, o), read(a, n))``: repeated START
    ===================================  ======================================================

    Each message takes its time on the wire (`wire_time`): Adafruit's ADS1x15 busy-polls the
    conversion-done bit without sleeping, which on a virtual clock only ends because polls take time.
    """

    def __init__(self, bus: FakeSMBus, clock: VirtualClock) -> None:
        self.bus = bus
        self.clock = clock
        self.reads: list[bytes] = []   #: each read phase's bytes, as Adafruit's driver got them
        self.writes: list[bytes] = []  #: each write phase's bytes
        self.locked = False

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def scan(self) -> list[int]:
        return sorted(self.bus.devices)

    def _device(self, address: int) -> FakeI2CDevice:
        device = self.bus.devices.get(address)
        if device is None:
            raise OSError(121, "Remote I/O error")
        device.check_ack()
        return device

    def wire_time(self, *lengths: int) -> None:
        """Advance the virtual clock by the messages' time on a 100 kHz bus (9 clocks a byte,
        address byte included)."""
        self.clock.sleep(sum(9 * (length + 1) for length in lengths) / I2C_STANDARD_HZ)

    def writeto(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        payload = bytes(buffer[start:end])
        if not payload:  # address-only write: a probe, nothing reaches the chip's logic
            self._device(address)
            return
        self.writes.append(payload)
        self.wire_time(len(payload))
        self.bus.i2c_rdwr(i2c_msg.write(address, payload))

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        end = len(buffer) if end is None else end
        message = i2c_msg.read(address, end - start)
        self.wire_time(end - start)
        self.bus.i2c_rdwr(message)
        data = bytes(list(message)[: end - start])
        self.reads.append(data)
        buffer[start:end] = data

    def writeto_then_readfrom(self, address: int, out_buffer: Any, in_buffer: Any, *, out_start: int = 0,
                              out_end: int | None = None, in_start: int = 0, in_end: int | None = None
                              ) -> None:
        in_end = len(in_buffer) if in_end is None else in_end
        payload = bytes(out_buffer[out_start:out_end])
        self.writes.append(payload)
        message = i2c_msg.read(address, in_end - in_start)
        self.wire_time(len(payload), in_end - in_start)
        self.bus.i2c_rdwr(i2c_msg.write(address, payload), message)
        data = bytes(list(message)[: in_end - in_start])
        self.reads.append(data)
        in_buffer[in_start:in_end] = data


class Rig:
    """One fake chip on one bus, seen by pibridge (``bus``) and by Adafruit (``busio``)."""

    def __init__(self, address: int, make_chip: Callable[[VirtualClock], FakeI2CDevice]) -> None:
        self.clock = VirtualClock()
        self.chip: Any = make_chip(self.clock)
        self.bus = RecordingSMBus()
        self.bus.attach(address, self.chip)
        self.busio = BusioI2COnFake(self.bus, self.clock)

    def virtual_time(self, monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> None:
        """Point the Adafruit modules' ``time`` at the virtual clock (their waits cost nothing)."""
        fake_time = SimpleNamespace(sleep=self.clock.sleep, monotonic=self.clock.monotonic,
                                    time=self.clock.monotonic, monotonic_ns=lambda: int(self.clock() * 1e9))
        for module in modules:
            monkeypatch.setattr(module, "time", fake_time)


def float_rounding_only(ours: float, theirs: float, scale: float) -> bool:
    """Equal but for float rounding: pibridge divides once ((offset·65535 + span·S) / 65535, one
    correctly rounded division); Adafruit's ``offset + span·S/65535`` rounds twice, so the two may
    differ by an ulp of the largest intermediate (``scale``): ~3e-14 °C, eleven orders below an LSB."""
    return abs(ours - theirs) <= 2 * math.ulp(scale)


def written_since(bus: FakeSMBus, start: int) -> list[bytes]:
    """The write phases on ``bus`` from its ``start``-th logged transfer on (pibridge's commands)."""
    phases = []
    for method, _address, register, payload in list(bus.transfers)[start:]:
        if method == "write_byte":
            phases.append(bytes([payload]))
        elif method == "i2c_rdwr.write":
            phases.append(bytes(payload))
        elif method == "write_byte_data":
            phases.append(bytes([register, payload]))
        elif method == "write_i2c_block_data":
            phases.append(bytes([register, *payload]))
    return phases


def last_frame(reads: list[bytes], length: int) -> bytes:
    """The newest read phase of ``length`` bytes (the measurement frame)."""
    return next(data for data in reversed(reads) if len(data) == length)


# --- SHT4x ----------------------------------------------------------------------------------------
#: (°C, %RH) corners: the range ends, negatives, 0 and 100 %RH, values past the RH formula's clamp
SHT4X_CASES = [(-40.0, 0.0), (-45.0, 100.0), (-10.5, 5.0), (0.0, 50.0), (25.0, 56.5), (60.0, 99.9),
               (125.0, 100.0), (130.0, 0.0), (21.37, 33.33)]


#: pibridge's precision -> Adafruit's mode (no heater)
SHT4X_MODES = {"high": "NOHEAT_HIGHPRECISION", "medium": "NOHEAT_MEDPRECISION", "low": "NOHEAT_LOWPRECISION"}


@pytest.mark.parametrize("precision", list(SHT4X_MODES))
@pytest.mark.parametrize("celsius, humidity", SHT4X_CASES)
def test_sht4x(celsius: float, humidity: float, precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_sht4x = reference("adafruit_sht4x")
    from pibridge.drivers.fakes.sht4x import FakeSHT4x
    from pibridge.drivers.sht4x import SHT4x

    rig = Rig(0x44, lambda clock: FakeSHT4x(clock=clock, celsius=celsius, humidity=humidity))
    rig.virtual_time(monkeypatch, adafruit_sht4x)
    sensor = adafruit_sht4x.SHT4x(rig.busio)
    sensor.mode = getattr(adafruit_sht4x.Mode, SHT4X_MODES[precision])
    theirs = sensor.measurements
    start = len(rig.bus.transfers)
    ours = SHT4x(bus=rig.bus, clock=rig.clock, precision=precision).read(rig.clock.sleep)
    assert written_since(rig.bus, start) == [rig.busio.writes[-1]]   # the same measure command
    assert last_frame(rig.busio.reads, 6) == last_frame(rig.bus.reads, 6)
    # the same expression -45 + 175·S/65535: equal to the last bit. Adafruit clamps RH to the int
    # 0 or 100 (hardware.md 7.3), pibridge to the float: equal in value, the type differs
    assert float_rounding_only(ours["temperature"], theirs[0], 175.0)
    assert float_rounding_only(ours["humidity"], theirs[1], 125.0)
    assert isinstance(ours["humidity"], float)


# --- SHT3x ----------------------------------------------------------------------------------------
SHT3X_CASES = [(-40.0, 0.0), (-45.0, 100.0), (-0.01, 0.01), (25.0, 50.0), (85.0, 99.99),
               (125.0, 100.0), (130.0, 0.0), (21.37, 33.33)]


#: pibridge's repeatability -> Adafruit's
SHT3X_REPEATABILITY = {"high": "REP_HIGH", "medium": "REP_MED", "low": "REP_LOW"}


@pytest.mark.parametrize("repeatability", list(SHT3X_REPEATABILITY))
@pytest.mark.parametrize("celsius, humidity", SHT3X_CASES)
def test_sht3x(celsius: float, humidity: float, repeatability: str, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_sht31d = reference("adafruit_sht31d")
    from pibridge.drivers.fakes.sht3x import FakeSHT3x
    from pibridge.drivers.sht3x import SHT3x

    rig = Rig(0x44, lambda clock: FakeSHT3x(clock=clock, celsius=celsius, humidity=humidity))
    rig.virtual_time(monkeypatch, adafruit_sht31d)
    sensor = adafruit_sht31d.SHT31D(rig.busio)
    sensor.repeatability = getattr(adafruit_sht31d, SHT3X_REPEATABILITY[repeatability])
    theirs = (sensor.temperature, sensor.relative_humidity)   # two single shots, same fake values
    start = len(rig.bus.transfers)
    ours = SHT3x(bus=rig.bus, repeatability=repeatability).read(rig.clock.sleep)
    assert rig.busio.writes[-1] in written_since(rig.bus, start)   # the same single-shot command
    assert last_frame(rig.busio.reads, 6) == last_frame(rig.bus.reads, 6)
    assert float_rounding_only(ours["temperature"], theirs[0], 175.0)
    assert float_rounding_only(ours["humidity"], theirs[1], 100.0)


# --- AHT20 ----------------------------------------------------------------------------------------
AHT20_CASES = [(-50.0, 0.0001), (-40.0, 100.0), (-0.5, 0.5), (0.0, 50.0), (25.0, 45.0), (85.0, 99.0),
               (149.9998, 100.0), (28.266716, 15.079403), (14.588356, 57.685184)]


@pytest.mark.parametrize("celsius, humidity", AHT20_CASES)
def test_aht20(celsius: float, humidity: float, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_ahtx0 = reference("adafruit_ahtx0")
    from pibridge.drivers.aht20 import AHT20
    from pibridge.drivers.fakes.aht20 import FakeAHT20

    rig = Rig(0x38, lambda clock: FakeAHT20(clock=clock, celsius=celsius, humidity=humidity))
    rig.virtual_time(monkeypatch, adafruit_ahtx0)
    sensor = adafruit_ahtx0.AHTx0(rig.busio)
    theirs = (sensor.temperature, sensor._humidity)   # one measurement: .temperature fills both
    ours = AHT20(bus=rig.bus).read(rig.clock.sleep)
    # Adafruit reads 6 bytes and never checks the CRC (hardware.md 9.4); pibridge reads 7: the
    # same six bytes, then the CRC
    assert last_frame(rig.busio.reads, 6) == last_frame(rig.bus.reads, 7)[:6]
    # S_T·200/2^20 − 50 and S_RH·100/2^20: powers of two, so both are exact in a float
    assert ours["temperature"] == theirs[0]
    assert ours["humidity"] == theirs[1]


def test_aht20_crc_is_checked_by_pibridge_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented difference (hardware.md 9.4): a frame whose CRC is wrong is a value to
    Adafruit and an error to pibridge."""
    adafruit_ahtx0 = reference("adafruit_ahtx0")
    from pibridge.drivers.aht20 import AHT20
    from pibridge.drivers.errors import BadDataError
    from pibridge.drivers.fakes.aht20 import FakeAHT20

    rig = Rig(0x38, lambda clock: FakeAHT20(clock=clock, celsius=25.0, humidity=45.0))
    rig.virtual_time(monkeypatch, adafruit_ahtx0)
    sensor = adafruit_ahtx0.AHTx0(rig.busio)
    rig.chip.corrupt_crc = 1
    assert sensor.temperature == pytest.approx(25.0, abs=2e-4)
    with pytest.raises(BadDataError, match="CRC"):
        AHT20(bus=rig.bus).read(rig.clock.sleep)


def test_aht20_all_zero_humidity_is_a_value_to_adafruit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 %RH exactly (S_RH = 0) is the AHT20's known failure signature: pibridge (as ESPHome)
    rejects it, Adafruit returns 0.0 (hardware.md 9.4); the temperature of the frame agrees."""
    adafruit_ahtx0 = reference("adafruit_ahtx0")
    from pibridge.drivers.aht20 import AHT20
    from pibridge.drivers.errors import ImplausibleValueError
    from pibridge.drivers.fakes.aht20 import FakeAHT20

    rig = Rig(0x38, lambda clock: FakeAHT20(clock=clock, celsius=-50.0, humidity=0.0))
    rig.virtual_time(monkeypatch, adafruit_ahtx0)
    sensor = adafruit_ahtx0.AHTx0(rig.busio)
    assert (sensor.temperature, sensor._humidity) == (-50.0, 0.0)
    with pytest.raises(ImplausibleValueError, match="humidity field is all zero"):
        AHT20(bus=rig.bus).read(rig.clock.sleep)
    assert last_frame(rig.busio.reads, 6) == last_frame(rig.bus.reads, 7)[:6]


# --- ADS1115 / ADS1015 ----------------------------------------------------------------------------
#: pibridge's full_scale option -> Adafruit's gain
ADAFRUIT_GAIN = {6.144: 2 / 3, 4.096: 1, 2.048: 2, 1.024: 4, 0.512: 8, 0.256: 16}
#: (full scale V, input: AINn or "p-n", volts on AINp (the rest grounded)): every range, 0 V,
#: negative single-ended codes (a grounded input's noise), one code inside either rail (both chips),
#: single LSBs
ADS_CASES = [(4.096, 0, 3.0), (4.096, 0, 0.0), (6.144, 1, 3.3), (2.048, 2, 1.65), (1.024, 3, 0.5),
             (0.512, 0, 0.25), (0.256, 1, 0.1), (0.256, 3, -0.0003), (4.096, 2, -0.002),
             (4.096, "0-1", -4.096 * (1 - 1 / 2048)), (4.096, "0-1", 4.096 * (1 - 2 / 2048)),
             (0.256, "0-3", -0.256 * (1 - 1 / 2048)), (0.256, "0-3", 0.256 * (1 - 2 / 2048)),
             (2.048, "1-3", -1.0), (6.144, "2-3", 0.0001), (6.144, 0, -0.003), (4.096, 0, 0.001)]
#: inputs beyond the range: the code sticks at a rail
ADS_CLIPPED = [(4.096, "0-1", -4.2), (4.096, "0-1", 4.2), (0.256, "0-3", -0.3), (6.144, 0, 6.2)]


def ads_pins(channel: int | str) -> tuple[int, int | None]:
    if isinstance(channel, str):
        positive, negative = (int(n) for n in channel.split("-"))
        return positive, negative
    return channel, None


@pytest.mark.parametrize("chip_name, bits", [("ads1115", 16), ("ads1015", 12)])
@pytest.mark.parametrize("full_scale, channel, volts", ADS_CASES)
def test_ads1x15(chip_name: str, bits: int, full_scale: float, channel: int | str, volts: float,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    reference("adafruit_ads1x15")
    from adafruit_ads1x15 import ads1x15 as ads_base
    from adafruit_ads1x15.analog_in import AnalogIn

    from pibridge.drivers import ads1x15 as ours_module
    from pibridge.drivers.fakes.ads1x15 import FakeADS1x15

    rig = Rig(0x48, lambda clock: FakeADS1x15(bits=bits, clock=clock))
    rig.virtual_time(monkeypatch, ads_base)
    positive, negative = ads_pins(channel)
    rig.chip.set_input(positive, volts)
    reference_class = importlib.import_module(f"adafruit_ads1x15.{chip_name}")
    adc = getattr(reference_class, chip_name.upper())(rig.busio, gain=ADAFRUIT_GAIN[full_scale])
    theirs = AnalogIn(adc, positive, negative).voltage
    option = {"differential": channel} if negative is not None else {"channel": channel}
    driver = getattr(ours_module, chip_name.upper())(bus=rig.bus, full_scale=full_scale, **option)
    ours = driver.read(rig.clock.sleep)["voltage"]
    frame = last_frame(rig.busio.reads, 2)
    assert frame == last_frame(rig.bus.reads, 2)
    # Adafruit: code · (FS / 2^(bits-1)) with FS a float; pibridge: code · exact pV LSB / 10^12,
    # correctly rounded: the same value but for float rounding
    assert float_rounding_only(ours, theirs, full_scale), (frame.hex(" "), ours, theirs)


@pytest.mark.parametrize("chip_name, bits", [("ads1115", 16), ("ads1015", 12)])
@pytest.mark.parametrize("full_scale, channel, volts", ADS_CLIPPED)
def test_ads1x15_clipped_input_is_a_value_to_adafruit_only(
        chip_name: str, bits: int, full_scale: float, channel: int | str, volts: float,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A clipped code (0x7FFF / 0x8000, 0x7FF0 / 0x8000) is the rail voltage to Adafruit and an
    ImplausibleValueError to pibridge (by design: a clipped input is no measurement)."""
    reference("adafruit_ads1x15")
    from adafruit_ads1x15 import ads1x15 as ads_base
    from adafruit_ads1x15.analog_in import AnalogIn

    from pibridge.drivers import ads1x15 as ours_module
    from pibridge.drivers.errors import ImplausibleValueError
    from pibridge.drivers.fakes.ads1x15 import FakeADS1x15

    rig = Rig(0x48, lambda clock: FakeADS1x15(bits=bits, clock=clock))
    rig.virtual_time(monkeypatch, ads_base)
    positive, negative = ads_pins(channel)
    rig.chip.set_input(positive, volts)
    reference_class = importlib.import_module(f"adafruit_ads1x15.{chip_name}")
    adc = getattr(reference_class, chip_name.upper())(rig.busio, gain=ADAFRUIT_GAIN[full_scale])
    theirs = AnalogIn(adc, positive, negative).voltage
    rail = full_scale if volts > 0 else -full_scale
    lsb = full_scale / (1 << (bits - 1))
    assert theirs == pytest.approx(rail - lsb if volts > 0 else rail, abs=1e-12)
    option = {"differential": channel} if negative is not None else {"channel": channel}
    driver = getattr(ours_module, chip_name.upper())(bus=rig.bus, full_scale=full_scale, **option)
    with pytest.raises(ImplausibleValueError, match="clipped"):
        driver.read(rig.clock.sleep)
    assert last_frame(rig.busio.reads, 2) == last_frame(rig.bus.reads, 2)


# --- INA219 ---------------------------------------------------------------------------------------
#: Adafruit's preset -> (shunt Ω, pibridge's options that choose the same calibration register and
#: bus range). Adafruit reports mA, pibridge A (hardware.md 14.4); both V and W otherwise.
INA219_PRESETS = {
    "set_calibration_32V_2A": (0.1, {"max_current": 3.2, "bus_range": 32}),     # Cal 4096, 100 µA
    "set_calibration_16V_400mA": (0.1, {"max_current": 3.2, "bus_range": 16}),  # Cal 4096, PG /1
    "set_calibration_16V_5A": (0.02, {"max_current": 16.0, "bus_range": 16}),   # Cal 4096, 500 µA
}
#: (bus V, A through the shunt): zero, negative currents (reverse flow), single LSBs, the largest
#: current each preset's shunt range holds (Adafruit's PG /1 holds ±40 mV: 0.4 A on 0.1 Ω)
INA219_CASES = [(12.0, 0.2), (12.0, -0.2), (0.0, 0.0), (15.996, 0.39999), (5.0, -0.39999),
                (3.3, 0.0001), (0.004, -0.0001), (11.87, 0.1234), (14.2, -0.0577)]


@pytest.mark.parametrize("preset", list(INA219_PRESETS))
@pytest.mark.parametrize("volts, amps", INA219_CASES)
def test_ina219(preset: str, volts: float, amps: float) -> None:
    adafruit_ina219 = reference("adafruit_ina219")
    from pibridge.drivers.fakes.ina219 import FakeINA219
    from pibridge.drivers.ina219 import INA219

    shunt_ohms, options = INA219_PRESETS[preset]
    if preset == "set_calibration_16V_5A":
        amps *= 5    # the same shunt voltages on the 0.02 Ω shunt
    rig = Rig(0x40, lambda clock: FakeINA219(shunt_ohms=shunt_ohms, clock=clock,
                                             source=lambda: (volts, amps)))
    sensor = adafruit_ina219.INA219(rig.busio)
    getattr(sensor, preset)()
    rig.clock.sleep(0.01)   # a few 532 µs conversions under the preset
    theirs = {"shunt_voltage": sensor.shunt_voltage, "bus_voltage": sensor.bus_voltage,
              "current_ma": sensor.current, "power": sensor.power}
    raw_current = sensor.raw_current
    driver = INA219(bus=rig.bus, shunt_ohms=shunt_ohms, **options)
    assert driver.calibration == sensor.calibration
    ours = driver.read(rig.clock.sleep)
    assert rig.chip.current == raw_current   # the same register under pibridge's configuration
    same = {key: math.isclose(ours[key], theirs[key], rel_tol=1e-15, abs_tol=0)
            for key in ("shunt_voltage", "bus_voltage", "power")}
    same["current"] = math.isclose(ours["current"] * 1000, theirs["current_ma"], rel_tol=1e-15, abs_tol=0)
    assert all(same.values()), (raw_current, ours, theirs)


# --- SCD4x and SCD30 ------------------------------------------------------------------------------
def pibridge_read(driver: Any, clock: VirtualClock, attempts: int = 40) -> dict[str, Any]:
    """Read as the scheduler does: a NotReadyError (measurement not due yet) is retried a second
    later on the virtual clock."""
    from pibridge.drivers.base import read_once
    from pibridge.drivers.errors import NotReadyError

    for _ in range(attempts):
        try:
            return dict(read_once(driver, clock.sleep))
        except NotReadyError:
            clock.sleep(1.0)
    raise AssertionError(f"{driver} never became ready")


def wait_until(ready: Callable[[], bool], clock: VirtualClock, attempts: int = 40) -> None:
    """Poll an Adafruit ``data_ready`` once a (virtual) second, as their examples do."""
    for _ in range(attempts):
        if ready():
            return
        clock.sleep(1.0)
    raise AssertionError("the Adafruit driver never saw data ready")


#: (ppm, °C, %RH): ambient, the ranges' ends, negative temperatures, 0 and 100 %RH
SCD4X_CASES = [(400.0, 25.0, 50.0), (500.0, 25.002670, 37.001602), (612.0, 21.5, 48.0),
               (5000.0, -10.0, 0.0), (40000.0, 60.0, 100.0), (0.0, -45.0, 0.0), (1234.0, 0.0, 99.99),
               (800.0, -0.01, 12.34)]


@pytest.mark.parametrize("co2, celsius, humidity", SCD4X_CASES)
def test_scd4x(co2: float, celsius: float, humidity: float, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_scd4x = reference("adafruit_scd4x")
    from pibridge.drivers.fakes.scd4x import FakeSCD4x
    from pibridge.drivers.scd4x import SCD4x

    def make(clock: VirtualClock) -> FakeSCD4x:
        return FakeSCD4x(source=lambda: (co2, celsius, humidity), clock=clock)

    theirs_rig, ours_rig = Rig(0x62, make), Rig(0x62, make)   # each driver on a chip of its own
    theirs_rig.virtual_time(monkeypatch, adafruit_scd4x)
    sensor = adafruit_scd4x.SCD4X(theirs_rig.busio)
    sensor.start_periodic_measurement()
    wait_until(lambda: sensor.data_ready, theirs_rig.clock)
    theirs = (sensor.CO2, sensor.temperature, sensor.relative_humidity)
    ours = pibridge_read(SCD4x(bus=ours_rig.bus, clock=ours_rig.clock), ours_rig.clock)
    assert last_frame(theirs_rig.busio.reads, 9) == last_frame(ours_rig.bus.reads, 9)
    assert ours["co2"] == theirs[0]
    assert float_rounding_only(ours["temperature"], theirs[1], 175.0)
    assert float_rounding_only(ours["humidity"], theirs[2], 100.0)


#: (ppm, °C, %RH) the module sends as float32: the interface description's example, zero,
#: negative temperatures, 0 and 100 %RH, the 40000 ppm range end, values a float32 rounds
SCD30_CASES = [(439.09515, 27.23828, 48.80674), (400.0, 25.0, 50.0), (0.0, -40.0, 0.0),
               (40000.0, 70.0, 100.0), (612.25, -0.5, 99.9), (1234.5678, 21.123456, 33.333333)]


@pytest.mark.parametrize("co2, celsius, humidity", SCD30_CASES)
def test_scd30(co2: float, celsius: float, humidity: float, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_scd30 = reference("adafruit_scd30")
    from pibridge.drivers.fakes.scd30 import FakeSCD30
    from pibridge.drivers.scd30 import SCD30

    def make(clock: VirtualClock) -> FakeSCD30:
        return FakeSCD30(source=lambda: (co2, celsius, humidity), clock=clock)

    theirs_rig, ours_rig = Rig(0x61, make), Rig(0x61, make)
    theirs_rig.virtual_time(monkeypatch, adafruit_scd30)
    sensor = adafruit_scd30.SCD30(theirs_rig.busio)
    wait_until(lambda: sensor.data_available, theirs_rig.clock)
    theirs = (sensor.CO2, sensor._temperature, sensor._relative_humidity)
    ours = pibridge_read(SCD30(bus=ours_rig.bus, clock=ours_rig.clock), ours_rig.clock)
    assert last_frame(theirs_rig.busio.reads, 18) == last_frame(ours_rig.bus.reads, 18)
    # the same three big-endian float32: equal to the last bit
    assert (ours["co2"], ours["temperature"], ours["humidity"]) == theirs


# --- VEML7700 -------------------------------------------------------------------------------------
#: (lx, gain, integration ms): dark, single counts, every gain and integration time, both sides of
#: the 1000 lx correction threshold, full sun on the widest setting
VEML7700_CASES = [(0.0, 2, 800), (0.5, 2, 800), (30.0, 2, 400), (100.0, 1, 200), (50.0, 1, 100),
                  (200.0, 0.25, 50), (500.0, 0.25, 100), (999.0, 0.125, 100), (1500.0, 0.125, 100),
                  (4000.0, 0.125, 800), (5000.0, 0.125, 25), (20000.0, 0.25, 25),
                  (100000.0, 0.125, 25)]
CORRECTION_ABOVE_LX = 1000.0   #: pibridge corrects a linear value above this (hardware.md 13.4)


@pytest.mark.parametrize("lux, gain, it_ms", VEML7700_CASES)
def test_veml7700(lux: float, gain: float, it_ms: int, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_veml7700 = reference("adafruit_veml7700")
    from pibridge.drivers.fakes.veml7700 import FakeVEML7700
    from pibridge.drivers.veml7700 import VEML7700

    rig = Rig(0x10, lambda clock: FakeVEML7700(lux=lux, clock=clock))
    rig.virtual_time(monkeypatch, adafruit_veml7700)
    sensor = adafruit_veml7700.VEML7700(rig.busio)
    gain_code = {value: code for code, value in sensor.gain_values.items()}[gain]
    it_code = {value: code for code, value in sensor.integration_time_values.items()}[it_ms]
    sensor.light_gain, sensor.light_integration_time = gain_code, it_code
    rig.clock.sleep(2 * it_ms / 1000)   # one whole integration under the new setting
    count = sensor.light
    linear = sensor.lux                 # Adafruit's .lux: resolution 0.0042·(800/IT)·(2/gain) × count
    ours = VEML7700(bus=rig.bus, gain=gain, integration_time=it_ms).read(rig.clock.sleep)["illuminance"]
    assert last_frame(rig.bus.reads, 2) == count.to_bytes(2, "little")   # the same ALS count
    # Adafruit CircuitPython uses 0.0042 lx/count since its PR #34 (hardware.md 13.3), as pibridge
    # does: no 0.0036/0.0042 ratio with this library (the Arduino library and ESPHome keep 0.0036).
    # .lux never corrects; pibridge applies app note 84323's correction above 1000 lx, which is
    # Adafruit's compute_lux(count, True): the documented difference, in Adafruit's own maths
    if linear > CORRECTION_ABOVE_LX:
        assert math.isclose(ours, sensor.compute_lux(count, True), rel_tol=1e-14, abs_tol=0), (count, ours)
        assert ours > linear
    else:
        assert math.isclose(ours, linear, rel_tol=1e-15, abs_tol=0), (count, ours, linear)


# --- MAX31865 (SPI) -------------------------------------------------------------------------------
class BusioSPIOnSoftware:
    """``busio.SPI`` as adafruit_bus_device's SPIDevice uses it, on the fakes' `SoftwareSPIBus`
    (the bytes clocked bit by bit through the fake chip on gpiozero's mock pins). Chip select is
    `ChipSelectPin`; ``configure(phase=1)`` is SPI mode 1, the MAX31865's."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.clock_mode = 0
        self.reads: list[bytes] = []
        self.locked = False

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def configure(self, *, baudrate: int = 100_000, polarity: int = 0, phase: int = 0, bits: int = 8) -> None:
        assert polarity == 0 and bits == 8, "the software bus clocks CPOL 0, 8-bit words"
        self.clock_mode = phase

    def write(self, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self.bus.exchange(list(buffer[start:end]), self.clock_mode)

    def readinto(self, buffer: Any, *, start: int = 0, end: int | None = None, write_value: int = 0) -> None:
        end = len(buffer) if end is None else end
        data = bytes(self.bus.exchange([write_value] * (end - start), self.clock_mode))
        self.reads.append(data)
        buffer[start:end] = data


class ChipSelectPin:
    """``digitalio.DigitalInOut`` for a chip select: ``value = False`` drives the pin low."""

    def __init__(self, pin: int, pin_factory: Any) -> None:
        from gpiozero import DigitalOutputDevice

        self.device = DigitalOutputDevice(pin, initial_value=True, pin_factory=pin_factory)

    def switch_to_output(self, value: bool = False, **_: Any) -> None:
        self.value = value

    @property
    def value(self) -> bool:
        return bool(self.device.value)

    @value.setter
    def value(self, level: bool) -> None:
        self.device.value = level


#: (°C, RTD, R_REF Ω, wires, mains Hz): hardware.md 17.6's vectors, the range ends, just either side
#: of 0 °C (where Adafruit switches formula), a PT1000
MAX31865_CASES = [(0.0, "pt100", 430.0, 2, 60), (100.0, "pt100", 430.0, 2, 60),
                  (-50.0, "pt100", 430.0, 4, 60), (-200.0, "pt100", 430.0, 3, 50),
                  (21.5, "pt100", 430.0, 4, 50), (850.0, "pt100", 430.0, 2, 60),
                  (-0.05, "pt100", 430.0, 2, 60), (0.05, "pt100", 430.0, 2, 60),
                  (-40.0, "pt1000", 4300.0, 2, 60), (300.0, "pt1000", 4300.0, 4, 50)]
R0_OHMS = {"pt100": 100.0, "pt1000": 1000.0}
AN709_MAX_DEVIATION_C = 0.0011   #: hardware.md 17.5: AN-709's polynomial vs exact CVD, −200…0 °C


@pytest.mark.parametrize("celsius, rtd, reference_ohms, wires, mains", MAX31865_CASES)
def test_max31865(celsius: float, rtd: str, reference_ohms: float, wires: int, mains: int,
                  mock_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    adafruit_max31865 = reference("adafruit_max31865")
    from pibridge.drivers.fakes.max31865 import FakeMAX31865, pt_resistance
    from pibridge.drivers.fakes.softspi import SoftwareSPIBus
    from pibridge.drivers.max31865 import MAX31865

    clock = VirtualClock()
    r0 = R0_OHMS[rtd]
    chip = FakeMAX31865(mock_factory, ohms=lambda: pt_resistance(celsius, r0),
                        reference_ohms=reference_ohms, clock=clock)
    bus = SoftwareSPIBus(mock_factory)
    busio = BusioSPIOnSoftware(bus)
    monkeypatch.setattr(adafruit_max31865, "time", SimpleNamespace(sleep=clock.sleep, monotonic=clock))
    select = ChipSelectPin(chip.select_gpio, mock_factory)
    sensor = adafruit_max31865.MAX31865(busio, select, rtd_nominal=r0, ref_resistor=reference_ohms,
                                        wires=wires, filter_frequency=mains)
    theirs_ohms = sensor.resistance
    theirs_frame = last_frame(busio.reads, 2)          # RTD MSB, LSB (bit 0: fault)
    theirs_celsius = sensor.temperature
    assert last_frame(busio.reads, 2) == theirs_frame  # both conversions gave the same code
    select.device.close()
    spi = bus.device(chip.select_gpio)
    try:
        recorded: list[bytes] = []

        class RecordingSPI:
            clock_mode = 0

            def transfer(self, data: list[int]) -> list[int]:
                spi.clock_mode = self.clock_mode
                reply = spi.transfer(data)
                recorded.append(bytes(reply))
                return reply

        ours = MAX31865(spi=RecordingSPI(), rtd=rtd, wires=wires, reference_ohms=reference_ohms,
                        mains_filter=mains).read(clock.sleep)
    finally:
        spi.close()
        bus.close()
        chip.close()
    # the RTD registers 0x01-0x02 as pibridge read them: the same bytes as Adafruit's
    assert theirs_frame in [frame[1:] for frame in recorded if len(frame) == 3], \
        (theirs_frame.hex(" "), [f.hex(" ") for f in recorded])
    # R = code · R_REF / 2^15: the same (Adafruit divides, then multiplies: float rounding only)
    assert float_rounding_only(ours["resistance"], theirs_ohms, reference_ohms)
    if theirs_celsius >= 0:
        # the closed-form CVD root (Adafruit's Z1..Z4): the same up to float rounding in sqrt
        assert abs(ours["temperature"] - theirs_celsius) < 1e-9
    else:
        # below 0 °C Adafruit takes AN-709's polynomial, pibridge solves CVD exactly: the documented
        # difference. pibridge's T put back into CVD gives the resistance Adafruit read; Adafruit's
        # T is within the polynomial's 0.0011 °C of it
        assert pt_resistance(ours["temperature"], r0) == pytest.approx(theirs_ohms, abs=1e-9)
        assert abs(ours["temperature"] - theirs_celsius) <= AN709_MAX_DEVIATION_C


# --- PMS5003 (UART) -------------------------------------------------------------------------------
#: atmospheric (PM1.0, PM2.5, PM10) µg/m³: clean air, hardware.md 16.5's vector, above 30 µg/m³
#: (where the fake's CF=1 values part from the atmospheric ones), a smoky room, the 16-bit end
PMS5003_CASES = [(0.0, 0.0, 0.0), (1.0, 2.0, 3.0), (31.0, 45.0, 58.0), (250.0, 480.0, 999.0),
                 (1000.0, 1500.0, 2000.0), (20000.0, 40000.0, 65535.0)]
PMS_PORT_TIMEOUT_S = 5.0   #: a guard on the pty read (the frame is already sent), not a timing
#: pibridge's keys -> Adafruit's (it calls CF=1 "standard" and atmospheric "env", hardware.md 16.4)
PMS_KEYS = {"pm1_0": "pm10 env", "pm2_5": "pm25 env", "pm10": "pm100 env",
            "particles_0_3": "particles 03um", "particles_0_5": "particles 05um",
            "particles_1_0": "particles 10um", "particles_2_5": "particles 25um",
            "particles_5_0": "particles 50um", "particles_10": "particles 100um"}


@pytest.mark.parametrize("pm", PMS5003_CASES)
def test_pms5003(pm: tuple[float, float, float]) -> None:
    reference("adafruit_pm25")
    import serial
    from adafruit_pm25.uart import PM25_UART

    from pibridge.drivers import pms5003 as chip
    from pibridge.drivers.base import CollectAgain
    from pibridge.drivers.fakes.pms5003 import FakePMS5003
    from pibridge.drivers.fakes.serial import input_waiter

    clock = VirtualClock()
    fake = FakePMS5003(pm=pm, clock=clock)
    try:
        frame = fake.frame()
        # Adafruit: its UART reader on the pty (pyserial is a busio.UART as far as it reads)
        with serial.Serial(fake.device, 9600, timeout=PMS_PORT_TIMEOUT_S) as port:
            port.reset_input_buffer()
            fake.send_frame()                 # one active-mode frame
            theirs = dict(PM25_UART(port).read())
        # pibridge: passive mode, read on demand (E2), the whole sequence on the virtual clock
        with chip.PMS5003(fake.device, clock=clock, mode="passive", counts=True) as driver:
            clock.sleep(driver.start())
            wait = input_waiter(driver.link, PMS_PORT_TIMEOUT_S)
            for _ in range(20):
                result = driver.collect()
                if not isinstance(result, CollectAgain):
                    break
                clock.sleep(result.wait_s)
                wait(result.wait_s)
            else:
                raise AssertionError("the pibridge read never finished")
        assert fake.frame() == frame          # the chip's values did not move in between
    finally:
        fake.close()
    assert isinstance(result, dict)
    # the same twelve big-endian words: equal; pibridge reports atmospheric as Adafruit's "env"
    assert {key: result[key] for key in PMS_KEYS} == {key: theirs[name] for key, name in PMS_KEYS.items()}
    assert theirs["pm25 standard"] == int.from_bytes(frame[6:8], "big")   # CF=1: Adafruit only


#: °C offsets: 0, the chip's default 4, the datasheet's 5.4 example, values whose word has a
#: fraction above and below one half
SCD4X_OFFSETS = [0.0, 4.0, 5.4, 2.5, 1.0, 0.1, 7.77, 10.0, 20.0]
SET_TEMPERATURE_OFFSET = bytes.fromhex("241D")


@pytest.mark.parametrize("offset", SCD4X_OFFSETS)
def test_scd4x_temperature_offset_word(offset: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """set_temperature_offset: Adafruit writes ``int(T·65535/175)`` (truncated), pibridge
    ``round(T·65535/175)``: the same word, or pibridge's one higher where the fraction is ≥ ½
    (pibridge's offset is the nearer to the one asked for). Both frames carry a valid CRC."""
    adafruit_scd4x = reference("adafruit_scd4x")
    from pibridge.drivers.fakes.scd4x import FakeSCD4x
    from pibridge.drivers.scd4x import SCD4x

    rig = Rig(0x62, lambda clock: FakeSCD4x(clock=clock))
    rig.virtual_time(monkeypatch, adafruit_scd4x)
    sensor = adafruit_scd4x.SCD4X(rig.busio)
    sensor.temperature_offset = offset
    theirs_frame = rig.busio.writes[-1]
    theirs_readback = sensor.temperature_offset       # the chip took it
    start = len(rig.bus.transfers)
    pibridge_read(SCD4x(bus=rig.bus, clock=rig.clock, temperature_offset=offset), rig.clock)
    ours_frame = next(w for w in written_since(rig.bus, start) if w[:2] == SET_TEMPERATURE_OFFSET)
    assert theirs_frame[:2] == SET_TEMPERATURE_OFFSET and len(theirs_frame) == len(ours_frame) == 5
    theirs_word = int.from_bytes(theirs_frame[2:4], "big")
    ours_word = int.from_bytes(ours_frame[2:4], "big")
    ticks = offset * 65535 / 175
    assert theirs_word == math.floor(ticks)
    assert ours_word - theirs_word == (1 if ticks - math.floor(ticks) >= 0.5 else 0), (ours_word, theirs_word)
    assert abs(ours_word * 175 / 65535 - offset) <= abs(theirs_readback - offset)


#: (pibridge's options, Adafruit's: constructor pressure mbar, altitude m, interval s)
#: (pibridge writes altitude and interval only where the chip's differ, so none equals its defaults)
SCD30_SETTINGS = [({"ambient_pressure": 98_765.0}, (987.65, None, None)),
                  ({"ambient_pressure": 70_000.0, "measurement_interval": 5}, (700, None, 5)),
                  ({"ambient_pressure": 140_000.0}, (1400, None, None)),
                  ({"altitude": 350}, (0, 350, None)),
                  ({"altitude": 1, "measurement_interval": 1800}, (0, 1, 1800)),
                  ({"altitude": 2450, "measurement_interval": 3}, (0, 2450, 3))]
SCD30_SETTING_COMMANDS = {bytes.fromhex("0010"): "start continuous (mbar)",
                          bytes.fromhex("5102"): "altitude", bytes.fromhex("4600"): "measurement interval"}


@pytest.mark.parametrize("options, theirs", SCD30_SETTINGS)
def test_scd30_setting_frames(options: dict[str, Any], theirs: tuple[Any, Any, Any],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument frames (command, word, CRC) of pressure compensation, altitude and interval:
    byte-identical to Adafruit's for the same settings (pibridge takes Pa, Adafruit mbar)."""
    adafruit_scd30 = reference("adafruit_scd30")
    from pibridge.drivers.fakes.scd30 import FakeSCD30
    from pibridge.drivers.scd30 import SCD30

    def make(clock: VirtualClock) -> FakeSCD30:
        return FakeSCD30(clock=clock)

    theirs_rig, ours_rig = Rig(0x61, make), Rig(0x61, make)
    theirs_rig.virtual_time(monkeypatch, adafruit_scd30)
    pressure_mbar, altitude, interval = theirs
    sensor = adafruit_scd30.SCD30(theirs_rig.busio, ambient_pressure=pressure_mbar)
    if altitude is not None:
        sensor.altitude = altitude
    if interval is not None:
        sensor.measurement_interval = interval
    from pibridge.drivers.base import read_once
    from pibridge.drivers.errors import NotReadyError

    with contextlib.suppress(NotReadyError):   # set up, first measurement not due yet: settings sent
        read_once(SCD30(bus=ours_rig.bus, clock=ours_rig.clock, **options), ours_rig.clock.sleep)

    def frames(writes: list[bytes]) -> dict[bytes, bytes]:
        return {w[:2]: w for w in writes if w[:2] in SCD30_SETTING_COMMANDS and len(w) == 5}

    ours, adafruits = frames(written_since(ours_rig.bus, 0)), frames(theirs_rig.busio.writes)
    asked = {bytes.fromhex("0010")} | ({bytes.fromhex("5102")} if altitude is not None else set()) \
        | ({bytes.fromhex("4600")} if interval is not None else set())
    for command in asked:
        assert ours.get(command) == adafruits[command], (SCD30_SETTING_COMMANDS[command], ours, adafruits)
