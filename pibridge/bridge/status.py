"""The running bridge's health, defined once: what `pibridge status` prints, what the live view
draws and what a web page will serve.

* `BridgeStatus` (with `SensorStatus`, `MetricReading`, `QueueStatus`, `AgentStatus`,
  `ClockStatus`, `ErrorEvent`): the snapshot, documented field by field; `to_json` / `from_json`
  with a schema version (`SCHEMA_VERSION`; a reader refuses a newer major schema and ignores keys
  it does not know, so adding a field is not a new version).
* `StatusTracker`: the thread-safe counters the scheduler and delivery update; `snapshot()`.
* `StatusWriter`: writes the snapshot atomically (temp file + rename) into the runtime
  directory (RAM: ``/run/pibridge`` under systemd, never the SD card), at most every
  `WRITE_INTERVAL_S`, and an unchanged one only every `HEARTBEAT_S`, as often as it must to
  stay fresh (an idle bridge's main loop wakes for nothing else).
* `read_status` / `find_status_files`: read it back and tell fresh from stale (the writer's
  process alive, same boot, age within `STALE_AFTER_S`); `assess` grades health 0 / 1 / 2.

Times: ``*_at`` fields are wall-clock seconds since the epoch (float). While the clock is not
synchronised they are the Pi's own wrong time — durations between them are still right, so
displays show ages ("for 3 min") computed against ``written_at``. Freshness uses the monotonic
clock (``written_monotonic``, system-wide on Linux) when reader and writer share a boot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
import types
import typing
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pibridge import __version__
from pibridge.bounded import read_bounded
from pibridge.units import display

if TYPE_CHECKING:
    from pibridge.bridge.model import SensorSpec
    from pibridge.profile import SensorConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1                 #: the snapshot's schema; bumped only for incompatible changes
WRITE_INTERVAL_S = 5.0             #: the status file is rewritten at most this often
STALE_AFTER_S = 30.0               #: older than this (writer alive or not): stale
#: a snapshot that did not change (`StatusTracker.changes`) is written again only this long after
#: the last write, and an idle bridge's main loop wakes for nothing else: a third of
#: `STALE_AFTER_S`, so two missed writes still leave a live bridge's file fresh
HEARTBEAT_S = STALE_AFTER_S / 3
AGENT_AWAY_GRACE_S = 120.0         #: agent disconnected for longer: degraded
ACK_GRACE_S = 300.0                #: samples waiting and nothing acknowledged for longer: degraded
STUCK_AFTER_GRACES = 3             #: the oldest sample waiting this many ack graces: degraded anyway
DELIVERY_FAILING_GRACE_S = 30.0    #: a delivery step failing for longer (retried meanwhile): degraded
LOSS_RECENT_S = 3600.0             #: samples dropped or dead-lettered within this: degraded
STATUS_FILE_MAX_BYTES = 8 * 1024 * 1024  #: a status file larger than this is not one (1,000 sensors: ~1 MiB)
#: How a float that JSON cannot hold (inf, -inf, NaN: e.g. a metric scaled by 1e308) is written:
#: ``{"$float": "inf"}`` (a plain string would be taken for a string value).
NON_FINITE_KEY = "$float"
RECENT_ERRORS_MAX = 10             #: error events kept in the snapshot
RELOAD_PROBLEMS_KEPT = 20          #: problems of a refused reload kept in the snapshot
STATUS_FILE_MODE = 0o644           #: readable by any local user (`pibridge status` as `pi`)
STATUS_FILE_PREFIX = "status-"
STATUS_FILE_SUFFIX = ".json"
SYSTEM_RUNTIME_DIR = Path("/run/pibridge")   #: systemd's RuntimeDirectory=pibridge
RUNTIME_DIRECTORY_ENV = "RUNTIME_DIRECTORY"  #: set by systemd for RuntimeDirectory=
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
PROC_STAT_STARTTIME_FIELD = 22     #: /proc/PID/stat field 22: start time in clock ticks since boot

# sensor states
STARTING, OK, FAILING = "starting", "ok", "failing"
SENSOR_STATES = (STARTING, OK, FAILING)

# health levels: also `pibridge status`'s exit codes
HEALTHY, DEGRADED, NOT_RUNNING = 0, 1, 2

class StatusFileError(Exception):
    """A status file that cannot be read or does not match the schema (one line, names the file)."""


# ================================================================================================
# the snapshot
# ================================================================================================

@dataclass(frozen=True)
class MetricReading:
    """The last value of one metric: ``key`` (the driver's metric key), ``name`` (the agent
    metric's name), ``value`` (after calibration and filters; None if the last sample left it
    out), ``unit`` the agent's unit name (``SI.Temperature.CELSIUS``; "" for a custom metric),
    ``annotation`` the custom metric's annotation (what a bool's true means: "open"). What a
    person reads is `pibridge.units.display` of the three (`MetricReading.shown`); a status file
    of an older pibridge holds a symbol ("°C") in ``unit``, which reads the same."""

    key: str
    name: str
    value: float | int | bool | str | None
    unit: str = ""
    annotation: str = ""

    @property
    def shown(self) -> str:
        """The value as a person reads it: "21.4 °C", "1013 hPa", "closed"."""
        return display(self.value, self.unit or None, self.annotation or None)


@dataclass(frozen=True)
class SensorStatus:
    """One sensor of the profile.

    Counters since the bridge started: ``taken`` (samples committed to the queue), ``pushed``
    (acknowledged by the agent), ``failed`` (reads that failed after the driver's retries),
    ``skipped`` (grid slots missed: overrun, hung read, abandoned read), ``dead_lettered`` (samples
    the agent refused for good). ``state`` is one of `SENSOR_STATES`: "starting" (no read yet),
    "ok", "failing" (since ``failing_since``; ``last_error`` says why). ``last_sample_at`` is the
    last sample's timestamp; ``values`` its metrics."""

    name: str
    driver: str
    interval_s: float
    state: str = STARTING
    failing_since: float | None = None
    last_error: str | None = None
    last_sample_at: float | None = None
    taken: int = 0
    pushed: int = 0
    failed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    values: tuple[MetricReading, ...] = ()
    #: the last successful read (wall-clock): later than ``last_sample_at`` while a deadband
    #: leaves unchanged values out; None before the first read (or from an older pibridge)
    last_read_at: float | None = None


@dataclass(frozen=True)
class QueueStatus:
    """The on-disk queue: ``depth`` samples waiting, the oldest one's timestamp
    (``oldest_sample_at``; None when empty or only unstamped samples wait), ``unstamped`` samples
    waiting for the clock to be set, ``dropped`` (queue full or too old) and ``dead_letters`` since
    the bridge started; ``last_loss_at`` when either last grew; ``store_error`` why samples
    cannot be stored right now (disk full, I/O error), None while they can."""

    depth: int = 0
    oldest_sample_at: float | None = None
    unstamped: int = 0
    dropped: int = 0
    dead_letters: int = 0
    last_loss_at: float | None = None
    store_error: str | None = None


@dataclass(frozen=True)
class AgentStatus:
    """The agent connection: ``connected`` and since when (``since``: the last change either way;
    None before the first attempt ended), ``host`` and ``port``, ``client_id`` once provisioned,
    ``last_ack_at`` (the last acknowledged push), ``last_error`` (why it is not connected),
    ``delivery_error`` (a delivery step fails, retried with backoff) since ``delivery_error_since``."""

    host: str = ""
    port: int = 0
    connected: bool = False
    since: float | None = None
    client_id: str | None = None
    last_ack_at: float | None = None
    last_error: str | None = None
    delivery_error: str | None = None
    delivery_error_since: float | None = None


@dataclass(frozen=True)
class ClockStatus:
    """``synchronised``: the system clock is known to be set (until then samples wait for their
    wall-clock timestamps); ``source`` says how that was decided (e.g. "timesyncd", "adjtimex");
    ``since``: when ``synchronised`` last changed (or the bridge started)."""

    synchronised: bool = False
    source: str = ""
    since: float | None = None


@dataclass(frozen=True)
class ReloadStatus:
    """Profile reloads since the bridge started (SIGHUP, `pibridge reload`): ``count`` handled,
    the last one's ``at`` (when the bridge took it up), whether it was ``applied``, and if it was
    refused, its ``problems`` (the first `RELOAD_PROBLEMS_KEPT` lines) and ``problem_count``.
    ``refused`` stays true while the bridge runs an older profile than its file because the
    last reload was refused: until a reload succeeds or the file is fixed back to the running
    profile."""

    count: int = 0
    at: float | None = None
    applied: bool = True
    refused: bool = False
    problems: tuple[str, ...] = ()
    problem_count: int = 0


@dataclass(frozen=True)
class ErrorEvent:
    """One recent problem: when, which sensor ("" for the bridge or the agent), what."""

    at: float
    sensor: str
    message: str


@dataclass(frozen=True)
class BridgeStatus:
    """One snapshot of a running bridge. The writer fills ``pid``, ``pid_start``, ``boot_id``,
    ``written_at`` and ``written_monotonic``; the service fills the rest (`StatusTracker` does
    it from counters). ``profile`` and ``state_dir`` are paths as strings; ``started_at`` when the
    bridge started; ``restart_pending`` lists profile keys changed by a reload that apply only at
    the next restart; ``recent_errors`` the last `RECENT_ERRORS_MAX`, oldest first; ``reload``
    the profile reloads (`ReloadStatus`: while a refused one leaves an older profile running, the
    bridge is degraded)."""

    SCHEMA: ClassVar[int] = SCHEMA_VERSION

    profile: str
    state_dir: str
    started_at: float
    sensors: tuple[SensorStatus, ...] = ()
    queue: QueueStatus = field(default_factory=QueueStatus)
    agent: AgentStatus = field(default_factory=AgentStatus)
    clock: ClockStatus = field(default_factory=ClockStatus)
    recent_errors: tuple[ErrorEvent, ...] = ()
    restart_pending: tuple[str, ...] = ()
    reload: ReloadStatus = field(default_factory=ReloadStatus)
    version: str = __version__
    pid: int = 0
    pid_start: int | None = None
    boot_id: str = ""
    written_at: float = 0.0
    written_monotonic: float = 0.0

    def sensor(self, name: str) -> SensorStatus:
        for sensor in self.sensors:
            if sensor.name == name:
                return sensor
        raise KeyError(name)

    # --- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, **_to_plain(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """`StatusFileError` if ``data`` does not match the schema (a newer schema included)."""
        if not isinstance(data, dict):
            raise StatusFileError("not a JSON object")
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise StatusFileError("no schema version")
        if schema > SCHEMA_VERSION:
            raise StatusFileError(f"schema {schema} is newer than this pibridge reads ({SCHEMA_VERSION}):"
                                  " update pibridge")
        return _from_plain(cls, data, "")

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StatusFileError(f"not JSON: {exc}") from None
        except RecursionError:
            raise StatusFileError("not a status file: nested too deeply") from None
        try:
            return cls.from_dict(data)
        except RecursionError:
            raise StatusFileError("not a status file: nested too deeply") from None


#: a snapshot dataclass -> its field names, looked up once (`_to_plain` runs per status write)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
#: values `_to_plain` hands back as they are (the common case: one type check, no recursion)
_PLAIN_TYPES = (str, int, bool, type(None))


def _to_plain(value: Any) -> Any:
    """A snapshot as JSON's types: dataclasses as objects, tuples as lists, non-finite floats as
    ``{"$float": "inf"}``. No copy of what is plain already (the snapshot is frozen and built per
    write)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    if kind is float:
        return value if math.isfinite(value) else {NON_FINITE_KEY: repr(value)}  # "inf", "-inf", "nan"
    if kind is tuple or kind is list:
        return [_to_plain(item) for item in value]
    names = _FIELD_NAMES.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        plain = {}
        for name in names:   # plain fields inline: most of a snapshot's values are
            item = getattr(value, name)
            kind = type(item)
            plain[name] = item if kind in _PLAIN_TYPES or (kind is float and math.isfinite(item)) \
                else _to_plain(item)
        return plain
    if isinstance(value, tuple | list):
        return [_to_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {NON_FINITE_KEY: repr(value)}
    return value


def _non_finite(value: Any) -> float | None:
    """The float of a ``{"$float": "inf"}`` object (see `NON_FINITE_KEY`), else None."""
    if isinstance(value, dict) and len(value) == 1 and value.get(NON_FINITE_KEY) in ("inf", "-inf", "nan"):
        return float(value[NON_FINITE_KEY])
    return None


_HINTS: dict[type, dict[str, Any]] = {}


def _from_plain(cls: type, data: Any, where: str) -> Any:
    """A dataclass from a JSON object: every field without a default must be there, each value
    of its declared type; unknown keys are ignored (a newer writer's additions)."""
    if not isinstance(data, dict):
        raise StatusFileError(f"{where or 'status'}: expected an object")
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise StatusFileError(f"{key}: missing")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], key)
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if type(value) in options or (value is None and type(None) in options):
            return value                              # exact: an int stays an int
        for option in options:
            try:
                return _convert(option, value, where)
            except StatusFileError:
                continue
        raise StatusFileError(f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise StatusFileError(f"{where}: expected a list")
        item_hint = typing.get_args(hint)[0]
        return tuple(_convert(item_hint, item, f"{where}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _from_plain(hint, value, where)
    if hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if (special := _non_finite(value)) is not None:
            return special
    elif hint in (int, str, bool):
        if type(value) is hint:
            return value
    else:  # pragma: no cover - a field type this converter does not know is a bug here
        raise TypeError(f"unsupported field type {hint!r}")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:39] + "…"
    raise StatusFileError(f"{where}: expected {getattr(hint, '__name__', hint)}, not {shown}")


# ================================================================================================
# health
# ================================================================================================

@dataclass(frozen=True)
class Health:
    """``level``: `HEALTHY` (0), `DEGRADED` (1) or `NOT_RUNNING` (2); ``reasons``: one line each."""

    level: int
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return {HEALTHY: "healthy", DEGRADED: "degraded", NOT_RUNNING: "not running"}[self.level]


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 d``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def assess(status: BridgeStatus, *, agent_grace_s: float = AGENT_AWAY_GRACE_S,
           ack_grace_s: float = ACK_GRACE_S) -> Health:
    """Degraded if a sensor is failing, or the agent has been away (or the clock unsynchronised)
    for longer than ``agent_grace_s``, or samples are being lost or not delivered, or an older
    profile runs because the last reload was refused (see `_losses`); else healthy. Ages are
    measured against ``written_at``."""
    reasons = _losses(status, ack_grace_s)
    for sensor in status.sensors:
        if sensor.state == FAILING:
            since = (f" for {format_duration(status.written_at - sensor.failing_since)}"
                     if sensor.failing_since is not None else "")
            reasons.append(f"sensor {sensor.name!r} failing{since}: {sensor.last_error or 'no reading'}")
    agent = status.agent
    away_since = agent.since if agent.since is not None else status.started_at
    if not agent.connected and status.written_at - away_since > agent_grace_s:
        reasons.append(f"agent {agent.host}:{agent.port} not connected for "
                       f"{format_duration(status.written_at - away_since)}"
                       + (f": {agent.last_error}" if agent.last_error else ""))
    clock = status.clock
    unsynced_since = clock.since if clock.since is not None else status.started_at
    if not clock.synchronised and status.written_at - unsynced_since > agent_grace_s:
        unsynced_for = format_duration(status.written_at - unsynced_since)
        reasons.append(f"system clock not synchronised for {unsynced_for}"
                       f" ({status.queue.unstamped} samples wait for a timestamp)")
    return Health(DEGRADED if reasons else HEALTHY, tuple(reasons))


def _losses(status: BridgeStatus, ack_grace_s: float) -> list[str]:
    """Samples lost or not delivered: they cannot be stored (disk full); samples older than
    ``ack_grace_s`` wait and nothing was acknowledged for as long, or the oldest waits
    `STUCK_AFTER_GRACES` times as long while others are acknowledged (one sensor stuck); a
    delivery step has failed for longer than `DELIVERY_FAILING_GRACE_S`; samples were dropped or
    dead-lettered within `LOSS_RECENT_S`; the last profile reload was refused (the bridge runs
    the previous one)."""
    reasons = []
    now, queue, agent = status.written_at, status.queue, status.agent
    if queue.store_error:
        reasons.append(f"cannot store samples: {queue.store_error}")
    if queue.depth and queue.oldest_sample_at is not None:
        waiting_for = now - queue.oldest_sample_at
        quiet_for = now - max(agent.last_ack_at or status.started_at, status.started_at)
        if waiting_for > ack_grace_s and quiet_for > ack_grace_s:
            last = (f"last acknowledgement {format_duration(now - agent.last_ack_at)} ago"
                    if agent.last_ack_at is not None else "nothing acknowledged since the start")
            reasons.append(f"samples not delivered: {queue.depth} waiting, the oldest for "
                           f"{format_duration(waiting_for)}; {last} (--ack-grace {ack_grace_s:g} s)")
        elif waiting_for > STUCK_AFTER_GRACES * ack_grace_s:
            # others are acknowledged, but one sample (one sensor's) stays behind: stuck, not slow
            reasons.append(f"samples not delivered: the oldest of {queue.depth} waiting has waited "
                           f"{format_duration(waiting_for)} while others were acknowledged "
                           f"(more than {STUCK_AFTER_GRACES} × --ack-grace {ack_grace_s:g} s)")
    if agent.delivery_error:
        since = agent.delivery_error_since if agent.delivery_error_since is not None else now
        if now - since > DELIVERY_FAILING_GRACE_S:
            reasons.append(f"delivery failing for {format_duration(now - since)}: {agent.delivery_error}")
    if queue.last_loss_at is not None and now - queue.last_loss_at <= LOSS_RECENT_S:
        reasons.append(f"samples lost: {queue.dead_letters} moved to the dead letters and {queue.dropped} "
                       f"dropped since the start, the last {format_duration(now - queue.last_loss_at)} ago")
    reload = status.reload
    if reload.refused and reload.problem_count:
        plural = "" if reload.problem_count == 1 else "s"
        first = reload.problems[0] if reload.problems else "?"
        reasons.append(f"profile reload refused: {status.profile} has {reload.problem_count} problem{plural}"
                       f" (first: {first}); running an older profile until a reload succeeds or the file "
                       "is put back (`pibridge reload`)")
    elif reload.refused:
        reasons.append("profile reload not applied (see the log); running an older profile until a reload "
                       "succeeds")
    return reasons


# ================================================================================================
# the tracker: counters the bridge's threads update
# ================================================================================================

@dataclass(frozen=True)
class StatusSummary:
    """The few facts a one-line summary states (the log lines without a terminal): how many of
    ``total`` sensors are ok, which are failing, the agent connection, whether samples wait,
    the clock. From a tracker (`StatusTracker.summary`, no snapshot built) or a snapshot (`of`)."""

    total: int
    ok: int
    failing: tuple[str, ...]
    agent_connected: bool
    queue_empty: bool
    clock_synchronised: bool

    @classmethod
    def of(cls, status: BridgeStatus) -> StatusSummary:
        return cls(len(status.sensors), sum(1 for s in status.sensors if s.state == OK),
                   tuple(s.name for s in status.sensors if s.state == FAILING), status.agent.connected,
                   status.queue.depth == 0, status.clock.synchronised)


@dataclass(frozen=True)
class TrackedSensor:
    """A sensor as the status shows it: its name, driver and interval (s), and its metrics as
    (key, agent metric name, agent unit name[, annotation]), in the driver's order (a unit may
    also be a symbol: `pibridge.units.display_unit` reads both)."""

    name: str
    driver: str
    interval_s: float
    metrics: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def from_spec(cls, config: SensorConfig, spec: SensorSpec) -> TrackedSensor:
        """From the profile's sensor and what the agent gets for it (names and units after the
        profile's overrides)."""
        return cls(config.name, config.driver, config.interval_s,
                   tuple((m.key, m.name, m.unit or "", m.annotation or "") for m in spec.metrics))


@dataclass
class _SensorCounters:
    """One sensor's counters; times are monotonic seconds (``last_sample_at`` is wall-clock when
    the sample had a timestamp, see ``last_sample_wall``)."""

    name: str
    driver: str
    interval_s: float
    units: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # key -> (name, unit, annotation)
    state: str = STARTING
    failing_since: float | None = None
    last_error: str | None = None
    last_sample_at: float | None = None
    last_sample_wall: bool = False
    taken: int = 0
    pushed: int = 0
    failed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    last_read_at: float | None = None    # monotonic


@dataclass
class _AgentCounters:
    host: str = ""
    port: int = 0
    connected: bool = False
    since: float | None = None           # monotonic
    client_id: str | None = None
    last_ack_at: float | None = None     # monotonic
    last_error: str | None = None


class StatusTracker:
    """What the status snapshot is made from, updated by the scheduler, the delivery thread and
    the service (every method takes a lock: cheap, and never held while doing I/O). Sensors of
    the profile are declared with `set_sensors` (again after a reload: counters of sensors that
    stay are kept).

    Events are timed on the monotonic clock and turned into wall-clock times only in
    `snapshot`, against the wall clock of that moment: when NTP steps the clock after boot,
    "failing for 3 min" stays 3 min instead of becoming 50 years. ``clock`` (wall) and
    ``monotonic`` are injectable; a test that injects only ``clock`` gets it for both."""

    def __init__(self, profile: str | Path, state_dir: str | Path, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] | None = None) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._mono = monotonic or (time.monotonic if clock is time.time else clock)
        self._profile, self._state_dir = str(profile), str(state_dir)
        self._started = self._mono()
        self._sensors: dict[str, _SensorCounters] = {}
        self._queue = QueueStatus()
        self._agent = _AgentCounters()
        self._synchronised, self._sync_source, self._sync_since = False, "", self._started
        self._errors: deque[tuple[float, str, str]] = deque(maxlen=RECENT_ERRORS_MAX)
        self._restart_pending: tuple[str, ...] = ()
        self._reload = ReloadStatus()
        self._reload_error: tuple[float, str, str] | None = None   # the refusal among the errors
        self._last_loss: float | None = None           # monotonic
        self._store_error: str | None = None
        self._delivery_error: tuple[str, float] | None = None  # (error, monotonic since)
        #: bumped by every change a snapshot would show (`changes`); the totals methods compare
        #: what they are fed with what they were fed last, so an unchanged feed changes nothing
        self._changes = 0
        self._fed: dict[Hashable, tuple[Any, ...]] = {}

    @property
    def changes(self) -> int:
        """A counter that moves whenever something the snapshot shows changed (besides the time):
        a writer or view compares it instead of whole snapshots."""
        return self._changes

    def _fed_again(self, key: Hashable, inputs: tuple[Any, ...]) -> bool:
        """Whether ``inputs`` are what the totals method ``key`` was fed last (lock held); if
        not, they are remembered and the change counted."""
        if self._fed.get(key) == inputs:
            return True
        self._fed[key] = inputs
        self._changes += 1
        return False

    # --- sensors ---------------------------------------------------------------------------------
    def set_sensors(self, sensors: Iterable[TrackedSensor]) -> None:
        """The profile's sensors, in order. Counters of a sensor that keeps its name are kept;
        removed sensors disappear from the snapshot."""
        with self._lock:
            self._changes += 1
            self._fed.clear()
            previous, self._sensors = self._sensors, {}
            for sensor in sensors:
                counters = previous.get(sensor.name) or _SensorCounters(sensor.name, sensor.driver,
                                                                         sensor.interval_s)
                counters.driver, counters.interval_s = sensor.driver, sensor.interval_s
                counters.units = {metric[0]: (metric[1], metric[2] if len(metric) > 2 else "",
                                              metric[3] if len(metric) > 3 else "")
                              for metric in sensor.metrics}
                self._sensors[sensor.name] = counters

    def sample_taken(self, sensor: str, values: Mapping[str, Any], at: float | None = None) -> None:
        """A sample was committed to the queue; ``at``: its wall-clock timestamp (seconds), None
        while the clock is not set (then the moment of this call is shown). The sensor is ok."""
        with self._lock:
            counters = self._sensors.get(sensor)
            if counters is None:
                return
            self._changes += 1
            counters.taken += 1
            counters.values = dict(values)
            counters.last_sample_at, counters.last_sample_wall = (
                (at, True) if at is not None else (self._mono(), False))
            counters.state, counters.failing_since, counters.last_error = OK, None, None
            counters.last_read_at = self._mono()

    def read_failed(self, sensor: str, error: str) -> None:
        """A read failed after the driver's retries (or the driver could not be built)."""
        now = self._mono()
        with self._lock:
            counters = self._sensors.get(sensor)
            if counters is None:
                return
            self._changes += 1
            counters.failed += 1
            if counters.state != FAILING or counters.last_error != error:
                self._errors.append((now, sensor, error))
            if counters.state != FAILING:
                counters.state, counters.failing_since = FAILING, now
            counters.last_error = error

    def slot_skipped(self, sensor: str, count: int = 1) -> None:
        with self._lock:
            self._changes += 1
            if sensor in self._sensors:
                self._sensors[sensor].skipped += count

    def samples_pushed(self, sensor: str, count: int = 1) -> None:
        """The agent acknowledged ``count`` samples of ``sensor`` (a sensor no longer in the
        profile only moves the agent's last-acknowledgement time)."""
        with self._lock:
            self._changes += 1
            if sensor in self._sensors:
                self._sensors[sensor].pushed += count
            self._agent.last_ack_at = self._mono()

    def samples_dead_lettered(self, sensor: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self._changes += 1
            if sensor in self._sensors:
                self._sensors[sensor].dead_lettered += count
            self._queue = dataclasses.replace(self._queue, dead_letters=self._queue.dead_letters + count)
            self._last_loss = self._mono()
            self._errors.append((self._mono(), sensor, f"dead letter: {reason}"))

    # --- queue, agent, clock, errors ---------------------------------------------------------------
    def queue_state(self, depth: int, oldest_sample_at: float | None, unstamped: int = 0,
                    dropped: int | None = None) -> None:
        """The queue's depth and oldest sample's wall-clock timestamp (from the queue's thread);
        ``dropped``: the running total, if it changed."""
        with self._lock:
            self._changes += 1
            if dropped is not None and dropped > self._queue.dropped:
                self._last_loss = self._mono()
            self._queue = dataclasses.replace(
                self._queue, depth=depth, oldest_sample_at=oldest_sample_at, unstamped=unstamped,
                dropped=self._queue.dropped if dropped is None else dropped)

    def agent_state(self, *, connected: bool, host: str, port: int, client_id: str | None = None,
                    error: str | None = None) -> None:
        """The connection came up or went down (``since`` moves only on a change)."""
        now = self._mono()
        with self._lock:
            self._changes += 1
            agent = self._agent
            if error and (error != agent.last_error or agent.connected):
                self._errors.append((now, "", f"agent: {error}"))
            if agent.connected != connected or agent.since is None:
                agent.since = now
            agent.host, agent.port, agent.connected = host, port, connected
            agent.client_id = client_id or agent.client_id
            agent.last_error = None if connected else error

    def clock_state(self, synchronised: bool, source: str) -> None:
        with self._lock:
            if self._fed_again("clock", (synchronised, source)):
                return
            if synchronised != self._synchronised:
                self._sync_since = self._mono()
            self._synchronised, self._sync_source = synchronised, source

    def error(self, message: str, sensor: str = "") -> None:
        """A problem worth showing among the recent errors (the bridge's own, e.g. a refused reload)."""
        with self._lock:
            self._changes += 1
            self._errors.append((self._mono(), sensor, message))

    def restart_pending(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._changes += 1
            self._restart_pending = tuple(keys)

    def reload_handled(self, *, applied: bool, problems: Sequence[str] = (), at: float | None = None) -> None:
        """A reload was handled (``at``: wall-clock time it was taken up, default now). A
        refused one (``applied`` False with the file's ``problems``) shows among the recent errors;
        it, and a valid one that could not be applied (no ``problems``: the next reload retries
        it), keep the bridge degraded; an applied one clears that."""
        with self._lock:
            self._changes += 1
            now = self._mono()
            self._forget_reload_error()
            refused = not applied        # an older profile runs until a reload succeeds
            if problems:
                self._reload_error = (now, "", f"profile refused: {problems[0]}")
                self._errors.append(self._reload_error)
            elif not applied:
                self._errors.append((now, "", "applying the reloaded profile failed (see the log)"))
            self._reload = ReloadStatus(self._reload.count + 1, self._clock() if at is None else at,
                                        applied, refused, tuple(problems[:RELOAD_PROBLEMS_KEPT]),
                                        len(problems))

    def reload_problems_gone(self) -> None:
        """The profile file was fixed back to what runs: no longer degraded by the refusal."""
        with self._lock:
            self._changes += 1
            self._forget_reload_error()
            self._reload = dataclasses.replace(self._reload, refused=False)

    def _forget_reload_error(self) -> None:
        """Take the refused reload's event out of the recent errors (lock held)."""
        if self._reload_error is not None and self._reload_error in self._errors:
            self._errors.remove(self._reload_error)
        self._reload_error = None

    @property
    def reload_refused(self) -> bool:
        with self._lock:
            return self._reload.refused

    def delivery_state(self, error: str | None) -> None:
        """A delivery step fails (``error``), or None: it works again. ``since`` stays at the
        first failure of a run of failures."""
        now = self._mono()
        with self._lock:
            if self._fed_again("delivery", (error,)):
                return
            if not error:
                self._delivery_error = None
            elif self._delivery_error is None:
                self._delivery_error = (error, now)
                self._errors.append((now, "", f"delivery: {error}"))
            else:
                self._delivery_error = (error, self._delivery_error[1])

    def store_state(self, error: str | None) -> None:
        """Samples cannot be stored (``error``: disk full, I/O error) or, None, they can again."""
        with self._lock:
            if self._fed_again("store", (error,)):
                return
            if error and error != self._store_error:
                self._errors.append((self._mono(), "", f"cannot store samples: {error}"))
            self._store_error = error or None

    # --- totals: the service's adapter sets running totals from its parts' own counters --------
    def _mono_of(self, wall: float | None) -> float | None:
        """A wall-clock time as this tracker's monotonic time (kept right across a clock step)."""
        return None if wall is None else self._mono() - (self._clock() - wall)

    def sensor_totals(self, sensor: str, *, state: str, taken: int, failed: int, skipped: int,
                      pushed: int, dead_lettered: int, values: Mapping[str, Any],
                      failing_since: float | None = None, last_error: str | None = None,
                      last_sample_at: float | None = None, last_read_at: float | None = None) -> None:
        """Set one sensor's counters to running totals (its scheduler's, its delivery's). Times
        are wall-clock seconds; ``last_sample_at`` / ``last_read_at`` None keep the last known one."""
        read_mono = self._mono_of(last_read_at)
        failing_mono = self._mono_of(failing_since)
        now = self._mono()
        with self._lock:
            c = self._sensors.get(sensor)
            if c is None:
                return
            self._fed_again(("sensor", sensor), (state, taken, failed, skipped, pushed, dead_lettered, values,
                                                 failing_since, last_error, last_sample_at, last_read_at))
            if state == FAILING and last_error and (c.state != FAILING or c.last_error != last_error):
                self._errors.append((now, sensor, last_error))
            c.state = state if state in SENSOR_STATES else STARTING
            c.taken, c.failed, c.skipped = taken, failed, skipped
            c.pushed, c.dead_lettered = pushed, dead_lettered
            c.values = dict(values)
            c.failing_since = failing_mono if state == FAILING else None
            c.last_error = last_error if state == FAILING else None
            if last_sample_at is not None:
                c.last_sample_at, c.last_sample_wall = last_sample_at, True
            if read_mono is not None:
                c.last_read_at = read_mono

    def agent_totals(self, *, connected: bool, host: str, port: int, since: float | None,
                     client_id: str | None, last_ack_at: float | None, error: str | None) -> None:
        """The agent connection as the delivery reports it (times wall-clock seconds; ``since``
        None while not connected: then the moment it was last seen going down is kept)."""
        since_mono, ack_mono = self._mono_of(since), self._mono_of(last_ack_at)
        now = self._mono()
        with self._lock:
            self._fed_again("agent", (connected, host, port, since, client_id, last_ack_at, error))
            agent = self._agent
            if error and not connected and error != agent.last_error:
                self._errors.append((now, "", f"agent: {error}"))
            if connected:
                agent.since = since_mono
            elif agent.connected or agent.since is None:
                agent.since = now if agent.connected else self._started
            agent.host, agent.port, agent.connected = host, port, connected
            agent.client_id = client_id or agent.client_id
            agent.last_ack_at = ack_mono if ack_mono is not None else agent.last_ack_at
            agent.last_error = None if connected else (error or None)

    def queue_totals(self, *, depth: int, oldest_sample_at: float | None, unstamped: int, dropped: int,
                     dead_letters: int) -> None:
        """The queue's running totals (`QueueStatus`'s fields); a total that grew marks a loss."""
        with self._lock:
            self._fed_again("queue", (depth, oldest_sample_at, unstamped, dropped, dead_letters))
            if dropped > self._queue.dropped or dead_letters > self._queue.dead_letters:
                self._last_loss = self._mono()
            self._queue = QueueStatus(depth, oldest_sample_at, unstamped, dropped, dead_letters)

    def summary(self) -> StatusSummary:
        """What a one-line summary says, without building a snapshot (`StatusSummary`)."""
        with self._lock:
            return StatusSummary(
                total=len(self._sensors), ok=sum(1 for c in self._sensors.values() if c.state == OK),
                failing=tuple(c.name for c in self._sensors.values() if c.state == FAILING),
                agent_connected=self._agent.connected, queue_empty=self._queue.depth == 0,
                clock_synchronised=self._synchronised)

    def snapshot(self) -> BridgeStatus:
        """The snapshot, every time on the wall clock of this moment."""
        with self._lock:
            now_wall, now_mono = self._clock(), self._mono()

            def wall(mono: float | None) -> float | None:
                return None if mono is None else now_wall - (now_mono - mono)

            sensors = []
            for c in self._sensors.values():
                readings = tuple(MetricReading(key, *_named(c.units.get(key), key, value))
                                 for key, value in c.values.items())
                last = c.last_sample_at if c.last_sample_wall else wall(c.last_sample_at)
                sensors.append(SensorStatus(c.name, c.driver, c.interval_s, c.state, wall(c.failing_since),
                                            c.last_error, last, c.taken, c.pushed, c.failed, c.skipped,
                                            c.dead_lettered, readings, wall(c.last_read_at)))
            a = self._agent
            failing = self._delivery_error
            agent = AgentStatus(a.host, a.port, a.connected, wall(a.since), a.client_id, wall(a.last_ack_at),
                                a.last_error, failing[0] if failing else None,
                                wall(failing[1]) if failing else None)
            queue = dataclasses.replace(self._queue, last_loss_at=wall(self._last_loss),
                                        store_error=self._store_error)
            clock = ClockStatus(self._synchronised, self._sync_source, wall(self._sync_since))
            errors = tuple(ErrorEvent(now_wall - (now_mono - at), sensor, message)
                           for at, sensor, message in self._errors)
            return BridgeStatus(self._profile, self._state_dir, now_wall - (now_mono - self._started),
                                tuple(sensors), queue, agent, clock, errors, self._restart_pending,
                                self._reload)


def _named(unit: tuple[str, str, str] | None, key: str, value: Any) -> tuple[str, Any, str, str]:
    """(agent name, value, unit, annotation) of one metric of a snapshot."""
    name, agent_unit, annotation = unit or (key, "", "")
    return name, value, agent_unit, annotation


# ================================================================================================
# where the file lives
# ================================================================================================

def runtime_dir_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where status files may be, in order: ``$RUNTIME_DIRECTORY`` (systemd), ``/run/pibridge``,
    ``$XDG_RUNTIME_DIR/pibridge`` (a user's login session, RAM), ``<tmp>/pibridge-<uid>``."""
    env = os.environ if environ is None else environ
    candidates = []
    if env.get(RUNTIME_DIRECTORY_ENV):
        candidates.append(Path(env[RUNTIME_DIRECTORY_ENV].split(":")[0]))
    candidates.append(SYSTEM_RUNTIME_DIR)
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(env["XDG_RUNTIME_DIR"]) / "pibridge")
    candidates.append(Path(env.get("TMPDIR") or "/tmp") / f"pibridge-{os.getuid()}")
    seen: list[Path] = []
    for path in candidates:
        if path not in seen:
            seen.append(path)
    return seen


def default_runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where this process should write: the first candidate that is ours to write, existing or
    creatable (``/run/pibridge`` only by root, or when systemd made it for us). A directory in a
    shared place (``/tmp``) that another user owns is skipped."""
    candidates = runtime_dir_candidates(environ)
    for path in candidates:
        if path.is_dir():
            if os.access(path, os.W_OK | os.X_OK) and (path.stat().st_uid == os.geteuid()
                                                       or path == SYSTEM_RUNTIME_DIR):
                return path
        elif (path != SYSTEM_RUNTIME_DIR or os.geteuid() == 0) and os.access(path.parent, os.W_OK):
            return path
    return candidates[-1]


def status_path(runtime_dir: str | Path, state_dir: str | Path) -> Path:
    """The status file of the bridge whose state directory is ``state_dir`` (one bridge per state
    directory): ``status-<12 hex digits of sha256(absolute state_dir)>.json``."""
    digest = hashlib.sha256(str(Path(state_dir).absolute()).encode()).hexdigest()[:12]
    return Path(runtime_dir) / f"{STATUS_FILE_PREFIX}{digest}{STATUS_FILE_SUFFIX}"


def find_status_files(runtime_dirs: Iterable[str | Path]) -> list[Path]:
    """Every status file in these directories (sorted; unreadable directories skipped)."""
    found: list[Path] = []
    for directory in runtime_dirs:
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue
        found.extend(p for p in entries if p.name.startswith(STATUS_FILE_PREFIX)
                     and p.name.endswith(STATUS_FILE_SUFFIX) and p not in found)
    return found


# ================================================================================================
# process identity: is the writer still the process it was?
# ================================================================================================

def boot_id() -> str:
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat), None if unknown: with
    the PID it names one process, so a recycled PID is not mistaken for the bridge."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()    # the command name may hold spaces and ")"
    try:
        return int(fields[PROC_STAT_STARTTIME_FIELD - 3])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start: int | None) -> bool:
    if pid <= 0:                  # 0 and -1 would ask about a process group / every process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass                          # alive, another user's (the service's)
    if start is not None:
        current = process_start(pid)
        if current is not None and current != start:
            return False
    return True


# ================================================================================================
# writing and reading
# ================================================================================================

class StatusWriter:
    """Writes snapshots to ``path`` atomically: a temp file in the same directory, then a rename
    (a reader sees the old or the new file, never half of one). No fsync: the file is a window
    into a running process in a RAM directory, gone or stale after a reboot anyway; the rename
    alone is what a reader needs. `publish` writes at most every
    ``min_interval_s``; call it every main-loop turn with a snapshot factory, it is cheap when
    not due. Given the tracker's change counter (``changes``), a due write of an unchanged
    snapshot waits until ``heartbeat_s`` after the last write (the file must stay fresh, not
    be rewritten with the same counters); a loop with nothing else to do turns when
    `heartbeat_in` says. `remove` on a clean stop (no file then means "not running")."""

    def __init__(self, path: str | Path, *, min_interval_s: float = WRITE_INTERVAL_S,
                 heartbeat_s: float = HEARTBEAT_S, monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self.heartbeat_s = max(heartbeat_s, min_interval_s)
        self._monotonic, self._clock = monotonic, clock
        self._last_write: float | None = None
        self._last_check: float | None = None     # the last due publish, written or found unchanged
        self._last_attempt: float | None = None   # the last write tried, whether it worked or not
        self._written_changes: int | None = None  # the change counter the file was written with
        self._pid = os.getpid()
        self._pid_start = process_start(self._pid)
        self._boot_id = boot_id()
        self._failed = False
        self._directory_made = False   # made (or found) by this writer: not checked per write

    @classmethod
    def for_bridge(cls, state_dir: str | Path, runtime_dir: str | Path | None = None,
                   **kwargs: Any) -> StatusWriter:
        """The writer for the bridge of ``state_dir``, in ``runtime_dir`` (default:
        `default_runtime_dir`, i.e. systemd's ``/run/pibridge`` for the service)."""
        directory = Path(runtime_dir) if runtime_dir is not None else default_runtime_dir()
        return cls(status_path(directory, state_dir), **kwargs)

    def due(self) -> bool:
        return self.due_in() == 0.0

    def due_in(self) -> float:
        """Seconds until the next write is due (0 if it is): `min_interval_s` after the last
        check (a write, or a snapshot found unchanged), and at the latest the heartbeat."""
        if self._last_check is None:
            return 0.0
        return max(0.0, min(self.min_interval_s - (self._monotonic() - self._last_check),
                            self.heartbeat_in()))

    def heartbeat_in(self) -> float:
        """Seconds until an idle loop must write (0 if it must now): the file stays fresh. A
        failed write counts as one here: it is tried again a heartbeat later, not every turn."""
        if self._last_attempt is None:
            return 0.0
        return max(0.0, self.heartbeat_s - (self._monotonic() - self._last_attempt))

    def publish(self, snapshot: BridgeStatus | Callable[[], BridgeStatus], *, force: bool = False,
                changes: int | None = None) -> bool:
        """Write if due (or ``force``); True if written. ``changes``: the tracker's change counter
        (`StatusTracker.changes`): the same as at the last write, and that write younger than
        ``heartbeat_s``, means nothing to write yet. A failure is logged once per change, never
        raised: the status file is a window, not the bridge's job."""
        if not force and not self.due():
            return False
        now_monotonic = self._monotonic()
        if not force:
            self._last_check = now_monotonic
            if (changes is not None and changes == self._written_changes and self._last_write is not None
                    and now_monotonic - self._last_write < self.heartbeat_s):
                return False
        status = snapshot() if callable(snapshot) else snapshot
        status = dataclasses.replace(status, pid=self._pid, pid_start=self._pid_start,
                                     boot_id=self._boot_id, written_at=self._clock(),
                                     written_monotonic=now_monotonic)
        self._last_attempt = now_monotonic
        try:
            self._write(status.to_json().encode())
        except (OSError, ValueError) as exc:
            if not self._failed:
                log.warning("cannot write the status file %s: %s", self.path, exc)
            self._failed = True
            return False
        if self._failed:
            log.info("status file %s written again", self.path)
        self._failed = False
        self._last_write = self._last_check = now_monotonic
        self._written_changes = changes
        return True

    def _write(self, data: bytes) -> None:
        if not self._directory_made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._directory_made = True
        # one writer per file (one bridge per state directory): a per-process name is enough; a
        # temp file left by a killed writer with our PID is replaced (O_TRUNC), not accumulated
        temp = self.path.parent / f".{self.path.name}.{self._pid}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                         STATUS_FILE_MODE)
        except FileNotFoundError:
            self._directory_made = False   # the directory went away: made again next time
            raise
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fchmod(out.fileno(), STATUS_FILE_MODE)
            os.replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove the status file %s: %s", self.path, exc)


@dataclass(frozen=True)
class StatusReading:
    """A status file read back: the snapshot, ``fresh`` (its writer is alive and wrote it lately),
    ``age_s`` (seconds since written), and if stale, ``stale_reason``; ``writer_gone``: its
    writer is not running any more (killed, or an earlier boot), as opposed to one that hangs."""

    path: Path
    status: BridgeStatus
    fresh: bool
    age_s: float
    stale_reason: str = ""
    writer_gone: bool = False


def read_status(path: str | Path, *, stale_after_s: float = STALE_AFTER_S,
                clock: Callable[[], float] = time.time,
                monotonic: Callable[[], float] = time.monotonic) -> StatusReading:
    """Read and judge one status file. `FileNotFoundError` if there is none, `StatusFileError`
    if it is unreadable or does not match the schema."""
    path = Path(path)
    try:
        text = read_bounded(path, STATUS_FILE_MAX_BYTES, regular_only=True).decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise StatusFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        status = BridgeStatus.from_json(text)
    except StatusFileError as exc:
        raise StatusFileError(f"{path}: {exc}") from None
    same_boot = bool(status.boot_id) and status.boot_id == boot_id()
    age = monotonic() - status.written_monotonic if same_boot else clock() - status.written_at
    reason = ""
    gone = True
    if not same_boot:
        reason = "written during an earlier boot"
    elif not process_alive(status.pid, status.pid_start):
        reason = f"its bridge (pid {status.pid}) is not running"
    else:
        gone = False
        if age > stale_after_s:
            reason = f"not updated for {format_duration(age)} (pid {status.pid} hung?)"
    return StatusReading(path, status, not reason, age, reason, gone)
