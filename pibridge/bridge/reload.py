"""Reload the profile on SIGHUP (``systemctl reload pibridge``) without losing anything.

* `diff_sensors`: which sensors of two profiles are unchanged, changed, added or removed (by name;
  a renamed sensor is one removed and one added). The service restarts the grids of changed and
  added sensors only, stops removed ones (their queued samples still go to their old ids) and
  leaves unchanged ones alone.
* `diff_profiles`: the sensor diff plus which other keys changed, split into those that apply live
  (`LIVE_BRIDGE_KEYS`) and those that wait for a restart (everything else: ``bridge.state_dir``,
  ``bridge.durability``, the ``[agent]`` table …).
* `ProfileReloader`: loads the profile again; an invalid one is refused with every problem logged
  and the running configuration kept; a valid one becomes the profile in force, except that keys
  needing a restart keep their running values until then (and are listed as pending).
* `ReloadSignal`: SIGHUP sets a flag the main loop takes; nothing is done inside the handler.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pibridge.profile import BridgeSettings, Profile, ProfileError, SensorConfig, load_profile

log = logging.getLogger(__name__)

#: ``[bridge]`` keys a reload applies at once; any other changed key waits for a restart
LIVE_BRIDGE_KEYS = frozenset({"queue_max_samples", "queue_max_age_s", "inventory_check_s"})
#: dataclass fields that say where something was written, not what it is: a sensor whose
#: ``[[sensor]]`` table merely moved in the file is unchanged
LOCATION_FIELDS = frozenset({"line", "lines"})
RESTART_HINT = "systemctl restart pibridge"


def _semantic(value: Any) -> Any:
    """A comparable form of a profile value without its location fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(
            (f.name, _semantic(getattr(value, f.name)))
            for f in dataclasses.fields(value) if f.name not in LOCATION_FIELDS))
    if isinstance(value, dict):
        return tuple(sorted((str(k), _semantic(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_semantic(item) for item in value)
    return value


@dataclass(frozen=True)
class SensorDiff:
    """Sensor names of the new profile (and removed ones of the old), each in profile order.
    ``changed_fields``: for each changed sensor, which `SensorConfig` fields differ
    (e.g. ``("interval_s",)`` or ``("metrics",)``: a service may apply a processing-only change
    without restarting the grid)."""

    unchanged: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def to_start(self) -> tuple[str, ...]:
        """Sensors whose grid (re)starts: changed and added."""
        return self.changed + self.added

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def describe(self) -> str:
        parts = [f"{len(names)} {label} ({', '.join(names)})"
                 for label, names in (("changed", self.changed), ("added", self.added),
                                      ("removed", self.removed)) if names]
        parts.append(f"{len(self.unchanged)} unchanged")
        return "sensors: " + ", ".join(parts)


def diff_sensors(old: Iterable[SensorConfig], new: Iterable[SensorConfig]) -> SensorDiff:
    """Compare two profiles' sensors by name (names are unique within a checked profile). Order
    does not matter, nor where in the file a sensor is written."""
    before = {sensor.name: sensor for sensor in old}
    unchanged, changed, added = [], [], []
    changed_fields: dict[str, tuple[str, ...]] = {}
    after_names = []
    for sensor in new:
        after_names.append(sensor.name)
        previous = before.get(sensor.name)
        if previous is None:
            added.append(sensor.name)
        elif _semantic(previous) == _semantic(sensor):
            unchanged.append(sensor.name)
        else:
            changed.append(sensor.name)
            changed_fields[sensor.name] = tuple(
                f.name for f in dataclasses.fields(sensor) if f.name not in LOCATION_FIELDS
                and _semantic(getattr(previous, f.name)) != _semantic(getattr(sensor, f.name)))
    removed = [name for name in before if name not in after_names]
    return SensorDiff(tuple(unchanged), tuple(changed), tuple(added), tuple(removed), changed_fields)


@dataclass(frozen=True)
class ProfileChange:
    """What a reload changes: ``sensors``; ``live`` (changed keys applied now, "bridge.…");
    ``restart_required`` (changed keys that apply at the next restart: "bridge.state_dir",
    "agent.host", …)."""

    sensors: SensorDiff
    live: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sensors or self.live or self.restart_required)


def _changed_keys(table: str, old: Any, new: Any) -> list[str]:
    return [f"{table}.{f.name}" for f in dataclasses.fields(old)
            if _semantic(getattr(old, f.name)) != _semantic(getattr(new, f.name))]


def diff_profiles(old: Profile, new: Profile) -> ProfileChange:
    """Everything that differs between two loaded profiles, classified."""
    bridge_keys = _changed_keys("bridge", old.bridge, new.bridge)
    live = tuple(k for k in bridge_keys if k.split(".", 1)[1] in LIVE_BRIDGE_KEYS)
    restart = (*(k for k in bridge_keys if k not in live), *_changed_keys("agent", old.agent, new.agent))
    return ProfileChange(diff_sensors(old.sensors, new.sensors), live, restart)


def _keep_running_values(running: Profile, new: Profile) -> Profile:
    """``new`` with every key that needs a restart set back to its running value."""
    kept_bridge = {f.name: getattr(running.bridge, f.name) for f in dataclasses.fields(BridgeSettings)
                   if f.name not in LIVE_BRIDGE_KEYS}
    bridge = dataclasses.replace(new.bridge, **kept_bridge)
    return dataclasses.replace(new, agent=running.agent, bridge=bridge)


@dataclass(frozen=True)
class ReloadResult:
    """``applied``: the new profile is in force (``profile``; else ``profile`` is the running one
    and ``problems`` says why, one line each). ``change``: what the service must apply now
    (None if refused). ``restart_pending``: keys that differ from the running process's and
    wait for a restart (for the status snapshot)."""

    applied: bool
    profile: Profile
    change: ProfileChange | None = None
    problems: tuple[str, ...] = ()
    restart_pending: tuple[str, ...] = ()


class ProfileReloader:
    """Holds the profile in force. `reload` reads ``profile.path`` again and returns what
    changed; it never raises (a reload must not stop the bridge)."""

    def __init__(self, profile: Profile, *, loader: Callable[[Path], Profile] = load_profile,
                 logger: logging.Logger | None = None) -> None:
        self._started = profile        # what the process runs with for restart-only keys
        self._current = profile
        self._loader = loader
        self._log = logger or log
        self._pending: tuple[str, ...] = ()
        self._before_last: tuple[Profile, tuple[str, ...]] | None = None

    @property
    def current(self) -> Profile:
        return self._current

    @property
    def restart_pending(self) -> tuple[str, ...]:
        return self._pending

    def reload(self) -> ReloadResult:
        path = self._current.path
        try:
            loaded = self._loader(path)
        except ProfileError as exc:
            problems = tuple(str(exc).splitlines()) or (str(path),)
            return self._refuse(path, problems)
        except Exception as exc:      # a bug while loading must not take the running bridge down
            self._log.exception("profile %s: unexpected error while reloading", path)
            return self._refuse(path, (f"{path}: unexpected error: {exc!r}",))
        pending = diff_profiles(self._started, loaded).restart_required
        effective = _keep_running_values(self._started, loaded)
        change = diff_profiles(self._current, effective)
        for key in pending:
            if key not in self._pending:
                self._log.warning("profile %s: %s changed; it applies at the next restart (%s)",
                                  path, key, RESTART_HINT)
        self._before_last = (self._current, self._pending)
        self._current, self._pending = effective, pending
        if change:
            live = f"; {', '.join(change.live)} applied" if change.live else ""
            self._log.info("profile %s reloaded: %s%s", path, change.sensors.describe(), live)
        else:
            self._log.info("profile %s reloaded: nothing changed", path)
        return ReloadResult(True, effective, change, (), pending)

    def file_matches_running(self) -> bool:
        """Whether the profile file, as it is now, would change nothing if reloaded (it loads
        and every key equals the running one): after a refused reload, a file fixed back. Never
        raises, logs nothing."""
        try:
            loaded = self._loader(self._current.path)
        except Exception:
            return False
        effective = _keep_running_values(self._started, loaded)
        return not diff_profiles(self._current, effective)

    def rollback(self) -> None:
        """The last reload could not be applied: the running configuration is the one before it,
        so the next reload is compared with that (and starts what this one failed to start)."""
        if self._before_last is not None:
            self._current, self._pending = self._before_last
            self._before_last = None

    def _refuse(self, path: Path, problems: tuple[str, ...]) -> ReloadResult:
        self._log.error("profile %s refused (%d problem%s); the running configuration stays in force:",
                        path, len(problems), "" if len(problems) == 1 else "s")
        for line in problems:
            self._log.error("  %s", line)
        return ReloadResult(False, self._current, None, problems, self._pending)


class ReloadSignal:
    """SIGHUP → a flag. `install` from the main thread; the main loop calls `take` each turn
    (a signal wakes it at once: `pibridge.bridge.signal_wake`). The handler only sets a plain
    attribute: a Python signal handler runs in the main thread between two bytecodes, so one
    that took a lock (``Event.set``) could deadlock the main thread while it held that same lock
    (in ``Event.clear``)."""

    def __init__(self) -> None:
        self._pending = False
        self._previous: Any = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGHUP, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._pending = True

    def request(self) -> None:
        """A reload asked from code (what SIGHUP does)."""
        self._pending = True

    @property
    def pending(self) -> bool:
        return self._pending

    def take(self) -> bool:
        """True once per SIGHUP received (several before a take count as one reload: the reload
        reads the file as it is then)."""
        if self._pending:
            self._pending = False
            return True
        return False
