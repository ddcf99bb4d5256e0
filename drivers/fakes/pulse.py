"""Simulated pulse sources: gpiozero mock pins driven by a pulse train from the world's timeline.

A `PulseTrain` is a pure function of time and its seed: time is cut into one-second steps; in
step j the rate is ``rate_hz(j + 0.5)`` and the pulses sit at ``j + (i + φ_j) / rate`` with a
seeded phase φ_j and a little jitter, so the pulses of any stretch of time are the same whoever
asks when. Each pulse is an *active* edge (low for a switch to GND with a pull-up), optional
bounce (reed switches: a few edge pairs within a millisecond), and the release.

`PulseTimer` (one per world, ``world.shared``) drives every registered `PulsePin` in batches:
every `BATCH_S` it takes the edges of ``[last, now)`` from each train and drives them, each with
its own timestamp (gpiozero's ``ticks``), from one thread: no thread or timer per pulse, so a
1 kHz train costs 20 batches a second. Tests without threads call `PulseTimer.advance`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero.pins.mock import MockPin, PinState

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..pulse_counter import PulseCounter
    from ..simulation import SimulatedWorld

BATCH_S = 0.05
STEP_S = 1.0
BOUNCE_SPACING_S = 0.0002     #: a reed switch's contact bounce: edge pairs 0.2 ms apart
RELEASE_MAX_S = 0.05          #: a pulse lasts half its period, at most this
DEFAULT_JITTER = 0.05         #: of the period (1 σ)
REED_BOUNCES = 3              #: extra press edges per closure of a simulated reed switch

#: unit → factor to the simulator's own units (m/s, L/min, L, mm)
SPEED_M_S = {"m/s": 1.0, "km/h": 1 / 3.6, "mph": 0.44704, "kn": 0.514444, "kt": 0.514444}
FLOW_L_MIN = {"L/min": 1.0, "l/min": 1.0, "L/h": 1 / 60, "l/h": 1 / 60, "m3/h": 1000 / 60}
VOLUME_L = {"L": 1.0, "l": 1.0, "mL": 0.001, "ml": 0.001, "m3": 1000.0}
LENGTH_MM = {"mm": 1.0, "in": 25.4, "m": 1000.0}


class PulsePin(MockPin):
    """A mock input pin whose edges carry the timestamp the pulse train gives them (gpiozero's
    MockPin stamps ``monotonic()`` at the call) and that keeps no unbounded state history."""

    def __init__(self, factory: Any, info: Any) -> None:
        self._stamp: float | None = None
        self._state: bool = False
        super().__init__(factory, info)

    def drive_at(self, level: bool, ticks: float) -> None:
        """Drive the input to ``level`` as if at ``ticks`` (callbacks get that timestamp)."""
        self._stamp = ticks
        try:
            if level:
                self.drive_high()
            else:
                self.drive_low()
        finally:
            self._stamp = None

    def _change_state(self, value: bool) -> bool:
        if self._state == value:
            return False
        self._state = value
        self._last_change = self._stamp if self._stamp is not None else time.monotonic()
        self.states = [PinState(0.0, value)]
        return True


class PulseTrain:
    """Pulses at ``rate_hz(t)`` (Hz) as (time, level) edges; ``active_low``: a pulse pulls the
    line low (falling edge first). ``steady_hz`` > 0: exactly that rate, pulse k at (k + ½)/rate."""

    def __init__(self, rate_hz: Callable[[float], float], *, seed: object = 0, active_low: bool = True,
                 jitter: float = DEFAULT_JITTER, bounces: int = 0, steady_hz: float = 0.0) -> None:
        self.rate_hz, self.seed, self.active_low = rate_hz, seed, active_low
        self.jitter, self.bounces, self.steady_hz = jitter, bounces, steady_hz

    def pulse_times(self, start: float, end: float) -> list[float]:
        """The pulse (active edge) times in ``[start, end)``, in order."""
        if self.steady_hz > 0:
            f = self.steady_hz
            first, last = math.ceil(start * f - 0.5), math.ceil(end * f - 0.5)
            return [(k + 0.5) / f for k in range(first, last)]
        times: list[float] = []
        for step in range(math.floor(start / STEP_S), math.floor(end / STEP_S) + 1):
            begin = step * STEP_S
            f = self.rate_hz(begin + STEP_S / 2)
            if f <= 0:
                continue
            rng = random.Random(f"{self.seed}:{step}")
            phase = rng.random()
            i = 0
            while (t := begin + (i + phase) / f) < begin + STEP_S:
                t = min(max(t + rng.gauss(0.0, self.jitter) / f, begin), begin + STEP_S - 1e-9)
                if start <= t < end:
                    times.append(t)
                i += 1
        times.sort()
        return times

    def edges(self, start: float, end: float) -> list[tuple[float, bool]]:
        """Every edge of the pulses that begin in ``[start, end)``: press, bounce, release."""
        active = not self.active_low
        out: list[tuple[float, bool]] = []
        for t in self.pulse_times(start, end):
            rate = self.steady_hz or max(self.rate_hz(t), 1e-9)
            out.append((t, active))
            for k in range(1, self.bounces + 1):
                out.append((t + (2 * k - 1) * BOUNCE_SPACING_S, not active))
                out.append((t + 2 * k * BOUNCE_SPACING_S, active))
            out.append((t + min(0.5 / rate, RELEASE_MAX_S), not active))
        return out


class PulseTimer:
    """Drives registered pins from their trains in batches (a thread when ``threaded``)."""

    def __init__(self, clock: Callable[[], float], *, threaded: bool = True) -> None:
        self.clock = clock
        self._sources: list[tuple[PulsePin, PulseTrain]] = []
        self._last = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.edges_driven = 0
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="pibridge-sim-pulses", daemon=True)
            self._thread.start()

    def add(self, pin: PulsePin, train: PulseTrain) -> None:
        """Drive ``pin`` from ``train``, replacing the train it had (a rebuilt driver on the same
        pin gets one train, never a second one on top)."""
        with self._lock:
            self._sources = [(p, t) for p, t in self._sources if p is not pin]
            self._sources.append((pin, train))
            pin.drive_at(train.active_low, self._last)  # the idle level: high when a pulse pulls low

    @property
    def pins(self) -> list[PulsePin]:
        """The pins driven now."""
        with self._lock:
            return [p for p, _ in self._sources]

    def remove(self, pin: PulsePin) -> None:
        with self._lock:
            self._sources = [(p, t) for p, t in self._sources if p is not pin]

    def advance(self, now: float | None = None) -> int:
        """Drive every edge of ``[last, now)``; returns how many edges were driven."""
        with self._lock:
            now = self.clock() if now is None else now
            if now <= self._last:
                return 0
            driven = 0
            for pin, train in self._sources:
                for ticks, level in train.edges(self._last, now):
                    pin.drive_at(level, ticks)
                    driven += 1
            self._last = now
            self.edges_driven += driven
            return driven

    def _run(self) -> None:
        while not self._stop.wait(BATCH_S):
            self.advance()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


def pulse_rate(world: SimulatedWorld, config: dict[str, Any]) -> tuple[Callable[[float], float], bool]:
    """(Hz as a function of time, bounces?) for a configuration: wind for a speed ``rate_unit``,
    flow for a volume or flow unit, rain for a length unit, else a steady 1 Hz."""
    env = world.environment
    factor, rate_unit = config["rate_factor"], config["rate_unit"]
    per_pulse, unit = config["per_pulse"], config["unit"]
    if factor is not None and rate_unit in SPEED_M_S:
        scale = 1.0 / (SPEED_M_S[rate_unit] * factor)
        return (lambda t: env.wind_speed_m_s(t) * scale), True
    if factor is not None and rate_unit in FLOW_L_MIN:
        scale = 1.0 / (FLOW_L_MIN[rate_unit] * factor)
        return (lambda t: env.water_flow_l_min(t) * scale), False
    if per_pulse is not None and unit in VOLUME_L:
        scale = 1.0 / (60.0 * per_pulse * VOLUME_L[unit])
        return (lambda t: env.water_flow_l_min(t) * scale), False
    if per_pulse is not None and unit in LENGTH_MM:
        scale = 1.0 / (3600.0 * per_pulse * LENGTH_MM[unit])
        return (lambda t: env.rain_rate_mm_h(t) * scale), True
    return (lambda t: 1.0), False


def simulate(world: SimulatedWorld, cls: type[PulseCounter], options: dict[str, Any]) -> PulseCounter:
    """The counter on the world's mock pins, its pin a `PulsePin` driven from the environment's
    weather (rain showers, a windy afternoon, irrigation runs) by the world's `PulseTimer`."""
    config = cls.check_options(options)
    env = world.environment
    factory = world.pin_factory()
    pin = factory.pin(config["pin"], pin_class=PulsePin)
    if not isinstance(pin, PulsePin):
        raise ConfigurationError(f"pulse_counter: simulated GPIO{config['pin']} is already used by "
                                 "another simulated device")
    rate, reed = pulse_rate(world, config)
    train = PulseTrain(rate, seed=f"{env.seed}:{config['pin']}", active_low=config["edge"] == "falling",
                       bounces=REED_BOUNCES if reed else 0, steady_hz=env.steady_pulse_hz)
    if env.steady_pulse_hz > 0:
        train.bounces, train.jitter = 0, 0.0
    timer = world.shared("pulse-timer", lambda: PulseTimer(env.clock, threaded=world.runs_timers))
    driver = cls(pin_factory=factory, release=lambda: timer.remove(pin), **options)
    timer.add(pin, train)       # released when the driver closes (a rebuilt one adds its own)
    world.on_close(lambda: timer.remove(pin))
    return driver
