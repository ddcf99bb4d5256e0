"""The driver model: metrics and options declared as data, one ``read()`` = one attempt.

A driver subclass declares, as class attributes:

- ``name``: the registry name (``"bme280"``), ``description``: one line for ``pibridge drivers``;
- ``metrics``: a tuple of `Metric` (key, display name, agent unit or custom type + annotation);
- ``options``: a tuple of `Option` (typed, with default and allowed range), checked by
  `Driver.check_options` before any hardware is touched;
- ``read_time_s`` (from ``start()`` until ``collect()`` may run, bus time included),
  ``min_interval_s`` (minimum spacing between the starts of two samples, which the *caller*
  honours),
  ``retry`` (a `RetryPolicy`: extra attempts within one sample and their spacing): the class
  *defaults*; an instance's own values are ``self.timing``, computed by `Driver.timing_for`
  from its configuration (override that when timing follows the options);
- ``simulator``: ``"module:function"`` of the function that builds this driver on fake hardware
  (see `pibridge.drivers.simulation`), or "" when there is none. A string, so the driver module
  never imports a fake.

The caller owns time (ESPHome's rule): one attempt is taken in two phases, ``start()`` (begin a
measurement; returns how many seconds until it is ready) then ``collect()`` (fetch and convert
it, exactly one attempt: one coherent sample ``{metric_key: value}`` or a
`pibridge.drivers.errors.SensorError`). A driver with nothing to wait for implements only
``collect()`` (or, as older third-party drivers do, ``read()``). Drivers never sleep: retries and
pacing belong to the caller. ``read(sleep)`` is the blocking convenience for one-off reads
(``pibridge read``): start, the *caller's* sleep, collect. ``close()`` releases what the driver
opened itself (never a handle it was given); idempotent.

Everything a profile checker needs is available without hardware, at class level:
`Driver.validate` (every option problem at once), `Driver.timing_for` (read time, spacing and
retry policy of a configuration), `Driver.metrics_for` (the metrics a configuration reports, with
their annotation) and `Driver.resources` (the pins and bus addresses it claims).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pibridge.durations import parse_seconds
from pibridge.protocol import VALUE_UNITS, ValueType

from .errors import ConfigurationError, NotReadyError, SensorError

Value = float | int | bool | str
Sample = dict[str, Value]


@dataclass(frozen=True)
class Metric:
    """One measured quantity. Exactly one of ``unit`` (an agent ``valueUnit``) or
    ``value_type`` (+ ``annotation``) is set, as the agent's create-metrics request requires."""

    key: str
    name: str
    unit: str | None = None
    value_type: ValueType | None = None
    annotation: str = ""

    def __post_init__(self) -> None:
        if (self.unit is None) == (self.value_type is None):
            raise ValueError(f"metric {self.key!r}: give exactly one of unit or value_type")
        if self.unit is not None and self.unit not in VALUE_UNITS:
            raise ValueError(f"metric {self.key!r}: {self.unit!r} is not an agent valueUnit")

    @property
    def unit_label(self) -> str:
        """Human-readable unit for tables: the valueUnit, or ``type [annotation]``."""
        if self.unit is not None:
            return self.unit
        return f"{self.value_type} [{self.annotation}]" if self.annotation else str(self.value_type)


class GpioPin(int):
    """A GPIO pin in BCM numbering. The one option type for pins, so that the bridge can find two
    sensors configured on the same pin (and ``pibridge drivers`` can show ``BCM``)."""

    BCM_MAX = 27


@dataclass(frozen=True)
class Option:
    """One typed driver option. ``kind`` is ``int``, ``float``, ``bool``, ``str`` or `GpioPin`.

    ``choices`` restricts to a set; ``minimum``/``maximum`` bound numbers (inclusive).
    ``duration``: a ``float`` option that is a time in seconds; it also takes ``"50ms"``,
    ``"2s"``, ``"5m"`` (as a profile's ``interval`` does, `pibridge.durations`).
    """

    key: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    hex: bool = False  #: show integer values in hex (I2C addresses), in messages and listings
    duration: bool = False  #: a float of seconds that also takes "50ms", "2s", "5m"

    def convert(self, raw: Any) -> Any:
        """Coerce a value (from TOML or a ``KEY=VALUE`` string) to ``kind`` and range-check it."""
        value = self._coerce(raw)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(self.show(c) for c in self.choices)
            shown = self.show(value) if self.hex else self.show(raw)
            raise ConfigurationError(f"option {self.key}: {shown} is not one of {allowed}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigurationError(f"option {self.key}: {self.show(value)} is below the minimum "
                                     f"{self.show(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigurationError(f"option {self.key}: {self.show(value)} is above the maximum "
                                     f"{self.show(self.maximum)}")
        return value

    def show(self, value: Any) -> str:
        """A value as messages and ``pibridge drivers`` print it: ints in hex when ``hex``
        (``0x76``), numbers as ``%g``, anything else as its repr."""
        if self.hex and isinstance(value, int) and not isinstance(value, bool):
            return f"0x{value:02x}"
        if isinstance(value, float) and self.kind is not str:
            return f"{value:g}"
        return repr(value)

    def _coerce(self, raw: Any) -> Any:
        kind = self.kind
        try:
            if kind is bool:
                if isinstance(raw, bool):
                    return raw
                if isinstance(raw, str) and raw.lower() in _TRUE_WORDS | _FALSE_WORDS:
                    return raw.lower() in _TRUE_WORDS
                raise ValueError
            if kind is GpioPin:
                if isinstance(raw, bool):
                    raise ValueError
                text = str(raw).strip().upper()
                if text.startswith("GPIO"):
                    text = text[4:]
                elif text.startswith("BCM"):
                    text = text[3:]
                pin = int(text, 10)
                if not 0 <= pin <= GpioPin.BCM_MAX:
                    raise ConfigurationError(
                        f"option {self.key}: GPIO {pin} does not exist (BCM numbering, 0–{GpioPin.BCM_MAX})")
                return GpioPin(pin)
            if kind is int:
                if isinstance(raw, bool):
                    raise ValueError
                if isinstance(raw, str):
                    return int(raw, 0)  # allows 0x76
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                return int(raw)
            if kind is float:
                if isinstance(raw, bool):
                    raise ValueError
                value = parse_seconds(raw) if self.duration else float(raw)
                if not math.isfinite(value):
                    raise ValueError
                return value
            if kind is str:
                if not isinstance(raw, str):
                    raise ValueError
                return raw
        except ConfigurationError:
            raise
        except (TypeError, ValueError):
            pass
        else:
            raise TypeError(f"option {self.key}: unsupported kind {kind!r}")
        raise ConfigurationError(f"option {self.key}: {self.show(raw)} is not a valid {self.kind_label}")

    @property
    def kind_label(self) -> str:
        if self.duration:
            return 'duration: seconds or "50ms", "2s"'
        return "GPIO pin (BCM)" if self.kind is GpioPin else self.kind.__name__


_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class RetryPolicy:
    """How the caller retries a failed ``read()`` within one sample: ``attempts`` extra tries,
    ``spacing_s`` apart (at least the driver's ``min_interval_s``)."""

    attempts: int = 2
    spacing_s: float = 0.1


@dataclass(frozen=True)
class Timing:
    """The timing of one configured driver, in seconds.

    ``read_time_s``: from ``start()`` until ``collect()`` may run (the conversion, datasheet
    maximum), bus time included; ``min_interval_s``: the shortest spacing between the starts of two
    samples the chip tolerates (a DHT refuses a read within 2 s of the last; with ``read_twice``
    one sample is two reads); ``retry``: the caller's retries."""

    read_time_s: float = 0.0
    min_interval_s: float = 0.0
    retry: RetryPolicy = RetryPolicy()


@dataclass(frozen=True)
class CollectAgain:
    """What `Driver.collect` returns when one reading takes more than one command-wait-read step
    on the chip (a Sensirion SCD4x/SCD30: ask "data ready?", wait its execution time, read it,
    then ask for the measurement, wait again, read it): the step's command was sent, its reply is
    due in ``wait_s`` seconds, so the caller waits that long (the caller owns time: the driver
    never sleeps) and calls `Driver.collect` again. The steps of one reading count as one attempt
    (its budget is the driver's ``read_time_s``)."""

    wait_s: float


#: A reading needing more steps than this is a driver bug (`read_once` stops it).
MAX_COLLECT_STEPS = 64


#: One reading written as a generator: each ``yield`` hands a wait (seconds) back to the caller,
#: its ``return`` value is the sample.
Steps = Generator[float, None, "Sample"]


class SteppedReading:
    """Drives one reading written as a `Steps` generator through `Driver.start` / `collect`:
    ``begin(steps)`` runs it to its first wait (its first command sent) and returns that wait;
    ``advance()`` runs it to its next wait (`CollectAgain`) or to its end (the sample). A new
    reading closes one left unfinished. Any exception ends the reading and propagates."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._steps: Steps | None = None

    def begin(self, steps: Steps) -> float:
        self.abandon()
        self._steps = steps
        try:
            return next(steps)
        except StopIteration:  # pragma: no cover - every reading sends a command first
            self._steps = None
            raise SensorError(f"{self.label}: a reading without a command") from None
        except BaseException:
            self._steps = None
            raise

    def advance(self) -> Sample | CollectAgain:
        if self._steps is None:
            raise NotReadyError(f"{self.label}: collect() before start()")
        try:
            wait = next(self._steps)
        except StopIteration as done:
            self._steps = None
            sample: Sample = done.value
            return sample
        except BaseException:
            self._steps = None
            raise
        return CollectAgain(wait)

    def abandon(self) -> None:
        """Close a reading left unfinished (its generator's ``finally`` runs)."""
        if self._steps is not None:
            steps, self._steps = self._steps, None
            steps.close()


@dataclass(frozen=True)
class OptionProblem:
    """One problem with a driver configuration: ``key`` is the option ("" for the set as a
    whole), ``message`` one line that names the option but not the driver (the caller adds
    where it was: ``pibridge read`` the driver, a profile the file, line and sensor)."""

    key: str
    message: str


#: GPIO pins (BCM) a bus occupies on the Pi header while that bus is in use.
I2C_BUS_PINS: dict[int, tuple[int, ...]] = {1: (2, 3), 0: (0, 1)}  #: /dev/i2c-1 SDA/SCL; i2c-0 ID EEPROM
SPI_BUS_PINS: dict[int, tuple[int, ...]] = {0: (7, 8, 9, 10, 11)}   #: SPI0 CE1, CE0, MISO, MOSI, SCLK
W1_DEFAULT_GPIO = 4  #: Raspberry Pi OS's dtoverlay=w1-gpio default pin
#: The header UART's TXD/RXD (GPIO 14/15): Raspberry Pi OS's /dev/serial0 link, and the two nodes
#: it links to depending on the model (ttyS0, the mini UART, on a Pi 3/4/Zero W with Bluetooth;
#: ttyAMA0, the PL011, on a Pi 1/2/Zero, a Pi 5, or with Bluetooth disabled).
SERIAL_PORT_PINS: dict[str, tuple[int, ...]] = {"/dev/serial0": (14, 15), "/dev/ttyS0": (14, 15),
                                                "/dev/ttyAMA0": (14, 15)}


@dataclass(frozen=True)
class ChipInput:
    """One input of a chip that several sensors share (AIN1 of the ADS1115 at 0x48 on bus 1):
    no two sensors may read the same one. ``option`` is the option that chose it (where a
    profile problem points). ``common`` marks the negative input of a differential pair, which
    other pairs may use as their negative input too (the ADS1x15's 0-3, 1-3 and 2-3 share AIN3):
    it is shared only between ``common`` claims, never with a positive or single-ended one."""

    bus: int
    address: int
    name: str
    option: str
    common: bool = False


@dataclass(frozen=True)
class Resources:
    """The hardware one configured driver claims, so that two sensors cannot be configured onto
    the same thing: GPIO pins it drives or reads itself, ``(bus, address)`` I2C slots,
    ``(port, device)`` SPI chip selects, 1-Wire device ids (they sit on the w1 master's pin),
    serial ports (``/dev/serial0``: one sensor per port).

    A chip with several inputs (an ADC) may be read by several sensors: its driver names a
    family in ``i2c_shared_by`` (sensors of the same family share the ``i2c`` slots; any other
    sensor there is still a clash) and claims the ``inputs`` it reads, each by one sensor only."""

    gpio: tuple[int, ...] = ()
    i2c: tuple[tuple[int, int], ...] = ()
    spi: tuple[tuple[int, int], ...] = ()
    w1: tuple[str, ...] = ()
    i2c_shared_by: str = ""
    inputs: tuple[ChipInput, ...] = ()
    serial: tuple[str, ...] = ()


class Driver:
    """Base class of every sensor driver. See the module docstring for the declaration contract."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    read_time_s: ClassVar[float] = 0.0
    min_interval_s: ClassVar[float] = 0.0
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    simulator: ClassVar[str] = ""
    #: A valid option set to build the driver with where no user gave one (benchmarks, examples):
    #: its required options filled in. Never a default: a profile, ``pibridge read`` and
    #: ``--simulate`` use the user's options only, so a missing required option fails everywhere.
    example_options: ClassVar[Mapping[str, Any]] = {}
    #: Metrics whose newest value the bridge keeps across restarts and hands back through
    #: `resume` before the first read (a pulse counter's running ``total``). Empty: none.
    resumable_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        self.config: dict[str, Any] = self.check_options(options)
        self.timing: Timing = self.timing_for(self.config)
        self._configured_metrics: tuple[Metric, ...] = self.metrics_for(self.config)
        self._closed = False

    # -- declaration helpers (class level: no hardware, no instance) ----------------------------
    @classmethod
    def validate(cls, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[OptionProblem]]:
        """Every problem of ``given`` at once: unknown keys, types, ranges, required ones, then
        the driver's own cross-option rules (`check_config`) once each option is valid.
        Returns (every option with defaults filled in, problems). Touches no hardware."""
        known = {o.key: o for o in cls.options}
        listed = ", ".join(sorted(known)) or "none"
        problems = [OptionProblem(key, f"unknown option {key} (known options: {listed})")
                    for key in sorted(set(given) - set(known))]
        config: dict[str, Any] = {}
        for key, option in known.items():
            try:
                if key in given and given[key] is not None:
                    config[key] = option.convert(given[key])
                elif option.required:
                    problems.append(OptionProblem(key, f"option {key} is required ({option.help})"))
                else:
                    config[key] = option.default
            except ConfigurationError as exc:
                problems.append(OptionProblem(key, str(exc)))
        if not problems:
            problems.extend(cls.check_config(config))
        return config, problems

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[OptionProblem]:
        """The driver's rules across options (e.g. a device id's form, a metric list), on a config
        whose every option is already converted. The base driver has none."""
        return []

    @classmethod
    def check_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """`validate` that raises: a `ConfigurationError` naming the driver and every problem."""
        config, problems = cls.validate(given)
        if problems:
            raise ConfigurationError(f"{cls.name}: " + "; ".join(p.message for p in problems))
        return config

    @classmethod
    def timing_for(cls, config: Mapping[str, Any]) -> Timing:
        """The timing of a configuration; by default the class's declared values. Drivers whose
        conversion time follows their options (oversampling, MTreg) override this."""
        return Timing(cls.read_time_s, cls.min_interval_s, cls.retry)

    @classmethod
    def metrics_for(cls, config: Mapping[str, Any]) -> tuple[Metric, ...]:
        """The metrics a configuration (one `validate` accepted) reports, each with its unit or
        type and annotation: what a profile checker and ``pibridge check`` know before any
        hardware. By default every declared metric. Drivers whose metrics follow their options
        override this (BME280's ``metrics`` and ``osrs_*``, a digital input's ``annotation``);
        `active_metrics` starts from it."""
        return cls.metrics

    @classmethod
    def resources(cls, config: Mapping[str, Any]) -> Resources:
        """The pins and bus slots a configuration claims; by default its `GpioPin` options."""
        return Resources(gpio=tuple(v for v in config.values() if isinstance(v, GpioPin)))

    def active_metrics(self) -> tuple[Metric, ...]:
        """The metrics this instance will report: `metrics_for` its configuration (worked out
        once, in ``__init__``). A driver whose chip decides (BME280 vs BMP280) narrows this
        further after detection, never widens it."""
        return self._configured_metrics

    def resume(self, values: Mapping[str, Value]) -> None:
        """Continue from stored values of `resumable_metrics` (the newest the bridge stored,
        raw as `collect` returned them; only the keys it has). Called once after construction,
        before the first `start`/`collect`, by the caller that keeps them (the scheduler, from
        the queue's resume table). Default: nothing to resume."""

    # -- the hardware contract -----------------------------------------------------------------
    def start(self) -> float:
        """Begin one measurement; returns the seconds until `collect` may run. Default: nothing
        to start (the whole attempt happens in `collect`)."""
        return 0.0

    def collect(self) -> Sample:
        """Fetch and convert the measurement `start` began: exactly one attempt, one coherent
        sample, or a `SensorError`. Collecting before the returned time has passed gets what the
        chip gives then (a stale value, or `NotReadyError`). A reading of several command/wait/read
        steps returns `CollectAgain` (wait, then collect again) between its steps. Default: a
        driver that implements only ``read()`` (single phase) is read here."""
        if type(self).read is Driver.read:
            raise NotImplementedError(f"{type(self).__name__} must implement collect() or read()")
        return self.read()

    def read(self, sleep: Callable[[float], None] = time.sleep) -> Sample:
        """One blocking attempt for one-off callers: `start`, ``sleep`` (the caller's) for the
        time it returns, `collect`. The scheduler never calls this."""
        return read_once(self, sleep)

    def group_key(self) -> Hashable | None:
        """Sensors whose drivers return the same non-None key and are due together may share one
        `start_group` (DS18B20 probes on one 1-Wire master: one bulk conversion)."""
        return None

    def exclusive_key(self) -> Hashable | None:
        """Sensors whose drivers return the same non-None key never run attempts at the same time
        (the scheduler starts the next one's ``start()`` after the last one's ``collect()``): the
        channels of one ADC share its config register."""
        return None

    @classmethod
    def start_group(cls, drivers: Sequence[Driver]) -> float:
        """Start one measurement for all of ``drivers`` (same `group_key`); returns the seconds
        until each one's `collect` may run. Default: each starts on its own."""
        return max((d.start() for d in drivers), default=0.0)

    def close(self) -> None:
        """Release what this driver opened. Idempotent; subclasses extend `_release`."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        """Free what the driver opened itself; the base driver opened nothing."""

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_timing(timing: Timing) -> str:
    """One line for ``pibridge drivers`` / ``pibridge read``."""
    return (f"read time {timing.read_time_s * 1000:g} ms, min interval {timing.min_interval_s:g} s, "
            f"retries {timing.retry.attempts} x {timing.retry.spacing_s:g} s")


def default_timing(cls: type[Driver]) -> Timing:
    """The timing of ``cls`` with every option at its default (required options have no default:
    then the class's declared values)."""
    config = {o.key: o.default for o in cls.options}
    try:
        return cls.timing_for(config)
    except (KeyError, TypeError, ValueError, SensorError):
        return Timing(cls.read_time_s, cls.min_interval_s, cls.retry)


def check_sample(driver: Driver, sample: Mapping[str, Value]) -> Sample:
    """Guard the driver contract on the caller's side: the keys are the driver's active metrics
    and no value is None or NaN/inf. Raises `SensorError` naming the driver otherwise."""
    expected = {m.key for m in driver.active_metrics()}
    if set(sample) != expected:
        raise SensorError(f"{driver.name}: sample keys {sorted(sample)} != metrics {sorted(expected)}")
    for key, value in sample.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            raise SensorError(f"{driver.name}: metric {key} has no valid value ({value!r})")
    return dict(sample)


def read_once(driver: Driver, sleep: Callable[[float], None]) -> Sample:
    """One attempt of any driver: `Driver.start`, ``sleep`` for the time it returns, `Driver.collect`
    (again after each `CollectAgain` wait, for a multi-step reading)."""
    wait = driver.start()
    for _ in range(MAX_COLLECT_STEPS):
        if wait > 0:
            sleep(wait)
        result = driver.collect()
        if not isinstance(result, CollectAgain):
            return result
        wait = result.wait_s
    raise SensorError(f"{driver.name}: more than {MAX_COLLECT_STEPS} collect steps in one reading")


def read_with_retries(driver: Driver, sleep: Callable[[float], None] = time.sleep) -> Sample:
    """One sample the way a one-off caller should take it: up to 1 + ``retry.attempts`` attempts
    (each `start`, ``sleep`` until ready, `collect`) spaced ``max(retry.spacing_s,
    min_interval_s)`` seconds of the driver's own `Timing`; a non-retryable error stops at once.
    The sample is checked with `check_sample`; raises the last `SensorError`. All waiting is
    ``sleep``, the caller's."""
    timing = driver.timing
    spacing = max(timing.retry.spacing_s, timing.min_interval_s)
    for attempt in range(timing.retry.attempts + 1):
        try:
            return check_sample(driver, read_once(driver, sleep))
        except SensorError as exc:
            if not exc.retryable or attempt == timing.retry.attempts:
                raise
        sleep(spacing)
    raise AssertionError("unreachable")
