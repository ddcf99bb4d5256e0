"""DHT22 (AM2302) and DHT11 temperature/humidity sensors via adafruit-circuitpython-dht 4.0.12.

The library object is built lazily by a hardware factory (``board`` and ``adafruit_dht`` are
imported only then; they come with the ``pi`` extra) or injected as ``sensor=`` (tests and
``--simulate`` give `pibridge.drivers.fakes.dht.FakeDHT`). The library caches values for 2 s
after every attempt, failed or not, and then hands back stale values or ``None``; this driver
therefore enforces its own spacing (injectable monotonic clock) and raises `NotReadyError`
instead of ever returning them.

Spacing is counted like the library counts it: from the *start* of one attempt to the start of
the next (the library stamps ``_last_called`` before it captures), which is also how the scheduler
spaces samples (from one ``start()`` to the next).

``read_twice`` (the sensor answers with the measurement it took at the *previous* request) is
two phases: ``start()`` makes the discarded attempt and returns what is left of the 2.1 s
spacing, ``collect()`` the attempt that counts. One sample therefore holds two attempts, and two
samples need 2 × 2.1 s between their starts. The driver never sleeps.

Error mapping (the library raises plain ``RuntimeError``):

=============================================  ======================================
"DHT sensor not found, check wiring"           BusError (retryable: < 10 pulses happens
                                               on flaky timing as well as bad wiring)
"A full buffer was not returned. Try again."   BadDataError
"Checksum did not validate. Try again."        BadDataError
"Received unplausible data. Try again."        ImplausibleValueError
any other RuntimeError / OSError               BusError
=============================================  ======================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from .base import Driver, GpioPin, Metric, Option, RetryPolicy, Sample, Timing
from .errors import (
    BadDataError,
    BusError,
    ConfigurationError,
    ImplausibleValueError,
    NotReadyError,
    SensorError,
)
from .gpio import missing_library

log = logging.getLogger(__name__)

LIBRARY_CACHE_S = 2.0  # adafruit_dht returns cached values within 2 s of the last attempt
SPACING_MARGIN_S = 0.1  # our clock reads after the library's, and the library compares with ">"
MIN_SPACING_S = LIBRARY_CACHE_S + SPACING_MARGIN_S
#: A caller that spaces reads by exactly ``min_interval_s`` must not be refused because of float
#: rounding (1000.0 + 2.1 - 1000.0 < 2.1); the margin above keeps the library's cache out of reach.
SPACING_TOLERANCE_S = 1e-6
CAPTURE_S = 0.25  # the library's pulse capture window
RH_RANGE_PCT = (0.0, 100.0)
CLONE_ARTEFACT_BELOW_C = -1000.0  # two's-complement clones decode to about −3276.7 °C
DHT22_RANGE_C = (-40.0, 80.0)
DHT11_RANGE_C = (0.0, 50.0)

MSG_NOT_FOUND = "DHT sensor not found"
MSG_SHORT = "A full buffer was not returned"
MSG_CHECKSUM = "Checksum did not validate"
MSG_UNPLAUSIBLE = "Received unplausible data"


class DHTSensor(Protocol):
    """What the driver uses of an adafruit_dht sensor object."""

    @property
    def temperature(self) -> float | None: ...
    @property
    def humidity(self) -> float | None: ...
    def exit(self) -> None: ...


def map_library_error(exc: Exception) -> SensorError:
    """A typed error for what adafruit_dht raised."""
    text = str(exc)
    if isinstance(exc, RuntimeError):
        if text.startswith(MSG_NOT_FOUND):
            return BusError(f"{text} (no response pulses; retryable, DHTs miss reads on timing too)")
        if text.startswith((MSG_SHORT, MSG_CHECKSUM)):
            return BadDataError(text)
        if text.startswith(MSG_UNPLAUSIBLE):
            return ImplausibleValueError(text)
    return BusError(f"{type(exc).__name__}: {text}")


def check_plausible(temperature: float | None, humidity: float | None,
                    t_range: tuple[float, float]) -> tuple[float, float]:
    """°C and %RH if they are a real reading; `NotReadyError` for None (the library's cache after a
    failure), `ImplausibleValueError` for the clone artefact and out-of-datasheet values."""
    if temperature is None or humidity is None:
        raise NotReadyError("the library returned no value (cached result of a failed read)")
    if temperature < CLONE_ARTEFACT_BELOW_C:
        raise ImplausibleValueError(
            f"{temperature} °C: a clone sending negative temperatures in two's complement")
    if not t_range[0] <= temperature <= t_range[1]:
        raise ImplausibleValueError(f"{temperature} °C is outside the datasheet range {t_range}")
    if not RH_RANGE_PCT[0] <= humidity <= RH_RANGE_PCT[1]:
        raise ImplausibleValueError(f"{humidity} %RH is outside 0..100")
    return float(temperature), float(humidity)


def _board_pin(pin: int) -> Any:
    # Blinka checks its platform dependencies when ``board`` is imported and, on a terminal, offers
    # to pip-install them into the running environment: `pibridge.cli.main` (and the systemd unit)
    # set BLINKA_SKIP_DEPENDENCY_CHECK once, before any thread starts; a driver sets no variable.
    try:
        import board
    except ModuleNotFoundError as exc:
        if exc.name == "board":  # not Blinka missing one of its own modules (gpiod on a Pi)
            raise missing_library("Adafruit Blinka (board)", "a DHT sensor", extra="dht") from exc
        raise ConfigurationError(f"cannot import board (Adafruit Blinka): {exc}") from exc
    except Exception as exc:  # Blinka raises assorted errors on unknown platforms
        raise ConfigurationError(f"cannot import board (Adafruit Blinka): {exc} "
                                 "(DHT sensors need a Raspberry Pi; use --simulate elsewhere)") from exc
    try:
        return getattr(board, f"D{pin}")
    except AttributeError:
        raise ConfigurationError(
            f"this board has no pin D{pin} (board {getattr(board, 'board_id', '?')}); "
            "DHT sensors need a Raspberry Pi GPIO (use --simulate elsewhere)") from None


class _DHTBase(Driver):
    metrics = (
        Metric("temperature", "Temperature", unit="SI.Temperature.CELSIUS"),
        Metric("humidity", "Relative humidity", unit="NoSI.Dimensionless.PERCENT"),
    )
    options = (
        Option("pin", GpioPin, None, "data pin (BCM)", required=True),
        Option("use_pulseio", bool, None, "use libgpiod pulsein (default: the library's choice)"),
        Option("read_twice", bool, False,
               "read twice ≥ 2 s apart and keep the second value (the sensor returns the previous "
               "measurement)"),
    )
    read_time_s = CAPTURE_S
    min_interval_s = MIN_SPACING_S
    retry = RetryPolicy(attempts=2, spacing_s=MIN_SPACING_S)
    simulator = "pibridge.drivers.fakes.dht:simulate"
    example_options: ClassVar[Mapping[str, Any]] = {"pin": 17}
    t_range_c: ClassVar[tuple[float, float]] = DHT22_RANGE_C
    library_class: ClassVar[str] = "DHT22"

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """With ``read_twice`` one sample is two attempts 2.1 s apart (start to start) and ends
        with the second capture: 2.1 + 0.25 s from start to the end of collect; the next sample's
        first attempt must then come 2.1 s after the second, so starts are 2 × 2.1 s apart."""
        if config.get("read_twice"):
            return Timing(MIN_SPACING_S + CAPTURE_S, 2 * MIN_SPACING_S, cls.retry)
        return Timing(cls.read_time_s, cls.min_interval_s, cls.retry)

    def __init__(self, sensor: DHTSensor | None = None, *, clock: Callable[[], float] = time.monotonic,
                 owns_sensor: bool | None = None, **options: Any) -> None:
        """``sensor``: a library-level sensor object to use instead of building
        ``adafruit_dht.DHT22(pin)``; it is not ``exit()``-ed on close unless ``owns_sensor``
        (by default the driver owns only the sensor it built itself). ``clock``: monotonic
        seconds, for the spacing the library's cache needs."""
        super().__init__(**options)
        self._sensor = sensor
        self._owns_sensor = sensor is None if owns_sensor is None else owns_sensor
        self._clock = clock
        self._last_attempt: float | None = None

    def _hardware(self) -> DHTSensor:
        """The real library object, built on first use."""
        if self._sensor is None:
            pin = _board_pin(self.config["pin"])
            try:
                import adafruit_dht
            except ImportError as exc:
                raise missing_library("adafruit-circuitpython-dht", "a DHT sensor", extra="dht") from exc
            kwargs = {} if self.config["use_pulseio"] is None else {"use_pulseio": self.config["use_pulseio"]}
            try:
                self._sensor = getattr(adafruit_dht, self.library_class)(pin, **kwargs)
            except Exception as exc:  # the library raises RuntimeError, ValueError, NameError (PulseIn)…
                raise BusError(
                    f"cannot set up {self.library_class} on GPIO{self.config['pin']}: {exc}") from exc
        return self._sensor

    def _attempt(self) -> tuple[float, float]:
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < MIN_SPACING_S - SPACING_TOLERANCE_S:
            raise NotReadyError(f"{self.name}: {now - self._last_attempt:.2f} s since the last attempt "
                                f"began; the sensor needs {MIN_SPACING_S} s")
        sensor = self._hardware()
        self._last_attempt = now  # stamped before the capture, as the library stamps its own
        try:
            temperature = sensor.temperature
            humidity = sensor.humidity  # cached from the same frame
        except Exception as exc:  # RuntimeError by design; TypeError/NameError off a working platform
            raise map_library_error(exc) from exc
        return check_plausible(temperature, humidity, self.t_range_c)

    def start(self) -> float:
        """With ``read_twice``: the discarded attempt (its failure does not matter, the second
        still follows); returns what is left of the spacing before `collect` (the capture has
        already used part of it). Otherwise nothing to start."""
        if not self.config["read_twice"]:
            return 0.0
        try:
            self._attempt()
        except NotReadyError:
            raise
        except SensorError as exc:
            log.debug("%s: first of two reads failed (%s); the second still follows", self.name, exc)
        if self._last_attempt is None:  # the library could not be set up: collect tries again
            return 0.0
        return max(0.0, MIN_SPACING_S - (self._clock() - self._last_attempt))

    def collect(self) -> Sample:
        """One attempt: °C and %RH."""
        temperature, humidity = self._attempt()
        return {"temperature": temperature, "humidity": humidity}

    def _release(self) -> None:
        if self._sensor is not None and self._owns_sensor:
            try:
                self._sensor.exit()  # stops the library's libgpiod_pulsein helper process
            except Exception as exc:
                log.warning("%s: exit() failed: %s", self.name, exc)


class DHT22(_DHTBase):
    """DHT22 / AM2302: −40..80 °C, 0..100 %RH, one reading per 2 s."""

    name = "dht22"
    description = "DHT22/AM2302 temperature and humidity (adafruit-circuitpython-dht)"


class DHT11(_DHTBase):
    """DHT11: 0..50 °C, 20..80 %RH (1 °C / 1 % steps), one reading per 2 s."""

    name = "dht11"
    description = "DHT11 temperature and humidity (adafruit-circuitpython-dht)"
    t_range_c = DHT11_RANGE_C
    library_class = "DHT11"
