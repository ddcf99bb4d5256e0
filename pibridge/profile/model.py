"""The bridge's model of a checked profile: what `pibridge run` and `pibridge check` work from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pibridge.agent.settings import AgentSettings

from .errors import ProfileError
from .locator import KeyLocator

DEFAULT_STATE_DIR = Path("/var/lib/pibridge")
#: ``pressure_from = "NAME"``: NAME's metric that is handed on (in Pa), and the method of the
#: consumer's driver that takes it (SCD4x, SCD30: pressure compensation)
PRESSURE_FROM_METRIC = "pressure"
PRESSURE_FROM_UNIT = "SI.Pressure.PASCAL"
PRESSURE_FROM_SETTER = "set_ambient_pressure"
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class BridgeSettings:
    """``[bridge]``: where the bridge keeps its state and how its queue is bounded. Durations in
    seconds."""

    state_dir: Path = DEFAULT_STATE_DIR
    queue_max_samples: int = 500_000
    queue_max_age_s: float = 30 * SECONDS_PER_DAY
    durability: str = "process"          #: "process" (survives kill -9) or "power" (power cut)
    inventory_check_s: float = 3600.0    #: how often the agent's inventory is verified
    w1_gpio: int = 4                     #: the 1-Wire overlay's pin (BCM)
    log_format: str = "text"             #: "text" or "json"
    http: str | None = None              #: the web page's HOST:PORT (None: no web server at all)
    http_token_file: Path | None = None  #: a file holding the token every web client must show


@dataclass(frozen=True)
class Calibration:
    """Raw → true: ``points`` (piecewise linear through (raw, true) pairs, raw strictly
    increasing, extrapolated from the end segments), or ``value × scale + offset``."""

    offset: float = 0.0
    scale: float = 1.0
    points: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class MetricConfig:
    """``[sensor.metrics.KEY]``: how one driver metric is processed and named at the agent.
    None means "the driver's own" (name, unit/type/annotation) or "no such filter"."""

    key: str
    enabled: bool = True
    name: str | None = None
    calibration: Calibration | None = None
    median: int = 1                                  #: sliding median over the last N readings
    valid_range: tuple[float, float] | None = None   #: outside: left out of the sample, counted
    deadband: float | None = None                    #: left out while it moved less than this…
    max_silence_s: float | None = None               #: …but sent at least this often
    unit: str | None = None                          #: an agent valueUnit …
    value_type: str | None = None                    #: … or a valueType + annotation
    annotation: str | None = None
    clamp: tuple[float, float] | None = None         #: outside: set to the nearer bound (after valid_range)


@dataclass(frozen=True)
class SensorConfig:
    """One ``[[sensor]]``, checked: ``options`` converted with the driver's defaults filled in
    (`Driver.validate`), ``interval_s`` in seconds, ``metrics`` for every metric key the profile
    configures (keys it does not mention use the driver's own definition, unprocessed)."""

    name: str
    driver: str
    interval_s: float
    options: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, MetricConfig] = field(default_factory=dict)
    line: int | None = None                          #: the ``[[sensor]]`` header's line
    #: ``pressure_from``: the name of another sensor whose ``pressure`` (Pa) this sensor's driver
    #: compensates with (its ``set_ambient_pressure``), or None
    pressure_from: str | None = None


@dataclass(frozen=True)
class Profile:
    """A loaded profile: its agent settings, the bridge's settings and sensors, and the whole
    parsed document. ``sections`` says what was checked: "all", "agent" (then ``bridge`` is
    the default and ``sensors`` is empty) or "bridge" (then ``agent`` is the default and
    ``sensors`` is empty)."""

    path: Path
    agent: AgentSettings
    document: dict[str, Any] = field(default_factory=dict)
    locator: KeyLocator | None = None
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    sensors: tuple[SensorConfig, ...] = ()
    sections: str = "all"

    def error(self, problem: str, table: str, key: str = "", index: int = 0) -> ProfileError:
        """A `ProfileError` pointing at ``key`` of ``table`` (the n-th ``[[table]]``)."""
        line = None
        if self.locator is not None:
            line = self.locator.key_line(table, key, index) if key else self.locator.table_line(table, index)
        return ProfileError(self.path, problem, line=line, key=f"{table}.{key}" if key else table)
