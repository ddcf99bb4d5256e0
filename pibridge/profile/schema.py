"""Reading and checking a profile: every problem at once, each naming file, line, sensor and
key, before any hardware is touched (the drivers' checks are class-level and hardware-free, so
a profile checks the same with or without ``--simulate``).

The schema (README's "Profile reference" lists every key with its type and default)::

    [agent]      where the agent is (pibridge.agent.AgentSettings)
    [bridge]     state directory, queue bounds, durability, inventory check, 1-Wire pin, logs
    [[sensor]]   name, driver, interval, [sensor.options] (the driver's), [sensor.metrics.KEY],
                 pressure_from (another sensor whose pressure the driver compensates with)
"""

from __future__ import annotations

import errno
import itertools
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pibridge import protocol
from pibridge.agent.settings import CONFIGURABLE_MODES, AgentSettings, ProvisioningMode, check_host
from pibridge.bounded import read_bounded
from pibridge.drivers import registry
from pibridge.drivers.base import (
    I2C_BUS_PINS,
    SERIAL_PORT_PINS,
    SPI_BUS_PINS,
    Driver,
    GpioPin,
    Metric,
    Resources,
    Timing,
)
from pibridge.drivers.errors import SensorError
from pibridge.paths import check_path
from pibridge.terminal import printable
from pibridge.units import UNIT_FORMS, ProfileUnit, conversion_factor, profile_unit, symbol_of

from . import values as v
from .errors import SHOWN_MAX, Problem, ProfileError, shown
from .locator import KeyLocator, KeyPath
from .model import (
    PRESSURE_FROM_METRIC,
    PRESSURE_FROM_SETTER,
    PRESSURE_FROM_UNIT,
    BridgeSettings,
    Calibration,
    MetricConfig,
    Profile,
    SensorConfig,
)

Sections = Literal["all", "agent", "bridge"]
AGENT_TABLE, BRIDGE_TABLE, SENSOR_TABLE = "agent", "bridge", "sensor"
TOP_LEVEL = {AGENT_TABLE: "[agent]", BRIDGE_TABLE: "[bridge]", SENSOR_TABLE: "[[sensor]]"}
PORT_MIN, PORT_MAX = 1, 65535
DEFAULT_INTERVAL_S = 60.0
#: No sensor is sampled more often than this, whatever its driver allows: below it the bridge
#: spends its time scheduling (``interval = 1e-9`` took 95 % of a core and sent nothing).
MIN_INTERVAL_S = 0.1
MEDIAN_MAX = 100            #: readings a sliding median may span
QUEUE_MAX_SAMPLES_LIMIT = 100_000_000
INVENTORY_CHECK_MIN_S = 10.0
UTF8_BOM = "\ufeff"
MIB = 1 << 20
MAX_PROFILE_BYTES = 32 * MIB  #: far beyond any real profile; a bound against /dev/zero
MESSAGE_MAX = 200           #: characters of a driver's own message we pass on

_SYNTAX_POSITION = " (at line "

#: Every key of each table, in the README's order (a test holds the README's tables to these).
AGENT_KEYS = ("host", "port", "provision_port", "ca_file", "cert_folder", "client_name", "provisioning")
BRIDGE_KEYS = ("state_dir", "queue_max_samples", "queue_max_age", "durability", "inventory_check", "w1_gpio",
               "log_format", "http", "http_token_file")
SENSOR_KEYS = ("name", "driver", "interval", "options", "metrics", "pressure_from")
METRIC_KEYS = ("name", "enabled", "offset", "scale", "points", "median", "valid_range", "clamp", "deadband",
               "max_silence", "unit", "type", "annotation")


# --- reading -------------------------------------------------------------------------------------
def load_profile(path: str | Path, sections: Sections = "all") -> Profile:
    """Read and check a profile; `ProfileError` with every problem found.

    ``sections="agent"``: only ``[agent]`` (and unknown top-level tables, which may be a
    misspelt ``[agent]``) is checked; ``[bridge]`` and ``[[sensor]]`` are ignored, so a broken
    sensor does not stop ``pibridge ping``. ``sections="bridge"``: only ``[bridge]``, which
    locates a running bridge (its state directory names the status file), so ``pibridge status``
    and ``pibridge reload`` find a bridge whose profile was just broken. The TOML must parse
    either way."""
    if sections not in ("all", "agent", "bridge"):
        raise ValueError(f"sections must be 'all', 'agent' or 'bridge', not {sections!r}")
    path = Path(path)
    text = _read(path)
    document = _parse(path, text)
    checker = _Checker(path, KeyLocator(text))
    if sections == "bridge":
        located = checker.bridge(document.get(BRIDGE_TABLE, {}))
        checker.raise_problems()
        assert located is not None  # else a problem was raised
        return Profile(path, AgentSettings(), document, checker.locator, located, sections="bridge")
    checker.top_level(document)
    agent = checker.agent(document.get(AGENT_TABLE, {}))
    if sections == "agent":
        checker.raise_problems()
        assert agent is not None  # else a problem was raised
        return Profile(path, agent, document, checker.locator, sections="agent")
    bridge = checker.bridge(document.get(BRIDGE_TABLE, {}), check_files=True)
    sensors = checker.sensors(document.get(SENSOR_TABLE, []), bridge)
    checker.raise_problems()
    assert agent is not None and bridge is not None
    return Profile(path, agent, document, checker.locator, bridge, sensors)


def _read(path: Path) -> str:
    """The profile's text, read up to `MAX_PROFILE_BYTES` (``--profile /dev/zero`` is refused,
    not read until memory runs out; a pipe, e.g. ``<(…)``, is read to its end, within
    `pibridge.bounded.PIPE_WAIT_S`: a FIFO nobody writes is refused, not waited on)."""
    try:
        data = read_bounded(path, MAX_PROFILE_BYTES)  # a FIFO nobody writes: refused after a few s
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise ProfileError(path, f"larger than {MAX_PROFILE_BYTES // MIB} MiB: not a profile "
                                     "(a profile is a few kilobytes)") from None
        raise ProfileError(path, f"cannot read the profile: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ProfileError(path, f"not UTF-8 text: {exc.reason} (column {column})", line=line) from None
    return text.removeprefix(UTF8_BOM)  # editors on Windows write one; TOML does not allow it


def _host(raw: Any) -> str:
    """[agent] host: `check_host`'s rule (an IP address or a host name IDNA encodes)."""
    try:
        return check_host(v.text(raw))
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("host ")) from None


def _path_text(raw: Any) -> str:
    """A path key's text: `pibridge.paths.check_path`'s rule (no NUL byte, not too long)."""
    text = v.text(raw)
    check_path(text)
    return text


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, _, position = str(exc).partition(_SYNTAX_POSITION)
        line, _, column = position.rstrip(")").partition(", column ")
        raise ProfileError(path, f"TOML syntax error: {message}" + (f" (column {column})" if column else ""),
                           line=int(line) if line.isdigit() else None) from None
    except RecursionError:
        raise ProfileError(path, "nested too deeply: arrays or inline tables inside each other "
                           "beyond what a profile needs") from None


# --- the checker ---------------------------------------------------------------------------------
@dataclass
class _Scope:
    """Where problems are reported: ``prefix`` is the table's path, ``label`` the sensor's
    (``sensor "Air"``), ``shown_from`` how much of the path the message's key omits."""

    checker: _Checker
    prefix: KeyPath
    label: str = ""
    shown_from: int = 0

    def report(self, keys: KeyPath, message: str) -> None:
        path = self.prefix + keys
        self.checker.problems.append(Problem(self.checker.locator.line(path),
                                             key_text(path[self.shown_from:]), message, self.label))

    def unknown(self, keys: KeyPath, known: Mapping[str, Any] | list[str], what: str = "key") -> None:
        given = str(keys[-1])
        close = v.suggestion(given, known)
        listed = ", ".join(known)
        self.report(keys, f"unknown {what}; did you mean {close}? (known: {listed})" if close
                    else f"unknown {what} (known: {listed})")

    def convert(self, keys: KeyPath, convert: Callable[[Any], Any], raw: Any) -> Any:
        """``convert(raw)``, or None after reporting its problem."""
        try:
            return convert(raw)
        except ValueError as exc:
            self.report(keys, str(exc))
            return None


@dataclass
class _PressureLink:
    """``pressure_from`` of one sensor, checked against the profile's other sensors at the end."""

    scope: _Scope
    sensor: str | None
    source: str


@dataclass
class _Checked:
    """One sensor after its own checks, waiting for the checks across sensors (pins, names)."""

    scope: _Scope
    config: dict[str, Any]
    resources: Resources = field(default_factory=Resources)
    driver: type[Driver] | None = None


class _Checker:
    def __init__(self, path: Path, locator: KeyLocator) -> None:
        self.path, self.locator = path, locator
        self.problems: list[Problem] = []
        #: driver name -> class, or the problem with that name (looked up once per name)
        self._drivers: dict[str, type[Driver] | str] = {}
        #: sensor name -> (driver, what its configuration reports or None when unknown)
        self._reported: dict[str, tuple[type[Driver] | None, dict[str, Metric] | None]] = {}
        self._pressure_links: list[_PressureLink] = []
        self._canonical: dict[str, str] = {}   #: driver name as written -> the registry's spelling

    def raise_problems(self) -> None:
        if self.problems:
            ordered = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
            raise ProfileError(self.path, ordered)

    def top_level(self, document: dict[str, Any]) -> None:
        root = _Scope(self, ())
        for key in document:
            if key not in TOP_LEVEL:
                close = v.suggestion(key, TOP_LEVEL)
                kind = "table" if isinstance(document[key], dict | list) else "key"
                hint = f"; did you mean {TOP_LEVEL[close]}?" if close else ""
                root.report((key,), f"unknown {kind}{hint} (a profile has {', '.join(TOP_LEVEL.values())})")

    # -- [agent] --------------------------------------------------------------------------------
    def agent(self, table: Any) -> AgentSettings | None:
        scope = _Scope(self, (AGENT_TABLE,))
        if not isinstance(table, dict):
            scope.report((), "must be a table ([agent])")
            return None
        converters: dict[str, Callable[[Any], Any]] = {
            "host": _host, "port": _port, "provision_port": _port, "ca_file": _path_text,
            "cert_folder": _path_text, "client_name": v.text, "provisioning": _mode,
        }
        assert tuple(converters) == AGENT_KEYS
        settings: dict[str, Any] = {}
        for key, raw in table.items():
            if key not in converters:
                scope.unknown((key,), list(converters))
                continue
            value = scope.convert((key,), converters[key], raw)
            if value is not None and key in ("ca_file", "cert_folder"):
                value = scope.convert((key,), lambda text: v.resolve_path(text, self.path.parent), value)
            if value is not None:
                settings[key] = value
        if len(settings) < sum(1 for key in table if key in converters):
            return None
        try:
            return AgentSettings(**settings)
        except ValueError as exc:  # AgentSettings' own rules (client_name, …)
            message = str(exc)
            key = next((k for k in settings if message.startswith(k) or f" {k} " in message), "")
            scope.report((key,) if key else (), message.removeprefix(f"{key} ") if key else message)
            return None

    # -- [bridge] -------------------------------------------------------------------------------
    def bridge(self, table: Any, *, check_files: bool = False) -> BridgeSettings | None:
        """``[bridge]``; ``check_files``: also read the files it names (the token file), as
        `pibridge check` and `pibridge run` must — ``pibridge status`` locating a bridge does not."""
        scope = _Scope(self, (BRIDGE_TABLE,))
        if not isinstance(table, dict):
            scope.report((), "must be a table ([bridge])")
            return None
        converters: dict[str, tuple[str, Callable[[Any], Any]]] = {
            "state_dir": ("state_dir", lambda raw: v.resolve_path(_path_text(raw), self.path.parent)),
            "queue_max_samples": ("queue_max_samples", v.integer(1, QUEUE_MAX_SAMPLES_LIMIT)),
            "queue_max_age": ("queue_max_age_s", v.duration),
            "durability": ("durability", v.choice("process", "power")),
            "inventory_check": ("inventory_check_s", _at_least(INVENTORY_CHECK_MIN_S)),
            "w1_gpio": ("w1_gpio", v.integer(0, GpioPin.BCM_MAX)),
            "log_format": ("log_format", v.choice("text", "json")),
            "http": ("http", _http_address),
            "http_token_file": ("http_token_file",
                                lambda raw: v.resolve_path(_path_text(raw), self.path.parent)),
        }
        assert tuple(converters) == BRIDGE_KEYS
        settings: dict[str, Any] = {}
        valid = True
        for key, raw in table.items():
            if key not in converters:
                scope.unknown((key,), list(converters))
                continue
            attribute, convert = converters[key]
            value = scope.convert((key,), convert, raw)
            valid = valid and value is not None
            settings[attribute] = value
        if check_files and settings.get("http_token_file") is not None:
            from pibridge.web.token import TokenError, read_token  # only a profile with the key loads it

            try:
                read_token(settings["http_token_file"])
            except TokenError as exc:
                scope.report(("http_token_file",), str(exc))
                valid = False
        if settings.get("http") and "http_token_file" not in settings:
            from pibridge.web.address import check_exposure  # only a profile with `http` loads it

            problem = check_exposure(settings["http"], None)
            if problem:
                scope.report(("http",), problem)
                valid = False
        return BridgeSettings(**settings) if valid else None

    # -- [[sensor]] -----------------------------------------------------------------------------
    def sensors(self, entries: Any, bridge: BridgeSettings | None) -> tuple[SensorConfig, ...]:
        if isinstance(entries, list) and not entries:
            _Scope(self, ()).report((), "no [[sensor]]: a profile needs at least one sensor "
                                        "(`pibridge profile example` shows how; `pibridge scan --profile-out "
                                        "FILE` starts one from what is connected)")
            return ()
        if isinstance(entries, dict):
            _Scope(self, (SENSOR_TABLE,)).report(
                (), "[sensor] must be [[sensor]] (double brackets: one table per sensor)")
            return ()
        if not isinstance(entries, list):
            _Scope(self, (SENSOR_TABLE,)).report((), "must be [[sensor]] tables, one per sensor")
            return ()
        checked: list[_Checked] = []
        configs: list[SensorConfig] = []
        names: dict[str, _Scope] = {}
        for index, entry in enumerate(entries):
            label = f"sensor #{index + 1}"
            if isinstance(entry, dict) and _is_sensor_name(entry.get("name")):
                label = f"sensor {shown(entry['name'])}"
            scope = _Scope(self, (SENSOR_TABLE, index), label, shown_from=2)
            if not isinstance(entry, dict):
                scope.report((), "must be a table")
                continue
            sensor, one = self._sensor(scope, entry)
            if one is not None:
                checked.append(one)
            name = entry.get("name")
            if isinstance(name, str) and _is_sensor_name(name):
                first = names.setdefault(name, scope)
                if first is not scope:
                    scope.report(("name",), f"{first.label} on line {self.locator.line(first.prefix)} "
                                            "has this name already (names must be unique)")
            if sensor is not None:
                configs.append(sensor)
        self._resources(checked, bridge)
        self._pressure_sources()
        return tuple(configs)

    def _sensor(self, scope: _Scope, entry: dict[str, Any]) -> tuple[SensorConfig | None, _Checked | None]:
        """The sensor's own checks: its config if it has no problem, and what the checks across
        sensors need (when its driver and options are valid)."""
        for key in entry:
            if key not in SENSOR_KEYS:
                scope.unknown((key,), list(SENSOR_KEYS))
        name = entry.get("name")
        if name is None:
            scope.report((), "name is missing (the sensor's name at the agent)")
        elif not _is_sensor_name(name):
            scope.report(("name",), f"must be {protocol.NAME_MIN_LEN} to {protocol.NAME_MAX_LEN} "
                                    f"printable characters, not {shown(name)}")
        interval = scope.convert(("interval",), v.duration, entry.get("interval", DEFAULT_INTERVAL_S))
        options = entry.get("options", {})
        if not isinstance(options, dict):
            scope.report(("options",), f"must be a table of the driver's options, not {shown(options)}")
            options = None
        metrics = entry.get("metrics", {})
        if not isinstance(metrics, dict):
            scope.report(("metrics",), f"must be a table of [sensor.metrics.KEY] tables, "
                                       f"not {shown(metrics)}")
            metrics = {}

        driver_name = entry.get("driver")
        driver: type[Driver] | None = None
        if driver_name is None:
            scope.report((), f"driver is missing (known drivers: {', '.join(registry.names())})")
        elif not isinstance(driver_name, str):
            scope.report(("driver",), f"must be a driver's name, not {shown(driver_name)}")
        else:
            driver = self._driver(scope, driver_name)
            if driver is not None:                  # "BME280" is bme280 (looked up once per name)
                driver_name = self._canonical.setdefault(driver_name,
                                                         registry.canonical(driver_name) or driver_name)

        if interval is not None and interval < MIN_INTERVAL_S:
            scope.report(("interval",), f"{_seconds(interval)} is below {_seconds(MIN_INTERVAL_S)}, the "
                                        "shortest interval pibridge samples any sensor at")
            interval = None
        config, options_ok = None, False
        if driver is not None and options is not None:
            config, options_ok = self._options(scope, driver, options)
        resources = Resources()
        if driver is not None and config is not None:
            resources = self._timing_and_resources(scope, driver, config, interval) or resources
        elif driver is not None and interval is not None:
            # options invalid: the interval is still checked, against the driver's own timing with
            # its defaults (one `check` shows both problems, not the second after the first is fixed)
            self._interval(scope, driver, _default_timing(driver, options or {}), interval)
        reported = (self._reported_metrics(scope, driver, config)
                    if driver is not None and config is not None else None)
        metric_configs = self._metrics(scope, driver, reported, metrics)
        if isinstance(name, str) and _is_sensor_name(name):
            self._reported.setdefault(name, (driver, reported))
        pressure_from, pressure_ok = self._pressure_from(scope, entry, name, driver, config)

        one = _Checked(scope, config, resources, driver) if config is not None else None
        if (not _is_sensor_name(name) or driver is None or config is None or not options_ok
                or interval is None or metric_configs is None or not pressure_ok):
            return None, one
        assert isinstance(name, str) and isinstance(driver_name, str)
        sensor = SensorConfig(name, driver_name, interval, config, metric_configs,
                              self.locator.line(scope.prefix), pressure_from)
        return sensor, one

    # -- pressure_from --------------------------------------------------------------------------
    def _pressure_from(self, scope: _Scope, entry: dict[str, Any], name: Any, driver: type[Driver] | None,
                       config: dict[str, Any] | None) -> tuple[str | None, bool]:
        """The sensor's own ``pressure_from`` checks: (the source's name or None, valid?). Whether
        the source exists and reports pressure is checked once every sensor is known."""
        if "pressure_from" not in entry:
            return None, True
        source = entry["pressure_from"]
        if not _is_sensor_name(source):
            scope.report(("pressure_from",), "must be the name of another sensor of this profile "
                                             f"(one that reports pressure in Pa), not {shown(source)}")
            return None, False
        valid = True
        if driver is not None and not callable(getattr(driver, PRESSURE_FROM_SETTER, None)):
            takers = ", ".join(_pressure_takers()) or "none"
            scope.report(("pressure_from",), f"a {driver.name} takes no ambient pressure (pressure_from is "
                                             f"for drivers that compensate with it: {takers})")
            valid = False
        if config is not None and config.get("ambient_pressure") is not None:
            scope.report(("pressure_from",), "give pressure_from or options.ambient_pressure, not both")
            valid = False
        self._pressure_links.append(_PressureLink(scope, name if isinstance(name, str) else None, source))
        return source, valid

    def _pressure_sources(self) -> None:
        """Each ``pressure_from`` names another sensor of the profile that reports pressure in Pa."""
        known = list(self._reported)
        for link in self._pressure_links:
            keys: KeyPath = ("pressure_from",)
            if link.source == link.sensor:
                link.scope.report(keys, "a sensor cannot take its pressure from itself")
                continue
            if link.source not in self._reported:
                close = v.suggestion(link.source, known)
                hint = f"; did you mean {shown(close)}?" if close else ""
                listed = ", ".join(shown(n) for n in known)
                link.scope.report(keys, f"no sensor named {shown(link.source)} in this profile{hint} "
                                        f"(sensors: {listed})")
                continue
            driver, reported = self._reported[link.source]
            if driver is None or reported is None:
                continue  # the source's own problems are reported on its lines
            metric = reported.get(PRESSURE_FROM_METRIC)
            if metric is None or metric.unit != PRESSURE_FROM_UNIT:
                listed = ", ".join(reported) or "nothing"
                link.scope.report(keys, f"sensor {shown(link.source)} ({driver.name}) does not report "
                                        f"{PRESSURE_FROM_METRIC} in Pa with its options "
                                        f"(it reports {listed})")

    def _driver(self, scope: _Scope, name: str) -> type[Driver] | None:
        if name not in self._drivers:
            self._drivers[name] = _look_up_driver(name)
        found = self._drivers[name]
        if isinstance(found, str):
            scope.report(("driver",), found)
            return None
        return found

    def _options(self, scope: _Scope, driver: type[Driver],
                 options: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """The driver's config of the known options (None if any is invalid; then nothing across
        sensors can be checked), and whether every option given is known and valid."""
        known = [o.key for o in driver.options]
        for key in options:
            if key not in known:
                scope.unknown(("options", key), known, what=f"option of {driver.name}")
        try:
            config, problems = driver.validate({k: raw for k, raw in options.items() if k in known})
        except Exception as exc:  # a driver's own check that raises instead of reporting
            scope.report(("options",), f"{driver.name} could not check its options: {_problem(exc)}")
            return None, False
        for problem in problems:
            keys: KeyPath = ("options", problem.key) if problem.key else ("options",)
            scope.report(keys, _driver_message(problem.message, problem.key))
        if problems:
            return None, False
        return config, all(key in known for key in options)

    def _timing_and_resources(self, scope: _Scope, driver: type[Driver], config: dict[str, Any],
                              interval: float | None) -> Resources | None:
        try:
            timing = driver.timing_for(config)
            resources = driver.resources(config)
        except Exception as exc:
            scope.report(("options",), f"{driver.name} could not work out its timing or pins: "
                                       f"{_problem(exc)}")
            return None
        if interval is not None:
            self._interval(scope, driver, timing, interval)
        return resources

    @staticmethod
    def _interval(scope: _Scope, driver: type[Driver], timing: Timing, interval: float) -> None:
        if interval < timing.min_interval_s:
            scope.report(("interval",), f"{_seconds(interval)} is below the "
                                        f"{_seconds(timing.min_interval_s)} a {driver.name} needs "
                                        "between two readings")
        elif interval < timing.read_time_s:
            scope.report(("interval",), f"{_seconds(interval)} is shorter than one {driver.name} reading "
                                        f"({_seconds(timing.read_time_s)})")

    # -- [sensor.metrics.KEY] -------------------------------------------------------------------
    def _reported_metrics(self, scope: _Scope, driver: type[Driver],
                          config: dict[str, Any]) -> dict[str, Metric] | None:
        """key -> metric (with its annotation) of what this configuration reports
        (`Driver.metrics_for`), or None after reporting a driver that cannot say."""
        try:
            return {m.key: m for m in driver.metrics_for(config)}
        except Exception as exc:  # a third-party driver's own code: one line, not a traceback
            scope.report(("options",), f"{driver.name} could not work out its metrics: {_problem(exc)}")
            return None

    def _metrics(self, scope: _Scope, driver: type[Driver] | None, reported: dict[str, Metric] | None,
                 tables: dict[str, Any]) -> dict[str, MetricConfig] | None:
        """Every ``[sensor.metrics.KEY]`` table checked. ``reported``: what the sensor's
        configuration reports (None when its options are invalid: then only keys the driver
        never declares are refused)."""
        declared = {m.key: m for m in driver.metrics} if driver is not None else None
        configs: dict[str, MetricConfig] = {}
        valid = True
        for key, table in tables.items():
            metric = None
            if declared is not None:
                assert driver is not None
                metric = declared.get(key)
                if metric is None:
                    scope.unknown(("metrics", key), list(declared), what=f"metric of {driver.name}")
                    valid = False
                elif reported is not None and key not in reported:
                    scope.report(("metrics", key), _not_reported(driver, key, reported))
                    valid = False
                elif reported is not None:
                    metric = reported[key]
            if not isinstance(table, dict):
                scope.report(("metrics", key), f"must be a table ([sensor.metrics.{key}]), "
                                               f"not {shown(table)}")
                valid = False
                continue
            config = _MetricChecker(scope, ("metrics", key), metric).check(key, table)
            if config is None:
                valid = False
            else:
                configs[key] = config
        sent = reported if reported is not None else declared
        if sent and all(key in configs and not configs[key].enabled for key in sent):
            scope.report(("metrics",), "every metric is disabled (enabled = false): "
                                       "the sensor would send nothing")
            valid = False
        return configs if valid else None

    # -- across sensors: pins, buses, addresses, probes -------------------------------------------
    def _resources(self, sensors: list[_Checked], bridge: BridgeSettings | None) -> None:
        w1_gpio = bridge.w1_gpio if bridge is not None else BridgeSettings().w1_gpio
        w1_user = next((s for s in sensors if s.resources.w1), None)
        bus_pins: dict[int, str] = {}   # pin -> what holds it while the bus is in use
        for sensor in sensors:
            for bus, _ in sensor.resources.i2c:
                i2c_pins = " and ".join(f"GPIO {p}" for p in I2C_BUS_PINS.get(bus, ()))
                for pin in I2C_BUS_PINS.get(bus, ()):
                    bus_pins.setdefault(pin, f"a pin of I2C bus {bus} ({i2c_pins}), "
                                             f"which {sensor.scope.label} uses")
            for port, _ in sensor.resources.spi:
                spi_pins = SPI_BUS_PINS.get(port, ())
                for pin in spi_pins:
                    bus_pins.setdefault(pin, f"a pin of SPI{port} (GPIO {min(spi_pins)}–{max(spi_pins)}), "
                                             f"which {sensor.scope.label} uses")
            for device in sensor.resources.serial:
                uart_pins = SERIAL_PORT_PINS.get(device, ())
                for pin in uart_pins:
                    bus_pins.setdefault(pin, f"a pin of the serial port {device} (GPIO "
                                             f"{' and '.join(map(str, uart_pins))}), which "
                                             f"{sensor.scope.label} uses")
        if w1_user is not None and w1_gpio in bus_pins:
            _Scope(self, (BRIDGE_TABLE,)).report(("w1_gpio",), f"GPIO {w1_gpio} is {bus_pins[w1_gpio]}")

        gpio_owner: dict[int, _Checked] = {}
        i2c_owner: dict[tuple[int, int], _Checked] = {}
        w1_owner: dict[str, _Checked] = {}
        input_owner: dict[tuple[int, int, str], tuple[_Checked, bool]] = {}   # -> (first reader, common)
        spi_owner: dict[tuple[int, int], _Checked] = {}
        serial_owner: dict[str, _Checked] = {}
        for sensor in sensors:
            scope, resources = sensor.scope, sensor.resources
            for pin in resources.gpio:
                keys = _pin_option(sensor.config, pin)
                if pin in gpio_owner:
                    scope.report(keys, f"GPIO {pin} is already used by {gpio_owner[pin].scope.label}")
                    continue
                gpio_owner[pin] = sensor
                if w1_user is not None and pin == w1_gpio:
                    scope.report(keys, f"GPIO {pin} is the 1-Wire pin")
                elif pin in bus_pins:
                    scope.report(keys, f"GPIO {pin} is {bus_pins[pin]}")
            slot_clash = False
            for slot in resources.i2c:
                keys = _named_option(sensor.config, "address")
                owner = i2c_owner.get(slot)
                if owner is None:
                    i2c_owner[slot] = sensor
                elif not resources.i2c_shared_by or resources.i2c_shared_by != owner.resources.i2c_shared_by:
                    slot_clash = True
                    scope.report(keys, f"I2C address {slot[1]:#04x} on bus {slot[0]} is already used by "
                                       f"{owner.scope.label}")
            for chip_input in () if slot_clash else resources.inputs:   # a shared chip: each input once
                where = (chip_input.bus, chip_input.address, chip_input.name)
                claim = input_owner.get(where)
                if claim is None:
                    input_owner[where] = (sensor, chip_input.common)
                elif not (chip_input.common and claim[1]):    # only pairs' negative inputs are shared
                    hint = (" (a pair's negative input is shared only with other pairs' negative inputs)"
                            if chip_input.common or claim[1] else "")
                    scope.report(_named_option(sensor.config, chip_input.option),
                                 f"{chip_input.name} of the chip at {chip_input.address:#04x} on bus "
                                 f"{chip_input.bus} is already read by {claim[0].scope.label}{hint}")
            for slot in resources.spi:
                # one chip per chip select: sensors of one driver that declares it shares its
                # chip (the MCP3008's channels) may share it, any other pair clashes
                owner = spi_owner.setdefault(slot, sensor)
                if owner is not sensor and (owner.driver is not sensor.driver
                                            or not getattr(sensor.driver, "shares_chip_select", False)):
                    scope.report(_named_option(sensor.config, "spi_device"),
                                 f"SPI{slot[0]} CE{slot[1]} is already used by {owner.scope.label}")
            for device in resources.serial:
                # here, not at the top: a profile without a UART sensor never loads the serial code
                from pibridge.drivers import serialport
                keys = _named_option(sensor.config, "port")
                owner = next((holder for known, holder in serial_owner.items()
                              if serialport.same_device(known, device)), None)
                if owner is not None:
                    scope.report(keys, f"serial port {device} is already used by {owner.scope.label} "
                                       "(one sensor per port)")
                    continue
                alias = next(((known, holder) for known, holder in serial_owner.items()
                              if serialport.may_be_one_header_uart(known, device)), None)
                if alias is not None:
                    scope.report(keys, f"serial port {device} may be the same header UART (GPIO 14/15) "
                                       f"as {alias[0]}, which {alias[1].scope.label} uses (serial0 is "
                                       "ttyS0 or ttyAMA0, depending on the Pi; one sensor per port)")
                    continue
                serial_owner[device] = sensor
                console = serialport.console_problem(device)
                if console is not None:
                    scope.report(keys, console)
            for device_id in resources.w1:
                keys = _named_option(sensor.config, "device_id")
                if device_id in w1_owner:
                    scope.report(keys, f"1-Wire probe {device_id} is already used by "
                                       f"{w1_owner[device_id].scope.label}")
                else:
                    w1_owner[device_id] = sensor


def _pressure_takers() -> list[str]:
    """The built-in drivers that take an ambient pressure (for the message that lists them)."""
    takers = []
    for name in registry.builtin():
        try:
            cls = registry.get(name)
        except Exception:  # a broken driver is reported where it is used
            continue
        if callable(getattr(cls, PRESSURE_FROM_SETTER, None)):
            takers.append(name)
    return sorted(takers)


def _default_timing(driver: type[Driver], given: Mapping[str, Any]) -> Timing:
    """The timing of ``driver`` with the valid ones of ``given`` and defaults for the rest (the
    class's declared timing when even that cannot be worked out)."""
    config: dict[str, Any] = {}
    for option in driver.options:
        try:
            config[option.key] = option.convert(given[option.key]) if given.get(option.key) is not None \
                else option.default
        except Exception:     # the option's own problem is reported already
            config[option.key] = option.default
    try:
        return driver.timing_for(config)
    except Exception:
        return Timing(driver.read_time_s, driver.min_interval_s, driver.retry)


def _look_up_driver(name: str) -> type[Driver] | str:
    """The driver class registered as ``name``, or the problem to report."""
    try:
        return registry.get(name)
    except registry.UnknownDriverError:
        known = registry.names()
        close = v.suggestion(name, known)
        return (f"unknown driver {shown(name)}" + (f"; did you mean {close}?" if close else "")
                + f" (known: {', '.join(known)})")
    except Exception as exc:  # a third-party driver that fails to import: one line, not a traceback
        return f"driver {shown(name)} cannot be loaded: {_problem(exc)}"


def _problem(exc: Exception) -> str:
    """What went wrong in a driver's own code, in words: a typed error (`SensorError`, an
    `ImportError`) by its message; anything else is a bug, and its class says what broke
    (``KeyError: 'pin'``)."""
    text = str(exc).strip()
    if isinstance(exc, SensorError | ImportError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _MetricChecker:
    """One ``[sensor.metrics.KEY]`` table: names, calibration, filters, unit or type."""

    KEYS = METRIC_KEYS
    NUMERIC_ONLY = ("offset", "scale", "points", "median", "valid_range", "clamp", "deadband")

    def __init__(self, scope: _Scope, keys: KeyPath, metric: Metric | None) -> None:
        self.scope, self.keys, self.metric = scope, keys, metric
        self.valid = True

    def report(self, key: str | KeyPath, message: str) -> None:
        self.scope.report(self.keys + ((key,) if isinstance(key, str) else key), message)
        self.valid = False

    def get(self, table: dict[str, Any], key: str, convert: Callable[[Any], Any]) -> Any:
        if key not in table:
            return None
        try:
            return convert(table[key])
        except ValueError as exc:
            self.report(key, str(exc))
            return None

    def check(self, key: str, table: dict[str, Any]) -> MetricConfig | None:
        for given in table:
            if given not in self.KEYS:
                self.scope.unknown((*self.keys, given), list(self.KEYS))
                self.valid = False
        kind = _driver_kind(self.metric) if self.metric is not None else None
        effective = _effective_type(kind, table)
        if kind is not None:
            self._check_type_override(key, kind, table)
        if effective in ("bool", "string"):
            for given in self.NUMERIC_ONLY:
                if given in table:
                    self.report(given, f"{key} is a {effective} metric: {given} applies to numbers")
        name = self.get(table, "name", _metric_name)
        enabled = self.get(table, "enabled", v.boolean)
        offset = self.get(table, "offset", v.number)
        scale = self.get(table, "scale", _scale)
        points = self._points(table)
        if "points" in table and ("offset" in table or "scale" in table):
            self.report("points", "give either points or offset/scale, not both")
        median = self.get(table, "median", v.integer(1, MEDIAN_MAX))
        valid_range = self.get(table, "valid_range", _range)
        clamp = self.get(table, "clamp", _range)
        deadband = self.get(table, "deadband", _non_negative)
        max_silence = self.get(table, "max_silence", v.duration)
        if max_silence is not None and "deadband" not in table:
            self.report("max_silence", "has no effect without deadband (without one every reading is sent)")
        stated = self.get(table, "unit", _unit)
        value_type = self.get(table, "type", v.choice(*(str(t) for t in protocol.ValueType)))
        annotation = self.get(table, "annotation", _annotation)
        both = "points" in table and ("offset" in table or "scale" in table)   # reported already
        converted = [k for k, value in (("points", points), ("scale", scale if scale != 1 else None))
                     if value is not None and not both]
        self._check_conversion(key, table, stated, converted)
        unit = stated.agent_unit if stated is not None else None
        if stated is not None and stated.annotation is not None:   # "hPa": a custom metric
            value_type, annotation = str(protocol.ValueType.DOUBLE), stated.annotation
        if "unit" in table and "type" in table:
            self.report("type", "give either unit or type (+ annotation), not both")
        if "annotation" in table and "type" not in table:
            self.report("annotation", "goes with type (a custom type's annotation); "
                                      "with unit or the driver's own type, leave it out")
        if not self.valid:
            return None
        calibration = None
        if points is not None:
            calibration = Calibration(points=points)
        elif offset is not None or scale is not None:
            calibration = Calibration(offset=offset if offset is not None else 0.0,
                                      scale=scale if scale is not None else 1.0)
        return MetricConfig(key, enabled if enabled is not None else True, name, calibration,
                            median if median is not None else 1, valid_range, deadband, max_silence,
                            unit, value_type, annotation, clamp)

    def _check_conversion(self, key: str, table: dict[str, Any], stated: ProfileUnit | None,
                          converted: list[str]) -> None:
        """A converted value carries the unit it now has: a conversion (``scale``, ``points``)
        needs its result's unit stated (``scale = 0.01`` on pascals sent as "Pa" is wrong), and a
        unit of the same quantity in another size needs the scale that gets there. An ``offset``
        alone corrects a reading in its own unit (a sensor 0.4 °C warm) and needs no unit."""
        if self.metric is None or _driver_kind(self.metric) in ("bool", "string"):
            return
        source = symbol_of(self.metric.unit, self.metric.annotation)
        if converted and "unit" not in table and "type" not in table:
            example = f'unit = "{source}" if it is still in {source}' if source else 'unit = "%"'
            self.report(converted[0], f"converts {key} ({', '.join(converted)}): say which unit the result "
                                      f"is in ({example}; a converted value sent as "
                                      f"{shown(source or 'the driver unit')} would be wrong)")
        elif stated is not None and not converted and "offset" not in table:
            factor = conversion_factor(source, stated.symbol) if source else None
            if factor is not None:
                self.report("unit", f"{key} is measured in {source}: to send {stated.symbol} add "
                                    f"scale = {factor:g}")

    def _check_type_override(self, key: str, kind: str, table: dict[str, Any]) -> None:
        """A ``type`` or ``unit`` must fit the values the driver reports: a number stays a number
        (``integer`` only where the driver reports integers: no silent rounding of a double), a
        bool stays a bool, a string a string."""
        wanted = table.get("type")
        if "unit" in table and kind in ("bool", "string"):
            self.report("unit", f"{key} reports {kind} values: a unit applies to numbers")
        if not isinstance(wanted, str) or wanted not in VALUE_TYPES or wanted == kind:
            return
        if kind in ("bool", "string"):
            self.report("type", f'{key} reports {kind} values: its type can only be "{kind}", not "{wanted}"')
        elif wanted in ("bool", "string"):
            allowed = '"double"' if kind == "double" else '"double" or "integer"'
            self.report("type", f'{key} reports numbers: its type can be {allowed}, not "{wanted}"')
        elif wanted == "integer":  # kind == "double"
            self.report("type", f'{key} reports fractional numbers: "integer" would round them '
                                '(use "double")')

    def _points(self, table: dict[str, Any]) -> tuple[tuple[float, float], ...] | None:
        """[[raw, true], …]: at least two pairs, raw strictly monotonic (either way; kept sorted
        by raw)."""
        if "points" not in table:
            return None
        raw = table["points"]
        if not isinstance(raw, list) or len(raw) < 2:
            self.report("points", f"must be at least two [raw, true] pairs, not {shown(raw)}")
            return None
        pairs: list[tuple[float, float]] = []
        for index, pair in enumerate(raw):
            if (not isinstance(pair, list) or len(pair) != 2 or not all(v.is_number(x) for x in pair)
                    or not all(math.isfinite(x) for x in pair)):
                self.report(("points", index), f"must be a [raw, true] pair of numbers, not {shown(pair)}")
                return None
            pairs.append((float(pair[0]), float(pair[1])))
        steps = [b[0] - a[0] for a, b in itertools.pairwise(pairs)]
        if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
            bad = next(i for i, s in enumerate(steps, start=1)
                       if s == 0 or (s > 0) != (steps[0] > 0) or steps[0] == 0)
            self.report(("points", bad), f"raw values must rise (or fall) strictly from pair to pair: "
                                         f"{pairs[bad][0]:g} after {pairs[bad - 1][0]:g}")
            return None
        return tuple(sorted(pairs))


#: Value types that carry numbers (the only ones calibration, filters and deadband apply to).
NUMERIC_TYPES = ("double", "integer")
VALUE_TYPES = tuple(str(t) for t in protocol.ValueType)


def _driver_kind(metric: Metric) -> str:
    """What the driver reports for ``metric``: its value type, or "double" for a unit metric."""
    return str(metric.value_type) if metric.value_type is not None else "double"


def _effective_type(kind: str | None, table: dict[str, Any]) -> str | None:
    """The metric's type as configured: ``type`` if given, a number if a ``unit`` is given, else
    the driver's own (None when the driver is unknown)."""
    wanted = table.get("type")
    if isinstance(wanted, str) and wanted in VALUE_TYPES:
        return wanted
    if "unit" in table:
        return "double"
    return kind


# --- converters ---------------------------------------------------------------------------------
def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a port number (integer), not {shown(value)}")
    if not PORT_MIN <= value <= PORT_MAX:
        raise ValueError(f"must be a port number between {PORT_MIN} and {PORT_MAX}, not {value}")
    return value


def _mode(value: Any) -> ProvisioningMode:
    allowed = " or ".join(f'"{m}"' for m in CONFIGURABLE_MODES)
    if value == ProvisioningMode.OVERRIDE:
        raise ValueError(f'"override" is not a profile setting (it is an action: run '
                         f"`pibridge provision --override`); use {allowed}")
    if value not in CONFIGURABLE_MODES:
        raise ValueError(f"must be {allowed}, not {shown(value)}")
    return ProvisioningMode(value)


def _http_address(value: Any) -> str:
    """``[bridge] http``: ``HOST:PORT`` (pibridge.web.address, imported only for this key)."""
    from pibridge.web.address import parse_address

    parse_address(v.text(value))
    return str(value)


def _at_least(minimum_s: float) -> Callable[[Any], float]:
    def convert(raw: Any) -> float:
        seconds = v.duration(raw)
        if seconds < minimum_s:
            raise ValueError(f"must be at least {_seconds(minimum_s)}, not {shown(raw)}")
        return seconds
    return convert


def _is_sensor_name(value: Any) -> bool:
    """2–64 printable characters, not all blank: names reach the agent and every terminal that
    shows them, so no control character (escape sequences, line breaks) is accepted."""
    return isinstance(value, str) and protocol.NAME_MIN_LEN <= len(value) <= protocol.NAME_MAX_LEN \
        and bool(value.strip()) and value.isprintable()


def _metric_name(value: Any) -> str:
    if not _is_sensor_name(value):
        raise ValueError(f"must be {protocol.NAME_MIN_LEN} to {protocol.NAME_MAX_LEN} printable characters, "
                         f"not {shown(value)}")
    return str(value)


def _annotation(value: Any) -> str:
    if not isinstance(value, str) or len(value) > protocol.NAME_MAX_LEN or not value.isprintable():
        raise ValueError(f"must be at most {protocol.NAME_MAX_LEN} printable characters, not {shown(value)}")
    return value


def _scale(value: Any) -> float:
    scale = v.number(value)
    if scale == 0:
        raise ValueError("must not be 0 (every reading would become the offset)")
    return scale


def _non_negative(value: Any) -> float:
    number = v.number(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, not {shown(value)}")
    return number


def _range(value: Any) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2 or not all(v.is_number(x) for x in value)
            or not all(math.isfinite(x) for x in value)):
        raise ValueError(f"must be [lowest, highest] (two numbers), not {shown(value)}")
    low, high = float(value[0]), float(value[1])
    if low >= high:
        raise ValueError(f"the lowest value {low:g} must be below the highest {high:g}")
    return low, high


def _unit(value: Any) -> ProfileUnit:
    """An agent unit name, its symbol ("°C", "%", "Pa": the agent's unit) or a unit the agent has
    no name for ("hPa", "ppm", "lx": sent as a custom metric, type double with that annotation)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{shown(value)} is not a unit" + UNIT_FORMS)
    try:
        return profile_unit(value, protocol.VALUE_UNITS)
    except ValueError as exc:
        raise ValueError(printable(str(exc)).replace(repr(value), shown(value), 1)) from None


# --- message helpers ----------------------------------------------------------------------------
def key_text(path: KeyPath) -> str:
    """A key path as a reader writes it: ``options.pin``, ``points[2]``, ``metrics."my key"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            bare = part and len(part) <= SHOWN_MAX and all(c.isascii() and (c.isalnum() or c in "_-")
                                                            for c in part)
            out += ("." if out else "") + (part if bare else shown(part))
    return out


def _driver_message(message: str, key: str) -> str:
    """A driver's message without its ``option pin: `` prefix (the key path says it already),
    cut to `MESSAGE_MAX` characters (drivers quote the value given, which may be 10 MB)."""
    message = message.removeprefix(f"option {key}: ") if key else message
    return message if len(message) <= MESSAGE_MAX else message[:MESSAGE_MAX - 1] + "…"


def _not_reported(driver: type[Driver], key: str, reported: Mapping[str, Metric]) -> str:
    """The message for a ``[sensor.metrics.KEY]`` the driver has but this configuration leaves
    out (BME280: ``osrs_p = 0``, or ``metrics = "temperature"``)."""
    return (f"this {driver.name} does not report {key} with these options "
            f"(it reports {', '.join(reported) or 'nothing'})")


def _named_option(config: dict[str, Any] | None, key: str) -> KeyPath:
    """``options.KEY`` if the driver has that option, else ``options`` (a driver's own naming)."""
    return ("options", key) if config and key in config else ("options",)


def _pin_option(config: dict[str, Any] | None, pin: int) -> KeyPath:
    """The key path of the `GpioPin` option that holds ``pin`` (``options`` if none does)."""
    for key, value in (config or {}).items():
        if isinstance(value, GpioPin) and value == pin:
            return ("options", key)
    return ("options",)


def _seconds(value: float) -> str:
    return f"{value:g} s" if value >= 1 or value == 0 else f"{value * 1000:g} ms"
