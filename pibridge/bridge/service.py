"""``pibridge run``: one bridge for one profile, from start to a clean stop.

    lock the state directory ─▶ open the queue ─▶ build sensors + start sampling (at once)
                                               └▶ delivery in the background (provision, connect,
                                                  reconcile, drain; retries for ever)
    … until SIGINT/SIGTERM ─▶ stop sampling ─▶ stop delivery ─▶ close the queue (≤ 5 s, exit 0)

A missing agent or CA file at boot costs no samples: they wait in the queue. One bridge per state
directory: ``<state_dir>/pibridge.lock`` is held with ``flock`` for the bridge's lifetime and
names its PID; a second bridge refuses to start and says which process holds it. Agent-side
commands (``ping``, ``inventory``) take no lock and still work beside it.

Logs go to stderr, one line per change of state (a sensor failing or recovering, the agent
connected or gone, the clock set). Under systemd (``JOURNAL_STREAM`` set) each text line starts
with its syslog priority (``<4>``) so journald files it at the right level and adds its own
timestamp; ``log_format = "json"`` gives one JSON object per line.

``--simulate`` builds every driver in one `SimulatedWorld` (one greenhouse, one shared 1-Wire
bus); ``$PIBRIDGE_SIMULATION`` may tune its `Environment` (see `simulated_environment`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pibridge.agent.settings import AgentSettings
from pibridge.bridge.clock import SystemClock, TimesyncFlag, TrustedClock
from pibridge.bridge.delivery import CONNECT_BACKOFF, RETRY_BACKOFF, Delivery
from pibridge.bridge.model import SensorSpec, TakenSample
from pibridge.bridge.operations import Operations, feed_status
from pibridge.bridge.processing import sensor_spec
from pibridge.bridge.queue import QueueOpenError, SampleQueue
from pibridge.bridge.reload import LIVE_BRIDGE_KEYS, ReloadResult
from pibridge.bridge.scheduler import Scheduler, SchedulerHooks, SensorPlan
from pibridge.bridge.signal_wake import SignalWake
from pibridge.bridge.status import StatusTracker, TrackedSensor
from pibridge.drivers import registry
from pibridge.drivers.base import Driver
from pibridge.drivers.errors import ConfigurationError
from pibridge.drivers.simulation import Environment, SimulatedWorld
from pibridge.mqtt import Backoff
from pibridge.paths import DirectoryError, check_path, prepare_directory, reason
from pibridge.profile import BridgeSettings, Profile, SensorConfig
from pibridge.profile.model import PRESSURE_FROM_METRIC, PRESSURE_FROM_SETTER

if TYPE_CHECKING:
    from pibridge.web.bridge_page import BridgeWeb

log = logging.getLogger("pibridge.bridge")

LOCK_FILE = "pibridge.lock"
#: ``--simulate``: a JSON object of `Environment` fields (see `simulated_environment`).
SIMULATION_ENV = "PIBRIDGE_SIMULATION"
#: `pibridge run` stops within this (SIGTERM → exit), split between its parts.
STOP_TIMEOUT_S = 5.0
#: Kept back from the delivery's share of the stop budget for closing the queue (last commit).
QUEUE_CLOSE_S = 0.5
#: What a stop leaves the delivery at least (in-flight pushes get their answers or stay queued).
DELIVERY_STOP_MIN_S = 1.0
#: A local agent (same Pi) is back within seconds of a restart: reconnect often.
LOCAL_RECONNECT_CAP_S = 3.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: A failing web history hook logs one line at most this often (it fails per sample otherwise)
HOOK_LOG_INTERVAL_S = 60.0
#: How often the main loop wakes (issue 11 sends watchdog keep-alives from it).
MAIN_TICK_S = 1.0
#: The main loop's longest sleep when nothing is due (an idle bridge wakes this often, not every
#: second: the status file's heartbeat, `pibridge.bridge.status.HEARTBEAT_S`): a dead thread is
#: found at most this late. A signal (stop, reload) wakes it at once (`SignalWake`).
MAIN_IDLE_TURN_S = 10.0
#: journald's syslog priority prefixes (sd-daemon(3)).
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                   logging.DEBUG: 7}


class BridgeError(Exception):
    """The bridge cannot start: one line for the user (the CLI prints it, exit status 1)."""


# -- one bridge per state directory -----------------------------------------------------------
class StateDirLock:
    """An exclusive ``flock`` on ``<state_dir>/pibridge.lock`` holding the owner's PID. The kernel
    drops it when the process dies (even on SIGKILL): a stale file never blocks a restart."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 (held for the bridge's lifetime)
        except OSError as exc:
            raise BridgeError(f"cannot create the lock {self.path}: {reason(exc)}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BridgeError(f"another bridge (PID {holder}) is running on state directory "
                                  f"{self.path.parent} (lock {self.path})") from None
            raise BridgeError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError as exc:  # a full file system at the first start
            with contextlib.suppress(OSError):  # closing flushes the write that failed again
                handle.close()
            raise BridgeError(f"cannot write the lock {self.path}: {reason(exc)}") from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


# -- logging -----------------------------------------------------------------------------------
class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """``<priority>LEVEL logger: message`` — journald reads the priority and adds the time."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def configure_logging(log_format: str, level: int, stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers: JSON lines, journald lines, or plain timestamped text."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# -- sensors ---------------------------------------------------------------------------------
def simulated_environment() -> Environment:
    """The greenhouse behind ``--simulate``: `Environment` defaults, or the fields given as a JSON
    object in ``$PIBRIDGE_SIMULATION`` (e.g. ``{"door_period_s": 2, "door_open_s": 1,
    "door_open_probability": 1, "seed": 7}`` for a door that opens every 2 s; tests and demos)."""
    text = os.environ.get(SIMULATION_ENV, "").strip()
    if not text:
        return Environment()
    try:
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise TypeError("not a JSON object")
        return Environment(**fields)
    except (ValueError, TypeError) as exc:
        raise BridgeError(f"${SIMULATION_ENV}: {exc} (a JSON object of Environment fields)") from None


def sensor_plans(configs: Sequence[SensorConfig], world: SimulatedWorld | None) -> list[SensorPlan]:
    """What the scheduler samples: one plan per sensor, building real drivers, or simulated ones
    on ``world``'s fake hardware."""
    plans = []
    for config in configs:
        def build(config: SensorConfig = config) -> Driver:
            if world is not None:
                return world.build(config.driver, config.options)
            return registry.get(config.driver)(**config.options)
        inputs = ({PRESSURE_FROM_SETTER: (config.pressure_from, PRESSURE_FROM_METRIC)}
                  if config.pressure_from is not None else {})
        plans.append(SensorPlan(config.name, config.interval_s, build, config.metrics, inputs))
    return plans


def sensor_specs(configs: Sequence[SensorConfig]) -> dict[str, SensorSpec]:
    """The agent's view of every sensor from its driver's configuration (`Driver.metrics_for`; a built
    driver may narrow it).
    A driver that cannot be loaded is a `BridgeError` naming the sensor."""
    specs = {}
    for config in configs:
        try:
            cls = registry.get(config.driver)
        except (ImportError, AttributeError, ConfigurationError) as exc:
            raise BridgeError(f"sensor {config.name!r}: driver {config.driver!r} cannot be loaded: "
                              f"{exc}") from None
        try:  # the configuration's metrics (a pulse counter's units and gust follow its options)
            metrics = cls.metrics_for(config.options)
        except Exception:  # a third-party driver's broken declaration: the class's list
            metrics = cls.metrics
        specs[config.name] = sensor_spec(config.name, metrics, config.metrics)
    return specs


# -- the queue and delivery ----------------------------------------------------------------------
def open_queue(bridge: BridgeSettings, boot_id: str) -> SampleQueue:
    """The on-disk queue in the state directory; ``boot_id``: the clock's, so unstamped rows and
    `SampleQueue.resolve_timestamps` agree on which boot they belong to."""
    try:
        return SampleQueue(bridge.state_dir, durability=bridge.durability,
                           max_samples=bridge.queue_max_samples, max_age_s=bridge.queue_max_age_s,
                           boot_id=boot_id)
    except (QueueOpenError, ValueError) as exc:
        raise BridgeError(str(exc)) from None


def reconnect_cap_s(agent: AgentSettings) -> float | None:
    """A short reconnect backoff cap for an agent on this machine; None: delivery's default."""
    return LOCAL_RECONNECT_CAP_S if agent.host in LOCAL_HOSTS else None


def make_delivery(agent: AgentSettings, bridge: BridgeSettings, queue: SampleQueue,
                  specs: Mapping[str, SensorSpec], clock: SystemClock) -> Delivery:
    """Delivery (provisioning, connecting, reconciling, draining in the background once started)."""
    cap = reconnect_cap_s(agent)
    connect, retry = CONNECT_BACKOFF, RETRY_BACKOFF
    if cap is not None:
        connect = Backoff(initial=min(connect.initial, cap), cap=cap)
        retry = Backoff(initial=min(retry.initial, cap), cap=cap)
    return Delivery(agent, bridge, queue, specs=dict(specs), clock_ready=clock.is_set,
                    connect_backoff=connect, retry_backoff=retry)


class LoggedSink:
    """Every sample through to the queue, and one debug line per sample (``-v``): ``sample NAME
    at TIMESTAMP_MS[ (edge)]: {values}`` (``mono S`` while the clock is not set).

    The web hook (``stored``) runs after the queue took the sample: whatever it raises is its
    own problem — logged as one line at most every `HOOK_LOG_INTERVAL_S`, never raised to the
    scheduler (which would count a queued sample as lost)."""

    def __init__(self, queue: SampleQueue, stored: Callable[[TakenSample], None] | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.stored = stored   #: told of every committed sample (the web page's charts), if set
        self._monotonic = monotonic
        self._hook_logged_at: float | None = None
        self.hook_failures = 0   #: samples the web hook failed on (all of them queued)

    def put(self, sample: TakenSample) -> None:
        self.queue.put(sample)
        self._stored(sample)

    def put_many(self, samples: Sequence[TakenSample]) -> None:
        """A slot's samples in one commit (`SampleQueue.put_many`)."""
        self.queue.put_many(samples)
        for sample in samples:
            self._stored(sample)

    def _stored(self, sample: TakenSample) -> None:
        if not sample.values:       # only a running total to keep (every value held back)
            return
        if self.stored is not None:
            self._tell_hook(self.stored, sample)
        if log.isEnabledFor(logging.DEBUG):
            when = (sample.timestamp_ms if sample.timestamp_ms is not None
                    else f"mono {sample.monotonic_s:.3f}")
            log.debug("sample %s at %s%s: %s", sample.sensor, when, " (edge)" if sample.event else "",
                      json.dumps(sample.values, sort_keys=True))

    def _tell_hook(self, hook: Callable[[TakenSample], None], sample: TakenSample) -> None:
        try:
            hook(sample)
        except Exception as exc:  # the web page's problem: the sample is queued whatever happens here
            self.hook_failures += 1
            now = self._monotonic()
            if self._hook_logged_at is None or now - self._hook_logged_at >= HOOK_LOG_INTERVAL_S:
                self._hook_logged_at = now
                log.warning("web page: recording a sample of %s for the charts failed (%s: %s); the sample "
                            "is queued as usual (%d such failure%s so far; next line in %g s at most)",
                            sample.sensor, type(exc).__name__, exc, self.hook_failures,
                            "" if self.hook_failures == 1 else "s", HOOK_LOG_INTERVAL_S)


# -- the bridge --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """What ``pibridge run`` was asked for beyond the profile."""

    simulate: bool = False
    trust_clock: bool = False
    #: The clock counts as synchronised once this file exists (instead of timesyncd's flag and
    #: adjtimex): another NTP client's flag, or a test declaring the clock set.
    clock_sync_file: Path | None = None
    #: ``--http HOST:PORT``: the web page's address instead of the profile's ``[bridge] http``
    http: str | None = None


def default_clock(options: RunOptions) -> SystemClock:
    """The system clock under the rule of `pibridge.bridge.clock`, with the sync source the
    options name: ``--trust-clock``, ``--clock-sync-file``, or timesyncd's flag + adjtimex."""
    if options.trust_clock:
        return SystemClock(TrustedClock())
    if options.clock_sync_file is not None:
        return SystemClock(TimesyncFlag(options.clock_sync_file))
    return SystemClock()


class Bridge:
    """One running bridge. `run` blocks until ``stop`` is set, then stops everything in
    `STOP_TIMEOUT_S` and returns the exit status.

    ``clock``: injectable (tests unset it with their own sync source); by default the system's
    rule, or `TrustedClock` with ``--trust-clock``. After `run` started: ``scheduler``, ``queue``,
    ``delivery`` and ``world`` (``--simulate``) are the running parts (for ``on_tick``)."""

    def __init__(self, profile: Profile, agent: AgentSettings, options: RunOptions = RunOptions(), *,
                 bridge: BridgeSettings | None = None, clock: SystemClock | None = None,
                 on_tick: Callable[[Bridge], None] | None = None) -> None:
        self.profile = profile
        self.agent = agent
        self.options = options
        self.settings = bridge or profile.bridge
        self.clock = clock or default_clock(options)
        self.on_tick = on_tick
        self.scheduler: Scheduler | None = None
        self.delivery: Delivery | None = None
        self.queue: SampleQueue | None = None
        self.dead_part: str | None = None  #: the part whose thread died (the bridge then exits 1)
        self.world: SimulatedWorld | None = None
        self.tracker = StatusTracker(profile.path, self.settings.state_dir)
        self.ops: Operations | None = None
        self._configs: tuple[SensorConfig, ...] = profile.sensors
        self._specs: dict[str, SensorSpec] = {}
        #: specs the drivers built since the last reload reported themselves (narrowed by the chip)
        self._ready_specs: dict[str, SensorSpec] = {}
        self._specs_lock = threading.Lock()
        #: sensor → error text not yet reported (no connection when it started failing)
        self._unreported: dict[str, str] = {}
        self.web: BridgeWeb | None = None  #: the web page, when an address is set

    def run(self, stop: threading.Event) -> int:
        configs = self.profile.sensors
        specs = sensor_specs(configs)
        environment = simulated_environment() if self.options.simulate else None
        state_dir = self.settings.state_dir
        try:
            check_path(state_dir)
            prepare_directory(state_dir, "state directory")
        except ValueError as exc:
            raise BridgeError(f"state directory {exc}") from None
        except DirectoryError as exc:
            raise BridgeError(str(exc)) from None
        lock = StateDirLock(state_dir)
        lock.acquire()
        try:
            self._run_locked(configs, specs, environment, stop)
        finally:
            lock.release()
        return 1 if self.dead_part is not None else 0

    def _run_locked(self, configs: Sequence[SensorConfig], specs: dict[str, SensorSpec],
                    environment: Environment | None, stop: threading.Event) -> None:
        self._specs = specs
        self._configs = tuple(configs)
        self._track_sensors()
        self.web = self._open_web()          # bound before anything starts: a taken port stops here
        # SIGHUP is caught from here on (a reload before READY waits for the first tick)
        self.ops = Operations.for_service(
            self.profile, self.tracker, state_dir=self.settings.state_dir,
            install_signal=threading.current_thread() is threading.main_thread())
        self.ops.capture_logging()
        try:
            self.queue = open_queue(self.settings, self.clock.boot_id)
        except BridgeError:
            self.ops.stopping("cannot open the queue")
            raise
        if self.queue.incident:  # logged by the queue; shown among the status's recent errors too
            self.tracker.error(self.queue.incident)
        try:
            # created before sampling starts (so no spec update can miss it), started after
            self.delivery = make_delivery(self.agent, self.settings, self.queue, self._specs, self.clock)
            if environment is not None:
                self.world = SimulatedWorld(environment)
            hooks = SchedulerHooks(sensor_error=self._sensor_error, driver_ready=self._driver_ready,
                                   clock_set=self._clock_set)
            self.scheduler = Scheduler(sensor_plans(configs, self.world),
                                       LoggedSink(self.queue, self.web.sample_stored if self.web else None),
                                       clock=self.clock, hooks=hooks, resume=self.queue.resume_values())
            self.scheduler.start()
            log.info("bridge running: %d sensors%s, state in %s, agent at %s (PID %d)", len(configs),
                     " (simulated hardware)" if self.world is not None else "", self.settings.state_dir,
                     self.agent.api_address, os.getpid())
            if not self.clock.poll():
                log.warning("system clock not known to be set (no NTP sync yet): samples keep their "
                            "monotonic time until it is%s",
                            "" if self.options.trust_clock else
                            " (a Pi with a battery-backed RTC and no network time: --trust-clock)")
            self.delivery.start()
            # READY=1: the queue is open and sampling has started (the agent may answer later)
            self.ops.started(f"sampling {len(configs)} sensors", refresh=self.feed_status)
            if self.web is not None:
                self.web.start()
                log.info("web page at %s", self.web.url)
            in_main_thread = threading.current_thread() is threading.main_thread()
            with SignalWake(stop) if in_main_thread else contextlib.nullcontext() as wake:
                wait = wake.wait if wake is not None else stop.wait  # a signal wakes it at once
                self._main_loop(wait)
        finally:
            self._shutdown()

    def _main_loop(self, wait: Callable[[float], bool]) -> None:
        """Watchdog, status, reloads, dead threads: each turn, until ``wait`` says stop."""
        assert self.ops is not None
        while not wait(self._next_turn_in()):
            self.dead_part = self._dead_part()
            if self.dead_part is not None:  # stop the watchdog at once and exit 1: systemd restarts
                log.error("the %s thread died; stopping so that the service is restarted "
                          "(what is queued stays on disk)", self.dead_part)
                break
            self.ops.tick(alive=True, on_reload=self.apply_reload, refresh=self.feed_status)
            if self.web is not None:   # the page is live: the snapshot is fed every tick
                self.feed_status()
                self.web.refreshed(self._intervals())
            self._report_waiting_errors()
            if self.on_tick is not None:
                self.on_tick(self)

    # -- operations: watchdog, status, reload ----------------------------------------------------
    def _next_turn_in(self) -> float:
        """How long the main loop sleeps: every `MAIN_TICK_S` while the web page is live or a
        sensor error waits for the agent; else until the watchdog, the status file's heartbeat
        or the view is due, between `MAIN_TICK_S` and `MAIN_IDLE_TURN_S` (which bounds how late
        a dead thread or a SIGHUP is noticed)."""
        if self.ops is None or self.web is not None or self._unreported:
            return MAIN_TICK_S
        return min(MAIN_IDLE_TURN_S, max(MAIN_TICK_S, self.ops.next_turn_in()))

    @property
    def alive(self) -> bool:
        """The scheduler's threads, the delivery thread and the queue's thread all run (only then
        the watchdog is fed)."""
        return self._dead_part() is None

    def _dead_part(self) -> str | None:
        if self.scheduler is None or not self.scheduler.alive:
            return "scheduler"
        if self.delivery is None or not self.delivery.alive:
            return "delivery"
        if self.queue is None or not self.queue.alive:
            return "sample queue"
        return None

    def _open_web(self) -> BridgeWeb | None:
        """The web page when ``--http`` or ``[bridge] http`` asks for one (imported only then)."""
        address = self.options.http or self.settings.http
        if not address:
            return None
        from pibridge.web.address import AddressError, check_exposure, parse_address
        from pibridge.web.auth import TokenError
        from pibridge.web.bridge_page import BridgeWeb

        token_file = self.settings.http_token_file
        try:
            problem = check_exposure(address, token_file)
            if problem:
                raise BridgeError(f"--http {problem}")
            web = BridgeWeb(parse_address(address), self.tracker, self._describe, self._intervals(),
                            token_file)
        except (AddressError, TokenError) as exc:
            raise BridgeError(f"web page: {exc}") from None
        except OSError as exc:
            raise BridgeError(f"cannot serve the web page on {address}: {exc.strerror or exc}") from None
        return web

    def _describe(self) -> dict[str, list[tuple[str, str, str | None, str | None]]]:
        """(Web threads.) Each sensor's metrics as the agent gets them: key, name, unit, annotation."""
        with self._specs_lock:
            specs = dict(self._specs)
            order = [c.name for c in self._configs]
        return {name: [(m.key, m.name, m.unit, m.annotation or None) for m in specs[name].metrics]
                for name in order if name in specs}

    def _intervals(self) -> dict[str, float]:
        return {c.name: c.interval_s for c in self._configs}

    def feed_status(self) -> None:
        """The status snapshot from the scheduler's, the delivery's and the queue's own counters."""
        if self.scheduler is None or self.delivery is None or self.queue is None:
            return
        feed_status(self.tracker, self.scheduler.stats(), self.delivery.status(), host=self.agent.host,
                    port=self.agent.port, clock_synchronised=self.clock.is_set(),
                    clock_source=clock_source(self.clock), queue_dead_letters=self.queue.dead_lettered,
                    store_error=self.queue.write_error, delivery_error=self.delivery.step_error or None)

    def _track_sensors(self) -> None:
        with self._specs_lock:
            tracked = [TrackedSensor.from_spec(c, self._specs[c.name]) for c in self._configs
                       if c.name in self._specs]
        self.tracker.set_sensors(tracked)

    def apply_reload(self, result: ReloadResult) -> None:
        """Apply a valid reloaded profile (`Operations` calls this on SIGHUP): removed sensors stop
        (what they took is stored and still delivered to their old ids), changed ones restart on
        their new grid, added ones start; unchanged sensors keep their driver and grid. The queue
        is never touched: nothing queued is lost or re-stamped. Live ``[bridge]`` keys
        (`LIVE_BRIDGE_KEYS`) apply at once; the rest wait for a restart (the reloader says so)."""
        change = result.change
        scheduler, delivery = self.scheduler, self.delivery
        if change is None or scheduler is None or delivery is None:
            return
        new = result.profile
        specs = sensor_specs(new.sensors)          # a driver that cannot load: refused (BridgeError)
        configs = {c.name: c for c in new.sensors}
        diff = change.sensors
        with self._specs_lock:  # what a new driver reports from now on is the new configuration's
            for name in (*diff.removed, *diff.changed, *diff.added):
                self._ready_specs.pop(name, None)
        for name in diff.removed:
            scheduler.remove(name)
        for name in diff.changed:
            scheduler.replace(sensor_plans([configs[name]], self.world)[0])
        for name in diff.added:
            scheduler.add(sensor_plans([configs[name]], self.world)[0])

        def switch_specs() -> None:
            """On the outbox thread, after the old configuration's last samples were stored and
            before a rebuilt driver's own (narrowed) spec arrives through `_driver_ready`."""
            with self._specs_lock:
                for name in diff.unchanged:       # keep what the built driver narrowed
                    specs[name] = self._specs.get(name, specs[name])
                for name in (*diff.changed, *diff.added):  # a new driver may have reported already
                    specs[name] = self._ready_specs.get(name, specs[name])
                self._specs = specs
                self._configs = new.sensors
                current = dict(specs)
            if diff:
                delivery.update_specs(current)
            self._track_sensors()
        scheduler.after_taken(switch_specs)
        live = {key.split(".", 1)[1]: getattr(new.bridge, key.split(".", 1)[1]) for key in change.live
                if key.split(".", 1)[1] in LIVE_BRIDGE_KEYS}
        if live:
            self.settings = replace(self.settings, **live)
            delivery.bridge = self.settings
            if self.queue is not None:
                self.queue.max_samples = self.settings.queue_max_samples
                self.queue.max_age_s = self.settings.queue_max_age_s
        self.profile = new

    def _shutdown(self) -> None:
        """Sampling stops first (what was taken is committed), then delivery (what is not
        acknowledged stays queued), then the queue; all within `STOP_TIMEOUT_S`."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        log.info("stopping")
        if self.web is not None:
            self.web.stop()
        if self.ops is not None:
            self.ops.stopping()
        if self.scheduler is not None:  # most of the budget: what was taken must reach the disk
            unstored = self.scheduler.stop(max(0.1, deadline - time.monotonic() - DELIVERY_STOP_MIN_S
                                               - QUEUE_CLOSE_S))
            if unstored:
                self.dead_part = self.dead_part or "scheduler's outbox"
                log.error("%d samples or reports taken were not stored before the stop deadline "
                          "(a slow disk?)", unstored)
        if self.world is not None:
            with contextlib.suppress(Exception):
                self.world.close()
        if self.delivery is not None:
            self.delivery.stop(max(0.1, deadline - time.monotonic() - QUEUE_CLOSE_S))
        if self.queue is not None:
            try:
                self.queue.close(max(QUEUE_CLOSE_S, deadline - time.monotonic()))
            except Exception as exc:  # a full or failing disk: say so, exit as asked
                log.error("closing the sample queue failed: %s", exc)
        log.info("stopped")

    # -- scheduler hooks (outbox thread) ---------------------------------------------------------
    def _sensor_error(self, name: str, text: str) -> None:
        sent = self.delivery is not None and self.delivery.report_sensor_error(name, text)
        with self._specs_lock:
            if sent:
                self._unreported.pop(name, None)
            else:
                self._unreported[name] = text

    def _report_waiting_errors(self) -> None:
        """(Main loop.) A sensor that started failing while the agent was not connected (at boot,
        during an outage) is reported once it is, if it still fails; never queued on disk."""
        if not self._unreported or self.delivery is None or self.scheduler is None:
            return
        client = self.delivery.client
        if client is None or not client.connected:
            return
        states = self.scheduler.stats()
        with self._specs_lock:
            waiting = dict(self._unreported)
        for name, text in waiting.items():
            still_failing = states.get(name, {}).get("state") == "failing"
            if still_failing and not self.delivery.report_sensor_error(name, text):
                continue
            with self._specs_lock:
                if self._unreported.get(name) == text:
                    del self._unreported[name]

    def _driver_ready(self, name: str, spec: SensorSpec) -> None:
        with self._specs_lock:
            self._ready_specs[name] = spec
            if self._specs.get(name) == spec:
                return
            self._specs[name] = spec
            specs = dict(self._specs)
        if self.delivery is not None:
            self.delivery.update_specs(specs)
        self._track_sensors()

    def _clock_set(self, boot_id: str, wall_minus_monotonic_ms: int) -> None:
        if self.queue is not None:
            stamped = self.queue.resolve_timestamps(boot_id, wall_minus_monotonic_ms)
            log.info("system clock set: %d queued samples stamped with their wall-clock time", stamped)


def clock_source(clock: SystemClock) -> str:
    """How the bridge decides the clock is set (for the status): see `default_clock`."""
    sync = clock.sync
    if isinstance(sync, TrustedClock):
        return "trusted (--trust-clock)"
    if isinstance(sync, TimesyncFlag):
        return f"flag file {sync.path}"
    return "systemd-timesyncd or the kernel's NTP state"


def with_state_dir(bridge: BridgeSettings, state_dir: Path | None, log_format: str | None) -> BridgeSettings:
    """The profile's ``[bridge]`` with command-line overrides."""
    changes: dict[str, Any] = {}
    if state_dir is not None:
        changes["state_dir"] = state_dir
    if log_format is not None:
        changes["log_format"] = log_format
    return replace(bridge, **changes)
