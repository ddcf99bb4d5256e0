"""Plausible greenhouse signals for ``--simulate``: the physical world that fakes are fed from.

Each driver's ``simulated()`` builds its fake hardware (register file, w1 text, DHT object, SPI
chip, mock pin) and sets the fake's *physical* inputs from an `Environment` just before each
read, so the driver still does all its own bus I/O and maths.

All signals are pure functions of wall-clock time plus seeded noise, so two sensors of the same
greenhouse agree (humidity falls when temperature rises) and a run is reproducible with a seed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SECONDS_PER_DAY = 86_400.0
#: Hour of the daily temperature maximum / minimum (local solar time).
WARMEST_HOUR = 14.0
SUNRISE_HOUR = 6.0
SUNSET_HOUR = 20.0


@dataclass
class Environment:
    """A greenhouse: day/night temperature curve with noise, humidity anti-correlated with it,
    light following the sun, a door that opens now and then.

    ``clock`` returns seconds since the epoch (inject a fake clock in tests); ``seed`` makes the
    noise reproducible. Units: °C, %RH, Pa, lx, volts.
    """

    mean_temperature_c: float = 22.0
    daily_swing_c: float = 6.0
    mean_humidity_pct: float = 60.0
    humidity_per_degree_pct: float = 3.0
    pressure_pa: float = 101_325.0
    peak_lux: float = 60_000.0
    soil_volts_dry: float = 2.8
    soil_volts_wet: float = 1.2
    door_open_probability: float = 0.05
    noise: float = 1.0
    seed: int | None = None
    clock: Callable[[], float] = time.time
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _hour(self, t: float) -> float:
        return (t % SECONDS_PER_DAY) / 3600.0

    def _jitter(self, scale: float) -> float:
        return self._rng.gauss(0.0, scale * self.noise)

    def air_temperature(self, offset_c: float = 0.0) -> float:
        """°C: a cosine peaking at WARMEST_HOUR, ± daily_swing/2, with 0.1 °C noise."""
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
        """lx: a half-sine between sunrise and sunset, dark at night, with cloud noise."""
        hour = self._hour(self.clock())
        if not SUNRISE_HOUR <= hour <= SUNSET_HOUR:
            return 0.0
        daylight = math.sin(math.pi * (hour - SUNRISE_HOUR) / (SUNSET_HOUR - SUNRISE_HOUR))
        return max(0.0, self.peak_lux * daylight * (1 + self._jitter(0.05)))

    def soil_volts(self) -> float:
        """V from a capacitive soil probe: drier (higher volts) as the afternoon heats up."""
        deviation = self.air_temperature() - self.mean_temperature_c
        span = self.soil_volts_dry - self.soil_volts_wet
        wetness = min(1.0, max(0.0, 0.6 - 0.04 * deviation + self._jitter(0.01)))
        return self.soil_volts_dry - wetness * span

    def door_open(self) -> bool:
        """True now and then (``door_open_probability`` per look)."""
        return self._rng.random() < self.door_open_probability

    def cpu_temperature(self) -> float:
        """°C of the Pi's SoC: some 20 °C above the air."""
        return self.air_temperature() + 20.0 + self._jitter(0.5)
