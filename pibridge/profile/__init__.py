"""TOML profiles: where the agent is (``[agent]``), how the bridge keeps its state
(``[bridge]``), and what to sample (``[[sensor]]``), checked as a whole before any hardware is
touched. Every problem is reported at once, each as one line naming file, line, sensor and key::

    greenhouse.toml:23: sensor "Canopy" → options.pin: GPIO 4 is the 1-Wire pin

Modules: `schema` (reading and checking: `load_profile`), `model` (the checked profile the
bridge works from), `locator` (lines of keys: tomllib gives no positions), `values` (durations,
paths, converters), `errors` (`Problem`, `ProfileError`).
"""

from __future__ import annotations

from .errors import Problem, ProfileError
from .locator import KeyLocator
from .model import (
    DEFAULT_STATE_DIR,
    BridgeSettings,
    Calibration,
    MetricConfig,
    Profile,
    SensorConfig,
)
from .schema import DEFAULT_INTERVAL_S, load_profile
from .values import DURATION_UNITS, duration, format_duration, resolve_path

__all__ = [
    "DEFAULT_INTERVAL_S", "DEFAULT_STATE_DIR", "DURATION_UNITS", "BridgeSettings", "Calibration",
    "KeyLocator", "MetricConfig", "Problem", "Profile", "ProfileError", "SensorConfig", "duration",
    "format_duration",
    "load_profile", "resolve_path",
]
