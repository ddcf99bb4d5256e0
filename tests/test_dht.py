"""DHT22/DHT11 driver against the library-level fake (wire frames decoded like adafruit_dht)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pibridge.drivers.base import check_sample
from pibridge.drivers.dht import DHT11, DHT22, MIN_SPACING_S, map_library_error
from pibridge.drivers.errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from pibridge.drivers.fakes.clock import VirtualClock
from pibridge.drivers.fakes.dht import (
    MSG_CHECKSUM,
    MSG_NOT_FOUND,
    MSG_SHORT,
    MSG_UNPLAUSIBLE,
    FakeDHT,
    Fault,
    Measurement,
    dht22_frame,
)
from pibridge.drivers.simulation import Environment, SimulatedWorld


def make(script=(), cls=DHT22, **options) -> tuple[DHT22, FakeDHT, VirtualClock]:
    clock = VirtualClock()
    fake = FakeDHT(dht11=cls is DHT11, clock=clock, script=script)
    driver = cls(sensor=fake, clock=clock.monotonic, pin=4, **options)
    return driver, fake, clock


# -- the fake itself behaves like adafruit_dht -------------------------------------------------------
def test_fake_library_cache_returns_none_after_failed_first_read() -> None:
    clock = VirtualClock()
    fake = FakeDHT(clock=clock, script=[Fault.CHECKSUM, Measurement(20.0, 50.0)])
    with pytest.raises(RuntimeError, match=r"^Checksum did not validate\. Try again\.$"):
        _ = fake.temperature
    assert fake.temperature is None and fake.humidity is None  # within 2 s: cached, no read
    assert fake.attempts == 1
    clock.sleep(2.01)
    assert (fake.temperature, fake.humidity) == (20.0, 50.0)


def test_fake_exact_messages() -> None:
    for fault, message in ((Fault.NOT_FOUND, MSG_NOT_FOUND), (Fault.SHORT, MSG_SHORT),
                           (Fault.CHECKSUM, MSG_CHECKSUM), (Fault.RH_OVER_100, MSG_UNPLAUSIBLE)):
        fake = FakeDHT(script=[fault])
        with pytest.raises(RuntimeError) as info:
            fake.measure()
        assert str(info.value) == message


def test_fake_negative_encodings() -> None:
    assert dht22_frame(-10.1, 45.0)[2:4] == bytes([0x80, 0x65])  # sign-magnitude
    assert dht22_frame(-0.1, 45.0, clone=True)[2:4] == b"\xff\xff"
    assert FakeDHT(script=[Measurement(-10.1, 45.0)]).temperature == -10.1
    assert FakeDHT(script=[Measurement(-0.1, 45.0, clone=True)]).temperature == -3276.7


def test_fake_matches_library_decoding() -> None:
    """Same frame, same pulses, through the real adafruit_dht decoder."""
    adafruit_dht = pytest.importorskip("adafruit_dht")
    from pibridge.drivers.fakes.dht import frame_to_pulses

    lib = adafruit_dht.DHT22.__new__(adafruit_dht.DHT22)
    for frame in (dht22_frame(23.4, 56.7), dht22_frame(-3.2, 99.9), dht22_frame(-0.1, 10, clone=True)):
        pulses = frame_to_pulses(frame)
        decoded = bytes(lib._pulses_to_binary(pulses, s, s + 16) for s in range(0, 80, 16))
        assert decoded == frame


# -- driver -----------------------------------------------------------------------------------
def test_reads_temperature_and_humidity_from_one_frame() -> None:
    driver, fake, clock = make([Measurement(23.4, 56.7)])
    assert check_sample(driver, driver.read(clock.sleep)) == {"temperature": 23.4, "humidity": 56.7}
    assert fake.attempts == 1


def test_failure_then_retry_respecting_spacing() -> None:
    driver, fake, clock = make([Fault.CHECKSUM, Measurement(21.0, 40.0)])
    timing = driver.timing
    assert timing.retry.spacing_s >= 2.0 and timing.min_interval_s >= 2.0
    errors: list[SensorError] = []
    sample = None
    for attempt in range(1 + timing.retry.attempts):
        if attempt:
            clock.sleep(timing.retry.spacing_s)
        try:
            sample = driver.read()
            break
        except SensorError as exc:
            assert exc.retryable
            errors.append(exc)
    assert sample == {"temperature": 21.0, "humidity": 40.0}
    assert [type(e) for e in errors] == [BadDataError]
    assert fake.attempts == 2  # the retry really read the sensor (no cached None)


def test_spacing_enforced() -> None:
    driver, fake, clock = make([Fault.SHORT])
    with pytest.raises(BadDataError):
        driver.read()
    clock.sleep(1.5)
    with pytest.raises(NotReadyError, match="needs"):
        driver.read()
    assert fake.attempts == 1
    clock.sleep(MIN_SPACING_S)
    assert driver.read()["temperature"] == 21.0


def test_none_never_returned() -> None:
    """Even when the library object hands back its cached None (someone else read it)."""
    driver, fake, _ = make([Fault.CHECKSUM])
    with pytest.raises(RuntimeError):
        fake.measure()  # a failed attempt outside the driver, just now
    with pytest.raises(NotReadyError, match="no value"):
        driver.read()


@pytest.mark.parametrize(("fault", "error"), [
    (Fault.NOT_FOUND, BusError), (Fault.SHORT, BadDataError), (Fault.CHECKSUM, BadDataError),
    (Fault.RH_OVER_100, ImplausibleValueError),
])
def test_error_mapping(fault: Fault, error: type[SensorError]) -> None:
    driver, _, _ = make([fault])
    with pytest.raises(error) as info:
        driver.read()
    assert type(info.value) is error and info.value.retryable


def test_unknown_runtime_error_is_bus_error() -> None:
    assert isinstance(map_library_error(RuntimeError("Timed out waiting for PulseIn message")), BusError)
    assert isinstance(map_library_error(OSError(5, "Input/output error")), BusError)


def test_clone_artefact_is_implausible() -> None:
    driver, _, _ = make([Measurement(-0.1, 45.0, clone=True)])
    with pytest.raises(ImplausibleValueError, match="two's complement"):
        driver.read()


def test_negative_sign_magnitude_is_fine() -> None:
    driver, _, _ = make([Measurement(-12.3, 80.0)])
    assert driver.read() == {"temperature": -12.3, "humidity": 80.0}


def test_out_of_datasheet_range() -> None:
    driver, _, _ = make([dht22_frame(95.0, 20.0)])
    with pytest.raises(ImplausibleValueError, match="datasheet"):
        driver.read()
    driver11, _, _ = make([Measurement(55.0, 50.0)], cls=DHT11)  # DHT11: 0..50 °C
    with pytest.raises(ImplausibleValueError, match="datasheet"):
        driver11.read()


def test_dht11_sign_bit_is_ignored_by_the_library() -> None:
    """Known library limitation, kept visible: a DHT11 sign bit is dropped, −5 °C decodes as 5."""
    driver, _, _ = make([Measurement(-5.0, 50.0)], cls=DHT11)
    assert driver.read()["temperature"] == 5.0


def test_dht11_reads() -> None:
    driver, _, _ = make([Measurement(24.6, 41.0)], cls=DHT11)
    assert driver.read() == {"temperature": 24.6, "humidity": 41.0}


def test_close_exits_only_a_sensor_the_driver_owns() -> None:
    driver, fake, _ = make()  # handed in: the caller's to exit()
    driver.close()
    assert not fake.exited
    owner = DHT22(sensor=fake, owns_sensor=True, pin=4)
    owner.close()
    owner.close()
    assert fake.exited


def test_unexpected_library_exceptions_become_typed_errors() -> None:
    """Off a working platform adafruit_dht raises TypeError or NameError (its PulseIn is missing)."""

    class BrokenLibrarySensor:
        @property
        def temperature(self) -> float:
            raise TypeError("'NoneType' object is not callable")

        humidity = temperature

        def exit(self) -> None:
            """Nothing to stop."""

    with pytest.raises(BusError, match="TypeError"):
        DHT22(sensor=BrokenLibrarySensor(), pin=4).read()


def test_read_twice_keeps_second_value() -> None:
    driver, fake, clock = make([Measurement(10.0, 30.0), Measurement(11.5, 31.0)], read_twice=True)
    assert driver.timing.read_time_s >= 2.0 > DHT22.read_time_s == DHT22.timing_for({}).read_time_s
    t0 = clock.monotonic()
    assert driver.read(clock.sleep) == {"temperature": 11.5, "humidity": 31.0}
    assert clock.monotonic() - t0 >= 2.0  # waited on the caller's sleep, not really
    assert fake.attempts == 2


def test_read_twice_is_two_phases_and_the_driver_never_sleeps() -> None:
    driver, fake, clock = make([Measurement(10.0, 30.0), Measurement(11.5, 31.0)], read_twice=True)
    t0 = clock.monotonic()
    wait = driver.start()  # the discarded attempt
    assert fake.attempts == 1 and wait == pytest.approx(2.1 - 0.25)  # the capture used 0.25 s
    assert clock.monotonic() - t0 == pytest.approx(0.25)  # only the fake's capture, no spacing
    with pytest.raises(NotReadyError, match=r"needs 2\.1 s"):
        driver.collect()  # too early: the driver refuses, the library would hand back its cache
    clock.sleep(wait)
    assert driver.collect() == {"temperature": 11.5, "humidity": 31.0}
    assert fake.attempts == 2


def test_without_read_twice_start_does_nothing() -> None:
    driver, fake, _clock = make([Measurement(10.0, 30.0)])
    assert driver.start() == 0.0 and fake.attempts == 0
    assert driver.collect() == {"temperature": 10.0, "humidity": 30.0}


def test_read_twice_ignores_a_failed_first_read() -> None:
    driver, _, clock = make([Fault.CHECKSUM, Measurement(11.5, 31.0)], read_twice=True)
    assert driver.read(clock.sleep) == {"temperature": 11.5, "humidity": 31.0}


def test_pin_is_a_gpio_option() -> None:
    driver, _, _ = make()
    assert DHT22.resources(driver.config).gpio == (4,)


def test_driver_modules_import_no_hardware_library() -> None:
    code = ("import sys, pibridge.drivers.dht, pibridge.drivers.ds18b20, pibridge.drivers.mcp3008, "
            "pibridge.drivers.digital_input, "
            "pibridge.drivers.cpu_temperature; "
            "print(sorted(m for m in ('board', 'adafruit_dht', 'gpiozero', 'digitalio') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_simulated() -> None:
    env = Environment(seed=1, noise=0.0, clock=lambda: 10 * 3600.0)
    clock = VirtualClock()
    with SimulatedWorld(env, clock=clock) as world:
        driver = world.build("dht22", {"pin": 17, "read_twice": True})
        sample = check_sample(driver, driver.read(clock.sleep))
        fake = driver._sensor
        assert isinstance(fake, FakeDHT) and fake.attempts == 2
    assert fake.exited  # the world closed the driver, which owned the fake
    assert sample["temperature"] == pytest.approx(env.air_temperature(), abs=0.05)
    assert 5.0 <= sample["humidity"] <= 99.0


def test_reads_spaced_by_exactly_the_declared_interval_all_succeed() -> None:
    """A scheduler that honours ``min_interval_s`` to the digit is never refused (float rounding
    of 1000.0 + 2.1 - 1000.0 once made every third read a NotReadyError)."""
    clock = VirtualClock()
    driver = DHT22(sensor=FakeDHT(clock=clock), clock=clock, pin=4)
    for _ in range(30):
        clock.sleep(DHT22.min_interval_s)
        assert set(driver.read()) == {"temperature", "humidity"}


@pytest.mark.parametrize("read_twice", [False, True])
def test_samples_started_exactly_min_interval_apart_all_succeed(read_twice: bool) -> None:
    """The scheduler spaces samples from one ``start()`` to the next and waits what ``start``
    returned before ``collect``: at exactly ``min_interval_s`` every sample succeeds (with
    ``read_twice`` the old 2.1 s made every other sample a NotReadyError)."""
    clock = VirtualClock()
    fake = FakeDHT(clock=clock)
    driver = DHT22(sensor=fake, clock=clock, pin=4, read_twice=read_twice)
    timing = driver.timing
    assert timing.min_interval_s == pytest.approx(4.2 if read_twice else 2.1)
    assert timing.read_time_s == pytest.approx(2.35 if read_twice else 0.25)
    for _ in range(20):
        slot = clock.monotonic()
        clock.sleep(driver.start())
        assert set(driver.collect()) == {"temperature", "humidity"}
        assert clock.monotonic() - slot <= timing.read_time_s + 1e-9
        clock.now = slot + timing.min_interval_s
    assert fake.attempts == 20 * (2 if read_twice else 1)


@pytest.mark.parametrize("library", ["board", "adafruit_dht"])
def test_missing_hardware_library_names_the_dht_extra(monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    import os

    monkeypatch.setitem(sys.modules, library, None)  # what `import` sees when it is not installed
    if library == "adafruit_dht":  # get past the board lookup to the library import
        monkeypatch.setattr("pibridge.drivers.dht._board_pin", lambda pin: object())
    before = dict(os.environ)
    with pytest.raises(ConfigurationError, match=r"pip install 'pibridge\[dht\]'") as info:
        DHT22(pin=4).read(lambda s: None)
    assert "\n" not in str(info.value) and not info.value.retryable
    assert dict(os.environ) == before  # a driver sets no environment variable (the CLI does, once)


def test_the_cli_turns_off_blinkas_install_prompt_once_before_any_thread() -> None:
    """`pibridge.cli.main` sets BLINKA_SKIP_DEPENDENCY_CHECK first thing (a user's own value stays)."""
    import os

    code = ("import os, threading; from pibridge.cli import main; "
            "assert threading.active_count() == 1; main(['drivers']); "
            "print('BLINKA', os.environ.get('BLINKA_SKIP_DEPENDENCY_CHECK'))")
    env = {k: v for k, v in os.environ.items() if k != "BLINKA_SKIP_DEPENDENCY_CHECK"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.splitlines()[-1] == "BLINKA 1"
    env["BLINKA_SKIP_DEPENDENCY_CHECK"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.splitlines()[-1] == "BLINKA 0"
