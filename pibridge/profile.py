"""TOML profiles: the ``[agent]`` table (where the agent is, where credentials live), and later
issues' tables (``[[sensor]]`` …), which this module keeps in `Profile.document` for them.

Every error is a `ProfileError` naming the file, the line and the key. tomllib reports syntax
errors with their line; for semantic errors (wrong type, unknown key, bad value) `KeyLocator`
finds the key's line by scanning the text within its table.

    [agent]
    host = "localhost"
    port = 18884
    provision_port = 18883
    ca_file = "~/emulator/ca.crt"        # ~ expanded; relative to the profile's folder
    cert_folder = "certs"
    client_name = "greenhouse"
    provisioning = "keep"                # keep | smart (override is an action, not a setting)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pibridge.agent.settings import CONFIGURABLE_MODES, AgentSettings, ProvisioningMode

AGENT_TABLE = "agent"
PORT_MIN, PORT_MAX = 1, 65535
_SYNTAX_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


class ProfileError(Exception):
    """A broken profile: ``path``, ``line`` (1-based; None if unknown), ``key`` ("agent.port"),
    ``problem``."""

    def __init__(self, path: Path, problem: str, *, line: int | None = None, key: str = "") -> None:
        self.path, self.line, self.key, self.problem = path, line, key, problem
        where = f"{path}" + (f", line {line}" if line else "") + (f", key {key}" if key else "")
        super().__init__(f"{where}: {problem}")


def _unquote(key: str) -> str:
    key = key.strip()
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        return key[1:-1]
    return key


def _key_pattern(key: str) -> str:
    """A TOML key, bare or quoted."""
    escaped = re.escape(key)
    return f"(?:\"{escaped}\"|'{escaped}'|{escaped})"


class KeyLocator:
    """Finds the line of a key in a profile's text, within a ``[table]`` or the n-th ``[[table]]``."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()

    def table_line(self, table: str, index: int = 0) -> int | None:
        seen = 0
        for number, line in enumerate(self._lines, start=1):
            match = _HEADER_RE.match(line)
            if match and _unquote(match.group(2)) == table:
                if seen == index:
                    return number
                seen += 1
        return None

    def key_line(self, table: str, key: str, index: int = 0) -> int | None:
        """Line of ``key = …`` inside the table (or ``table.key = …`` at top level), else the header."""
        start = self.table_line(table, index) if table else 0
        key_re = re.compile(r"^\s*" + _key_pattern(key) + r"\s*=")
        if start is not None:
            for number in range(start + 1, len(self._lines) + 1):
                line = self._lines[number - 1]
                if _HEADER_RE.match(line):
                    break
                if key_re.match(line):
                    return number
            return start or None
        dotted_re = re.compile(r"^\s*" + _key_pattern(table) + r"\s*\.\s*" + _key_pattern(key) + r"\s*=")
        for number, line in enumerate(self._lines, start=1):
            if dotted_re.match(line):
                return number
        return None


# --- the bridge's model of a profile: what `pibridge run` and `pibridge check` work from ------
DEFAULT_STATE_DIR = Path("/var/lib/pibridge")
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


@dataclass(frozen=True)
class Profile:
    """A loaded profile: its agent settings, the bridge's settings and sensors, and the whole
    parsed document."""

    path: Path
    agent: AgentSettings
    document: dict[str, Any] = field(default_factory=dict)
    locator: KeyLocator | None = None
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    sensors: tuple[SensorConfig, ...] = ()

    def error(self, problem: str, table: str, key: str = "", index: int = 0) -> ProfileError:
        """A `ProfileError` pointing at ``key`` of ``table`` (for the tables of later issues)."""
        line = None
        if self.locator is not None:
            line = self.locator.key_line(table, key, index) if key else self.locator.table_line(table, index)
        return ProfileError(self.path, problem, line=line, key=f"{table}.{key}" if key else table)


def load_profile(path: str | Path) -> Profile:
    """Read and check a profile; `ProfileError` for anything wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(path, f"cannot read the profile: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(path, f"not UTF-8 text: {exc.reason}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _SYNTAX_LINE_RE.search(str(exc))
        problem = _SYNTAX_LINE_RE.sub("", str(exc)).strip()
        raise ProfileError(path, f"TOML syntax error: {problem}"
                           + (f" (column {match.group(2)})" if match else ""),
                           line=int(match.group(1)) if match else None) from exc
    locator = KeyLocator(text)
    agent = _agent_settings(document.get(AGENT_TABLE, {}), path, locator)
    return Profile(path, agent, document, locator)


# --- [agent] ---------------------------------------------------------------------------------
def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a port number (integer), not {value!r}")
    if not PORT_MIN <= value <= PORT_MAX:
        raise ValueError(f"must be a port number between {PORT_MIN} and {PORT_MAX}, not {value}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def _mode(value: Any) -> ProvisioningMode:
    allowed = " or ".join(f'"{m}"' for m in CONFIGURABLE_MODES)
    if value == ProvisioningMode.OVERRIDE:
        raise ValueError(f'"override" is not a profile setting (it is an action: run '
                         f"`pibridge provision --override`); use {allowed}")
    if value not in CONFIGURABLE_MODES:
        raise ValueError(f"must be {allowed}, not {value!r}")
    return ProvisioningMode(value)


def resolve_path(value: str, base: Path) -> Path:
    """``~`` expanded; a relative path is relative to ``base`` (the profile's folder)."""
    expanded = Path(value).expanduser()
    return expanded if expanded.is_absolute() else base / expanded


_AGENT_KEYS: dict[str, Callable[[Any], Any]] = {
    "host": _text, "port": _port, "provision_port": _port, "ca_file": _text, "cert_folder": _text,
    "client_name": _text, "provisioning": _mode,
}
_PATH_KEYS = ("ca_file", "cert_folder")


def _agent_settings(table: Any, path: Path, locator: KeyLocator) -> AgentSettings:
    if not isinstance(table, dict):
        raise ProfileError(path, "[agent] must be a table", line=locator.key_line("", AGENT_TABLE),
                           key=AGENT_TABLE)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        where = {"line": locator.key_line(AGENT_TABLE, key), "key": f"{AGENT_TABLE}.{key}"}
        check = _AGENT_KEYS.get(key)
        if check is None:
            raise ProfileError(path, f"unknown key {key!r} in [agent] (known: {', '.join(_AGENT_KEYS)})",
                               **where)
        try:
            value = check(raw)
        except ValueError as exc:
            raise ProfileError(path, str(exc), **where) from None
        values[key] = resolve_path(value, path.parent) if key in _PATH_KEYS else value
    return AgentSettings(**values)
