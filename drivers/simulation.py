"""Simulation for ``--simulate`` and tests: a greenhouse `Environment` and the `SimulatedWorld`
that builds drivers on fake hardware fed from it.

One world per run::

    world = SimulatedWorld(Environment(seed=1))
    bme = world.build("bme280", {"address": "0x77"})   # a real BME280 driver on a fake bus
    probe = world.build("ds18b20", {"device_id": "28-0000075e3a1c"})
    ...
    world.close()                                       # drivers, fakes, timers, temp files

The world holds the fakes that sensors share (one fake SMBus per bus number, one w1 tree whose one
master carries every simulated probe, one gpiozero ``MockFactory``, one set of mock input pins
for the door contacts, one fake chip per SPI chip select) and runs the environment's timeline: a
timer drives each simulated door's mock pin at the scheduled open/close times, so edges fire
between reads.

Drivers are built by *simulators*: functions ``simulate(world, cls, options) -> Driver`` that
wire the fake hardware and call the driver's public constructor with it. A driver class names its
simulator as a string, ``simulator = "package.module:function"`` (the built-in ones live in
`pibridge.drivers.fakes`, a third-party package's in its own module), so no driver module imports a
fake; a driver without one gets `NoSimulationError`.

All environment signals are functions of the environment's clock plus seeded noise, so two
sensors of the same greenhouse agree (humidity falls when temperature rises) and a run is
reproducible with a seed.
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .base import Driver
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .fakes.gpio import MockInputPins
    from .fakes.i2c import FakeI2CDevice, FakeSMBus

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0
#: Hours of the simulated day (UTC: the clock's epoch seconds modulo a day, the same whatever the
#: machine's time zone, so tests are reproducible; away from UTC the simulated sun is shifted):
#: the daily temperature maximum, sunrise and sunset.
WARMEST_HOUR = 14.0
SUNRISE_HOUR = 6.0
SUNSET_HOUR = 20.0
#: the simulated daily watering (UTC hour) of soil bed 0; bed n is watered n steps later
WATERING_HOUR = 7.0
BED_WATERING_STEP_H = 5.0
#: CO₂ in a closed greenhouse: highest before dawn (a night of respiration), lowest mid-afternoon
#: (plants draw it down in daylight); ppm.
CO2_HIGHEST_HOUR = 4.0
CO2_MEAN_PPM = 800.0
CO2_DAILY_SWING_PPM = 700.0
#: how far the door timer looks for the next edge before just waking up to look again
MAX_DOOR_SLOTS_AHEAD = 1000


@dataclass
class Environment:
    """A greenhouse: day/night temperature curve with noise, humidity anti-correlated with it,
    light following the sun, soil beds watered once a day and drying in between, a door that
    opens now and then.

    ``clock`` returns seconds since the epoch (inject a fake clock in tests); ``seed`` makes the
    noise and the door's timeline reproducible. Units: °C, %RH, Pa, lx, volts, seconds.

    The door: time is cut into slots of ``door_period_s``; in each slot, with probability
    ``door_open_probability`` (drawn from the seed and the slot number alone, so the timeline does
    not depend on who looks when), the door opens once for ``door_open_s``. Tests make edges
    frequent and certain with e.g. ``door_period_s=0.2, door_open_s=0.1,
    door_open_probability=1.0``.
    """

    mean_temperature_c: float = 22.0
    daily_swing_c: float = 6.0
    mean_humidity_pct: float = 60.0
    humidity_per_degree_pct: float = 3.0
    pressure_pa: float = 101_325.0
    peak_lux: float = 60_000.0
    soil_volts_dry: float = 2.8
    soil_volts_wet: float = 1.2
    soil_watered_pct: float = 85.0
    soil_driest_pct: float = 15.0
    soil_drying_h: float = 30.0
    door_open_probability: float = 0.05
    door_period_s: float = 600.0
    door_open_s: float = 45.0
    #: weather for pulse counters (rain gauge, anemometer, flow meter; see `rain_rate_mm_h` …)
    shower_period_s: float = 3600.0
    shower_probability: float = 0.5
    shower_s: float = 1200.0
    shower_peak_mm_h: float = 12.0
    wind_mean_m_s: float = 3.0
    wind_gustiness: float = 0.4
    irrigation_period_s: float = 1800.0
    irrigation_s: float = 300.0
    irrigation_l_min: float = 6.0
    #: tests: every simulated pulse source ticks at exactly this rate instead (pulse k at
    #: (k + 0.5) / rate seconds of the clock; no jitter, no bounce); 0: the weather above
    steady_pulse_hz: float = 0.0
    noise: float = 1.0
    seed: int | None = None
    clock: Callable[[], float] = time.time
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._door_seed = self.seed if self.seed is not None else random.randrange(1 << 32)
        if self.door_period_s <= 0 or self.door_open_s <= 0:
            raise ValueError("door_period_s and door_open_s must be positive")
        if min(self.shower_period_s, self.shower_s, self.irrigation_period_s, self.irrigation_s) <= 0:
            raise ValueError("shower_period_s, shower_s, irrigation_period_s and irrigation_s must be "
                             "positive")
        if self.steady_pulse_hz < 0:
            raise ValueError("steady_pulse_hz must not be negative")

    def _hour(self, t: float) -> float:
        """The UTC hour (0–24, fractional) of epoch seconds ``t``."""
        return (t % SECONDS_PER_DAY) / 3600.0

    def _jitter(self, scale: float) -> float:
        return self._rng.gauss(0.0, scale * self.noise)

    def air_temperature(self, offset_c: float = 0.0) -> float:
        """°C: a cosine peaking at WARMEST_HOUR (UTC), ± daily_swing/2, with 0.1 °C noise."""
        hour = self._hour(self.clock())
        phase = 2 * math.pi * (hour - WARMEST_HOUR) / 24.0
        swing = self.daily_swing_c / 2 * math.cos(phase)
        return self.mean_temperature_c + offset_c + swing + self._jitter(0.1)

    def relative_humidity(self) -> float:
        """%RH, falling ``humidity_per_degree_pct`` per °C above the mean; kept in 5–99 %."""
        deviation = self.air_temperature() - self.mean_temperature_c
        rh = self.mean_humidity_pct - self.humidity_per_degree_pct * deviation + self._jitter(0.5)
        return min(99.0, max(5.0, rh))

    def pressure(self) -> float:
        """Pa: slow drift of a few hundred pascal around ``pressure_pa``."""
        t = self.clock()
        return self.pressure_pa + 300 * math.sin(2 * math.pi * t / (3 * SECONDS_PER_DAY)) + self._jitter(5)

    def illuminance(self) -> float:
        """lx: a half-sine between SUNRISE_HOUR and SUNSET_HOUR (UTC), dark at night, with cloud
        noise."""
        hour = self._hour(self.clock())
        if not SUNRISE_HOUR <= hour <= SUNSET_HOUR:
            return 0.0
        daylight = math.sin(math.pi * (hour - SUNRISE_HOUR) / (SUNSET_HOUR - SUNRISE_HOUR))
        return max(0.0, self.peak_lux * daylight * (1 + self._jitter(0.05)))

    def co2(self) -> float:
        """ppm: a daily curve, ~1150 before dawn (night respiration) down to ~450 in the
        afternoon (photosynthesis), with 5 ppm noise; never below outdoor air's 400."""
        hour = self._hour(self.clock())
        phase = 2 * math.pi * (hour - CO2_HIGHEST_HOUR) / 24.0
        ppm = CO2_MEAN_PPM + CO2_DAILY_SWING_PPM / 2 * math.cos(phase) + self._jitter(5.0)
        return max(400.0, ppm)

    def jitter(self, scale: float) -> float:
        """Gaussian noise of standard deviation ``scale`` (× ``noise``), from the seeded generator:
        for simulators that add their own small signals."""
        return self._jitter(scale)

    def soil_moisture(self, bed: int = 0) -> float:
        """% volumetric-ish soil moisture of bed ``bed``: watered once a day (bed 0 at
        WATERING_HOUR UTC, each further bed `BED_WATERING_STEP_H` later) up to
        ``soil_watered_pct``, then drying exponentially towards ``soil_driest_pct`` with time
        constant ``soil_drying_h``, faster in the warm afternoon."""
        hour = self._hour(self.clock() - (WATERING_HOUR + bed * BED_WATERING_STEP_H) * 3600.0)
        dry_warm = 1.0 + 0.03 * (self.air_temperature() - self.mean_temperature_c)
        left = math.exp(-hour * dry_warm / self.soil_drying_h)
        pct = self.soil_driest_pct + (self.soil_watered_pct - self.soil_driest_pct) * left
        return min(100.0, max(0.0, pct + self._jitter(0.3)))

    def soil_volts(self, bed: int = 0) -> float:
        """V from a capacitive soil probe (hardware.md §10.7) in bed ``bed``: ``soil_volts_dry``
        in dry air (0 %), ``soil_volts_wet`` in water (100 %), falling linearly as
        `soil_moisture` rises."""
        span = self.soil_volts_dry - self.soil_volts_wet
        return self.soil_volts_dry - self.soil_moisture(bed) / 100.0 * span

    def _door_slot(self, slot: int) -> tuple[float, float] | None:
        """(open time, close time) of the door in ``slot``, or None if it stays shut."""
        rng = random.Random(f"{self._door_seed}:door:{slot}")
        if rng.random() >= self.door_open_probability:
            return None
        start = slot * self.door_period_s
        length = min(self.door_open_s, self.door_period_s / 2)
        opens = start + rng.uniform(0.0, self.door_period_s - length)
        return opens, opens + length

    def door_open_at(self, t: float) -> bool:
        """Whether the door is open at time ``t`` (seconds, the clock's scale)."""
        window = self._door_slot(math.floor(t / self.door_period_s))
        return window is not None and window[0] <= t < window[1]

    def door_open(self) -> bool:
        """Whether the door is open now."""
        return self.door_open_at(self.clock())

    def door_edges(self, start: float, end: float) -> list[tuple[float, bool]]:
        """The door's edges in ``[start, end)``: (time, open?) in time order."""
        edges: list[tuple[float, bool]] = []
        first, last = math.floor(start / self.door_period_s), math.floor(end / self.door_period_s)
        for slot in range(first, last + 1):
            window = self._door_slot(slot)
            if window is not None:
                edges += [(t, is_open) for t, is_open in ((window[0], True), (window[1], False))
                          if start <= t < end]
        return edges

    def next_door_edge(self, after: float) -> float:
        """The time of the first door edge strictly after ``after`` (searches slot by slot)."""
        slot = math.floor(after / self.door_period_s)
        for candidate in range(slot, slot + MAX_DOOR_SLOTS_AHEAD):
            window = self._door_slot(candidate)
            if window is not None:
                for t in window:
                    if t > after:
                        return t
        return after + MAX_DOOR_SLOTS_AHEAD * self.door_period_s

    # -- weather for pulse counters: pure functions of time and the seed ---------------------------
    def _slot_window(self, what: str, slot: int, period: float, length: float,
                     probability: float) -> tuple[float, float] | None:
        """(start, end) of ``what``'s one event in ``slot`` (like the door's), or None."""
        rng = random.Random(f"{self._door_seed}:{what}:{slot}")
        if rng.random() >= probability:
            return None
        length = min(length, period)
        start = slot * period + rng.uniform(0.0, period - length)
        return start, start + length

    def rain_rate_mm_h(self, t: float) -> float:
        """mm/h at time ``t``: showers (one per ``shower_period_s`` slot with
        ``shower_probability``), each rising and falling as a half-sine up to ``shower_peak_mm_h``."""
        slot = math.floor(t / self.shower_period_s)
        window = self._slot_window("shower", slot, self.shower_period_s, self.shower_s,
                                   self.shower_probability)
        if window is None or not window[0] <= t < window[1]:
            return 0.0
        return self.shower_peak_mm_h * math.sin(math.pi * (t - window[0]) / (window[1] - window[0]))

    def wind_speed_m_s(self, t: float) -> float:
        """m/s at time ``t``: windier in the afternoon (UTC), with gusts (three seeded sines of
        7, 19 and 53 s) of ``wind_gustiness`` × the mean."""
        mean = self.wind_mean_m_s * (1 + 0.6 * math.cos(2 * math.pi * (self._hour(t) - 15.0) / 24.0))
        rng = random.Random(f"{self._door_seed}:wind")
        gust = sum(math.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi)) for period in (7, 19, 53))
        return max(0.0, mean * (1 + self.wind_gustiness * gust / 3))

    def water_flow_l_min(self, t: float) -> float:
        """L/min at time ``t``: an irrigation run of ``irrigation_s`` per ``irrigation_period_s``."""
        slot = math.floor(t / self.irrigation_period_s)
        window = self._slot_window("irrigation", slot, self.irrigation_period_s, self.irrigation_s, 1.0)
        if window is None or not window[0] <= t < window[1]:
            return 0.0
        return self.irrigation_l_min * (1 + 0.03 * math.sin(2 * math.pi * t / 11.0))

    def cpu_temperature(self) -> float:
        """°C of the Pi's SoC: some 20 °C above the air."""
        return self.air_temperature() + 20.0 + self._jitter(0.5)

    # -- particulates for the PMS5003 (self-contained, no fields; the MH-Z19 reads co2()) ---------
    def particulates_ugm3(self) -> tuple[float, float, float]:
        """(PM1.0, PM2.5, PM10) µg/m³: a clean-air baseline with an evening peak (heating, traffic)
        around 19:00 UTC; PM1 ⊂ PM2.5 ⊂ PM10, so each is at least the smaller one."""
        hour = self._hour(self.clock())
        evening = math.exp(-((hour - 19.0) ** 2) / 8.0)
        pm25 = max(0.0, 6.0 + 24.0 * evening + self._jitter(1.0))
        pm1 = max(0.0, 0.7 * pm25 + self._jitter(0.5))
        pm10 = max(pm25, 1.3 * pm25 + abs(self._jitter(1.0)))
        return min(pm1, pm25), pm25, pm10


# ================================================================================================
# the simulated world
# ================================================================================================

_T = TypeVar("_T")
Simulator = Callable[["SimulatedWorld", type[Driver], dict[str, Any]], Driver]


class NoSimulationError(ConfigurationError):
    """The driver declares no simulator (or it cannot be loaded)."""


def simulator_for(cls: type[Driver]) -> Simulator:
    """The simulator ``cls.simulator`` names (imported now); `NoSimulationError` otherwise."""
    target = getattr(cls, "simulator", "")
    if not target:
        raise NoSimulationError(f"no simulation for {cls.name or cls.__name__}: the driver declares no "
                                "simulator")
    module_name, _, attr = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NoSimulationError(f"no simulation for {cls.name}: its simulator {target} cannot be "
                                f"loaded ({exc})") from exc
    if not callable(function):
        raise NoSimulationError(f"no simulation for {cls.name}: {target} is not a function")
    simulator: Simulator = function
    return simulator


class SimulatedWorld:
    """Every simulated sensor of one run, on shared fake hardware fed by one `Environment`.

    ``clock``: the time fakes convert on (an object with ``monotonic()`` and ``sleep()``): by
    default real time, a `pibridge.drivers.fakes.clock.VirtualClock` in tests and benchmarks.
    ``door_timer``: run the thread that drives door pins at the environment's edges (off:
    call `advance_events` yourself, e.g. with an environment on a virtual clock).
    """

    def __init__(self, environment: Environment | None = None, *, clock: Any = None,
                 door_timer: bool = True) -> None:
        from .fakes.clock import WallClock

        self.environment = environment if environment is not None else Environment()
        self.clock = clock if clock is not None else WallClock()
        self._shared: dict[Hashable, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._drivers: list[Driver] = []
        self._scratch: Path | None = None
        self._doors: list[tuple[Any, bool]] = []
        self._lock = threading.RLock()
        self._door_timer = door_timer
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- building drivers ------------------------------------------------------------------------
    def build(self, driver: str | type[Driver], options: Mapping[str, Any] | None = None) -> Driver:
        """A driver (registry name or class) on this world's fake hardware, built through its
        public constructor by its simulator. Raises `NoSimulationError`, `ConfigurationError`
        (bad options) or what the simulator raises. The world closes it in `close`."""
        from . import registry

        if self._closed:
            raise RuntimeError("this simulated world is closed")
        cls = registry.get(driver) if isinstance(driver, str) else driver
        options = dict(options or {})
        cls.check_options(options)  # declared options only: a simulator adds its own fake handles
        built = simulator_for(cls)(self, cls, options)
        with self._lock:
            self._drivers.append(built)
        return built

    # -- what simulators share -----------------------------------------------------------------
    def shared(self, key: Hashable, make: Callable[[], _T]) -> _T:
        """The one object of this world under ``key``, made on first use; closed (if it has a
        ``close()``) when the world closes, in reverse order of making."""
        with self._lock:
            if key not in self._shared:
                thing = make()
                self._shared[key] = thing
                close = getattr(thing, "close", None)
                if callable(close):
                    self._closers.append(close)
            shared: _T = self._shared[key]
            return shared

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the world closes (after the drivers, before older shared fakes)."""
        with self._lock:
            self._closers.append(callback)

    def scratch_dir(self, name: str) -> Path:
        """A directory of this world's own temporary tree (a fake sysfs), removed on close."""
        with self._lock:
            if self._scratch is None:
                import tempfile  # here: only a fake sysfs needs it
                self._scratch = Path(tempfile.mkdtemp(prefix="pibridge-sim-"))
            path = self._scratch / name
            path.mkdir(exist_ok=True)
            return path

    def i2c_bus(self, number: int) -> FakeSMBus:
        """The fake SMBus of I2C bus ``number`` (every simulated chip on it shares it)."""
        from .fakes.i2c import FakeSMBus

        return self.shared(("i2c", number), lambda: FakeSMBus(number))

    def attach_i2c(self, bus: FakeSMBus, address: int, make: Callable[[], FakeI2CDevice]) -> FakeI2CDevice:
        """The fake chip at ``address`` on ``bus``: made and attached once; a second sensor at
        the same address reads the same chip."""
        with self._lock:
            device = bus.devices.get(address)
            if device is None:
                device = bus.attach(address, make())
            return device

    @property
    def runs_timers(self) -> bool:
        """Whether this world drives its fakes' timelines from threads (doors, pulse trains);
        off, tests move them with `advance_events` / the fake's own ``advance``."""
        return self._door_timer

    def pin_factory(self) -> Any:
        """This world's gpiozero ``MockFactory`` (never gpiozero's global factory)."""
        from gpiozero.pins.mock import MockFactory

        return self.shared("gpio", MockFactory)

    def input_pins(self) -> MockInputPins:
        """This world's mock input pins (`fakes.gpio.MockInputPins`: no gpiozero import), for
        inputs that need only gpiozero's pin interface (a door contact)."""
        from .fakes.gpio import MockInputPins

        return self.shared("gpio-inputs", MockInputPins)

    # -- the environment's timeline ------------------------------------------------------------
    def add_door(self, pin: Any, active_high: bool) -> None:
        """Drive mock ``pin`` from the environment's door: high while open if ``active_high``,
        low otherwise. Its state is set now; edges follow on the timer (or `advance_events`)."""
        with self._lock:
            self._doors.append((pin, active_high))
            self._drive(pin, active_high, self.environment.door_open())
            if self._door_timer and self._thread is None:
                self._thread = threading.Thread(target=self._run_doors, name="pibridge-sim-doors",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    @staticmethod
    def _drive(pin: Any, active_high: bool, is_open: bool) -> None:
        if is_open == active_high:
            pin.drive_high()
        else:
            pin.drive_low()

    def advance_events(self) -> None:
        """Bring every door pin to the environment's state at its clock's *now* (one edge, and
        gpiozero's callbacks, per pin whose state changes)."""
        with self._lock:
            is_open = self.environment.door_open()
            for pin, active_high in self._doors:
                self._drive(pin, active_high, is_open)

    def _run_doors(self) -> None:
        while not self._stop.is_set():
            self.advance_events()
            now = self.environment.clock()
            delay = self.environment.next_door_edge(now) - now
            self._wake.wait(max(0.0, delay))
            self._wake.clear()

    # -- the end -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the timer; close every driver built here, then the shared fakes (newest first),
        then remove the temporary tree. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        # each one on its own: one that fails (logged) must not leave the others, the shared fakes
        # or the temporary tree behind
        for driver in reversed(self._drivers):
            try:
                driver.close()
            except Exception:
                log.exception("simulated world: closing driver %s failed", driver.name)
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                log.exception("simulated world: closing a shared fake failed")
        if self._scratch is not None:
            import shutil  # here: it loads the compression modules (~0.5 MB of RSS)
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> SimulatedWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
